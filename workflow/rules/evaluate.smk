# One tidy CSV per (evaluation, run) under results/{dataset}/{experiment}/evaluations/.


rule fid_real:
    input:
        "data/processed/{dataset}/manifest.csv",
    output:
        f"{RES}evaluations/fid_real.npz",
    params:
        files=PARAMS,
        cfg=step_params("fid-real"),
    threads: GPU_JOB_THREADS
    resources:
        gpu=1,
    conda:
        "../envs/cfgan.yaml"
    log:
        f"{LOGS}evaluate/fid_real.log",
    shell:
        "OMP_NUM_THREADS={threads} cfgan fid-real --params {params.files} --manifest {input} --out {output} > {log} 2>&1"


rule fid:
    input:
        manifest="data/processed/{dataset}/manifest.csv",
        checkpoint=f"{RES}runs/{{run}}/checkpoint.pt",
        real=f"{RES}evaluations/fid_real.npz",
    output:
        csv=f"{RES}evaluations/fid/{{run}}.csv",
        examples=f"{RES}evaluations/examples/{{run}}_counterfactuals.npz",
    wildcard_constraints:
        run=alternatives(RUNS),
    params:
        files=PARAMS,
        cfg=step_params("fid"),
    threads: GPU_JOB_THREADS
    resources:
        gpu=1,
    conda:
        "../envs/cfgan.yaml"
    log:
        f"{LOGS}evaluate/fid-{{run}}.log",
    shell:
        "OMP_NUM_THREADS={threads} cfgan fid --params {params.files} --manifest {input.manifest} --checkpoint {input.checkpoint} "
        "--real-features {input.real} --dataset {wildcards.dataset} --out {output.csv} --examples {output.examples} > {log} 2>&1"


rule classify:
    input:
        manifest="data/processed/{dataset}/manifest.csv",
        checkpoint=checkpoint_of,
    output:
        f"{RES}evaluations/classification/{{run}}.csv",
    wildcard_constraints:
        run=alternatives(RUNS + BASELINES + UNET_CLASSIFIERS),
    params:
        files=PARAMS,
        cfg=step_params("classify"),
    threads: GPU_JOB_THREADS
    resources:
        gpu=1,
    conda:
        "../envs/cfgan.yaml"
    log:
        f"{LOGS}evaluate/classify-{{run}}.log",
    shell:
        "OMP_NUM_THREADS={threads} cfgan classify --params {params.files} --manifest {input.manifest} "
        "--checkpoint {input.checkpoint} --dataset {wildcards.dataset} --out {output} > {log} 2>&1"


rule robustness:
    input:
        manifest="data/processed/{dataset}/manifest.csv",
        checkpoint=checkpoint_of,
    output:
        f"{RES}evaluations/robustness/{{run}}.csv",
    wildcard_constraints:
        run=alternatives(RUNS + BASELINES + UNET_CLASSIFIERS),
    params:
        files=PARAMS,
        cfg=step_params("robustness"),
    threads: GPU_JOB_THREADS
    resources:
        gpu=1,
    conda:
        "../envs/cfgan.yaml"
    log:
        f"{LOGS}evaluate/robustness-{{run}}.log",
    shell:
        "OMP_NUM_THREADS={threads} cfgan robustness --params {params.files} --manifest {input.manifest} "
        "--checkpoint {input.checkpoint} --dataset {wildcards.dataset} --out {output} > {log} 2>&1"


# Multi-class data sets: one prediction per image from the K one-vs-rest GANs of a configuration
# (or from the plain K+1-class twin), scored by macro F1 and swept like figure 3.
rule multiclass:
    input:
        manifest="data/processed/{dataset}/manifest.csv",
        checkpoints=multiclass_checkpoints,
    output:
        f"{RES}evaluations/multiclass/{{run}}.csv",
    wildcard_constraints:
        run=alternatives(MULTICLASS),
    params:
        files=PARAMS,
        cfg=step_params("multiclass"),
    threads: GPU_JOB_THREADS
    resources:
        gpu=1,
    conda:
        "../envs/cfgan.yaml"
    log:
        f"{LOGS}evaluate/multiclass-{{run}}.log",
    shell:
        "OMP_NUM_THREADS={threads} cfgan multiclass --params {params.files} --manifest {input.manifest} "
        "--checkpoints {input.checkpoints} --dataset {wildcards.dataset} --out {output} > {log} 2>&1"


rule uncertainty:
    input:
        manifest="data/processed/{dataset}/manifest.csv",
        checkpoint=f"{RES}runs/{{run}}/checkpoint.pt",
    output:
        f"{RES}evaluations/uncertainty/{{run}}.csv",
    wildcard_constraints:
        run=alternatives(RUNS),
    params:
        files=PARAMS,
        cfg=step_params("uncertainty"),
    threads: GPU_JOB_THREADS
    resources:
        gpu=1,
    conda:
        "../envs/cfgan.yaml"
    log:
        f"{LOGS}evaluate/uncertainty-{{run}}.log",
    shell:
        "OMP_NUM_THREADS={threads} cfgan uncertainty --params {params.files} --manifest {input.manifest} "
        "--checkpoint {input.checkpoint} --dataset {wildcards.dataset} --out {output} > {log} 2>&1"


