# Set-up is idempotent: the venv is reused, and torch's CPU wheel is installed
# first when no torch is importable (otherwise a multi-GB CUDA build is pulled).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.rait-installed

.PHONY: setup demo test test-fast bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "torch==2.13.0"
	$(PY) -m pip install -e ".[test]"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/rait run configs/demo.yaml

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

bench: setup
	$(PY) benchmarks/probe_speed.py
	$(PY) benchmarks/train_speed.py

clean:
	rm -rf $(VENV) runs
