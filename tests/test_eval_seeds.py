"""G's noise z is fixed per seed in evaluation (docs/method.md; issue 46, item 2): each run draws its z
from its own training seed, not from params["seed"], and the same run evaluated twice draws the same z."""

import pytest
import torch
from torch import nn

from cfgan.data.datasets import Split
from cfgan.evaluate import run as ev


class RecordingG(nn.Module):
    noise_dim = 4

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x, z):
        self.seen.append(z.clone())
        return x, torch.stack([x.mean((1, 2, 3)), -x.mean((1, 2, 3))], 1)


class FixedD(nn.Module):
    def forward(self, x):
        m = x.mean((1, 2, 3))
        return torch.stack([m, 1 - m, 0 * m], 1)


def _split(n=10):
    labels = torch.tensor([0, 1] * (n // 2))
    return Split(torch.randint(0, 255, (n, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)),
                 labels, None, [str(i) for i in range(n)], labels)


@pytest.mark.parametrize("step", ["classify", "uncertainty"])
def test_each_run_draws_g_noise_from_its_own_seed(monkeypatch, step):
    """Old behaviour: every run's z came from params["seed"], so seeds 0 and 1 met the same draws."""
    params = {"seed": 7, "evaluate": {"batch_size": 4}, "compute": {"device": "cpu", "precision": "fp32"}}
    g = RecordingG()
    ckpts = {f"s{s}": {"kind": "gan", "summary": {"run": f"cnn_unet-resnet3-c1-s{s}", "seed": s}, "params": {}, "compute": {}}
             for s in (0, 1)}
    monkeypatch.setattr(ev, "_load_any", lambda path, cx: (g, FixedD(), ckpts[path]))
    monkeypatch.setattr(ev, "load_gan", lambda path, cx: (g, FixedD(), ckpts[path]))
    monkeypatch.setattr(ev, "tasks", lambda manifest, run: [(None, run)])
    monkeypatch.setattr(ev, "load_split", lambda manifest, split, defect=None: _split())
    evaluate = {"classify": ev.run_classify, "uncertainty": ev.run_uncertainty}[step]

    def draws(path):
        g.seen.clear()
        evaluate(params, "manifest.csv", path, "synthetic")
        return torch.cat(g.seen)

    first, again, other = draws("s0"), draws("s0"), draws("s1")
    assert torch.equal(first, again)  # the same run, evaluated twice: the same z
    assert not torch.equal(first, other)  # seeds 0 and 1: their own z
    gen = torch.Generator().manual_seed(1)  # drawn from the run's seed, batch by batch
    assert torch.equal(other, torch.cat([torch.randn(n, 4, generator=gen) for n in (4, 4, 2)]))


def test_the_noise_seed_is_the_runs_or_its_names_or_the_params():
    params = {"seed": 7}
    assert ev.noise_seed({"summary": {"seed": 2, "run": "cnn_unet-resnet3-c1-s2"}}, params) == 2
    assert ev.noise_seed({"summary": {"run": "cnn_unet-resnet3-c1-s3"}}, params) == 3
    assert ev.noise_seed({"summary": {"run": "references"}}, params) == 7
