"""temporal_filter (one_euro_filter, exponential_smoothing): against a plain per-sample loop of the
published algorithms in float64, streaming = offline, opcheck, torch.compile, bad inputs, SIMD levels."""

import math

import facekernels
import pytest
import torch
from facekernels.ops import exponential_smoothing, one_euro_filter
from helpers import assert_fake_refuses_like_native, run_at_each_cpu_capability


def one_euro_reference(x, periods, min_cutoff, beta, d_cutoff, raw):
    """Casiez et al. 2012, one sample at a time, in Python floats (the reference implementation's loop)."""
    batch, frames, channels = x.shape
    y = torch.empty(batch, frames, channels, dtype=torch.float64)

    def alpha(cutoff, te):
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / te)

    for b in range(batch):
        for c in range(channels):
            x_hat = prev_raw = float(x[b, 0, c])
            dx_hat = 0.0
            y[b, 0, c] = x_hat
            for t in range(1, frames):
                te = float(periods[b, t])
                value = float(x[b, t, c])
                dx = (value - (prev_raw if raw else x_hat)) / te
                dx_hat = alpha(d_cutoff, te) * dx + (1 - alpha(d_cutoff, te)) * dx_hat
                a = alpha(min_cutoff + beta * abs(dx_hat), te)
                x_hat = a * value + (1 - a) * x_hat
                prev_raw = value
                y[b, t, c] = x_hat
    return y


def ema_reference(x, alpha):
    y = x.clone().double()
    for t in range(1, x.shape[1]):
        y[:, t] = alpha * x[:, t].double() + (1 - alpha) * y[:, t - 1]
    return y


def noisy(batch, frames, channels, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 3, frames, dtype=torch.float64)
    clean = torch.sin(2 * math.pi * 0.7 * t)[None, :, None] * torch.rand(batch, 1, channels, generator=g,
                                                                           dtype=torch.float64)
    return (clean + 0.05 * torch.randn(batch, frames, channels, generator=g, dtype=torch.float64)).to(dtype)


