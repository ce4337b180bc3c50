"""The package graph is what docs/architecture.md says, and the import contract really bites."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import import_graph
import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"]


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*LINT, "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"})


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory) -> Path:
    """The package sources and the contract, copied so a test can break them."""
    dst = tmp_path_factory.mktemp("arch")
    shutil.copytree(ROOT / "mmsearch", dst / "mmsearch", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "templates", "static"))
    shutil.copy(ROOT / "pyproject.toml", dst / "pyproject.toml")
    return dst


def test_the_import_contract_holds():
    r = _lint(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


@pytest.mark.parametrize("module, forbidden", [
    ("mmsearch/retrieval_service/http_app.py", "import mmsearch.web_ui.app"),  # a service importing another
    ("mmsearch/errors.py", "from mmsearch.offline import export"),  # the shared library importing a layer
    ("mmsearch/web_ui/app.py", "import mmsearch.launcher.stack"),  # a service importing the launcher
])
def test_a_forbidden_import_breaks_the_contract(tree_copy, module, forbidden):
    path = tree_copy / module
    original = path.read_text()
    try:
        path.write_text(original + f"\n\ndef _violation():\n    {forbidden}  # inside a function still counts\n")
        r = _lint(tree_copy)
        assert r.returncode != 0, r.stdout
        assert "BROKEN" in r.stdout and forbidden.split()[1].split(" ")[0].rsplit(".", 1)[0] in r.stdout
    finally:
        path.write_text(original)


def test_a_new_module_must_be_placed_in_a_layer(tree_copy):
    stray = tree_copy / "mmsearch" / "stray.py"
    stray.write_text('"""not in any layer"""\n')
    try:
        r = _lint(tree_copy)
        assert r.returncode != 0 and "stray" in r.stdout
    finally:
        stray.unlink()


def test_docs_show_the_real_import_graph():
    assert import_graph.current_doc_table() == import_graph.table(), "run `make graph` and commit docs/architecture.md"


def test_services_import_only_the_shared_library():
    graph = import_graph.package_graph()
    for service in import_graph.SERVICES:
        assert graph[service] <= {"shared"}, (service, graph[service])
    assert graph["shared"] == set()


def test_no_generic_top_level_package_is_installed():
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert cfg["tool"]["setuptools"]["packages"]["find"]["include"] == ["mmsearch*"]
    for name in ("offline", "serving", "preprocess_service", "retrieval_service", "web_ui"):
        assert not (ROOT / name).exists(), f"top-level folder {name}/ would be a generic package name"
