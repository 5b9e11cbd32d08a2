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
from .cases import Case, Workload, WorkloadUnavailable

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


# A candidate whose samples' IQR exceeds this fraction of their median is flagged noisy (text table, JSON
# "noisy", chart): its median, and every speedup computed from it, is uncertain; rerun on a quieter machine.
NOISY_IQR_OVER_MEDIAN = 0.25


def flag_noisy(timing: dict[str, dict], threshold: float = NOISY_IQR_OVER_MEDIAN) -> dict[str, dict]:
    """Add ``iqr_over_median`` and ``noisy`` (IQR/median > threshold) to each candidate's timing, in place."""
    for t in timing.values():
        t["iqr_over_median"] = t["iqr_s"] / t["median_s"] if t["median_s"] > 0 else math.nan
        t["noisy"] = not t["iqr_over_median"] <= threshold
    return timing


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


def run_workload(w: Workload, device: str, repeats: int, compile_peers: bool, on_step=None,
                 noisy_threshold: float = NOISY_IQR_OVER_MEDIAN) -> list[dict]:
    case = w.build(device)
    try:
        if set(case.candidates) != set(w.candidates_on(device)):
            raise RuntimeError(f"bench: workload {w.name} on {device} declares the candidates "
                               f"{sorted(w.candidates_on(device))}, its case built {sorted(case.candidates)}")
        return _time_case(w, case, device, repeats, compile_peers, on_step, noisy_threshold)
    finally:
        if case.teardown is not None:
            case.teardown()  # restore what the case set (e.g. a CPU setting), also after an error


