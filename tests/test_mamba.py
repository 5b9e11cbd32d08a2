"""facekernels.nn.Mamba: mamba-ssm's parameter names, shapes and initialisation, a strict load of a
state_dict written with those names, and the forward and every parameter's gradient against a float64
re-implementation of mamba-ssm's (non-fused) forward with a step-by-step scan."""

import math

import pytest
import torch
import torch.nn.functional as F
from facekernels.nn import Mamba
from helpers import assert_compiled_matches_eager


def expected_shapes(d_model, d_state=16, d_conv=4, expand=2, dt_rank=None, conv_bias=True, bias=False):
    """mamba_ssm.modules.mamba_simple.Mamba's state_dict: names and shapes."""
    inner = expand * d_model
    rank = dt_rank or math.ceil(d_model / 16)
    shapes = {
        "A_log": (inner, d_state),
        "D": (inner,),
        "in_proj.weight": (2 * inner, d_model),
        "conv1d.weight": (inner, 1, d_conv),
        "conv1d.bias": (inner,),
        "x_proj.weight": (rank + 2 * d_state, inner),
        "dt_proj.weight": (inner, rank),
        "dt_proj.bias": (inner,),
        "out_proj.weight": (d_model, inner),
    }
    if not conv_bias:
        del shapes["conv1d.bias"]
    if bias:
        shapes["in_proj.bias"] = (2 * inner,)
        shapes["out_proj.bias"] = (d_model,)
    return shapes


def reference(params, h, d_state, d_conv, dt_rank):
    """mamba-ssm's forward (its path without the fused kernels) in float64, from the parameters by name,
    with the scan written one step at a time."""
    p = {k: v.double() for k, v in params.items()}
    h = h.double()
    length = h.shape[1]
    xz = h @ p["in_proj.weight"].t()
    if "in_proj.bias" in p:
        xz = xz + p["in_proj.bias"]
    x, z = xz.transpose(1, 2).chunk(2, dim=1)
    inner = x.shape[1]
    x = F.conv1d(x, p["conv1d.weight"], p.get("conv1d.bias"), padding=d_conv - 1, groups=inner)[..., :length]
    x = x * torch.sigmoid(x)
    x_dbl = x.transpose(1, 2) @ p["x_proj.weight"].t()
    dt, B, C = x_dbl.split([dt_rank, d_state, d_state], dim=-1)
    dt = F.softplus(dt @ p["dt_proj.weight"].t() + p["dt_proj.bias"])  # [B, L, inner]
    A = -torch.exp(p["A_log"])
    state = torch.zeros(h.shape[0], inner, d_state, dtype=torch.float64)
    ys = []
    for t in range(length):
        step = dt[:, t, :, None]
        state = torch.exp(step * A) * state + step * B[:, t, None, :] * x[:, :, t, None]
        ys.append((state * C[:, t, None, :]).sum(-1))
    y = torch.stack(ys, 1) + x.transpose(1, 2) * p["D"]
    y = y * F.silu(z.transpose(1, 2))
    out = y @ p["out_proj.weight"].t()
    if "out_proj.bias" in p:
        out = out + p["out_proj.bias"]
    return out


@pytest.mark.parametrize("kwargs", [{}, {"d_state": 8, "d_conv": 3, "expand": 3, "dt_rank": 5},
                                    {"conv_bias": False, "bias": True}], ids=["default", "sizes", "biases"])
def test_state_dict_names_and_shapes_are_mamba_ssm(kwargs):
    m = Mamba(24, **kwargs)
    got = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert got == expected_shapes(24, **kwargs)
    assert m.A_log.dtype == torch.float32 and m.D.dtype == torch.float32


def test_strict_load_of_a_mamba_ssm_state_dict():
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(s, generator=g) for k, s in expected_shapes(32, d_state=16).items()}
    m = Mamba(32)
    m.load_state_dict(state, strict=True)
    for k, v in m.state_dict().items():
        assert torch.equal(v, state[k]), k
    with pytest.raises(RuntimeError, match="Missing key"):
        Mamba(32).load_state_dict({k: v for k, v in state.items() if k != "A_log"}, strict=True)


def test_initialisation_is_mamba_ssm():
    torch.manual_seed(0)
    m = Mamba(64, d_state=16, dt_min=0.001, dt_max=0.1)
    inner, rank = 128, 4
    torch.testing.assert_close(m.A_log, torch.log(torch.arange(1, 17, dtype=torch.float32)).repeat(inner, 1))
    torch.testing.assert_close(m.D, torch.ones(inner))
    dt = F.softplus(m.dt_proj.bias.detach())
    assert dt.min() >= 0.001 * (1 - 1e-4) and dt.max() <= 0.1 * (1 + 1e-4)
    assert m.dt_proj.weight.abs().max() <= rank**-0.5
    assert m.dt_proj.bias._no_reinit and m.A_log._no_weight_decay and m.D._no_weight_decay
    const = Mamba(64, dt_init="constant", dt_scale=2.0)
    torch.testing.assert_close(const.dt_proj.weight, torch.full((inner, rank), 2.0 * rank**-0.5))
    with pytest.raises(ValueError, match="dt_init"):
        Mamba(8, dt_init="zeros")


@pytest.mark.parametrize("kwargs,length", [({}, 70), ({"d_state": 8, "d_conv": 3, "expand": 1}, 1),
                                           ({"bias": True, "conv_bias": False, "d_state": 5}, 33)],
                         ids=["default", "L1", "biases"])
def test_forward_and_gradients_match_float64_reimplementation(kwargs, length):
    torch.manual_seed(1)
    m = Mamba(20, **kwargs).double()
    with torch.no_grad():  # move the parameters off their structured initial values
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    h = torch.randn(2, length, 20, dtype=torch.float64, requires_grad=True)
    out = m(h)
    params = {k: v.detach().clone().requires_grad_() for k, v in m.named_parameters()}
    h_ref = h.detach().clone().requires_grad_()
    ref = reference(params, h_ref, m.d_state, m.d_conv, m.dt_rank)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-9)
    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad)
    torch.testing.assert_close(h.grad, h_ref.grad, atol=1e-10, rtol=1e-9)
    for name, p in m.named_parameters():
        torch.testing.assert_close(p.grad, params[name].grad, atol=1e-9, rtol=1e-8, msg=lambda s, n=name: f"{n}: {s}")


def test_float32_forward_matches_reference():
    torch.manual_seed(2)
    m = Mamba(32, d_state=16)
    h = torch.randn(3, 50, 32)
    params = {k: v.detach() for k, v in m.named_parameters()}
    torch.testing.assert_close(m(h), reference(params, h, 16, 4, m.dt_rank).float(), atol=1e-5, rtol=1e-4)


def test_torch_compile_fullgraph():
    torch.manual_seed(3)
    m = Mamba(16, d_state=4)
    h = torch.randn(2, 12, 16, requires_grad=True)
    assert_compiled_matches_eager(lambda x: m(x), [h])
