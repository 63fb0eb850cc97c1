# Shared helpers: which params files a run uses, which keys each step reads, what "all" means.
import os

from cfgan.code_deps import step_hash
from cfgan.config import baseline_runs, experiment_of, grid_runs, grid_seeds, multiclass_runs, segmenter_runs, unet_classifier_runs
from cfgan.config import posthoc_runs
from cfgan.steps import has_masks, keys_for, select


def _relative(path):
    return os.path.relpath(path) if os.path.isabs(path) else path


# params.yaml plus the files a profile adds with `configfile:`, in merge order; every cfgan
# command gets exactly these, so the CLI sees the configuration Snakemake sees.
PARAMS_FILES = list(dict.fromkeys(["params.yaml"] + [_relative(str(p)) for p in workflow.overwrite_configfiles] + EXPERIMENT_FILES))
PARAMS = " ".join(PARAMS_FILES)
# The data steps get the files without the experiment's overlay: an overlay may not change the split
# or the crops, and their commands stay the same for every experiment, so none reruns them.
DATA_PARAMS = " ".join(f for f in PARAMS_FILES if f not in EXPERIMENT_FILES)
# One experiment per invocation: its name is a fixed part of every results and log path (data/ is
# shared by all experiments on a data set: an overlay may not change the split or the crops).
EXPERIMENT = experiment_of(config)
RES = f"results/{{dataset}}/{EXPERIMENT}/"
LOGS = f"logs/{{dataset}}/{EXPERIMENT}/"
# CPU threads of each job that runs a model (those declaring `resources: gpu=1`): a fixed number,
# not workflow.cores, so `snakemake all --cores 16 --resources gpu=8` runs eight of them at once,
# each on its own GPU (src/cfgan/gpus.py). From params.yaml's scheduling.gpu_job_threads; a
# profile's set-threads overrides it (the tiny profile's 1 thread; slurm's cpus_per_task).
GPU_JOB_THREADS = int(config.get("scheduling", {}).get("gpu_job_threads", 2))
DATASETS = config["run_datasets"]
RUNS = grid_runs(config)  # of every data set in run_datasets (wildcard constraints); per data set: grid_runs(config, ds)
BASELINES = baseline_runs(config)
UNET_CLASSIFIERS = unet_classifier_runs(config)
SEGMENTERS = segmenter_runs(config)
POSTHOC = posthoc_runs(config)  # Charachon et al.'s explainer of each plain twin (posthoc.enabled)
SEEDS = grid_seeds(config)
REFERENCES = "references"  # the training-free "run": trivial classifiers and reference saliency maps
MASKED = [n for n in config["datasets"] if has_masks(config["datasets"][n])]
UNMASKED = [n for n in config["datasets"] if n not in MASKED]


def step_params(step):
    """The params keys one step reads and a hash of the cfgan code it imports (rerun triggers:
    only these; mtime is off, and the `code` trigger sees only the rule's own text)."""
    return lambda w: {**select(config, keys_for(step, getattr(w, "dataset", None))), "cfgan_code": step_hash(step)}


def datasets_of_kind(kind):
    names = [n for n, d in config["datasets"].items() if d["source"]["kind"] == kind]
    return "|".join(names) if names else "(?!x)x"  # a regex that matches nothing


def alternatives(names):
    return "|".join(map(str, names)) if names else "(?!x)x"


MULTICLASS = sorted({r for ds in DATASETS for r in multiclass_runs(config, ds)})


def multiclass_checkpoints(wildcards):
    """The K one-vs-rest GAN checkpoints of a configuration and seed, or a plain twin's own."""
    return [checkpoint_path(wildcards.dataset, r) for r in multiclass_runs(config, wildcards.dataset)[wildcards.run]]


def checkpoint_path(dataset, run):
    if run.startswith("baseline-"):
        return f"results/{dataset}/{EXPERIMENT}/baselines/{run.removeprefix('baseline-')}/checkpoint.pt"
    if run.startswith("segmenter-"):
        return f"results/{dataset}/{EXPERIMENT}/segmenters/{run.removeprefix('segmenter-')}/checkpoint.pt"
    if run.startswith("posthoc-"):
        return f"results/{dataset}/{EXPERIMENT}/posthoc/{run.removeprefix('posthoc-')}/checkpoint.pt"
    if run.startswith("unet_classifier-"):
        return f"results/{dataset}/{EXPERIMENT}/unet_classifiers/{run.removeprefix('unet_classifier-')}/checkpoint.pt"
    return f"results/{dataset}/{EXPERIMENT}/runs/{run}/checkpoint.pt"


def checkpoint_of(wildcards):
    return checkpoint_path(wildcards.dataset, wildcards.run)


def posthoc_of_twin(wildcards):
    """A plain twin's post-hoc explainer where one is trained (posthoc.enabled, data with masks); none otherwise."""
    if wildcards.run.startswith("baseline-") and wildcards.dataset in MASKED and POSTHOC:
        return checkpoint_path(wildcards.dataset, f"posthoc-{wildcards.run.removeprefix('baseline-')}")
    return []


