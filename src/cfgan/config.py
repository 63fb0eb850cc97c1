"""Load params.yaml plus a profile's overrides, validate them, and fail clearly.

Every step reads its configuration through `load_params`, so that the Snakemake rules and the
DVC stages, which both pass the same `--params` files, see exactly the same values.
"""

from __future__ import annotations

import copy
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


def load_params(paths: Iterable[str | Path]) -> dict[str, Any]:
    """Merge the params files in order (later ones override) and validate the result."""
    paths = list(paths)
    if not paths:
        raise UserError("no params file given (expected at least params.yaml)")
    merged: dict = {}
    for path in paths:
        merged = deep_merge(merged, read_yaml(path))
    return validate(merged, source=" + ".join(str(p) for p in paths))


def run_name(generator: str, discriminator: str, cycles: int, seed: int | None = None) -> str:
    """`{generator}-{discriminator}-c{cycles}`, and `-s{seed}` for one seed's training run."""
    base = f"{generator}-{discriminator}-c{cycles}"
    return base if seed is None else f"{base}-s{seed}"


def parse_run_name(name: str) -> tuple[str, str, int, int]:
    """(generator, discriminator, cycles, seed) of `{generator}-{discriminator}-c{cycles}-s{seed}`."""
    try:
        generator, discriminator, cyc, sd = name.split("-")
        if not cyc.startswith("c") or not sd.startswith("s"):
            raise ValueError
        return generator, discriminator, int(cyc[1:]), int(sd[1:])
    except ValueError:
        raise UserError(f"run name {name!r}: expected '{{generator}}-{{discriminator}}-c{{cycles}}-s{{seed}}', "
                        "e.g. cnn_unet-resnet18-c1-s0") from None


def split_seed(name: str) -> tuple[str, int | None]:
    """Any run's name without its `-s{seed}` suffix, and the seed (None for seedless references)."""
    head, _, tail = name.rpartition("-s")
    if head and tail.isdigit():
        return head, int(tail)
    return name, None


def grid_seeds(params: dict) -> list[int]:
    return list(params["grid"].get("seeds", [0]))


def grid_runs(params: dict) -> list[str]:
    """Every GAN training run: {generator} x {discriminator} x {cycles} x {seed}."""
    g = params["grid"]
    return [run_name(gen, dis, c, s) for gen in g["generators"] for dis in g["discriminators"] for c in g["cycles"]
            for s in grid_seeds(params)]


def baseline_runs(params: dict) -> list[str]:
    """The plain twins: one per discriminator backbone and seed."""
    return [f"baseline-{b}-s{s}" for b in params["grid"]["discriminators"] for s in grid_seeds(params)]


def segmenter_runs(params: dict) -> list[str]:
    return [f"segmenter-{a}-s{s}" for a in params["segmenter"]["architectures"] for s in grid_seeds(params)]
