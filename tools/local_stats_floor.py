"""local_stat_transform against the memory traffic floor as this process sees it: the same run times the op
(reads x and guide, writes out: 100 MB at the SFFT decoder scale) next to `x + guide`, which moves exactly
the same bytes, and `x.clone()`. Interleaved, 30 rounds, 2 threads; prints min and median.

    python tools/local_stats_floor.py
"""
import statistics
import time

import facekernels
import torch

torch.set_num_threads(2)
g0 = torch.Generator().manual_seed(0)
x = torch.randn(4, 128, 128, 128, generator=g0); g = torch.randn(4, 128, 128, 128, generator=g0) * 2 + 1
fns = {"local_stat_transform k7": lambda: facekernels.local_stat_transform(x, g, 7),
       "x + guide (same bytes)": lambda: x + g,
       "x.clone() (2/3 bytes)": lambda: x.clone()}
for f in fns.values():
    for _ in range(5): f()
samples = {k: [] for k in fns}
for r in range(30):
    for k, f in fns.items():
        t0 = time.perf_counter(); f(); samples[k].append((time.perf_counter() - t0) * 1e3)
for k, v in samples.items():
    print(f"{k:26s} min {min(v):6.2f} ms  median {statistics.median(v):6.2f} ms")
