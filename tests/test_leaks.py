"""Memory leaks across many calls of every op (issue 17, item 2).

Each op registered under torch.ops.facekernels is called many times through the dispatcher's boxed path
(what Python, torch.compile and TorchScript use), and the bytes the C heap holds afterwards are compared
with before: glibc's mallinfo2() (uordblks + hblkhd: the bytes malloc has handed out and not had back).
Tensors' storage comes from malloc and goes back to it when freed, and Python's small objects live in
pymalloc arenas outside those counters, so a steady state counts the same bytes call after call; a leak of
even one small object per call adds >= 32 bytes per call. (torch 2.13's stable-ABI conversion of a
`str` argument leaked two small objects per boxed call: alignment_energy's mode and metric are ints at
the boundary for that reason, and this test would catch the next such argument type.)

The public autograd paths (forward and backward through each op family's Python wrapper) are checked the
same way. Under the sanitizer build (tools/ci/sanitize.sh: ASan replaces malloc, so mallinfo2 counts
nothing, and LeakSanitizer is off there) the test skips; the normal build's run of it is the leak check.
"""

from __future__ import annotations

import ctypes
import functools
import ctypes.util
import gc

import facekernels
import pytest
import torch
from facekernels import ops
from facekernels.ops.alignment_energy import METRICS, MODES

CALLS = 1500  # per measurement; a leak of 2 x 32 bytes per call is 96 KiB, the tolerance 12 KiB
ROUNDS = 3  # up to three measurements: a one-off growth of a cache in one of them is not a leak
BYTES_PER_CALL = 8  # what a steady state may drift by, far below one leaked allocation (>= 32 bytes)


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _mallinfo2():
    path = ctypes.util.find_library("c")
    libc = ctypes.CDLL(path) if path else None
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None
    libc.mallinfo2.restype = _Mallinfo2
    return libc.mallinfo2


MALLINFO2 = _mallinfo2()


def heap_bytes() -> int:
    info = MALLINFO2()
    return int(info.uordblks) + int(info.hblkhd)


def _usable() -> str | None:
    if MALLINFO2 is None:
        return "needs glibc's mallinfo2 (glibc >= 2.33)"
    if facekernels.build_info().get("sanitize"):
        return "a sanitizer build replaces malloc (mallinfo2 counts nothing); the normal build's run checks leaks"
    before = heap_bytes()
    block = torch.empty(1 << 16)  # 256 KiB from malloc: the counters must see it
    seen = heap_bytes() - before
    del block
    if seen < (1 << 18):
        return f"mallinfo2 does not see torch's CPU allocations here (saw {seen} of 262144 bytes)"
    return None


SKIP = _usable()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")


def growth_per_call(call) -> float:
    """The smallest heap growth per call over up to ROUNDS rounds of CALLS calls, after a warm-up.

    A round whose growth lies within +-BYTES_PER_CALL ends the measurement: a leak grows the heap in every
    round, so one clean round proves there is none (and the further rounds, most of this file's time, would
    not change the verdict). A round in which the heap shrank by more than that (something freed) is not
    taken as clean: it could hide a leak, so the next round decides."""
    for _ in range(200):
        call()
    gc.collect()
    best = float("inf")
    for _ in range(ROUNDS):
        before = heap_bytes()
        for _ in range(CALLS):
            call()
        gc.collect()
        growth = (heap_bytes() - before) / CALLS
        best = min(best, growth)
        if abs(growth) < BYTES_PER_CALL:
            break
    return best


