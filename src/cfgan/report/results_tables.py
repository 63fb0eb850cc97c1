"""`cfgan results-tables` (`make results`): the README's headline results and docs/results.md's current tables,
written from the published runs (docs/runs/**/*.json, made by `cfgan publish`, report/publish.py), never typed.

Only the text between the markers changes: `<!-- results:begin -->` / `<!-- results:end -->` in the README (one
compact table of every published data set and experiment, then how each was made) and
`<!-- current-tables:begin -->` / `<!-- current-tables:end -->` in docs/results.md (the fuller tables of the same
files). `--check` writes nothing and exits 1 with a diff where either file differs from what it would write, so a
number typed into a block by hand fails CI.

The README's row of a data set and experiment (per defect class on multi-class data), every number mean ± sd (n
seeds), maps on all damaged test crops (rows of the attribution subset are left to docs/results.md):
- the best explainer: the highest median IoU of Table 5's rows that are neither a training-free reference, a
  supervised segmenter nor Grad-CAM (the counterfactual maps, a fused row, a post-hoc explainer...), named;
- `local_contrast` (no training), the best supervised segmenter, Grad-CAM on the shown configuration's D;
- D's clean F1 and its F1 under PGD step 0.002, and the same of its plain twin (the twin of D's backbone). D is the
  configuration figures 2 and 4 show (params' `report.showcase`, recorded in metrics.json), so nothing is picked
  on test.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path

from ..config import parse_run_name, without_defect
from ..errors import UserError
from ..io import write_text
from .metrics import PROVENANCE
from .publish import FORMAT

README_MARKERS = ("<!-- results:begin -->", "<!-- results:end -->")
RESULTS_MARKERS = ("<!-- current-tables:begin -->", "<!-- current-tables:end -->")
EMPTY = ("No run of the current code is published yet: `cfgan publish` records a finished run in `docs/runs/` and "
         "`make results` writes its numbers here.")
HEADLINE_PGD = 0.002   # the PGD step size of the README's row (the paper's figure 3 reads the sweep; the row one point)
REFERENCE_MAPS = ("local_contrast", "random", "all_pixels")
TABLE5_LABELS = {"iou_median": "median IoU", "iou_mean": "mean IoU", "pixel_auroc": "pixel AUROC",
                 "aupro_fpr30": "AUPRO to FPR 0.3", "ods_tol2": "ODS 2 px", "ois_tol2": "OIS 2 px"}
TABLE2_LABELS = {"f1": "F1", "auroc": "image AUROC"}
DASH = "—"
RESULTS_ANCHOR = "published-runs-of-the-current-code"  # docs/results.md's heading "Published runs of the current code"


# --- reading ---------------------------------------------------------------------------------------------------

def load_runs(folder: Path) -> list[tuple[Path, dict]]:
    """Every published file under `folder` (recursively), sorted by path; a file that is not one is an error
    naming it. A missing folder holds none."""
    folder = Path(folder)
    out = []
    for path in sorted(folder.rglob("*.json")) if folder.is_dir() else []:
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: not valid JSON ({exc}); publish the run again with `cfgan publish --force`") from None
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise UserError(f"{path}: not a published run (its 'format' should be {FORMAT!r}); files in {folder} "
                            "are written by `cfgan publish`")
        out.append((path, record))
    return out


# --- formatting ------------------------------------------------------------------------------------------------

def fmt(s: dict | None, n: bool = True) -> str:
    """`mean ± sd (n=N)` (one seed: `mean (n=1)`); without n where a table gives it in its own column."""
    if not s:
        return DASH
    text = f"{s['mean']:.3f}" + (f" ± {s['sd']:.3f}" if s.get("sd") is not None else "")
    return text + (f" (n={s['n']})" if n and s.get("n") is not None else "")


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows])


def _names(values: list[str]) -> str:
    return "; ".join(values) or "not recorded"


def compute_words(prov: dict) -> tuple[str, str]:
    """(where the models trained, at which precision), each adding where the evaluation differed."""
    compute = prov.get("compute") or {}
    trained, evaluated = compute.get("trained", {}), compute.get("evaluated", {})

    def where(c):
        return _names([f"GPU {g}" for g in c.get("gpu", [])] or [f"CPU {c}" for c in c.get("cpu", [])])

    place, precision = where(trained), "/".join(trained.get("precision", [])) or "not recorded"
    if evaluated and where(evaluated) != place and (evaluated.get("gpu") or evaluated.get("cpu")):
        place += f" (evaluated on {where(evaluated)})"
    if evaluated.get("precision") and evaluated["precision"] != trained.get("precision"):
        precision += f" (evaluated at {'/'.join(evaluated['precision'])})"
    return place, precision


def commit_words(commit: str | None) -> str:
    if not commit:
        return "not in git"
    sha, dirty = commit.removesuffix("-dirty"), commit.endswith("-dirty")
    return f"`{sha[:10]}`" + (" (with uncommitted changes)" if dirty else "")


def _link(path: Path, page: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), Path(page).resolve().parent)).as_posix()


def _title(record: dict) -> str:
    return f"{record['dataset']}: {record['experiment']}"


# --- choosing the README's rows -----------------------------------------------------------------------------------

def _value(row: dict | None, metric: str) -> float:
    s = (row or {}).get(metric)
    return s["mean"] if s else float("-inf")


def _best(rows: list[dict], metric: str = "iou_median") -> dict | None:
    rows = [r for r in rows if r.get(metric)]
    return max(rows, key=lambda r: _value(r, metric)) if rows else None


def _is_gan(config: str) -> bool:
    try:
        parse_run_name(f"{config}-s0")
        return True
    except UserError:
        return False


def _defects(record: dict) -> list[str | None]:
    named = {r.get("defect") for key in ("table5_segmentation", "table2_classification") for r in record[key]}
    named.discard("all")  # the multi-class decisions' row about every class at once
    return sorted(d for d in named if d) or [None]


def headline(record: dict, defect: str | None) -> dict:
    """The README row's numbers of one published run (one defect class on multi-class data)."""
    maps = [r for r in record["table5_segmentation"] if r.get("defect") == defect and r.get("crops", "all") == "all"]
    cls = [r for r in record["table2_classification"] if r.get("defect") == defect]
    rob = [r for r in record["robustness_f1"] if r.get("defect") == defect and r["attack"] == "pgd"
           and abs(float(r["strength"]) - HEADLINE_PGD) < 1e-12]
    references = [r for r in maps if str(r["config"]).startswith("references")]
    segmenters = [r for r in maps if str(r["config"]).startswith("segmenter") or r["saliency"] == "segmenter"]
    explainers = [r for r in maps if r not in references and r not in segmenters and r["saliency"] != "gradcam"]
    best = _best(explainers)
    d_rows = sorted((r for r in cls if r["model"] == "D"), key=lambda r: r["config"])
    showcase = record["metrics"][PROVENANCE].get("showcase")
    d = next((r for r in d_rows if without_defect(r["config"]) == showcase), None) \
        or next((r for r in d_rows if best and r["config"] == best["config"]), None) or (d_rows[0] if d_rows else None)
    twin = None
    if d is not None and _is_gan(without_defect(d["config"])):
        backbone = parse_run_name(f"{without_defect(d['config'])}-s0")[1]
        twins = sorted((r for r in cls if r["model"] == "baseline"), key=lambda r: r["config"])
        twin = next((r for r in twins if without_defect(r["config"]) == f"baseline-{backbone}"), None) or (twins[0] if twins else None)
    gradcams = [r for r in maps if r["saliency"] == "gradcam"]
    gradcam = next((r for r in gradcams if d and r["config"] == d["config"]), None) or _best(gradcams)

    def pgd(row):
        return next((r["f1"] for r in rob if row and r["config"] == row["config"] and r["model"] == row["model"]), None)

    return {"best": best, "local_contrast": next((r for r in references if r["saliency"] == "local_contrast"), None),
            "segmenter": _best(segmenters), "gradcam": gradcam, "D": d, "twin": twin,
            "D_pgd": pgd(d), "twin_pgd": pgd(twin)}


