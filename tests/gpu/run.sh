#!/usr/bin/env bash
# rait's GPU checks (`pytest -m gpu`) on a machine with a CUDA GPU and no network.
# Usage: tests/gpu/run.sh [WHEEL_DIR]     (default tests/gpu/wheels; see tests/gpu/README.md)
set -euo pipefail

cd "$(dirname "$0")/../.."
WHEELS=${1:-tests/gpu/wheels}
PY=${PYTHON:-python3}
VENV=${RAIT_GPU_VENV:-${TMPDIR:-/tmp}/rait-gpu-venv}
LOG=${TMPDIR:-/tmp}/rait-gpu-pytest.log
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export CUBLAS_WORKSPACE_CONFIG=:4096:8  # run-to-run identical cuBLAS results (the seeded-sampler check)

die() { echo "tests/gpu/run.sh: $*" >&2; exit 2; }

"$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
  || die "torch.cuda.is_available() is false for $PY: no GPU to check"

# Outside a venv: a venv that sees the machine's own packages (torch, transformers, ...) and takes
# the missing ones (the interpreter itself where venv is unavailable). Inside one: that venv.
if "$PY" -c 'import sys; sys.exit(sys.prefix != sys.base_prefix)' \
   && { [ -x "$VENV/bin/python" ] || "$PY" -m venv --system-site-packages "$VENV" >/dev/null 2>&1; }; then
  PY="$VENV/bin/python"
fi

# module:distribution, for what rait and its GPU tests import
NEEDED="trl:trl datasets:datasets pyarrow:pyarrow pandas:pandas dateutil:python-dateutil dill:dill
multiprocess:multiprocess xxhash:xxhash fsspec:fsspec yaml:pyyaml tqdm:tqdm numpy:numpy
safetensors:safetensors peft:peft accelerate:accelerate psutil:psutil jinja2:jinja2
pytest:pytest pluggy:pluggy iniconfig:iniconfig pygments:pygments setuptools:setuptools"
missing=() absent=() wheels=()
for pair in $NEEDED; do
  module=${pair%%:*} dist=${pair#*:}
  check="import $module"  # setuptools must also read pyproject's SPDX license string (>= 77)
  [ "$module" = setuptools ] && check="import setuptools, sys; sys.exit(int(setuptools.__version__.split('.')[0]) < 77)"
  "$PY" -c "$check" >/dev/null 2>&1 && continue
  missing+=("$dist")
  wheel=$(ls "$WHEELS"/*.whl 2>/dev/null | grep -i "/${dist//-/_}-[0-9]" | sort -V | tail -n 1 || true)
  if [ -n "$wheel" ]; then wheels+=("$wheel"); else absent+=("$dist"); fi
done
if [ ${#absent[@]} -gt 0 ]; then
  die "no wheel in $WHEELS for: ${absent[*]}
  On a machine with a package index, from the repository root:
    pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \\
      --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d tests/gpu/wheels ${absent[*]}"
fi
if [ ${#wheels[@]} -gt 0 ]; then
  echo "installing from $WHEELS: ${missing[*]}"
  "$PY" -m pip install --quiet --no-index --no-deps "${wheels[@]}"
fi
"$PY" -m pip install --quiet --no-index --no-deps --no-build-isolation -e . \
  || die "pip install --no-deps -e . failed (see above)"
"$PY" -m pip check || echo "tests/gpu/run.sh: pip check reports the conflicts above (continuing)" >&2
"$PY" -c 'import trl, datasets, pytest, rait.stages.train' || die "an import still fails (above): add its wheel"

mapfile -t files < <(grep -l "pytest.mark.gpu" tests/test_*.py)
rc=0
"$PY" -m pytest -m gpu -q -p no:cacheprovider "${files[@]}" 2>&1 | tee "$LOG" || rc=$?
device=$("$PY" -c 'import torch; print(torch.cuda.get_device_name(0), "| torch", torch.__version__)')
echo "GPU checks: $(tail -n 1 "$LOG") | $device | exit $rc"
exit "$rc"