def _time_case(w: Workload, case: Case, device: str, repeats: int, compile_peers: bool, on_step,
               noisy_threshold: float) -> list[dict]:
    candidates: dict[str, Callable] = dict(case.candidates)
    if compile_peers:
        for name in (p for p in w.compiled_peers if p in case.candidates):
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
        timing = flag_noisy(time_interleaved(steps, device, repeats), noisy_threshold)
        flops = w.flops_forward + (w.flops_backward if mode != "forward" else 0)
        nbytes = w.bytes_forward + (w.bytes_backward if mode != "forward" else 0)
        ours = timing["facekernels"]["median_s"]
        rows.append({
            "op": w.op, "family": w.family, "workload": w.name, "description": w.description, "mode": mode,
            "device": device,
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


def format_table(rows: list[dict], ceilings: dict, noisy_threshold: float = NOISY_IQR_OVER_MEDIAN) -> str:
    ww = max([17] + [len(row["workload"]) for row in rows])  # stgcn_lrw_face68_adaptive: 25
    cw = max([15] + [len(name) for row in rows for name in row["timing"]])  # conv_einsum+compile: 19
    head = (f"{'workload':<{ww}} {'mode':<17} {'candidate':<{cw}} {'median ms':>10} {'IQR ms':>8} "
            f"{'noise':<5} {'speedup':>8} {'%GEMM':>6} {'%copy':>6} {'max|diff|':>9}")
    lines = [head, "-" * len(head)]
    for row in rows:
        for name, t in row["timing"].items():
            flop_frac, byte_frac = _rate(row, name, ceilings)
            speed = f"{row['speedup'][name]:7.2f}x" if name in row["speedup"] else ""
            lines.append(
                f"{row['workload']:<{ww}} {row['mode']:<17} {name:<{cw}} {t['median_s'] * 1e3:10.3f} "
                f"{t['iqr_s'] * 1e3:8.3f} {'NOISY' if t.get('noisy') else '':<5} {speed:>8} "
                f"{100 * flop_frac:5.1f}% {100 * byte_frac:5.1f}% "
                f"{row['max_abs_diff_vs_facekernels'][name]:9.2e}"
            )
    lines.append(f"ceilings: copy {ceilings['copy_gbps']:.1f} GB/s, SGEMM {ceilings['sgemm_gflops']:.1f} GFLOP/s; "
                 "speedup = candidate time / facekernels time (>1: facekernels faster)")
    noisy = sum(bool(t.get("noisy")) for row in rows for t in row["timing"].values())
    if noisy:
        lines.append(f"NOISY: {noisy} candidate(s) with IQR > {noisy_threshold:g} x median: their medians "
                     "and the speedups computed from them are uncertain (rerun on a quieter machine)")
    return "\n".join(lines)


# ---- chart -------------------------------------------------------------------------------------------

# One colour per peer formulation ("conv2d" and "conv2d+compile" share it, the compiled one hatched "//");
# formulations beyond the ten colours take them again with the next hatch, so that every peer's
# (colour, hatch) pair is its own.
PEER_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf")
PEER_HATCHES = ("", "..", "xx", "--", "oo", "++")
COMPILED = "+compile"
CHART_DPI = 100
_BAR_IN = 0.15          # inches per bar (about 15 px: one line of the 7-point value labels)
_GAP_IN = 0.06          # extra inches between two workload/mode groups of bars
_PANEL_IN = 0.75        # inches of a panel's title, x ticks and padding
_MODE_SHORT = {"forward": "fwd", "forward+backward": "fwd+bwd"}


def peer_styles(peers) -> dict[str, dict]:
    """The chart's face colour and hatch of each peer; no two peers share both."""
    bases = sorted({p.removesuffix(COMPILED) for p in peers})
    styles = {}
    for i, base in enumerate(bases):
        color = PEER_COLORS[i % len(PEER_COLORS)]
        hatch = PEER_HATCHES[(i // len(PEER_COLORS)) % len(PEER_HATCHES)]
        styles[base] = {"facecolor": color, "hatch": hatch}
        styles[base + COMPILED] = {"facecolor": color, "hatch": hatch + "//"}
    order = sorted(peers, key=lambda p: (p.removesuffix(COMPILED), p.endswith(COMPILED)))
    return {p: styles[p] for p in order}


def _families(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows by op family, in order of appearance (old results without "family": by op)."""
    families: dict[str, list[dict]] = {}
    for r in rows:
        families.setdefault(r.get("family") or r["op"], []).append(r)
    return families


def _panel_height(rows: list[dict], scale: float = 1.0) -> float:
    """A panel's height with its bars and gaps ``scale`` times their usual height."""
    return _PANEL_IN + scale * (_BAR_IN * sum(len(r["speedup"]) for r in rows) + _GAP_IN * len(rows))


def _columns(heights: list[float], ncols: int) -> list[list[int]]:
    """The panels, in order, cut into ``ncols`` consecutive columns whose tallest is as short as can be."""
    import itertools

    n = len(heights)
    best: tuple[float, list[list[int]]] = (math.inf, [])
    for cuts in itertools.combinations(range(1, n), ncols - 1):
        bounds = (0, *cuts, n)
        cols = [list(range(a, b)) for a, b in itertools.pairwise(bounds)]
        tallest = max(sum(heights[i] for i in col) for col in cols)
        if tallest < best[0] - 1e-9:
            best = (tallest, cols)
    return best[1]


def _draw_panel(ax, family: str, rows: list[dict], styles: dict[str, dict]) -> None:
    """Horizontal bars from 1 to each peer's speedup (log axis), grouped by workload and mode; the value at
    each bar's end, "*" marking a speedup whose peer or facekernels timing is noisy."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    y, ticks, labels, values = 0.0, [], [], []
    bars: dict[str, tuple[list[float], list[float]]] = {}
    for r in rows:
        peers = [p for p in styles if p in r["speedup"]]
        ticks.append(y + (len(peers) - 1) / 2)
        labels.append(f"{r['workload']} {_MODE_SHORT.get(r['mode'], r['mode'])}")
        ours_noisy = r["timing"].get("facekernels", {}).get("noisy", False)
        for p in peers:
            v = r["speedup"][p]
            bars.setdefault(p, ([], []))[0].append(y)
            bars[p][1].append(v)
            noisy = ours_noisy or r["timing"].get(p, {}).get("noisy", False)
            values.append((y, v, f"{v:.3g}x" + ("*" if noisy else "")))
            y += 1
        y += _GAP_IN / _BAR_IN
    for p, (ys, vs) in bars.items():
        ax.barh(ys, [v - 1 for v in vs], left=1, height=0.8, label=p, edgecolor="black", linewidth=0.4,
                **styles[p])
    finite = [v for _, v, _ in values if v > 0 and math.isfinite(v)] or [1.0]
    lo, hi = min(min(finite), 1.0), max(max(finite), 1.0)
    # room for the value labels (about 40 px of an axis some 300 px wide) beyond the bars on both sides
    span = math.log10(hi / lo)
    pad = max(0.12, 0.16 * span / (1 - 2 * 0.16))
    ax.set_xscale("log")
    ax.set_xlim(lo / 10 ** (pad if lo < 1 else 0.05), hi * 10 ** pad)
    # plain numbers (0.5, 1, 10, 100), and 2, 3 and 5 of each decade when the axis spans less than two
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    two_decades = math.log10(ax.get_xlim()[1] / ax.get_xlim()[0]) >= 2
    ax.xaxis.set_minor_formatter(NullFormatter() if two_decades else FuncFormatter(
        lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "235" else ""))
    for yv, v, text in values:
        if v > 0 and math.isfinite(v):
            ax.annotate(text, (v, yv), xytext=(2 if v >= 1 else -2, 0), textcoords="offset points",
                        ha="left" if v >= 1 else "right", va="center", fontsize=7,
                        in_layout=False)  # inside the x limits above; laying out ~100 labels is slow
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_ylim(y - _GAP_IN / _BAR_IN - 0.5, -0.5)
    ax.set_yticks(ticks, labels, fontsize=7.5)
    ax.tick_params(axis="y", length=0)
    ax.tick_params(axis="x", which="both", labelsize=7)
    ops = sorted({r["op"] for r in rows} - {family})
    ax.set_title(family + (f" ({', '.join(ops)})" if ops else ""), fontsize=8.5, loc="left")
    ax.grid(axis="x", which="major", linewidth=0.3, alpha=0.5)


def chart(rows: list[dict], title: str, max_columns: int = 3, width_in: float = 15.0, max_height_in: float = 16.0):
    """The benchmark's chart as a matplotlib Figure: one panel per op family (the workloads of one
    workloads_<family>.py), in up to ``max_columns`` columns, every peer's bars in their own colour and
    hatch, one legend for all. When the chart would be taller than ``max_height_in`` its bars are drawn
    thinner, down to 0.8 of their height (value labels still one line each). Needs matplotlib."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    families = _families(rows)
    styles = peer_styles({p for r in rows for p in r["speedup"]})
    ncols = max(1, min(max_columns, len(families)))
    width_in = min(width_in, 1.0 + 4.7 * ncols)
    # the legend: one column per peer formulation, its compiled variant (or a blank) under it
    bases = list(dict.fromkeys(p.removesuffix(COMPILED) for p in styles))
    per_row = max(1, min(len(bases), int(width_in / 1.45)))
    legend_cols = math.ceil(len(bases) / math.ceil(len(bases) / per_row)) if bases else 1
    blank = Patch(visible=False, label=" ")
    handles = [h for b in bases for h in (
        Patch(label=b, edgecolor="black", linewidth=0.4, **styles[b]) if b in styles else blank,
        Patch(label=b + COMPILED, edgecolor="black", linewidth=0.4, **styles[b + COMPILED])
        if b + COMPILED in styles else blank)]
    legend_rows = math.ceil(len(handles) / legend_cols) if handles else 0
    handles += [blank] * (legend_rows * legend_cols - len(handles))
    head_in = 0.52 + 0.2 * legend_rows
    for scale in (1.0, 0.95, 0.9, 0.85, 0.8):
        heights = [_panel_height(fam_rows, scale) for fam_rows in families.values()]
        columns = _columns(heights, ncols) if families else [[]]
        body_in = max([sum(heights[i] for i in col) for col in columns] + [1.0])
        if head_in + body_in <= max_height_in:
            break
    fig = plt.figure(figsize=(width_in, head_in + body_in), dpi=CHART_DPI, layout="constrained")
    head, body = fig.subfigures(2, 1, height_ratios=[head_in, body_in])
    noisy = any(t.get("noisy") for r in rows for t in r["timing"].values())
    head.text(0.5, 1 - 0.06 / head_in, title, ha="center", va="top", fontsize=9)
    note = "; *: a noisy timing, IQR large against the median" if noisy else ""
    head.text(0.5, 1 - 0.28 / head_in, "bars: facekernels speedup = peer time / facekernels time (log scale; "
              f"right of 1: facekernels faster){note}", ha="center", va="top", fontsize=8)
    if handles:
        head.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 1 - 0.5 / head_in),
                    ncols=legend_cols, fontsize=8, frameon=False, handlelength=2.2, handleheight=1.1,
                    columnspacing=1.2, borderaxespad=0, borderpad=0)
    for col, sub in zip(columns, body.subfigures(1, ncols) if ncols > 1 else [body]):
        if not col:
            continue
        used = sum(heights[i] for i in col)
        ratios = [heights[i] for i in col] + ([body_in - used] if body_in - used > 1e-6 else [])
        axes = sub.subplots(len(ratios), 1, gridspec_kw={"height_ratios": ratios}, squeeze=False)[:, 0]
        names = list(families)
        for ax, i in zip(axes, col):
            _draw_panel(ax, names[i], families[names[i]], styles)
        for ax in axes[len(col):]:
            ax.set_axis_off()
    return fig


def plot(rows: list[dict], path: Path, title: str) -> bool:
    """Save :func:`chart` as a PNG at ``path``; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig = chart(rows, title)
    fig.savefig(path, dpi=CHART_DPI)
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
        repeats: int | None = None, noisy_threshold: float = NOISY_IQR_OVER_MEDIAN) -> dict:
    torch.manual_seed(0)
    repeats = repeats or (8 if quick else 25)
    progress = Progress(1 + sum(len(w.modes) for w in workloads))
    ceilings = measure_ceilings(device, quick)
    progress.step("ceilings")
    rows: list[dict] = []
    skipped: dict[str, str] = {}
    for w in workloads:
        try:
            rows.extend(run_workload(w, device, repeats, compile_peers,
                                     on_step=lambda w, mode: progress.step(f"{w.name} {mode}"),
                                     noisy_threshold=noisy_threshold))
        except WorkloadUnavailable as e:
            skipped[w.name] = str(e)
            print(f"skipped {w.name}: {e}", flush=True)
    result = {"meta": metadata(device), "ceilings": ceilings, "repeats": repeats,
              "noisy_iqr_over_median": noisy_threshold, "results": rows, "skipped": skipped}
    print(format_table(rows, ceilings, noisy_threshold))
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
