# The GAN grid {generator}-{discriminator}-c{cycles} and the plain classifier twins.


rule train:
    input:
        "data/processed/{dataset}/manifest.csv",
    output:
        checkpoint="results/{dataset}/runs/{run}/checkpoint.pt",
        log="results/{dataset}/runs/{run}/log.csv",
    wildcard_constraints:
        run=alternatives(RUNS),
    params:
        files=PARAMS,
        cfg=step_params("train"),
    threads: GPU_JOB_THREADS
    resources:
        gpu=1,
    conda:
        "../envs/cfgan.yaml"
    log:
        "logs/{dataset}/train/{run}.log",
    shell:
        "OMP_NUM_THREADS={threads} cfgan train --params {params.files} --manifest {input} --dataset {wildcards.dataset} --run {wildcards.run} "
        "--out results/{wildcards.dataset}/runs/{wildcards.run} > {log} 2>&1"


rule train_baseline:
    input:
        "data/processed/{dataset}/manifest.csv",
    output:
        checkpoint="results/{dataset}/baselines/{backbone}-s{seed}/checkpoint.pt",
        log="results/{dataset}/baselines/{backbone}-s{seed}/log.csv",
    wildcard_constraints:
        backbone=alternatives(config["grid"]["discriminators"]),
        seed=alternatives(SEEDS),
    params:
        files=PARAMS,
        cfg=step_params("train-baseline"),
    threads: GPU_JOB_THREADS
    resources:
        gpu=1,
    conda:
        "../envs/cfgan.yaml"
    log:
        "logs/{dataset}/train/baseline-{backbone}-s{seed}.log",
    shell:
        "OMP_NUM_THREADS={threads} cfgan train-baseline --params {params.files} --manifest {input} "
        "--backbone {wildcards.backbone} --seed {wildcards.seed} --out results/{wildcards.dataset}/baselines/{wildcards.backbone}-s{wildcards.seed} > {log} 2>&1"


rule train_segmenter:
    input:
        "data/processed/{dataset}/manifest.csv",
    output:
        checkpoint="results/{dataset}/segmenters/{arch}-s{seed}/checkpoint.pt",
        log="results/{dataset}/segmenters/{arch}-s{seed}/log.csv",
    wildcard_constraints:
        dataset=alternatives(MASKED),
        arch=alternatives(config["segmenter"]["architectures"]),
        seed=alternatives(SEEDS),
    params:
        files=PARAMS,
        cfg=step_params("train-segmenter"),
    threads: GPU_JOB_THREADS
    resources:
        gpu=1,
    conda:
        "../envs/cfgan.yaml"
    log:
        "logs/{dataset}/train/segmenter-{arch}-s{seed}.log",
    shell:
        "OMP_NUM_THREADS={threads} cfgan train-segmenter --params {params.files} --manifest {input} "
        "--arch {wildcards.arch} --seed {wildcards.seed} --out results/{wildcards.dataset}/segmenters/{wildcards.arch}-s{wildcards.seed} > {log} 2>&1"
