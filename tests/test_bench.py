"""The benchmark harness and CLI run end to end and write what they promise (no timing asserted)."""

import json

import pytest
import torch
from facekernels import cli
from facekernels.bench import harness, workloads


def test_workloads_declare_costs():
    for w in workloads.WORKLOADS:
        assert set(w.compiled_peers) <= set(w.peers), w.name
        assert w.flops_forward > 0 and w.bytes_forward > 0, w.name
        assert w.flops_backward > 0 or w.modes == ("forward",), w.name
        if w.flops_forward > 1e11:
            continue  # the largest (seconds per peer call): the harness records their max |diff| itself
        case = w.build("cpu")
        assert w.peers and set(case.candidates) == set(w.candidates), w.name  # the declared peers, built
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
    for r in rows:
        assert set(r["speedup"]) == {"conv2d", "fft"}
        assert r["max_abs_diff_vs_facekernels"]["conv2d"] < 1e-4
    pytest.importorskip("matplotlib")
    assert (tmp_path / "latest-cpu.png").stat().st_size > 1000


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
