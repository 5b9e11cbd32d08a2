"""Peak memory of diff_attention's forward+backward against its SDPA peer on CPU (issue 4's memory goal).

torch keeps no CPU memory statistics, so each candidate runs in a fresh subprocess: build the workload's
inputs, run forward+backward once (warm-up; for the compiled peer, the compilation), reset the kernel's
peak-RSS counter (``/proc/self/clear_refs`` <- 5), note the resident set, run forward+backward again and
read the peak (``VmHWM``). The reported number is peak minus the resident set before the timed step: the
extra memory the step needed (its outputs and gradients included), independent of what torch and the
compiler hold already.

    python tools/diff_attention_memory.py [--threads 2] [--workloads da_mmda_vitb16 ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import gc, json, sys
import torch
torch.set_num_threads(int(sys.argv[2]))
from facekernels.bench.workloads import WORKLOADS

name, candidate = sys.argv[1], sys.argv[3]
workload = next(w for w in WORKLOADS if w.name == name)
case = workload.build("cpu")
fn = case.candidates["sdpa" if candidate.startswith("sdpa") else "facekernels"]
if candidate == "sdpa_compiled":
    fn = torch.compile(fn)

def kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)

def step():
    for p in case.params:
        p.grad = None
    out = fn(*case.inputs)
    out.backward(torch.ones_like(out))
    del out

step()
gc.collect()
for p in case.params:
    p.grad = None
gc.collect()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = kib("VmRSS")
step()
peak = kib("VmHWM")
print(json.dumps({"before_kib": before, "peak_kib": peak, "extra_kib": peak - before}))
"""


def measure(workload: str, candidate: str, threads: int) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, workload, str(threads), candidate], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workloads", nargs="*", default=["da_mmda_vitb16", "da_difftransformer_lm"])
    args = parser.parse_args()
    for workload in args.workloads:
        for candidate in ("facekernels", "sdpa", "sdpa_compiled"):
            r = measure(workload, candidate, args.threads)
            print(
                f"{workload:24s} {candidate:14s} forward+backward extra peak {r['extra_kib'] / 1024:8.1f} MiB "
                f"(resident before {r['before_kib'] / 1024:.0f} MiB)",
                flush=True,
            )


if __name__ == "__main__":
    main()
