"""Load params.yaml plus a profile's overrides, validate them, and fail clearly.

Every step reads its configuration through `load_params`, so that the Snakemake rules and the
DVC stages, which both pass the same `--params` files, see exactly the same values.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import yaml

from .errors import UserError

SCHEMA_PATH = Path(__file__).with_name("params.schema.yaml")


def deep_merge(base: dict, override: dict) -> dict:
    """Return base updated by override, recursing into dicts; lists and scalars replace."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    return data


def schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def validate(params: dict, source: str = "params") -> dict:
    """Validate against the schema; raise UserError naming the key and what is allowed."""
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{source}: invalid configuration:"]
        for err in errors[:10]:
            where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
            lines.append(f"  - at '{where}': {_explain(err)}")
        raise UserError("\n".join(lines))
    _check_cross_references(params, source)
    return params


def _explain(err: jsonschema.ValidationError) -> str:
    if err.validator == "enum":
        return f"{err.instance!r} is not allowed; allowed values: {', '.join(map(str, err.validator_value))}"
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        unknown = sorted(set(err.instance) - set(allowed))
        return f"unknown key(s) {', '.join(unknown)}; allowed keys: {', '.join(allowed)}"
    if err.validator == "required":
        return err.message.replace("is a required property", "is a required key but is missing")
    return err.message


def _check_cross_references(params: dict, source: str) -> None:
    known = sorted(params["datasets"])
    for name in params["run_datasets"]:
        if name not in params["datasets"]:
            raise UserError(f"{source}: at 'run_datasets': unknown data set {name!r}; defined under 'datasets': {', '.join(known)}")
    showcase = params["report"]["showcase"]
    for key, allowed in (("generator", params["grid"]["generators"]), ("discriminator", params["grid"]["discriminators"]),
                         ("cycles", params["grid"]["cycles"])):
        if showcase[key] not in allowed:
            raise UserError(f"{source}: at 'report.showcase.{key}': {showcase[key]!r} is not in grid.{key}s {allowed}")


# An experiment is a short overlay file, workflow/experiments/<name>.yaml, merged last over
# params.yaml and a data set's profile. It names itself (`experiment: <name>`), and the name becomes
# part of every results path (results/<dataset>/<experiment>/), so two experiments on one data set
# never collide. Without one, the experiment is BASE_EXPERIMENT. Crops are shared by every
# experiment on a data set (data/processed/<dataset>/), so an overlay may not change what makes them.
EXPERIMENTS_DIR = Path("workflow/experiments")
BASE_EXPERIMENT = "base"
EXPERIMENT_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
DATA_KEYS = ("seed", "split")                  # the split and the crops' random choices
DATA_SET_KEYS = ("source", "crop")             # under datasets.<name>: what makes its crops


def experiment_of(params: dict) -> str:
    return params.get("experiment", BASE_EXPERIMENT)


def results_dir(params: dict, dataset: str) -> str:
    """Where one experiment's runs, evaluations, tables and figures of a data set live."""
    return f"results/{dataset}/{experiment_of(params)}"


def experiment_file(name: str, root: str | Path = ".") -> Path:
    """The overlay file of a named experiment; a clear error for a bad or unknown name."""
    if not EXPERIMENT_NAME.match(str(name)):
        raise UserError(f"experiment {name!r}: expected a name of lower-case letters, digits, '.', '_' or '-'")
    path = Path(root) / EXPERIMENTS_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (Path(root) / EXPERIMENTS_DIR).glob("*.yaml"))
        raise UserError(f"experiment {name!r}: no overlay file {path}; known experiments: {', '.join(known) or 'none'}")
    return path


def check_overlay(path: str | Path, data: dict) -> None:
    """An experiment overlay names itself after its file and leaves the crops alone."""
    name = data.get("experiment")
    if name is None or name == BASE_EXPERIMENT:
        return
    path = Path(path)
    if not EXPERIMENT_NAME.match(str(name)):
        raise UserError(f"{path}: at 'experiment': {name!r} is not a valid name (lower-case letters, digits, '.', '_', '-')")
    if path.stem != name:
        raise UserError(f"{path}: at 'experiment': {name!r} is named by its overlay file, {EXPERIMENTS_DIR}/{name}.yaml: "
                        "pass that file after the profile's params (Snakemake: --config experiment=NAME) instead of "
                        "setting the key here, so that a results folder always leads back to its overlay")
    bad = [k for k in DATA_KEYS if k in data]
    bad += [f"datasets.{ds}.{k}" for ds, block in (data.get("datasets") or {}).items()
            for k in DATA_SET_KEYS if isinstance(block, dict) and k in block]
    if bad:
        raise UserError(f"{path}: an experiment may not set {', '.join(bad)}: every experiment on a data set shares its "
                        "split and crops (data/processed/<dataset>/); declare a new data set in params.yaml or a profile instead")


def apply_experiment(config: dict, configfiles: Iterable[str | Path] = ()) -> list[str]:
    """Merge the overlay of `config['experiment']` into config (in place; Snakemake's
    `--config experiment=<name>`) unless one of configfiles already is it; the overlay files to
    hand every step, so that the steps see what Snakemake sees."""
    name = experiment_of(config)
    if name == BASE_EXPERIMENT or any(Path(p).stem == name for p in configfiles):
        return []
    path = experiment_file(name)
    overlay = read_yaml(path)
    check_overlay(path, overlay)
    merged = deep_merge(config, overlay)
    config.clear()
    config.update(merged)
    return [str(path)]


