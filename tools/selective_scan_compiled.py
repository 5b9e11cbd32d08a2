"""Time selective_scan against the torch.compile'd forms of both plain-PyTorch peers (the reference
formulation and the sequential loop) at one of the bench's selective_scan workloads, forward and
forward+backward: the compiled forms the harness leaves out because compiling them unrolls the loop over
L (minutes on 2 cores). Candidates interleaved by ``facekernels.bench.harness.time_interleaved``
(warm-up, rotating order), ``--rounds`` rounds; medians.

    python tools/selective_scan_compiled.py [--workload mamba130m_L128] [--rounds 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from facekernels.bench.harness import time_interleaved
from facekernels.bench.workloads_selective_scan import (
    WORKLOADS,
    selective_scan_reference,
    selective_scan_torch_loop,
)
from facekernels.ops.selective_scan import selective_scan


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="mamba130m_L128")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    (workload,) = [w for w in WORKLOADS if w.name == args.workload and w.op == "selective_scan"]
    inputs = workload.build("cpu").inputs

    def forward(fn) -> None:
        with torch.no_grad():
            fn(*inputs)

    def forward_backward(fn) -> None:
        for t in inputs:
            t.grad = None
        fn(*inputs).sum().backward()

    candidates = {"facekernels": lambda *t: selective_scan(*t, delta_softplus=True)}
    for name, peer in (("torch_loop", selective_scan_torch_loop), ("reference", selective_scan_reference)):
        compiled = torch.compile(lambda *t, peer=peer: peer(*t, delta_softplus=True))
        start = time.perf_counter()
        forward_backward(compiled)
        forward(compiled)
        print(f"{name}+compile: compiled in {time.perf_counter() - start:.0f} s", flush=True)
        candidates[f"{name}+compile"] = compiled
    for mode, run in (("forward", forward), ("forward+backward", forward_backward)):
        timing = time_interleaved({name: (lambda fn=fn: run(fn)) for name, fn in candidates.items()}, "cpu",
                                  repeats=args.rounds, min_repeats=args.rounds)
        ours = timing["facekernels"]["median_s"]
        for name, t in timing.items():
            print(f"{args.workload} {mode:16s} {name:18s} {t['median_s'] * 1e3:9.1f} ms  {t['median_s'] / ours:6.2f}x")

if __name__ == "__main__":
    main()
