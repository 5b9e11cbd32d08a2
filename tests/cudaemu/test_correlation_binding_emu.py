"""correlation through its CUDA binding (csrc/correlation/correlation_cuda.cpp and the shared checks of
correlation.cpp, unmodified, compiled on the CPU torch: tools/cudaemu/binding/) with cuda/correlation's
kernels in the emulator: what the C harness does not reach, i.e. the binding's stride plumbing on
non-contiguous tensors read in place (channel slices, transposed planes, channels-last, a strided
grad_out), its output allocation, the gradients not asked for ([0] tensors), the empty-input returns and
the shared argument checks. float32, float16 and bfloat16 (the binding build checks CPU tensors as CUDA
ones, FK_CUDA_EMULATION), compared with torch.ops.facekernels' CPU ops in float64 at the CUDA rows of
tests/devices.py (atol scaled by sqrt(C) for the forward, by P for the gradients, as
tests/test_correlation.py's CUDA test does)."""

import pytest
import torch

import emu

ops = emu.binding("correlation")
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SHAPES = [(2, 5, 7, 9, 5, 2), (1, 3, 6, 5, 3, 3), (2, 3, 4, 5, 9, 3), (1, 1, 1, 1, 1, 1), (1, 16, 10, 11, 7, 2)]
if emu.build_mode() != "plain":  # race checker and ASan: the smaller ones
    SHAPES = [s for s in SHAPES if s[0] * s[2] * s[3] * s[4] * s[4] <= 3000]


def check(x1, x2, g, P, d, need=(True, True)):
    dtype = x1.dtype
    C = x1.shape[1]
    out = ops.correlation(x1, x2, P, d, 1)
    assert out.dtype == dtype and out.shape == (x1.shape[0], P, P, *x1.shape[2:])
    emu.check(out, torch.ops.facekernels.correlation(x1.double(), x2.double(), P, d, 1), dtype, max(1.0, C ** 0.5))
    got = ops._correlation_backward(g, x1, x2, P, d, *need)
    want = torch.ops.facekernels._correlation_backward(g.double(), x1.double(), x2.double(), P, d, *need)
    for asked, a, b in zip(need, got, want):
        if asked:
            assert a.dtype == dtype
            emu.check(a, b, dtype, P)
        else:
            assert a.shape == (0,) and b.shape == (0,)


def randn(shape, g, dtype):
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_cpu_op(shape, dtype):
    B, C, H, W, P, d = shape
    g = torch.Generator().manual_seed(sum(shape) * 7 + P)
    x1, x2, go = randn((B, C, H, W), g, dtype), randn((B, C, H, W), g, dtype), randn((B, P, P, H, W), g, dtype)
    check(x1, x2, go, P, d)
    check(x1, x2, go, P, d, (True, False))
    check(x1, x2, go, P, d, (False, True))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_strided_inputs_read_in_place(dtype):
    g = torch.Generator().manual_seed(3)
    big = randn((2, 10, 9, 8), g, dtype)
    x1 = big[:, 1:8:2]                                                           # channel stride 2
    x2 = randn((2, 4, 8, 9), g, dtype).transpose(2, 3)                           # H and W swapped
    go = randn((2, 9, 8, 5, 5), g, dtype).permute(0, 3, 4, 1, 2)                 # planes first
    assert not (x1.is_contiguous() or x2.is_contiguous() or go.is_contiguous())
    check(x1, x2, go, 5, 2)
    cl1 = randn((2, 4, 9, 8), g, dtype).contiguous(memory_format=torch.channels_last)
    cl2 = randn((2, 4, 9, 8), g, dtype).contiguous(memory_format=torch.channels_last)
    check(cl1, cl2, go.contiguous(), 5, 2)


def test_empty_inputs():
    e = torch.randn(0, 3, 5, 6)
    assert ops.correlation(e, e, 3, 1, 1).shape == (0, 3, 3, 5, 6)
    g1, g2 = ops._correlation_backward(torch.randn(0, 3, 3, 5, 6), e, e, 3, 1, True, True)
    assert g1.shape == e.shape and g2.shape == e.shape
    z = torch.randn(2, 0, 4, 5)  # no channels: a cost volume of zeros
    out = ops.correlation(z, z, 3, 2, 1)
    assert out.shape == (2, 3, 3, 4, 5) and (out == 0).all()


@pytest.mark.parametrize("args,message", [
    ((torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 5), 3, 1, 1), r"correlation: x2 must have the shape of x1"),
    ((torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4), 4, 1, 1), r"correlation: patch_size must be an odd"),
    ((torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4), 3, 0, 1), r"correlation: dilation_patch must be >= 1"),
    ((torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4), 3, 1, 3), r"correlation: kernel_size must be 1"),
    ((torch.randn(1, 2, 4, 4, dtype=torch.float64),) * 2 + (3, 1, 1), r"correlation: x1"),  # no float64 on CUDA
])
def test_shared_checks_refuse(args, message):
    with pytest.raises(RuntimeError, match=message):
        ops.correlation(*args)
