#!/usr/bin/env bash
# The CUDA emulation stage (make cuda-emu): cuda/'s kernels run on the CPU under tools/cudaemu against the
# CPU ops, in four runs, plus the seeded-bug negative controls, the emulator self-test and the 32-bit index
# lint. Any failed test, any emulator report (CUDAEMU_LOG) and any ASan/UBSan report fails the stage.
#   tools/cudaemu/stage.sh [PYTHON]      (PYTHON: an interpreter with torch and facekernels installed)
# Logs: build/cudaemu/logs/.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${1:-.venv/bin/python}
LOGS=$PWD/build/cudaemu/logs
rm -rf "$LOGS" && mkdir -p "$LOGS"
t0=$(date +%s)
stamp() { echo "[cuda-emu +$(( $(date +%s) - t0 ))s] $*"; }
PYTEST=("$PY" -m pytest -q -p no:cacheprovider)
fail=0
clean_log() {  # $1: a report file that must be absent or empty
  if [ -s "$1" ]; then echo "emulator reports in $1:"; head -40 "$1"; fail=1; fi
}

stamp "lint: 32-bit index arithmetic over cuda/"
python3 tools/cudaemu/lint_index32.py

stamp "build: plain, race, asan"
for mode in plain race asan; do "$PY" tools/cudaemu/build.py "$mode"; done  # $PY: its torch for the bindings

stamp "self-test: emulator semantics and diagnostics on deliberately wrong kernels"
bash tools/cudaemu/selftest.sh > "$LOGS/selftest.log" 2>&1 || { cat "$LOGS/selftest.log"; exit 1; }
tail -3 "$LOGS/selftest.log"

stamp "run 1/4: plain, threads resumed in order"
CUDAEMU_BUILD=build/cudaemu/plain CUDAEMU_SCHEDULE=forward CUDAEMU_LOG="$LOGS/plain-forward.log" \
  "${PYTEST[@]}" tests/cudaemu || fail=1
clean_log "$LOGS/plain-forward.log"

stamp "run 2/4: race / uninitialised-shared / shared out-of-bounds checker"
CUDAEMU_BUILD=build/cudaemu/race CUDAEMU_RACECHECK=1 CUDAEMU_LOG="$LOGS/race.log" "${PYTEST[@]}" tests/cudaemu || fail=1
clean_log "$LOGS/race.log"

# ASan reports go to $LOGS/asan.* (pytest's capture would hide them). GCC's UBSan runtime next to ASan's
# ignores log_path and writes to stderr, which pytest captures: the asan build aborts at the first UBSan
# report (-fno-sanitize-recover=all, tools/cudaemu/build.py), so a report fails its test.
stamp "run 3/4: ASan + UBSan (ASan reports to $LOGS/asan.*; a UBSan report aborts its test)"
PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
CUDAEMU_BUILD=build/cudaemu/asan CUDAEMU_LOG="$LOGS/asan-emu.log" LD_PRELOAD="$PRELOAD" \
  ASAN_OPTIONS="detect_leaks=0:log_path=$LOGS/asan" UBSAN_OPTIONS="print_stacktrace=1:log_path=$LOGS/ubsan" \
  "${PYTEST[@]}" tests/cudaemu || fail=1
clean_log "$LOGS/asan-emu.log"
for f in "$LOGS"/asan.* "$LOGS"/ubsan.*; do [ -e "$f" ] && clean_log "$f"; done

# The random thread order shares this run (it had a run of its own, 1 minute of CI): the grid cap changes
# only how many blocks a grid-stride kernel gets, the order only how a block's threads interleave between
# barriers, so neither hides what the other exposes; the kernels without grid-stride loops get the random
# order at their full grids.
stamp "run 4/4: grid-capped (grid-stride kernels with at most 3 blocks), threads resumed in random order (seed 1)"
CUDAEMU_BUILD=build/cudaemu/plain CUDAEMU_GRID_CAP=3 CUDAEMU_SCHEDULE=random CUDAEMU_SEED=1 \
  CUDAEMU_LOG="$LOGS/gridcap-random.log" "${PYTEST[@]}" tests/cudaemu || fail=1
clean_log "$LOGS/gridcap-random.log"

stamp "negative controls: seeded bugs the stage must catch"
CUDAEMU_BUILD=build/cudaemu/plain CUDAEMU_NEGATIVE_CONTROLS=1 "${PYTEST[@]}" tests/cudaemu/test_negative_controls.py \
  || fail=1

stamp "done (status $fail)"
exit $fail