def load_params(paths: Iterable[str | Path]) -> dict[str, Any]:
    """Merge the params files in order (later ones override) and validate the result."""
    paths = list(paths)
    if not paths:
        raise UserError("no params file given (expected at least params.yaml)")
    merged: dict = {}
    for path in paths:
        data = read_yaml(path)
        check_overlay(path, data)
        merged = deep_merge(merged, data)
    source = " + ".join(str(p) for p in paths)
    from .methods import expand  # `method:` -> its options, where no file sets them
    return validate(expand(validate(merged, source), source), source)


def run_name(generator: str, discriminator: str, cycles: int, seed: int | None = None, defect: str | None = None) -> str:
    """`{generator}-{discriminator}-c{cycles}`, `-k{defect}` for one defect class's GAN of a
    multi-class data set (one-vs-rest), and `-s{seed}` for one seed's training run."""
    base = f"{generator}-{discriminator}-c{cycles}" + (f"-k{defect}" if defect else "")
    return base if seed is None else f"{base}-s{seed}"


def parse_run_name(name: str) -> tuple[str, str, int, int]:
    """(generator, discriminator, cycles, seed) of `{generator}-{discriminator}-c{cycles}[-k{defect}]-s{seed}`."""
    try:
        parts = name.split("-")
        if len(parts) == 5 and parts[3].startswith("k"):
            del parts[3]
        generator, discriminator, cyc, sd = parts
        if not cyc.startswith("c") or not sd.startswith("s"):
            raise ValueError
        return generator, discriminator, int(cyc[1:]), int(sd[1:])
    except ValueError:
        raise UserError(f"run name {name!r}: expected '{{generator}}-{{discriminator}}-c{{cycles}}[-k{{defect}}]-s{{seed}}', "
                        "e.g. cnn_unet-resnet18-c1-s0") from None


def run_defect(name: str) -> str | None:
    """The defect class a run is about (`-k{defect}`), None for a binary run."""
    head = split_seed(name)[0].split("-")  # the class is the last part before the seed
    return head[-1][1:] if len(head) > 1 and head[-1].startswith("k") and len(head[-1]) > 1 else None


def with_defect(name: str, defect: str | None) -> str:
    """A run's name with `-k{defect}` before its seed (references and class-agnostic models
    evaluated on one defect class of a multi-class data set)."""
    if not defect:
        return name
    head, seed = split_seed(name)
    return f"{head}-k{defect}" + ("" if seed is None else f"-s{seed}")


def split_seed(name: str) -> tuple[str, int | None]:
    """Any run's name without its `-s{seed}` suffix, and the seed (None for seedless references)."""
    head, _, tail = name.rpartition("-s")
    if head and tail.isdigit():
        return head, int(tail)
    return name, None


def without_defect(name: str) -> str:
    """A one-vs-rest run's name without its `-k{defect}`: the configuration and seed it belongs to."""
    defect = run_defect(name)
    if defect is None:
        return name
    head, seed = split_seed(name)
    return head.removesuffix(f"-k{defect}") + ("" if seed is None else f"-s{seed}")


def dataset_defects(params: dict, dataset: str) -> list[str]:
    """The defect classes one GAN is trained for each (one-vs-rest); [] for a binary data set."""
    from .data.classes import defect_classes
    layout = params["datasets"][dataset]["source"].get("layout")
    names = defect_classes(layout)
    return list(names.values()) if len(names) > 1 else []


def grid_seeds(params: dict) -> list[int]:
    return list(params["grid"].get("seeds", [0]))


def grid_runs(params: dict, dataset: str | None = None) -> list[str]:
    """Every GAN training run of a data set: {generator} x {discriminator} x {cycles} [x {defect
    class}] x {seed}; without a data set, those of every data set in `run_datasets`."""
    if dataset is None:
        return list(dict.fromkeys(r for ds in params["run_datasets"] for r in grid_runs(params, ds)))
    g = params["grid"]
    return [run_name(gen, dis, c, s, k) for gen in g["generators"] for dis in g["discriminators"] for c in g["cycles"]
            for k in dataset_defects(params, dataset) or [None] for s in grid_seeds(params)]


def multiclass_runs(params: dict, dataset: str) -> dict[str, list[str]]:
    """On a multi-class data set, what the multi-class decision is made from: each configuration
    and seed (named without `-k`) -> its K one-vs-rest GAN runs, each plain twin -> itself; {} on
    binary data."""
    if not dataset_defects(params, dataset):
        return {}
    out: dict[str, list[str]] = {}
    for run in grid_runs(params, dataset):
        out.setdefault(without_defect(run), []).append(run)
    return {**out, **{b: [b] for b in baseline_runs(params)}}


def baseline_runs(params: dict) -> list[str]:
    """The plain twins: one per discriminator backbone and seed."""
    return [f"baseline-{b}-s{s}" for b in params["grid"]["discriminators"] for s in grid_seeds(params)]


def unet_classifier_runs(params: dict) -> list[str]:
    """The non-adversarial UNet classifiers (G's architecture trained as a plain classifier): one per
    generator of the grid and seed."""
    return [f"unet_classifier-{g}-s{s}" for g in params["grid"]["generators"] for s in grid_seeds(params)]


def posthoc_runs(params: dict) -> list[str]:
    """The post-hoc explainers (Charachon et al.), one per plain twin, named after it; none unless `posthoc.enabled`."""
    if not params.get("posthoc", {}).get("enabled", False):
        return []
    return [f"posthoc-{b}-s{s}" for b in params["grid"]["discriminators"] for s in grid_seeds(params)]


def segmenter_runs(params: dict) -> list[str]:
    return [f"segmenter-{a}-s{s}" for a in params["segmenter"]["architectures"] for s in grid_seeds(params)]
