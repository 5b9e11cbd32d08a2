"""circular_conv through its CUDA binding (csrc/circular_conv/circular_conv_cuda.cpp, unmodified, compiled on
the CPU torch: tools/cudaemu/binding/) with cuda/circular_conv's kernels in the emulator: what the C harness
(test_circular_conv_emu.py, which also covers float16/bfloat16) does not reach, i.e. the binding's
contiguous copies, its optional bias, the float32 workspace it sizes and allocates, the gradients not asked
for (empty [0] tensors) and the empty-input return. Compared with torch.ops.facekernels' CPU ops in float64
with tests/test_circular_conv.py's CUDA float32 rule (atol 2e-6 times sqrt(taps) for the convolutions,
sqrt(terms) for the weight/bias sums; rtol 1e-5). float32 only (CPU tensors reach the binding only in
float32). One launch sequence per call: no tiles in the binding."""

import math

import pytest
import torch

import emu

ops = emu.binding("circular_conv")
F32 = torch.float32
TOL = {"atol": 2e-6, "rtol": 1e-5}  # tests/test_circular_conv.py's TOL[("cuda", torch.float32)]
SHAPES = [  # (B, C, H, W, L, dim): a spread of the CUDA tests' shapes
    (2, 3, 5, 7, 4, 2), (2, 3, 5, 7, 7, -1), (1, 1, 1, 1, 1, 3), (2, 2, 9, 1, 9, 2), (2, 4, 33, 33, 17, 2),
    (1, 2, 70, 40, 70, 2), (1, 2, 3, 130, 130, -1), (2, 700, 3, 5, 3, 3),
]
if emu.build_mode() != "plain":  # race checker and ASan: the smaller ones
    SHAPES = [s for s in SHAPES if s[0] * s[1] * s[2] * s[3] <= 2500]


def close(actual, expected, scale):
    assert actual.dtype == F32 and actual.shape == expected.shape
    assert not torch.isnan(actual).any()
    torch.testing.assert_close(actual.double(), expected, atol=TOL["atol"] * scale, rtol=TOL["rtol"])


def check(x, w, b, gy, dim, masks):
    B, C, H, W = x.shape
    L = w.shape[1]
    close(ops.circular_conv(x, w, b, dim), torch.ops.facekernels.circular_conv(x.double(), w.double(),
                                                                               None if b is None else b.double(), dim),
          math.sqrt(L))
    for mask in masks:
        got = ops._circular_conv_backward(gy, x, w, dim, *mask)
        want = torch.ops.facekernels._circular_conv_backward(gy.double(), x.double(), w.double(), dim, *mask)
        for asked, g, r, scale in zip(mask, got, want, (math.sqrt(L), math.sqrt(B * H * W), math.sqrt(B * H * W))):
            if asked:
                close(g, r, scale)
            else:
                assert g.shape == (0,) and r.shape == (0,)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_cpu_op(shape):
    B, C, H, W, L, dim = shape
    g = torch.Generator().manual_seed(sum(shape) * 31 + L)
    x, w, b, gy = (torch.randn(s, generator=g, dtype=torch.float64).to(F32)
                   for s in ((B, C, H, W), (C, L), (C,), (B, C, H, W)))
    check(x, w, b, gy, dim, [(True, True, True), (True, False, False), (False, True, False), (False, False, True)])
    check(x, w, None, gy, dim, [(True, True, True)])


def test_strided_inputs_and_empty():
    g = torch.Generator().manual_seed(3)
    x, gy = torch.randn(2, 3, 6, 7, generator=g), torch.randn(2, 3, 6, 7, generator=g)
    w, b = torch.randn(5, 3, generator=g).t(), torch.randn(3, 2, generator=g)[:, 1]
    assert not (w.is_contiguous() and b.is_contiguous())
    check(x.transpose(2, 3).contiguous().transpose(2, 3), w, b, gy[:, :, :, :], 2, [(True, True, True)])
    check(x, w, b, gy.transpose(0, 1).contiguous().transpose(0, 1), 3, [(True, True, True)])
    e = torch.randn(0, 3, 6, 7)
    assert ops.circular_conv(e, w, b, 2).shape == e.shape
    gx, gw, gb = ops._circular_conv_backward(e, e, w, 2, True, True, True)
    assert gx.shape == e.shape and (gw == 0).all() and (gb == 0).all()
