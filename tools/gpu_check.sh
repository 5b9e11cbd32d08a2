#!/usr/bin/env bash
# make gpu-check: build facekernels with CUDA on a GPU machine (no network), run the CUDA tests and the
# CUDA benchmark. Logs and results go to the folder given as $1. Each step has a time limit so that the
# whole check stays under 9 minutes (the emulator-vs-GPU agreement: at most 150 s more) (build ~1-2 min for sm_90 on 16 cores; six op families. CUDA tests).
set -uo pipefail
out=${1:-gpu-out}
mkdir -p "$out"
py=${GPU_PYTHON:-python3}
status=0
{
  echo "== machine"; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || true
  $py -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
  nproc
} 2>&1 | tee "$out/summary.log"

echo "== build (FACEKERNELS_CUDA=on, sm_90 only for speed: FACEKERNELS_CUDA_ARCHS=90)"
start=$(date +%s)
FACEKERNELS_CUDA=on CMAKE_ARGS="-DFACEKERNELS_CUDA_ARCHS=${FACEKERNELS_CUDA_ARCHS:-90}" \
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
  $py -m pip install --no-build-isolation --no-deps --no-index -Cbuild-dir=build/gpu -v . >"$out/build.log" 2>&1 \
  || { echo "build failed; see build.log"; tail -50 "$out/build.log"; exit 1; }
echo "built in $(( $(date +%s) - start )) s"
cd /tmp || exit 1
$py -c "import facekernels, json; print(json.dumps(facekernels.build_info()))" | tee -a "$out/summary.log"
cd - >/dev/null || exit 1

echo "== CUDA tests"
timeout 270 $py -m pytest -q -m cuda -p no:cacheprovider tests 2>&1 | tee "$out/test_cuda.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== CPU tests under this machine's torch (short)"
timeout 30 $py -m pytest -q -x -p no:cacheprovider tests -m "not cuda" -k "not capabilities and not compile and not bench" 2>&1 \
  | tail -5 | tee -a "$out/summary.log"

echo "== emulator vs GPU on the same inputs (tools/cudaemu, circular_conv, local_stats and correlation, every dtype)"
( timeout 120 python3 tools/cudaemu/build.py plain circular_conv local_stats correlation \
  && CUDAEMU_BUILD=build/cudaemu/plain timeout 60 $py tests/cudaemu/gpu_agreement.py ) 2>&1 | tee "$out/emu_vs_gpu.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== CUDA benchmark"
timeout 130 $py -m facekernels bench --device cuda --quick --out "$out/bench" 2>&1 | tee "$out/bench_cuda.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
rm -f "$out"/bench/latest-*   # keep the files that come back within the device tool's limit
exit $status
