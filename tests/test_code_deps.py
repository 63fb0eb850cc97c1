"""Each step's code is the closure of the cfgan modules its command imports, read from the source;
its hash (Snakemake) and its file list (DVC) change exactly when that code does. The end-to-end
checks on a finished run are in test_pipeline.py."""

import shutil
from pathlib import Path

import pytest
import yaml

import cfgan
from cfgan.code_deps import dvc_deps, step_files, step_hash
from cfgan.steps import STEP_KEYS
from conftest import ROOT

# (file, text, replacement): the three kinds of change the front-door tests make
L1_DOUBLED = ("train/losses.py", '"l1": (x - x_cf).abs().mean()', '"l1": 2 * (x - x_cf).abs().mean()')
FIGURE_COLOURS = ("report/figures.py", 'cmap="magma"', 'cmap="viridis"')
UNRELATED_COMMENT = ("dvc_pipeline.py", "from __future__ import annotations", "# a comment\nfrom __future__ import annotations")
EVALUATIONS = ["fid-real", "fid", "classify", "robustness", "uncertainty", "saliency", "multiclass", "adversarial-maps"]


def edit(package: Path, change) -> str:
    rel, old, new = change
    text = (package / rel).read_text()
    assert old in text, f"{rel} no longer holds {old!r}: update the test's edit"
    (package / rel).write_text(text.replace(old, new, 1))
    return text


@pytest.fixture
def package(tmp_path):
    copy = tmp_path / "cfgan"
    shutil.copytree(Path(cfgan.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_closures_follow_the_imports():
    train, report, crop = set(step_files("train")), set(step_files("report")), set(step_files("crop"))
    assert {"train/gan.py", "train/losses.py", "models/unet.py", "data/datasets.py", "cli.py"} <= train
    assert not {f for f in train if f.startswith("report/")} and "data/synthetic.py" not in train
    assert {"report/build.py", "report/figures.py"} <= report and not {f for f in report if f.startswith(("train/", "models/"))}
    assert "data/crop.py" in crop and "train/losses.py" not in crop and "models/registry.py" not in crop
    assert "train/losses.py" not in step_files("train-baseline")  # the plain classifier has no GAN losses
    for step in EVALUATIONS:  # evaluate/run.py loads GAN checkpoints, so every evaluation imports train/gan.py
        assert "train/gan.py" in step_files(step)
    assert not any("dvc_pipeline.py" in step_files(s) for s in STEP_KEYS if s != "dvc-yaml")


def test_a_new_import_is_picked_up_from_the_code(package):
    assert "train/losses.py" not in step_files("report", package)
    tables = package / "report/tables.py"
    tables.write_text(tables.read_text().replace("from ..io import", "from ..train import losses  # noqa\nfrom ..io import", 1))
    step_files.cache_clear()
    assert "train/losses.py" in step_files("report", package) and "train/__init__.py" in step_files("report", package)


def test_the_hash_changes_exactly_for_the_steps_that_import_the_edited_file(package):
    def hashes():
        step_files.cache_clear(); step_hash.cache_clear()
        return {s: step_hash(s, package) for s in STEP_KEYS}

    before = hashes()
    assert before == {s: step_hash(s) for s in STEP_KEYS}  # the same content elsewhere hashes the same
    for change, affected in ((L1_DOUBLED, {"train", *EVALUATIONS}), (FIGURE_COLOURS, {"report"}), (UNRELATED_COMMENT, set())):
        original = edit(package, change)
        after = hashes()
        assert {s for s in STEP_KEYS if after[s] != before[s]} == affected, change[0]
        (package / change[0]).write_text(original)
    assert hashes() == before


def test_dvc_stages_list_exactly_their_code():
    stages = yaml.safe_load((ROOT / "workflow/profiles/tiny/dvc.yaml").read_text())["stages"]
    code = {name: {d for d in s["deps"] if d.startswith("src/")} for name, s in stages.items()}
    assert code["train_synthetic"] == set(dvc_deps("train")) and "src/cfgan/train/losses.py" in code["train_synthetic"]
    assert code["report_synthetic"] == {f"src/cfgan/{f}" for f in step_files("report")}
    assert "src/cfgan" not in {d for s in stages.values() for d in s["deps"]}  # no longer all of src/
    assert all(Path(ROOT, d).is_file() for c in code.values() for d in c)


def _module_graph() -> dict[str, set[str]]:
    """cfgan module -> the cfgan modules it imports (at any depth in the file), read from the source."""
    import ast
    from cfgan.code_deps import NAME, PACKAGE_DIR, _imports
    graph = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        rel = path.relative_to(PACKAGE_DIR).with_suffix("")
        parts = [NAME, *rel.parts] if rel.name != "__init__" else [NAME, *rel.parts[:-1]]
        module = ".".join(parts)
        graph[module] = {m for m in _imports(PACKAGE_DIR, module, ast.walk(ast.parse(path.read_text()))) if m != module}
    return graph


def test_layers_import_downwards_only_and_modules_form_no_cycle():
    """data and models below training, training below evaluation, evaluation below the report: a
    module never imports from a layer above its own (so editing an evaluation never reruns
    training), and no two modules import each other, directly or through others."""
    graph = _module_graph()
    above = {"cfgan.data": ("cfgan.train", "cfgan.evaluate", "cfgan.report"),
             "cfgan.models": ("cfgan.train", "cfgan.evaluate", "cfgan.report"),
             "cfgan.train": ("cfgan.evaluate", "cfgan.report"), "cfgan.evaluate": ("cfgan.report",)}
    upward = [(m, i) for m, imports in graph.items() for layer, banned in above.items()
              if m == layer or m.startswith(layer + ".") for i in imports if i.startswith(banned)]
    assert upward == [], upward
    packages = {m for m in graph if (Path(cfgan.__file__).parent.joinpath(*m.split(".")[1:]) / "__init__.py").is_file()}
    cycles = []
    for start in graph:
        todo, seen = [start], set()
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt == start and start not in packages:
                    cycles.append(start)
                if nxt not in seen and nxt not in packages:  # a package's __init__ re-exporting its modules is not a cycle
                    seen.add(nxt); todo.append(nxt)
    assert sorted(set(cycles)) == [], cycles
