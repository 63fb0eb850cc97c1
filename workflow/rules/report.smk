# The paper's tables and figures for one data set, drawn from the evaluation CSVs.


def evaluations_of(wildcards):
    ds = wildcards.dataset
    paths = [f"results/{ds}/evaluations/{kind}/{run}.csv" for kind in ("fid", "uncertainty") for run in RUNS]
    paths += [f"results/{ds}/evaluations/examples/{run}_counterfactuals.npz" for run in RUNS]
    paths += [f"results/{ds}/evaluations/{kind}/{run}.csv" for kind in ("classification", "robustness") for run in RUNS + BASELINES]
    if has_masks(config["datasets"][ds]):
        paths += [f"results/{ds}/evaluations/saliency/{run}.csv" for run in RUNS]
        paths += [f"results/{ds}/evaluations/examples/{run}_saliency.npz" for run in RUNS]
    return paths


MASKED = [n for n in config["datasets"] if has_masks(config["datasets"][n])]
UNMASKED = [n for n in config["datasets"] if n not in MASKED]


rule report:
    input:
        evaluations_of,
    output:
        [f"results/{{dataset}}/tables/{t}.{ext}" for t in TABLES for ext in ("csv", "md")],
        [f"results/{{dataset}}/figures/{f}.png" for f in FIGURES],
    wildcard_constraints:
        dataset=alternatives(UNMASKED),
    params:
        cfg=step_params("report"),
    log:
        "logs/{dataset}/report.log",
    shell:
        "cfgan report --params {PARAMS} --evaluations results/{wildcards.dataset}/evaluations "
        "--out results/{wildcards.dataset} > {log} 2>&1"


use rule report as report_with_masks with:
    output:
        [f"results/{{dataset}}/tables/{t}.{ext}" for t in TABLES + MASK_TABLES for ext in ("csv", "md")],
        [f"results/{{dataset}}/figures/{f}.png" for f in FIGURES + MASK_FIGURES],
    wildcard_constraints:
        dataset=alternatives(MASKED),
