"""Issue 20's region-flow goal: ``facekernels.me.region_flow_features`` against the released extraction loop
(``facekernels.bench.region_flow_peer``, the same OpenCV calls, region summaries as per-pixel Python
loops) on one synthetic face video; the goal was a 5x ratio with identical outputs.

    python tools/region_flow_goal.py [--frames 300] [--k 30] [--repeats 3] [--workers 1 2] [--json out.json]

Same process, same inputs, interleaved, one untimed warm-up each, medians reported. Each run also times
the Farneback calls on their own (the function wrapped for the run), since both sides make the same calls:
that part is a floor neither side can go under without other flows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np


def timed_farneback(cv2):
    """Wrap cv2.calcOpticalFlowFarneback to add up its time; returns (restore, seconds-so-far)."""
    original = cv2.calcOpticalFlowFarneback
    spent = [0.0]

    def wrapped(*args):
        start = time.perf_counter()
        try:
            return original(*args)
        finally:
            spent[0] += time.perf_counter() - start

    cv2.calcOpticalFlowFarneback = wrapped
    return (lambda: setattr(cv2, "calcOpticalFlowFarneback", original)), spent


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--k", type=int, default=30, help="window length (30: SAMM-LV, 50: CAS(ME)^3)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--head-drift", type=float, default=0.0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    import cv2

    from facekernels.bench.region_flow_peer import released_region_flow
    from facekernels.me import region_flow_features, synthetic_face_video

    video = synthetic_face_video(args.frames, head_drift=args.head_drift, seed=0)
    runs = {"released loop": lambda: np.stack(released_region_flow(video.frames, video.landmarks, args.k))}
    for w in args.workers:
        runs[f"region_flow_features workers={w}"] = (
            lambda w=w: region_flow_features(video.frames, video.landmarks, args.k, workers=w))
    outputs = {name: run() for name, run in runs.items()}  # warm-up
    reference = outputs["released loop"]
    identical = {name: bool(np.array_equal(out, reference)) for name, out in outputs.items()}
    times = {name: [] for name in runs}
    flow_times = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            restore, spent = timed_farneback(cv2)
            start = time.perf_counter()
            try:
                run()
            finally:
                elapsed = time.perf_counter() - start
                restore()
            times[name].append(elapsed)
            flow_times[name].append(spent[0])
    peer = statistics.median(times["released loop"])
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except OSError:
        commit = ""
    result = {
        "video": {"frames": args.frames, "shape": list(video.frames.shape), "k": args.k,
                  "windows": int(reference.shape[0]), "head_drift": args.head_drift},
        "metadata": {"commit": commit, "python": platform.python_version(), "numpy": np.__version__,
                     "opencv": cv2.__version__, "cpu": platform.processor() or platform.machine(),
                     "cores": len(os.sched_getaffinity(0)), "load_average": list(os.getloadavg())},
        "runs": {},
    }
    print(f"{args.frames} frames, k={args.k}, {reference.shape[0]} windows; load {os.getloadavg()[0]:.1f}")
    for name in runs:
        median = statistics.median(times[name])
        farneback = statistics.median(flow_times[name])
        result["runs"][name] = {"seconds": times[name], "median_s": median, "farneback_median_s": farneback,
                                "ratio_to_released": peer / median, "identical": identical[name]}
        print(f"{name:36s} {median:7.3f} s  (Farneback {farneback:6.3f} s, rest {median - farneback:6.3f} s) "
              f"released / this = {peer / median:5.2f}x  identical={identical[name]}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