rule saliency:
    input:
        manifest="data/processed/{dataset}/manifest.csv",
        checkpoint=checkpoint_of,
    output:
        csv=f"{RES}evaluations/saliency/{{run}}.csv",
        examples=f"{RES}evaluations/examples/{{run}}_saliency.npz",
    wildcard_constraints:
        run=alternatives(RUNS + SEGMENTERS + BASELINES),  # the plain twins: Grad-CAM and the attributions of D's backbone alone
    params:
        files=PARAMS,
        cfg=step_params("saliency"),
    threads: GPU_JOB_THREADS
    resources:
        gpu=1,
    conda:
        "../envs/cfgan.yaml"
    log:
        f"{LOGS}evaluate/saliency-{{run}}.log",
    shell:
        "OMP_NUM_THREADS={threads} cfgan saliency --params {params.files} --manifest {input.manifest} "
        "--checkpoint {input.checkpoint} --dataset {wildcards.dataset} --out {output.csv} "
        "--examples {output.examples} > {log} 2>&1"


# Adversarial samples explained (table 6, figure 6): each explainer's map of test crops and of their targeted PGD
# adversarials, per GAN run (D, and G's map) and per plain twin (and its post-hoc explainer where one is trained).
rule adversarial_maps:
    input:
        manifest="data/processed/{dataset}/manifest.csv",
        checkpoint=checkpoint_of,
        posthoc=posthoc_of_twin,
    output:
        csv=f"{RES}evaluations/adversarial_maps/{{run}}.csv",
        examples=f"{RES}evaluations/examples/{{run}}_adversarial_maps.npz",
    wildcard_constraints:
        run=alternatives(RUNS + BASELINES),
    params:
        files=PARAMS,
        cfg=step_params("adversarial-maps"),
        posthoc=lambda wildcards, input: f"--posthoc {input.posthoc} " if input.posthoc else "",
    threads: GPU_JOB_THREADS
    resources:
        gpu=1,
    conda:
        "../envs/cfgan.yaml"
    log:
        f"{LOGS}evaluate/adversarial_maps-{{run}}.log",
    shell:
        "OMP_NUM_THREADS={threads} cfgan adversarial-maps --params {params.files} --manifest {input.manifest} "
        "--checkpoint {input.checkpoint} {params.posthoc}--dataset {wildcards.dataset} --out {output.csv} "
        "--examples {output.examples} > {log} 2>&1"


# The post-hoc explainers' maps (Charachon et al., a row `posthoc` per plain twin): the same step on their checkpoints.
rule saliency_posthoc:
    input:
        manifest="data/processed/{dataset}/manifest.csv",
        checkpoint=checkpoint_of,
    output:
        csv=f"{RES}evaluations/saliency/{{run}}.csv",
        examples=f"{RES}evaluations/examples/{{run}}_saliency.npz",
    wildcard_constraints:
        dataset=alternatives(MASKED),
        run=alternatives(POSTHOC),
    params:
        files=PARAMS,
        cfg=step_params("saliency"),
    threads: GPU_JOB_THREADS
    resources:
        gpu=1,
    conda:
        "../envs/cfgan.yaml"
    log:
        f"{LOGS}evaluate/saliency-{{run}}.log",
    shell:
        "OMP_NUM_THREADS={threads} cfgan saliency --params {params.files} --manifest {input.manifest} "
        "--checkpoint {input.checkpoint} --dataset {wildcards.dataset} --out {output.csv} "
        "--examples {output.examples} > {log} 2>&1"


# The training-free references: "runs" with no checkpoint, so every table and figure shows them
# beside the learned models (trivial classifiers; local contrast, random and all-pixel maps).
rule classify_references:
    input:
        manifest="data/processed/{dataset}/manifest.csv",
    output:
        f"{RES}evaluations/classification/references.csv",
    params:
        files=PARAMS,
        cfg=step_params("classify-references"),
    conda:
        "../envs/cfgan.yaml"
    log:
        f"{LOGS}evaluate/classify-references.log",
    shell:
        "cfgan classify-references --params {params.files} --manifest {input.manifest} "
        "--dataset {wildcards.dataset} --out {output} > {log} 2>&1"


rule saliency_references:
    input:
        manifest="data/processed/{dataset}/manifest.csv",
    output:
        csv=f"{RES}evaluations/saliency/references.csv",
        examples=f"{RES}evaluations/examples/references_saliency.npz",
    wildcard_constraints:
        dataset=alternatives(MASKED),
    params:
        files=PARAMS,
        cfg=step_params("saliency-references"),
    threads: workflow.cores
    conda:
        "../envs/cfgan.yaml"
    log:
        f"{LOGS}evaluate/saliency-references.log",
    shell:
        "OMP_NUM_THREADS={threads} cfgan saliency-references --params {params.files} --manifest {input.manifest} "
        "--dataset {wildcards.dataset} --out {output.csv} --examples {output.examples} > {log} 2>&1"
