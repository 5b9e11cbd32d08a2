"""Train the OPEN engagement baseline (EngagementSTGCN) on synthetic MediaPipe Holistic sequences and report
accuracy, F1 and AUC on subjects it never saw.

    python examples/train_engagement.py [--subjects 20] [--windows 6] [--frames 30] [--epochs 5] [--threads 2]

Each subject has a resting pose (a random 543-point template, 3 coordinates, shifted per subject) and a
propensity to engage; each window of ``--frames`` frames at 15 fps is labelled engaged or not, and an
engaged window moves more: the head (face and the pose's head points) nods and turns with a larger
amplitude and the hands gesture more, on top of tracker noise. Hands drop out of view for stretches of
frames and the face is lost in a few frames (the mask). One tabular feature per window carries a weak copy
of the label (as a questionnaire or speech-activity feature would). The split is by subject: the first of
three subject-wise folds (facekernels.data.subject_kfold), a third of the subjects held out whole, so the scores measure generalisation to new people.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

from facekernels.bench.workloads_engagement import synthetic_mask
from facekernels.data import subject_kfold
from facekernels.models import EngagementSTGCN

FPS = 15.0
HEAD = list(range(0, 468)) + list(range(489, 500))  # the face mesh and the pose's head points (0-10)
HANDS = list(range(468, 489)) + list(range(522, 543))


def synthesise(subjects: int, windows: int, frames: int, generator: torch.Generator):
    """x [S*W, 3, T, 543], mask [S*W, T, 543], tabular [S*W, 1], labels [S*W], subject ids [S*W]."""
    n = subjects * windows
    subject = torch.arange(subjects).repeat_interleave(windows)
    propensity = torch.rand(subjects, generator=generator)[subject]
    labels = (torch.rand(n, generator=generator) < 0.25 + 0.5 * propensity).float()
    template = torch.randn(1, 3, 1, 543, generator=generator)
    offset = 0.3 * torch.randn(subjects, 3, 1, 1, generator=generator)[subject]
    t = torch.arange(frames) / FPS
    x = (template + offset).expand(n, 3, frames, 543).clone()

    def motion(points, amplitude):  # a random slow oscillation per window and coordinate
        freq = 0.3 + 0.7 * torch.rand(n, 3, 1, 1, generator=generator)
        phase = 2 * math.pi * torch.rand(n, 3, 1, 1, generator=generator)
        wave = torch.sin(2 * math.pi * freq * t[None, None, :, None] + phase)
        x[..., points] += amplitude[:, None, None, None] * wave

    # engaged windows move more, but the amplitude also varies from window to window: the classes overlap
    motion(HEAD, 0.1 + 0.3 * torch.rand(n, generator=generator) + 0.12 * labels)
    motion(HANDS, 0.1 + 0.4 * torch.rand(n, generator=generator) + 0.15 * labels)
    x += 0.1 * torch.randn(x.shape, generator=generator)
    mask = synthetic_mask(n, frames, generator)
    tabular = (labels + 1.5 * torch.randn(n, generator=generator))[:, None]
    return x, mask, tabular, labels, subject


def binary_scores(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy and F1 at probability 0.5, and ROC AUC (the Mann-Whitney statistic, ties counted half)."""
    predicted = (logits > 0).float()
    tp = float((predicted * labels).sum())
    fp = float((predicted * (1 - labels)).sum())
    fn = float(((1 - predicted) * labels).sum())
    positives, negatives = logits[labels == 1], logits[labels == 0]
    if len(positives) and len(negatives):
        diff = positives[:, None] - negatives[None, :]
        auc = float((diff > 0).float().mean() + 0.5 * (diff == 0).float().mean())
    else:
        auc = float("nan")
    return {"accuracy": float((predicted == labels).float().mean()),
            "f1": 2 * tp / max(2 * tp + fp + fn, 1.0), "auc": auc}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=20)
    parser.add_argument("--windows", type=int, default=6, help="windows per subject")
    parser.add_argument("--frames", type=int, default=30, help="frames per window (15 fps)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)

    x, mask, tabular, labels, subject = synthesise(args.subjects, args.windows, args.frames, g)
    train, test = (torch.from_numpy(i) for i in next(subject_kfold(subject.numpy(), 3, seed=args.seed)))
    assert not set(subject[train].tolist()) & set(subject[test].tolist())
    model = EngagementSTGCN(3, num_classes=1, tabular_features=1, channels=(16, 32), strides=(2, 2), hidden=32)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    print(f"{len(train)} training windows from {len(subject[train].unique())} subjects, {len(test)} test windows "
          f"from {len(subject[test].unique())} others; T = {args.frames} frames; "
          f"{sum(p.numel() for p in model.parameters())} parameters")
    start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = train[torch.randperm(len(train), generator=g)]
        total = 0.0
        for i in range(0, len(order), args.batch):
            idx = order[i: i + args.batch]
            if len(idx) < 2:
                continue  # batch norm needs two samples
            logits = model(x[idx], mask[idx], tabular[idx])[:, 0]
            loss = F.binary_cross_entropy_with_logits(logits, labels[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch + 1}: training loss {total / len(order):.4f}")
    model.eval()
    with torch.no_grad():
        logits = model(x[test], mask[test], tabular[test])[:, 0]
    scores = binary_scores(logits, labels[test])
    print(f"held-out subjects: accuracy {scores['accuracy']:.3f}, F1 {scores['f1']:.3f}, AUC {scores['auc']:.3f} "
          f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