TABLES = ["table1_fid", "table2_classification", "table3_fid_subsets", "table4_fakeness_correlation", "table6_adversarial_maps"]
FIGURES = ["fig2_counterfactuals", "fig3_pgd", "fig3_noise", "fig6_adversarial_maps"]
MASK_TABLES = ["table5_segmentation"]
MASK_FIGURES = ["fig4_saliency", "fig5_iou_quantiles"]
# what `dvc metrics show` / `dvc plots show` read
METRICS_OUTPUTS = [f"{RES}metrics.json", f"{RES}plots/pgd.csv", f"{RES}plots/noise.csv"]


# what each artifact shows, as the report's list of results names it beside the file
REPORT_TITLES = {
    "table1_fid": "Table 1: FID of the counterfactuals",
    "table2_classification": "Table 2: classification, D vs plain twin vs trivial",
    "table3_fid_subsets": "Table 3: FID on undamaged / damaged subsets",
    "table4_fakeness_correlation": "Table 4: fake score vs prediction error",
    "table5_segmentation": "Table 5: saliency vs ground truth, all methods",
    "fig2_counterfactuals": "Figure 2: inputs, counterfactuals, saliency",
    "fig3_pgd": "Figure 3a: F1 under PGD, D vs plain twin",
    "fig3_noise": "Figure 3b: F1 under noise, D vs plain twin",
    "fig4_saliency": "Figure 4: saliency maps beside segmenters",
    "fig5_iou_quantiles": "Figure 5: IoU quantiles of every saliency method",
    "table6_adversarial_maps": "Table 6: how far each explainer's map moves under PGD, D vs plain twin",
    "fig6_adversarial_maps": "Figure 6: maps of clean and adversarial crops, D vs plain twin",
}


def report_table(name):
    """A table's CSV, flagged for `snakemake --report` with its caption."""
    return report(f"{RES}tables/{name}.csv", caption=f"../report/{name}.rst",
                  category="{dataset}", subcategory="tables", labels={"artifact": name, "shows": REPORT_TITLES[name]})


def report_figure(name):
    return report(f"{RES}figures/{name}.png", caption=f"../report/{name}.rst",
                  category="{dataset}", subcategory="figures", labels={"artifact": name, "shows": REPORT_TITLES[name]})


def report_outputs(dataset):
    masks = has_masks(config["datasets"][dataset])
    tables = TABLES + (MASK_TABLES if masks else [])
    figures = FIGURES + (MASK_FIGURES if masks else [])
    return [f"results/{dataset}/{EXPERIMENT}/tables/{t}.{ext}" for t in tables for ext in ("csv", "md")] + [
        f"results/{dataset}/{EXPERIMENT}/figures/{f}.png" for f in figures
    ]


def all_artifacts():
    return [path for ds in DATASETS for path in report_outputs(ds)]


def evaluations_of(wildcards):
    ds = wildcards.dataset
    runs = grid_runs(config, ds)  # one GAN per defect class on a multi-class data set
    paths = [f"results/{ds}/{EXPERIMENT}/evaluations/{kind}/{run}.csv" for kind in ("fid", "uncertainty") for run in runs]
    paths += [f"results/{ds}/{EXPERIMENT}/evaluations/examples/{run}_counterfactuals.npz" for run in runs]
    paths += [f"results/{ds}/{EXPERIMENT}/evaluations/{kind}/{run}.csv" for kind in ("classification", "robustness")
              for run in runs + BASELINES + UNET_CLASSIFIERS]
    paths += [f"results/{ds}/{EXPERIMENT}/evaluations/classification/{REFERENCES}.csv"]
    paths += [f"results/{ds}/{EXPERIMENT}/evaluations/multiclass/{run}.csv" for run in multiclass_runs(config, ds)]
    # each explainer's map of test crops and of their PGD adversarials (table 6, figure 6), on every data set
    paths += [f"results/{ds}/{EXPERIMENT}/evaluations/{kind}/{run}{ext}" for run in runs + BASELINES
              for kind, ext in (("adversarial_maps", ".csv"), ("examples", "_adversarial_maps.npz"))]
    if has_masks(config["datasets"][ds]):
        paths += [f"results/{ds}/{EXPERIMENT}/evaluations/saliency/{run}.csv" for run in runs + SEGMENTERS + BASELINES + [REFERENCES]]
        paths += [f"results/{ds}/{EXPERIMENT}/evaluations/examples/{run}_saliency.npz" for run in runs + SEGMENTERS + BASELINES + [REFERENCES]]
        # the post-hoc explainers' rows of table 5 (one per plain twin; none when posthoc.enabled is false)
        paths += [f"results/{ds}/{EXPERIMENT}/evaluations/{kind}/{run}{ext}" for run in POSTHOC
                  for kind, ext in (("saliency", ".csv"), ("examples", "_saliency.npz"))]
    return paths

