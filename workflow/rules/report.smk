# The paper's tables and figures for one data set, drawn from the evaluation CSVs.


rule report:
    input:
        evaluations_of,
    output:
        [f"results/{{dataset}}/tables/{t}.{ext}" for t in TABLES for ext in ("csv", "md")],
        [f"results/{{dataset}}/figures/{f}.png" for f in FIGURES],
    wildcard_constraints:
        dataset=alternatives(UNMASKED),
    params:
        files=PARAMS,
        cfg=step_params("report"),
    conda:
        "../envs/cfgan.yaml"
    log:
        "logs/{dataset}/report.log",
    shell:
        "cfgan report --params {params.files} --evaluations results/{wildcards.dataset}/evaluations "
        "--out results/{wildcards.dataset} > {log} 2>&1"


use rule report as report_with_masks with:
    output:
        [f"results/{{dataset}}/tables/{t}.{ext}" for t in TABLES + MASK_TABLES for ext in ("csv", "md")],
        [f"results/{{dataset}}/figures/{f}.png" for f in FIGURES + MASK_FIGURES],
    wildcard_constraints:
        dataset=alternatives(MASKED),
