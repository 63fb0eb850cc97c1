# The paper's tables and figures for one data set, drawn from the evaluation CSVs.


rule report:
    input:
        evaluations_of,
    output:
        [f"{RES}tables/{t}.md" for t in TABLES],
        [report_table(t) for t in TABLES],
        [report_figure(f) for f in FIGURES],
        METRICS_OUTPUTS,
    wildcard_constraints:
        dataset=alternatives(UNMASKED),
    params:
        res=RES.rstrip("/"),
        files=PARAMS,
        cfg=step_params("report"),
    conda:
        "../envs/cfgan.yaml"
    log:
        f"{LOGS}report.log",
    shell:
        "cfgan report --params {params.files} --evaluations {params.res}/evaluations "
        "--out {params.res} > {log} 2>&1"


use rule report as report_with_masks with:
    output:
        [f"{RES}tables/{t}.md" for t in TABLES + MASK_TABLES],
        [report_table(t) for t in TABLES + MASK_TABLES],
        [report_figure(f) for f in FIGURES + MASK_FIGURES],
        METRICS_OUTPUTS,
    wildcard_constraints:
        dataset=alternatives(MASKED),
