"""facekernels.animation: the Gram-matrix losses against explicitly built vertices in float64 (with and
without correctives, regions, translation invariance), rig loading round trips, the streaming filters, the
adapter and emotion-transfer models, and the bad inputs."""

import math

import numpy as np
import pytest
import torch
from devices import DEVICES
from facekernels.animation import (
    ARKIT_52,
    ExponentialSmoother,
    OneEuroFilter,
    Rig,
    range_penalty,
    temporal_smoothness,
    toy_rig,
    vertex_mse,
)
from facekernels.animation.rig import read_obj, write_obj
from facekernels.models import BlendshapeAdapter, EmotionTransfer, adapter_loss

F64 = torch.float64


def explicit_vertices(rig, w):
    """neutral + sum_k w_k delta_k + sum_p w_i w_j corrective_p, one shape at a time (no Gram, no einsum)."""
    v = rig.neutral.to(w.dtype).expand(*w.shape[:-1], -1, -1).clone()
    for k in range(rig.num_shapes):
        v = v + w[..., k, None, None] * rig.deltas[k].to(w.dtype)
    for p, (i, j) in enumerate(rig.corrective_pairs.tolist()):
        v = v + (w[..., i] * w[..., j])[..., None, None] * rig.corrective_deltas[p].to(w.dtype)
    return v


def explicit_mse(diff, mask=None, centred=False):
    """Per-frame mean over vertices (mask-weighted) and xyz of diff^2 [..., V, 3]."""
    m = torch.ones(diff.shape[-2], dtype=diff.dtype) if mask is None else mask.to(diff.dtype)
    if centred:
        diff = diff - (m[:, None] * diff).sum(-2, keepdim=True) / m.sum()
    return (m[:, None] * diff**2).sum((-1, -2)) / (3 * m.sum())


def small_rig(correctives, dtype=F64, k=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = 23
    neutral = torch.randn(v, 3, generator=g, dtype=dtype)
    deltas = torch.randn(k, v, 3, generator=g, dtype=dtype)
    corr = None
    if correctives:
        corr = (torch.tensor([[0, 1], [2, 5], [3, 3]]), torch.randn(3, v, 3, generator=g, dtype=dtype))
    regions = {"front": torch.arange(v) < 10, "soft": torch.rand(v, generator=g, dtype=dtype)}
    return Rig(neutral, deltas, correctives=corr, regions=regions, lower=-1.0, upper=2.0)


def weights(*shape, seed=1):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64) * 1.4 - 0.2


@pytest.mark.parametrize("correctives", [False, True])
@pytest.mark.parametrize("region", [None, "front", "soft"])
@pytest.mark.parametrize("translation_invariant", [False, True])
def test_vertex_mse_equals_vertex_space(correctives, region, translation_invariant):
    rig = small_rig(correctives)
    w1, w2 = weights(4, 6, 7), weights(4, 6, 7, seed=2)
    mask = None if region is None else rig.region_mask(region)
    per_frame = explicit_mse(explicit_vertices(rig, w1) - explicit_vertices(rig, w2), mask, translation_invariant)
    kwargs = {"region": region, "translation_invariant": translation_invariant}
    torch.testing.assert_close(rig.vertex_mse(w1, w2, reduction="none", **kwargs), per_frame, rtol=1e-12, atol=0)
    torch.testing.assert_close(rig.vertex_mse(w1, w2, **kwargs), per_frame.mean(), rtol=1e-12, atol=0)
    torch.testing.assert_close(vertex_mse(rig, w1, w2, reduction="sum", **kwargs), per_frame.sum(), rtol=1e-12,
                               atol=0)


def test_translation_invariance_means_something():
    """A pure translation of the difference costs nothing translation-invariantly, and costs in plain MSE."""
    v = 11
    neutral = torch.randn(v, 3, dtype=F64)
    deltas = torch.stack([torch.tensor([0.3, -0.2, 0.5], dtype=F64).expand(v, 3), torch.randn(v, 3, dtype=F64)])
    rig = Rig(neutral, deltas)
    a, b = torch.tensor([[1.0, 0.5]], dtype=F64), torch.tensor([[0.0, 0.5]], dtype=F64)
    assert rig.vertex_mse(a, b, translation_invariant=True) < 1e-28
    torch.testing.assert_close(rig.vertex_mse(a, b), torch.tensor((0.09 + 0.04 + 0.25) / 3, dtype=F64))