@functools.cache  # built once: each op's test takes its call from here
def _raw_calls() -> dict:
    """One small valid call per registered op (the raw torch.ops overloads, boxed through the dispatcher)."""
    f = torch.ops.facekernels
    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    x4, w = r(2, 3, 5, 6), r(3, 5)
    q = [r(1, 2, 5, 4) for _ in range(5)]
    lam = torch.rand(1, 2, generator=g)
    out, lse1, lse2 = f._diff_attention_forward(*q, lam, True, None)
    xe = r(2, 4, 9)
    _, idx = f.cosine_topk(xe, 3)
    ws, we = r(5, 9), r(5, 9)
    out_e, winner = f.edge_conv_max(xe, idx, ws, we, r(5))
    xs, ws_, adj = r(2, 3, 4, 5), r(2, 6, 3), torch.rand(2, 5, 5, generator=g)
    xl, gl = r(1, 2, 9, 9), r(1, 2, 9, 9)
    p, d = r(12, 4), r(12, 4)
    xt = r(2, 3, 5, 6).contiguous(memory_format=torch.channels_last)
    pooled = f.axis_pool(xt)
    maps = [r(2, 5, 6), r(2, 3, 6), r(2, 5, 3), r(2, 3)]
    xm, wm = r(2, 2, 5, 6), r(1, 2, 7, 7)
    xf = r(2, 7, 5)
    su, sd, sz = r(2, 4, 7), r(2, 4, 7).abs(), r(2, 4, 7)
    scan = (su, sd, -r(4, 3).abs(), r(2, 3, 7), r(2, 2, 3, 7), r(4), sz, r(4))
    calls = {
        "circular_conv": lambda: f.circular_conv(x4, w, r(3), 3),
        "_circular_conv_backward": lambda: f._circular_conv_backward(torch.ones_like(x4), x4, w, 3, True, True, True),
        "correlation": lambda: f.correlation(x4, x4, 5, 2, 1),
        "_correlation_backward": lambda: f._correlation_backward(torch.ones(2, 5, 5, 5, 6), x4, x4, 5, 2, True, True),
        "_diff_attention_forward": lambda: f._diff_attention_forward(*q, lam, True, 0.5),
        "_diff_attention_backward": lambda: f._diff_attention_backward(torch.ones_like(out), *q, lam, lse1, lse2,
                                                                       True, None),
        "cosine_topk": lambda: f.cosine_topk(xe, 3, xe),
        "edge_conv_max": lambda: f.edge_conv_max(xe, idx, ws, we, None),
        "_edge_conv_max_backward": lambda: f._edge_conv_max_backward(torch.ones_like(out_e), xe, idx, ws, we, winner,
                                                                     True, True, True),
        "st_graph_conv": lambda: f.st_graph_conv(xs, ws_, adj, r(2, 6)),
        "_st_graph_conv_backward": lambda: f._st_graph_conv_backward(torch.ones(2, 6, 4, 5), xs, ws_, adj, None,
                                                                     True, True, True, False),
        "local_stat_transform": lambda: f.local_stat_transform(xl, gl, 3, 1e-5),
        "_local_stat_transform_backward": lambda: f._local_stat_transform_backward(torch.ones_like(xl), xl, gl, 3,
                                                                                   1e-5, True, True),
        "local_mean_var": lambda: f.local_mean_var(xl, 5),
        "_local_mean_var_backward": lambda: f._local_mean_var_backward(torch.ones_like(xl), None, xl, 5),
        "alignment_energy": lambda: f.alignment_energy(p, d, MODES.index("knn"), 3,
                                                       METRICS.index("euclidean")),
        "axis_pool": lambda: f.axis_pool(xt),
        "_axis_pool_backward": lambda: f._axis_pool_backward(*(torch.ones_like(t) for t in pooled[:3]), *pooled[3:],
                                                             True),
        "triplet_gate": lambda: f.triplet_gate(xt, maps[0], None, maps[2], maps[3]),
        "_triplet_gate_backward": lambda: f._triplet_gate_backward(torch.ones_like(xt), xt, *maps, True),
        "gate_conv": lambda: f.gate_conv(xm, wm),
        "_gate_conv_backward": lambda: f._gate_conv_backward(r(2, 1, 5, 6), xm, wm, True, True),
        "one_euro_filter": lambda: f.one_euro_filter(xf, torch.full((2, 7), 0.02), r(2, 3, 5), 30.0, 1.0, 0.3,
                                                     1.0, False),
        "exponential_smoothing": lambda: f.exponential_smoothing(xf, r(2, 5), 0.4),
        "selective_scan": lambda: f.selective_scan(*scan, True),
        "_selective_scan_backward": lambda: f._selective_scan_backward(torch.ones_like(su), r(2, 4, 3), *scan, True),
    }
    return calls


RAW_OPS = sorted([
    "circular_conv", "_circular_conv_backward", "correlation", "_correlation_backward", "_diff_attention_forward", "_diff_attention_backward", "cosine_topk",
    "edge_conv_max", "_edge_conv_max_backward", "st_graph_conv", "_st_graph_conv_backward", "local_stat_transform",
    "_local_stat_transform_backward", "local_mean_var", "_local_mean_var_backward", "alignment_energy",
    "axis_pool", "_axis_pool_backward", "triplet_gate", "_triplet_gate_backward", "gate_conv", "_gate_conv_backward",
    "one_euro_filter", "exponential_smoothing", "selective_scan", "_selective_scan_backward",
])


