"""Extra peak memory of cosine_topk and its chunked peer on the identification workload (issue 5).

Each candidate runs in a fresh subprocess: the inputs are built, the process's peak resident size (VmHWM)
is read, the candidate runs once, and the peak is read again; the difference is the candidate's extra
memory (its temporaries, and whatever BLAS allocates). Usage:

    python tools/edge_conv_memory.py [--threads 2] [--probes 4096] [--gallery 65536] [--dim 512] [--k 10]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, sys, time, torch
import facekernels.bench.workloads  # noqa: F401  (registers the families before the import below)
from facekernels.bench.workloads_edge_conv import cosine_topk_chunked
from facekernels.ops.edge_conv import cosine_topk

def peak_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0

name, threads, probes, gallery, dim, k = sys.argv[1], *map(int, sys.argv[2:])
torch.set_num_threads(threads)
g = torch.Generator().manual_seed(0)
x = torch.randn(1, dim, probes, generator=g)
y = torch.randn(1, dim, gallery, generator=g)
small = (x[:, :, :8].contiguous(), y[:, :, :64].contiguous())
fn = cosine_topk if name == "facekernels" else cosine_topk_chunked
fn(small[0], 2, small[1])  # load the code paths before the baseline
before = peak_kib()
t0 = time.perf_counter()
fn(x, k, y)
seconds = time.perf_counter() - t0
print(json.dumps({"candidate": name, "extra_mib": (peak_kib() - before) / 1024, "seconds": seconds}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--probes", type=int, default=4096)
    parser.add_argument("--gallery", type=int, default=65536)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    for name in ("facekernels", "chunked"):
        out = subprocess.run(
            [sys.executable, "-c", CHILD, name, str(args.threads), str(args.probes), str(args.gallery),
             str(args.dim), str(args.k)],
            capture_output=True, text=True, check=True,
        )
        print(json.dumps(json.loads(out.stdout.strip().splitlines()[-1])))


if __name__ == "__main__":
    main()
