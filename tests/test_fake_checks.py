"""The fake (meta) kernels refuse what the native kernels refuse, so traced and compiled calls fail like
eager ones instead of returning a plausible shape."""

import facekernels  # noqa: F401  (registers the ops)
import pytest
import torch

ops = torch.ops.facekernels


def meta(*shape, dtype=torch.float32):
    return torch.empty(*shape, device="meta", dtype=dtype)




def test_diff_attention_fake_checks():
    q, k, v, lam = meta(1, 2, 3, 4), meta(1, 2, 5, 4), meta(1, 2, 5, 8), meta(2)
    with pytest.raises(RuntimeError, match="dtype"):
        ops._diff_attention_forward(q, k, q, k, v.to(torch.float64), lam)
    with pytest.raises(RuntimeError, match="must agree"):
        ops._diff_attention_forward(q, k, q, meta(1, 2, 6, 4), v, lam)
    out, lse1, lse2 = ops._diff_attention_forward(q, k, q, k, v, lam)
    assert lse2.shape == lse1.shape
    assert out.shape == (1, 2, 3, 8) and lse1.shape == (1, 2, 3)
