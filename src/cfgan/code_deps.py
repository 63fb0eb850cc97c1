"""The code each pipeline step runs: the cfgan modules its `cfgan <step>` command imports, and
everything those import in turn, read from the source (no hand-kept list).

Both front doors rerun a step when that code changes, and only then: Snakemake gets a content
hash of the files as a rule param (its `code` trigger sees only the rule's text, and mtime is
off so that `dvc checkout` does not force reruns); DVC lists the files as the stage's deps.

How a step's closure is found: cli.py's module-level imports, plus the imports inside
`cmd_<step>`, then every cfgan import (at any depth in a module, so function-level imports
count) of every module reached, plus the `__init__.py` of each package on the way. Imports of
other packages (torch, ...) are the software environment's business, not this one's.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent  # the cfgan package actually in use
NAME = "cfgan"
REPO_PREFIX = Path("src") / NAME  # where the package sits in the repository (DVC deps)


def _file(package_dir: Path, module: str) -> Path | None:
    """cfgan.a.b -> <package_dir>/a/b.py or <package_dir>/a/b/__init__.py (None: not a cfgan module)."""
    parts = module.split(".")
    if parts[0] != NAME:
        return None
    base = package_dir.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _resolve(package_dir: Path, current: str, is_package: bool, node: ast.AST) -> list[str]:
    """The cfgan modules one import statement loads (absolute names)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == NAME]
    if node.level:  # relative: from the current package, `level - 1` packages up
        package = current.split(".") if is_package else current.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    if base.split(".")[0] != NAME:
        return []
    # `from pkg import name` loads pkg, and pkg.name when that is a submodule
    return [base] + [f"{base}.{a.name}" for a in node.names if _file(package_dir, f"{base}.{a.name}")]


def _imports(package_dir: Path, module: str, nodes) -> set[str]:
    path = _file(package_dir, module)
    is_package = path is not None and path.name == "__init__.py"
    found = set()
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.update(_resolve(package_dir, module, is_package, node))
    return found


def _with_parents(module: str) -> list[str]:
    """Importing cfgan.a.b runs cfgan/__init__.py and cfgan/a/__init__.py first."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def closure(package_dir: Path, roots: set[str], opaque: frozenset[str] = frozenset()) -> set[Path]:
    """Every file of the modules `roots` import, transitively (roots included). `opaque` modules
    count as files but their imports are not followed (cli.py: the caller picks its imports)."""
    seen: set[str] = set(opaque)
    todo = [p for r in roots for p in _with_parents(r)]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = _file(package_dir, module)
        if path is None:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        todo += [p for m in _imports(package_dir, module, ast.walk(tree)) for p in _with_parents(m)]
    return {f for f in (_file(package_dir, m) for m in seen | set(opaque)) if f is not None}


def step_roots(package_dir: Path, step: str) -> set[str]:
    """cli.py's module-level cfgan imports and those inside `cmd_<step>` (not the other commands')."""
    cli = f"{NAME}.cli"
    tree = ast.parse(_file(package_dir, cli).read_text())
    func = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "cmd_" + step.replace("-", "_")), None)
    if func is None:
        raise KeyError(f"step {step!r}: cli.py has no cmd_{step.replace('-', '_')}")
    return _imports(package_dir, cli, tree.body) | _imports(package_dir, cli, ast.walk(func))


@functools.lru_cache(maxsize=None)
def step_files(step: str, package_dir: Path = PACKAGE_DIR) -> tuple[str, ...]:
    """The step's code as sorted paths relative to the package folder (e.g. 'train/losses.py')."""
    files = closure(package_dir, step_roots(package_dir, step), frozenset({f"{NAME}.cli"}))
    return tuple(sorted(f.relative_to(package_dir).as_posix() for f in files))


def dvc_deps(step: str) -> list[str]:
    """The same files as repository paths, for a DVC stage's deps."""
    return [(REPO_PREFIX / f).as_posix() for f in step_files(step)]


@functools.lru_cache(maxsize=None)
def step_hash(step: str, package_dir: Path = PACKAGE_DIR) -> str:
    """sha256 over the step's files (relative name and bytes): changes exactly when its code does."""
    h = hashlib.sha256()
    for rel in step_files(step, package_dir):
        h.update(rel.encode() + b"\0" + (package_dir / rel).read_bytes() + b"\0")
    return h.hexdigest()
