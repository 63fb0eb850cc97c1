# The GAN grid {generator}-{discriminator}-c{cycles} and the plain classifier twins.


rule train:
    input:
        "data/processed/{dataset}/manifest.csv",
    output:
        checkpoint=f"{RES}runs/{{run}}/checkpoint.pt",
        log=f"{RES}runs/{{run}}/log.csv",
    wildcard_constraints:
        run=alternatives(RUNS),
    params:
        out=f"{RES}runs/{{run}}",
        files=PARAMS,
        cfg=step_params("train"),
    threads: GPU_JOB_THREADS
    resources:
        gpu=1,
    conda:
        "../envs/cfgan.yaml"
    log:
        f"{LOGS}train/{{run}}.log",
    shell:
        "OMP_NUM_THREADS={threads} cfgan train --params {params.files} --manifest {input} --dataset {wildcards.dataset} --run {wildcards.run} "
        "--out {params.out} > {log} 2>&1"


rule train_baseline:
    input:
        "data/processed/{dataset}/manifest.csv",
    output:
        checkpoint=f"{RES}baselines/{{backbone}}-s{{seed}}/checkpoint.pt",
        log=f"{RES}baselines/{{backbone}}-s{{seed}}/log.csv",
    wildcard_constraints:
        backbone=alternatives(config["grid"]["discriminators"]),
        seed=alternatives(SEEDS),
    params:
        out=f"{RES}baselines/{{backbone}}-s{{seed}}",
        files=PARAMS,
        cfg=step_params("train-baseline"),
    threads: GPU_JOB_THREADS
    resources:
        gpu=1,
    conda:
        "../envs/cfgan.yaml"
    log:
        f"{LOGS}train/baseline-{{backbone}}-s{{seed}}.log",
    shell:
        "OMP_NUM_THREADS={threads} cfgan train-baseline --params {params.files} --manifest {input} "
        "--backbone {wildcards.backbone} --seed {wildcards.seed} --out {params.out} > {log} 2>&1"


rule train_segmenter:
    input:
        "data/processed/{dataset}/manifest.csv",
    output:
        checkpoint=f"{RES}segmenters/{{arch}}-s{{seed}}/checkpoint.pt",
        log=f"{RES}segmenters/{{arch}}-s{{seed}}/log.csv",
    wildcard_constraints:
        dataset=alternatives(MASKED),
        arch=alternatives(config["segmenter"]["architectures"]),
        seed=alternatives(SEEDS),
    params:
        out=f"{RES}segmenters/{{arch}}-s{{seed}}",
        files=PARAMS,
        cfg=step_params("train-segmenter"),
    threads: GPU_JOB_THREADS
    resources:
        gpu=1,
    conda:
        "../envs/cfgan.yaml"
    log:
        f"{LOGS}train/segmenter-{{arch}}-s{{seed}}.log",
    shell:
        "OMP_NUM_THREADS={threads} cfgan train-segmenter --params {params.files} --manifest {input} "
        "--arch {wildcards.arch} --seed {wildcards.seed} --out {params.out} > {log} 2>&1"
