#!/usr/bin/env bash
# Build tests/cudaemu/selftest.cu with cudaemu (plain and race-instrumented) and run it: CUDA semantics the
# emulator must reproduce (shuffles, ballots, barriers, atomics, launch limits) and the diagnostics it must
# give on deliberately wrong kernels (divergent barrier, deadlock, races, uninitialised shared reads).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=build/cudaemu/selftest
mkdir -p "$OUT"
INC=$(python3 -c "import sys; sys.path.insert(0, 'tools/cudaemu'); import build; print(build.cuda_include())")
F=(-std=c++20 -g -Wall -Wno-unknown-pragmas -Itools/cudaemu/include -I"$INC" -I"$INC/cccl")
python3 tools/cudaemu/cu2cpp.py tests/cudaemu/selftest.cu "$OUT/selftest.cpp" 2>/dev/null
g++ "${F[@]}" -O1 -c tools/cudaemu/runtime.cpp -o "$OUT/runtime.o" &
g++ "${F[@]}" -O1 -include cudaemu/emu.hpp -c "$OUT/selftest.cpp" -o "$OUT/plain.o" &
g++ "${F[@]}" -O1 -fsanitize=thread -include cudaemu/emu.hpp -c "$OUT/selftest.cpp" -o "$OUT/race.o" &
wait
g++ -o "$OUT/plain" "$OUT/plain.o" "$OUT/runtime.o" -lpthread -ldl
g++ -o "$OUT/race" "$OUT/race.o" "$OUT/runtime.o" -lpthread -ldl
echo "== plain build"; "$OUT/plain" 2>"$OUT/plain.stderr"
echo "== race build (CUDAEMU_RACECHECK=1)"; CUDAEMU_RACECHECK=1 "$OUT/race" 2>"$OUT/race.stderr"
echo "diagnostics printed by the race build (each from a deliberately wrong kernel):"
grep -oE '^cudaemu: [A-Z ]+ in' "$OUT/race.stderr" | sort | uniq -c
