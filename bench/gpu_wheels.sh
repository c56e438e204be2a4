#!/usr/bin/env bash
# Wheels of what bench/gpu.sh needs beyond a GPU image's packages (TRL and the datasets it
# needs), downloaded into .whl/ (ignored by git) for CPython 3.12 on x86-64 Linux; carry .whl to
# the GPU machine with the repository. Run where a package index is reachable:
#
#   bench/gpu_wheels.sh [PYTHON_VERSION]      # default 3.12, the GPU image's Python
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="${1:-3.12}"
PY=python3
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
mkdir -p .whl
for spec in trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19; do
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$VERSION" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "$spec"
done
du -sh .whl
