# Reproduce arXiv 2310.00761: `snakemake --cores 8 all` (paper configuration, params.yaml) or
# `snakemake --profile workflow/profiles/tiny all` (the CPU smoke run on generated data); an experiment
# on a data set's profile: `snakemake --profile workflow/profiles/crackforest all --config experiment=r1-1800`.
# Every rule calls one `cfgan` subcommand; the logic lives in src/cfgan.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "params.yaml"


# An experiment (`--config experiment=<name>`) is the overlay workflow/experiments/<name>.yaml,
# merged last; its results go to results/<dataset>/<name>/ (src/cfgan/config.py).
from cfgan.config import apply_experiment

EXPERIMENT_FILES = apply_experiment(config, workflow.overwrite_configfiles)


report: "workflow/report/workflow.rst"


validate(config, "workflow/schemas/params.schema.yaml")


# Data warnings (data/processed/<dataset>/warnings.json, from the crop step): at the top of the HTML
# report (workflow/report/workflow.rst reads this key) and summed up at the end of every run.
from cfgan.data.data_warnings import for_report, print_summary

config["data_warnings"] = for_report(config["run_datasets"])


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_artifacts(),


onsuccess:
    print_summary(config["run_datasets"])


onerror:
    print_summary(config["run_datasets"])
