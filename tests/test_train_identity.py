"""The training loop read top to bottom (train/gan.py, with selection, val curves, EMA, warm-up and
batches in modules of their own) trains to the same bits as the loop it replaced."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from cfgan.config import deep_merge

ROOT = Path(__file__).resolve().parents[1]
# The last commit whose train/gan.py held the whole loop in one file (before the split).
BEFORE_SPLIT = "8d4c333"

TRAIN = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from cfgan.train.gan import train_gan
train_gan(json.loads(Path(sys.argv[2]).read_text()), Path(sys.argv[3]), sys.argv[4], Path(sys.argv[5]))
"""


def _old_source(dest: Path) -> Path | None:
    git = shutil.which("git")
    if git is None or subprocess.run([git, "cat-file", "-e", f"{BEFORE_SPLIT}^{{commit}}"], cwd=ROOT,
                                     capture_output=True).returncode != 0:
        return None
    archive = subprocess.run([git, "archive", BEFORE_SPLIT, "src"], cwd=ROOT, capture_output=True, check=True).stdout
    dest.mkdir()
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "src"


@pytest.mark.slow
def test_the_split_training_loop_trains_to_the_same_bits_as_the_loop_it_replaced(small_manifest, tmp_path):
    old_src = _old_source(tmp_path / "old")
    if old_src is None:
        pytest.skip(f"commit {BEFORE_SPLIT} is not in this clone's history (a shallow clone): nothing to compare with")
    params, manifest = small_manifest
    # fp32, and every option the split moved into a module of its own switched on
    params = deep_merge(params, {"compute": {"precision": "fp32", "device": "cpu"}, "train": {
        "steps": 6, "val_every": 2, "ema_g": 0.9, "ema_d": 0.9, "warmup": {"d_steps": 2, "g_steps": 2}, "lr_schedule": "cosine",
        "val_maps": {"select": True, "tolerance": 0.01, "forms": ["abs", "dark"], "quantiles": [0.5, 0.9]}}})
    spec = tmp_path / "params.json"
    spec.write_text(json.dumps(params))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {}
    for name, src in (("before", old_src), ("after", ROOT / "src")):
        out = tmp_path / name
        proc = subprocess.run([sys.executable, "-c", TRAIN, str(src), str(spec), str(manifest), "cnn_unet-resnet3-c1-s0", str(out)],
                              capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = torch.load(out / "checkpoint.pt", weights_only=True), pd.read_csv(out / "log.csv")
    (before, log_before), (after, log_after) = runs["before"], runs["after"]
    for net in ("g", "d"):
        assert before[net].keys() == after[net].keys()
        assert all(torch.equal(before[net][k], after[net][k]) for k in before[net]), f"{net} differs after the split"
    pd.testing.assert_frame_equal(log_before, log_after)
    assert before["summary"]["best_step"] == after["summary"]["best_step"]
