#!/usr/bin/env bash
# The GPU benchmark in one go (bench/gpu.py), from the repository alone:
#
#   bench/gpu.sh --out gpu.json           # on a GPU machine: ~10 minutes on one H100
#   bench/gpu.sh --dry-run --out x.json   # anywhere: CPU, tiny sizes, planted model (tests/test_bench_gpu.py)
#
# Python: .venv/bin/python where this repository is set up, else python3 (a GPU image's, which
# must hold torch with CUDA, numpy, pyyaml, tqdm, scipy). The Hugging Face stack at the lock's
# versions and TRL travel as wheels in .whl/: bench/gpu_wheels.sh downloads them where a package
# index is reachable, and this script installs them into a scratch folder first (ahead of the
# image's own). Without TRL the TRL ratio is skipped with a line that says so; vLLM's wheels are
# too large to carry, so its figures are skipped the same way unless the machine has it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
if [ "$PY" = python3 ] && compgen -G ".whl/*.whl" > /dev/null; then
  SITE="${TMPDIR:-/tmp}/knowshift-bench-site"
  "$PY" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
# knowshift from this checkout, installed or not.
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PY" bench/gpu.py "$@"
