"""facekernels.me against plainly written references in this file: BoostingVRME's decoder as the issue states
it (per-track Python loops, find_peaks spelled out), MEGC's matching rule, the recognition scores; SciPy's
find_peaks as a second opinion where it is installed."""

import contextlib
import csv
import json
import math
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest
import torch
from facekernels import me
from facekernels.cli import main as facekernels_main

# ----------------------------------------------------------------------------------------------------------
# References: written from the words, one track at a time, no shared code with facekernels.me.


def ref_smooth(scores, k_p):
    return np.convolve(scores, np.ones(2 * k_p) / (2 * k_p), mode="same")


def ref_local_maxima(x):
    """Midpoints of runs of equal samples with a strictly smaller sample on each side."""
    n, peaks = len(x), []
    for i in range(1, n - 1):
        if x[i - 1] < x[i]:
            j = i
            while j + 1 < n and x[j + 1] == x[i]:
                j += 1
            if j + 1 < n and x[j + 1] < x[i]:
                peaks.append((i + j) // 2)
    return peaks


def ref_find_peaks(x, height, distance):
    """find_peaks(x, height=height, distance=distance); ties in height go to the later peak."""
    x = list(x)
    peaks = [i for i in ref_local_maxima(x) if x[i] >= height]
    by_priority = sorted(range(len(peaks)), key=lambda a: (x[peaks[a]], peaks[a]), reverse=True)
    dropped = [False] * len(peaks)
    for a in by_priority:
        if not dropped[a]:
            for b in range(len(peaks)):
                if b != a and abs(peaks[b] - peaks[a]) < distance:
                    dropped[b] = True
    return [q for q, d in zip(peaks, dropped) if not d]


def ref_hull_iou(a, b):
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union else 0.0


def ref_spot(scores, k_p, p=0.55, strategy=1, peak_finder=None):
    """The issue's algorithm, literally. Raises IndexError / ValueError where the loops read past the end."""
    s = np.array(scores)
    sm = ref_smooth(s, k_p)
    n = len(sm)
    thr = sm.mean() + p * (sm.max() - sm.mean())
    peaks = (peak_finder or ref_find_peaks)(sm, thr, k_p)
    out = []
    for peak in peaks:
        peak = int(peak)
        if strategy == 0:
            out.append((peak - k_p, peak + k_p, peak))
            continue
        l0, r0 = max(0, peak - k_p), min(n - 1, peak + k_p)
        t1, t2 = s.mean() / 1.5, s.mean()
        start = l0
        for i in range(l0 + 1, peak):
            if s[i] > s[i - 1] and s[i] > t1:
                start = i - 1
                break
        end = r0
        for i in range(r0 - 1, peak, -1):
            if s[i] > s[i + 1] and s[i] > t1:
                end = i + 1
                break
        for i in range(start - 1, max(0, peak - 5 * k_p) - 1, -1):
            if i > 0 and s[i] < t2 and s[i - 1] < t2:
                start = i + 1
                break
        for j in range(end + 1, min(n - 1, peak + 5 * k_p) + 1):
            if j < n - 1 and s[j] < t2 and s[j + 1] < t2:
                end = j - 1
                break
        out.append((start, end, start + int(np.argmax(s[start : end + 1]))))
    if strategy == 1:
        kept = []
        for b in sorted(out, key=lambda b: b[0]):
            if all(ref_hull_iou(b, k) < 0.2 and abs(b[2] - k[2]) > k_p for k in kept):
                kept.append(b)
        out = kept
    return out


def ref_spot_or_error(scores, k_p, p, strategy):
    try:
        return ref_spot(scores, k_p, p, strategy)
    except (IndexError, ValueError):
        return "error"


def ref_megc(preds, gts, threshold=0.5):
    matched, tp, fp = set(), 0, 0
    for pred in preds:
        ious = []
        for gt in gts:
            inter = max(0, min(pred[1], gt[1]) - max(pred[0], gt[0]) + 1)
            ious.append(inter / ((pred[1] - pred[0] + 1) + (gt[1] - gt[0] + 1) - inter))
        if not ious:
            fp += 1
            continue
        best = max(range(len(gts)), key=lambda g: (ious[g], -g))
        if ious[best] >= threshold and best not in matched:
            matched.add(best)
            tp += 1
        else:
            fp += 1
    return tp, fp, len(gts) - tp


# ----------------------------------------------------------------------------------------------------------
# Random tracks: bumps of random width and height on noise, in several value styles.


def random_track(rng, length, k_p):
    style = rng.integers(6)
    t = np.arange(length)
    track = rng.random(length) * rng.uniform(0.0, 0.3)
    for _ in range(rng.integers(0, 2 + length // (6 * k_p))):
        centre, half = rng.integers(0, length), rng.integers(1, 6 * k_p + 1)
        phase = np.clip((t - centre) / half, -1.0, 1.0)
        track += rng.uniform(0.05, 1.0) * 0.5 * (1.0 + np.cos(np.pi * phase))
    if style == 1:  # coarse steps: plateaus in sm and equal heights
        track = np.round(track * 4) / 4
    elif style == 2:  # small integers
        track = np.round(track * 3).astype(np.int64)
    elif style == 3:  # float32 model output
        track = track.astype(np.float32)
    elif style == 4:  # sparse spikes
        track = np.where(rng.random(length) < 0.02, rng.random(length), 0.0)
    return track


def random_cases(seed, count, low, high, k_low=2, k_high=15):
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(count):
        k_p = int(rng.integers(k_low, k_high + 1))
        length = int(np.exp(rng.uniform(np.log(low), np.log(high + 1))))
        length = min(max(length, low, 2 * k_p), high)
        cases.append((random_track(rng, length, k_p), k_p))
    return cases


def grouped(cases):
    groups = {}
    for track, k_p in cases:
        groups.setdefault(k_p, []).append(track)
    return groups


# ----------------------------------------------------------------------------------------------------------
# spot_intervals against the reference


@pytest.mark.parametrize("strategy", [0, 1])
@pytest.mark.parametrize("p", [0.55, 0.3, 0.9])
def test_spot_intervals_matches_reference_on_random_tracks(strategy, p):
    cases = random_cases(seed=100 * strategy + int(10 * p), count=400, low=10, high=5000)
    checked = 0
    for k_p, tracks in grouped(cases).items():
        got = me.spot_intervals(tracks, k_p, p, strategy)
        assert len(got) == len(tracks)
        for track, intervals in zip(tracks, got):
            assert intervals == ref_spot(track, k_p, p, strategy), (k_p, len(track), track.dtype)
            checked += 1
    assert checked == 400


def test_spot_intervals_single_track_forms_agree():
    rng = np.random.default_rng(7)
    track = random_track(rng, 700, 5)
    expected = ref_spot(track, 5)
    assert me.spot_intervals(track, 5) == expected
    assert me.spot_intervals(track.tolist(), 5) == expected
    assert me.spot_intervals(torch.from_numpy(np.asarray(track)), 5) == expected
    assert me.spot_intervals(track[::-1].copy()[::-1], 5) == expected  # non-contiguous view
    assert all(isinstance(v, int) for interval in expected for v in interval)


def test_spot_intervals_padded_batch_with_lengths():
    rng = np.random.default_rng(8)
    tracks = [random_track(rng, int(n), 4).astype(np.float64) for n in rng.integers(8, 900, size=30)]
    width = max(len(t) for t in tracks)
    padded = np.full((len(tracks), width + 5), np.nan)  # padding is never read
    for v, t in enumerate(tracks):
        padded[v, : len(t)] = t
    lengths = np.array([len(t) for t in tracks])
    for strategy in (0, 1):
        expected = [ref_spot_or_error(t, 4, 0.55, strategy) for t in tracks]
        if "error" in expected:  # a short track: decode the others
            keep = [v for v, e in enumerate(expected) if e != "error"]
            got = me.spot_intervals(padded[keep], 4, strategy=strategy, lengths=lengths[keep])
            assert got == [expected[v] for v in keep]
        else:
            assert me.spot_intervals(padded, 4, strategy=strategy, lengths=lengths) == expected
        padded_t, lengths_t = torch.from_numpy(padded), torch.from_numpy(lengths)
        as_tensors = me.spot_intervals(padded_t, 4, strategy=0, lengths=lengths_t)
        assert as_tensors == [ref_spot(t, 4, 0.55, 0) for t in tracks]


@pytest.mark.parametrize("value", [0.0, 1.0, 0.1, -2.5, 7])
@pytest.mark.parametrize("length", [1, 5, 29, 30, 31, 1000, 4999])
@pytest.mark.parametrize("strategy", [0, 1])
def test_flat_and_all_zero_tracks(value, length, strategy):
    track = np.full(length, value)
    for k_p in (1, 2, 15):
        expected = ref_spot_or_error(track, k_p, 0.55, strategy)
        if expected == "error":
            with pytest.raises(ValueError, match="spot_intervals: scores has"):
                me.spot_intervals(track, k_p, strategy=strategy)
        else:
            assert me.spot_intervals(track, k_p, strategy=strategy) == expected
    if value == 0.0:
        assert me.spot_intervals(track, 3, strategy=strategy) == []


@pytest.mark.parametrize("strategy", [0, 1])
def test_tracks_shorter_than_the_box(strategy):
    """numpy's "same" mode returns 2*k_p samples for a shorter track; strategy 0 reports that grid, strategy
    1 gives the published result where the published loops stay inside the track and raises where they
    do not."""
    rng = np.random.default_rng(11 + strategy)
    outcomes = {"error": 0, "intervals": 0, "none": 0}
    for _ in range(600):
        k_p = int(rng.integers(1, 16))
        length = int(rng.integers(1, 2 * k_p))
        track = random_track(rng, length, k_p)
        assert len(ref_smooth(track, k_p)) == 2 * k_p
        expected = ref_spot_or_error(track, k_p, 0.55, strategy)
        if expected == "error":
            outcomes["error"] += 1
            with pytest.raises(ValueError, match=r"fewer than 2\*k_p"):
                me.spot_intervals(track, k_p, strategy=strategy)
            with pytest.raises(ValueError, match="video 1 has"):
                me.spot_intervals([np.ones(100), track], k_p, strategy=strategy)
        else:
            outcomes["intervals" if expected else "none"] += 1
            assert me.spot_intervals(track, k_p, strategy=strategy) == expected
            assert me.spot_intervals([track, track], k_p, strategy=strategy) == [expected, expected]
    if strategy == 0:
        assert outcomes["error"] == 0 and outcomes["intervals"] > 100
    else:  # every branch is exercised
        assert min(outcomes.values()) > 0, outcomes


def test_short_track_that_decodes_and_one_that_fails():
    # 3 frames, k_p = 2: sm has 4 samples, a plateau peak at (1 + 2) // 2 = 1.
    assert ref_smooth(np.array([1.0, 2.0, 1.0]), 2).tolist() == [0.75, 1.0, 1.0, 0.75]
    assert me.spot_intervals([1.0, 2.0, 1.0], 2, strategy=0) == [(-1, 3, 1)]
    # strategy 1: r0 = 3, and the end scan compares s[2] with s[3], past the end of the track
    with pytest.raises(IndexError):
        ref_spot([1.0, 2.0, 1.0], 2, strategy=1)
    with pytest.raises(ValueError, match=r"reads raw score 3 past the end"):
        me.spot_intervals([1.0, 2.0, 1.0], 2, strategy=1)
    # a plateau that reaches the end is no peak: nothing to decode, nothing read
    assert ref_smooth(np.array([1.0, 2.0]), 2).tolist() == [0.25, 0.75, 0.75, 0.75]
    assert me.spot_intervals([1.0, 2.0], 2, strategy=1) == []


def test_peak_ties_go_to_the_later_peak():
    # Two equal peaks 3 frames apart with distance 4: the later one is kept.
    sm_peaks = ref_find_peaks([0, 1, 0, 0, 1, 0], 0.5, 4)
    assert sm_peaks == [4]
    # The same through the decoder: a periodic integer track gives equal smoothed heights.
    track = np.tile([0, 0, 3, 0, 0, 0], 20)
    for strategy in (0, 1):
        assert me.spot_intervals(track, 4, strategy=strategy) == ref_spot(track, 4, strategy=strategy)


def test_plateau_peaks_and_edges():
    x = np.array([0, 1, 2, 2, 2, 2, 1, 0, 3, 3, 3, 0, 0, 5, 5], dtype=float)
    assert ref_local_maxima(x) == [3, 9]  # the run at the end is not a peak
    k_p = 1  # box of 2: sm[i] = (x[i-1] + x[i]) / 2
    assert me.spot_intervals(x, k_p, p=0.0, strategy=0) == [(a - 1, a + 1, a) for a in
                                                            ref_find_peaks(ref_smooth(x, 1), -1, 1)
                                                            if ref_smooth(x, 1)[a] >= ref_smooth(x, 1).mean()]


def test_suppression_keeps_earlier_onsets():
    # Two bumps 3 frames apart: their strategy-1 intervals overlap and one is suppressed.
    track = np.zeros(200)
    track[50:60] = [0.2, 0.5, 0.9, 0.5, 0.4, 0.6, 1.0, 0.6, 0.3, 0.1]
    got = me.spot_intervals(track, 2, p=0.2, strategy=1)
    assert got == ref_spot(track, 2, p=0.2, strategy=1)
    assert len(got) == 1


def test_empty_batch_and_zero_length():
    assert me.spot_intervals([], 3) == []
    assert me.spot_intervals((), 3, strategy=0) == []
    with pytest.raises(ValueError, match="spot_intervals: scores has no frames"):
        me.spot_intervals(np.zeros(0), 3)
    with pytest.raises(ValueError, match="spot_intervals: video 1 has no frames"):
        me.spot_intervals([np.ones(50), np.zeros(0)], 3)


def test_spot_intervals_bad_input():
    good = np.random.default_rng(0).random(100)
    with pytest.raises(ValueError, match="spot_intervals: k_p must be >= 1, got 0"):
        me.spot_intervals(good, 0)
    with pytest.raises(ValueError, match="k_p must be >= 1, got -3"):
        me.spot_intervals(good, -3)
    with pytest.raises(TypeError, match="spot_intervals: k_p must be an integer, got float 2.5"):
        me.spot_intervals(good, 2.5)
    with pytest.raises(TypeError, match="k_p must be an integer"):
        me.spot_intervals(good, True)
    bad = good.copy()
    bad[37] = np.nan
    with pytest.raises(ValueError, match="spot_intervals: scores has a non-finite score nan at frame 37"):
        me.spot_intervals(bad, 3)
    with pytest.raises(ValueError, match="video 2 has a non-finite score nan at frame 37"):
        me.spot_intervals([good, good, bad], 3)
    bad[37] = np.inf
    with pytest.raises(ValueError, match="non-finite score inf"):
        me.spot_intervals(bad, 3, strategy=0)
    with pytest.raises(ValueError, match="scores must be a 1-D track .*2-D array of shape \\(2, 50\\)"):
        me.spot_intervals(good.reshape(2, 50), 3)
    with pytest.raises(ValueError, match="scores must be a 1-D track"):
        me.spot_intervals(good.reshape(2, 5, 10), 3)
    with pytest.raises(ValueError, match="scores must be a 1-D track"):
        me.spot_intervals(np.float64(3.0), 3)
    with pytest.raises(ValueError, match=r"scores\[1\] must be a 1-D track, got shape \(2, 50\)"):
        me.spot_intervals([good, good.reshape(2, 50)], 3)
    with pytest.raises(ValueError, match="strategy must be 0 or 1, got 2"):
        me.spot_intervals(good, 3, strategy=2)
    with pytest.raises(ValueError, match="p must be finite"):
        me.spot_intervals(good, 3, p=float("nan"))
    with pytest.raises(TypeError, match="scores must hold real numbers"):
        me.spot_intervals(good.astype(complex), 3)
    with pytest.raises(TypeError, match="scores must hold real numbers"):
        me.spot_intervals(np.array(["a", "b"]), 3)
    batch = good.reshape(2, 50)
    with pytest.raises(ValueError, match=r"lengths must have shape \(2,\)"):
        me.spot_intervals(batch, 3, lengths=[50])
    with pytest.raises(ValueError, match=r"lengths\[1\] must lie in \[1, 50\] \(the padded width\), got 51"):
        me.spot_intervals(batch, 3, lengths=[50, 51])
    with pytest.raises(ValueError, match=r"lengths\[0\] must lie in \[1, 50\] \(the padded width\), got 0"):
        me.spot_intervals(batch, 3, lengths=[0, 5])
    with pytest.raises(TypeError, match="lengths must hold integers"):
        me.spot_intervals(batch, 3, lengths=[5.0, 5.0])
    with pytest.raises(ValueError, match="with lengths, scores must be a 2-D padded batch"):
        me.spot_intervals(good, 3, lengths=[100])


@pytest.mark.slow
def test_spot_intervals_dataset_scale_matches_reference():
    """1000 videos x 3000 frames, the benchmark's shape, checked video by video."""
    rng = np.random.default_rng(2024)
    tracks = [random_track(rng, 3000, 6) for _ in range(1000)]
    for strategy in (0, 1):
        got = me.spot_intervals(tracks, 6, strategy=strategy)
        assert got == [ref_spot(t, 6, strategy=strategy) for t in tracks]


# ----------------------------------------------------------------------------------------------------------
# SciPy as a second opinion on the peak finder


def _has_close_height_tie(sm, thr, distance):
    peaks = [i for i in ref_local_maxima(list(sm)) if sm[i] >= thr]
    return any(sm[a] == sm[b] and abs(a - b) < distance for a in peaks for b in peaks if a < b)


def test_peaks_match_scipy_find_peaks():
    signal = pytest.importorskip("scipy.signal")
    cases = random_cases(seed=5, count=1500, low=10, high=3000)
    compared = ties = 0
    for k_p, tracks in grouped(cases).items():
        got = me.spot_intervals(tracks, k_p, strategy=0)
        for track, intervals in zip(tracks, got):
            sm = ref_smooth(track, k_p)
            thr = sm.mean() + 0.55 * (sm.max() - sm.mean())
            if _has_close_height_tie(sm, thr, k_p):
                ties += 1  # SciPy's order then depends on NumPy's unstable argsort
                continue
            expected, _ = signal.find_peaks(sm, height=thr, distance=k_p)
            assert [a for _, _, a in intervals] == expected.tolist()
            compared += 1
    assert compared > 1300 and ties < 100


def test_ties_match_scipy_with_a_stable_argsort(monkeypatch):
    """SciPy's distance selection argsorts the heights with NumPy's default (unstable) kind; made stable, it
    agrees with the fixed tie rule on every input, ties included."""
    signal = pytest.importorskip("scipy.signal")
    default_argsort = np.argsort
    monkeypatch.setattr(np, "argsort", lambda a, *args, **kw: default_argsort(a, kind="stable"))
    rng = np.random.default_rng(3)
    ties = 0
    for _ in range(300):
        k_p = int(rng.integers(2, 9))
        track = np.tile(rng.integers(0, 3, size=int(rng.integers(2, 12))), 30)  # periodic: equal heights
        sm = ref_smooth(track, k_p)
        thr = sm.mean() + 0.55 * (sm.max() - sm.mean())
        ties += _has_close_height_tie(sm, thr, k_p)
        expected, _ = signal.find_peaks(sm, height=thr, distance=k_p)
        assert [a for _, _, a in me.spot_intervals(track, k_p, strategy=0)] == expected.tolist()
        assert ref_find_peaks(sm, thr, k_p) == expected.tolist()
    assert ties > 20


def test_full_decoder_with_scipy_peaks():
    signal = pytest.importorskip("scipy.signal")

    def scipy_peaks(sm, thr, distance):
        return signal.find_peaks(sm, height=thr, distance=distance)[0].tolist()

    for track, k_p in random_cases(seed=9, count=300, low=30, high=2000):
        sm = ref_smooth(track, k_p)
        if _has_close_height_tie(sm, sm.mean() + 0.55 * (sm.max() - sm.mean()), k_p):
            continue
        assert me.spot_intervals(track, k_p) == ref_spot(track, k_p, peak_finder=scipy_peaks)


# ----------------------------------------------------------------------------------------------------------
# stitch_windows


def ref_stitch(windows, k):
    half = k // 2
    out = np.zeros((len(windows) + 1) * half)
    for i, window in enumerate(windows):
        if i == 0:
            out[0:k] = window
        else:
            out[(i + 1) * half : (i + 2) * half] = window[half:]
    return out


@pytest.mark.parametrize("count,k", [(1, 2), (1, 8), (5, 2), (7, 12), (40, 6)])
def test_stitch_windows(count, k):
    windows = np.random.default_rng(count * k).random((count, k)).astype(np.float32)
    got = me.stitch_windows(windows, k)
    assert got.dtype == np.float64 and got.shape == ((count + 1) * k // 2,)
    np.testing.assert_array_equal(got, ref_stitch(windows, k))
    np.testing.assert_array_equal(me.stitch_windows(torch.from_numpy(windows), k), got)
    labels = np.random.default_rng(1).integers(0, 5, size=(count, k))
    np.testing.assert_array_equal(me.stitch_windows(labels, k).astype(np.int64), ref_stitch(labels, k))


def test_stitch_windows_bad_input():
    with pytest.raises(ValueError, match="stitch_windows: k must be even .* got 5"):
        me.stitch_windows(np.zeros((3, 5)), 5)
    with pytest.raises(ValueError, match="k must be >= 2, got 0"):
        me.stitch_windows(np.zeros((3, 0)), 0)
    with pytest.raises(TypeError, match="k must be an integer"):
        me.stitch_windows(np.zeros((3, 4)), 4.0)
    with pytest.raises(ValueError, match=r"must have k = 6 columns, got shape \(3, 4\)"):
        me.stitch_windows(np.zeros((3, 4)), 6)
    with pytest.raises(ValueError, match=r"must be 2-D \[windows, k\], got shape \(8,\)"):
        me.stitch_windows(np.zeros(8), 4)
    with pytest.raises(ValueError, match="at least one window"):
        me.stitch_windows(np.zeros((0, 4)), 4)
    with pytest.raises(ValueError, match="could not be read as an array"):
        me.stitch_windows([[1, 2, 3, 4], [1, 2]], 4)


# ----------------------------------------------------------------------------------------------------------
# MEGC spotting


def random_intervals(rng, count, length=300):
    onsets = rng.integers(-5, length, size=count)
    return [(int(a), int(a + rng.integers(0, 40)), int(a)) for a in onsets]


def test_spotting_counts_matches_reference():
    rng = np.random.default_rng(4)
    for trial in range(3000):
        preds = random_intervals(rng, int(rng.integers(0, 8)), length=int(rng.integers(20, 300)))
        gts = random_intervals(rng, int(rng.integers(0, 5)), length=int(rng.integers(20, 300)))
        if trial % 3 == 0 and gts:  # predictions near the ground truth, so that matches happen
            near = [(a + int(rng.integers(-3, 4)), b + int(rng.integers(-3, 4))) for a, b, _ in gts]
            preds = [(a, max(a, b)) for a, b in near] + preds
        threshold = [0.5, 0.3, 0.0, 1.0][trial % 4]
        expected = ref_megc(preds, gts, threshold)
        assert me.spotting_counts(preds, gts, threshold) == expected
        matches = me.match_intervals(preds, gts, threshold)
        assert sum(m >= 0 for m in matches) == expected[0]
        assert len({m for m in matches if m >= 0}) == expected[0]


def test_spotting_counts_rules():
    gt = [(10, 19), (15, 24)]
    assert me.interval_iou((10, 19), (10, 19)) == 1.0
    assert me.interval_iou((15, 19), (10, 19)) == 0.5 == me.interval_iou((15, 19), (15, 24))
    # (15, 19) ties between both ground truths: it is compared with the first, already matched -> FP
    assert me.match_intervals([(10, 19), (15, 19)], gt) == [0, -1]
    assert me.spotting_counts([(10, 19), (15, 19)], gt) == (1, 1, 1)
    # a second prediction on a matched ground truth is a false positive; the order of predictions counts
    assert me.spotting_counts([(10, 19, 12), (10, 18, 12)], [(10, 19)]) == (1, 1, 0)
    assert me.match_intervals([(0, 3), (10, 19)], [(10, 19)]) == [-1, 0]
    assert me.spotting_counts([], gt) == (0, 0, 2)
    assert me.spotting_counts([(1, 2)], []) == (0, 1, 0)
    assert me.spotting_counts([], []) == (0, 0, 0)
    assert me.spotting_counts([(5, 5)], [(5, 5)]) == (1, 0, 0)  # one-frame intervals
    assert me.spotting_counts(np.array([[10, 19, 14]]), np.array([[10, 19]])) == (1, 0, 0)
    assert me.spotting_counts([(10.0, 19.0)], [(10, 19)]) == (1, 0, 0)
    # IoU exactly at the threshold counts: inter 10 / union 20
    assert me.interval_iou((0, 14), (5, 19)) == 0.5 and me.spotting_counts([(0, 14)], [(5, 19)]) == (1, 0, 0)


def test_spotting_bad_input():
    with pytest.raises(ValueError, match=r"spotting_counts: pred_intervals\[0\] has offset 3 < onset 5"):
        me.spotting_counts([(5, 3)], [(1, 2)])
    with pytest.raises(ValueError, match=r"gt_intervals\[1\] has offset 0 < onset 1"):
        me.spotting_counts([], [(1, 2), (1, 0)])
    with pytest.raises(ValueError, match=r"pred_intervals\[0\] must have 2 or 3 entries"):
        me.spotting_counts([(1,)], [])
    with pytest.raises(ValueError, match="must be an integer frame index"):
        me.spotting_counts([(1.5, 3)], [])
    with pytest.raises(TypeError, match="must be an integer frame index"):
        me.spotting_counts([("a", 3)], [])
    with pytest.raises(TypeError, match=r"pred_intervals\[0\] must be an \(onset, offset"):
        me.spotting_counts([5], [])
    with pytest.raises(ValueError, match=r"iou_threshold must lie in \[0.0, 1.0\]"):
        me.spotting_counts([], [], iou_threshold=1.5)
    with pytest.raises(ValueError, match=r"must be an array \[m, 2\]"):
        me.spotting_counts(np.zeros((2, 4), dtype=int), [])


def test_spotting_metrics_over_a_dataset():
    rng = np.random.default_rng(12)
    preds = [random_intervals(rng, int(rng.integers(0, 6)), 100) for _ in range(50)]
    gts = [random_intervals(rng, int(rng.integers(0, 4)), 100) for _ in range(50)]
    tp, fp, fn = (sum(c) for c in zip(*(ref_megc(p, g) for p, g in zip(preds, gts))))
    result = me.spotting_metrics(preds, gts)
    assert (result.tp, result.fp, result.fn) == (tp, fp, fn)
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert result.precision == precision and result.recall == recall
    assert result.f1 == 2 * precision * recall / (precision + recall)
    names = [f"v{i}" for i in range(len(preds))]
    by_name = me.spotting_metrics(dict(zip(names, preds)), dict(zip(names, gts)))
    assert by_name == result
    # a video present on one side only
    assert me.spotting_metrics({"a": [(1, 5)]}, {"b": [(1, 5)]})[:3] == (0, 1, 1)
    assert me.spotting_scores(0, 0, 0) == (0, 0, 0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="must list the same videos, got 2 and 1"):
        me.spotting_metrics([[], []], [[]])
    with pytest.raises(TypeError, match="both be mappings or both be sequences"):
        me.spotting_metrics({"a": []}, [[]])


# ----------------------------------------------------------------------------------------------------------
# Recognition, STRS, pseudo-labels


def ref_recognition(true, pred, classes):
    ps, rs, fs, supported = [], [], [], []
    for c in classes:
        if len({t == c for t in true} | {q == c for q in pred}) < 2:
            continue  # a one-cell confusion matrix: skipped by the published code
        tp = sum(1 for t, q in zip(true, pred) if t == c and q == c)
        fp = sum(1 for t, q in zip(true, pred) if t != c and q == c)
        fn = sum(1 for t, q in zip(true, pred) if t == c and q != c)
        ps.append(tp / (tp + fp) if tp + fp else 0.0)
        rs.append(tp / (tp + fn) if tp + fn else 0.0)
        fs.append(2 * tp / (2 * tp + fp + fn))
        if tp + fn:
            supported.append(rs[-1])
    if not ps:
        return 0.0, 0.0, 0.0, 0.0, 0.0
    P, R = sum(ps) / len(ps), sum(rs) / len(rs)
    f1 = 2 * P * R / (P + R) if P + R else 0.0
    return f1, P, R, sum(fs) / len(fs), sum(supported) / len(supported) if supported else 0.0


def test_recognition_f1_worked_example():
    true = ["neg", "neg", "pos", "sur", "sur", "sur"]
    pred = ["neg", "pos", "pos", "sur", "neg", "oth"]
    result = me.recognition_f1(true, pred, ["neg", "pos", "sur", "oth", "absent"])
    assert result.classes == ("neg", "pos", "sur", "oth")  # "absent" occurs nowhere: left out
    assert result.precision == pytest.approx((0.5 + 0.5 + 1.0 + 0.0) / 4)
    assert result.recall == pytest.approx((0.5 + 1.0 + 1 / 3 + 0.0) / 4)
    p, r = result.precision, result.recall
    assert result.f1 == pytest.approx(2 * p * r / (p + r))
    assert result.uf1 == pytest.approx((0.5 + 2 / 3 + 0.5 + 0.0) / 4)
    assert result.f1 != pytest.approx(result.uf1)  # F1 of the means, not the mean of the F1s
    assert result.uar == pytest.approx((0.5 + 1.0 + 1 / 3) / 3)  # "oth" has no support
    ref = ref_recognition(true, pred, ["neg", "pos", "sur", "oth", "absent"])
    assert result[:5] == pytest.approx(ref)


def test_recognition_f1_random_against_reference():
    rng = np.random.default_rng(13)
    classes = [0, 1, 2, 3]
    for _ in range(500):
        size = int(rng.integers(1, 30))
        true = rng.integers(0, 4, size=size).tolist()
        pred = rng.integers(0, 5, size=size).tolist()  # 4 = a label outside the classes
        got = me.recognition_f1(true, pred, classes)
        assert got[:5] == pytest.approx(ref_recognition(true, pred, classes))


def test_recognition_f1_edge_cases():
    assert me.recognition_f1([], [], ["a"]) == (0.0, 0.0, 0.0, 0.0, 0.0, ())
    assert me.recognition_f1(["a", "a"], ["a", "a"], ["a", "b"]).classes == ()  # every label is "a"
    assert me.recognition_f1(["a"], ["b"], ["a", "b"])[:5] == (0.0, 0.0, 0.0, 0.0, 0.0)
    message = "recognition_f1: true_labels and pred_labels must have the same length, got 2 and 1"
    with pytest.raises(ValueError, match=message):
        me.recognition_f1(["a", "b"], ["a"], ["a"])
    with pytest.raises(ValueError, match="classes must name at least one class"):
        me.recognition_f1(["a"], ["a"], [])
    with pytest.raises(ValueError, match="classes must be distinct"):
        me.recognition_f1(["a"], ["a"], ["a", "a"])
    with pytest.raises(TypeError, match="true_labels must be a sequence of labels"):
        me.recognition_f1("ab", "ab", ["a"])


def test_strs():
    assert me.strs(0.5, 0.4) == 0.2
    assert me.strs(np.float32(0.25), 1) == 0.25
    with pytest.raises(ValueError, match=r"strs: recognition_f1 must lie in \[0.0, 1.0\], got 1.5"):
        me.strs(0.5, 1.5)
    with pytest.raises(ValueError, match="spotting_f1 must be finite"):
        me.strs(float("nan"), 0.5)
    with pytest.raises(TypeError, match="spotting_f1 must be a real number"):
        me.strs(me.recognition_f1(["a"], ["a"], ["a"]), 0.5)


def test_frame_labels():
    spot, classes = me.frame_labels([(2, 6), (5, 9, 7)], ["pos", "neg"], 12)
    assert spot.tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0]
    assert classes.tolist() == ["neutral"] * 3 + ["pos"] * 3 + ["neg"] * 3 + ["neutral"] * 3
    spot, classes = me.frame_labels([(8, 20)], [2], 12, neutral=4)  # frames past the end are dropped
    assert classes.dtype == np.int64 and classes.tolist() == [4] * 9 + [2] * 3
    assert spot.tolist() == [0] * 9 + [1] * 3
    spot, _ = me.frame_labels([(3, 3), (5, 6)], ["a", "b"], 8)  # too short to label a frame
    assert spot.sum() == 0
    spot, classes = me.frame_labels([], [], 4)
    assert spot.tolist() == [0] * 4 and classes.tolist() == ["neutral"] * 4
    with pytest.raises(ValueError, match=r"frame_labels: intervals\[0\] has offset 2 < onset 4"):
        me.frame_labels([(4, 2)], ["a"], 10)
    with pytest.raises(ValueError, match=r"intervals\[0\] has a negative onset -1"):
        me.frame_labels([(-1, 2)], ["a"], 10)
    with pytest.raises(ValueError, match=r"emotions must have one label per interval \(1\), got 2"):
        me.frame_labels([(1, 5)], ["a", "b"], 10)
    with pytest.raises(ValueError, match="n_frames must be >= 0"):
        me.frame_labels([], [], -1)


# ----------------------------------------------------------------------------------------------------------
# The command


def me_main(argv):
    """`python -m facekernels me ...` in this process."""
    return facekernels_main(["me", *argv])


def write_csv(path, rows, header):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def test_evaluate_command(tmp_path, capsys):
    header = ["dataset", "video", "onset", "offset", "apex", "emotion"]
    gt = write_csv(tmp_path / "gt.csv", [
        ["casme3", "a", 10, 19, 14, "negative"],
        ["casme3", "a", 40, 55, 47, "positive"],
        ["casme3", "b", "", "", "", ""],  # a video without expressions
        ["samm", "a", 100, 130, 110, "surprise"],
    ], header)
    pred = write_csv(tmp_path / "pred.csv", [
        ["casme3", "a", 11, 19, 15, "negative"],  # TP
        ["casme3", "a", 11, 18, 15, "negative"],  # FP: same ground truth again
        ["casme3", "a", 41, 56, 50, "negative"],  # TP, wrong emotion
        ["casme3", "b", 5, 9, 7, "positive"],     # FP
        ["samm", "a", 0, 10, 5, "surprise"],      # FP; the samm ground truth is missed
    ], header)
    assert me_main(["evaluate", "--pred", pred, "--gt", gt, "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    casme, samm, overall = report["datasets"]["casme3"], report["datasets"]["samm"], report["overall"]
    assert (casme["tp"], casme["fp"], casme["fn"], casme["videos"]) == (2, 2, 0, 2)
    assert (samm["tp"], samm["fp"], samm["fn"]) == (0, 1, 1)
    assert (overall["tp"], overall["fp"], overall["fn"]) == (2, 3, 1)
    assert overall["f1"] == me.spotting_scores(2, 3, 1).f1
    assert report["classes"] == ["negative", "positive", "surprise"]
    rec = me.recognition_f1(["negative", "positive"], ["negative", "negative"], report["classes"])
    assert overall["recognition_f1"] == rec.f1 and overall["strs"] == overall["f1"] * rec.f1

    assert me_main(["evaluate", "--pred", pred, "--gt", gt]) == 0
    text = capsys.readouterr().out
    assert "casme3" in text and "samm" in text and "overall" in text and "STRS" in text


def test_evaluate_command_without_datasets_or_emotions(tmp_path, capsys):
    gt = write_csv(tmp_path / "gt.csv", [["v1", 10, 20], ["v2", 30, 40]], ["video", "onset", "offset"])
    header = ["video", "onset", "offset", "apex", "emotion"]
    pred = write_csv(tmp_path / "pred.csv", [["v2", 31, 40, 35, ""]], header)
    assert me_main(["evaluate", "--pred", pred, "--gt", gt, "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report["datasets"]) == ["all"] and report["classes"] is None
    assert (report["overall"]["tp"], report["overall"]["fp"], report["overall"]["fn"]) == (1, 0, 1)
    assert me_main(["evaluate", "--pred", pred, "--gt", gt]) == 0
    assert "overall" not in capsys.readouterr().out  # one dataset: one row


def test_evaluate_command_dataset_resolution(tmp_path, capsys):
    """Predictions without a dataset column are matched to the ground truth by video name; a prediction
    dataset column is ignored when the ground truth has none."""
    gt = write_csv(tmp_path / "gt.csv", [["d1", "a", 10, 20], ["d2", "b", 30, 40], ["d2", "c", "", ""]],
                   ["dataset", "video", "onset", "offset"])
    plain = ["video", "onset", "offset"]
    pred = write_csv(tmp_path / "pred.csv", [["a", 10, 20], ["c", 1, 5], ["b", 0, 3]], plain)
    assert me_main(["evaluate", "--pred", pred, "--gt", gt, "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(r["tp"], r["fp"], r["fn"], r["videos"]) for r in report["datasets"].values()] == [(1, 0, 0, 1),
                                                                                           (0, 2, 1, 2)]
    plain_gt = write_csv(tmp_path / "gt2.csv", [["a", 10, 20]], ["video", "onset", "offset"])
    named = write_csv(tmp_path / "pred2.csv", [["x", "a", 10, 20]], ["dataset", "video", "onset", "offset"])
    assert me_main(["evaluate", "--pred", named, "--gt", plain_gt, "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["overall"]["tp"] == 1
    twice = write_csv(tmp_path / "gt3.csv", [["d1", "a", 1, 2], ["d2", "a", 1, 2]], ["dataset", *plain])
    assert me_main(["evaluate", "--pred", pred, "--gt", twice]) == 2
    assert "ground truth in several datasets" in capsys.readouterr().err


def test_evaluate_command_errors(tmp_path, capsys):
    gt = write_csv(tmp_path / "gt.csv", [["v1", 10, 20]], ["video", "onset", "offset"])
    unknown = write_csv(tmp_path / "p1.csv", [["v9", 1, 2]], ["video", "onset", "offset"])
    assert me_main(["evaluate", "--pred", unknown, "--gt", gt]) == 2
    assert "video 'v9' has no ground-truth rows" in capsys.readouterr().err
    backwards = write_csv(tmp_path / "p2.csv", [["v1", 5, 2]], ["video", "onset", "offset"])
    assert me_main(["evaluate", "--pred", backwards, "--gt", gt]) == 2
    assert "p2.csv:2: offset 2 < onset 5" in capsys.readouterr().err
    no_offset = write_csv(tmp_path / "p3.csv", [["v1", 5]], ["video", "onset"])
    assert me_main(["evaluate", "--pred", no_offset, "--gt", gt]) == 2
    assert "missing column(s) offset" in capsys.readouterr().err
    assert me_main(["evaluate", "--pred", str(tmp_path / "none.csv"), "--gt", gt]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_bench_command(capsys):
    assert me_main(["bench", "--videos", "20", "--frames", "400", "--repeats", "2", "--json", "-"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["videos"] == 20 and len(result["times_s"]) == 2 and result["intervals"] > 0


def test_evaluate_command_writes_json_to_a_file(tmp_path, capsys):
    gt = write_csv(tmp_path / "gt.csv", [["v1", 10, 20], ["v2", 30, 40]], ["video", "onset", "offset"])
    pred = write_csv(tmp_path / "pred.csv", [["v2", 31, 40]], ["video", "onset", "offset"])
    out = tmp_path / "report.json"
    assert me_main(["evaluate", "--pred", pred, "--gt", gt, "--json", str(out)]) == 0
    assert "F1" in capsys.readouterr().out  # the table is printed as well
    report = json.loads(out.read_text())
    assert (report["overall"]["tp"], report["overall"]["fp"], report["overall"]["fn"]) == (1, 0, 1)


def test_python_dash_m_me_alias(tmp_path):
    """`python -m facekernels.me` is `python -m facekernels me`."""
    gt = write_csv(tmp_path / "gt.csv", [["v1", 10, 20]], ["video", "onset", "offset"])
    for command in (["facekernels.me"], ["facekernels", "me"]):
        result = subprocess.run([sys.executable, "-m", *command, "evaluate", "--pred", gt, "--gt", gt, "--json", "-"],
                                capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["overall"]["tp"] == 1



# ----------------------------------------------------------------------------------------------------------
# Huge k_p: refused before anything is allocated


@contextlib.contextmanager
def address_space_limit(extra_bytes):
    """Allow this process only ``extra_bytes`` more address space meanwhile (Linux), so that a large
    allocation fails with MemoryError instead of exhausting the machine."""
    resource = pytest.importorskip("resource")
    try:
        with open("/proc/self/statm") as handle:
            used = int(handle.read().split()[0]) * resource.getpagesize()
    except OSError:
        pytest.skip("needs /proc/self/statm")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = used + extra_bytes
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.mark.parametrize("k_p", [10**9, 10**18, 10**30])
@pytest.mark.parametrize("strategy", [0, 1])
def test_huge_k_p_is_refused_before_any_allocation(k_p, strategy):
    track = np.r_[np.zeros(40), np.linspace(0, 1, 10), np.zeros(50)]
    calls = [
        (lambda: me.spot_intervals(track, k_p, strategy=strategy), "scores has 100 frames"),
        (lambda: me.spot_intervals([np.ones(5000), track], k_p, strategy=strategy), "video 0 has 5000 frames"),
        (lambda: me.spot_intervals(np.zeros((3, 100)), k_p, strategy=strategy, lengths=[100, 50, 100]),
         "video 0 has 100 frames"),
    ]
    for call, name in calls:
        tracemalloc.start()
        started = time.perf_counter()
        try:
            with address_space_limit(1 << 30), pytest.raises(ValueError) as raised:
                call()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        message = str(raised.value)
        assert message.startswith(f"spot_intervals: {name}, fewer than 2*k_p = {2 * k_p}"), message
        assert "2**24" in message and "smaller k_p" in message
        assert peak < 1 << 20 and time.perf_counter() - started < 5.0


def test_short_track_padding_is_counted_over_the_batch():
    # each track alone adds 2**23 - 100 samples, under the limit; three of them exceed 2**24 together
    k_p = 1 << 22
    with address_space_limit(1 << 30), pytest.raises(
            ValueError, match=r"video 0 has 100 frames, fewer than 2\*k_p = 8388608.*need 25165524 samples more"):
        me.spot_intervals([np.ones(100), np.ones(100), np.ones(100)], k_p)


# ----------------------------------------------------------------------------------------------------------
# interval_iou and spotting_scores on bad or degenerate input


def test_interval_iou_of_empty_and_reversed_intervals():
    # offset = onset - 1: an empty interval (no frame); its IoU is 0.0, never -0.0 or a ZeroDivisionError
    for a, b in [((5, 4), (5, 4)), ((5, 4), (0, 10)), ((0, 10), (5, 4)), ((5, 4), (7, 6)), ((3, 2), (3, 3))]:
        iou = me.interval_iou(a, b)
        assert iou == 0.0 and math.copysign(1.0, iou) == 1.0, (a, b)
    assert me.interval_iou((10, 19, 14), (15, 19)) == 0.5  # an apex is allowed and ignored
    for a, b, name in [((5, 3), (5, 3), "a"), ((0, 10), (5, 3), "b"), ((10, 0), (0, 10), "a")]:
        with pytest.raises(ValueError, match=rf"interval_iou: {name} is reversed: offset \d+ < onset \d+ - 1"):
            me.interval_iou(a, b)
    with pytest.raises(ValueError, match="interval_iou: a must have 2 or 3 entries"):
        me.interval_iou((1,), (1, 2))
    with pytest.raises(TypeError, match="interval_iou: b must be an .onset, offset"):
        me.interval_iou((1, 2), 3)
    with pytest.raises(ValueError, match="interval_iou: a onset must be an integer frame index, got 1.5"):
        me.interval_iou((1.5, 2), (1, 2))
    with pytest.raises(ValueError, match=r"interval_iou: b offset must be a frame index in \[-2\*\*50, 2\*\*50\]"):
        me.interval_iou((1, 2), (1, 10**30))


def test_frame_indices_are_bounded():
    # past 2**50, lengths and unions would leave the exact range of float64 (and overflow int64 at 2**62)
    assert me.match_intervals([(0, 2**50)], [(-(2**50), 2**50)]) == [0]
    with pytest.raises(ValueError, match=r"match_intervals: gt_intervals\[0\] onset must be a frame index"):
        me.match_intervals([(0, 5)], [(-(2**62), 2**62)])
    with pytest.raises(ValueError, match=r"pred_intervals\[0\] offset must be a frame index"):
        me.spotting_counts(np.array([[0, 2**60]]), [])


def test_spotting_scores_refuses_negative_or_non_integer_counts():
    assert me.spotting_scores(np.int64(2), 1, 0) == me.spotting_scores(2, 1, 0)
    for counts, name in [((-1, 2, 3), "tp"), ((1, -2, 3), "fp"), ((1, 2, -1), "fn")]:
        with pytest.raises(ValueError, match=f"spotting_scores: {name} must be >= 0, got -"):
            me.spotting_scores(*counts)
    with pytest.raises(TypeError, match="spotting_scores: fp must be an integer, got float 1.5"):
        me.spotting_scores(1, 1.5, 0)


# ----------------------------------------------------------------------------------------------------------
# The command: bad files and arguments give one line and exit status 2


def evaluate_error(capsys, argv):
    assert me_main(["evaluate", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m facekernels me evaluate: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("content,message", [
    (b"video,onset,offset\nv1,1e30,1e31\n", r"p.csv:2: onset must be a frame index in [-2**50, 2**50], got '1e30'"),
    (b"video,onset,offset\nv1,1,100000000000000000000000000000\n", "p.csv:2: offset must be a frame index in"),
    (b"video,onset,offset\nv1,1,inf\n", "p.csv:2: offset must be an integer frame index, got 'inf'"),
    (b"video,onset,offset\nv1,1,nan\n", "p.csv:2: offset must be an integer frame index, got 'nan'"),
    (b"video,onset,offset\nv1,1,5\n\nv1,1,5,extra,more\n",
     "p.csv:4: 5 fields, more than the 3 columns of the header (video, onset, offset)"),
    (b"video,onset,offset\nv1,1,5\nv\xff1,1,5\n", "p.csv:3: not UTF-8 text (byte 0xff); save the file as UTF-8"),
    (b"\xff\xfev\x00i\x00d\x00", "p.csv:1: not UTF-8 text (byte 0xff)"),  # UTF-16
    (b"video,onset,offset\nv1,1,5\xe2\x82", "p.csv:2: not UTF-8 text (a truncated multi-byte sequence"),
    (b"video,onset,offset\nv1,1,5\nv1,1,\"" + b"5" * 200_000 + b"\"\n", "p.csv:3: field larger than field limit"),
    (b"video,onset,offset\n\n\nv1,7,5\n", "p.csv:4: offset 5 < onset 7"),  # blank lines counted
])
def test_evaluate_command_reports_bad_files_with_file_and_line(tmp_path, capsys, content, message):
    gt = write_csv(tmp_path / "gt.csv", [["v1", 10, 20]], ["video", "onset", "offset"])
    (tmp_path / "p.csv").write_bytes(content)
    assert message in evaluate_error(capsys, ["--pred", str(tmp_path / "p.csv"), "--gt", gt])


def test_evaluate_command_reads_files_with_a_byte_order_mark(tmp_path, capsys):
    header = ["video", "onset", "offset", "emotion"]
    gt = write_csv(tmp_path / "gt.csv", [["v1", 10, 20, "a"], ["v2", 30, 40, "b"]], header)
    pred = write_csv(tmp_path / "pred.csv", [["v2", 31, 40, "b"], ["v1", 0, 3, "a"]], header)
    assert me_main(["evaluate", "--pred", pred, "--gt", gt, "--json", "-"]) == 0
    plain = json.loads(capsys.readouterr().out)
    for path in (gt, pred):
        with open(path, "rb") as handle:
            data = handle.read()
        with open(path + ".bom", "wb") as handle:
            handle.write(b"\xef\xbb\xbf" + data)
    assert me_main(["evaluate", "--pred", pred + ".bom", "--gt", gt + ".bom", "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out) == plain and plain["classes"] == ["a", "b"]


@pytest.mark.parametrize("classes,message", [
    (["--classes", "a,b,a"], "--classes names 'a' more than once, got 'a,b,a'"),
    (["--classes", "a", "--classes", "b"], "--classes given 2 times ('a' 'b'); give the classes once"),
    (["--classes", " , "], "--classes names no class, got ' , '"),
])
def test_evaluate_command_refuses_bad_classes(tmp_path, capsys, classes, message):
    gt = write_csv(tmp_path / "gt.csv", [["v1", 10, 20, "a"]], ["video", "onset", "offset", "emotion"])
    assert message in evaluate_error(capsys, ["--pred", gt, "--gt", gt, *classes])
    assert me_main(["evaluate", "--pred", gt, "--gt", gt, "--classes", "a, b", "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["classes"] == ["a", "b"]


def test_evaluate_command_bad_file_through_python_dash_m(tmp_path):
    """The entry point itself: exit status 2 and one line on stderr, no traceback."""
    gt = write_csv(tmp_path / "gt.csv", [["v1", 10, 20]], ["video", "onset", "offset"])
    (tmp_path / "p.csv").write_bytes(b"video,onset,offset\nv1,1e30,1e30\n")
    result = subprocess.run([sys.executable, "-m", "facekernels", "me", "evaluate", "--pred",
                             str(tmp_path / "p.csv"), "--gt", gt], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "p.csv:2: onset must be a frame index" in result.stderr


# ----------------------------------------------------------------------------------------------------------
# Subjects, strict columns and the STRS reference code's matching rule


def strs_reference(pred_rows, gt_rows, iou_threshold=0.5):
    """The STRS reference code's evaluation, restated from its description with plain loops over dict rows
    (subject, video, onset, offset, emotion): subjects are those of the predictions, videos those of the
    ground truth of each subject; every (prediction, ground truth) pair with frame-set IoU >= the
    threshold is a spotting TP, a prediction in no pair an FP, a ground truth in none an FN. Recognition
    runs one-vs-rest over the TP pairs for each label of either file: precision P and recall R are the
    means over the labels, F1 = 2PR / (P + R), UF1 = the mean per-label F1, and the printed "UAR" is the
    mean precision. STRS = spotting F1 x recognition F1."""
    labels = sorted({r["emotion"] for r in pred_rows} | {r["emotion"] for r in gt_rows})
    pairs, fp, fn = [], 0, 0
    for subject in dict.fromkeys(r["subject"] for r in pred_rows):
        videos = dict.fromkeys(r["video"] for r in gt_rows if r["subject"] == subject)
        for video in videos:
            preds = [r for r in pred_rows if (r["subject"], r["video"]) == (subject, video)]
            truths = [r for r in gt_rows if (r["subject"], r["video"]) == (subject, video)]
            hit = set()
            for p in preds:
                matched = False
                for index, g in enumerate(truths):
                    a = set(range(p["onset"], p["offset"] + 1))
                    b = set(range(g["onset"], g["offset"] + 1))
                    if len(a & b) / len(a | b) >= iou_threshold:
                        pairs.append((g["emotion"], p["emotion"]))
                        hit.add(index)
                        matched = True
                fp += not matched
            fn += len(truths) - len(hit)
    tp = len(pairs)
    precision = tp / (tp + fp) if tp + fp else 0
    recall = tp / (tp + fn) if tp + fn else 0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0
    ps, rs, fs = [], [], []
    for label in labels:
        t = sum(g == label and q == label for g, q in pairs)
        f_p = sum(q == label and g != label for g, q in pairs)
        f_n = sum(g == label and q != label for g, q in pairs)
        ps.append(t / (t + f_p) if t + f_p else 0)
        rs.append(t / (t + f_n) if t + f_n else 0)
        fs.append(2 * ps[-1] * rs[-1] / (ps[-1] + rs[-1]) if ps[-1] + rs[-1] else 0)
    mp, mr = sum(ps) / len(ps), sum(rs) / len(rs)
    rec_f1 = 2 * mp * mr / (mp + mr)
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1,
            "recognition_f1": rec_f1, "uf1": sum(fs) / len(fs), "printed_uar": mp, "strs": f1 * rec_f1}


STRS_HEADER = ["subject", "video", "onset", "offset", "emotion"]


def test_subject_column_keeps_equally_named_videos_apart(tmp_path, capsys):
    """Two subjects with a video "EP01": keyed by (subject, video) their intervals are scored apart; the
    prediction for subject 1 must not be credited to subject 2's ground truth."""
    gt = write_csv(tmp_path / "gt.csv", [[1, "EP01", 10, 30, "a"], [2, "EP01", 100, 130, "b"]], STRS_HEADER)
    pred = write_csv(tmp_path / "pred.csv", [[1, "EP01", 100, 130, "b"], [2, "EP01", 10, 30, "a"]], STRS_HEADER)
    assert me_main(["evaluate", "--pred", pred, "--gt", gt, "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)["overall"]
    assert (report["videos"], report["tp"], report["fp"], report["fn"]) == (2, 0, 2, 2)
    # Predictions without a subject column are looked up by video name: ambiguous here, so refused.
    plain = write_csv(tmp_path / "plain.csv", [["EP01", 10, 30, "a"]], ["video", "onset", "offset", "emotion"])
    err = evaluate_error(capsys, ["--pred", plain, "--gt", gt])
    assert "video 'EP01' has ground truth in several subjects ['1', '2']; add a subject column" in err
    # ... and accepted where the name is unique.
    unique = write_csv(tmp_path / "gt2.csv", [[1, "EP01", 10, 30, "a"], [2, "EP02", 100, 130, "b"]], STRS_HEADER)
    assert me_main(["evaluate", "--pred", plain, "--gt", unique, "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["overall"]["tp"] == 1
    unknown = write_csv(tmp_path / "p3.csv", [[3, "EP01", 10, 30, "a"]], STRS_HEADER)
    assert "video 'EP01' of subject '3' has no ground-truth rows" in evaluate_error(
        capsys, ["--pred", unknown, "--gt", gt])


@pytest.mark.parametrize("header,message", [
    (["subjet", "video", "onset", "offset"], "unknown column(s) 'subjet' (header: subjet, video, onset, offset); "
     "the columns are video, onset, offset (required) and apex, emotion, dataset, subject (optional)"),
    (["video", "onset", "offset", "video"], "column(s) video given more than once"),
    (["subject", "onset", "offset"], "missing column(s) video"),
])
def test_evaluate_refuses_unknown_repeated_and_missing_columns(tmp_path, capsys, header, message):
    gt = write_csv(tmp_path / "gt.csv", [["v1", 10, 20]], ["video", "onset", "offset"])
    bad = write_csv(tmp_path / "p.csv", [["1", "v1", 10, 20][:len(header)]], header)
    assert message in evaluate_error(capsys, ["--pred", bad, "--gt", gt])
    assert message.replace("p.csv", "gt.csv") in evaluate_error(capsys, ["--pred", gt, "--gt", bad])


def test_evaluate_refuses_an_empty_subject(tmp_path, capsys):
    gt = write_csv(tmp_path / "gt.csv", [["", "v1", 10, 20, "a"]], STRS_HEADER)
    assert "gt.csv:2: empty subject" in evaluate_error(capsys, ["--pred", gt, "--gt", gt])


def test_matching_rules_differ_where_intervals_overlap_several(tmp_path, capsys):
    """One prediction covering two ground truths: MEGC credits it once (one TP, one FN); the STRS rule
    credits both pairs (two TPs) and recognition sees both label pairs."""
    gt = write_csv(tmp_path / "gt.csv", [[1, "v", 10, 20, "a"], [1, "v", 12, 22, "b"]], STRS_HEADER)
    pred = write_csv(tmp_path / "pred.csv", [[1, "v", 11, 21, "a"], [1, "v", 50, 60, "a"]], STRS_HEADER)
    runs = {}
    for rule in ("megc", "strs"):
        assert me_main(["evaluate", "--pred", pred, "--gt", gt, "--matching", rule, "--json", "-"]) == 0
        runs[rule] = json.loads(capsys.readouterr().out)
    megc, strs_run = runs["megc"]["overall"], runs["strs"]["overall"]
    assert (megc["tp"], megc["fp"], megc["fn"]) == (1, 1, 1)
    assert (strs_run["tp"], strs_run["fp"], strs_run["fn"]) == (2, 1, 0)
    assert runs["strs"]["matching"] == "strs" and runs["megc"]["matching"] == "megc"
    assert me.spotting_counts([(11, 21), (50, 60)], [(10, 20), (12, 22)], 0.5, matching="strs") == (2, 1, 0)
    assert me.spotting_counts([(11, 21), (50, 60)], [(10, 20), (12, 22)], 0.5) == (1, 1, 1)
    with pytest.raises(ValueError, match=r"spotting_counts: matching must be one of \('megc', 'strs'\), got 'x'"):
        me.spotting_counts([(1, 2)], [(1, 2)], 0.5, matching="x")
    assert me.spotting_metrics({"v": [(11, 21)]}, {"v": [(10, 20), (12, 22)]}, matching="strs").tp == 2


def test_strs_rule_against_the_reference_rules_on_random_files(tmp_path, capsys):
    """Several intervals per video, equally named videos across subjects, labels only one file uses."""
    rng = np.random.default_rng(7)
    emotions = ["negative", "positive", "surprise", "others"]
    gt_rows, pred_rows = [], []
    for subject in range(1, 6):
        for video in range(4):
            name = f"EP{video:02d}"
            for _ in range(int(rng.integers(1, 4))):
                onset = int(rng.integers(0, 120))
                gt_rows.append(dict(subject=str(subject), video=name, onset=onset,
                                    offset=onset + int(rng.integers(5, 60)), emotion=str(rng.choice(emotions[:3]))))
                if rng.random() < 0.7:  # a prediction near it, often overlapping its neighbours too
                    shift = int(rng.integers(-8, 9))
                    pred_rows.append(dict(gt_rows[-1], onset=onset + shift, offset=gt_rows[-1]["offset"] + shift,
                                          emotion=str(rng.choice(emotions))))
            for _ in range(int(rng.integers(0, 3))):
                onset = int(rng.integers(0, 200))
                pred_rows.append(dict(subject=str(subject), video=name, onset=onset,
                                      offset=onset + int(rng.integers(5, 60)), emotion=str(rng.choice(emotions))))
    as_rows = [[r[c] for c in STRS_HEADER] for r in pred_rows]
    pred = write_csv(tmp_path / "pred.csv", as_rows, STRS_HEADER)
    gt = write_csv(tmp_path / "gt.csv", [[r[c] for c in STRS_HEADER] for r in gt_rows], STRS_HEADER)
    expected = strs_reference(pred_rows, gt_rows, 0.3)
    assert me_main(["evaluate", "--pred", pred, "--gt", gt, "--iou", "0.3", "--matching", "strs", "--json", "-"]) == 0
    got = json.loads(capsys.readouterr().out)["overall"]
    assert min(expected["tp"], expected["fp"], expected["fn"]) > 0
    for key in ("tp", "fp", "fn", "precision", "recall", "f1", "recognition_f1", "uf1", "strs"):
        assert got[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-12), key
    assert me_main(["evaluate", "--pred", pred, "--gt", gt, "--iou", "0.3", "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["overall"]["tp"] < got["tp"]  # the data tell the rules apart


# The STRS reference repository's example files (data/gt.csv, data/pred.csv) carry no licence, so they are
# not in this repository. Point FACEKERNELS_STRS_EXAMPLE at a folder holding them to run this check.
# Measured on them (docs/me.md): TP 159, FP 85, FN 85, spotting P = R = F1 = 159/244, recognition F1
# 0.5927, UF1 0.5766, STRS 0.3862 (its printed "UAR", the mean precision, 0.5983; ours differs: docs/me.md).
def test_official_strs_example_files(capsys):
    import os
    folder = os.environ.get("FACEKERNELS_STRS_EXAMPLE")
    if not folder:
        pytest.skip("FACEKERNELS_STRS_EXAMPLE is not set (the STRS reference's example files are not shipped)")
    paths = {name: os.path.join(folder, f"{name}.csv") for name in ("gt", "pred")}

    def rows(path):
        with open(path, newline="") as f:
            return [dict(r, onset=int(r["onset"]), offset=int(r["offset"])) for r in csv.DictReader(f)]

    expected = strs_reference(rows(paths["pred"]), rows(paths["gt"]))
    assert me_main(["evaluate", "--pred", paths["pred"], "--gt", paths["gt"], "--matching", "strs", "--json", "-"]) == 0
    got = json.loads(capsys.readouterr().out)["overall"]
    assert (got["tp"], got["fp"], got["fn"]) == (expected["tp"], expected["fp"], expected["fn"]) == (159, 85, 85)
    for key in ("precision", "recall", "f1", "recognition_f1", "uf1", "strs"):
        assert got[key] == pytest.approx(expected[key], rel=1e-12), key
    assert round(got["strs"], 4) == 0.3862 and round(got["recognition_f1"], 4) == 0.5927
