"""pytest-benchmark suite over every workload of facekernels.bench.workloads: `make bench-pytest`.

Each workload's candidates (facekernels and the plain-PyTorch peers the workload declares) are timed
forward and forward+backward; compare them with --benchmark-group-by=param:workload,param:mode.
"""

import pytest
import torch
from facekernels.bench.cases import WorkloadUnavailable
from facekernels.bench.harness import _make_step
from workloads import WORKLOADS

CASES = [(w, mode, name) for w in WORKLOADS for mode in w.modes for name in w.candidates]


@pytest.mark.parametrize("workload,mode,candidate", CASES,
                         ids=[f"{w.name}-{m}-{c}" for w, m, c in CASES])
def test_bench(benchmark, workload, mode, candidate):
    try:
        case = workload.build("cpu")
    except WorkloadUnavailable as e:
        pytest.skip(str(e))
    with torch.no_grad():
        out = case.candidates["facekernels"](*case.inputs)
    step = _make_step(case.candidates[candidate], case, mode, torch.randn_like(out))
    benchmark.group = f"{workload.name} {mode}"
    benchmark.extra_info.update(flops=workload.flops_forward, workload=workload.name, mode=mode)
    benchmark(step)
