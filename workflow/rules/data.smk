# Acquire (synthetic | download | ingest) -> split by source image -> crop. Each data set's
# source kind in params decides which acquisition rule makes its raw index.


rule synthetic:
    output:
        "data/raw/{dataset}/index.csv",
    wildcard_constraints:
        dataset=datasets_of_kind("synthetic"),
    params:
        files=DATA_PARAMS,
        cfg=step_params("synthetic"),
    conda:
        "../envs/cfgan.yaml"
    log:
        "logs/{dataset}/synthetic.log",
    shell:
        "cfgan synthetic --params {params.files} --dataset {wildcards.dataset} --out data/raw/{wildcards.dataset} > {log} 2>&1"


rule download:
    output:
        "data/raw/{dataset}/index.csv",
    wildcard_constraints:
        dataset=datasets_of_kind("download"),
    params:
        files=DATA_PARAMS,
        cfg=step_params("download"),
    conda:
        "../envs/cfgan.yaml"
    log:
        "logs/{dataset}/download.log",
    shell:
        "cfgan download --params {params.files} --dataset {wildcards.dataset} --out data/raw/{wildcards.dataset} --log {log}"


rule ingest:
    output:
        "data/raw/{dataset}/index.csv",
    wildcard_constraints:
        dataset=datasets_of_kind("local"),
    params:
        files=DATA_PARAMS,
        cfg=step_params("ingest"),
    conda:
        "../envs/cfgan.yaml"
    log:
        "logs/{dataset}/ingest.log",
    shell:
        "cfgan ingest --params {params.files} --dataset {wildcards.dataset} --out data/raw/{wildcards.dataset} --log {log}"


rule split:
    input:
        "data/raw/{dataset}/index.csv",
    output:
        "data/interim/{dataset}/split.csv",
    params:
        files=DATA_PARAMS,
        cfg=step_params("split"),
    conda:
        "../envs/cfgan.yaml"
    log:
        "logs/{dataset}/split.log",
    shell:
        "cfgan split --params {params.files} --index {input} --out {output} > {log} 2>&1"


rule crop:
    input:
        "data/interim/{dataset}/split.csv",
    output:
        manifest="data/processed/{dataset}/manifest.csv",
        crops=directory("data/processed/{dataset}/crops"),
    params:
        files=DATA_PARAMS,
        cfg=step_params("crop"),
    conda:
        "../envs/cfgan.yaml"
    log:
        "logs/{dataset}/crop.log",
    shell:
        "cfgan crop --params {params.files} --dataset {wildcards.dataset} --split-index {input} "
        "--out data/processed/{wildcards.dataset} --log {log}"
