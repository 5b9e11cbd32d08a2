"""Benchmark harness: interleaved timing of facekernels against its plain-PyTorch peers (eager and
torch.compile'd), the machine's measured ceilings, and the report (table, JSON, PNG chart).

Rules (kornia's, adapted): one process and the same inputs for every candidate; warm-up first; samples
interleaved across candidates in rotating order; median and IQR; fixed seed and thread count; the device
synchronised inside the timed region.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .._json import write_json
from .._timing import summarize, synchronize, time_once
from .cases import Case, Workload

# ---- timing ------------------------------------------------------------------------------------------


def time_interleaved(
    fns: dict[str, Callable[[], object]], device: str, repeats: int, min_sample_s: float = 1e-2,
    warmup_s: float = 0.1, budget_s: float = 30.0, min_repeats: int = 7,
) -> dict[str, dict]:
    """Median and IQR (seconds) of each callable; each sample runs enough calls to last min_sample_s.

    Samples of about 10 ms: the first call after switching candidates pays for the previous one's
    footprint (cache, and on CPU fresh pages for memory the allocator handed back), which a sample of a
    few calls would charge almost entirely to one call. When one round over all candidates is slow (eager
    peers of a second or more), the rounds are cut to fit budget_s, never below min_repeats."""
    one = {}
    for name, fn in fns.items():
        # Warm up for a while (allocator, thread pool, caches, clocks), not just a call or two; a call
        # slower than the whole warm-up budget is warm after two.
        warm_start = time.perf_counter()
        calls = 0
        while calls < 2 or (time.perf_counter() - warm_start < warmup_s and calls < 200):
            fn()
            calls += 1
        synchronize(device)
        one[name] = max(time_once(fn, device), 1e-7)
    # A sample lasts at least five calls of the fastest candidate: the first call after a switch pays for
    # the previous candidate's footprint (on CPU, re-faulting memory a peer churned through by the GB can
    # cost a 10 ms op several times its own time), and one-call samples would charge it all to one call.
    sample_s = max(min_sample_s, 5 * min(one.values()))
    inner = {name: max(1, min(1000, math.ceil(sample_s / t))) for name, t in one.items()}
    round_s = sum(one[name] * inner[name] for name in fns)
    repeats = max(min(repeats, min_repeats), min(repeats, int(budget_s / max(round_s, 1e-9))))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            samples[name].append(time_once(fns[name], device, inner[name]))
    return {name: {**summarize(values), "calls_per_sample": inner[name]} for name, values in samples.items()}


# ---- ceilings ----------------------------------------------------------------------------------------


def measure_ceilings(device: str, quick: bool = False) -> dict:
    """The machine's copy bandwidth (a large tensor copy, bytes read + written) and SGEMM rate."""
    # 64 MiB each way even when quick: smaller copies fit in the last-level cache and overstate the ceiling
    n_copy = 64 * 2**20 // 4
    src = torch.randn(n_copy, device=device)
    dst = torch.empty_like(src)
    copy = time_interleaved({"copy": lambda: dst.copy_(src)}, device, 5 if quick else 15, 5e-3)["copy"]
    m = 1024 if quick or device == "cpu" else 8192
    a = torch.randn(m, m, device=device)
    b = torch.randn(m, m, device=device)
    out = torch.empty(m, m, device=device)
    gemm = time_interleaved({"gemm": lambda: torch.mm(a, b, out=out)}, device, 5 if quick else 10, 2e-2)["gemm"]
    return {
        "copy_gbps": 2 * src.numel() * 4 / copy["median_s"] / 1e9,
        "sgemm_gflops": 2 * m**3 / gemm["median_s"] / 1e9,
        "copy_bytes": 2 * src.numel() * 4,
        "sgemm_size": m,
    }


# ---- one workload ------------------------------------------------------------------------------------


def _make_step(fn: Callable, case: Case, mode: str, grad_out: torch.Tensor | None) -> Callable[[], object]:
    inputs = case.inputs
    if mode == "forward":
        def step():
            with torch.no_grad():
                return fn(*inputs)
        return step

    params = case.params

    def step():
        for p in params:
            p.grad = None
        fn(*inputs).backward(grad_out)

    return step


def run_workload(w: Workload, device: str, repeats: int, compile_peers: bool, on_step=None) -> list[dict]:
    case = w.build(device)
    candidates: dict[str, Callable] = dict(case.candidates)
    if compile_peers:
        for name in w.compiled_peers:
            candidates[f"{name}+compile"] = torch.compile(case.candidates[name], dynamic=False)
    with torch.no_grad():
        reference = case.candidates["facekernels"](*case.inputs).float()
        max_error = {
            name: float((fn(*case.inputs).float() - reference).abs().max()) if reference.numel() else 0.0
            for name, fn in candidates.items()
        }
    grad_out = torch.randn_like(reference)
    rows = []
    for mode in w.modes:
        steps = {name: _make_step(fn, case, mode, grad_out) for name, fn in candidates.items()}
        timing = time_interleaved(steps, device, repeats)
        flops = w.flops_forward + (w.flops_backward if mode != "forward" else 0)
        nbytes = w.bytes_forward + (w.bytes_backward if mode != "forward" else 0)
        ours = timing["facekernels"]["median_s"]
        rows.append({
            "op": w.op, "workload": w.name, "description": w.description, "mode": mode, "device": device,
            "flops": flops, "bytes": nbytes, "timing": timing, "max_abs_diff_vs_facekernels": max_error,
            "speedup": {name: t["median_s"] / ours for name, t in timing.items() if name != "facekernels"},
        })
        if on_step:
            on_step(w, mode)
    return rows


