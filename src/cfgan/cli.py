"""`cfgan <step>`: one subcommand per pipeline step. Snakemake rules and DVC stages call these.

Every step reads the merged `--params` files, keeps only the keys `steps.STEP_KEYS` lists for it,
reads only its declared inputs and writes its outputs atomically.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from . import cpu
from .config import load_params
from .console import log_to, say, warn
from .errors import UserError
from .io import atomic_path, write_csv
from .steps import STEP_KEYS, keys_for, select


def _params(args, step: str, dataset: str | None = None) -> dict:
    params = load_params(args.params)
    if dataset is not None and dataset not in params["datasets"]:
        raise UserError(f"--dataset {dataset!r}: not defined under 'datasets' in params; known: {', '.join(params['datasets'])}")
    selected = select(params, keys_for(step, dataset))
    if "compute?" in STEP_KEYS[step]:  # a step that runs models: say where, and fail before anything is written
        from . import gpus
        from .compute import resolve
        if gpus.wants_cuda(selected):  # before CUDA initialises: one free GPU of several becomes this job's only one
            gpu = gpus.claim()
            if gpu is not None:
                print(f"{step}: gpu pool: this job runs on GPU {gpu} (CUDA_VISIBLE_DEVICES={gpu})", file=sys.stderr, flush=True)
        print(f"{step}: compute {resolve(selected).summary()}", file=sys.stderr, flush=True)
    return selected


# --- data ------------------------------------------------------------------------------------

def _source(params: dict, dataset: str, kind: str) -> dict:
    src = params["datasets"][dataset]["source"]
    if src["kind"] != kind:
        raise UserError(f"datasets.{dataset}.source.kind is {src['kind']!r}, not {kind!r}")
    return src


def cmd_synthetic(args):
    from .data.synthetic import generate
    import pandas as pd
    p = _params(args, "synthetic", args.dataset)
    src = _source(p, args.dataset, "synthetic")
    out = Path(args.out)
    with atomic_path(out, is_dir=True) as tmp:
        rows = generate(tmp, src["n_sources"], src["size"], src["damaged_fraction"], p["seed"], src.get("pores", 0))
        frame = pd.DataFrame(rows)
        frame["path"] = frame["path"].str.replace(str(tmp), str(out), regex=False)
        frame["mask_path"] = frame["mask_path"].str.replace(str(tmp), str(out), regex=False)
        frame.to_csv(tmp / "index.csv", index=False)
    print(f"wrote {len(frame)} synthetic source images to {out}")


def _print_scan(result, step: str) -> None:
    for note in result.notes:
        if note in result.warnings:
            warn(step, note)  # the log and the terminal
        else:
            print(note)


def _same_as_before(index_csv: Path, digest: str) -> str:
    """Compare the archive's sha256 with the one the previous index recorded."""
    import pandas as pd
    if not digest or not index_csv.is_file():
        return ""
    before = pd.read_csv(index_csv, keep_default_na=False, dtype=str, nrows=1)
    if "archive_sha256" not in before.columns or before.empty:
        return ""
    old = before["archive_sha256"].iloc[0]
    return "the same archive as the previous index" if old == digest else \
        f"a DIFFERENT archive from the previous index (sha256 was {old})"


