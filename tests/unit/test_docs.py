"""The front page stays a front page, its commands are the ones tests run, and the docs hold together:
links resolve, architecture.md has its contents table, nothing points outside the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = [README, ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "deploy" / "k8s" / "README.md"]


def _blocks(text: str) -> list[list[str]]:
    """Each fenced block's command lines (comments and blank lines dropped)."""
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.S | re.M)
    return [[ln.split("#")[0].strip() for ln in b.splitlines() if ln.strip() and not ln.strip().startswith("#")] for b in blocks]


def test_the_readme_is_a_front_page():
    assert len(README.read_bytes()) <= 12 * 1024, "README.md over 12 KB: details go to docs/"
    text = README.read_text()
    for heading in ("## The two commands", "## What you see", "## Bring your own data", "## Fine-tuning", "## Production",
                    "## Figures", "## Docs"):
        assert heading in text, heading


def test_every_readme_command_is_one_a_test_or_the_fresh_clone_check_runs():
    blocks = _blocks(README.read_text())
    # the first block: the fresh-clone check (CI runs `make test` from a clean clone; `make demo` is its other half)
    assert blocks[0] == ["make demo", "make test"]
    # the second: tests/e2e/test_byod.py parses and runs this block line by line
    byod = (ROOT / "tests" / "e2e" / "test_byod.py").read_text()
    assert 'split("## Bring your own data", 1)' in byod
    assert [ln.split()[1] for ln in blocks[1]] == ["export", "build-index", "up", "search", "docs", "docs"]
    assert len(blocks) == 2, f"a command block the tests do not run: {blocks[2:]}"
    assert "make demo" in (ROOT / "Makefile").read_text() and "make test" in (ROOT / ".ci" / "run").read_text()


def test_relative_links_in_the_docs_resolve():
    missing = []
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (doc.parent / target).exists():
                missing.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert not missing, missing


def test_architecture_has_a_contents_table_that_matches_its_sections():
    text = (ROOT / "docs" / "architecture.md").read_text()
    sections = re.findall(r"^## (.+)$", text, flags=re.M)
    toc = text.split("## Contents", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\s*- \[(.+?)\]\(#", toc, flags=re.M)
    assert sections[:2] == ["Contents", "Overview"] and listed == sections[1:]
    overview = text.split("## Overview", 1)[1].split("\n## ", 1)[0]
    assert "```mermaid" in overview, "the overview picture: services, stores and the request path"


def test_nothing_refers_to_a_path_outside_the_repository():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    bad = []
    for f in files:
        path = ROOT / f
        if path.suffix in (".png", ".jpg", ".gz") or not path.is_file() or f == "tests/unit/test_docs.py":
            continue
        text = path.read_text(errors="ignore")
        if "../shared" in text or "DESIGN.md" in text:
            bad.append(f)
    assert not bad, bad
