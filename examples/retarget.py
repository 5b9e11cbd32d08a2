"""Retarget a synthetic ARKit-52 performance onto a stylised toy rig with the real-time BlendshapeAdapter,
smooth the result with the One Euro filter, report vertex error and jitter before and after filtering, and
write a PNG strip of rendered frames.

    python examples/retarget.py [--out retarget.png] [--steps 150] [--frames 240] [--threads 2]

The source is the toy rig with the 52 ARKit shape names; the target a different toy rig (20 shapes, with
corrective shapes). The "true" retargeting is a fixed non-negative mapping of the clean source weights,
clamped to the target's range; the tracker adds jitter to the source curves. The adapter is trained on
noisy sequences against the true target weights with adapter_loss (the vertex error through the target
rig's Gram matrix, a vertex-space acceleration penalty and the range penalty), then run on a held-out
sequence; the One Euro filter smooths its output causally. Vertex error is the RMS vertex distance to the
true target mesh (rig.vertex_mse, no mesh built); jitter the RMS vertex acceleration
(temporal_smoothness(order=2) in vertex space), both in rig units.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from facekernels.animation import OneEuroFilter, Rig, temporal_smoothness, toy_rig
from facekernels.models import BlendshapeAdapter, adapter_loss

RATE = 60.0


def performance(batch: int, frames: int, generator: torch.Generator) -> torch.Tensor:
    """Smooth source curves [B, T, 52] in [0, 1]: a few slow sinusoids per shape and blink pulses."""
    t = torch.arange(frames) / RATE
    freq = 0.2 + 1.5 * torch.rand(batch, 1, 52, 3, generator=generator)
    phase = 2 * math.pi * torch.rand(batch, 1, 52, 3, generator=generator)
    waves = torch.sin(2 * math.pi * freq * t[None, :, None, None] + phase).mean(-1)
    active = (torch.rand(batch, 1, 52, generator=generator) < 0.4).float()
    w = active * (0.5 + 0.5 * waves)
    blink = (torch.sin(2 * math.pi * 0.4 * t) > 0.97).float()[None, :]
    w[..., 0] = torch.maximum(w[..., 0], blink)  # eyeBlinkLeft
    w[..., 7] = torch.maximum(w[..., 7], blink)  # eyeBlinkRight
    return w.clamp(0, 1)


def jitter(w: torch.Tensor, generator: torch.Generator, amount: float = 0.04) -> torch.Tensor:
    return (w + amount * torch.randn(w.shape, generator=generator)).clamp(0, 1)


def render_strip(rig: Rig, frames: list[torch.Tensor], titles: list[str], path: Path) -> None:
    """An orthographic flat-shaded rendering of each mesh (painter's order), side by side, tinted by each
    triangle's displacement from the neutral (white: none, red: the largest in the strip)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    fig, axes = plt.subplots(1, len(frames), figsize=(2.2 * len(frames), 2.6))
    light = torch.tensor([0.3, 0.4, 1.0])
    light = light / light.norm()
    moved = [(v - rig.neutral).norm(dim=1)[rig.faces].mean(1) for v in frames]
    scale = max(float(m.max()) for m in moved) or 1.0
    for ax, vertices, title, displacement in zip(axes, frames, titles, moved, strict=True):
        tri = vertices[rig.faces]  # [F, 3, 3]
        normals = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        normals = normals / normals.norm(dim=1, keepdim=True).clamp_min(1e-12)
        shade = (normals @ light).abs().clamp(0.15, 1.0)
        order = tri[:, :, 2].mean(1).argsort()  # far to near
        heat = (displacement / scale)[order].tolist()
        colours = [(s, s * (1 - 0.8 * h), s * (1 - 0.8 * h)) for s, h in zip(shade[order].tolist(), heat, strict=True)]
        ax.add_collection(PolyCollection(tri[order, :, :2].numpy(), facecolors=colours, edgecolors="none"))
        ax.set_xlim(-1.3, 1.3)
        ax.set_ylim(-1.5, 1.5)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("retarget.png"))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)

    target_rig = toy_rig(num_shapes=20, resolution=24, correctives=True, seed=1)
    mapping = (torch.rand(52, 20, generator=g) < 0.15).float() * torch.rand(52, 20, generator=g)
    mapping = mapping / mapping.sum(0).clamp_min(1.0)

    def truth(source: torch.Tensor) -> torch.Tensor:
        return target_rig.clamp(source @ mapping)

    model = BlendshapeAdapter(52, target_rig, window=5, hidden=128)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    t0 = time.perf_counter()
    for step in range(args.steps):
        clean = performance(16, 64, g)
        loss, terms = adapter_loss(target_rig, model(jitter(clean, g)), truth(clean), smooth_weight=0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % max(1, args.steps // 5) == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {loss.item():.3e}  " +
                  "  ".join(f"{k} {v.item():.2e}" for k, v in terms.items()))
    print(f"trained {args.steps} steps in {time.perf_counter() - t0:.1f} s")

    model.eval()
    clean = performance(1, args.frames, g)
    noisy = jitter(clean, g)
    target = truth(clean)
    with torch.no_grad():
        predicted = model(noisy)
        # streaming: one frame at a time, as a real-time rig runs it (the same outputs)
        state, streamed = None, []
        for t in range(args.frames):
            w, state = model.step(noisy[:, t], state)
            streamed.append(w)
        assert torch.allclose(torch.stack(streamed, 1), predicted, atol=1e-5)
    one_euro = OneEuroFilter(min_cutoff=1.5, beta=0.5, d_cutoff=1.0, rate=RATE)
    filtered = target_rig.clamp(one_euro.filter(predicted))

    def report(name: str, w: torch.Tensor) -> None:
        error = target_rig.vertex_mse(w, target).sqrt().item() * math.sqrt(3)
        shake = temporal_smoothness(w, 2, target_rig).sqrt().item() * math.sqrt(3)
        print(f"{name:28s} vertex error (RMS distance) {error:.4f}   jitter (RMS acceleration) {shake:.5f}")

    report("true target", target)
    report("adapter", predicted)
    report("adapter + One Euro filter", filtered)

    picks = torch.linspace(0, args.frames - 1, 4).long().tolist()
    meshes, titles = [], []
    for t in picks:
        meshes += [target_rig(target[0, t]), target_rig(filtered[0, t])]
        titles += [f"truth t={t}", f"retargeted t={t}"]
    render_strip(target_rig, meshes, titles, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