def cmd_download(args):
    from .data.download import fetch
    from .data.extract import extract
    from .data.index import scan
    p = _params(args, "download", args.dataset)
    src = _source(p, args.dataset, "download")
    out = Path(args.out)
    downloads = out / "downloads"
    for f in src.get("files", []):
        path = fetch(f["url"], downloads / f["name"], f["sha256"], src.get("manual", ""))
        if f.get("extract"):
            extract(path, downloads / (Path(f["name"]).stem + ".d"))
    given = None
    if src.get("archive"):
        from .data.archives import acquire
        given = acquire(downloads, src, args.dataset)
        root = given.root
        for note in given.notes:
            print(note)
    else:
        root = downloads / src.get("root", "")
    if src.get("manual") and not root.is_dir():
        raise UserError(f"datasets.{args.dataset}: {root} is missing. This data set needs a manual step:\n  "
                        f"{src['manual']}\n  Source: {src.get('homepage', '(see params)')}")
    try:
        result = scan(root, src["layout"])
    except UserError as exc:
        if not src.get("manual"):
            raise
        raise UserError(f"{exc}\n  What this data set needs (datasets.{args.dataset}.source.manual):\n  {src['manual']}") from exc
    frame = result.frame
    if given is not None:  # what the user gave, so that a later run can tell it is the same file
        frame["archive"], frame["archive_sha256"] = given.name, given.sha256
        same = _same_as_before(out / "index.csv", given.sha256)
        if same:
            print(f"{given.name}: {same}")
    _print_scan(result, "download")
    write_csv(out / "index.csv", frame)
    print(f"indexed {len(frame)} images of {args.dataset} in {out / 'index.csv'}")


def cmd_ingest(args):
    from .data.index import scan
    p = _params(args, "ingest", args.dataset)
    src = _source(p, args.dataset, "local")
    result = scan(Path(src["path"]), src["layout"])
    _print_scan(result, "ingest")
    frame = result.frame
    write_csv(Path(args.out) / "index.csv", frame)
    print(f"indexed {len(frame)} images from {src['path']} ({int(frame['label'].sum())} damaged)")


def cmd_split(args):
    import pandas as pd
    from .data.split import assign_splits
    p = _params(args, "split")
    index = pd.read_csv(args.index, keep_default_na=False, dtype={"mask_path": str, "source_id": str})
    frame = assign_splits(index, p["split"], p["seed"])
    write_csv(args.out, frame)
    print(frame.groupby(["split", "label"]).size().rename("images").to_string())


def cmd_crop(args):
    import pandas as pd
    from .data.crop import crop_split
    p = _params(args, "crop", args.dataset)
    index = pd.read_csv(args.split_index, keep_default_na=False, dtype={"mask_path": str, "source_id": str})
    out = Path(args.out)
    with atomic_path(out, is_dir=True) as tmp:
        ds = p["datasets"][args.dataset]
        mask_classes = ds.get("source", {}).get("layout", {}).get("mask_classes")
        manifest = crop_split(index, tmp, ds["crop"], p["seed"], mask_classes, args.dataset)
        manifest.to_csv(tmp / "manifest.csv", index=False)
    by = ["split", "defect_class" if "defect_class" in manifest.columns else "label"]
    print(manifest.groupby(by).size().rename("crops").to_string())


# --- training --------------------------------------------------------------------------------

def cmd_train(args):
    from .train.gan import train_gan
    s = train_gan(_params(args, "train", args.dataset), Path(args.manifest), args.run, Path(args.out), args.dataset)
    print(f"{s['run']}: selected step {s['best_step']} (val score {s['val_score']:.3f}, D F1 {s['val_f1_d']:.3f}); "
          f"checkpoint in {args.out}")
    if s["collapse"]:
        print(f"{s['run']} COLLAPSED: " + "; ".join(s["collapse"]) + " (every evaluation of this run says so)")


def cmd_train_baseline(args):
    from .train.baselines import train_baseline
    s = train_baseline(_params(args, "train-baseline"), Path(args.manifest), args.backbone, Path(args.out), args.seed)
    print(f"{s['run']}: best val F1 {s['val_f1']:.3f} at step {s['best_step']}; checkpoint in {args.out}")


def cmd_train_unet_classifier(args):
    from .train.unet_classifier import train_unet_classifier
    s = train_unet_classifier(_params(args, "train-unet-classifier"), Path(args.manifest), args.generator, Path(args.out), args.seed)
    print(f"{s['run']}: best val F1 {s['val_f1']:.3f} at step {s['best_step']}; checkpoint in {args.out}")


