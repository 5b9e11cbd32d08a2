"""MOL's losses against their formulas written as the released train.py loops them."""

import math

import pytest
import torch
from facekernels.nn import flow_epe, landmark_nme_loss


def released_pupil_distance(land):
    """utils/pupil_distance.py: the eye centres as means of points 36-41 and 42-47, a Python float."""
    left = [sum(float(land[2 * k + a]) for k in range(36, 42)) / 6.0 for a in (0, 1)]
    right = [sum(float(land[2 * k + a]) for k in range(42, 48)) / 6.0 for a in (0, 1)]
    return math.sqrt((right[0] - left[0]) ** 2 + (right[1] - left[1]) ** 2)


def released_landmark_loss(pred, target):
    """train.py: per frame and per sample, L1 (sum) / pupil distance; the sum over both / (B * 68)."""
    total = torch.zeros((), dtype=torch.float64)
    for f in range(pred.shape[2]):
        for b in range(pred.shape[0]):
            l1 = (target[b, :, f].double() - pred[b, :, f].double()).abs().sum()
            total = total + l1 / released_pupil_distance(target[b, :, f])
    return total / (pred.shape[0] * 68)


def make_landmarks(b, frames, g):
    base = torch.rand(b, 68, 2, 1, generator=g) * 100 + 10
    return (base + torch.randn(b, 68, 2, frames, generator=g)).flatten(1, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_landmark_loss_matches_the_released_loops(dtype):
    g = torch.Generator().manual_seed(0)
    target = make_landmarks(3, 7, g).to(dtype)
    pred = (target + torch.randn(target.shape, generator=g, dtype=dtype) * 2).requires_grad_()
    loss = landmark_nme_loss(pred, target)
    assert loss.dim() == 0 and loss.dtype == dtype
    torch.testing.assert_close(loss.double(), released_landmark_loss(pred.detach(), target),
                               rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=0)
    loss.backward()
    # d/d pred of |pred - target| / ipd summed, / (B * 68): the sign over the pupil distance.
    ipd = torch.tensor([[released_pupil_distance(target[b, :, f]) for f in range(7)] for b in range(3)], dtype=dtype)
    expected = torch.sign(pred.detach() - target) / ipd.unsqueeze(1) / (3 * 68)
    torch.testing.assert_close(pred.grad, expected)


def test_landmark_loss_other_eyes_and_shapes():
    g = torch.Generator().manual_seed(1)
    target = torch.randn(2, 10, generator=g) * 5  # 5 points, one frame
    pred = torch.randn(2, 10, generator=g)
    xy = target.view(2, 5, 2)
    ipd = (xy[:, [3, 4]].mean(1) - xy[:, [0]].mean(1)).norm(dim=1)
    expected = ((pred - target).abs().sum(1) / ipd).sum() / (2 * 5)
    torch.testing.assert_close(landmark_nme_loss(pred, target, left_eye=[0], right_eye=[3, 4]), expected)


def test_landmark_loss_bad_inputs():
    with pytest.raises(ValueError, match="landmark_nme_loss: pred and target must have the same shape"):
        landmark_nme_loss(torch.randn(2, 136, 7), torch.randn(2, 136, 6))
    with pytest.raises(ValueError, match="even coordinate axis"):
        landmark_nme_loss(torch.randn(2, 135), torch.randn(2, 135))
    with pytest.raises(ValueError, match=r"left_eye must hold point indices in \[0, 5\)"):
        landmark_nme_loss(torch.randn(2, 10), torch.randn(2, 10))
    with pytest.raises(TypeError, match="floating point"):
        landmark_nme_loss(torch.ones(2, 136, dtype=torch.long), torch.ones(2, 136, dtype=torch.long))


def test_flow_epe_matches_formula():
    g = torch.Generator().manual_seed(2)
    pred = torch.randn(2, 2, 5, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randn(2, 2, 5, 6, 7, generator=g, dtype=torch.float64)
    epe = flow_epe(pred, target)
    d = pred.detach() - target
    expected = sum(math.sqrt(d[b, 0, i, j, k] ** 2 + d[b, 1, i, j, k] ** 2)
                   for b in range(2) for i in range(5) for j in range(6) for k in range(7)) / (2 * 5 * 6 * 7)
    torch.testing.assert_close(epe.item(), float(expected))
    assert torch.autograd.gradcheck(lambda p: flow_epe(p, target), (pred,))
    with pytest.raises(ValueError, match=r"flow_epe: pred must be \[B, 2, ...\]"):
        flow_epe(torch.randn(2, 3, 4), torch.randn(2, 3, 4))


def test_losses_stay_on_the_meta_device():
    """No host round trip: the losses trace on meta tensors (as they would stay on a GPU)."""
    p = torch.randn(2, 136, 7, device="meta")
    assert landmark_nme_loss(p, torch.randn(2, 136, 7, device="meta")).device.type == "meta"
    assert flow_epe(torch.randn(2, 2, 4, 4, device="meta"), torch.randn(2, 2, 4, 4, device="meta")).device.type == "meta"