def _classifier(row: dict | None, attacked: dict | None) -> str:
    if row is None:
        return DASH
    return f"`{row['config']}`: {fmt(row.get('f1'))} / {fmt(attacked)}"


# --- the two blocks -----------------------------------------------------------------------------------------------

def readme_block(runs: list[tuple[Path, dict]], readme: Path, results_md: Path) -> str:
    if not runs:
        return EMPTY
    numbers, made = [], []
    for path, record in runs:
        prov = record["metrics"][PROVENANCE]
        title = f"[{_title(record)}]({_link(path, readme)})"
        for defect in _defects(record):
            h = headline(record, defect)
            best = h["best"]
            numbers.append([title + (f" ({defect})" if defect else ""),
                            f"{fmt(best['iou_median'])}, `{best['config']}` {best['saliency']}" if best else DASH,
                            fmt((h["local_contrast"] or {}).get("iou_median")), fmt((h["segmenter"] or {}).get("iou_median")),
                            fmt((h["gradcam"] or {}).get("iou_median")),
                            _classifier(h["D"], h["D_pgd"]), _classifier(h["twin"], h["twin_pgd"])])
        place, precision = compute_words(prov)
        made.append([_title(record), f"`{record['command']}`", place, precision,
                     ", ".join(map(str, prov.get("seeds") or [])) or DASH, str(prov.get("date") or DASH)[:10],
                     commit_words(prov.get("commit"))])
    return "\n\n".join([
        "Runs of the current code: each published in `docs/runs/` by `cfgan publish` and written here by `make results` "
        f"(test splits; mean ± sd over seeds (n); maps: median IoU on all damaged test crops; F1 clean / under PGD {HEADLINE_PGD:g}; "
        f"every table of these runs: [{Path(results_md).name}]({_link(results_md, readme)}#{RESULTS_ANCHOR})).",
        _table(["data set: experiment", "best explainer", "`local_contrast`", "segmenter", "Grad-CAM on D",
                "D: F1 clean / PGD", "plain twin: F1 clean / PGD"], numbers),
        _table(["data set: experiment", "command", "trained on", "precision", "seeds", "date", "commit"], made)])


