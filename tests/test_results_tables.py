"""The README's headline results and docs/results.md's current tables are written from published runs
(docs/runs/**/*.json, `cfgan publish`) by `cfgan results-tables`, never typed: the committed pages match what the
command writes, a number typed into a block is caught, and a published file carries its provenance."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cfgan.cli import main
from cfgan.report.metrics import compute_from_notes, experiment_of_files
from cfgan.report.publish import FORMAT
from cfgan.report.results_tables import EMPTY, README_MARKERS, RESULTS_MARKERS
from conftest import ROOT, TINY

NUMBER = re.compile(r"\d+\.\d{3}(?: ± \d+\.\d{3})? \(n=\d+\)")  # mean ± sd (n=N), or mean (n=1)


def block(text: str, markers) -> str:
    return text.split(markers[0])[1].split(markers[1])[0]


def check(runs: Path, readme: Path, results_md: Path) -> int:
    try:
        return main(["results-tables", "--runs", str(runs), "--readme", str(readme), "--results-md", str(results_md), "--check"])
    except SystemExit as exc:
        return exc.code


# --- (a) the committed pages --------------------------------------------------------------------------------------

def test_the_committed_readme_and_results_page_are_what_make_results_writes(capsys):
    assert check(ROOT / "docs/runs", ROOT / "README.md", ROOT / "docs/results.md") == 0, capsys.readouterr().out[-3000:]
    readme = (ROOT / "README.md").read_text()
    if not list((ROOT / "docs/runs").rglob("*.json")):  # nothing published yet: the block says so, in one line
        assert block(readme, README_MARKERS).strip() == EMPTY
    heading = readme.index("## Does it work? Headline results")
    assert heading < readme.index(README_MARKERS[0]) < readme.index("### Previous code's results")  # the block first


# --- (b) two published files, the blocks they make, a typed change caught --------------------------------------------

def s(mean, sd, n):
    return {"mean": mean, "sd": sd, "n": n}


def published(dataset: str, experiment: str, v: float, seeds=(0, 1, 2)) -> dict:
    """A published run as `cfgan publish` writes one, its numbers offset by `v`."""
    n = len(seeds)
    gan, other = "cnn_unet-resnet3-c1", "cnn_unet-resnet3-c0"
    prov = {"commit": "0123456789abcdef0123456789abcdef01234567-dirty", "params_files": ["params.yaml"], "experiment": experiment,
            "dataset": dataset, "seeds": list(seeds), "showcase": gan, "date": "2026-12-07T10:00:00Z",
            "compute": {"trained": {"precision": ["bf16"], "device": ["cpu"], "cpu": ["AMD EPYC (family 26, model 2)"], "gpu": []},
                        "evaluated": {"precision": ["bf16"], "device": ["cpu"], "cpu": ["AMD EPYC (family 26, model 2)"], "gpu": []}}}

    def maps(config, saliency, explains, iou, crops="all"):
        return {"config": config, "saliency": saliency, "explains": explains, "crops": crops, "iou_median": iou,
                "iou_mean": s(0.3, 0.01, n), "pixel_auroc": s(0.9, 0.01, n)}

    return {
        "format": FORMAT, "dataset": dataset, "experiment": experiment,
        "command": f"snakemake --profile workflow/profiles/{dataset} all --config experiment={experiment}",
        "results": f"results/{dataset}/{experiment}", "published": "2026-12-07T11:00:00Z",
        "metrics": {gan: {"f1_D": 0.8, "n_seeds": n}, "provenance": prov},
        "table5_segmentation": [
            maps(gan, "counterfactual", "G", s(0.441 + v, 0.017, n)),
            maps(other, "counterfactual", "G", s(0.401 + v, 0.021, n)),
            maps(gan, "occlusion", "D", s(0.9, 0.1, n), crops="subset"),  # the attribution subset: not the README's
            maps("segmenter-cnn_unet", "segmenter", "segmenter", s(0.386 + v, 0.004, n)),
            maps("references", "local_contrast", "none", s(0.341 + v, None, 1)),
            maps("references", "random", "none", s(0.057, None, 1)),
            maps(gan, "gradcam", "D", s(0.112 + v, 0.020, n)),
            maps(other, "gradcam", "D", s(0.2, 0.020, n))],
        "table2_classification": [
            {"config": gan, "model": "D", "f1": s(0.805 + v, 0.001, n), "auroc": s(0.9, 0.01, n)},
            {"config": gan, "model": "G", "f1": s(0.831, 0.012, n), "auroc": s(0.91, 0.01, n)},
            {"config": other, "model": "D", "f1": s(0.7, 0.05, n), "auroc": s(0.8, 0.01, n)},
            {"config": "baseline-resnet3", "model": "baseline", "f1": s(0.822 + v, 0.017, n), "auroc": s(0.92, 0.01, n)},
            {"config": "references", "model": "all_damaged", "f1": s(0.384, None, 1), "auroc": s(0.5, None, 1)}],
        "robustness_f1": [
            {"config": c, "model": m, "attack": a, "strength": st, "f1": s(f, 0.01, n)}
            for c, m, base in ((gan, "D", 0.083 + v), ("baseline-resnet3", "baseline", 0.003 + v))
            for a, st, f in (("pgd", 0.0, 0.79), ("pgd", 0.002, base), ("pgd", 0.004, 0.033), ("noise", 0.1, 0.5))],
        "table4_fakeness_correlation": [
            {"config": gan, "generator": "cnn_unet", "discriminator": "resnet3", "cycles": 1, "prediction_of": "D",
             "pearson_r": s(0.160, 0.042, n)}],
    }


def pages(tmp_path: Path) -> tuple[Path, Path]:
    readme, results_md = tmp_path / "README.md", tmp_path / "docs/results.md"
    results_md.parent.mkdir(parents=True, exist_ok=True)
    readme.write_text("# Project\n\n## Does it work? Headline results\n\nA typed paragraph 0.999.\n\n"
                      f"{README_MARKERS[0]}\nold text\n{README_MARKERS[1]}\n\nMore text.\n")
    results_md.write_text(f"# Results\n\n## Published runs of the current code\n\n{RESULTS_MARKERS[0]}\n{RESULTS_MARKERS[1]}\n\n## History\n")
    return readme, results_md


def test_the_blocks_hold_exactly_the_published_numbers_and_a_typed_change_is_caught(tmp_path, capsys):
    runs = tmp_path / "docs/runs"
    for dataset, experiment, v in (("crackforest", "r1-1800", 0.0), ("apples", "base", 0.1)):
        (runs / dataset).mkdir(parents=True, exist_ok=True)
        (runs / dataset / f"{experiment}.json").write_text(json.dumps(published(dataset, experiment, v)))
    readme, results_md = pages(tmp_path)
    assert check(runs, readme, results_md) == 1  # the pages' blocks are stale
    assert main(["results-tables", "--runs", str(runs), "--readme", str(readme), "--results-md", str(results_md)]) == 0
    text = readme.read_text()
    assert text.startswith("# Project\n\n## Does it work? Headline results\n\nA typed paragraph 0.999.\n\n")
    assert text.endswith(f"{README_MARKERS[1]}\n\nMore text.\n") and "old text" not in text
    head = block(text, README_MARKERS)
    rows = {line.split(" | ")[0]: line for line in head.splitlines() if line.startswith("| [")}
    assert list(rows) == ["| [apples: base](docs/runs/apples/base.json)", "| [crackforest: r1-1800](docs/runs/crackforest/r1-1800.json)"]
    # the crackforest row: the best explainer of all damaged crops (not the subset's occlusion), the references, Grad-CAM
    # on the shown configuration's D, D and its twin clean and under PGD 0.002
    assert NUMBER.findall(rows["| [crackforest: r1-1800](docs/runs/crackforest/r1-1800.json)"]) == [
        "0.441 ± 0.017 (n=3)", "0.341 (n=1)", "0.386 ± 0.004 (n=3)", "0.112 ± 0.020 (n=3)",
        "0.805 ± 0.001 (n=3)", "0.083 ± 0.010 (n=3)", "0.822 ± 0.017 (n=3)", "0.003 ± 0.010 (n=3)"]
    assert NUMBER.findall(rows["| [apples: base](docs/runs/apples/base.json)"]) == [
        "0.541 ± 0.017 (n=3)", "0.441 (n=1)", "0.486 ± 0.004 (n=3)", "0.212 ± 0.020 (n=3)",
        "0.905 ± 0.001 (n=3)", "0.183 ± 0.010 (n=3)", "0.922 ± 0.017 (n=3)", "0.103 ± 0.010 (n=3)"]
    assert "`cnn_unet-resnet3-c1` counterfactual" in rows["| [crackforest: r1-1800](docs/runs/crackforest/r1-1800.json)"]
    assert len(NUMBER.findall(head)) == 16  # nothing else in the block is a measured number
    made = [line for line in head.splitlines() if line.startswith("| crackforest: r1-1800 |")]
    assert made == ["| crackforest: r1-1800 | `snakemake --profile workflow/profiles/crackforest all --config experiment=r1-1800` | "
                    "CPU AMD EPYC (family 26, model 2) | bf16 | 0, 1, 2 | 2026-12-07 | `0123456789` (with uncommitted changes) |"]
    full = block(results_md.read_text(), RESULTS_MARKERS)
    assert "### crackforest: r1-1800" in full and "### apples: base" in full and "0.441 ± 0.017" in full
    assert "0.160 ± 0.042" in full and "`occlusion`" in full  # table 4 and the subset's rows are in the fuller tables
    assert check(runs, readme, results_md) == 0
    capsys.readouterr()
    # a number typed into the block by hand is caught, with a diff naming it
    readme.write_text(text.replace("0.441 ± 0.017 (n=3)", "0.451 ± 0.017 (n=3)", 1))
    assert check(runs, readme, results_md) == 1
    out = capsys.readouterr().out
    assert "-| [crackforest: r1-1800]" in out and "0.451 ± 0.017 (n=3)" in out
    readme.write_text(text.replace("A typed paragraph 0.999.", "A typed paragraph 0.998."))  # outside the markers: the author's
    assert check(runs, readme, results_md) == 0
    readme.write_text(text.replace(README_MARKERS[1], ""))
    assert check(runs, readme, results_md) == 2 and "results:end" in capsys.readouterr().err


def test_without_published_runs_the_blocks_say_so_in_one_line(tmp_path):
    readme, results_md = pages(tmp_path)
    assert main(["results-tables", "--runs", str(tmp_path / "docs/runs"), "--readme", str(readme), "--results-md", str(results_md)]) == 0
    assert block(readme.read_text(), README_MARKERS) == f"\n{EMPTY}\n"
    assert block(results_md.read_text(), RESULTS_MARKERS) == f"\n{EMPTY}\n"
    (tmp_path / "docs/runs").mkdir()
    (tmp_path / "docs/runs/bad.json").write_text('{"format": "something else"}')
    assert check(tmp_path / "docs/runs", readme, results_md) == 2


# --- (c) cfgan publish on a folder the real report step wrote --------------------------------------------------------

CPU = "Test CPU 9000 (family 26, model 2)"
NOTE = f"trained at bf16 on cpu, evaluated at bf16 on cpu; CPU {CPU}"
GAN = "cnn_unet-resnet3-c1"  # the tiny profile's report.showcase


def tidy(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    frame.insert(0, "dataset", "synthetic")
    frame["note"] = frame.get("note", NOTE)
    frame[["dataset", "run", "model", "metric", "condition", "value", "note"]].to_csv(path, index=False)


def evaluations(ev: Path) -> None:
    """Evaluation CSVs of two seeds in the steps' tidy form, and the examples figures 2 and 4 draw."""
    rng = np.random.default_rng(0)
    for seed, shift in ((0, 0.0), (1, 0.1)):
        run, twin, seg = f"{GAN}-s{seed}", f"baseline-resnet3-s{seed}", f"segmenter-cnn_unet-s{seed}"
        tidy([{"run": run, "model": m, "metric": k, "condition": "test", "value": v + shift}
              for m, base in (("D", 0.8), ("G", 0.7)) for k, v in (("accuracy", base), ("f1", base), ("precision", base),
                                                                      ("recall", base), ("auroc", base))], ev / f"classification/{run}.csv")
        tidy([{"run": twin, "model": "baseline", "metric": k, "condition": "test", "value": 0.75 + shift}
              for k in ("accuracy", "f1", "precision", "recall", "auroc")], ev / f"classification/{twin}.csv")
        tidy([{"run": r, "model": m, "metric": "f1", "condition": f"{a}={st}", "value": f + shift}
              for r, m, b in ((run, "D", 0.5), (twin, "baseline", 0.2)) for a, st, f in
              (("pgd", 0.0, 0.8), ("pgd", 0.002, b), ("pgd", 0.005, b / 2), ("noise", 0.0, 0.8), ("noise", 0.1, 0.6))],
             ev / f"robustness/{run}.csv")
        tidy([{"run": run, "model": m, "metric": "pearson_r", "condition": "p_fake~nll", "value": 0.2 + shift} for m in ("D", "G")],
             ev / f"uncertainty/{run}.csv")
        tidy([{"run": run, "model": "G", "metric": "fid", "condition": c, "value": 50.0 + shift}
              for c in ("full", "undamaged", "damaged")], ev / f"fid/{run}.csv")
        sal = []
        for r, m, iou in ((run, "counterfactual", 0.4), (run, "gradcam", 0.1), (seg, "segmenter", 0.35)):
            sal += [{"run": r, "model": m, "metric": "iou", "condition": f"crop{i}.png", "value": iou + shift} for i in range(4)]
            sal += [{"run": r, "model": m, "metric": k, "condition": "test", "value": iou + shift}
                    for k in ("iou_median", "iou_mean", "f1_tol2_median", "f1_tol2_mean", "pixel_auroc", "coverage")]
        tidy(sal, ev / f"saliency/{run}.csv")
    tidy([{"run": "references", "model": m, "metric": "f1", "condition": "test", "value": v, "note": "predicts one class"}
          for m, v in (("all_damaged", 0.6), ("all_undamaged", 0.0))], ev / "classification/references.csv")
    tidy([{"run": "references", "model": "local_contrast", "metric": k, "condition": "test", "value": 0.3, "note": "no training"}
          for k in ("iou_median", "iou_mean", "coverage")], ev / "saliency/references.csv")
    x = rng.integers(0, 255, (4, 3, 16, 16), dtype=np.uint8)
    (ev / "examples").mkdir()
    np.savez(ev / f"examples/{GAN}-s0_counterfactuals.npz", x=x, x_cf=x[::-1], labels=np.array([0, 0, 1, 1]))
    np.savez(ev / f"examples/{GAN}-s0_saliency.npz", x=x, mask=rng.random((4, 16, 16)) > 0.5,
             counterfactual=rng.random((4, 16, 16)), gradcam=rng.random((4, 16, 16)))


