"""The benchmark harness and CLI run end to end and write what they promise (no timing asserted)."""

import dataclasses
import json

import pytest
import torch
from facekernels import cli
from facekernels.bench import harness, workloads


@pytest.mark.slow  # every workload built and run at its full size (a minute of CPU)
@pytest.mark.parametrize("w", workloads.WORKLOADS, ids=lambda w: w.name)  # one test each: xdist spreads them
def test_workloads_declare_costs(w):
    assert set(w.compiled_peers) <= set(w.peers), w.name
    assert w.flops_forward > 0 and w.bytes_forward > 0, w.name
    assert w.flops_backward > 0 or w.modes == ("forward",), w.name
    if w.flops_forward > 1e11:
        return  # the largest (seconds per peer call): the harness records their max |diff| itself
    case = w.build("cpu")
    assert w.peers and set(case.candidates) == set(w.candidates_on("cpu")), w.name  # declared = built
    assert set(w.cpu_only_peers) <= set(w.peers), w.name
    with torch.no_grad():
        ours = case.candidates["facekernels"](*case.inputs)
        for peer in w.peers:
            # the peers compute the same function, in float32 and some less accurately (one-pass
            # variances, integral images, which near-flat windows amplify): all but a few elements
            # agree relative to the output's scale
            err = (case.candidates[peer](*case.inputs) - ours).abs()
            off = float((err > 1e-3 * max(1.0, float(ours.abs().max()))).float().mean())
            assert off <= 1e-4, (w.name, peer, off, float(err.max()))


def test_workloads_are_discovered_from_the_family_modules():
    import importlib
    import pkgutil

    import facekernels.bench as package

    modules = [m.name for m in pkgutil.iter_modules(package.__path__) if m.name.startswith("workloads_")]
    assert {"workloads_circular_conv", "workloads_fcc", "workloads_local_stats"} <= set(modules)
    declared = [w.name for name in sorted(modules)
                for w in importlib.import_module(f"facekernels.bench.{name}").WORKLOADS]
    assert [w.name for w in workloads.WORKLOADS] == declared and len(set(declared)) == len(declared)
    assert workloads.QUICK <= set(declared)
    assert [w.name for w in workloads.select(["local_stat_transform"], quick=True)] == ["sfft_k7"]


def test_time_interleaved_reports_median_and_iqr():
    stats = harness.time_interleaved({"a": lambda: torch.ones(10).sum(), "b": lambda: torch.zeros(3)}, "cpu", 5)
    for s in stats.values():
        assert s["median_s"] > 0 and s["iqr_s"] >= 0 and s["samples"] == 5


def test_cli_quick_run_writes_json_and_chart(tmp_path, capsys):
    rc = cli.main(["bench", "--ops", "fcc_branch_h", "--quick", "--no-compile", "--repeats", "3", "--out",
                   str(tmp_path), "--json", str(tmp_path / "run.json")])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "fcc_branch_h" in printed and "ceilings" in printed
    result = json.loads((tmp_path / "latest-cpu.json").read_text())
    assert json.loads((tmp_path / "run.json").read_text())["results"] == result["results"]
    meta = result["meta"]
    for key in ("commit", "torch", "cpu", "threads", "build_info", "date"):
        assert key in meta
    assert result["ceilings"]["copy_gbps"] > 0 and result["ceilings"]["sgemm_gflops"] > 0
    rows = result["results"]
    assert {r["mode"] for r in rows} == {"forward", "forward+backward"}
    assert result["noisy_iqr_over_median"] == harness.NOISY_IQR_OVER_MEDIAN
    for r in rows:
        assert set(r["speedup"]) == {"conv2d", "fft"}
        assert r["max_abs_diff_vs_facekernels"]["conv2d"] < 1e-4
        assert r["family"] == "circular_conv"
        for t in r["timing"].values():  # the noise flag of every candidate's timing
            assert isinstance(t["noisy"], bool)
            assert t["noisy"] == (t["iqr_over_median"] > harness.NOISY_IQR_OVER_MEDIAN)
            assert t["iqr_over_median"] == pytest.approx(t["iqr_s"] / t["median_s"])
    pytest.importorskip("matplotlib")
    assert (tmp_path / "latest-cpu.png").stat().st_size > 1000