def cmd_train_segmenter(args):
    from .train.segmenters import train_segmenter
    s = train_segmenter(_params(args, "train-segmenter"), Path(args.manifest), args.arch, Path(args.out), args.seed)
    print(f"{s['run']}: best val IoU {s['val_iou']:.3f} at step {s['best_step']}; checkpoint in {args.out}")


def cmd_train_posthoc(args):
    from .train.posthoc import train_posthoc
    s = train_posthoc(_params(args, "train-posthoc"), Path(args.manifest), Path(args.out), args.seed, args.classifier)
    print(f"{s['run']}: explains {s['classifier']}; selected step {s['best_step']} (val keep/flip score {s['val_score']:.3f}, "
          f"Ga flips {s['val']['val_flip']:.1%}, Gs keeps {s['val']['val_keep']:.1%}); checkpoint in {args.out}")
    if s["collapse"]:
        print(f"{s['run']} COLLAPSED: " + "; ".join(s["collapse"]))


# --- evaluation ------------------------------------------------------------------------------

def _write_eval(frame, out):
    write_csv(out, frame)
    print(frame.drop(columns=["note"]).head(12).to_string(index=False))


def cmd_fid_real(args):
    from .evaluate.run import run_fid_real
    with atomic_path(args.out) as out:
        print(run_fid_real(_params(args, "fid-real"), Path(args.manifest), out))


def cmd_fid(args):
    from .evaluate.run import run_fid
    with atomic_path(args.examples) as ex:
        frame = run_fid(_params(args, "fid"), Path(args.manifest), Path(args.checkpoint), Path(args.real_features),
                        args.dataset, ex)
    _write_eval(frame, args.out)


def cmd_classify(args):
    from .evaluate.run import run_classify
    _write_eval(run_classify(_params(args, "classify"), Path(args.manifest), Path(args.checkpoint), args.dataset), args.out)


def cmd_classify_references(args):
    from .evaluate.references import run_classify_references
    _write_eval(run_classify_references(_params(args, "classify-references"), Path(args.manifest), args.dataset), args.out)


def cmd_robustness(args):
    from .evaluate.run import run_robustness
    _write_eval(run_robustness(_params(args, "robustness"), Path(args.manifest), Path(args.checkpoint), args.dataset), args.out)


def cmd_multiclass(args):
    from .evaluate.multiclass import run_multiclass
    _write_eval(run_multiclass(_params(args, "multiclass"), Path(args.manifest), [Path(c) for c in args.checkpoints],
                               args.dataset), args.out)


def cmd_uncertainty(args):
    from .evaluate.run import run_uncertainty
    _write_eval(run_uncertainty(_params(args, "uncertainty"), Path(args.manifest), Path(args.checkpoint), args.dataset), args.out)


def cmd_saliency(args):
    from .evaluate.run import run_saliency
    with atomic_path(args.examples) as ex:
        frame = run_saliency(_params(args, "saliency"), Path(args.manifest), Path(args.checkpoint), args.dataset, ex)
    _write_eval(frame, args.out)


def cmd_adversarial_maps(args):
    from .evaluate.adversarial_maps import run_adversarial_maps
    with atomic_path(args.examples) as ex:
        frame = run_adversarial_maps(_params(args, "adversarial-maps"), Path(args.manifest), Path(args.checkpoint), args.dataset, ex,
                                     Path(args.posthoc) if args.posthoc else None)
    _write_eval(frame, args.out)


def cmd_saliency_references(args):
    from .evaluate.references import run_saliency_references
    with atomic_path(args.examples) as ex:
        frame = run_saliency_references(_params(args, "saliency-references"), Path(args.manifest), args.dataset, ex)
    _write_eval(frame, args.out)


def cmd_report(args):
    from .report.build import build_report
    written = build_report(_params(args, "report"), Path(args.evaluations), Path(args.out), params_files=args.params)
    print("tables and figures:\n  " + "\n  ".join(map(str, written)))


