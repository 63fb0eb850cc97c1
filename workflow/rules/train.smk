# The GAN grid {generator}-{discriminator}-c{cycles}, the plain classifier twins, the non-adversarial UNet
# classifiers and the supervised segmenters.


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


# The non-adversarial UNet classifier: each generator of the grid trained as a plain classifier on its
# auxiliary head alone (the paper's comparison for G's head in table 2 and figure 3).
rule train_unet_classifier:
    input:
        "data/processed/{dataset}/manifest.csv",
    output:
        checkpoint=f"{RES}unet_classifiers/{{generator}}-s{{seed}}/checkpoint.pt",
        log=f"{RES}unet_classifiers/{{generator}}-s{{seed}}/log.csv",
    wildcard_constraints:
        generator=alternatives(config["grid"]["generators"]),
        seed=alternatives(SEEDS),
    params:
        out=f"{RES}unet_classifiers/{{generator}}-s{{seed}}",
        files=PARAMS,
        cfg=step_params("train-unet-classifier"),
    threads: GPU_JOB_THREADS
    resources:
        gpu=1,
    conda:
        "../envs/cfgan.yaml"
    log:
        f"{LOGS}train/unet_classifier-{{generator}}-s{{seed}}.log",
    shell:
        "OMP_NUM_THREADS={threads} cfgan train-unet-classifier --params {params.files} --manifest {input} "
        "--generator {wildcards.generator} --seed {wildcards.seed} --out {params.out} > {log} 2>&1"


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


# Charachon et al.'s post-hoc explainer of each plain twin (a similar and an adversarial generator against
# the frozen twin): a baseline row of table 5 (posthoc.enabled), on data sets with masks.
rule train_posthoc:
    input:
        manifest="data/processed/{dataset}/manifest.csv",
        classifier=f"{RES}baselines/{{backbone}}-s{{seed}}/checkpoint.pt",
    output:
        checkpoint=f"{RES}posthoc/{{backbone}}-s{{seed}}/checkpoint.pt",
        log=f"{RES}posthoc/{{backbone}}-s{{seed}}/log.csv",
    wildcard_constraints:
        dataset=alternatives(MASKED),
        backbone=alternatives(config["grid"]["discriminators"] if POSTHOC else []),
        seed=alternatives(SEEDS),
    params:
        out=f"{RES}posthoc/{{backbone}}-s{{seed}}",
        files=PARAMS,
        cfg=step_params("train-posthoc"),
    threads: GPU_JOB_THREADS
    resources:
        gpu=1,
    conda:
        "../envs/cfgan.yaml"
    log:
        f"{LOGS}train/posthoc-{{backbone}}-s{{seed}}.log",
    shell:
        "OMP_NUM_THREADS={threads} cfgan train-posthoc --params {params.files} --manifest {input.manifest} "
        "--classifier {input.classifier} --seed {wildcards.seed} --out {params.out} > {log} 2>&1"
