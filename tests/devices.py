"""Devices and tolerances shared by every family's tests (tests/test_<family>.py).

A family's tests are written once and parametrised over the devices present: CPU always, CUDA marked
`cuda` (skipped without a GPU, so the test count does not depend on the machine). Each device computes
in its own dtypes: float32/float64 on CPU, float16/bfloat16/float32 on CUDA (float32 accumulation).

Tolerances compare an op's output in `dtype` with a float64 reference computed from the same (already
rounded) inputs, so what is left is the op's accumulation in its compute type and the final rounding to
`dtype`: rtol about a few units in the last place of the dtype, atol for results that cancel to near
zero. A family whose sums are longer or whose results are ill-conditioned widens them by `scale` (say
why where it does), or holds its own rows in FAMILY_TOLERANCES (keyed by (family or op, device, dtype),
each with its reason): this file is the one tolerance table of the family tests.
"""

from __future__ import annotations

import pytest
import torch

CUDA_AVAILABLE = torch.cuda.is_available()

# (device, dtype) -> tolerance of an output against the float64 reference: the defaults.
TOLERANCES: dict[tuple[str, torch.dtype], dict[str, float]] = {
    ("cpu", torch.float64): {"atol": 1e-10, "rtol": 1e-9},
    ("cpu", torch.float32): {"atol": 1e-5, "rtol": 1e-5},
    ("cuda", torch.float32): {"atol": 1e-5, "rtol": 1e-5},
    ("cuda", torch.float16): {"atol": 1e-3, "rtol": 2e-3},
    ("cuda", torch.bfloat16): {"atol": 8e-3, "rtol": 1.6e-2},
}

# (family or op, device, dtype) -> tolerance, where a family's tests hold one other than the default: the
# values each family's tests have always used (never looser than before the tables were merged here). How
# a family applies them (which of atol/rtol a reduction or the size of the values widens) is said in its
# test file; the reason for the values is said here.
FAMILY_TOLERANCES: dict[tuple[str, str, torch.dtype], dict[str, float]] = {
    # alignment_energy: both devices compute in float32/float64 only (CUDA float64 has no default row), and
    # these tests always held this tighter table than the defaults, the same on both devices.
    ("alignment_energy", "cpu", torch.float32): {"atol": 1e-6, "rtol": 1e-5},
    ("alignment_energy", "cpu", torch.float64): {"atol": 1e-12, "rtol": 1e-10},
    ("alignment_energy", "cuda", torch.float32): {"atol": 1e-6, "rtol": 1e-5},
    ("alignment_energy", "cuda", torch.float64): {"atol": 1e-12, "rtol": 1e-10},
    # circular_conv: tighter than the defaults where these tests always held tighter ones (CPU float64; CUDA
    # float32 atol). On CUDA the inputs are rounded to the dtype before the float64 reference sees them, so
    # the error left is the float32 accumulation and the final rounding to the dtype: rtol about one unit in
    # the last place of the dtype, atol for results that cancel to near zero (scaled by the size of the
    # sum's terms). CPU float32 and CUDA float16/bfloat16 are the defaults.
    ("circular_conv", "cpu", torch.float64): {"atol": 1e-12, "rtol": 1e-12},
    ("circular_conv", "cuda", torch.float32): {"atol": 2e-6, "rtol": 1e-5},
    # diff_attention: float32 is 10x the default on both devices (each output is a difference of two
    # softmax-weighted sums over S keys, and the gradients go through both maps and the row sums d_i), CPU
    # float64 a tenth of it (the reference's own arithmetic in the same dtype), the CUDA half dtypes wider
    # (the inputs and outputs are rounded to them, the float32 arithmetic in between is exact by
    # comparison).
    ("diff_attention", "cpu", torch.float32): {"atol": 1e-4, "rtol": 1e-4},
    ("diff_attention", "cpu", torch.float64): {"atol": 1e-11, "rtol": 1e-10},
    ("diff_attention", "cuda", torch.float32): {"atol": 1e-4, "rtol": 1e-4},
    ("diff_attention", "cuda", torch.float16): {"atol": 5e-3, "rtol": 5e-3},
    ("diff_attention", "cuda", torch.bfloat16): {"atol": 4e-2, "rtol": 4e-2},
    # cosine_topk (edge_conv family), its values: float64 recomputations rounded to the dtype on every
    # device, so atol only (rtol 0) and tighter than the defaults (which bound a float32 accumulation).
    ("cosine_topk", "cpu", torch.float32): {"atol": 1e-6, "rtol": 0.0},
    ("cosine_topk", "cpu", torch.float64): {"atol": 1e-13, "rtol": 0.0},
    ("cosine_topk", "cuda", torch.float32): {"atol": 1e-6, "rtol": 0.0},
    ("cosine_topk", "cuda", torch.float16): {"atol": 1e-3, "rtol": 0.0},
    ("cosine_topk", "cuda", torch.bfloat16): {"atol": 8e-3, "rtol": 0.0},
    # edge_conv_max (edge_conv family): each output is the max over k neighbours of a ReLU'd sum of two
    # GEMMs (C terms each). CPU float32 10x the default, float64 1e-10. CUDA computes in the storage dtype
    # with float32 accumulation, against the float64 reference on the same rounded inputs; the half dtypes
    # are wide because their inputs are rounded and a near-tie in the max may pick another neighbour.
    ("edge_conv", "cpu", torch.float32): {"atol": 1e-4, "rtol": 1e-4},
    ("edge_conv", "cpu", torch.float64): {"atol": 1e-10, "rtol": 1e-10},
    ("edge_conv", "cuda", torch.float32): {"atol": 1e-4, "rtol": 1e-4},
    ("edge_conv", "cuda", torch.float16): {"atol": 2e-2, "rtol": 2e-2},
    ("edge_conv", "cuda", torch.bfloat16): {"atol": 1e-1, "rtol": 1e-1},
    # local_stats: CPU float32: the window sums are running and prefix sums (a cost independent of the
    # window), so their rounding is relative to the values around a window rather than inside it; a few
    # pixels whose window is nearly flat amplify it (out divides by the local deviation); float64 the same
    # sums in float64. CUDA: inputs are rounded to the dtype before the float64 reference sees them, so what
    # is left is the float32 arithmetic and the final rounding to the dtype: rtol about one unit in the last
    # place of the dtype, atol (times the largest reference value) for results that cancel to near zero;
    # float32's rtol is the 1e-4 these tests always used, float16/bfloat16 are the defaults.
    ("local_stats", "cpu", torch.float32): {"atol": 1e-4, "rtol": 1e-4},
    ("local_stats", "cpu", torch.float64): {"atol": 1e-11, "rtol": 1e-11},
    ("local_stats", "cuda", torch.float32): {"atol": 1e-5, "rtol": 1e-4},
    # st_graph_conv on CPU: two chained contractions (over Cin, then over K x V) with BLAS-sized GEMMs at
    # the workload's sizes: float32 20x the default, float64 1e-10.
    ("st_graph_conv", "cpu", torch.float32): {"atol": 2e-4, "rtol": 2e-4},
    ("st_graph_conv", "cpu", torch.float64): {"atol": 1e-10, "rtol": 1e-10},
    # st_graph_conv on CUDA: a bound on the largest error relative to the largest reference value (atol
    # only, rtol unused): float16/bfloat16 inputs and outputs are rounded once each, everything in between
    # is float32.
    ("st_graph_conv", "cuda", torch.float32): {"atol": 2e-5, "rtol": 0.0},
    ("st_graph_conv", "cuda", torch.float16): {"atol": 4e-3, "rtol": 0.0},
    ("st_graph_conv", "cuda", torch.bfloat16): {"atol": 3e-2, "rtol": 0.0},
}