def cmd_publish(args):
    from .report.publish import publish
    record = publish(Path(args.results), args.command, Path(args.out), args.force)
    prov = record["metrics"]["provenance"]
    print(f"wrote {args.out}: {record['dataset']}: {record['experiment']}, seeds {prov['seeds']}, commit {prov['commit']}, "
          f"{len(record['table5_segmentation'])} map rows, {len(record['table2_classification'])} classifier rows; "
          "`make results` writes its numbers into README.md and docs/results.md")


def cmd_results_tables(args):
    from .report.results_tables import results_tables
    diffs = results_tables(Path(args.runs), Path(args.readme), Path(args.results_md), check=args.check)
    if args.check and diffs:
        print("".join(diffs))
        print(f"cfgan results-tables: {len(diffs)} file(s) differ from the published runs in {args.runs} (a number typed "
              "into a generated block, or runs published since): run `make results`", file=sys.stderr)
        raise SystemExit(1)
    print(("rewrote " + ", ".join(d.splitlines()[0].removeprefix("--- ").removesuffix(" (as it is)") for d in diffs)) if diffs
          else f"README and results page {'match' if args.check else 'already match'} the published runs in {args.runs}")


def cmd_explain(args):
    from .explain_posthoc import explain_posthoc, is_posthoc
    if is_posthoc(args.run):  # Charachon et al.'s explainer of a frozen classifier (cfgan train-posthoc)
        if any(Path(p).is_dir() for p in args.images):
            raise UserError("a folder of images (the gallery page) is not supported for a post-hoc explainer yet; give the image files")
        written = explain_posthoc(args.run[0], args.images, Path(args.out), args.force, args.form, args.classifier)
        print("wrote:\n  " + "\n  ".join(map(str, written)))
        return
    if args.classifier:
        raise UserError(f"--classifier {args.classifier}: explains with a post-hoc explainer trained for that classifier "
                        f"(cfgan train-posthoc); --run {' '.join(args.run)} is not one")
    if any(Path(p).is_dir() for p in args.images):  # a folder: every image under it, and a page to look through them
        from .report.gallery import explain_folder
        page, written = explain_folder(args.run, args.images, Path(args.out), args.force, form=args.form)
        print(f"wrote {len(written)} files into {args.out}; the gallery: {page.resolve().as_uri()}")
        return
    from .explain import explain
    written = explain(args.run, args.images, Path(args.out), args.force, form=args.form)
    print("wrote:\n  " + "\n  ".join(map(str, written)))


def cmd_export(args):
    from .export import export
    meta = export(args.run, args.format, Path(args.out), args.force, form=args.form, saliency=args.saliency)
    print(f"wrote {args.out} ({args.format}, run {meta['run']}, input N x 3 x {meta['image_size']} x {meta['image_size']} "
          f"float32 in [0, 1]; largest difference from the PyTorch model on its check images: "
          f"{max(meta['check'].get('max_abs_diff', {}).values(), default=float('nan')):.2g})")


