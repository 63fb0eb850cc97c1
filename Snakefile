# Reproduce arXiv 2310.00761: `snakemake --cores 8 all` (paper configuration, params.yaml) or
# `snakemake --profile workflow/profiles/tiny all` (the CPU smoke run on generated data).
# Every rule calls one `cfgan` subcommand; the logic lives in src/cfgan.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "params.yaml"


report: "workflow/report/workflow.rst"


validate(config, "workflow/schemas/params.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_artifacts(),