def _keys(rows: list[dict], skip: tuple[str, ...] = ()) -> list[str]:
    """The key columns of a published table's rows (those that are not {mean, sd, n}), in their order."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k, v in r.items() if not isinstance(v, dict) and k not in keys and k not in skip]
    return [k for k in keys if any(r.get(k) is not None for r in rows)]  # a column no row fills (defect on binary data)


def _n(row: dict, metrics) -> str:
    ns = {row[m]["n"] for m in metrics if row.get(m)}
    return ", ".join(str(n) for n in sorted(x for x in ns if x is not None)) or DASH


def _metric_table(rows: list[dict], labels: dict[str, str], skip: tuple[str, ...] = ()) -> str:
    keys = _keys(rows, skip)
    metrics = [m for m in labels if any(r.get(m) for r in rows)]
    return _table(keys + [labels[m] for m in metrics] + ["n"],
                  [[_code(r.get(k)) for k in keys] + [fmt(r.get(m), n=False) for m in metrics] + [_n(r, metrics)] for r in rows])


def _code(value) -> str:
    return DASH if value is None else f"`{value}`" if isinstance(value, str) else f"{value:g}" if isinstance(value, float) else str(value)


def _sweep_table(rows: list[dict], attack: str) -> str:
    rows = [r for r in rows if r["attack"] == attack]
    if not rows:
        return ""
    strengths = sorted({float(r["strength"]) for r in rows})
    keys = _keys(rows, ("attack", "strength"))
    series: dict[tuple, dict] = {}
    for r in rows:
        series.setdefault(tuple(r.get(k) for k in keys), {})[float(r["strength"])] = r["f1"]
    body = [[_code(v) for v in key] + [fmt(by.get(s), n=False) for s in strengths]
            + [", ".join(str(n) for n in sorted({s["n"] for s in by.values() if s and s.get("n") is not None})) or DASH]
            for key, by in series.items()]
    return _table(keys + [f"{s:g}" for s in strengths] + ["n"], body)


def results_block(runs: list[tuple[Path, dict]], results_md: Path) -> str:
    if not runs:
        return EMPTY
    parts = ["Written by `make results` from the published runs in `docs/runs/` (each made by `cfgan publish` from one "
             "results folder): test splits, mean ± sd over seeds, n the number of seeds."]
    for path, record in runs:
        prov = record["metrics"][PROVENANCE]
        place, precision = compute_words(prov)
        parts.append(f"### {_title(record)}")
        parts.append(f"[{Path(path).name}]({_link(path, results_md)}): `{record['command']}`; trained on {place}, {precision}; "
                     f"seeds {', '.join(map(str, prov.get('seeds') or [])) or DASH}; {prov.get('date') or DASH}; commit "
                     f"{commit_words(prov.get('commit'))}; params files {', '.join(f'`{p}`' for p in prov.get('params_files') or []) or DASH}.")
        if record["table5_segmentation"]:
            parts += ["Table 5, maps against the masks (damaged test crops; `crops`: all, or the attribution subset):",
                      _metric_table(record["table5_segmentation"], TABLE5_LABELS)]
        parts += ["Table 2, clean classification:", _metric_table(record["table2_classification"], TABLE2_LABELS)]
        for attack, words in (("pgd", "F1 under PGD, by step size"), ("noise", "F1 under Gaussian noise, by its sd")):
            table = _sweep_table(record["robustness_f1"], attack)
            if table:
                parts += [f"{words}:", table]
        if record["table4_fakeness_correlation"]:
            parts += ["Table 4, Pearson r of p_fake with the per-sample NLL:",
                      _metric_table(record["table4_fakeness_correlation"], {"pearson_r": "Pearson r"},
                                    ("generator", "discriminator", "cycles"))]
    return "\n\n".join(parts)


# --- writing -------------------------------------------------------------------------------------------------------

def replace_between(text: str, markers: tuple[str, str], block: str, path: Path) -> str:
    begin, end = markers
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise UserError(f"{path}: needs exactly one '{begin}' followed by one '{end}' (the generated results go between them)")
    head, rest = text.split(begin)
    tail = rest.split(end)[1]
    return f"{head}{begin}\n{block.rstrip()}\n{end}{tail}"


def results_tables(runs: Path, readme: Path, results_md: Path, check: bool = False) -> list[str]:
    """Rewrite the blocks of `readme` and `results_md` from the published runs in `runs`; with `check`, write
    nothing. Returns a unified diff per file that differed (was rewritten, or would be)."""
    published = load_runs(runs)
    diffs = []
    for path, markers, block in ((Path(readme), README_MARKERS, readme_block(published, readme, results_md)),
                                 (Path(results_md), RESULTS_MARKERS, results_block(published, results_md))):
        if not path.is_file():
            raise UserError(f"{path}: not found")
        old = path.read_text()
        new = replace_between(old, markers, block, path)
        if new != old:
            diffs.append("".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), f"{path} (as it is)",
                                                      f"{path} (from {runs})")))
            if not check:
                mode = path.stat().st_mode & 0o777
                write_text(path, new)
                path.chmod(mode)  # the temporary file's 0600 would hide the page from other users
    return diffs
