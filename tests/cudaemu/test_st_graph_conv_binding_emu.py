"""st_graph_conv through its CUDA binding (csrc/st_graph_conv/st_graph_conv_cuda.cpp with the GEMM driver it
shares with the CPU binding, st_graph_conv_driver.cpp, both unmodified, compiled on the CPU torch:
tools/cudaemu/binding/) with the elementwise steps of cuda/st_graph_conv in the emulator and the GEMMs in
torch's CPU mm (where cuBLAS runs on a GPU): the per-sample loop with one worker as on CUDA, both contraction
orders forward (Cin < Cout aggregates first, Cin > Cout multiplies channels first) and the backward's own
order per set of gradients asked for, shared and per-sample adjacency, bias tables and their gradients, the
worker partial sums added back by st_graph_conv_accumulate. Compared with torch.ops.facekernels' CPU ops in
float64 on the same inputs with tests/test_st_graph_conv.py's CUDA float32 rule (error relative to the
largest reference value, at least 1: CUDA_TOL 2e-5, gradients twice that). float32 only (CPU tensors reach
the binding only in float32). The binding has no tiles: a call is one pass over the samples."""

import pytest
import torch

import emu
import test_st_graph_conv  # tests/ is on sys.path: its CUDA cases and tolerance

ops = emu.binding("st_graph_conv")
F32 = torch.float32
CUDA_TOL = test_st_graph_conv.cuda_tol(F32)  # tests/devices.py's ("st_graph_conv", "cuda", float32) row
CASES = list(test_st_graph_conv.CUDA_CASES)  # (N, Cin, Cout, T, V, K, per_sample adjacency, bias)
if emu.build_mode() != "plain":  # race checker and ASan: the workload sizes at batch 1
    CASES = CASES[:5] + [(1, 64, 128, 29, 68, 3, False, True), (1, 64, 128, 29, 20, 3, True, True)]
# (x, weight, adjacency, bias): all of them, then each alone (each picks the backward's order on its own).
MASKS = [(True,) * 4] + [tuple(i == j for j in range(4)) for i in range(4)]


def make(case):
    n, cin, cout, t, v, k, per_sample, has_bias = case
    g = torch.Generator().manual_seed(sum(case[:6]))
    x = torch.randn(n, cin, t, v, generator=g)
    weight = torch.randn(k, cout, cin, generator=g) / cin**0.5
    adjacency = torch.rand(*((n,) if per_sample else ()), k, v, v, generator=g) / v**0.5
    bias = torch.randn(k, cout, generator=g) if has_bias else None
    grad = torch.randn(n, cout, t, v, generator=g)
    return x, weight, adjacency, bias, grad


def assert_close_scaled(got, want, tol, what):
    assert got.dtype == F32 and got.shape == want.shape, what
    assert not torch.isnan(got).any(), what
    if want.numel() == 0:
        return
    scale = max(1.0, want.abs().max().item())
    err = (got.double() - want).abs().max().item() / scale
    assert err <= tol, f"{what}: max error {err:.3g} (relative to {scale:.3g}) > {tol}"


def d(t):
    return None if t is None else t.double()


def check(x, weight, adjacency, bias, grad, masks):
    out = ops.st_graph_conv(x, weight, adjacency, bias)
    assert_close_scaled(out, torch.ops.facekernels.st_graph_conv(d(x), d(weight), d(adjacency), d(bias)), CUDA_TOL,
                        "out")
    for mask in masks:
        got = ops._st_graph_conv_backward(grad, x, weight, adjacency, bias, *mask)
        want = torch.ops.facekernels._st_graph_conv_backward(d(grad), d(x), d(weight), d(adjacency), d(bias), *mask)
        for name, g, w in zip(["x", "weight", "adjacency", "bias"], got, want):
            assert_close_scaled(g, w, CUDA_TOL * 2, f"grad {name} (mask {mask})")


@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_cpu_op(case):
    x, weight, adjacency, bias, grad = make(case)
    check(x, weight, adjacency, bias, grad, MASKS)


def test_strided_inputs_and_empty_shapes():
    """A sample-strided x (every other sample: the driver reads it in place) and a transposed x (copied),
    transposed adjacency and weight (contiguous copies); an empty batch and zero frames."""
    x, weight, adjacency, bias, grad = make((6, 3, 5, 4, 6, 2, False, True))
    check(x[::2], weight, adjacency.transpose(1, 2), bias, grad[::2], MASKS[:1])
    check(x.transpose(2, 3).contiguous().transpose(2, 3), weight.transpose(1, 2).contiguous().transpose(1, 2),
          adjacency, bias, grad, MASKS[:1])
    for case in ((0, 3, 4, 5, 6, 2, True, True), (2, 3, 4, 0, 6, 2, False, True)):
        check(*make(case), MASKS)