def cmd_dvc_yaml(args):
    from .dvc_pipeline import write
    load_params(args.params)  # validate before writing anything
    write(list(args.params), Path(args.out))
    print(f"wrote {args.out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cfgan", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True, metavar="STEP")

    def step(name, func, help, *opts):
        sp = sub.add_parser(name, help=help)
        sp.add_argument("--params", nargs="+", default=["params.yaml"], help="params files, later override earlier")
        sp.add_argument("--log", help="write the step's output to this file (as Snakemake's log:); its warnings and "
                        "the error that stops it also reach the terminal")
        for opt in opts:
            sp.add_argument(f"--{opt}", required=True, type=int if opt == "seed" else str)
        sp.set_defaults(func=func)
        return sp

    step("synthetic", cmd_synthetic, "generate the procedural crack data set", "dataset", "out")
    step("download", cmd_download, "fetch, verify and extract a data set from its URLs", "dataset", "out")
    step("ingest", cmd_ingest, "index a local folder (one sub-folder per class, masks optional)", "dataset", "out")
    step("split", cmd_split, "split source images 70/10/20 (stratified, seeded)", "index", "out")
    step("crop", cmd_crop, "tile or resize the split images into crops + manifest", "dataset", "split-index", "out")
    step("train", cmd_train, "train one GAN run {generator}-{discriminator}-c{cycles}-s{seed}", "manifest", "dataset", "run", "out")
    step("train-baseline", cmd_train_baseline, "train the plain 2-class classifier", "manifest", "backbone", "seed", "out")
    step("train-unet-classifier", cmd_train_unet_classifier, "train the generator's architecture as a plain classifier "
         "(its auxiliary head alone, no adversary)", "manifest", "generator", "seed", "out")
    step("train-segmenter", cmd_train_segmenter, "train a supervised segmenter on the masks", "manifest", "arch", "seed", "out")
    ph = step("train-posthoc", cmd_train_posthoc, "train a post-hoc explainer (Charachon et al.: a similar and an adversarial "
              "generator) of a frozen classifier", "manifest", "seed", "out")
    which = ph.add_mutually_exclusive_group(required=True)
    which.add_argument("--classifier", help="a plain twin's checkpoint (results/<ds>/baselines/<backbone>-s<seed>/checkpoint.pt)")
    which.add_argument("--classifier-spec", action="store_true", help="your own classifier, as params' posthoc.classifier "
                       "describes it ({kind: torchscript, path: ...} or {kind: timm, arch: ..., weights: ...}; docs/own-data.md)")
    step("fid-real", cmd_fid_real, "Inception features of the real test crops (once per data set)", "manifest", "out")
    step("fid", cmd_fid, "FID of counterfactuals (full / und. / dam.)", "manifest", "checkpoint", "real-features",
         "dataset", "out", "examples")
    step("classify", cmd_classify, "accuracy, F1, precision, recall on test", "manifest", "checkpoint", "dataset", "out")
    step("classify-references", cmd_classify_references, "the trivial classifiers (all damaged, all undamaged) on test",
         "manifest", "dataset", "out")
    step("saliency", cmd_saliency, "saliency IoU and f1_tol2: counterfactual vs Grad-CAM, or a segmenter's",
         "manifest", "checkpoint", "dataset", "out", "examples")
    step("saliency-references", cmd_saliency_references, "the training-free saliency maps (local contrast, random, "
         "all pixels), scored like the learned ones", "manifest", "dataset", "out", "examples")
    step("robustness", cmd_robustness, "targeted PGD and Gaussian-noise sweeps", "manifest", "checkpoint", "dataset", "out")
    am = step("adversarial-maps", cmd_adversarial_maps, "each explainer's map of test crops and of their targeted PGD "
              "adversarials (a GAN run's D and G, or a plain twin): how far the maps move", "manifest", "checkpoint", "dataset",
              "out", "examples")
    am.add_argument("--posthoc", help="a plain twin's post-hoc explainer (cfgan train-posthoc), whose maps are drawn too")
    mc = step("multiclass", cmd_multiclass, "multi-class decision (one-vs-rest GANs or the K+1-class twin): macro F1, "
              "untargeted PGD and noise sweeps", "manifest", "dataset", "out")
    mc.add_argument("--checkpoints", nargs="+", required=True,
                    help="the K one-vs-rest GAN checkpoints of one configuration and seed, or one plain twin's")
    step("uncertainty", cmd_uncertainty, "correlation of p_fake with per-sample NLL", "manifest", "checkpoint", "dataset", "out")
    step("report", cmd_report, "the paper's tables and figures for one data set", "evaluations", "out")
    step("dvc-yaml", cmd_dvc_yaml, "write dvc.yaml (the DVC front door) for these params files", "out")
    ex = sub.add_parser("explain", help="counterfactual, saliency overlay and probabilities for your own images")
    ex.add_argument("--run", required=True, action="append",
                    help="a trained run folder (results/<ds>/runs/<run>) or its checkpoint.pt; multi-class data: "
                         "--run once per one-vs-rest run, or once with the configuration's name without -k "
                         "(e.g. results/<ds>/runs/cnn_unet-resnet3-c1-s0)")
    ex.add_argument("images", nargs="+", help="image files, or folders: every image under them (recursively), and a "
                    "gallery page OUT/index.html to look through them in a browser")
    ex.add_argument("--out", default="explanations", help="output folder (default: explanations/)")
    ex.add_argument("--force", action="store_true", help="overwrite earlier explanations of the same names")
    ex.add_argument("--form", default="abs", help="the saliency map's form: abs (the paper's |x - G(x)|, default), dark, bright, "
                    "both, each also with -decast, and +turns8 etc. (G's output averaged over the crop's turns); the saliency table's note names the one chosen on val")
    ex.add_argument("--classifier", help="with --run a post-hoc explainer's folder (cfgan train-posthoc): the file of your "
                    "classifier it was trained for, where it is now (checked by sha256; default: where it was in training)")
    ex.set_defaults(func=cmd_explain)
    xp = sub.add_parser("export", help="a trained run's D, G and saliency map as one TorchScript or ONNX file, metadata inside")
    xp.add_argument("--run", required=True, help="a trained run folder (results/<ds>/runs/<run>) or its checkpoint.pt")
    xp.add_argument("--format", required=True, help="torchscript or onnx (onnx needs: pip install 'cfgan[export]')")
    xp.add_argument("--out", required=True, help="the file to write (e.g. model.onnx, model.pt)")
    xp.add_argument("--force", action="store_true", help="overwrite an existing --out")
    xp.add_argument("--form", default="abs", help="the saliency map's form, as for explain (default abs, the paper's "
                    "|x - G(x)|), or val: the form the saliency step chose on val")
    xp.add_argument("--saliency", default=None, help="the run's saliency evaluation CSV, for the threshold chosen on val "
                    "(default: results/<ds>/evaluations/saliency/<run>.csv beside the run)")
    xp.set_defaults(func=cmd_export)
    pb = sub.add_parser("publish", help="one finished run's metrics and headline numbers as one JSON file "
                        "(docs/runs/<dataset>/<experiment>.json), which `cfgan results-tables` reads")
    pb.add_argument("--results", required=True, help="the results folder, results/<dataset>/<experiment>")
    pb.add_argument("--command", required=True, help="the command that made the run, e.g. \"snakemake --profile "
                    "workflow/profiles/crackforest all --config experiment=r1-1800\" (no step can know it)")
    pb.add_argument("--out", required=True, help="the file to write: docs/runs/<dataset>/<experiment>.json")
    pb.add_argument("--force", action="store_true", help="replace an existing --out")
    pb.set_defaults(func=cmd_publish)
    rt = sub.add_parser("results-tables", help="write the README's headline results and docs/results.md's current "
                        "tables (between their markers) from the published runs (`make results`)")
    rt.add_argument("--runs", default="docs/runs", help="the published runs' folder (default: docs/runs)")
    rt.add_argument("--readme", default="README.md", help="default: README.md")
    rt.add_argument("--results-md", default="docs/results.md", help="default: docs/results.md")
    rt.add_argument("--check", action="store_true", help="write nothing; exit 1 with a diff where a file differs "
                    "from what would be written (CI: a number typed into a generated block)")
    rt.set_defaults(func=cmd_results_tables)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with log_to(getattr(args, "log", None)):
        cpu.tune()
        try:
            args.func(args)
        except UserError as exc:
            say(f"cfgan {args.step}: error: {exc}")  # the log, and the terminal under --log
            return 2
        except BaseException:
            if getattr(args, "log", None):
                traceback.print_exc()  # into the log; the terminal gets it as the exception leaves
            raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