# ---- metadata and report -----------------------------------------------------------------------------


def _commit() -> str:
    if os.environ.get("FACEKERNELS_COMMIT"):
        return os.environ["FACEKERNELS_COMMIT"]
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=os.getcwd(), capture_output=True,
                             text=True, timeout=5, check=False)
        if out.returncode == 0:
            return out.stdout.strip()
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5, check=False)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def metadata(device: str) -> dict:
    import facekernels

    meta = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": _commit(),
        "facekernels": facekernels.__version__,
        "build_info": facekernels.build_info(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "cpu": _cpu_name(),
        "threads": torch.get_num_threads(),
        "device": device,
    }
    if device.startswith("cuda"):
        meta["gpu"] = torch.cuda.get_device_name()
        meta["cuda"] = torch.version.cuda
    return meta


def _rate(row: dict, name: str, ceilings: dict) -> tuple[float, float]:
    t = row["timing"][name]["median_s"]
    return (row["flops"] / t / 1e9 / ceilings["sgemm_gflops"], row["bytes"] / t / 1e9 / ceilings["copy_gbps"])


def format_table(rows: list[dict], ceilings: dict) -> str:
    head = (f"{'workload':<17} {'mode':<17} {'candidate':<15} {'median ms':>10} {'IQR ms':>8} {'speedup':>8} "
            f"{'%GEMM':>6} {'%copy':>6} {'max|diff|':>9}")
    lines = [head, "-" * len(head)]
    for row in rows:
        for name, t in row["timing"].items():
            flop_frac, byte_frac = _rate(row, name, ceilings)
            speed = f"{row['speedup'][name]:7.2f}x" if name in row["speedup"] else ""
            lines.append(
                f"{row['workload']:<17} {row['mode']:<17} {name:<15} {t['median_s'] * 1e3:10.3f} "
                f"{t['iqr_s'] * 1e3:8.3f} {speed:>8} {100 * flop_frac:5.1f}% {100 * byte_frac:5.1f}% "
                f"{row['max_abs_diff_vs_facekernels'][name]:9.2e}"
            )
    lines.append(f"ceilings: copy {ceilings['copy_gbps']:.1f} GB/s, SGEMM {ceilings['sgemm_gflops']:.1f} GFLOP/s; "
                 "speedup = candidate time / facekernels time (>1: facekernels faster)")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels = [f"{r['workload']}\n{r['mode']}" for r in rows]
    peers = sorted({p for r in rows for p in r["speedup"]})
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(rows)), 4.5))
    width = 0.8 / max(1, len(peers))
    for i, peer in enumerate(peers):
        xs = [j + (i - (len(peers) - 1) / 2) * width for j in range(len(rows))]
        ys = [r["speedup"].get(peer, float("nan")) for r in rows]
        ax.bar(xs, ys, width, label=f"vs {peer}")
        for x, y in zip(xs, ys):
            if not math.isnan(y):
                ax.text(x, y, f"{y:.1f}", ha="center", va="bottom", fontsize=7)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("speedup of facekernels (x, log)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


class Progress:
    """A one-line progress bar on stderr."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        self.total, self.done, self.enabled = max(1, total), 0, enabled and sys.stderr.isatty()
        self.start = time.perf_counter()

    def step(self, label: str) -> None:
        self.done += 1
        if not self.enabled:
            print(f"[{self.done}/{self.total}] {label}", file=sys.stderr, flush=True)
            return
        filled = int(30 * self.done / self.total)
        elapsed = time.perf_counter() - self.start
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} {label:<40} "
                         f"{elapsed:6.1f}s")
        if self.done == self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def run(workloads: list[Workload], device: str, quick: bool, out_dir: Path | None, compile_peers: bool = True,
        repeats: int | None = None) -> dict:
    torch.manual_seed(0)
    repeats = repeats or (8 if quick else 25)
    progress = Progress(1 + sum(len(w.modes) for w in workloads))
    ceilings = measure_ceilings(device, quick)
    progress.step("ceilings")
    rows: list[dict] = []
    for w in workloads:
        rows.extend(run_workload(w, device, repeats, compile_peers,
                                 on_step=lambda w, mode: progress.step(f"{w.name} {mode}")))
    result = {"meta": metadata(device), "ceilings": ceilings, "repeats": repeats, "results": rows}
    print(format_table(rows, ceilings))
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        base = out_dir / f"{stamp}-{device.split(':')[0]}"
        latest = out_dir / f"latest-{device.split(':')[0]}"
        write_json(result, base.with_suffix(".json"))
        shutil.copyfile(base.with_suffix(".json"), latest.with_suffix(".json"))
        meta = result["meta"]
        title = (f"facekernels {meta['facekernels']} ({meta['commit']}), torch {meta['torch']}, "
                 f"{meta.get('gpu', meta['cpu'])}, {meta['threads']} threads")
        if plot(rows, base.with_suffix(".png"), title):
            shutil.copyfile(base.with_suffix(".png"), latest.with_suffix(".png"))
            print(f"results: {base.with_suffix('.json')} and {base.with_suffix('.png')}")
        else:
            print(f"results: {base.with_suffix('.json')} (matplotlib not installed: no chart)")
    return result
