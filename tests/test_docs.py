"""Docs that cannot rot: every relative link and anchor in README.md and docs/*.md resolves, and
every repository path and `cfgan` subcommand the README names exists. Fast; reads text only."""
import glob
import re
import unicodedata
from pathlib import Path

import pytest

from cfgan.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Paths the pipeline or the user makes, never committed: named in the README, checked nowhere.
GENERATED = ("data/", "results/", "logs/", ".venv", "../shared/data", "dvc-storage/", "explanations/",
             ".snakemake/")
USER_FILES = {"my.yaml", "my.jpg", "photo.jpg", "report.html"}
ROOT_FILES = {"Makefile", "Snakefile", "LICENSE"}  # bare names without an extension that are files here


def _without_fences(text: str) -> str:
    """The text with fenced code blocks blanked (a `# my.yaml` inside one is no heading)."""
    return re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.S | re.M)


def _fenced_blocks(text: str) -> list[str]:
    """Fenced blocks of commands or file trees; a ```text block is printed output (generated names)."""
    return [body for lang, body in re.findall(r"^```([^\n]*)\n(.*?)^```", text, flags=re.S | re.M)
            if lang.strip() != "text"]


def github_slug(heading: str) -> str:
    """A heading's anchor as GitHub computes it: markup dropped, lower case, punctuation stripped
    (letters, digits, '_', '-' and spaces stay), each space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)                          # inline HTML
    text = text.strip().lower()
    kept = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in "-_ " or cat[0] in "LN" or cat == "Mn":
            kept.append(ch)
    return "".join(kept).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor of a Markdown file; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    out = set()
    for line in _without_fences(path.read_text()).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = github_slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links(path: Path) -> list[str]:
    """Targets of inline links and images outside code (spans and fences)."""
    text = re.sub(r"`[^`\n]*`", "", _without_fences(path.read_text()))
    return [m.group(1).split(" ")[0].strip("<>") for m in re.finditer(r"!?\[[^\]]*\]\(([^)\s]+(?:\s+\"[^\"]*\")?)\)", text)]


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def broken_links(path: Path) -> list[str]:
    problems = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{_rel(path)}: {target}: no such file")
            continue
        if anchor:
            if dest.suffix != ".md":
                problems.append(f"{_rel(path)}: {target}: an anchor into a file that is not Markdown")
            elif anchor not in anchors(dest):
                problems.append(f"{_rel(path)}: {target}: no heading with anchor #{anchor} in {_rel(dest)}")
    return problems


def named_paths(text: str) -> set[str]:
    """Repository paths named in inline code, fenced blocks and link targets: words holding a '/', or
    a bare file name of the kinds kept at the top level."""
    words = []
    for chunk in re.findall(r"`([^`\n]+)`", _without_fences(text)) + _fenced_blocks(text):
        words += chunk.split()
    words += [t.partition("#")[0] for t in re.findall(r"\]\(([^)#\s]+)", text) if not re.match(r"^[a-z]+:", t)]
    out = set()
    for word in words:
        word = word.strip(",;:()'\"").removeprefix("./")
        if not word or re.match(r"^[a-z][a-z0-9+.-]*:", word) or word.startswith("-"):
            continue
        if any(c in word for c in "<>{}=$|\\") or word in USER_FILES or word.startswith(GENERATED):
            continue
        if word.startswith("...") or word.endswith("..."):
            continue
        if "/" in word or word in ROOT_FILES or re.fullmatch(r"[\w.-]+\.(yaml|yml|toml|cff|md|smk|cfg)", word):
            out.add(word)
    return out


def missing_paths(text: str) -> list[str]:
    missing = []
    for word in sorted(named_paths(text)):
        if "*" in word:
            if not glob.glob(str(ROOT / word)):
                missing.append(word)
        elif not (ROOT / word).exists():
            missing.append(word)
    return missing


def subcommands() -> set[str]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return set(sub.choices)


def named_subcommands(text: str) -> set[str]:
    chunks = re.findall(r"`([^`\n]+)`", _without_fences(text)) + _fenced_blocks(text)
    return {m for chunk in chunks for m in re.findall(r"(?<![\w/.-])cfgan[ \t]+([a-z][a-z0-9-]*)", chunk)}


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(path):
    assert not broken_links(path), "\n".join(broken_links(path))


def test_the_readme_is_a_front_page_and_links_every_topic():
    text = (ROOT / "README.md").read_text()
    lines = text.splitlines()
    assert len(lines) <= 220
    head = "\n".join(lines[:40])
    assert "arXiv 2310.00761" in head and "make demo" in head and "make test" in head
    table = next(i for i, line in enumerate(lines) if line.startswith("| data set (profile: experiment), claim"))
    assert table < 120 and "CrackForest" in lines[table + 2]
    assert "best configuration" in lines[table] and "the paper's configuration" in lines[table]  # every row beside the paper's
    targets = {t.partition("#")[0] for t in links(ROOT / "README.md")}
    for topic in ("results", "method", "own-data", "data", "clusters", "trust", "speed", "workflow", "code-map"):
        assert f"docs/{topic}.md" in targets, f"the README does not link docs/{topic}.md"
    assert {"LICENSE", "CITATION.cff"} <= targets
    picture = ROOT / "docs" / "fig4_saliency_tiny.png"
    assert picture.exists() and picture.stat().st_size < 300_000


def test_every_file_and_subcommand_the_readme_names_exists():
    text = (ROOT / "README.md").read_text()
    assert not missing_paths(text), f"the README names files that do not exist: {missing_paths(text)}"
    named = named_subcommands(text)
    assert {"explain", "synthetic"} <= named  # the scan sees the commands it must check
    assert named <= subcommands(), f"not cfgan subcommands: {sorted(named - subcommands())}"


def test_the_checks_catch_what_they_claim_to(tmp_path):
    assert github_slug("Choices made on val") == "choices-made-on-val"
    assert github_slug("CrackForest (then: one seed, 800 steps, 26.0 min)") == "crackforest-then-one-seed-800-steps-260-min"
    assert github_slug("Measured: NEU-Seg (`snakemake --profile workflow/profiles/neu all`)") == \
        "measured-neu-seg-snakemake---profile-workflowprofilesneu-all"
    assert github_slug("Apples, three seeds (2026-12-01) ± sd") == "apples-three-seeds-2026-12-01--sd"
    page = tmp_path / "page.md"
    page.write_text("# Same\n\n## Same\n\n```\n# not a heading\n```\n\n[a](#same-1) [b](#same-2) [c](#not-a-heading) "
                    "[d](missing.md) [e](page.md#same) `[f](inside-code.md)`\n")
    assert anchors(page) == {"same", "same-1"}
    problems = broken_links(page)
    assert len(problems) == 3, problems
    assert any("#same-2" in p for p in problems) and any("#not-a-heading" in p for p in problems)
    assert any("missing.md: no such file" in p for p in problems)
    assert missing_paths("`workflow/profiles/tiny/params.yaml` `workflow/no_such_file.yaml` `results/x.csv`") == \
        ["workflow/no_such_file.yaml"]
    assert named_subcommands("`cfgan explain x` `cfgan --help` `cfgan <step>` `cfgan` `make`") == {"explain"}


def test_the_code_map_names_every_step_with_modules_and_rules_that_exist():
    import re
    from cfgan.steps import STEP_KEYS
    text = (ROOT / "docs/code-map.md").read_text()
    named = set(re.findall(r"`([a-z-]+)`", text))
    assert set(STEP_KEYS) - {"dvc-yaml"} <= named, set(STEP_KEYS) - named
    modules = {m.removeprefix("src/cfgan/") for m in re.findall(r"`([a-z_/]+\.py)`", text)}
    assert modules and all((ROOT / "src/cfgan" / m).is_file() for m in modules), [m for m in modules if not (ROOT / "src/cfgan" / m).is_file()]
    for rule_file, rules in re.findall(r"`([a-z]+\.smk)`: ([a-z_, ]+)", text):
        body = (ROOT / "workflow/rules" / rule_file).read_text()
        assert all(re.search(rf"^(use )?rule {r.strip()}\b", body, re.M) for r in rules.split(",")), (rule_file, rules)


def test_no_source_comment_carries_a_date():
    """History belongs in docs/log/, not in the code (a file name or URL with a date is not history)."""
    import re
    dated = [f"{p.relative_to(ROOT)}:{n}" for p in (ROOT / "src/cfgan").rglob("*.py")
             for n, line in enumerate(p.read_text().splitlines(), 1)
             if re.search(r"\b20\d\d-\d\d-\d\d\b", line) and "inception-2015" not in line]
    assert not dated, dated


def test_every_command_in_the_results_record_plans_as_written():
    """docs/results.md names each table's command; each (profile, experiment) it names plans cleanly
    with Snakemake (a dry run: no data needed), so a reader can rerun any published table."""
    import subprocess
    import sys
    text = (ROOT / "docs/results.md").read_text()
    commands = sorted(set(re.findall(r"snakemake --profile workflow/profiles/[a-z_-]+ all(?: --config experiment=[a-z0-9.-]+)?", text)))
    assert len(commands) >= 5 and any("--config experiment=" in c for c in commands)
    for command in commands:
        proc = subprocess.run([sys.executable, "-m", *command.split(), "-n", "--quiet", "rules"], cwd=ROOT,
                              capture_output=True, text=True)
        assert proc.returncode == 0, f"{command}: {proc.stderr[-1500:]}"
