"""The real import graph of mmsearch, as a table for docs/architecture.md (`make graph` rewrites it;
tests/unit/test_architecture.py fails when the docs and the code disagree)."""

from __future__ import annotations

import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
BEGIN, END = "<!-- import-graph:begin -->", "<!-- import-graph:end -->"
SERVICES = ("offline", "serving", "preprocess_service", "retrieval_service", "web_ui")
GROUPS = ("launcher", *SERVICES, "shared")


def group_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("launcher", *SERVICES):
        return parts[1]
    return "shared"


def package_graph() -> dict[str, set[str]]:
    """group -> the other groups it imports (at module level or inside functions)."""
    graph = grimp.build_graph("mmsearch", cache_dir=None)
    out: dict[str, set[str]] = {g: set() for g in GROUPS}
    for m in graph.modules:
        for dep in graph.find_modules_directly_imported_by(m):
            a, b = group_of(m), group_of(dep)
            if a != b:
                out[a].add(b)
    return out


def table() -> str:
    g = package_graph()
    rows = ["| package | imports (of ours) |", "|---|---|"]
    for name in GROUPS:
        label = "`mmsearch` (shared library)" if name == "shared" else f"`mmsearch.{name}`"
        deps = ", ".join("shared library" if d == "shared" else f"`mmsearch.{d}`" for d in sorted(g[name], key=GROUPS.index))
        rows.append(f"| {label} | {deps or 'nothing'} |")
    return "\n".join(rows)


def current_doc_table() -> str:
    text = DOC.read_text()
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def rewrite_doc() -> None:
    text = DOC.read_text()
    head, rest = text.split(BEGIN, 1)
    DOC.write_text(f"{head}{BEGIN}\n{table()}\n{END}{rest.split(END, 1)[1]}")


if __name__ == "__main__":
    rewrite_doc()
    print(table())
    sys.exit(0)
