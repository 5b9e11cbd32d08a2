"""ops/_registration.py: the autograd set-up reads dropped trailing defaults from each op's schema."""

import pytest
import torch
from facekernels.ops._registration import with_defaults

import facekernels  # noqa: F401  (registers the ops)


def test_with_defaults_fills_the_schema_defaults():
    x = torch.ones(1)
    assert with_defaults("correlation", (x, x)) == (x, x, 21, 2, 1)
    assert with_defaults("correlation", (x, x, 5)) == (x, x, 5, 2, 1)
    assert with_defaults("local_stat_transform", (x, x, 3, 0.5)) == (x, x, 3, 0.5)
    assert with_defaults("_diff_attention_forward", (x,) * 6)[6:] == (False, None)
    with pytest.raises(RuntimeError, match="facekernels::correlation: autograd got no value for x2"):
        with_defaults("correlation", (x,))


def _r(*shape):
    return torch.randn(*shape, dtype=torch.float64, requires_grad=True)


# Each raw op called with its required arguments only (the defaults dropped as the dispatcher drops them),
# differentiated; the gradient must equal that of the call with every argument spelled out.
CASES = {
    "correlation": (lambda: (_r(1, 2, 5, 6), _r(1, 2, 5, 6)), (21, 2, 1)),
    "circular_conv": (lambda: (_r(1, 3, 4, 5), _r(3, 4)), (None, 2)),
    "local_stat_transform": (lambda: (_r(1, 2, 9, 9), _r(1, 2, 9, 9)), (7, 1e-5)),
    "local_mean_var": (lambda: (_r(1, 2, 9, 9),), (7,)),
    "st_graph_conv": (lambda: (_r(2, 3, 4, 5), _r(2, 6, 3), torch.rand(2, 5, 5, dtype=torch.float64)), (None,)),
    "triplet_gate": (lambda: (_r(2, 3, 5, 6), _r(2, 5, 6)), (None, None, None)),
    "selective_scan": (lambda: (_r(2, 4, 6), _r(2, 4, 6), _r(4, 3), _r(2, 3, 6), _r(2, 3, 6)),
                       (None, None, None, False)),
}


@pytest.mark.parametrize("op", sorted(CASES))
def test_dropped_defaults_differentiate_like_spelled_out(op):
    make, defaults = CASES[op]
    fn = getattr(torch.ops.facekernels, op).default
    torch.manual_seed(0)
    short = make()
    long = [t.detach().clone().requires_grad_(t.requires_grad) for t in short]
    out_short, out_long = fn(*short), fn(*long, *defaults)
    first = (lambda o: o[0] if isinstance(o, (tuple, list)) else o)
    first(out_short).square().sum().backward()
    first(out_long).square().sum().backward()
    for a, b in zip(short, long):
        if a.requires_grad:
            assert a.grad is not None
            torch.testing.assert_close(a.grad, b.grad)
