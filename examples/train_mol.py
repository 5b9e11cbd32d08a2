"""Train MOL for a few steps on synthetic clips and print the losses and the throughput.

    python examples/train_mol.py --steps 3 --batch-size 4 [--shared-batchnorm] [--threads 2]

The clips are random (shaped as the released dataset's: video [B, 1, 8, 128, 128], TV-L1 flows
[B, 2, 128, 128, 7], landmarks [B, 136, 8], labels in 0..4), so the losses only show that the step runs;
for real data see facekernels.data.MOLClips. Optimiser and loss weights are the released train.py's.
"""

from __future__ import annotations

import argparse
import time

import torch

from facekernels.models import MOL, mol_loss


def synthetic_batch(b: int, generator: torch.Generator):
    video = torch.rand(b, 1, 8, 128, 128, generator=generator)
    flows = torch.randn(b, 2, 128, 128, 7, generator=generator)
    base = torch.rand(b, 68, 2, 1, generator=generator) * 80 + 24
    landmarks = (base + torch.randn(b, 68, 2, 8, generator=generator)).flatten(1, 2)
    label = torch.randint(0, 5, (b,), generator=generator)
    return video, flows, landmarks, label


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--shared-batchnorm", action="store_true", help="one set of BatchNorm statistics for all pairs")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(2023)
    model = MOL(shared_batchnorm=args.shared_batchnorm).to(args.device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-3)
    g = torch.Generator().manual_seed(0)
    for step in range(args.steps):
        video, flows, landmarks, label = (t.to(args.device) for t in synthetic_batch(args.batch_size, g))
        start = time.perf_counter()
        optimizer.zero_grad()
        loss = mol_loss(*model(video), label, flows, landmarks)
        loss.total.backward()
        optimizer.step()
        if args.device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        print(f"step {step}: total {loss.total.item():.4f}  mer {loss.mer.item():.4f}  flow {loss.flow.item():.4f}  "
              f"landmark {loss.landmark.item():.4f}  {seconds:.2f} s  {args.batch_size / seconds:.2f} clips/s")


if __name__ == "__main__":
    main()
