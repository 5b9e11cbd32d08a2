"""A few training steps of a TripSE FER model on synthetic 48x48 grey "faces", printing throughput.

    python examples/train_fer.py [--model resnet18|convnext] [--variant 1..4] [--steps 5] [--batch 32]
                                 [--reference] [--threads 2]

The faces are random blobs (two eyes and a mouth whose curvature sets the label among FER2013's seven
expressions) plus noise: enough for the loss to move, nothing to learn expressions from. ``--reference``
runs the same model with the eager TripSE blocks (the benchmark's peer). ``--model convnext`` needs timm
(``pip install 'facekernels[fer]'``) and takes the faces upsampled to 224x224 RGB.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from facekernels.models import convnext_tripse, resnet18_tripse

EXPRESSIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def synthetic_faces(batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.randint(0, len(EXPRESSIONS), (batch,), generator=generator)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 48), torch.linspace(-1, 1, 48), indexing="ij")
    faces = torch.exp(-(xx**2 + yy**2) / 0.5).expand(batch, 48, 48).clone()
    for eye in (-0.35, 0.35):
        faces -= 0.6 * torch.exp(-((xx - eye) ** 2 + (yy + 0.25) ** 2) / 0.01)
    curve = (labels.float() / (len(EXPRESSIONS) - 1) - 0.5)[:, None, None]  # the mouth's curvature
    mouth_y = 0.45 + curve * (xx**2 - 0.1)
    faces -= 0.5 * torch.exp(-((yy - mouth_y) ** 2) / 0.004) * (xx.abs() < 0.4)
    faces += 0.1 * torch.randn(faces.shape, generator=generator)
    return faces[:, None], labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("resnet18", "convnext"), default="resnet18")
    parser.add_argument("--variant", type=int, default=1, choices=(1, 2, 3, 4))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--reference", action="store_true", help="eager TripSE blocks instead of the fused ops")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.model == "resnet18":
        model = resnet18_tripse(num_classes=7, in_chans=1, variant=args.variant, reference=args.reference)
    else:
        model = convnext_tripse(num_classes=7, in_chans=3, variant=args.variant, reference=args.reference)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for step in range(args.steps + 1):  # step 0 warms up and is not timed
        faces, labels = synthetic_faces(args.batch, generator)
        if args.model == "convnext":
            faces = F.interpolate(faces, size=224, mode="bilinear", align_corners=False).expand(-1, 3, -1, -1)
        start = time.perf_counter()
        loss = F.cross_entropy(model(faces), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seconds = time.perf_counter() - start
        if step == 0:
            continue
        print(f"step {step}: loss {loss.item():.3f}, {seconds * 1e3:.0f} ms, {args.batch / seconds:.1f} images/s")


if __name__ == "__main__":
    main()