def registered_ops() -> set[str]:
    return {name.split("::", 1)[1].split(".")[0] for name in torch._C._dispatch_get_all_op_names()
            if name.startswith("facekernels::")}


def test_every_registered_op_is_covered():
    assert set(RAW_OPS) == registered_ops(), "add a call of each new op to tests/test_leaks.py"
    assert set(_raw_calls()) == set(RAW_OPS)


@pytest.mark.parametrize("op", RAW_OPS)
def test_raw_op_does_not_leak(op):
    call = _raw_calls()[op]
    call()  # a wrong call here is a test bug, not a leak
    per_call = growth_per_call(call)
    assert per_call < BYTES_PER_CALL, f"{op}: the C heap grows by {per_call:.1f} bytes per call"


@functools.cache
def _public_calls() -> dict:
    g = torch.Generator().manual_seed(1)

    def r(*shape, grad=True):
        return torch.randn(*shape, generator=g).requires_grad_(grad)

    x4, w = r(2, 3, 5, 6), r(3, 5)
    q = [r(1, 2, 5, 4) for _ in range(5)]
    lam = torch.rand(2, generator=g).requires_grad_()  # the public op broadcasts [H] to [B, H]
    xe, ws, we = r(2, 4, 9), r(5, 9), r(5, 9)
    xs, wst, adj = r(2, 3, 4, 5), r(2, 6, 3), torch.rand(2, 5, 5, generator=g).requires_grad_()
    xl, gl = r(1, 2, 9, 9), r(1, 2, 9, 9)
    p, d = r(12, 4, grad=False), r(12, 4, grad=False)
    triplet_block = facekernels.nn.TripSE(3, variant=1, reduction=1)
    one_euro_state = torch.zeros(6, 3, 5)
    scan_inputs = (r(2, 4, 7), r(2, 4, 7, grad=False).abs().requires_grad_(), r(4, 3), r(2, 3, 7), r(2, 3, 7))

    def edge():
        _, idx = ops.cosine_topk(xe.detach(), 3)
        ops.edge_conv_max(xe, idx, ws, we).sum().backward()

    return {
        "circular_conv": lambda: facekernels.circular_conv(x4, w, None, 3).sum().backward(),
        "correlation": lambda: ops.correlation(x4, x4, 5, 2).sum().backward(),
        "diff_attention": lambda: ops.diff_attention(*q, lam, causal=True).sum().backward(),
        "edge_conv": edge,
        "st_graph_conv": lambda: facekernels.st_graph_conv(xs, wst, adj).sum().backward(),
        "local_stat_transform": lambda: facekernels.local_stat_transform(xl, gl, 3).sum().backward(),
        "local_mean_var": lambda: sum(t.sum() for t in ops.local_mean_var(xl, 3)).backward(),
        "alignment_energy": lambda: facekernels.alignment_energy(p, d, mode="knn", k=3, metric="euclidean"),
        "triplet_attention": lambda: triplet_block(x4).sum().backward(),
        "temporal_filter": lambda: ops.one_euro_filter(xs.detach().flatten(0, 1), 1.0, 0.3, state=one_euro_state),
        "selective_scan": lambda: ops.selective_scan(*scan_inputs, delta_softplus=True).sum().backward(),
    }


FAMILIES = ["alignment_energy", "circular_conv", "correlation", "diff_attention", "edge_conv", "local_mean_var",
            "local_stat_transform", "selective_scan", "st_graph_conv", "temporal_filter", "triplet_attention"]


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_and_backward_do_not_leak(family):
    call = _public_calls()[family]
    call()
    per_call = growth_per_call(call)
    assert per_call < BYTES_PER_CALL, f"{family}: the C heap grows by {per_call:.1f} bytes per call"


def test_the_measurement_sees_a_leak():
    """Negative control: 64 bytes kept per call (as the str conversion did) are seen."""
    kept = []
    per_call = growth_per_call(lambda: kept.append(torch.empty(16)))  # a 64-byte storage from malloc each
    assert per_call >= 64, per_call
