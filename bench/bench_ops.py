"""pytest-benchmark suite over every workload of facekernels.bench.workloads: `make bench-pytest`.

Each workload's candidates (facekernels and its plain-PyTorch peers) are timed forward and
forward+backward; compare them with --benchmark-group-by=param:workload,param:mode.
"""

import pytest
import torch
from facekernels.bench.harness import _make_step
from workloads import WORKLOADS

# The candidates of each op (a workload without one of them skips it).
CANDIDATES = {
    "circular_conv": ("facekernels", "conv2d", "fft"),
    "fcc": ("facekernels", "conv2d"),
    "local_stat_transform": ("facekernels", "avg_pool", "integral"),
    "local_mean_var": ("facekernels", "avg_pool"),
    "alignment_energy": ("facekernels", "chunked"),
    "cosine_topk": ("facekernels", "chunked"),
    "diff_attention": ("facekernels", "sdpa"),
    "edge_conv_max": ("facekernels", "eager"),
    "st_graph_conv": ("facekernels", "conv_einsum"),
}

CASES = [
    (w, mode, name)
    for w in WORKLOADS
    for mode in w.modes
    for name in CANDIDATES.get(w.op, ("facekernels",))
]


@pytest.mark.parametrize("workload,mode,candidate", CASES,
                         ids=[f"{w.name}-{m}-{c}" for w, m, c in CASES])
def test_bench(benchmark, workload, mode, candidate):
    case = workload.build("cpu")
    if candidate not in case.candidates:
        pytest.skip(f"{workload.name} has no {candidate} peer")
    with torch.no_grad():
        out = case.candidates["facekernels"](*case.inputs)
    step = _make_step(case.candidates[candidate], case, mode, torch.randn_like(out))
    benchmark.group = f"{workload.name} {mode}"
    benchmark.extra_info.update(flops=workload.flops_forward, workload=workload.name, mode=mode)
    benchmark(step)