def test_publish_writes_the_report_metrics_with_commit_cpu_and_seeds(tmp_path, capsys):
    results = tmp_path / "results/synthetic/base"
    evaluations(results / "evaluations")
    assert main(["report", "--params", *map(str, TINY), "--evaluations", str(results / "evaluations"), "--out", str(results)]) == 0
    metrics = json.loads((results / "metrics.json").read_text())
    assert metrics[GAN]["f1_D"] == pytest.approx(0.85) and metrics[GAN]["n_seeds"] == 2  # the numbers dvc metrics show reads
    prov = metrics["provenance"]
    assert prov["seeds"] == [0, 1] and prov["dataset"] == "synthetic" and prov["experiment"] == "base"
    assert prov["compute"]["trained"] == {"precision": ["bf16"], "device": ["cpu"], "cpu": [CPU], "gpu": []}
    assert prov["params_files"] == list(map(str, TINY)) and prov["showcase"] == GAN
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", prov["commit"]) if (ROOT / ".git").exists() else prov["commit"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", prov["date"])

    out = tmp_path / "docs/runs/synthetic/base.json"
    command = "snakemake --profile workflow/profiles/tiny all"
    assert main(["publish", "--results", str(results), "--command", command, "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["format"] == FORMAT and record["command"] == command and record["metrics"] == metrics
    assert (record["dataset"], record["experiment"]) == ("synthetic", "base")
    d = next(r for r in record["table2_classification"] if r["config"] == GAN and r["model"] == "D")
    assert d["f1"] == {"mean": pytest.approx(0.85), "sd": pytest.approx(0.070711, abs=1e-6), "n": 2}
    cf = next(r for r in record["table5_segmentation"] if r["saliency"] == "counterfactual")
    assert cf["iou_median"]["mean"] == pytest.approx(0.45) and cf["iou_median"]["n"] == 2 and "ods_tol2" not in cf
    pgd = {(r["model"], r["strength"]): r["f1"]["mean"] for r in record["robustness_f1"] if r["attack"] == "pgd"}
    assert pgd[("D", 0.002)] == pytest.approx(0.55) and pgd[("baseline", 0.002)] == pytest.approx(0.25)
    assert next(r for r in record["table4_fakeness_correlation"] if r["prediction_of"] == "D")["config"] == GAN

    # never over a published file without --force; errors name what is missing
    capsys.readouterr()
    assert main(["publish", "--results", str(results), "--command", command, "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["publish", "--results", str(results), "--command", command, "--out", str(out), "--force"]) == 0
    (results / "tables/table2_classification.csv").unlink()
    assert main(["publish", "--results", str(results), "--command", command, "--out", str(tmp_path / "x.json")]) == 2
    assert "table2_classification.csv: not found" in capsys.readouterr().err and not (tmp_path / "x.json").exists()
    (results / "metrics.json").unlink()
    assert main(["publish", "--results", str(results), "--command", command, "--out", str(tmp_path / "x.json")]) == 2
    assert "metrics.json: not found" in capsys.readouterr().err

    # and the published file makes the README's row
    readme, results_md = pages(tmp_path / "pages")
    assert main(["results-tables", "--runs", str(tmp_path / "docs/runs"), "--readme", str(readme), "--results-md", str(results_md)]) == 0
    row = next(line for line in readme.read_text().splitlines() if line.startswith("| [synthetic: base]"))
    assert NUMBER.findall(row) == ["0.450 ± 0.071 (n=2)", "0.300 (n=1)", "0.400 ± 0.071 (n=2)", "0.150 ± 0.071 (n=2)",
                                   "0.850 ± 0.071 (n=2)", "0.550 ± 0.071 (n=2)", "0.800 ± 0.071 (n=2)", "0.250 ± 0.071 (n=2)"]
    assert f"CPU {CPU} | bf16 | 0, 1 |" in readme.read_text()


def test_provenance_reads_cpus_gpus_and_precisions_from_the_notes():
    from cfgan.compute import resolve
    from cfgan.evaluate.run import _run_note
    notes = [NOTE, "trained at fp32 on cpu, evaluated at fp32 on cpu; trained on CPU Old CPU (family 25, model 1), "
             "evaluated on CPU New CPU (family 26, model 2)", "3 test crops, 2 defect classes + undamaged; evaluated at fp32 on cpu",
             "Inception at bf16", None, float("nan")]
    c = compute_from_notes(notes)
    assert c["trained"] == {"precision": ["bf16", "fp32"], "device": ["cpu"], "cpu": ["Old CPU (family 25, model 1)", CPU], "gpu": []}
    assert c["evaluated"]["cpu"] == ["New CPU (family 26, model 2)", CPU] and c["evaluated"]["precision"] == ["bf16", "fp32"]
    cx = resolve({"compute": {"device": "cpu", "precision": "fp32"}})
    note = _run_note({"compute": {"device": "cuda", "precision": "bf16", "gpu": "NVIDIA H100 80GB HBM3"}, "params": {}}, cx)
    c = compute_from_notes([note])
    assert c["trained"]["gpu"] == ["NVIDIA H100 80GB HBM3"] and c["trained"]["precision"] == ["bf16"]
    assert c["evaluated"]["device"] == ["cpu"] and len(c["evaluated"]["cpu"]) == 1 and c["trained"]["cpu"] == []
    assert experiment_of_files(["params.yaml", "workflow/profiles/crackforest/params.yaml", "workflow/experiments/r1-1800.yaml"]) == "r1-1800"
    assert experiment_of_files(["params.yaml", "workflow/profiles/tiny/params.yaml"]) == "base"