DTYPES: dict[str, list[torch.dtype]] = {
    "cpu": [torch.float32, torch.float64],
    "cuda": [torch.float32, torch.float16, torch.bfloat16],
}


def tolerance(device: str | torch.device, dtype: torch.dtype, family: str | None = None, scale: float = 1.0,
              *, atol_scale: float = 1.0) -> dict[str, float]:
    """atol/rtol for (device, dtype): the family's entry where FAMILY_TOLERANCES has one, else the default.
    `scale` multiplies both; `atol_scale` multiplies atol only (for rules that widen atol by the size of
    the values or of the sums' terms but keep rtol)."""
    kind = torch.device(device).type
    tol = FAMILY_TOLERANCES.get((family, kind, dtype)) if family is not None else None
    if tol is None:
        tol = TOLERANCES[(kind, dtype)]
    return {"atol": tol["atol"] * scale * atol_scale, "rtol": tol["rtol"] * scale}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, scale: float = 1.0, *, family: str | None = None,
                 atol_scale: float = 1.0, **kwargs) -> None:
    """`actual` (an op's output in its dtype, on its device) against `expected` (the float64 reference,
    on any device) with tolerance(actual's device, actual's dtype, family, scale, atol_scale=atol_scale)."""
    tol = tolerance(actual.device, actual.dtype, family, scale, atol_scale=atol_scale)
    torch.testing.assert_close(actual.detach().double().cpu(), expected.detach().double().cpu(), **tol, **kwargs)


def _device_param(device: str):
    if device == "cuda":
        return pytest.param("cuda", marks=[pytest.mark.cuda], id="cuda")
    return pytest.param(device, id=device)


# Parametrise with these: @pytest.mark.parametrize("device", DEVICES) or ("device, dtype", DEVICE_DTYPES).
DEVICES = [_device_param("cpu"), _device_param("cuda")]
DEVICE_DTYPES = [
    pytest.param(device, dtype, marks=[pytest.mark.cuda] if device == "cuda" else [],
                 id=f"{device}-{str(dtype).removeprefix('torch.')}")
    for device in ("cpu", "cuda") for dtype in DTYPES[device]
]
# Only the float dtypes both devices compute in (float32), for tests that need no per-dtype tolerance.
EVERY_DEVICE_FLOAT32 = [
    pytest.param(device, torch.float32, marks=[pytest.mark.cuda] if device == "cuda" else [], id=f"{device}-float32")
    for device in ("cpu", "cuda")
]
