#!/usr/bin/env bash
# The whole pytest suite on an ASan + UBSan build of our C++ (the CPU kernels at every SIMD level and the
# binding; FACEKERNELS_SANITIZE=ON), then the normal build put back so that later steps see it (unless
# FK_SANITIZE_RESTORE=0: CI runs this last).
#   tools/ci/sanitize.sh PYTHON      (PYTHON: an interpreter whose env has torch and the build tools)
# Fails on any failed test and on any sanitizer report. ASan reports go to build/sanitize/logs/asan.<pid>
# (log_path: pytest's capture, and the tests that run python in a subprocess, would hide them on stderr).
# UBSan's do not: GCC's UBSan runtime, loaded next to ASan's, ignores log_path and writes to stderr, so
# pytest runs with --capture=sys (C-level stderr is not captured) and its stderr is kept in
# build/sanitize/logs/stderr.log and scanned. Every UBSan check aborts (-fno-sanitize-recover=all), so a
# report in a test's subprocess also fails that test. Preload and log approach as in tools/cudaemu/stage.sh.
set -euo pipefail
PY=${1:?usage: tools/ci/sanitize.sh PYTHON}
case $PY in /*) ;; */*) PY=$PWD/$PY ;; esac  # a path relative to the caller's directory: absolute
cd "$(dirname "$0")/../.."
BUILD=build/sanitize
LOGS=$PWD/$BUILD/logs
t0=$(date +%s)
stamp() { echo "[sanitize +$(( $(date +%s) - t0 ))s] $*"; }
PIP_INSTALL=("$PY" -m pip install -q --no-build-isolation --no-deps)

stamp "build: FACEKERNELS_SANITIZE=ON in $BUILD"
"${PIP_INSTALL[@]}" -Cbuild-dir="$BUILD" -Ccmake.define.FACEKERNELS_SANITIZE=ON .
# Whatever happens from here on, later steps get the normal build back (incremental, default build dir).
restore() {
  stamp "restore the normal build"
  "${PIP_INSTALL[@]}" .
}
if [ "${FK_SANITIZE_RESTORE:-1}" != 0 ]; then trap restore EXIT; fi  # CI's last step passes 0: nothing follows
rm -rf "$LOGS" && mkdir -p "$LOGS"

# libasan must come first in the process (python itself is not instrumented); libstdc++ with it, so that
# ASan's C++ interceptors (__cxa_throw & co.) find the real functions when python loads no libstdc++ itself.
export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)"
# detect_leaks=0: python's and torch's own lifetime allocations drown anything of ours (the leak test
# in the suite measures ours). halt_on_error with -fno-sanitize-recover=all: the first report ends the run.
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:log_path=$LOGS/asan"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
stamp "check: the sanitized build is the one imported"
(cd /tmp && "$PY" -c "import facekernels; assert facekernels.build_info()['sanitize'], facekernels.build_info()")

stamp "run: the whole suite under ASan + UBSan (reports in $LOGS)"
fail=0
"$PY" -m pytest -q -p no:cacheprovider --capture=sys 2> "$LOGS/stderr.log" || fail=1
unset LD_PRELOAD ASAN_OPTIONS UBSAN_OPTIONS

if grep -qE "runtime error:|ERROR: AddressSanitizer" "$LOGS/stderr.log"; then
  echo "sanitizer report on stderr ($LOGS/stderr.log):"
  grep -m1 -A60 -E "runtime error:|ERROR: AddressSanitizer" "$LOGS/stderr.log"
  fail=1
elif [ "$fail" != 0 ]; then
  echo "stderr of the run ($LOGS/stderr.log):"; tail -60 "$LOGS/stderr.log"
fi
for f in "$LOGS"/asan.*; do
  if [ -s "$f" ]; then echo "ASan report in $f:"; head -60 "$f"; fail=1; fi
done
stamp "done (status $fail)"
exit $fail
