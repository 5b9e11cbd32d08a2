"""Where does the huge-page hint on fresh CPU outputs pay? (csrc/core/memory.h; issue 17, item 5)

For each output size, a training step (bench's sfft_train_step case at that size: 1x1 convolutions,
local_stat_transform, GELU, 1x1 convolution, backward) and the op's own forward+backward interleaved with
its avg_pool peer (which churns through memory as the benchmark's other candidates do) are timed with the
hint on (every output of 8 MiB or more: the case's "facekernels+hint"; for the op alone every output) and
with it off, alternating in one process. Prints the median of each and the ratio off/on (> 1: it pays).

    python tools/huge_pages_sweep.py [--sizes-mib 32 64 128 256 512] [--rounds 9]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import facekernels
from facekernels.bench.workloads_local_stats import _train_step_case, local_stat_transform_avg_pool


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes-mib", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    default = facekernels.set_huge_page_threshold(0)  # the cases' "facekernels" runs with the hint off
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, build default threshold "
          f"{default >> 20} MiB; THP enabled/defrag: {_thp()}")
    print(f"{'size MiB':>8} {'case':<12} {'hint on ms':>11} {'hint off ms':>12} {'off/on':>7}")
    for mib in args.sizes_mib:
        c = 128
        hw = int((mib * 2**20 / 4 / c) ** 0.5)  # one [1, C, hw, hw] float32 tensor of about mib MiB
        case = _train_step_case(1, c, hw, hw, 7)("cpu")
        x, guide = case.inputs
        steps = {setting: case.candidates[name] for setting, name in (("on", "facekernels+hint"),
                                                                      ("off", "facekernels"))}

        def train_step(setting):
            steps[setting](x, guide).square().mean().backward()

        g = guide.clone().requires_grad_()
        # "op+peer": the op's forward+backward timed, then its avg_pool peer's (untimed: the churn of the
        # memory the benchmark's other candidates bring between our calls)
        for name, step, timed in (("train_step", train_step, None), ("op+peer", None, "op")):
            times = {"on": [], "off": []}
            for r in range(args.rounds + 1):
                for setting in (("on", "off") if r % 2 else ("off", "on")):
                    facekernels.set_huge_page_threshold(1 if setting == "on" else 0)
                    if timed == "op":
                        t0 = time.perf_counter()
                        facekernels.local_stat_transform(x, g, 7).sum().backward()
                        dt = time.perf_counter() - t0
                        local_stat_transform_avg_pool(x, g, 7).sum().backward()
                    else:
                        t0 = time.perf_counter()
                        step(setting)  # its candidate sets the threshold
                        dt = time.perf_counter() - t0
                    if r:  # round 0 warms up
                        times[setting].append(dt)
            on, off = (statistics.median(times[s]) * 1e3 for s in ("on", "off"))
            print(f"{mib:>8} {name:<12} {on:>11.1f} {off:>12.1f} {off / on:>7.2f}", flush=True)
        case.teardown()
    facekernels.set_huge_page_threshold(default)


def _thp() -> str:
    try:
        return "/".join(open(f"/sys/kernel/mm/transparent_hugepage/{f}").read().split("[")[1].split("]")[0]
                        for f in ("enabled", "defrag"))
    except OSError:
        return "unknown"


if __name__ == "__main__":
    main()
