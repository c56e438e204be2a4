#!/usr/bin/env bash
# Wheels for bench/gpu.sh on a GPU machine that reaches no package index: the Hugging Face stack at
# the versions of requirements/lock.txt (the image's own may be older than knowshift needs) and
# TRL with the datasets it needs, for CPython 3.12 (the GPU image's Python) on x86-64 Linux, into
# .whl/ (ignored by git; about 25 MB, under the 64 MiB a device call carries). torch stays the
# image's CUDA build. Run where a package index is reachable:
#
#   bench/gpu_wheels.sh [PYTHON_VERSION]      # default 3.12
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="${1:-3.12}"
PY=python3
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
PACKAGES="transformers tokenizers huggingface-hub hf-xet safetensors peft accelerate trl datasets
  dill multiprocess kernels regex typer shellingham click rich"
rm -rf .whl && mkdir -p .whl
for name in $PACKAGES; do
  pin=$(grep -i "^$name==" requirements/lock.txt | head -1 | cut -d' ' -f1)
  if [ -z "$pin" ]; then echo "$name is not in requirements/lock.txt" >&2; exit 1; fi
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$VERSION" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "$pin" 2>&1 | grep -v "file:///opt" || true
done
ls .whl
du -sh .whl
