"""triplet_attention through its CUDA binding (csrc/triplet_attention/triplet_attention_cuda.cpp, unmodified,
compiled on the CPU torch: tools/cudaemu/binding/) with cuda/triplet_attention's kernels in the emulator:
what the C harness (test_triplet_attention_emu.py, which also covers float16/bfloat16) does not reach, i.e.
the binding's strides (NCHW, channels_last and sliced views passed as they are), the output layouts it
allocates (the CPU binding's rule), absent gates and scale, the empty [0] gradients, and empty batches.
Compared with torch.ops.facekernels' CPU ops in float64 at the CUDA float32 tolerance (atol scaled by the
size of the sums). float32 only (CPU tensors reach the binding only in float32)."""

import math

import pytest
import torch

import emu

ops = emu.binding("triplet_attention")
F32 = torch.float32


def close(actual, expected, scale=1.0):
    assert actual.dtype == F32 and actual.shape == expected.shape
    assert not torch.isnan(actual).any()
    torch.testing.assert_close(actual.double(), expected.double(), **emu.tol(F32, scale))


def layouts(x):
    b, c, h, w = x.shape
    yield "contiguous", x.contiguous()
    yield "channels_last", x.contiguous(memory_format=torch.channels_last)
    wide = torch.zeros(b, 2 * c, h, w + 3, dtype=x.dtype)
    wide[:, ::2, :, 1:w + 1] = x
    yield "sliced", wide[:, ::2, :, 1:w + 1]


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 1, 1, 1), (2, 9, 4, 6), (3, 16, 7, 7)], ids=str)
def test_axis_pool_and_gate_match_cpu_ops(shape):
    B, C, H, W = shape
    g = torch.Generator().manual_seed(sum(shape))
    x0 = torch.randn(shape, generator=g)
    maps = [torch.rand(s, generator=g) for s in ((B, H, W), (B, C, W), (B, H, C), (B, C))]
    for name, x in layouts(x0):
        got = ops.axis_pool(x)
        want = torch.ops.facekernels.axis_pool(x0.double())
        for a, r in zip(got[:3], want[:3]):
            close(a, r)
        for a, r in zip(got[3:], want[3:]):
            assert torch.equal(a, r), name
        grads = [torch.randn(t.shape, generator=g) for t in want[:3]]
        for cl in (False, True):
            gx = ops._axis_pool_backward(*grads, *got[3:], cl)
            assert gx.is_contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
            close(gx, torch.ops.facekernels._axis_pool_backward(*(t.double() for t in grads), *want[3:], cl), 2.0)
        for present in ((True, True, True, True), (False, True, False, False)):
            m = [t if p else None for t, p in zip(maps, present)]
            m64 = [t.double() if t is not None else None for t in m]
            y = ops.triplet_gate(x, *m)
            ref = torch.ops.facekernels.triplet_gate(x, *m)
            assert y.stride() == ref.stride(), name  # the CPU binding's layout rule
            close(y, torch.ops.facekernels.triplet_gate(x0.double(), *m64), 2.0)
            gy = torch.randn(shape, generator=g).contiguous(memory_format=torch.channels_last)
            got_b = ops._triplet_gate_backward(gy, x, *m, True)
            want_b = torch.ops.facekernels._triplet_gate_backward(gy.double(), x0.double(), *m64, True)
            for a, r, n in zip(got_b, want_b, (1, C, H, W, H * W)):
                if r.numel() == 0:
                    assert a.shape == (0,)
                else:
                    close(a, r, 3.0 * math.sqrt(n))


def test_empty_and_gate_conv():
    x = torch.randn(0, 3, 4, 5)
    assert [t.shape[0] for t in ops.axis_pool(x)] == [0] * 6
    gx, dgc, dgh, dgw, ds = ops._triplet_gate_backward(x, x, torch.rand(0, 4, 5), None, None, torch.rand(0, 3), True)
    assert gx.shape == x.shape and dgc.shape == (0, 4, 5) and dgh.shape == (0,) and ds.shape == (0, 3)
    g = torch.Generator().manual_seed(3)
    xc = torch.randn(2, 2, 9, 11, generator=g).transpose(2, 3)  # strided: the binding makes it contiguous
    w = torch.randn(1, 2, 7, 7, generator=g)
    close(ops.gate_conv(xc, w), torch.ops.facekernels.gate_conv(xc.double(), w.double()), 14.0)
    gy = torch.randn(2, 1, 11, 9, generator=g)
    for mask in ((True, True), (True, False), (False, True)):
        got = ops._gate_conv_backward(gy, xc, w, *mask)
        want = torch.ops.facekernels._gate_conv_backward(gy.double(), xc.double(), w.double(), *mask)
        for asked, a, r, scale in zip(mask, got, want, (14.0, 2.0 * math.sqrt(2 * 99))):
            if asked:
                close(a, r, scale)
            else:
                assert a.shape == (0,)
