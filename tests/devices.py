"""Devices and tolerances shared by every family's tests (tests/test_<family>.py).

A family's tests are written once and parametrised over the devices present: CPU always, CUDA marked
`cuda` (skipped without a GPU, so the test count does not depend on the machine). Each device computes
in its own dtypes: float32/float64 on CPU, float16/bfloat16/float32 on CUDA (float32 accumulation).

Tolerances compare an op's output in `dtype` with a float64 reference computed from the same (already
rounded) inputs, so what is left is the op's accumulation in its compute type and the final rounding to
`dtype`: rtol about a few units in the last place of the dtype, atol for results that cancel to near
zero. A family whose sums are longer or whose results are ill-conditioned widens them by `scale` (say
why where it does); nothing here is tuned to a kernel.
"""

from __future__ import annotations

import pytest
import torch

CUDA_AVAILABLE = torch.cuda.is_available()

# (device, dtype) -> tolerance of an output against the float64 reference.
TOLERANCES: dict[tuple[str, torch.dtype], dict[str, float]] = {
    ("cpu", torch.float64): {"atol": 1e-10, "rtol": 1e-9},
    ("cpu", torch.float32): {"atol": 1e-5, "rtol": 1e-5},
    ("cuda", torch.float32): {"atol": 1e-5, "rtol": 1e-5},
    ("cuda", torch.float16): {"atol": 1e-3, "rtol": 2e-3},
    ("cuda", torch.bfloat16): {"atol": 8e-3, "rtol": 1.6e-2},
}

DTYPES: dict[str, list[torch.dtype]] = {
    "cpu": [torch.float32, torch.float64],
    "cuda": [torch.float32, torch.float16, torch.bfloat16],
}


def tolerance(device: str | torch.device, dtype: torch.dtype, scale: float = 1.0) -> dict[str, float]:
    """The table's atol/rtol for (device, dtype), both multiplied by `scale`."""
    kind = torch.device(device).type
    tol = TOLERANCES[(kind, dtype)]
    return {"atol": tol["atol"] * scale, "rtol": tol["rtol"] * scale}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, scale: float = 1.0, **kwargs) -> None:
    """`actual` (an op's output in its dtype, on its device) against `expected` (the float64 reference,
    on any device) with the table's tolerance for actual's (device, dtype) times `scale`."""
    tol = tolerance(actual.device, actual.dtype, scale)
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
