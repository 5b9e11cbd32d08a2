"""local_stat_transform and local_mean_var through their CUDA binding (csrc/local_stats/local_stats_cuda.cpp,
unmodified, compiled on the CPU torch: tools/cudaemu/binding/) with cuda/local_stats' kernels in the
emulator: what the C harness (test_local_stats_emu.py, which also covers float16/bfloat16) does not reach,
i.e. the binding's contiguous copies, the float32 workspace it sizes and allocates per set of gradients, the
gradients not asked for (empty [0] tensors), _local_mean_var_backward without incoming gradients (zeros) and
the empty-input returns. Compared with torch.ops.facekernels' CPU ops in float64 with
tests/test_local_stats.py's CUDA float32 rule (atol 1e-5 times the largest reference value, rtol 1e-4).
float32 only (CPU tensors reach the binding only in float32). One launch sequence per call: no tiles."""

import pytest
import torch

import emu

ops = emu.binding("local_stats")
F32 = torch.float32
EPS = 1e-5
SHAPES = [  # (B, C, H, W, kernel_size): a spread of the CUDA tests' shapes
    (2, 3, 16, 16, 7), (1, 2, 9, 13, 1), (2, 2, 6, 5, 31), (1, 1, 1, 17, 5), (1, 1, 1, 1, 3), (1, 3, 33, 65, 15),
    (1, 1, 300, 3, 41), (3, 2, 19, 23, 11),
]
if emu.build_mode() != "plain":  # race checker and ASan: the smaller ones
    SHAPES = [s for s in SHAPES if s[0] * s[1] * s[2] * s[3] <= 2500]


def close(actual, expected):
    assert actual.dtype == F32 and actual.shape == expected.shape
    assert not torch.isnan(actual).any()
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    torch.testing.assert_close(actual.double(), expected, atol=1e-5 * scale, rtol=1e-4)


def d(t):
    return None if t is None else t.double()


def check(x, guide, gout, gm, gv, k):
    close(ops.local_stat_transform(x, guide, k, EPS), torch.ops.facekernels.local_stat_transform(d(x), d(guide), k, EPS))
    for need in ((True, True), (True, False), (False, True), (False, False)):
        got = ops._local_stat_transform_backward(gout, x, guide, k, EPS, *need)
        want = torch.ops.facekernels._local_stat_transform_backward(d(gout), d(x), d(guide), k, EPS, *need)
        for asked, g, r in zip(need, got, want):
            if asked:
                close(g, r)
            else:
                assert g.shape == (0,) and r.shape == (0,)
    for a, r in zip(ops.local_mean_var(x, k), torch.ops.facekernels.local_mean_var(d(x), k)):
        close(a, r)
    for a, b in ((gm, gv), (gm, None), (None, gv), (None, None)):
        got = ops._local_mean_var_backward(a, b, x, k)
        want = torch.ops.facekernels._local_mean_var_backward(d(a), d(b), d(x), k)
        close(got, want)
        if a is None and b is None:
            assert (got == 0).all()


def data(size, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(size, generator=g, dtype=torch.float64).to(F32)
    guide = (torch.randn(size, generator=g, dtype=torch.float64) * 0.5 + 2.0).to(F32)
    return (x, guide, *(torch.randn(size, generator=g, dtype=torch.float64).to(F32) for _ in range(3)))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_cpu_ops(shape):
    *size, k = shape
    check(*data(size, sum(shape)), k)


def test_strided_inputs_and_empty():
    x, guide, gout, gm, gv = data((2, 3, 9, 11), 4)
    t = [a.transpose(2, 3).contiguous().transpose(2, 3) for a in (x, guide, gout, gm, gv)]
    assert not t[0].is_contiguous()
    check(*t, 5)
    check(*data((0, 2, 5, 5), 5), 3)
