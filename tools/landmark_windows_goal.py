"""Issue 21's LandmarkWindows goal: 35 hours of 543-point Holistic landmarks at 30 fps (3.8 M frames,
synthetic) windowed into 10-s samples with masks, on 2 CPU threads, in < 60 s and < 4 GB peak memory.

    python tools/landmark_windows_goal.py [--hours 35] [--chunk-rows 8192] [--normalize] [--json out.json]

The source: the stream is generated chunk by chunk in memory, as the column chunks a Parquet reader
hands over (one contiguous float32 array per column: 1629 coordinate and 33 visibility columns plus
frame, subject, session and label), never written to disk: 35 h as float32 columns is ~26 GB, more than
this machine's free disk, and as CSV text ~60 GB. Each chunk is a set of zero-copy slices of a pool of
synthetic frames, so generating costs next to nothing (measured on its own and reported); what is timed
is everything LandmarkWindows does from the columns on: stacking them into [C, n, V], placing the frames
on each stream's frame grid (1 % of the frames dropped: masked frames), the validity masks (NaN points,
absent hands, pose visibility < 0.5) and every 10-s window as x [m, 3, 300, 543] float32 with mask
[m, 300, 543], consumed batch by batch by iter_landmark_windows (the windows themselves are 24.6 GB
float32: no dataset of them fits 4 GB, see docs/landmarks.md).

Peak memory is the process's ru_maxrss (resident set, including the interpreter, torch and numpy).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from facekernels.data import (
    HOLISTIC_PART_RANGES,
    HOLISTIC_SHOULDERS,
    ColumnMap,
    Normalization,
    iter_landmark_windows,
)

FPS = 30
STREAM_HOURS = 1.0  # 35 h = 35 streams (subject, session) of an hour each


def synthetic_pool(chunk_rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """One contiguous float32 column per name of ``2 * chunk_rows`` synthetic Holistic frames: a common
    drift plus noise, hands absent in runs of 2 s a third of the time, 0.5 % NaN points, pose visibility
    uniform in [0, 1]."""
    columns = ColumnMap.holistic()
    rng = np.random.default_rng(seed)
    pool_rows = 2 * chunk_rows
    nodes = columns.num_nodes
    base = rng.random((nodes, 3), dtype=np.float32)
    drift = np.cumsum(rng.normal(0, 0.002, (pool_rows, 1, 1)).astype(np.float32), axis=0)
    frames = base[None] + drift + rng.normal(0, 0.003, (pool_rows, nodes, 3)).astype(np.float32)  # [P, V, 3]
    for part in ("left_hand", "right_hand"):  # each hand absent over runs of ~2 s, a third of the time
        first, stop = HOLISTIC_PART_RANGES[part]
        absent = np.repeat(rng.random(pool_rows // 60 + 1) < 0.33, 60)[:pool_rows]
        frames[absent, first:stop] = np.nan
    frames[rng.random((pool_rows, nodes)) < 0.005] = np.nan
    pool = {}  # one contiguous column per name, as a columnar reader returns them
    for c, names in enumerate(columns.points):
        for v, name in enumerate(names):
            pool[name] = np.ascontiguousarray(frames[:, v, c])
    for v, name in enumerate(columns.visibility):
        if name is not None and name.startswith("pose_"):
            pool[name] = rng.random(pool_rows, dtype=np.float32)
    return pool


def synthetic_chunks(pool: dict[str, np.ndarray], hours: float, chunk_rows: int, seed: int = 0):
    """Column chunks of ``hours`` of landmarks cut from ``pool`` (zero-copy slices at varying offsets):
    streams of ``STREAM_HOURS`` with 1 % of their frames dropped."""
    rng = np.random.default_rng(seed)
    pool_rows = len(next(iter(pool.values())))
    total = round(hours * 3600 * FPS)
    per_stream = round(STREAM_HOURS * 3600 * FPS)
    for s in range(-(-total // per_stream)):
        subject, session = f"p{s // 3:02d}", f"s{s % 3}"
        stream_frames = min(per_stream, total - s * per_stream)
        frame = 0
        chunk_index = 0
        while frame < stream_frames:
            grid = np.arange(frame, min(frame + chunk_rows, stream_frames))
            kept = grid[rng.random(len(grid)) >= 0.01]
            n = len(kept)
            offset = (chunk_index * 997) % (pool_rows - n + 1)
            chunk = {name: column[offset:offset + n] for name, column in pool.items()}
            chunk["frame"] = kept
            chunk["subject"] = np.full(n, subject)
            chunk["session"] = np.full(n, session)
            chunk["label"] = np.full(n, (s + chunk_index // 4) % 2)
            yield chunk
            frame += len(grid)
            chunk_index += 1


def parquet_rate(pool: dict[str, np.ndarray], hours: float, chunk_rows: int) -> dict[str, float] | str:
    """The same pipeline from a Parquet file of ``hours`` (written first, untimed): what reading and
    decoding the columns add. Run after the main measurement, so it does not raise its peak memory."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return "skipped: no pyarrow"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "holistic.parquet"
        writer = None
        rows = 0
        for chunk in synthetic_chunks(pool, hours, chunk_rows, seed=1):
            table = pa.table(chunk)
            writer = writer or pq.ParquetWriter(path, table.schema, compression="none")
            writer.write_table(table, row_group_size=chunk_rows)
            rows += len(chunk["frame"])
        writer.close()
        size = path.stat().st_size
        start = time.perf_counter()
        windows = sum(len(b["labels"]) for b in iter_landmark_windows(path, ColumnMap.holistic(), fps=FPS, window=10.0,
                                                                       chunk_rows=chunk_rows, progress=False))
        seconds = time.perf_counter() - start
    return {"hours": hours, "rows": rows, "windows": windows, "file_gb": round(size / 1e9, 2),
            "seconds": round(seconds, 2), "frames_per_second": round(rows / seconds)}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # ru_maxrss: KiB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=35.0)
    parser.add_argument("--chunk-rows", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--normalize", action="store_true", help="also centre and scale on the shoulders")
    parser.add_argument("--parquet-hours", type=float, default=0.25,
                        help="also write this much to a temporary Parquet file and time reading it back "
                             "(needs pyarrow; 0: skip)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    pool = synthetic_pool(args.chunk_rows)
    start = time.perf_counter()
    generated = sum(len(chunk["frame"]) for chunk in synthetic_chunks(pool, args.hours, args.chunk_rows))
    generate_s = time.perf_counter() - start
    rss_after_generation = peak_rss_gb()

    normalize = Normalization(HOLISTIC_SHOULDERS, HOLISTIC_SHOULDERS) if args.normalize else None
    windows = valid = 0
    shape = None
    cpu_before = cpu_seconds()
    start = time.perf_counter()
    for batch in iter_landmark_windows(synthetic_chunks(pool, args.hours, args.chunk_rows), ColumnMap.holistic(), fps=FPS,
                                       window=10.0, normalize=normalize, chunk_rows=args.chunk_rows):
        windows += len(batch["labels"])
        # numpy's count: torch's sum over a bool tensor widens every element to int64 (34 ms a batch here,
        # a quarter of the run, against 0.1 ms): the consumer's cost, not the windowing's
        valid += int(np.count_nonzero(batch["mask"].numpy()))
        shape = tuple(batch["x"].shape[1:])
    total_s = time.perf_counter() - start
    cpu_s = cpu_seconds() - cpu_before
    window_s = total_s - generate_s
    grid_frames = round(args.hours * 3600 * FPS)
    result = {
        "hours": args.hours, "grid_frames": grid_frames, "rows": generated, "windows": windows,
        "window_shape": shape, "valid_fraction": valid / max(1, windows * 300 * 543),
        "threads": args.threads, "chunk_rows": args.chunk_rows, "normalize": args.normalize,
        "seconds_total": round(total_s, 2), "seconds_generating": round(generate_s, 2),
        "seconds_windowing": round(window_s, 2),
        "cpu_seconds_total": round(cpu_s, 2),  # user + system, both threads: less sensitive to a busy machine
        "load_average_1min": round(os.getloadavg()[0], 2),
        "frames_per_second": round(generated / window_s), "windows_per_second": round(windows / window_s, 1),
        "output_gb_per_second": round(windows * 3 * 300 * 543 * 4 / window_s / 1e9, 2),
        "peak_rss_gb": round(peak_rss_gb(), 2), "peak_rss_gb_generation_only": round(rss_after_generation, 2),
        "torch": torch.__version__,
    }
    if args.parquet_hours > 0:
        result["parquet"] = parquet_rate(pool, args.parquet_hours, args.chunk_rows)
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    ok = window_s < 60 and result["peak_rss_gb"] < 4
    print(f"goal (< 60 s, < 4 GB): {'met' if ok else 'NOT met'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