@pytest.mark.parametrize("raw", [False, True])
@pytest.mark.parametrize("shape", [(1, 40, 1), (3, 33, 5), (2, 17, 52), (1, 1, 4)])
@pytest.mark.parametrize("params", [(1.0, 0.0, 1.0), (0.5, 0.8, 2.0), (3.0, 0.05, 1.0)])
def test_one_euro_matches_reference_loop_fixed_rate(shape, params, raw):
    x = noisy(*shape)
    rate = 60.0
    y, _ = one_euro_filter(x, *params, rate=rate, raw_derivative=raw)
    expected = one_euro_reference(x, torch.full(shape[:2], 1 / rate, dtype=torch.float64), *params, raw)
    torch.testing.assert_close(y, expected, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("raw", [False, True])
def test_one_euro_matches_reference_loop_with_periods(raw):
    x = noisy(2, 30, 6)
    g = torch.Generator().manual_seed(3)
    periods = 0.01 + 0.03 * torch.rand(2, 30, generator=g, dtype=torch.float64)
    y, _ = one_euro_filter(x, 0.7, 0.3, 1.5, periods=periods, raw_derivative=raw)
    torch.testing.assert_close(y, one_euro_reference(x, periods, 0.7, 0.3, 1.5, raw), atol=1e-12, rtol=1e-12)
    # a [T] tensor expanded over the batch (stride 0) is read in place
    shared = periods[0]
    y2, _ = one_euro_filter(x, 0.7, 0.3, 1.5, periods=shared.expand(2, 30), raw_derivative=raw)
    torch.testing.assert_close(y2, one_euro_reference(x, shared.expand(2, 30), 0.7, 0.3, 1.5, raw), atol=1e-12,
                               rtol=1e-12)


def test_one_euro_float32_close_to_float64():
    x = noisy(2, 500, 52)
    y64, _ = one_euro_filter(x, 1.0, 0.5, 1.0, rate=30.0)
    y32, _ = one_euro_filter(x.float(), 1.0, 0.5, 1.0, rate=30.0)
    torch.testing.assert_close(y32.double(), y64, atol=2e-5, rtol=1e-4)


def test_one_euro_variants_differ():
    """The two derivative variants are not the same filter (the option does something)."""
    x = noisy(1, 50, 3)
    a, _ = one_euro_filter(x, 1.0, 1.0, 1.0, raw_derivative=False)
    b, _ = one_euro_filter(x, 1.0, 1.0, 1.0, raw_derivative=True)
    assert (a - b).abs().max() > 1e-6


def test_one_euro_smooths_and_tracks():
    """beta = 0 is a low-pass; a high beta follows a fast ramp more closely than beta = 0."""
    x = noisy(1, 300, 4)
    y, _ = one_euro_filter(x, 1.0, 0.0, 1.0, rate=60.0)
    assert (y.diff(dim=1)).abs().mean() < 0.5 * x.diff(dim=1).abs().mean()
    ramp = torch.linspace(0, 10, 100, dtype=torch.float64)[None, :, None]
    slow, _ = one_euro_filter(ramp, 1.0, 0.0, 1.0, rate=60.0)
    fast, _ = one_euro_filter(ramp, 1.0, 5.0, 1.0, rate=60.0)
    assert (fast - ramp).abs()[0, -1, 0] < 0.2 * (slow - ramp).abs()[0, -1, 0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("raw", [False, True])
def test_one_euro_streaming_equals_offline(dtype, raw):
    x = noisy(3, 41, 7, dtype)
    periods = (0.01 + 0.02 * torch.rand(3, 41, generator=torch.Generator().manual_seed(1))).to(dtype)
    full, full_state = one_euro_filter(x, 1.0, 0.4, 1.0, periods=periods, raw_derivative=raw)
    state, pieces = None, []
    for lo, hi in [(0, 1), (1, 2), (2, 10), (10, 10), (10, 40), (40, 41)]:
        y, state = one_euro_filter(x[:, lo:hi], 1.0, 0.4, 1.0, periods=periods[:, lo:hi], state=state,
                                   raw_derivative=raw)
        pieces.append(y)
    assert torch.equal(torch.cat(pieces, dim=1), full)
    assert torch.equal(state, full_state)


@pytest.mark.parametrize("shape", [(1, 25, 3), (4, 19, 52), (2, 1, 2)])
def test_exponential_smoothing_matches_reference(shape):
    x = noisy(*shape)
    y, state = exponential_smoothing(x, 0.3)
    torch.testing.assert_close(y, ema_reference(x, 0.3), atol=1e-13, rtol=1e-13)
    assert torch.equal(state, y[:, -1])
    y1, _ = exponential_smoothing(x, 1.0)
    assert torch.equal(y1, x)


def test_exponential_smoothing_streaming_equals_offline():
    x = noisy(2, 30, 5, torch.float32)
    full, _ = exponential_smoothing(x, 0.2)
    state, pieces = None, []
    for lo, hi in [(0, 3), (3, 3), (3, 4), (4, 30)]:
        y, state = exponential_smoothing(x[:, lo:hi], 0.2, state=state)
        pieces.append(y)
    assert torch.equal(torch.cat(pieces, dim=1), full)


def test_strided_input_and_empty():
    x = noisy(2, 20, 12)
    strided = x.transpose(0, 1).contiguous().transpose(0, 1)[:, :, ::2]
    y, _ = one_euro_filter(strided, 1.0, 0.1, 1.0)
    y_ref, _ = one_euro_filter(strided.contiguous(), 1.0, 0.1, 1.0)
    assert torch.equal(y, y_ref)
    for shape in [(0, 5, 3), (2, 5, 0), (2, 0, 3)]:
        y, s = one_euro_filter(torch.randn(*shape), 1.0, 0.0, 1.0)
        assert y.shape == shape and s.shape == (shape[0], 3, shape[2])
        y, s = exponential_smoothing(torch.randn(*shape), 0.5)
        assert y.shape == shape and s.shape == (shape[0], shape[2])
    state = torch.randn(2, 3, 3)
    _, s = one_euro_filter(torch.randn(2, 0, 3), 1.0, 0.0, 1.0, state=state)
    assert torch.equal(s, state)


def test_not_differentiable():
    x = noisy(1, 10, 2).requires_grad_()
    y, _ = one_euro_filter(x, 1.0, 0.0, 1.0)
    with pytest.raises(RuntimeError, match="one_euro_filter: not differentiable"):
        y.sum().backward()
    y, _ = exponential_smoothing(x, 0.5)
    with pytest.raises(RuntimeError, match="exponential_smoothing: not differentiable"):
        y.sum().backward()


def test_opcheck():
    x = noisy(2, 9, 5, torch.float32)
    periods = torch.full((2, 9), 0.02)
    state = torch.randn(2, 3, 5)
    torch.library.opcheck(torch.ops.facekernels.one_euro_filter.default,
                          (x, periods, state, 30.0, 1.0, 0.3, 1.0, False))
    torch.library.opcheck(torch.ops.facekernels.one_euro_filter.default, (x, None, None, 30.0, 1.0, 0.0, 1.0, True))
    torch.library.opcheck(torch.ops.facekernels.exponential_smoothing.default, (x, None, 0.4))
    torch.library.opcheck(torch.ops.facekernels.exponential_smoothing.default, (x, torch.randn(2, 5), 0.4))


def test_compile_fullgraph():
    def fn(x, periods):
        y, state = one_euro_filter(x * 2, 1.0, 0.2, 1.0, periods=periods)
        z, _ = exponential_smoothing(y, 0.5)
        return z + state.sum()

    torch._dynamo.reset()
    x, periods = noisy(2, 16, 5, torch.float32), torch.full((2, 16), 0.02)
    torch.testing.assert_close(torch.compile(fn, fullgraph=True)(x, periods), fn(x, periods))


def _one_euro_args(**over):
    args = {"x": torch.randn(2, 8, 3), "min_cutoff": 1.0, "beta": 0.0, "d_cutoff": 1.0, "rate": 30.0,
            "periods": None, "state": None, "raw_derivative": False}
    args.update(over)
    return args


BAD = [
    ("x 2-D", _one_euro_args(x=torch.randn(8, 3)),
     r"x must be a 3-D tensor \[B, T, C\], got a 2-D tensor of shape \[8, 3\]"),
    ("integer x", _one_euro_args(x=torch.ones(2, 8, 3, dtype=torch.int64)), r"x must be float32 or float64 on CPU, got int64"),
    ("zero rate", _one_euro_args(rate=0.0), r"rate must be positive and finite, got 0"),
    ("negative min_cutoff", _one_euro_args(min_cutoff=-1.0), r"min_cutoff must be positive and finite, got -1"),
    ("nan d_cutoff", _one_euro_args(d_cutoff=float("nan")), r"d_cutoff must be positive and finite, got nan"),
    ("negative beta", _one_euro_args(beta=-0.5), r"beta must be finite and >= 0, got -0.5"),
    ("periods shape", _one_euro_args(periods=torch.ones(2, 7)),
     r"periods must have shape \[2, 8\] \(\[B, T\] of x\), got \[2, 7\]"),
    ("periods dtype", _one_euro_args(periods=torch.ones(2, 8, dtype=torch.float64)),
     r"periods must have the same dtype as x \(float32\), got float64"),
    ("state channels", _one_euro_args(state=torch.zeros(2, 3, 4)),
     r"state must have shape \[2, 3, 3\] \(\[B, 3, C\] of x\), got \[2, 3, 4\]"),
    ("state dtype", _one_euro_args(state=torch.zeros(2, 3, 3, dtype=torch.float64)),
     r"state must have the same dtype as x \(float32\), got float64"),
]


def _call_one_euro(x, min_cutoff, beta, d_cutoff, rate, periods, state, raw_derivative):
    return one_euro_filter(x, min_cutoff, beta, d_cutoff, rate=rate, periods=periods, state=state,
                           raw_derivative=raw_derivative)


@pytest.mark.parametrize("name,args,match", BAD, ids=[b[0] for b in BAD])
def test_bad_inputs_raise(name, args, match):
    with pytest.raises(RuntimeError, match=r"^one_euro_filter: " + match):
        _call_one_euro(**args)


@pytest.mark.parametrize("name,args,match", BAD, ids=[b[0] for b in BAD])
def test_fake_kernel_refuses_bad_inputs(name, args, match):
    assert_fake_refuses_like_native(_call_one_euro, **args)


EMA_BAD = [
    (torch.randn(4, 3), 0.5, None, r"x must be a 3-D tensor \[B, T, C\]"),
    (torch.randn(1, 4, 3), 0.0, None, r"alpha must be in \(0, 1\], got 0"),
    (torch.randn(1, 4, 3), 1.5, None, r"alpha must be in \(0, 1\], got 1.5"),
    (torch.randn(1, 4, 3), 0.5, torch.zeros(1, 4), r"state must have shape \[1, 3\] \(\[B, C\] of x\), got \[1, 4\]"),
    (torch.randn(1, 4, 3).half(), 0.5, None, r"x must be float32 or float64 on CPU, got float16"),
]


@pytest.mark.parametrize("x,alpha,state,match", EMA_BAD)
def test_exponential_smoothing_bad_inputs(x, alpha, state, match):
    with pytest.raises(RuntimeError, match=r"^exponential_smoothing: " + match):
        exponential_smoothing(x, alpha, state=state)
    assert_fake_refuses_like_native(lambda a, s: exponential_smoothing(a, alpha, state=s), x, state)


def test_bad_input_mixed_devices():
    with pytest.raises(RuntimeError, match=r"one_euro_filter: periods must be on the same device as x \(cpu\), got meta"):
        one_euro_filter(torch.randn(1, 4, 2), periods=torch.ones(1, 4, device="meta"))


@pytest.mark.parametrize("bad", [0.0, -0.02, float("nan"), float("inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_euro_bad_period_values(bad, dtype):
    x = torch.randn(2, 6, 3, dtype=dtype)
    periods = torch.full((2, 6), 0.02, dtype=dtype)
    periods[1, 4] = bad
    with pytest.raises(RuntimeError, match=r"one_euro_filter: periods must be positive and finite \(seconds between "
                                           r"frames; periods\[:, 0\] is unused without a state\), got .* at "
                                           r"periods\[1, 4\]"):
        one_euro_filter(x, periods=periods)
    with pytest.raises(RuntimeError, match=r"at periods\[0, 4\]"):  # an expanded [T] row: stride 0 over B
        one_euro_filter(x, periods=periods[1].expand(2, 6))
    # the first column is read only when a state continues a stream
    first = torch.full((2, 6), 0.02, dtype=dtype)
    first[0, 0] = bad
    y, state = one_euro_filter(x, periods=first)
    assert bool(torch.isfinite(y).all())
    with pytest.raises(RuntimeError, match=r"at periods\[0, 0\]"):
        one_euro_filter(x, periods=first, state=state)


def test_autocast_cpu():
    x = noisy(1, 12, 3, torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, _ = one_euro_filter(x, 1.0, 0.1, 1.0)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, one_euro_filter(x.float(), 1.0, 0.1, 1.0)[0])


def test_build_info_lists_kernel():
    info = facekernels.build_info()
    assert info["cpu_kernels"]["temporal_filter"] == info["cpu_capability"]


def test_cpu_capabilities_agree(tmp_path):
    script = (
        "import sys, torch, facekernels\n"
        "torch.manual_seed(0)\n"
        "x = torch.randn(3, 50, 37); p = 0.01 + 0.02 * torch.rand(3, 50)\n"
        "outs = [*facekernels.one_euro_filter(x, 1.0, 0.3, 1.0, periods=p)]\n"
        "outs += [*facekernels.one_euro_filter(x.double(), 1.0, 0.3, 1.0, raw_derivative=True)]\n"
        "outs += [*facekernels.exponential_smoothing(x, 0.3)]\n"
        "torch.save((facekernels.build_info()['cpu_kernels']['temporal_filter'], outs), sys.argv[1])\n"
    )
    results = run_at_each_cpu_capability(script, tmp_path)
    base = results["default"][1]
    for level, (used, outs) in results.items():
        for a, b in zip(outs, base):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=f"{level} ({used}) differs from default")


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("shape", [(1, 64, 52), (1, 6000, 52), (5, 1500, 40)])  # serial; channel and batch splits
def test_thread_count_does_not_change_results(threads, shape):
    x = noisy(*shape, dtype=torch.float32)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        base, base_state = one_euro_filter(x, 1.0, 0.3, 1.0)
        base_ema, _ = exponential_smoothing(x, 0.2)
        torch.set_num_threads(threads)
        y, state = one_euro_filter(x, 1.0, 0.3, 1.0)
        ema, _ = exponential_smoothing(x, 0.2)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(y, base) and torch.equal(state, base_state) and torch.equal(ema, base_ema)
