#!/usr/bin/env bash
# CI cross-version stage: the manylinux wheel that tools/ci/wheel.sh built on torch 2.13 (dist/), installed
# next to another torch (.venv-cuda's 2.14.1, a CUDA build; no GPU needed), runs the CPU suite there but the
# tests marked slow (whole-model float64 comparisons and every benchmark workload at full size: they run the
# same ops as the op tests, at larger shapes, and the normal and sanitizer suites run them).
# The wheel goes into its own folder (pip --target) first on PYTHONPATH, and pytest runs from outside the
# tree, so the tests import the wheel: neither the source tree nor the CUDA build installed in that venv.
#   tools/ci/cross_version.sh [PYTHON]   (PYTHON: the other torch's interpreter, with pytest)
set -euo pipefail
PY=${1:-.venv-cuda/bin/python}
case $PY in /*) ;; */*) PY=$PWD/$PY ;; esac  # a path relative to the caller's directory: absolute (we cd below)
cd "$(dirname "$0")/../.."
ROOT=$PWD
t0=$(date +%s)
stamp() { echo "[cross-version +$(( $(date +%s) - t0 ))s] $*"; }
wheel=$(ls dist/facekernels-*-manylinux_*.whl)  # exactly one (set -e fails on none, the install on several)
TARGET=$ROOT/build/ci/cross-version
OUTSIDE=$(mktemp -d) && trap 'rm -rf "$OUTSIDE"' EXIT

stamp "install $(basename "$wheel") into $TARGET; the [test] extra's requirements into $PY's environment"
rm -rf "$TARGET" && "$PY" -m pip install -q --no-deps --target "$TARGET" "$wheel"
mapfile -t test_reqs < <("$PY" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["test"]))')
"$PY" -m pip install -q "${test_reqs[@]}"
torch_version=$("$PY" -c 'import torch; print(torch.__version__)')
(cd "$OUTSIDE" && PYTHONPATH=$TARGET "$PY" "$ROOT/tools/ci/smoke.py" "$TARGET" "$torch_version")

stamp "the CPU suite on torch $torch_version, importing the wheel"
cd "$OUTSIDE"
sdist=$(ls "$ROOT"/dist/facekernels-*.tar.gz)  # tests/test_packaging.py checks both artefacts here too
PYTHONPATH=$TARGET FACEKERNELS_WHEEL=$ROOT/$wheel FACEKERNELS_SDIST=$sdist \
  "$PY" -m pytest -q -p no:cacheprovider --rootdir "$ROOT" -c "$ROOT/pyproject.toml" -m "not cuda and not slow" "$ROOT/tests"
stamp "done"
