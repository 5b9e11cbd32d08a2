"""facekernels.models.LandmarkGuidedLipReader: shapes, the mirror and motion graphs, gradients reaching
every parameter, a few optimiser steps lowering the loss on synthetic clips (tiny widths), bad inputs."""

import math

import pytest
import torch
from facekernels import graphs
from facekernels.models import LandmarkGuidedLipReader
from facekernels.models.lipreading import LIP_MIRRORS, mirror_adjacency, motion_adjacency


def _lip_template(v: int) -> torch.Tensor:
    """[V, 2]: the outer ring on a wide ellipse, the inner ring (the rest) on a narrower one."""
    outer = v * 3 // 5
    angles = [2 * math.pi * i / outer for i in range(outer)] + [2 * math.pi * i / (v - outer) for i in range(v - outer)]
    radius = [(1.0, 0.5)] * outer + [(0.6, 0.25)] * (v - outer)
    return torch.tensor([[rx * math.cos(a), ry * math.sin(a)] for a, (rx, ry) in zip(angles, radius)])


def _clips(b: int, words: int, t: int, size: int, v: int, generator: torch.Generator):
    """Synthetic word clips: word w opens the mouth w + 1 times; landmarks follow the opening, the crop
    shows a dark ellipse of the same height."""
    labels = torch.randint(0, words, (b,), generator=generator)
    phase = torch.arange(t) / t
    opening = 0.5 + 0.5 * torch.sin(2 * math.pi * (labels[:, None] + 1) * phase[None])  # [B, T]
    template = _lip_template(v)
    xy = template[None, None].repeat(b, t, 1, 1)  # [B, T, V, 2]
    xy[..., 1] = xy[..., 1] * (0.2 + opening[..., None])
    landmarks = (xy + 0.02 * torch.randn(xy.shape, generator=generator)).permute(0, 3, 1, 2)  # [B, 2, T, V]
    grid = torch.linspace(-1, 1, size)
    yy, xx = grid[:, None], grid[None, :]
    height = 0.1 + 0.4 * opening  # [B, T]
    inside = (xx / 0.6) ** 2 + (yy / height[..., None, None]) ** 2 < 1
    mouth = 1.0 - 0.8 * inside.float() + 0.05 * torch.randn(inside.shape, generator=generator)
    return mouth[:, None], landmarks, labels


@pytest.mark.parametrize("graph, channels, v", [("lips20", 2, 20), ("mediapipe_lips", 3, 40)])
def test_shapes(graph, channels, v):
    model = LandmarkGuidedLipReader.small(num_words=7, graph=graph, in_channels=channels)
    out = model(torch.randn(2, 1, 6, 88, 88), torch.randn(2, channels, 6, v))
    assert out.shape == (2, 7)
    levels = model.landmark_features(torch.randn(2, channels, 6, v))
    assert [x.shape for x in levels] == [(2, 8, 6), (2, 16, 6), (2, 16, 6)]
    # the graph convolutions run K = 3 spatial partitions + mirror + motion
    assert all(block.num_partitions == 5 for block in model.landmark_blocks)


def test_default_config_is_the_lrw_model():
    model = LandmarkGuidedLipReader()
    assert model.head.out_features == 500 and model.graph_spec.name == "lips20"
    assert [len(stage) for stage in model.trunk] == [2, 2, 2, 2]
    assert [stage[0].conv1.out_channels for stage in model.trunk] == [64, 128, 256, 512]
    assert model.frontend[0].kernel_size == (5, 7, 7) and model.frontend[0].stride == (1, 2, 2)


def test_backward_reaches_every_parameter():
    torch.manual_seed(0)
    model = LandmarkGuidedLipReader.small(num_words=5)
    mouth, landmarks, labels = _clips(3, 5, 6, 40, 20, torch.Generator().manual_seed(0))
    torch.nn.functional.cross_entropy(model(mouth, landmarks), labels).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    zero = [name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() == 0]
    assert not missing and not zero, (missing, zero)


def test_a_few_steps_lower_the_loss():
    torch.manual_seed(0)
    model = LandmarkGuidedLipReader.small(num_words=4)
    mouth, landmarks, labels = _clips(8, 4, 8, 40, 20, torch.Generator().manual_seed(1))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(mouth, landmarks), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("name", ["lips20", "mediapipe_lips"])
def test_mirror_graphs(name):
    g = graphs.get_graph(name)
    mirror = LIP_MIRRORS[name]
    assert all(mirror[mirror[v]] == v for v in range(g.num_nodes))
    # the mirror maps edges to edges, and the centre (the upper-lip midpoint) to itself
    assert {tuple(sorted((mirror[i], mirror[j]))) for i, j in g.edges} == set(g.edges)
    assert mirror[g.center] == g.center
    a = mirror_adjacency(mirror, torch.float64)
    torch.testing.assert_close(a.sum(0), torch.ones(g.num_nodes, dtype=torch.float64))
    assert torch.equal(a, a.T)
    midline = [v for v in range(g.num_nodes) if mirror[v] == v]
    assert len(midline) == 4 and all(a[v, v] == 1 for v in midline)
    with pytest.raises(ValueError, match="involution"):
        mirror_adjacency([1, 2, 0])


def test_motion_graph():
    torch.manual_seed(0)
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64)
    a = motion_adjacency(x)
    assert a.shape == (2, 6, 6) and (a >= 0).all()
    torch.testing.assert_close(a.sum(1), torch.ones(2, 6, dtype=torch.float64))
    # two nodes moving together (apart from the common motion) link; a node moving against them does not
    common = torch.randn(1, 2, 5, 1, dtype=torch.float64)
    own = torch.randn(1, 2, 5, 1, dtype=torch.float64)
    y = torch.cat([common + own, common + own, common - own, common], 3)
    b = motion_adjacency(y)[0]
    assert b[0, 1] > 0.3 and b[2, 0] == 0 and b[0, 2] == 0
    # still landmarks, or one frame: the identity
    torch.testing.assert_close(motion_adjacency(torch.ones(1, 2, 4, 3)), torch.eye(3)[None])
    torch.testing.assert_close(motion_adjacency(torch.randn(2, 2, 1, 3)), torch.eye(3).expand(2, 3, 3))


def test_bad_inputs():
    model = LandmarkGuidedLipReader.small(num_words=3)
    with pytest.raises(ValueError, match=r"mouth must be \[B, 1, T, H, W\]"):
        model(torch.randn(2, 3, 4, 32, 32), torch.randn(2, 2, 4, 20))
    with pytest.raises(ValueError, match=r"landmarks must be \[B, 2, T, 20\]"):
        model(torch.randn(2, 1, 4, 32, 32), torch.randn(2, 2, 4, 40))
    with pytest.raises(ValueError, match="must agree on B and T"):
        model(torch.randn(2, 1, 4, 32, 32), torch.randn(2, 2, 5, 20))
    with pytest.raises(ValueError, match="no known mirror"):
        LandmarkGuidedLipReader.small(graph="face68")
    with pytest.raises(ValueError, match="one trunk stage per landmark block"):
        LandmarkGuidedLipReader.small(fusion_stages=(2, 3))
    with pytest.raises(ValueError, match="non-decreasing stages in 1..4"):
        LandmarkGuidedLipReader.small(fusion_stages=(2, 5, 4))
