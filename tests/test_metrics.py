"""facekernels.metrics against plainly written brute-force references (loops over every candidate
threshold, counting), on random scores with heavy ties, edge cases and bad inputs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from statistics import NormalDist

import numpy as np
import pytest
import torch
from facekernels import metrics
from facekernels.cli import main as facekernels_main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The random cases below include genuine scores below the impostor scores on purpose (EER > 0.5).
SWAP_WARNING = "ignore:.*sit mostly below:UserWarning"

# ---- brute-force references: the definitions, written out -----------------------------------------------


def ref_fmr(impostor, t):
    return sum(1 for s in impostor if s >= t) / len(impostor)


def ref_fnmr(genuine, t):
    return sum(1 for s in genuine if s < t) / len(genuine)


def ref_candidates(*arrays):
    values = sorted({float(s) for a in arrays for s in a})
    return values + [float(np.nextafter(values[-1], np.inf))]


def ref_thresholds(*arrays):
    """Every threshold that can decide differently: -inf, the distinct scores of every class, +inf."""
    return [-math.inf] + sorted({float(s) for a in arrays for s in a}) + [math.inf]


def ref_threshold_at_fmr(impostor, fmr):
    """The lowest threshold with FMR <= fmr. FMR(t) only changes at impostor scores, where it drops just
    above the score, so the candidates are the floats just above each impostor score, ascending."""
    for u in sorted({float(s) for s in impostor}):
        t = float(np.nextafter(u, np.inf))
        if ref_fmr(impostor, t) <= fmr:
            # the lowest: the float below t is u itself, which does not meet the target (FMR is monotone)
            assert t == min(impostor) or ref_fmr(impostor, u) > fmr
            return t
    raise AssertionError("unreachable: FMR is 0 above the largest score")


def ref_eer(genuine, impostor):
    best = None
    for t in ref_candidates(genuine, impostor):
        fmr, fnmr = ref_fmr(impostor, t), ref_fnmr(genuine, t)
        if best is None or abs(fmr - fnmr) < best[0]:  # strict: the smallest threshold wins ties
            best = (abs(fmr - fnmr), (fmr + fnmr) / 2, t)
    return best[1], best[2]


def ref_tar_at_far(genuine, impostor, far):
    """The best TAR = 1 - FNMR(t) over every threshold t with FMR(t) <= far (brute force over
    ref_thresholds, independent of ref_threshold_at_fmr)."""
    return max(1 - ref_fnmr(genuine, t) for t in ref_thresholds(genuine, impostor) if ref_fmr(impostor, t) <= far)


def ref_iapmr(attack, t):
    return math.nan if len(attack) == 0 else sum(1 for s in attack if s >= t) / len(attack)


def ref_apcer_bpcer(attack, species, bonafide, t):
    per_species = {}
    for label in sorted(set(species)):
        own = [s for s, x in zip(attack, species) if x == label]
        per_species[label] = sum(1 for s in own if s >= t) / len(own)
    apcer_max = max(per_species.values()) if per_species else math.nan
    return apcer_max, per_species, sum(1 for s in bonafide if s < t) / len(bonafide)


def ref_bpcer_at_apcer(attack, species, bonafide, target):
    """(the lowest BPCER over every threshold with APCER <= target (brute force over ref_thresholds), the
    lowest threshold meeting the target: the largest of the species' own lowest thresholds)."""
    best = min(bpcer for t in ref_thresholds(attack, bonafide)
               for apcer_max, _, bpcer in [ref_apcer_bpcer(attack, species, bonafide, t)] if apcer_max <= target)
    t = max(ref_threshold_at_fmr([s for s, x in zip(attack, species) if x == label], target)
            for label in set(species))
    assert ref_apcer_bpcer(attack, species, bonafide, t)[0] <= target
    assert ref_apcer_bpcer(attack, species, bonafide, float(np.nextafter(t, -np.inf)))[0] > target
    return best, t


def ref_det_curve(genuine, impostor):
    thresholds = ref_candidates(genuine, impostor)
    return ([ref_fmr(impostor, t) for t in thresholds], [ref_fnmr(genuine, t) for t in thresholds],
            thresholds)


# ---- data ---------------------------------------------------------------------------------------------------


def tied_scores(rng, size, decimals, mean=0.0):
    """Normal scores rounded to a few decimals: many exact ties."""
    return np.round(rng.normal(mean, 0.3, size), decimals)


CASES = [  # (n_genuine, n_impostor, decimals)
    (1, 1, 1), (1, 7, 1), (5, 1, 2), (2, 2, 1), (13, 40, 1), (40, 13, 2), (60, 250, 1), (60, 250, 2),
    (60, 250, 3), (200, 300, 2),
]


def case_data(n_genuine, n_impostor, decimals, seed):
    rng = np.random.default_rng(seed)
    return tied_scores(rng, n_genuine, decimals, 0.4), tied_scores(rng, n_impostor, decimals, 0.0)


def target_rates(n):
    """Targets at, just below and just above k/n (where ties and rounding bite), plus a few others."""
    rates = {1e-3, 0.01, 0.05, 0.1, 0.25, 0.5, 0.9, 0.999}
    for k in range(1, n):
        rates |= {k / n, float(np.nextafter(k / n, 0)), float(np.nextafter(k / n, 1))}
    return sorted(r for r in rates if 0 < r < 1)


# ---- verification metrics ---------------------------------------------------------------------------------


@pytest.mark.filterwarnings(SWAP_WARNING)
@pytest.mark.parametrize("n_genuine,n_impostor,decimals", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_verification_metrics_equal_brute_force(n_genuine, n_impostor, decimals, seed):
    genuine, impostor = case_data(n_genuine, n_impostor, decimals, seed)
    for t in ref_candidates(genuine, impostor) + [-math.inf, math.inf, float(genuine[0]) + 1e-9]:
        assert metrics.fmr_fnmr(genuine, impostor, t) == (ref_fmr(impostor, t), ref_fnmr(genuine, t))
    assert metrics.eer(genuine, impostor) == ref_eer(genuine, impostor)
    for rate in target_rates(min(n_impostor, 60)):
        t = metrics.threshold_at_fmr(impostor, rate)
        assert t == ref_threshold_at_fmr(impostor, rate), rate
        assert metrics.tar_at_far(genuine, impostor, rate) == ref_tar_at_far(genuine, impostor, rate), rate
        assert metrics.tar_at_far(genuine, impostor, rate) == 1 - ref_fnmr(genuine, t), rate
    fmr, fnmr, thresholds = metrics.det_curve(genuine, impostor)
    ref = ref_det_curve(genuine, impostor)
    assert fmr.dtype == fnmr.dtype == thresholds.dtype == np.float64
    assert fmr.tolist() == ref[0] and fnmr.tolist() == ref[1] and thresholds.tolist() == ref[2]


@pytest.mark.filterwarnings(SWAP_WARNING)
def test_eer_many_random_tied_cases():
    rng = np.random.default_rng(7)
    for _ in range(300):
        genuine = np.round(rng.normal(rng.uniform(-0.2, 0.5), 0.3, rng.integers(1, 30)), rng.integers(1, 3))
        impostor = np.round(rng.normal(0.0, 0.3, rng.integers(1, 30)), rng.integers(1, 3))
        assert metrics.eer(genuine, impostor) == ref_eer(genuine, impostor)


@pytest.mark.filterwarnings(SWAP_WARNING)
def test_single_scores():
    for g, i in [(0.5, 0.2), (0.2, 0.5), (0.3, 0.3)]:
        assert metrics.eer([g], [i]) == ref_eer([g], [i])
        assert metrics.threshold_at_fmr([i], 0.5) == float(np.nextafter(i, np.inf))
        assert metrics.tar_at_far([g], [i], 0.5) == ref_tar_at_far([g], [i], 0.5)
    # Perfect separation: EER 0 at the smallest threshold separating them (the smallest genuine score).
    assert metrics.eer([0.5], [0.2]) == (0.0, 0.5)
    # Identical scores: accepting both (FMR 1, FNMR 0) or neither (0, 1) are equally far; the smaller wins.
    assert metrics.eer([0.3], [0.3]) == (0.5, 0.3)


def test_threshold_at_fmr_all_tied():
    impostor = np.full(10, 0.25)
    # One tie group: FMR jumps from 1 to 0, so every target below 1 needs the float above the scores.
    assert metrics.threshold_at_fmr(impostor, 0.999) == float(np.nextafter(0.25, 1))


def test_larger_case_equals_brute_force():
    rng = np.random.default_rng(3)
    genuine = np.round(rng.normal(0.5, 0.15, 20_000), 3)
    impostor = np.round(rng.normal(0.0, 0.15, 200_000), 3)
    # Vectorised over candidates but still the definition: count over every score at every candidate.
    candidates = np.array(ref_candidates(genuine, impostor))
    fmr = np.array([np.count_nonzero(impostor >= t) / impostor.size for t in candidates])
    fnmr = np.array([np.count_nonzero(genuine < t) / genuine.size for t in candidates])
    best = int(np.argmin(np.abs(fmr - fnmr)))  # argmin returns the first: the smallest threshold
    assert metrics.eer(genuine, impostor) == ((fmr[best] + fnmr[best]) / 2, candidates[best])
    # The thresholds just above each impostor score, and every threshold that can decide differently.
    above_impostor = np.nextafter(np.unique(impostor), np.inf)
    above_fmr = np.array([np.count_nonzero(impostor >= t) / impostor.size for t in above_impostor])
    every = np.concatenate([[-np.inf], candidates[:-1], [np.inf]])
    every_fmr = np.array([np.count_nonzero(impostor >= t) / impostor.size for t in every])
    every_tar = np.array([1 - np.count_nonzero(genuine < t) / genuine.size for t in every])
    for rate in (1e-5, 1e-4, 1e-3, 0.01, 0.1):
        t = above_impostor[np.flatnonzero(above_fmr <= rate)[0]]
        assert metrics.threshold_at_fmr(impostor, rate) == t
        assert metrics.tar_at_far(genuine, impostor, rate) == every_tar[every_fmr <= rate].max()
    curve = metrics.det_curve(genuine, impostor)
    assert curve[0].tolist() == fmr.tolist() and curve[1].tolist() == fnmr.tolist()
    assert curve[2].tolist() == candidates.tolist()


def test_iapmr():
    rng = np.random.default_rng(0)
    attack = tied_scores(rng, 300, 2)
    for t in ref_candidates(attack) + [-math.inf, math.inf]:
        assert metrics.iapmr(attack, t) == ref_iapmr(attack, t)
    assert math.isnan(metrics.iapmr([], 0.3))
    assert metrics.iapmr([0.3], 0.3) == 1.0 and metrics.iapmr([0.3], 0.31) == 0.0


# ---- PAD metrics -----------------------------------------------------------------------------------------------


def pad_data(seed, n_attack, n_bonafide, decimals, species_count):
    rng = np.random.default_rng(seed)
    attack = tied_scores(rng, n_attack, decimals, -0.2)
    species = [f"pai{k}" for k in rng.integers(0, species_count, n_attack)]
    return attack, species, tied_scores(rng, n_bonafide, decimals, 0.3)


@pytest.mark.parametrize("n_attack,n_bonafide,decimals,species_count",
                         [(1, 1, 1, 1), (3, 5, 1, 2), (40, 30, 1, 3), (120, 80, 2, 4), (200, 150, 3, 2)])
def test_pad_metrics_equal_brute_force(n_attack, n_bonafide, decimals, species_count):
    attack, species, bonafide = pad_data(n_attack + n_bonafide, n_attack, n_bonafide, decimals, species_count)
    for t in ref_candidates(attack, bonafide) + [-math.inf, math.inf]:
        assert metrics.apcer_bpcer(attack, species, bonafide, t) == ref_apcer_bpcer(attack, species, bonafide, t)
    for target in [0.05, 0.1] + target_rates(min(n_attack, 40)):
        assert metrics.bpcer_at_apcer(attack, species, bonafide, target) == \
            ref_bpcer_at_apcer(attack, species, bonafide, target), target
    assert metrics.bpcer_at_apcer(attack, species, bonafide) == ref_bpcer_at_apcer(attack, species, bonafide,
                                                                                 0.05)


def test_pad_species_none_and_integer_labels():
    attack, _, bonafide = pad_data(5, 50, 40, 1, 1)
    one = ["all"] * len(attack)
    for t in (-0.2, 0.0, 0.3):
        assert metrics.apcer_bpcer(attack, None, bonafide, t) == ref_apcer_bpcer(attack, one, bonafide, t)
    assert metrics.bpcer_at_apcer(attack, None, bonafide, 0.1) == ref_bpcer_at_apcer(attack, one, bonafide, 0.1)
    codes = np.arange(50) % 3
    apcer_max, per_species, _ = metrics.apcer_bpcer(attack, codes, bonafide, 0.0)
    assert list(per_species) == [0, 1, 2]
    assert (apcer_max, per_species) == ref_apcer_bpcer(attack, codes.tolist(), bonafide, 0.0)[:2]
    assert metrics.apcer_bpcer(attack, torch.from_numpy(codes), bonafide, 0.0)[1] == per_species


def test_pad_without_attacks():
    apcer_max, per_species, bpcer = metrics.apcer_bpcer([], [], [0.1, 0.5], 0.3)
    assert math.isnan(apcer_max) and per_species == {} and bpcer == 0.5
    with pytest.raises(ValueError, match="bpcer_at_apcer: attack_scores must hold at least one score"):
        metrics.bpcer_at_apcer([], [], [0.1, 0.5])


# ---- the vulnerability report ---------------------------------------------------------------------------------


def report_data(seed, decimals=2, n=200, species_count=3):
    rng = np.random.default_rng(seed)
    return {
        "dev_genuine": tied_scores(rng, n // 2, decimals, 0.6),
        "dev_impostor": tied_scores(rng, n, decimals),
        "eval_genuine": tied_scores(rng, n // 2, decimals, 0.55),
        "eval_impostor": tied_scores(rng, n, decimals),
        "eval_attack": tied_scores(rng, n // 4, decimals, 0.4),
        "attack_species": [f"s{k}" for k in rng.integers(0, species_count, n // 4)],
    }


@pytest.mark.parametrize("seed,decimals,fmr", [(0, 1, 0.01), (1, 2, 0.05), (2, 3, 0.1), (3, 2, 1e-3)])
def test_vulnerability_report_equals_brute_force(seed, decimals, fmr):
    d = report_data(seed, decimals)
    report = metrics.vulnerability_report(**d, fmr=fmr)
    t = ref_threshold_at_fmr(d["dev_impostor"], fmr)
    _, per_species, _ = ref_apcer_bpcer(d["eval_attack"], d["attack_species"], [0.0], t)
    eer_value, eer_threshold = ref_eer(d["eval_genuine"], d["eval_impostor"])
    assert report == {
        "fmr_target": fmr,
        "threshold": t,
        "higher_is_better": True,
        "dev": {"genuine": 100, "impostor": 200, "fmr": ref_fmr(d["dev_impostor"], t),
                "fnmr": ref_fnmr(d["dev_genuine"], t)},
        "eval": {"genuine": 100, "impostor": 200, "attack": 50,
                 "fmr": ref_fmr(d["eval_impostor"], t), "fnmr": ref_fnmr(d["eval_genuine"], t),
                 "iapmr": ref_iapmr(d["eval_attack"], t), "iapmr_per_species": per_species,
                 "attack_per_species": {s: d["attack_species"].count(s) for s in sorted(per_species)},
                 "eer": eer_value, "eer_threshold": eer_threshold,
                 "tar_at_far": ref_tar_at_far(d["eval_genuine"], d["eval_impostor"], fmr)},
        "plot": None,
    }
    json.dumps(report)  # plain Python values throughout


def test_vulnerability_report_without_attacks_or_species(capsys):
    d = report_data(4)
    for attack in (None, [], np.zeros(0)):
        report = metrics.vulnerability_report(d["dev_genuine"], d["dev_impostor"], d["eval_genuine"],
                                              d["eval_impostor"], attack)
        assert math.isnan(report["eval"]["iapmr"]) and report["eval"]["attack"] == 0
        assert report["eval"]["iapmr_per_species"] == {}
    no_species = metrics.vulnerability_report(d["dev_genuine"], d["dev_impostor"], d["eval_genuine"],
                                              d["eval_impostor"], d["eval_attack"], verbose=True)
    assert no_species["eval"]["iapmr_per_species"] == {}
    assert no_species["eval"]["iapmr"] == ref_iapmr(d["eval_attack"], no_species["threshold"])
    printed = capsys.readouterr().out
    assert "IAPMR" in printed and "EER" in printed and "TAR @ FAR" in printed


def test_format_report_lists_every_figure():
    report = metrics.vulnerability_report(**report_data(5), fmr=0.01)
    text = metrics.format_report(report)
    for needle in ("threshold", "dev   FMR", "dev   FNMR", "eval  FMR", "eval  FNMR", "eval  IAPMR", "s0 (",
                   "s1 (", "s2 (", "eval  EER", "TAR @ FAR 0.01"):
        assert needle in text, needle
    assert f"{report['threshold']:.10g}" in text


# ---- inputs: types, devices, bad values ----------------------------------------------------------------------


def test_accepts_lists_arrays_and_tensors():
    genuine, impostor = case_data(30, 80, 2, 0)
    expected = metrics.eer(genuine, impostor)
    assert metrics.eer(genuine.tolist(), tuple(impostor.tolist())) == expected
    assert metrics.eer(torch.from_numpy(genuine), torch.from_numpy(impostor).requires_grad_()) == expected
    g32, i32 = genuine.astype(np.float32), impostor.astype(np.float32)
    # float32 inputs are widened to float64 exactly, so the reference on the widened values must match.
    assert metrics.eer(g32, torch.from_numpy(i32)) == ref_eer(g32.astype(np.float64), i32.astype(np.float64))
    assert metrics.fmr_fnmr([1, 2, 3], np.array([0, 2]), np.int64(2)) == (0.5, 1 / 3)
    assert metrics.threshold_at_fmr(impostor, torch.tensor(0.1)) == metrics.threshold_at_fmr(impostor, 0.1)


@pytest.mark.cuda
def test_accepts_cuda_tensors():
    genuine, impostor = case_data(30, 80, 2, 0)
    g, i = torch.from_numpy(genuine).cuda(), torch.from_numpy(impostor).float().cuda()
    assert metrics.eer(g, i) == metrics.eer(genuine, impostor.astype(np.float32))
    assert metrics.iapmr(i, 0.1) == metrics.iapmr(impostor.astype(np.float32), 0.1)


@pytest.mark.parametrize("call,message", [
    (lambda: metrics.eer([], [0.1]), "eer: genuine must hold at least one score, got an empty array"),
    (lambda: metrics.eer([0.1], np.array([])), "eer: impostor must hold at least one score"),
    (lambda: metrics.fmr_fnmr([0.1], [], 0.0), "fmr_fnmr: impostor must hold at least one score"),
    (lambda: metrics.threshold_at_fmr([], 0.1), "threshold_at_fmr: impostor must hold at least one score"),
    (lambda: metrics.tar_at_far([], [0.1], 0.1), "tar_at_far: genuine must hold at least one score"),
    (lambda: metrics.det_curve([0.1], []), "det_curve: impostor must hold at least one score"),
    (lambda: metrics.eer([0.1, math.nan], [0.1]), "eer: genuine must hold finite scores, got 1 NaN"),
    (lambda: metrics.fmr_fnmr([0.1], [0.2, math.nan], 0.1),
     r"fmr_fnmr: impostor must hold finite scores, got 1 NaN \(the first at index 1\)"),
    (lambda: metrics.threshold_at_fmr(torch.tensor([0.1, float("nan")]), 0.1),
     "threshold_at_fmr: impostor must hold finite scores, got 1 NaN"),
    (lambda: metrics.iapmr([math.nan], 0.1), "iapmr: attack must hold finite scores"),
    (lambda: metrics.eer([0.1, math.inf], [0.1]), "eer: genuine must hold finite scores, got inf"),
    (lambda: metrics.fmr_fnmr([0.1], [0.2], math.nan), "fmr_fnmr: threshold must be a real number, got nan"),
    (lambda: metrics.threshold_at_fmr([0.1], 0.0),
     r"threshold_at_fmr: fmr must be in the open interval \(0, 1\), got 0.0"),
    (lambda: metrics.threshold_at_fmr([0.1], 1.0), r"fmr must be in the open interval \(0, 1\), got 1.0"),
    (lambda: metrics.threshold_at_fmr([0.1], -0.1), r"fmr must be in the open interval \(0, 1\), got -0.1"),
    (lambda: metrics.threshold_at_fmr([0.1], math.nan), r"fmr must be in the open interval \(0, 1\), got nan"),
    (lambda: metrics.tar_at_far([0.1], [0.1], 1.5), r"tar_at_far: far must be in the open interval"),
    (lambda: metrics.vulnerability_report([0.1], [0.1], [0.1], [0.1], [], fmr=0),
     "vulnerability_report: fmr must be in the open interval"),
    (lambda: metrics.vulnerability_report([0.1], [], [0.1], [0.1], []),
     "vulnerability_report: dev_impostor must hold at least one score"),
    (lambda: metrics.vulnerability_report([0.1], [0.1], [], [0.1], []),
     "vulnerability_report: eval_genuine must hold at least one score"),
    (lambda: metrics.vulnerability_report([0.1], [0.1], [0.1], [0.1], [math.nan]),
     "vulnerability_report: eval_attack must hold finite scores"),
    (lambda: metrics.vulnerability_report([0.1], [0.1], [0.1], [0.1], [0.2, 0.3], attack_species=["a"]),
     r"vulnerability_report: attack_species must be 1-D with one label per attack score \(2\), got shape"),
    (lambda: metrics.bpcer_at_apcer([0.1], None, [0.2], apcer=1.0), "bpcer_at_apcer: apcer must be in"),
    (lambda: metrics.bpcer_at_apcer([0.1, math.nan], None, [0.2]),
     "bpcer_at_apcer: attack_scores must hold finite scores"),
    (lambda: metrics.apcer_bpcer([0.1], ["a"], [], 0.0), "apcer_bpcer: bonafide_scores must hold at least one"),
    (lambda: metrics.eer(np.zeros((2, 2)), [0.1]), r"eer: genuine must be 1-D, got shape \(2, 2\)"),
    (lambda: metrics.eer(0.5, [0.1]), r"eer: genuine must be 1-D, got shape \(\)"),
    (lambda: metrics.eer([[0.1], [0.2, 0.3]], [0.1]), "eer: genuine must be a 1-D array of scores"),
])
def test_bad_values_raise_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("call,message", [
    (lambda: metrics.eer(["a", "b"], [0.1]), "eer: genuine must hold real numbers .* got dtype <U1"),
    (lambda: metrics.eer([True, False], [0.1]), "eer: genuine must hold real numbers .* got dtype bool"),
    (lambda: metrics.eer(torch.tensor([True]), [0.1]), "eer: genuine must hold real numbers, got a tensor"),
    (lambda: metrics.eer([1j], [0.1]), "eer: genuine must hold real numbers .* got dtype complex128"),
    (lambda: metrics.eer("0.5", [0.1]), "eer: genuine must be an array of scores, got str"),
    (lambda: metrics.eer(None, [0.1]), "eer: genuine must be an array of scores, got None"),
    (lambda: metrics.fmr_fnmr([0.1], [0.1], "0.5"), "fmr_fnmr: threshold must be a real number, got str"),
    (lambda: metrics.fmr_fnmr([0.1], [0.1], True), "fmr_fnmr: threshold must be a real number, got bool"),
    (lambda: metrics.iapmr([0.1], np.array([0.1, 0.2])), "iapmr: threshold must be a real number, got an array"),
    (lambda: metrics.threshold_at_fmr([0.1], None), r"threshold_at_fmr: fmr must be a real number in \(0, 1\)"),
    (lambda: metrics.apcer_bpcer([0.1], "a", [0.1], 0.0), "apcer_bpcer: attack_species must be a sequence"),
    (lambda: metrics.plot_det([([0.1], [0.2])], "x.png"), "plot_det: curves must be a non-empty mapping"),
])
def test_bad_types_raise_type_error(call, message):
    with pytest.raises(TypeError, match=message):
        call()


# ---- DET plot ---------------------------------------------------------------------------------------------------


def test_probit_matches_normal_dist():
    p = np.concatenate([np.logspace(-12, -1, 40), np.linspace(0.01, 0.99, 99), 1 - np.logspace(-12, -1, 40)])
    expected = np.array([NormalDist().inv_cdf(float(v)) for v in p])
    np.testing.assert_allclose(metrics.probit(p), expected, rtol=2e-9, atol=1e-12)
    assert metrics.probit(np.array([0.0, 1.0, -0.1, 1.1])).tolist()[:2] == [-math.inf, math.inf]
    assert np.isnan(metrics.probit(np.array([-0.1, 1.1]))).all()


def test_plot_det_writes_png(tmp_path):
    genuine, impostor = case_data(300, 3000, 3, 0)
    path = metrics.plot_det({"licit": (genuine, impostor), "attack": (genuine, impostor + 0.2)},
                            tmp_path / "det.png", threshold=0.1, title="test")
    data = path.read_bytes()
    assert path == tmp_path / "det.png" and len(data) > 1000 and data.startswith(PNG_SIGNATURE)


def test_plot_det_thins_large_curves(tmp_path):
    rng = np.random.default_rng(0)
    path = metrics.plot_det({"large": (rng.normal(1, 1, 20_000), rng.normal(0, 1, 200_000))},
                            tmp_path / "large.png")
    assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_vulnerability_report_plot(tmp_path):
    d = report_data(6)
    report = metrics.vulnerability_report(**d, fmr=0.05, plot=tmp_path / "vuln.png")
    assert report["plot"] == str(tmp_path / "vuln.png")
    assert (tmp_path / "vuln.png").read_bytes().startswith(PNG_SIGNATURE)
    without_attack = metrics.vulnerability_report(d["dev_genuine"], d["dev_impostor"], d["eval_genuine"],
                                                  d["eval_impostor"], None, plot=tmp_path / "licit.png")
    assert (tmp_path / "licit.png").stat().st_size > 0 and without_attack["plot"]


# ---- the command line -------------------------------------------------------------------------------------------


def metrics_main(argv):
    """`python -m facekernels metrics ...` in this process."""
    return facekernels_main(["metrics", *argv])


def write_csv(path, rows, header="score,label"):
    path.write_text(header + "\n" + "".join(f"{s},{label}\n" for s, label in rows))
    return path


def cli_files(tmp_path, seed=0):
    d = report_data(seed)
    dev = write_csv(tmp_path / "dev.csv", [(s, "genuine") for s in d["dev_genuine"]]
                    + [(s, "impostor") for s in d["dev_impostor"]] + [(0.99, "attack:print")])
    evaluation = write_csv(tmp_path / "eval.csv", [(s, "Genuine") for s in d["eval_genuine"]]
                           + [(s, "impostor") for s in d["eval_impostor"]]
                           + [(s, f"attack:{x}") for s, x in zip(d["eval_attack"], d["attack_species"])])
    return d, dev, evaluation


def test_cli_vuln_matches_the_function(tmp_path, capsys):
    d, dev, evaluation = cli_files(tmp_path)
    out_json, out_png = tmp_path / "report.json", tmp_path / "det.png"
    rc = metrics_main(["vuln", "--dev", str(dev), "--eval", str(evaluation), "--fmr", "0.02", "--plot", str(out_png),
                   "--json", str(out_json)])
    assert rc == 0
    expected = metrics.vulnerability_report(**d, fmr=0.02)  # the dev file's attack row is ignored
    written = json.loads(out_json.read_text())
    assert written["threshold"] == expected["threshold"]
    assert written["eval"] == json.loads(json.dumps(expected["eval"]))
    assert out_png.read_bytes().startswith(PNG_SIGNATURE)
    assert metrics.format_report(dict(expected, plot=str(out_png))) in capsys.readouterr().out


def test_cli_species_and_column_order(tmp_path):
    rows = ("label,extra,score\ngenuine,x,0.9\n\nimpostor,x,0.1\n,,\n Impostor ,x, 0.2 \nattack,x,0.5\n"
            "ATTACK: mask ,x,0.95\n")
    (tmp_path / "s.csv").write_text(rows)
    out = tmp_path / "r.json"
    assert metrics_main(["vuln", "--dev", str(tmp_path / "s.csv"), "--eval", str(tmp_path / "s.csv"),
                     "--fmr", "0.4", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["eval"]["attack_per_species"] == {"mask": 1, "unspecified": 1}
    assert (report["dev"]["genuine"], report["dev"]["impostor"], report["eval"]["attack"]) == (1, 2, 2)
    assert report["eval"]["iapmr_per_species"] == {"mask": 1.0, "unspecified": 1.0}


@pytest.mark.parametrize("content,message", [
    ("", "empty file, expected a header"),
    ("score,kind\n0.1,genuine\n", "the header must name the columns 'score' and 'label', missing 'label'"),
    ("score,label\n0.1,genuine\n0.2,imposter\n", "line 3: unknown label 'imposter'"),
    ("score,label\n0.1,genuine\n0.2,attack:\n", "line 3: unknown label 'attack:'"),
    ("score,label\nabc,genuine\n", "line 2: score 'abc' is not a number"),
    ("score,label\nnan,genuine\n", "line 2: score 'nan' is not finite"),
    ("score,label\n0.1\n", "line 2: expected at least 2 columns"),
    ("score,label\n0.1,genuine\n", "--dev file has no impostor rows"),
])
def test_cli_reports_bad_files(tmp_path, capsys, content, message):
    _, _, evaluation = cli_files(tmp_path)
    (tmp_path / "bad.csv").write_text(content)
    assert metrics_main(["vuln", "--dev", str(tmp_path / "bad.csv"), "--eval", str(evaluation)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m facekernels metrics vuln: ") and message in err


def test_cli_missing_file_and_bad_fmr(tmp_path, capsys):
    _, dev, evaluation = cli_files(tmp_path)
    assert metrics_main(["vuln", "--dev", str(tmp_path / "nope.csv"), "--eval", str(evaluation)]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert metrics_main(["vuln", "--dev", str(dev), "--eval", str(evaluation), "--fmr", "2"]) == 2
    assert "fmr must be in the open interval (0, 1), got 2.0" in capsys.readouterr().err


def test_cli_without_attacks_writes_null_iapmr(tmp_path):
    d = report_data(8)
    licit = [(s, "genuine") for s in d["eval_genuine"]] + [(s, "impostor") for s in d["eval_impostor"]]
    path = write_csv(tmp_path / "licit.csv", licit)
    out = tmp_path / "r.json"
    assert metrics_main(["vuln", "--dev", str(path), "--eval", str(path), "--json", str(out)]) == 0
    report = json.loads(out.read_text())  # strict JSON: NaN written as null
    assert report["eval"]["iapmr"] is None and report["eval"]["attack"] == 0


def test_cli_bench_rejects_bad_arguments(capsys):
    assert metrics_main(["bench", "--impostor", "0"]) == 2
    assert "--impostor must be at least 1, got 0" in capsys.readouterr().err
    assert metrics_main(["bench", "--impostor", "50", "--genuine", "5", "--attack", "5", "--fmr", "1.5"]) == 2
    assert "vulnerability_report: fmr must be in the open interval (0, 1), got 1.5" in capsys.readouterr().err


def test_cli_bench_runs(capsys):
    assert metrics_main(["bench", "--impostor", "2000", "--genuine", "200", "--attack", "100", "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    assert "vulnerability_report: dev and eval sets of 2,000 impostor + 200 genuine" in out and "median" in out


@pytest.mark.parametrize("command", [["facekernels", "metrics"], ["facekernels.metrics"]])
def test_python_dash_m_entry_point(tmp_path, command):
    """`python -m facekernels metrics` and its alias `python -m facekernels.metrics`."""
    _, dev, evaluation = cli_files(tmp_path)
    result = subprocess.run([sys.executable, "-m", *command, "vuln", "--dev", str(dev), "--eval",
                             str(evaluation)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "eval  IAPMR" in result.stdout


def test_cli_json_to_stdout(tmp_path, capsys):
    d, dev, evaluation = cli_files(tmp_path)
    assert metrics_main(["vuln", "--dev", str(dev), "--eval", str(evaluation), "--fmr", "0.02", "--json", "-"]) == 0
    written = json.loads(capsys.readouterr().out)  # the JSON alone: no table before it
    assert written["threshold"] == metrics.vulnerability_report(**d, fmr=0.02)["threshold"]
    out = tmp_path / "bench.json"
    assert metrics_main(["bench", "--impostor", "2000", "--genuine", "200", "--attack", "100", "--repeats", "2",
                         "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert len(result["times_s"]) == 2 and result["median_s"] > 0 and result["report"]["eval"]["attack"] == 100


# ---- the best TAR at a target FMR: the lowest threshold meeting it --------------------------------------------


def test_tar_at_far_accepts_genuine_scores_between_impostor_scores():
    # FMR <= 0.2 of 6 impostor scores allows one: the 4. Any threshold in (2, 4] gives FMR 1/6, and the
    # lowest, the float just above 2, also accepts the genuine 3 (a threshold at an impostor score, 4,
    # rejected it: TAR 0).
    genuine, impostor = [3.0], [4.0, 1.0, 1.0, 1.0, 2.0, 0.0]
    t = metrics.threshold_at_fmr(impostor, 0.2)
    assert t == float(np.nextafter(2.0, np.inf))
    assert metrics.fmr_fnmr(genuine, impostor, t) == (1 / 6, 0.0)
    assert metrics.fmr_fnmr(genuine, impostor, float(np.nextafter(t, -np.inf)))[0] > 0.2
    assert metrics.tar_at_far(genuine, impostor, 0.2) == 1.0
    # the same for PAD: the bona fide 3 is kept, the attack 4 is the one APCER allows
    assert metrics.bpcer_at_apcer(impostor, None, genuine, 0.2) == (0.0, t)


@pytest.mark.filterwarnings(SWAP_WARNING)
def test_best_tar_and_bpcer_equal_brute_force_on_random_and_tied_scores():
    """Brute force over every threshold (the distinct scores of both classes and +-inf), on scores drawn
    from a few values (ties within and across the classes) and on continuous ones."""
    rng = np.random.default_rng(17)
    for case in range(400):
        tied = case % 2 == 0
        n_genuine, n_impostor = int(rng.integers(1, 25)), int(rng.integers(1, 40))
        if tied:
            values = rng.normal(0, 1, int(rng.integers(1, 6)))
            genuine, impostor = rng.choice(values, n_genuine), rng.choice(values, n_impostor)
        else:
            genuine, impostor = rng.normal(0.5, 0.4, n_genuine), rng.normal(0.0, 0.4, n_impostor)
        for rate in [0.01, 0.2, 0.5, 0.99] + [k / n_impostor for k in range(1, n_impostor)]:
            t = metrics.threshold_at_fmr(impostor, rate)
            assert t == ref_threshold_at_fmr(impostor, rate), (case, rate)
            assert metrics.tar_at_far(genuine, impostor, rate) == ref_tar_at_far(genuine, impostor, rate)
        species = [f"s{k}" for k in rng.integers(0, 3, n_impostor)]
        for rate in (0.05, 0.1, 0.3, 0.6):
            assert metrics.bpcer_at_apcer(impostor, species, genuine, rate) == \
                ref_bpcer_at_apcer(impostor, species, genuine, rate), (case, rate)


def test_tar_at_far_equals_sklearn_roc_curve():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(5)
    for decimals in (1, 2, 4, None):
        genuine, impostor = rng.normal(0.6, 0.2, 3000), rng.normal(0.0, 0.2, 30_000)
        if decimals is not None:
            genuine, impostor = np.round(genuine, decimals), np.round(impostor, decimals)
        labels = np.concatenate([np.ones(genuine.size), np.zeros(impostor.size)])
        fpr, tpr, _ = sklearn_metrics.roc_curve(labels, np.concatenate([genuine, impostor]),
                                                drop_intermediate=False)
        for far in (1e-4, 1e-3, 0.01, 0.1):
            # sklearn's tpr is #accepted / n and ours 1 - #rejected / n: equal up to the last bit
            assert metrics.tar_at_far(genuine, impostor, far) == pytest.approx(tpr[fpr <= far].max(), abs=1e-15)


# ---- distance-like scores: higher_is_better=False ----------------------------------------------------------------


@pytest.mark.filterwarnings(SWAP_WARNING)
def test_distance_scores_equal_negated_similarities():
    for n_genuine, n_impostor, decimals in CASES:
        genuine, impostor = case_data(n_genuine, n_impostor, decimals, 3)
        dg, di = -genuine, -impostor  # distances: lower = more alike
        kw = {"higher_is_better": False}
        value, t = metrics.eer(genuine, impostor)
        assert metrics.eer(dg, di, **kw) == (value, -t)
        for rate in (0.01, 0.1, 0.3):
            t = metrics.threshold_at_fmr(impostor, rate)
            assert metrics.threshold_at_fmr(di, rate, **kw) == -t
            assert metrics.tar_at_far(dg, di, rate, **kw) == metrics.tar_at_far(genuine, impostor, rate)
            # the definition, written for distances: accepted when score <= t
            assert metrics.fmr_fnmr(dg, di, -t, **kw) == (sum(s <= -t for s in di) / di.size,
                                                          sum(s > -t for s in dg) / dg.size)
            assert metrics.iapmr(di, -t, **kw) == sum(s <= -t for s in di) / di.size
        fmr, fnmr, thresholds = metrics.det_curve(genuine, impostor)
        d_fmr, d_fnmr, d_thresholds = metrics.det_curve(dg, di, **kw)
        assert d_fmr.tolist() == fmr.tolist() and d_fnmr.tolist() == fnmr.tolist()
        assert d_thresholds.tolist() == (-thresholds).tolist()
    attack, species, bonafide = pad_data(0, 120, 80, 2, 3)
    assert metrics.bpcer_at_apcer(-attack, species, -bonafide, 0.1, higher_is_better=False) == \
        tuple(s * v for s, v in zip((1, -1), metrics.bpcer_at_apcer(attack, species, bonafide, 0.1)))
    apcer_max, per_species, bpcer = metrics.apcer_bpcer(attack, species, bonafide, 0.05)
    assert metrics.apcer_bpcer(-attack, species, -bonafide, -0.05, higher_is_better=False) == \
        (apcer_max, per_species, bpcer)


def test_distance_scores_in_the_report_and_plot(tmp_path):
    d = report_data(9)
    report = metrics.vulnerability_report(**d, fmr=0.05)
    negated = {k: (v if k == "attack_species" else -v) for k, v in d.items()}
    distance = metrics.vulnerability_report(**negated, fmr=0.05, higher_is_better=False,
                                            plot=tmp_path / "d.png")
    assert distance["threshold"] == -report["threshold"] and distance["higher_is_better"] is False
    assert distance["eval"]["eer_threshold"] == -report["eval"]["eer_threshold"]
    assert {k: v for k, v in distance["eval"].items() if k != "eer_threshold"} == \
        {k: v for k, v in report["eval"].items() if k != "eer_threshold"}
    assert distance["dev"] == report["dev"]
    assert "accept score <= t" in metrics.format_report(distance)
    assert (tmp_path / "d.png").read_bytes().startswith(PNG_SIGNATURE)


@pytest.mark.parametrize("call", [
    lambda: metrics.eer([0.1], [0.2], higher_is_better="distance"),
    lambda: metrics.tar_at_far([0.1], [0.2], 0.1, higher_is_better=None),
    lambda: metrics.bpcer_at_apcer([0.1], None, [0.2], higher_is_better=0),
    lambda: metrics.vulnerability_report([0.1], [0.1], [0.1], [0.1], None, higher_is_better=1),
])
def test_higher_is_better_must_be_a_bool(call):
    with pytest.raises(TypeError, match=r"higher_is_better must be a bool .* got"):
        call()


def test_not_finite_message_keeps_the_given_sign():
    with pytest.raises(ValueError, match="eer: genuine must hold finite scores, got inf"):
        metrics.eer([0.1, math.inf], [0.1], higher_is_better=False)


# ---- swapped arguments --------------------------------------------------------------------------------------------


def test_eer_warns_when_genuine_sit_below_impostor():
    genuine, impostor = case_data(300, 3000, 3, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        right = metrics.eer(genuine, impostor)
        metrics.eer([0.3], [0.3])  # fully tied: EER 0.5, no warning
    with pytest.warns(UserWarning, match=r"eer: EER .* > 0.5: the genuine scores sit mostly below the "
                                         r"impostor scores. Are genuine and impostor swapped"):
        swapped = metrics.eer(impostor, genuine)
    assert swapped[0] > 0.5 > right[0]
    with pytest.warns(UserWarning, match="higher_is_better=False"):
        metrics.eer(-genuine, -impostor)  # distances read as similarities
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert metrics.eer(-genuine, -impostor, higher_is_better=False)[0] == right[0]
    d = report_data(10)
    with pytest.warns(UserWarning, match="eval_genuine and eval_impostor swapped"):
        metrics.vulnerability_report(d["dev_genuine"], d["dev_impostor"], d["eval_impostor"], d["eval_genuine"],
                                     None)


# ---- DET plots of degenerate curves ---------------------------------------------------------------------------


@pytest.mark.parametrize("genuine,negative", [([0.5, 0.5], [0.5, 0.5, 0.5]), ([0.7], [0.2]), ([0.2], [0.7])])
def test_plot_det_draws_degenerate_curves(tmp_path, genuine, negative):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no matplotlib warning either
        path = metrics.plot_det({"tied": (genuine, negative)}, tmp_path / "tied.png", threshold=0.5)
    assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_cli_plot_of_fully_tied_scores(tmp_path, capsys):
    path = write_csv(tmp_path / "tied.csv", [(0.5, "genuine"), (0.5, "impostor"), (0.5, "attack")])
    png = tmp_path / "tied.png"
    assert metrics_main(["vuln", "--dev", str(path), "--eval", str(path), "--plot", str(png)]) == 0
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    assert capsys.readouterr().err == ""


# ---- the command line: encodings, distances, warnings -----------------------------------------------------------


def test_cli_accepts_a_byte_order_mark(tmp_path):
    _, dev, evaluation = cli_files(tmp_path)
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + dev.read_bytes())
    out_plain, out_bom = tmp_path / "plain.json", tmp_path / "bom.json"
    assert metrics_main(["vuln", "--dev", str(dev), "--eval", str(evaluation), "--json", str(out_plain)]) == 0
    assert metrics_main(["vuln", "--dev", str(bom), "--eval", str(evaluation), "--json", str(out_bom)]) == 0
    assert json.loads(out_bom.read_text()) == json.loads(out_plain.read_text())


@pytest.mark.parametrize("content,line,found", [
    (b"score,label\n0.1,genuine\n0.2,imp\xffostor\n", 3, "byte 0xff"),
    (b"score,label\xe9\n0.1,genuine\n", 1, "byte 0xe9"),
    (b"score,label\n0.1,genuine\n0.2,impostor\xc3", 3, "truncated"),
])
def test_cli_reports_non_utf8_files_with_their_line(tmp_path, capsys, content, line, found):
    _, _, evaluation = cli_files(tmp_path)
    (tmp_path / "latin.csv").write_bytes(content)
    assert metrics_main(["vuln", "--dev", str(tmp_path / "latin.csv"), "--eval", str(evaluation)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"python -m facekernels metrics vuln: {tmp_path / 'latin.csv'}, line {line}: not UTF-8 "
                          "text (") and found in err and err.count("\n") == 1


def test_cli_reports_csv_errors_with_their_line(tmp_path, capsys):
    _, _, evaluation = cli_files(tmp_path)
    (tmp_path / "long.csv").write_bytes(b"score,label\n0.1,genuine\n0.2,\"" + b"x" * 200_000 + b"\"\n")
    assert metrics_main(["vuln", "--dev", str(tmp_path / "long.csv"), "--eval", str(evaluation)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"python -m facekernels metrics vuln: {tmp_path / 'long.csv'}, line 3: field larger "
                          "than field limit") and err.count("\n") == 1


def test_cli_distance_scores_and_swap_warning(tmp_path, capsys):
    d = report_data(11)
    rows = [(-s, "genuine") for s in d["eval_genuine"]] + [(-s, "impostor") for s in d["eval_impostor"]]
    path = write_csv(tmp_path / "distances.csv", rows)
    out = tmp_path / "r.json"
    # read as similarities: a one-line warning, then the report
    assert metrics_main(["vuln", "--dev", str(path), "--eval", str(path), "--json", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.startswith("python -m facekernels metrics vuln: warning: vulnerability_report: EER ")
    assert "--no-higher-is-better" in err and err.count("\n") == 1
    assert metrics_main(["vuln", "--dev", str(path), "--eval", str(path), "--json", str(out),
                         "--no-higher-is-better"]) == 0
    assert capsys.readouterr().err == ""
    report = json.loads(out.read_text())
    expected = metrics.vulnerability_report(d["eval_genuine"], d["eval_impostor"], d["eval_genuine"],
                                            d["eval_impostor"], None)
    assert report["threshold"] == -expected["threshold"] and report["higher_is_better"] is False
    assert report["eval"]["tar_at_far"] == expected["eval"]["tar_at_far"]
