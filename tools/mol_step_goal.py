"""Time MOL's training step (forward, the three losses, backward; B = 8 clips of 8 x 128 x 128) against the
released network as published (``facekernels.bench.workloads_mol.MOLReleased`` and its train.py loss):
the candidates interleaved in one process (``facekernels.bench.harness.time_interleaved``: warm-up,
rotating order), ``--rounds`` rounds; medians. Also
counts each step's FLOPs (torch.utils.flop_counter) for the bound in docs/benchmarks.md.

    python tools/mol_step_goal.py [--rounds 5] [--threads 2] [--flops]
"""

from __future__ import annotations

import argparse
import torch

from facekernels.bench.harness import time_interleaved
from facekernels.bench.workloads_mol import MOLReleased, released_mol_loss, synthetic_batch
from facekernels.models import MOL, mol_loss


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--flops", action="store_true", help="also count each candidate's FLOPs")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ours, shared, peer = MOL().train(), MOL(shared_batchnorm=True).train(), MOLReleased().train()
    shared.load_state_dict(ours.state_dict())
    peer.load_state_dict(ours.state_dict())
    video, flows, landmarks, label = synthetic_batch(args.batch)
    candidates = {
        "MOL()": lambda: mol_loss(*ours(video), label, flows, landmarks).total.backward(),
        "MOL(shared_batchnorm=True)": lambda: mol_loss(*shared(video), label, flows, landmarks).total.backward(),
        "released (peer)": lambda: released_mol_loss(*peer(video), label, flows, landmarks).backward(),
    }
    timing = time_interleaved(candidates, "cpu", repeats=args.rounds, budget_s=0.0, min_repeats=args.rounds)
    medians = {name: t["median_s"] for name, t in timing.items()}
    peer_time = medians["released (peer)"]
    for name, t in timing.items():
        print(f"{name:28s} median {t['median_s']:.2f} s  IQR {t['iqr_s']:.2f} s  "
              f"released / this {peer_time / t['median_s']:.2f}x")
    if args.flops:
        from torch.utils.flop_counter import FlopCounterMode

        for name in ("MOL()", "released (peer)"):
            with FlopCounterMode(display=False) as counter:
                candidates[name]()
            print(f"{name}: {counter.get_total_flops() / 1e9:.0f} GFLOP per step")
    return medians


if __name__ == "__main__":
    main()
