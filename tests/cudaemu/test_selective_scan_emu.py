"""cuda/selective_scan's kernels (unmodified) run by the CPU emulator against torch.ops.facekernels' CPU ops
in float64 on the same inputs; float32, float16 and bfloat16 storage (float32 state and arithmetic), with
the CUDA tolerances of tests/devices.py, atol scaled by the size of the reference (the outputs are sums of
up to L decayed terms over N states, the gradients of A, B, C, D and delta_bias sums over the batch, the
steps or the channels). Shapes cross the kernels' 32-step chunks, N above one warp's lanes, grouped B and C,
and every optional input on and off; the bigger ones are dropped under the race checker."""

import emu
import pytest
import torch

ss = emu.family("selective_scan")
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SHAPES = [  # (B, D, L, N, G of B, G of C): G 0 is the [B, N, L] form
    (1, 1, 1, 1, 0, 0), (2, 3, 5, 4, 0, 0), (2, 5, 33, 16, 0, 0), (1, 4, 70, 40, 2, 4), (2, 6, 64, 3, 3, 0),
    (1, 2, 31, 256, 0, 2), (3, 40, 20, 8, 0, 0), (1, 3, 0, 4, 0, 0),
]
OPTIONS = [(True, True, True, True), (False, False, False, False), (True, False, True, False),
           (False, True, False, True)]  # D, z, delta_bias, delta_softplus
if ss.racecheck():
    SHAPES = [s for s in SHAPES if s[0] * s[1] * s[2] * s[3] <= 2500]


def inputs(shape, options, dtype, seed):
    B, D, L, N, gb, gc = shape
    with_D, with_z, with_bias, _ = options
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    m = lambda groups: r(B, N, L) if groups == 0 else r(B, groups, N, L)
    t = {"u": r(B, D, L), "delta": r(B, D, L).abs() * 0.3 + 0.05, "A": -torch.exp(r(D, N) * 0.5),
         "B": m(gb), "C": m(gc),
         "D": r(D) if with_D else None, "z": r(B, D, L) if with_z else None,
         "delta_bias": r(D) * 0.1 if with_bias else None}
    return {k: None if v is None else v.to(dtype) for k, v in t.items()}


def groups(t):
    return 1 if t.dim() == 3 else t.shape[1]


def forward(i, softplus):
    u = i["u"]
    B, D, L = u.shape
    N = i["A"].shape[1]
    out, last = ss.empty(u.shape, u.dtype), ss.empty((B, D, N), torch.float32)
    err = ss("emu_selective_scan_forward", *(ss.dev(i[k]) for k in ("u", "delta", "A", "B", "C", "D", "z",
                                                                   "delta_bias")),
             out, last, B, D, L, N, groups(i["B"]), groups(i["C"]), softplus, u.dtype)
    return err, out.host(), last.host()


def backward(gout, glast, i, softplus):
    u = i["u"]
    B, D, L = u.shape
    N = i["A"].shape[1]
    grads = [ss.empty(i[k].shape, u.dtype) if i[k] is not None else None
             for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    n = ss("emu_selective_scan_workspace", B, D, L, N, groups(i["B"]), groups(i["C"]))
    ws = ss.empty((n,), torch.float32) if n else None
    err = ss("emu_selective_scan_backward", ss.dev(gout), ss.dev(glast),
             *(ss.dev(i[k]) for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")), *grads, ws,
             B, D, L, N, groups(i["B"]), groups(i["C"]), softplus, u.dtype)
    return err, [g.host() if g is not None else None for g in grads]


def check(actual, expected, dtype):
    emu.check(actual, expected, dtype, 10 * max(1.0, expected.abs().max().item() if expected.numel() else 1.0))


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "".join("1" if x else "0" for x in o))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_cpu_op(shape, dtype, options):
    softplus = options[3]
    i = inputs(shape, options, dtype, sum(shape))
    d64 = {k: None if v is None else v.double() for k, v in i.items()}
    args64 = [d64[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    err, out, last = forward(i, softplus)
    assert err == 0
    ref_out, ref_last = torch.ops.facekernels.selective_scan(*args64, softplus)
    check(out, ref_out, dtype)
    check(last, ref_last, dtype)

    g = torch.Generator().manual_seed(7)
    gout = torch.randn(i["u"].shape, generator=g, dtype=torch.float64).to(dtype)
    glast = torch.randn(last.shape, generator=g, dtype=torch.float64).float()
    for grad_last in (glast, None):
        err, grads = backward(gout, grad_last, i, softplus)
        assert err == 0
        want = torch.ops.facekernels._selective_scan_backward(
            gout.double(), None if grad_last is None else grad_last.double(), *args64, softplus)
        for name, got, ref in zip(("u", "delta", "A", "B", "C", "D", "z", "delta_bias"), grads, want):
            if i[name] is None:
                assert got is None
            else:
                check(got, ref, dtype)


@pytest.mark.parametrize("schedule", [(1, 0), (2, 7)], ids=["reverse", "random7"])
def test_bitwise_identical_under_other_thread_orders(schedule):
    """Thread interleavings must not change a bit (no atomics: the reductions' order is fixed)."""
    i = inputs((2, 6, 40, 5, 0, 3), OPTIONS[0], torch.float32, 3)
    gout, glast = torch.randn(2, 6, 40), torch.randn(2, 6, 5)
    _, y0, s0 = forward(i, True)
    _, g0 = backward(gout, glast, i, True)
    try:
        ss.lib.cudaemu_set_schedule(*schedule)
        _, y1, s1 = forward(i, True)
        _, g1 = backward(gout, glast, i, True)
    finally:
        ss.lib.cudaemu_set_schedule(0, 1)
    assert torch.equal(y0, y1) and torch.equal(s0, s1)
    for a, c in zip(g0, g1):
        assert torch.equal(a, c)


def test_invalid_shape_is_refused():
    i = inputs((1, 4, 5, 3, 0, 0), OPTIONS[1], torch.float32, 0)
    i["B"] = torch.randn(1, 3, 3, 5)  # 3 groups do not divide D = 4
    err, _, _ = forward(i, False)
    assert err == 1  # cudaErrorInvalidValue