@pytest.mark.parametrize("correctives", [False, True])
def test_vertex_mse_gradient_equals_vertex_space(correctives):
    rig = small_rig(correctives)
    w1, w2 = weights(5, 7).requires_grad_(), weights(5, 7, seed=3)
    rig.vertex_mse(w1, w2).backward()
    ours = w1.grad.clone()
    w1.grad = None
    explicit_mse(explicit_vertices(rig, w1) - explicit_vertices(rig, w2)).mean().backward()
    torch.testing.assert_close(ours, w1.grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_losses_gradcheck(reduction):
    rig = small_rig(True)
    w1, w2 = weights(3, 5, 7).requires_grad_(), weights(3, 5, 7, seed=6).requires_grad_()
    torch.autograd.gradcheck(lambda a, b: rig.vertex_mse(a, b, region="soft", reduction=reduction), (w1, w2))
    torch.autograd.gradcheck(lambda a: temporal_smoothness(a, 2, rig, translation_invariant=True), (w1,))


def test_vertex_mse_compiles():
    rig = small_rig(True)
    w1, w2 = weights(4, 7).requires_grad_(), weights(4, 7, seed=7)

    def loss(a, b):
        return (rig.vertex_mse(a, b) + temporal_smoothness(a[None], 1, rig)
                + rig.vertex_mse(a, b, region="soft", translation_invariant=True)
                + rig.region_vertex_mse(a, b).sum())

    torch._dynamo.reset()
    expected = loss(w1, w2)
    (grad,) = torch.autograd.grad(expected, w1)
    out = torch.compile(loss, fullgraph=True)(w1, w2)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(torch.autograd.grad(out, w1)[0], grad)


def test_vertex_mse_float32_relative_error():
    rig = toy_rig(correctives=True)
    w1, w2 = torch.rand(64, 52), torch.rand(64, 52)
    ref = explicit_mse(explicit_vertices(rig, w1.double()) - explicit_vertices(rig, w2.double())).mean()
    assert abs(float(rig.vertex_mse(w1, w2)) / float(ref) - 1) < 1e-5


def test_region_vertex_mse_stacks_regions():
    rig = small_rig(True)
    w1, w2 = weights(3, 4, 7), weights(3, 4, 7, seed=4)
    per = rig.region_vertex_mse(w1, w2, reduction="none")
    assert per.shape == (3, 4, 2)
    for r, name in enumerate(rig.region_names):
        torch.testing.assert_close(per[..., r], rig.vertex_mse(w1, w2, region=name, reduction="none"))
    torch.testing.assert_close(rig.region_vertex_mse(w1, w2), per.reshape(-1, 2).mean(0))


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("correctives", [False, True])
def test_temporal_smoothness_vertex_space(order, correctives):
    rig = small_rig(correctives)
    w = weights(2, 9, 7)
    v = explicit_vertices(rig, w)
    dv = v[:, 1:] - v[:, :-1] if order == 1 else v[:, 2:] - 2 * v[:, 1:-1] + v[:, :-2]
    torch.testing.assert_close(temporal_smoothness(w, order, rig), explicit_mse(dv).mean(), rtol=1e-12, atol=0)
    mask = rig.region_mask("soft")
    torch.testing.assert_close(temporal_smoothness(w, order, rig, region="soft"), explicit_mse(dv, mask).mean(),
                               rtol=1e-12, atol=0)


@pytest.mark.parametrize("order", [1, 2])
def test_temporal_smoothness_weight_space(order):
    w = weights(3, 8, 5)
    d = torch.stack([w[:, t + 1] - w[:, t] for t in range(7)], 1) if order == 1 else \
        torch.stack([w[:, t + 2] - 2 * w[:, t + 1] + w[:, t] for t in range(6)], 1)
    torch.testing.assert_close(temporal_smoothness(w, order), (d**2).mean())


def test_gram_cache_follows_in_place_changes():
    rig = small_rig(False)
    w1, w2 = weights(2, 7), weights(2, 7, seed=5)
    before = rig.vertex_mse(w1, w2)
    assert rig.gram() is rig.gram()  # cached
    with torch.no_grad():
        rig.deltas.mul_(2)
    torch.testing.assert_close(rig.vertex_mse(w1, w2), 4 * before)
    front = rig.vertex_mse(w1, w2, region="front")
    with torch.no_grad():
        rig.region_front.fill_(1.0)  # the region becomes every vertex
    torch.testing.assert_close(rig.vertex_mse(w1, w2, region="front"), rig.vertex_mse(w1, w2))
    assert not torch.allclose(front, rig.vertex_mse(w1, w2))


def explicit_loss(rig, w1, w2, region=None):
    """The float64 mean vertex MSE of explicitly built meshes (mask: a region name or a [V] tensor)."""
    mask = rig.region_mask(region) if isinstance(region, str) else region
    w1, w2 = w1.double(), w2.double()
    return explicit_mse(explicit_vertices(rig, w1) - explicit_vertices(rig, w2), mask).mean()


def test_gram_cache_add_region_replacement():
    rig = small_rig(False)
    w1, w2 = weights(3, 7), weights(3, 7, seed=5)
    rig.vertex_mse(w1, w2, region="front")  # caches the old mask's matrices
    fresh = torch.arange(rig.num_vertices) >= 15  # a new tensor: version counter 0, as the old one
    rig.add_region("front", fresh)
    torch.testing.assert_close(rig.vertex_mse(w1, w2, region="front"), explicit_loss(rig, w1, w2, fresh),
                               rtol=1e-12, atol=0)


def test_gram_cache_replaced_deltas():
    """Replacing the buffer twice: the second new tensor takes the first replaced one's freed id (CPython reuses
    the freed object's memory), which an id-and-version stamp took for the cached tensor."""
    rig = small_rig(True)
    w1, w2 = weights(3, 7), weights(3, 7, seed=5)
    g = torch.Generator().manual_seed(3)
    for _ in range(4):
        rig.vertex_mse(w1, w2)
        placeholder = rig.deltas * 0.5
        source = torch.randn(rig.deltas.shape, generator=g, dtype=F64)
        rig.deltas = placeholder
        rig.deltas = source.clone()
        del placeholder
        torch.testing.assert_close(rig.vertex_mse(w1, w2), explicit_loss(rig, w1, w2), rtol=1e-12, atol=0)


def test_gram_cache_data_swap_and_module_moves():
    rig = small_rig(False)
    w1, w2 = weights(3, 7), weights(3, 7, seed=5)
    rig.vertex_mse(w1, w2)
    rig.deltas.data = rig.deltas * 3  # the same tensor object, new storage
    torch.testing.assert_close(rig.vertex_mse(w1, w2), explicit_loss(rig, w1, w2), rtol=1e-12, atol=0)
    for _ in range(3):  # .to() round trips with an edit in between: new tensors at possibly reused ids
        rig.float()
        with torch.no_grad():
            rig.deltas.mul_(0.5)
        rig.double()
        torch.testing.assert_close(rig.vertex_mse(w1, w2), explicit_loss(rig, w1, w2), rtol=1e-12, atol=0)
    other = small_rig(False, seed=9)
    rig.load_state_dict(other.state_dict())
    torch.testing.assert_close(rig.vertex_mse(w1, w2), explicit_loss(other, w1, w2), rtol=1e-12, atol=0)


def test_vertex_mse_double_backward():
    rig = small_rig(True)
    w1, w2 = weights(3, 5, 7).requires_grad_(), weights(3, 5, 7, seed=6).requires_grad_()
    for fn in (lambda a, b: rig.vertex_mse(a, b, region="soft"), lambda a, b: rig.vertex_mse(a, b, reduction="sum"),
               lambda a, b: temporal_smoothness(a, 2, rig) + temporal_smoothness(b, 1, rig)):
        assert torch.autograd.gradcheck(fn, (w1, w2))
        assert torch.autograd.gradgradcheck(fn, (w1, w2))
    # the Hessian-vector product through create_graph equals the explicit meshes' one
    v = weights(3, 5, 7, seed=8)
    (g,) = torch.autograd.grad(rig.vertex_mse(w1, w2), w1, create_graph=True)
    (hv,) = torch.autograd.grad((g * v).sum(), w1)
    (g_ref,) = torch.autograd.grad(explicit_loss(rig, w1, w2), w1, create_graph=True)
    (hv_ref,) = torch.autograd.grad((g_ref * v).sum(), w1)
    torch.testing.assert_close(hv, hv_ref, rtol=1e-10, atol=1e-14)


def test_vertex_mse_torch_func():
    rig = small_rig(True)
    w1, w2 = weights(4, 7), weights(4, 7, seed=6)
    grad = torch.func.grad(lambda a: rig.vertex_mse(a, w2))(w1)
    a = w1.clone().requires_grad_()
    rig.vertex_mse(a, w2).backward()
    torch.testing.assert_close(grad, a.grad, rtol=1e-12, atol=1e-15)
    # per-sample gradients: vmap over the frames of grad of a one-frame loss
    per_sample = torch.func.vmap(torch.func.grad(lambda x, y: rig.vertex_mse(x, y)))(w1, w2)
    for n in range(4):
        b = w1[n].clone().requires_grad_()
        rig.vertex_mse(b, w2[n]).backward()
        torch.testing.assert_close(per_sample[n], b.grad, rtol=1e-12, atol=1e-15)


def test_vertex_mse_autocast_bfloat16():
    rig = toy_rig(num_shapes=20, resolution=8, correctives=True)
    g = torch.Generator().manual_seed(0)
    x, target = torch.randn(64, 16, generator=g), torch.rand(64, 20, generator=g)
    head = torch.nn.Linear(16, 20)

    def loss():
        return rig.vertex_mse(torch.sigmoid(head(x)), target) + temporal_smoothness(head(x)[None], 1, rig)

    head.zero_grad()
    reference = loss()
    reference.backward()
    grad32 = head.weight.grad.clone()
    head.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = loss()
        assert low.dtype == torch.float32  # like mse_loss under autocast
        low.backward()
    torch.testing.assert_close(low, reference, rtol=3e-2, atol=0)
    torch.testing.assert_close(head.weight.grad, grad32, rtol=5e-2, atol=5e-2 * float(grad32.abs().max()))


def test_vertex_mse_float32_ill_conditioned():
    """Two nearly identical shapes (Gram condition number ~5e9): float32 stays within 1e-3 of float64
    explicit meshes (2e-8 measured; the Gram form d^T G d in float32 was 0.9% off here, and can go negative)."""
    g = torch.Generator().manual_seed(0)
    v = 200
    neutral = torch.randn(v, 3, generator=g, dtype=F64)
    base = torch.randn(v, 3, generator=g, dtype=F64)
    deltas = torch.stack([base, base + 3e-5 * torch.randn(v, 3, generator=g, dtype=F64),
                          torch.randn(v, 3, generator=g, dtype=F64)])
    rig64 = Rig(neutral, deltas)
    rig32 = Rig(neutral.float(), deltas.float())
    # the same mesh reached through either twin shape, plus a small independent difference
    w1 = torch.rand(16, 3, generator=g)
    w2 = w1 + torch.tensor([0.3, -0.3, 0.0])
    w2[:, 2] += 1e-3 * torch.randn(16, generator=g)
    w1, w2 = w1.float(), w2.float()
    exact = explicit_loss(rig64, w1, w2)
    ours = rig32.vertex_mse(w1, w2)
    assert ours.dtype == torch.float32 and float(ours) >= 0
    assert abs(float(ours) / float(exact) - 1) < 1e-3, (float(ours), float(exact))
    per_frame = rig32.vertex_mse(w1, w2, reduction="none")
    assert bool((per_frame >= 0).all())


def test_ad_hoc_region_mask_validated():
    rig = small_rig(False)
    w1, w2 = weights(3, 7), weights(3, 7, seed=5)
    for mask in (torch.zeros(rig.num_vertices), -torch.ones(rig.num_vertices)):
        with pytest.raises(ValueError, match=r"Rig.vertex_mse: region must be weights >= 0, not all zero, got a "
                                             r"negative or empty mask"):
            rig.vertex_mse(w1, w2, region=mask)
        with pytest.raises(ValueError, match=r"temporal_smoothness: region must be weights >= 0"):
            temporal_smoothness(w1, 1, rig, region=mask)
    with pytest.raises(ValueError, match=r"Rig.vertex_mse: region must be a \[V\] = \[23\] tensor, got \[4\]"):
        rig.vertex_mse(w1, w2, region=torch.ones(4))


def test_rig_evaluation_and_clamp():
    rig = small_rig(True)
    w = weights(3, 7)
    torch.testing.assert_close(rig(w), explicit_vertices(rig, w))
    clamped = rig.clamp(torch.tensor([[-5.0, 5.0, 0.5, 0, 0, 0, 0]], dtype=F64))
    assert clamped[0, :3].tolist() == [-1.0, 2.0, 0.5]
    assert range_penalty(clamped, rig.lower, rig.upper) == 0
    torch.testing.assert_close(range_penalty(torch.tensor([-0.5, 1.5]), 0.0, 1.0), torch.tensor(0.25))


def assert_same_rig(a, b):
    assert a.names == b.names and a.region_names == b.region_names
    for name in ("neutral", "deltas", "lower", "upper", "corrective_pairs", "corrective_deltas", "faces"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            torch.testing.assert_close(x, y, msg=name)
    for r in a.region_names:
        torch.testing.assert_close(a.region_mask(r), b.region_mask(r))


def test_npz_round_trip(tmp_path):
    rig = toy_rig(num_shapes=12, resolution=6, correctives=True)
    rig.save_npz(tmp_path / "rig.npz")
    assert_same_rig(rig, Rig.from_npz(tmp_path / "rig.npz"))
    # absolute shapes instead of deltas
    np.savez(tmp_path / "shapes.npz", neutral=rig.neutral.numpy(), shapes=(rig.neutral + rig.deltas).numpy(),
             names=np.array(rig.names))
    loaded = Rig.from_npz(tmp_path / "shapes.npz")
    torch.testing.assert_close(loaded.deltas, rig.deltas, atol=1e-6, rtol=0)
    assert loaded.names == rig.names and loaded.num_features == 12


def test_npz_path_without_suffix(tmp_path):
    rig = toy_rig(num_shapes=3, resolution=4)
    rig.save_npz(tmp_path / "rig")  # numpy writes rig.npz
    assert (tmp_path / "rig.npz").is_file()
    assert_same_rig(rig, Rig.from_npz(tmp_path / "rig"))
    assert_same_rig(rig, Rig.from_npz(str(tmp_path / "rig.npz")))


def test_obj_folder_round_trip(tmp_path):
    rig = toy_rig(num_shapes=52, resolution=5, correctives=True, dtype=F64)
    rig.save_obj_folder(tmp_path / "rig")
    loaded = Rig.from_obj_folder(tmp_path / "rig", dtype=F64)
    assert loaded.names == list(ARKIT_52)  # ARKit order, not alphabetical
    torch.testing.assert_close(loaded.neutral, rig.neutral, atol=1e-8, rtol=0)
    torch.testing.assert_close(loaded.deltas, rig.deltas, atol=1e-8, rtol=0)
    assert loaded.corrective_pairs.tolist() == sorted(rig.corrective_pairs.tolist(),
                                                      key=lambda p: f"{ARKIT_52[p[0]]}+{ARKIT_52[p[1]]}")
    assert torch.equal(loaded.faces, rig.faces)
    subset = Rig.from_obj_folder(tmp_path / "rig", names=["jawOpen", "eyeBlinkLeft"])
    assert subset.names == ["jawOpen", "eyeBlinkLeft"] and subset.num_shapes == 2


def test_obj_folder_round_trip_keeps_any_order(tmp_path):
    """Ten shapes named out of ARKit order, some not ARKit names: names.txt keeps their order."""
    names = ["jawOpen", "zeta", "eyeBlinkLeft", "alpha", "mouthClose", "tongueOut", "browInnerUp", "mid",
             "cheekPuff", "eyeWideLeft"]
    g = torch.Generator().manual_seed(4)
    rig = Rig(torch.randn(9, 3, generator=g, dtype=F64), torch.randn(10, 9, 3, generator=g, dtype=F64), names,
              correctives=(torch.tensor([[1, 3]]), torch.randn(1, 9, 3, generator=g, dtype=F64)))
    rig.save_obj_folder(tmp_path / "rig")
    loaded = Rig.from_obj_folder(tmp_path / "rig", dtype=F64)
    assert loaded.names == names
    w = weights(4, 10)
    torch.testing.assert_close(explicit_vertices(loaded, w), explicit_vertices(rig, w), rtol=0, atol=1e-7)
    # without names.txt: the ARKit names in ARKit order, then the others sorted
    (tmp_path / "rig" / "names.txt").unlink()
    assert Rig.from_obj_folder(tmp_path / "rig").names == [
        "eyeBlinkLeft", "eyeWideLeft", "jawOpen", "mouthClose", "browInnerUp", "cheekPuff", "tongueOut", "alpha",
        "mid", "zeta"]


def test_read_obj_relative_indices(tmp_path):
    """OBJ faces may count back from the last vertex read (-1); both forms give the same triangles."""
    path = tmp_path / "quad.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nf 1 2 3\nv 0 1 0\nf -4/1 -2/2 -1/3\n")
    vertices, faces = read_obj(path)
    assert vertices.shape == (4, 3) and faces.tolist() == [[0, 1, 2], [0, 2, 3]]


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_write_obj_round_trips_exactly(tmp_path, dtype):
    vertices = torch.randn(50, 3, generator=torch.Generator().manual_seed(0), dtype=F64).to(dtype) / 3
    write_obj(tmp_path / "m.obj", vertices, None)
    assert torch.equal(read_obj(tmp_path / "m.obj", dtype)[0], vertices)


def test_toy_rig():
    rig = toy_rig()
    assert rig.num_shapes == 52 and rig.names == list(ARKIT_52) and rig.num_vertices == 24 * 24
    assert rig.faces.shape == (2 * 23 * 23, 3) and set(rig.region_names) == {"upper", "lower", "left", "right"}
    assert torch.equal(toy_rig().deltas, rig.deltas)  # deterministic
    assert toy_rig(correctives=True).num_features == 52 + 13


# ---- filters ------------------------------------------------------------------------------------------


def noisy(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 2, shape[-2])[:, None]
    return torch.sin(2 * math.pi * t) + 0.1 * torch.randn(*shape, generator=g)


@pytest.mark.parametrize("shape", [(40, 5), (2, 40, 5), (2, 3, 40, 5)])
def test_one_euro_filter_streaming_equals_offline(shape):
    x = noisy(*shape)
    filt = OneEuroFilter(min_cutoff=1.0, beta=0.5, d_cutoff=1.0, rate=60.0)
    offline = filt.filter(x)
    frames = [filt.step(x[..., t, :]) for t in range(shape[-2])]
    assert torch.equal(torch.stack(frames, dim=-2), offline)
    filt.reset()
    chunks = [filt(c) for c in torch.split(x, [7, 1, 20, 12], dim=-2)]
    assert torch.equal(torch.cat(chunks, dim=-2), offline)


def test_one_euro_filter_timestamps_streaming_equals_offline():
    x = noisy(2, 30, 4)
    ts = torch.cumsum(0.01 + 0.02 * torch.rand(30, generator=torch.Generator().manual_seed(2), dtype=F64), 0)
    filt = OneEuroFilter(1.0, 0.3, raw_derivative=True)
    offline = filt.filter(x, ts)
    frames = [filt.step(x[:, t], ts[t]) for t in range(30)]
    assert torch.equal(torch.stack(frames, dim=1), offline)
    # the periods are the timestamps' differences: a fixed rate equals evenly spaced timestamps
    even = torch.arange(30, dtype=F64) / 30.0
    torch.testing.assert_close(OneEuroFilter(1.0, 0.3, rate=30.0).filter(x, even), OneEuroFilter(1.0, 0.3, rate=30.0)
                               .filter(x), atol=1e-6, rtol=1e-6)


def test_exponential_smoother_streaming_equals_offline():
    x = noisy(3, 25, 2)
    smoother = ExponentialSmoother(0.25)
    offline = smoother.filter(x)
    frames = [smoother.step(x[:, t]) for t in range(25)]
    assert torch.equal(torch.stack(frames, 1), offline)


@pytest.mark.parametrize("shape", [(0, 5), (2, 0, 5), (0, 6, 5), (2, 0, 6, 5), (3, 5, 0)])
def test_filters_empty_sequences(shape):
    x = torch.randn(shape)
    for filt in (OneEuroFilter(), ExponentialSmoother(0.5)):
        assert filt.filter(x).shape == x.shape
        assert filt(x).shape == x.shape
        filt.reset()
    ts = torch.arange(shape[-2], dtype=F64) / 30
    assert OneEuroFilter().filter(x, ts).shape == x.shape


def test_filter_bad_inputs():
    with pytest.raises(ValueError, match=r"OneEuroFilter: min_cutoff must be > 0, got 0"):
        OneEuroFilter(min_cutoff=0.0)
    with pytest.raises(ValueError, match=r"OneEuroFilter: beta must be >= 0, got -1"):
        OneEuroFilter(beta=-1.0)
    with pytest.raises(ValueError, match=r"ExponentialSmoother: alpha must be in \(0, 1\], got 0"):
        ExponentialSmoother(0.0)
    filt = OneEuroFilter()
    with pytest.raises(ValueError, match=r"OneEuroFilter: timestamps must be strictly increasing"):
        filt.filter(torch.randn(5, 2), torch.tensor([0.0, 0.1, 0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match=r"OneEuroFilter: timestamps must be \[T\] or \[..., T\] = \[5\] with T = 5"):
        filt.filter(torch.randn(5, 2), torch.arange(4.0))
    # a [..., T] of the wrong leading shape with as many elements as x's [B, T] was taken for it
    with pytest.raises(ValueError, match=r"OneEuroFilter: timestamps must be \[T\] or \[..., T\] = \[2, 3, 4\] "
                                         r"with T = 4 \(x's frames\), got \[3, 2, 4\]"):
        filt.filter(torch.randn(2, 3, 4, 1), torch.arange(4.0).expand(3, 2, 4))
    filt(torch.randn(2, 4, 3))
    with pytest.raises(ValueError, match=r"OneEuroFilter.__call__: x must be \[..., T, C\] with the stream's leading"):
        filt(torch.randn(3, 4, 3))
    with pytest.raises(ValueError, match=r"OneEuroFilter.__call__: x must be C = 3 channels"):
        filt(torch.randn(2, 4, 5))
    with pytest.raises(TypeError, match=r"OneEuroFilter.filter: x must be a floating tensor, got torch.int64"):
        filt.filter(torch.ones(4, 3, dtype=torch.long))
    with pytest.raises(TypeError, match=r"OneEuroFilter.__call__: x must be a tensor, got list"):
        filt([1.0, 2.0])


# ---- bad inputs of the rig and the losses -----------------------------------------------------------------


def test_rig_bad_inputs():
    n, d = torch.randn(5, 3), torch.randn(2, 5, 3)
    cases = [
        (ValueError, r"Rig: neutral must be a floating \[V, 3\] tensor, got torch.float32 \[5, 2\]",
         lambda: Rig(torch.randn(5, 2), d)),
        (ValueError, r"Rig: deltas must be \[K, V, 3\] = \[K, 5, 3\] \(V of neutral\), got \[2, 4, 3\]",
         lambda: Rig(n, torch.randn(2, 4, 3))),
        (ValueError, r"Rig: names must be K = 2 names \(one per delta\), got 3 names", lambda: Rig(n, d, ["a", "b", "c"])),
        (ValueError, r"Rig: names must be unique, got \['a', 'a'\]", lambda: Rig(n, d, ["a", "a"])),
        (ValueError, r"Rig: lower must be a number or a \[K\] = \[2\] tensor, got shape \[3\]",
         lambda: Rig(n, d, lower=torch.zeros(3))),
        (ValueError, r"Rig: lower must be <= upper", lambda: Rig(n, d, lower=2.0)),
        (ValueError, r"Rig: correctives\[0\] \(pairs\) must be shape indices in \[0, 2\), got \[0, 2\]",
         lambda: Rig(n, d, correctives=(torch.tensor([[0, 2]]), torch.randn(1, 5, 3)))),
        (ValueError, r"Rig: correctives\[1\] \(corrective_deltas\) must be \[P, V, 3\] = \[1, 5, 3\], got \[2, 5, 3\]",
         lambda: Rig(n, d, correctives=(torch.tensor([[0, 1]]), torch.randn(2, 5, 3)))),
        (TypeError, r"Rig: correctives must be a \(pairs \[P, 2\], corrective_deltas \[P, V, 3\]\) pair, got Tensor",
         lambda: Rig(n, d, correctives=torch.zeros(1))),
        (TypeError, r"Rig: neutral must be a tensor or an array, got str", lambda: Rig("x", d)),
        (ValueError, r"Rig.add_region: mask must be a \[V\] = \[5\] tensor, got \[4\]",
         lambda: Rig(n, d, regions={"a": torch.ones(4)})),
    ]
    for exc, match, fn in cases:
        with pytest.raises(exc, match=match):
            fn()


def test_loss_bad_inputs():
    rig = small_rig(False)
    w = weights(4, 7)
    cases = [
        (ValueError, r"Rig.vertex_mse: w_pred must be \[..., K\] with K = 7 \(the rig's shapes\), got \[4, 6\]",
         lambda: rig.vertex_mse(weights(4, 6), w)),
        (ValueError, r"Rig.vertex_mse: w_target must be the shape of w_pred \[4, 7\], got \[3, 7\]",
         lambda: rig.vertex_mse(w, weights(3, 7))),
        (TypeError, r"Rig.vertex_mse: w_pred must be a floating tensor, got torch.int64",
         lambda: rig.vertex_mse(torch.ones(4, 7, dtype=torch.long), w)),
        (TypeError, r"Rig.vertex_mse: w_pred must be a tensor \[..., K\], got ndarray",
         lambda: rig.vertex_mse(np.zeros((4, 7)), w)),
        (KeyError, r"Rig.vertex_mse: region must be None, a \[V\] mask or one of \['front', 'soft'\], got 'nose'",
         lambda: rig.vertex_mse(w, w, region="nose")),
        (ValueError, r"Rig.vertex_mse: reduction must be 'mean', 'sum' or 'none', got 'max'",
         lambda: rig.vertex_mse(w, w, reduction="max")),
        (ValueError, r"temporal_smoothness: order must be 1 or 2, got 3", lambda: temporal_smoothness(w, 3)),
        (ValueError, r"temporal_smoothness: w must be \[..., T, K\] with T > order = 2 frames, got \[2, 7\]",
         lambda: temporal_smoothness(weights(2, 7), 2, rig)),
        (ValueError, r"temporal_smoothness: w must be \[..., K\] with K = 7 \(the rig's shapes\), got \[4, 5\]",
         lambda: temporal_smoothness(weights(4, 5), 1, rig)),
        (TypeError, r"temporal_smoothness: rig must be a facekernels.animation.Rig or None, got str",
         lambda: temporal_smoothness(w, 1, "rig")),
        (ValueError, (r"temporal_smoothness: region must be None without a rig \(regions are the rig's vertices\), "
                      r"got a region"), lambda: temporal_smoothness(w, 1, region="front")),
        (ValueError, (r"temporal_smoothness: translation_invariant must be False without a rig \(a vertex-space "
                      r"option\), got True"), lambda: temporal_smoothness(w, 1, translation_invariant=True)),
        (TypeError, r"temporal_smoothness: w must be a floating tensor, got torch.int64",
         lambda: temporal_smoothness(torch.ones(4, 7, dtype=torch.long), 1)),
    ]
    for exc, match, fn in cases:
        with pytest.raises(exc, match=match):
            fn()
    no_regions = Rig(rig.neutral, rig.deltas)
    with pytest.raises(ValueError, match=r"Rig.region_vertex_mse: the rig must be one with regions"):
        no_regions.region_vertex_mse(w, w)


# ---- models -----------------------------------------------------------------------------------------------


def test_blendshape_adapter_streaming_equals_offline_and_range():
    torch.manual_seed(0)
    rig = toy_rig(num_shapes=10, resolution=6)
    model = BlendshapeAdapter(52, rig, window=4, hidden=32).eval()
    x = torch.rand(2, 15, 52)
    with torch.no_grad():
        offline = model(x)
        state, frames = None, []
        for t in range(15):
            y, state = model.step(x[:, t], state)
            frames.append(y)
    assert offline.shape == (2, 15, 10)
    torch.testing.assert_close(torch.stack(frames, 1), offline, atol=1e-6, rtol=1e-5)
    assert (offline >= 0).all() and (offline <= 1).all()
    # causal: changing a later frame leaves earlier outputs alone
    x2 = x.clone()
    x2[:, 10] += 1
    with torch.no_grad():
        assert torch.equal(model(x2)[:, :10], offline[:, :10])
        assert not torch.equal(model(x2)[:, 10], offline[:, 10])
    with pytest.raises(ValueError, match=r"BlendshapeAdapter.forward: x must be \[B, T, S\] with S = 52, got \[2, 15, 51\]"):
        model(torch.rand(2, 15, 51))


def test_blendshape_adapter_trains():
    torch.manual_seed(0)
    rig = toy_rig(num_shapes=8, resolution=6)
    mapping = torch.rand(12, 8) / 4
    x = torch.rand(4, 20, 12)
    target = rig.clamp(x @ mapping)
    model = BlendshapeAdapter(12, rig, window=3, hidden=32, bounded=False)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        loss, terms = adapter_loss(rig, model(x), target, smooth_weight=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else float(loss.detach())
    assert set(terms) == {"vertex", "smooth", "range"}
    assert float(loss.detach()) < 0.2 * first


def test_emotion_transfer():
    torch.manual_seed(0)
    rig = toy_rig(num_shapes=6, resolution=4)
    model = EmotionTransfer(rig, width=8)
    out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 6) and (out >= 0).all() and (out <= 1).all()
    out.sum().backward()
    custom = EmotionTransfer(rig, backbone=torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5)),
                             features=5)
    assert custom(torch.rand(1, 3, 8, 8)).shape == (1, 6)
    with pytest.raises(ValueError, match=r"EmotionTransfer: features must be the backbone's feature width"):
        EmotionTransfer(rig, backbone=torch.nn.Identity())
    with pytest.raises(ValueError, match=r"EmotionTransfer.forward: image must be a \[B, C, H, W\] tensor, got \[3, 8, 8\]"):
        model(torch.rand(3, 8, 8))



def test_emotion_transfer_timm_backbone():
    """A timm model by name (the [fer] extra; CI's torch 2.14.1 suite has timm): its features feed the head."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    rig = toy_rig(num_shapes=6, resolution=4)
    model = EmotionTransfer(rig, backbone="resnet10t", in_chans=1)
    assert model.encoder.num_features == timm.create_model("resnet10t", num_classes=0).num_features
    out = model(torch.rand(2, 1, 48, 48))
    assert out.shape == (2, 6) and (out >= 0).all() and (out <= 1).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.encoder.parameters() if p.requires_grad)

def test_retarget_example_runs(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("matplotlib")
    script = Path(__file__).resolve().parents[1] / "examples" / "retarget.py"
    out = tmp_path / "strip.png"
    run = subprocess.run([sys.executable, str(script), "--steps", "2", "--frames", "30", "--out", str(out)],
                         capture_output=True, text=True, check=True)
    assert "adapter + One Euro filter" in run.stdout and "jitter" in run.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("device", DEVICES)
def test_losses_and_filters_on_every_device(device):
    """The losses run on the weights' device (the Gram matrix moves there once); the filters take CUDA
    tensors through the CPU kernel and hand results back on the input's device."""
    rig = small_rig(True, dtype=torch.float32).to(device)
    w1, w2 = weights(4, 9, 7).float().to(device), weights(4, 9, 7, seed=8).float().to(device)
    loss = rig.vertex_mse(w1, w2, region="soft") + temporal_smoothness(w1, 2, rig)
    cpu = small_rig(True, dtype=torch.float32)
    expected = cpu.vertex_mse(w1.cpu(), w2.cpu(), region="soft") + temporal_smoothness(w1.cpu(), 2, cpu)
    assert loss.device.type == device
    torch.testing.assert_close(loss.cpu(), expected, rtol=1e-5, atol=1e-7)
    filt = OneEuroFilter(1.0, 0.3)
    y = filt.filter(w1)
    assert y.device.type == device
    assert torch.equal(y.cpu(), filt.filter(w1.cpu()))