def test_cpu_only_peers_are_declared_per_device_and_checked_against_the_case():
    (w,) = workloads.select(["sfft_train_step"], quick=False)
    assert "facekernels+hint" in w.candidates_on("cpu") and "facekernels+hint" not in w.candidates_on("cuda")
    assert w.candidates_on("cuda") == ("facekernels", "avg_pool")
    torn_down = []
    wrong = dataclasses.replace(w, peers=("avg_pool", "missing"), cpu_only_peers=(),
                                build=lambda device: dataclasses.replace(
                                    w.build(device), teardown=lambda: torn_down.append(True)))
    with pytest.raises(RuntimeError, match="sfft_train_step on cpu declares the candidates"):
        harness.run_workload(wrong, "cpu", 1, compile_peers=False)
    assert torn_down == [True]  # the case's setting is restored after the refusal too


def test_cli_rejects_unknown_ops():
    with pytest.raises(SystemExit):
        cli.main(["bench", "--ops", "no_such_op", "--quick"])


def test_one_command_line(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    assert "{bench,me,metrics,info}" in capsys.readouterr().out
    assert cli.main(["bench", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(w.name in listed for w in workloads.WORKLOADS)
    assert cli.main(["info", "--json", str(tmp_path / "info.json")]) == 0
    assert "version" in json.loads((tmp_path / "info.json").read_text())
    with pytest.raises(SystemExit):
        cli.main(["no_such_command"])



def _timing(samples: list[float]) -> dict:
    from facekernels._timing import summarize

    return summarize(samples)


def test_noisy_timings_are_flagged_in_the_table_and_json():
    quiet = _timing([1.00, 1.01, 0.99, 1.02, 0.98, 1.00, 1.01, 0.99])   # IQR/median about 0.02
    noisy = _timing([1.0, 2.2, 0.6, 3.0, 1.1, 0.7, 2.5, 0.9])          # IQR/median about 1.4
    timing = harness.flag_noisy({"facekernels": quiet, "peer": noisy})
    assert timing["facekernels"]["noisy"] is False and timing["peer"]["noisy"] is True
    assert timing["peer"]["iqr_over_median"] == pytest.approx(noisy["iqr_s"] / noisy["median_s"])
    assert harness.flag_noisy({"peer": dict(noisy)}, threshold=10.0)["peer"]["noisy"] is False
    row = {"op": "op", "family": "fam", "workload": "w", "mode": "forward", "flops": 1.0, "bytes": 1.0,
           "timing": timing, "speedup": {"peer": 1.0}, "max_abs_diff_vs_facekernels": {"facekernels": 0.0,
                                                                                      "peer": 0.0}}
    lines = harness.format_table([row], {"copy_gbps": 1.0, "sgemm_gflops": 1.0}).splitlines()
    header = lines[0]
    column = header.index("noise")
    ours = next(line for line in lines if line.startswith("w ") and " facekernels " in line)
    peer = next(line for line in lines if line.startswith("w ") and " peer " in line)
    assert peer[column:column + 5] == "NOISY" and ours[column:column + 5].strip() == ""
    assert any(line.startswith("NOISY: 1 candidate") for line in lines)
    assert "NOISY" not in harness.format_table([{**row, "timing": harness.flag_noisy(
        {"facekernels": dict(quiet), "peer": dict(quiet)})}], {"copy_gbps": 1.0, "sgemm_gflops": 1.0})


def _synthetic_rows() -> list[dict]:
    """One row per workload and mode of every declared workload, each peer and its compiled variant, with
    made-up speedups from 0.3x to 300x and every fifth timing noisy."""
    rows, k = [], 0
    for w in workloads.WORKLOADS:
        for mode in w.modes:
            peers = [*w.peers, *(f"{p}+compile" for p in w.compiled_peers)]
            timing = {}
            for name in ("facekernels", *peers):
                k += 1
                timing[name] = {"median_s": 1e-3, "iqr_s": 1e-3 if k % 5 == 0 else 1e-5}
            rows.append({"op": w.op, "family": w.family, "workload": w.name, "mode": mode,
                         "timing": harness.flag_noisy(timing),
                         "speedup": {p: 0.3 * 1000 ** ((7 * i + len(rows)) % 11 / 10)
                                     for i, p in enumerate(peers)}})
    return rows


def _overlaps(boxes):
    """Pairs of labelled boxes that overlap by more than half a pixel either way."""
    return [(a, b) for i, (a, ba) in enumerate(boxes) for b, bb in boxes[i + 1:]
            if min(ba.x1, bb.x1) - max(ba.x0, bb.x0) > 0.5 and min(ba.y1, bb.y1) - max(ba.y0, bb.y0) > 0.5]


def test_chart_has_one_panel_per_family_and_a_style_per_peer():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.legend import Legend

    rows = _synthetic_rows()
    families = list(dict.fromkeys(w.family for w in workloads.WORKLOADS))
    assert len(families) >= 8 and "local_stats" in families and "" not in families
    peers = {p for r in rows for p in r["speedup"]}
    assert len(peers) > 10  # more peers than a 10-colour cycle tells apart
    fig = harness.chart(rows, "a title")
    try:
        panels = [ax for ax in fig.axes if ax.axison]
        assert [ax.get_title(loc="left").split(" ")[0] for ax in panels] == families
        # every peer in the one legend, each with its own (colour, hatch) pair
        (legend,) = fig.findobj(Legend)
        style = {t.get_text(): (tuple(h.get_facecolor()), h.get_hatch() or "")
                 for t, h in zip(legend.get_texts(), legend.legend_handles) if h.get_visible()}
        assert set(style) == peers
        assert len(set(style.values())) == len(style)
        for ax, family in zip(panels, families):
            fam_rows = [r for r in rows if r["family"] == family]
            drawn = {c.get_label(): c for c in ax.containers}
            assert set(drawn) == {p for r in fam_rows for p in r["speedup"]}, family
            for peer, bars in drawn.items():  # the bars wear the legend's style
                assert len(bars.patches) == sum(peer in r["speedup"] for r in fam_rows)
                for bar in bars.patches:
                    assert (tuple(bar.get_facecolor()), bar.get_hatch() or "") == style[peer], (family, peer)
        # readable at screen width, and no text overlaps another or leaves the figure
        width, height = fig.get_size_inches() * fig.dpi
        assert width <= 1600 and height <= 1600, (width, height)
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        hidden = {id(tick.label1) for ax in panels  # ticks outside the view are not drawn
                  for axis, lim in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim()))
                  for tick in axis.get_major_ticks() + axis.get_minor_ticks()
                  if not min(lim) <= tick.get_loc() <= max(lim)}
        texts = [t for t in fig.findobj(matplotlib.text.Text)
                 if t.get_visible() and t.get_text().strip() and id(t) not in hidden]
        boxes = [(f"{t.get_text()!r}@{i}", t.get_window_extent(renderer)) for i, t in enumerate(texts)]
        assert len(boxes) > 3 * len(peers)
        assert not _overlaps(boxes)
        for label, box in boxes:
            assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height, label
        # value labels stay inside their panel
        for ax in panels:
            frame = ax.get_window_extent(renderer)
            for t in ax.texts:
                box = t.get_window_extent(renderer)
                assert frame.x0 <= box.x0 and box.x1 <= frame.x1, (t.get_text(), ax.get_title(loc="left"))
    finally:
        plt.close(fig)


def test_make_install_shows_build_progress():
    """`make bench` and `make test` build through `make install`: pip runs verbosely there, so that the build
    shows scikit-build-core's and ninja's [n/N] progress instead of minutes of silence."""
    import itertools
    from pathlib import Path

    lines = (Path(__file__).resolve().parents[1] / "Makefile").read_text().splitlines()
    start = lines.index("install: venv") + 1
    recipe = list(itertools.takewhile(lambda line: line.startswith("\t"), lines[start:]))
    pip = [line for line in recipe if "$(PIP) install" in line]
    assert pip and all(" -v " in line and " -q " not in line for line in pip), recipe
