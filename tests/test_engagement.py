"""facekernels.models.EngagementSTGCN (issue 21) on small graphs built here (chains, so that the tests do
not depend on the MediaPipe graphs): shapes and gradients, the two input forms, the mask, tabular fusion,
shared and separate hand encoders, the benchmark peer, a few-step loss decrease, and bad inputs."""

import pytest
import torch
import torch.nn.functional as F
from facekernels import graphs
from facekernels.models import EngagementSTGCN
from facekernels.models.engagement import HOLISTIC_LAYOUT
from facekernels.ops import st_graph_conv


def chain(name, v):
    return graphs.LandmarkGraph(name, v, tuple((i, i + 1) for i in range(v - 1)), v // 2, tuple(range(v)))


FACE_NODES = (1, 33, 61, 133, 152, 199, 263, 291, 362, 4)
SMALL = {"face_graph": chain("face", len(FACE_NODES)), "face_nodes": FACE_NODES, "hand_graph": chain("hand", 21),
         "pose_graph": chain("pose", 33), "channels": (8, 16), "strides": (2, 1), "hidden": 16}


def inputs(b=3, t=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 3, t, 543, generator=g)
    mask = torch.rand(b, t, 543, generator=g) > 0.2
    mask[0, :, 468:489] = False  # a left hand never seen
    return x, mask


def test_shapes_and_gradients():
    torch.manual_seed(0)
    model = EngagementSTGCN(3, num_classes=1, tabular_features=2, **SMALL)
    x, mask = inputs()
    x.requires_grad_()
    out = model(x, mask, torch.randn(3, 2))
    assert out.shape == (3, 1)
    out.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    assert (x.grad.abs().sum(1)[~mask] == 0).all()  # nothing flows to missing landmarks
    assert model.features(x, mask, torch.randn(3, 2)).shape == (3, model.num_features)
    assert model.num_features == 4 * 16 + 4 + 2


def test_multiclass_separate_hands_no_tabular():
    model = EngagementSTGCN(3, num_classes=4, share_hands=False, **SMALL)
    assert len(model.hands) == 2
    x, mask = inputs()
    assert model(x, mask).shape == (3, 4)
    shared = EngagementSTGCN(3, **SMALL)
    n_shared = sum(p.numel() for p in shared.hands.parameters())
    assert sum(p.numel() for p in model.hands.parameters()) == 2 * n_shared


def test_dict_input_equals_holistic_tensor():
    torch.manual_seed(0)
    model = EngagementSTGCN(3, **SMALL).eval()
    x, mask = inputs()
    parts = {p: x[..., lo:hi] for p, (lo, hi) in HOLISTIC_LAYOUT.items()}
    masks = {p: mask[..., lo:hi] for p, (lo, hi) in HOLISTIC_LAYOUT.items()}
    torch.testing.assert_close(model(parts, masks), model(x, mask))


@pytest.mark.parametrize("train", [True, False])
def test_all_true_mask_equals_no_mask(train):
    torch.manual_seed(0)
    model = EngagementSTGCN(3, **SMALL).train(train)
    x, _ = inputs()
    twin = EngagementSTGCN(3, **SMALL).train(train)
    twin.load_state_dict(model.state_dict())
    torch.testing.assert_close(model(x, torch.ones(3, 12, 543, dtype=torch.bool)), twin(x), rtol=1e-5, atol=1e-5)


def test_masked_landmarks_are_ignored():
    """Values of missing landmarks (NaN included) change nothing, and landmarks outside face_nodes are not read."""
    torch.manual_seed(0)
    model = EngagementSTGCN(3, **SMALL)
    x, mask = inputs()
    outside = torch.ones(543, dtype=torch.bool)
    outside[list(FACE_NODES)] = False
    outside[468:] = False
    noisy = torch.where(mask[:, None], x, float("nan"))
    noisy[..., outside] = 1e4
    torch.testing.assert_close(model(noisy, mask), model(x, mask))


def test_einsum_peer_is_the_same_model():
    from facekernels.bench.workloads_engagement import engagement_stgcn_einsum

    torch.manual_seed(0)
    ours = EngagementSTGCN(3, tabular_features=1, **SMALL).double()
    peer = engagement_stgcn_einsum(EngagementSTGCN(3, tabular_features=1, **SMALL)).double()
    peer.load_state_dict(ours.state_dict())
    blocks = [m for m in peer.modules() if hasattr(m, "graph_conv")]
    assert blocks and all(b.graph_conv is not st_graph_conv for b in blocks)
    x, mask = inputs()
    tab = torch.randn(3, 1, dtype=torch.float64)
    torch.testing.assert_close(peer(x.double(), mask, tab), ours(x.double(), mask, tab), rtol=1e-9, atol=1e-9)


def test_loss_decreases_on_a_learnable_signal():
    """Class 1 windows move their hands more: a few Adam steps lower the loss."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    b, t = 16, 12
    labels = torch.arange(b) % 2
    x = 0.1 * torch.randn(b, 3, t, 543, generator=g)
    wave = torch.sin(torch.arange(t) * 1.3)[None, None, :, None]
    x[..., 468:] += (0.2 + labels.float())[:, None, None, None] * wave
    mask = torch.rand(b, t, 543, generator=g) > 0.1
    model = EngagementSTGCN(3, **SMALL)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        loss = F.binary_cross_entropy_with_logits(model(x, mask)[:, 0], labels.float())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_example_helpers():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "train_engagement.py"
    spec = importlib.util.spec_from_file_location("train_engagement", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    g = torch.Generator().manual_seed(0)
    x, mask, tabular, labels, subject = example.synthesise(6, 3, 10, g)
    assert x.shape == (18, 3, 10, 543) and mask.shape == (18, 10, 543) and tabular.shape == (18, 1)
    scores = example.binary_scores(torch.tensor([2.0, -1.0, 0.5, -3.0]), torch.tensor([1.0, 0.0, 0.0, 0.0]))
    assert scores["accuracy"] == 0.75 and scores["auc"] == 1.0 and abs(scores["f1"] - 2 / 3) < 1e-9


def test_bad_inputs():
    model = EngagementSTGCN(3, tabular_features=2, **SMALL)
    x, mask = inputs()
    with pytest.raises(ValueError, match=r"x must be \[B, 3, T, 543\]"):
        model(x[..., :500], mask[..., :500], torch.randn(3, 2))
    with pytest.raises(ValueError, match=r"mask must be \[B, T, 543\]"):
        model(x, mask[:, :5], torch.randn(3, 2))
    with pytest.raises(ValueError, match=r"the mask of face must be bool"):
        model(x, mask.float(), torch.randn(3, 2))
    with pytest.raises(ValueError, match=r"tabular must be \[B, 2\]"):
        model(x, mask)
    with pytest.raises(ValueError, match=r"missing \['pose'\]"):
        model({p: x[..., :21] for p in ("face", "left_hand", "right_hand")})
    with pytest.raises(ValueError, match=r"hand_graph must give a floating \[K, 21, 21\]"):
        EngagementSTGCN(3, **{**SMALL, "hand_graph": chain("hand", 20)})
    with pytest.raises(ValueError, match=r"face_nodes must be 10 indices"):
        EngagementSTGCN(3, **{**SMALL, "face_nodes": FACE_NODES[:9] + (500,)})
    with pytest.raises(ValueError, match=r"strides one per block"):
        EngagementSTGCN(3, **{**SMALL, "strides": (1,)})


def test_adjacency_tensors_are_taken_as_is():
    a = graphs.adjacency(chain("pose", 33), "uniform")
    model = EngagementSTGCN(3, **{**SMALL, "pose_graph": a})
    assert model.pose.blocks[0].num_partitions == 1
    torch.testing.assert_close(model.pose.blocks[0].adjacency, a)


def test_default_graphs_resolve_by_name_or_say_what_is_missing():
    if hasattr(graphs, "subgraph") and "mediapipe_hand" in graphs.GRAPHS:
        model = EngagementSTGCN(3)
        assert model.face.num_nodes == 128 and model.hands[0].num_nodes == 21 and model.pose.num_nodes == 33
    else:
        with pytest.raises(ValueError, match="pass face_graph"):
            EngagementSTGCN(3)
