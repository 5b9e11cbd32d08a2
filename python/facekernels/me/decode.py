"""From per-frame scores to onset-offset-apex intervals: BoostingVRME's video-level decoder, vectorised over a
whole dataset with results identical to the published per-video loops (see docs/me.md)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import check_int, check_real, check_real_dtype, to_numpy

Interval = tuple[int, int, int]
"""(onset, offset, apex), frame indices, offset inclusive."""

_T1_DIVISOR = 1.5  # strategy 1: t1 = mean(s) / 1.5
_REACH = 5  # strategy 1: the extension scans reach 5 * k_p frames from the peak
_SUPPRESS_IOU = 0.2  # strategy 1: suppression's hull-IoU limit
_GATHER_ELEMENTS = 1 << 20  # rows x width of one apex-search block
# Tracks shorter than 2*k_p are decoded on 2*k_p smoothed samples (numpy's "same" convolution), about 60
# bytes of working memory each: at most this many samples beyond the tracks' own, in all (about 1 GB).
_MAX_SHORT_PADDING = 1 << 24


def stitch_windows(window_scores: Any, k: int) -> np.ndarray:
    """Assemble a video's frame scores from its overlapping window predictions.

    The video was cut into W windows of k frames at stride k/2 (window i covers frames [i k/2, i k/2 + k)).
    Window 0 writes all its k frames; every later window i writes only its second half:

        out[0 : k]                       = window_scores[0]
        out[(i+1) k/2 : (i+2) k/2]       = window_scores[i, k/2 :]        for i = 1 .. W-1

    Args:
        window_scores: array-like [W, k] (W >= 1) of real numbers, e.g. the model's per-window scores or
            per-window class indices; a torch tensor is detached and read on the CPU.
        k: the window length, an even integer >= 2 (the stride k/2 must be a whole number of frames).

    Returns:
        float64 array [(W + 1) k/2]. float64 as in the published pipeline, whose buffer is ``np.zeros``;
        cast it back (``.astype(int)``) for class indices.

    Raises:
        TypeError: k not an integer; window_scores not real numbers.
        ValueError: k < 2 or odd; window_scores not 2-D, with no windows, or with rows of length != k.

    Unlike the published training loop, which restarts the "write all k frames" rule at the first window of
    every *loader batch* (so a video whose first window is not first in its batch keeps zeros in frames
    [0, k/2)), window 0 here is always the video's first window, as the method describes.
    """
    func = "stitch_windows"
    k = check_int(k, func, "k", minimum=2)
    if k % 2:
        raise ValueError(f"{func}: k must be even (windows overlap by k/2 frames), got {k}")
    windows = to_numpy(window_scores, func, "window_scores")
    check_real_dtype(windows, func, "window_scores")
    if windows.ndim != 2:
        raise ValueError(f"{func}: window_scores must be 2-D [windows, k], got shape {tuple(windows.shape)}")
    if windows.shape[0] < 1:
        raise ValueError(
            f"{func}: window_scores must hold at least one window, got shape {tuple(windows.shape)}"
        )
    if windows.shape[1] != k:
        raise ValueError(f"{func}: window_scores must have k = {k} columns, got shape {tuple(windows.shape)}")
    half = k // 2
    out = np.empty((windows.shape[0] + 1) * half, dtype=np.float64)
    out[:k] = windows[0]
    out[k:] = windows[1:, half:].reshape(-1)
    return out


def spot_intervals(
    scores: Any,
    k_p: int,
    p: float = 0.55,
    strategy: int = 1,
    *,
    lengths: Any = None,
) -> list[Interval] | list[list[Interval]]:
    """Decode onset-offset-apex intervals from per-frame scores, exactly as BoostingVRME does.

    For one track s[0 .. L-1] (integers are frame indices):

    1. sm = numpy.convolve(s, ones(2 k_p) / (2 k_p), mode="same"); n = len(sm) = max(L, 2 k_p).
    2. thr = mean(sm) + p (max(sm) - mean(sm)); peaks = scipy.signal.find_peaks(sm, height=thr,
       distance=k_p): the midpoints ((left + right) // 2) of the maximal runs of equal samples that are
       strictly higher than the samples just before and just after them (runs touching either end are not
       peaks), with sm >= thr; then, from the highest peak down, every other peak closer than k_p frames
       to a kept one is dropped. Ties in height: the later peak comes first (the order of a stable argsort,
       which SciPy uses in effect whenever NumPy's argsort is stable; see docs/me.md).
    3. strategy 0: each peak gives (peak - k_p, peak + k_p, peak); these may lie outside [0, n).
    4. strategy 1, on the raw scores s: l0 = max(0, peak - k_p), r0 = min(n - 1, peak + k_p),
       t1 = mean(s) / 1.5, t2 = mean(s) (mean in s's own dtype, as NumPy takes it).
       start = (first i in l0+1 .. peak-1 with s[i] > s[i-1] and s[i] > t1) - 1, else l0;
       end = (first i from r0-1 down to peak+1 with s[i] > s[i+1] and s[i] > t1) + 1, else r0;
       for i from start-1 down to max(0, peak - 5 k_p): if i > 0 and s[i] < t2 and s[i-1] < t2,
       start = i + 1 and stop; for j from end+1 up to min(n-1, peak + 5 k_p): if j < n-1 and s[j] < t2 and
       s[j+1] < t2, end = j - 1 and stop; apex = start + argmax(s[start .. end]) (the first maximum).
    5. strategy 1 then sorts the intervals by onset (stably, so equal onsets keep peak order) and keeps one
       only if, against every interval already kept, hull IoU < 0.2 and |apex difference| > k_p, with
       hull IoU = max(0, min(offsets) - max(onsets)) / (max(offsets) - min(onsets)) (0 if that is 0).

    Tracks shorter than 2 k_p: numpy's "same" mode returns max(L, 2 k_p) samples, so sm, n and the peaks
    live on 2 k_p samples centred on the box, not on the track. Strategy 0 returns those indices as they
    are. Strategy 1 reads s[i] for i up to n - 1 >= L there; where the published code would read past the
    end of s (an IndexError there) or take the argmax of an empty slice, this raises ValueError; where it
    does not, the result is the published one (slices truncated at L as NumPy truncates them). A k_p so
    large that the short tracks' 2 k_p grids would add more than 2**24 samples in all raises ValueError
    before anything is allocated (k_p = 10**9 would need about 15 GB).

    Args:
        scores: one track (1-D array-like of real numbers, torch tensors included); or a batch: a list or
            tuple of 1-D tracks of any lengths, or a 2-D padded array [videos, frames] together with
            ``lengths``. An empty list or tuple is an empty batch.
        k_p: integer >= 1, half the expected expression length in frames.
        p: real, the threshold's position between mean(sm) and max(sm).
        strategy: 0 (fixed +-k_p intervals) or 1 (scans on the raw scores, then suppression).
        lengths: only with a 2-D padded batch: integers [videos], 1 <= lengths[v] <= frames; frames at and
            after lengths[v] are padding and are never read (they may hold anything, NaN included).

    Returns:
        For one track, a list of (onset, offset, apex) tuples of Python ints: in peak order for strategy 0,
        in onset order for strategy 1. For a batch, one such list per video.

    Raises:
        TypeError: k_p or strategy not an integer, p not a real number, scores or lengths of a non-numeric
            dtype.
        ValueError: k_p < 1; strategy not 0 or 1; p not finite; a track with no frames; NaN or infinite
            scores; a 2-D array without lengths, or an array of another rank where a track is expected;
            lengths of the wrong shape or out of range; strategy 1 reading past the end of a track shorter
            than 2 k_p, or tracks shorter than 2 k_p adding more than 2**24 samples (see above).
    """
    func = "spot_intervals"
    k_p = check_int(k_p, func, "k_p", minimum=1)
    p = check_real(p, func, "p")
    strategy = check_int(strategy, func, "strategy")
    if strategy not in (0, 1):
        raise ValueError(f"{func}: strategy must be 0 or 1, got {strategy}")
    tracks, single = _as_tracks(scores, lengths, func)
    decoded = _decode(tracks, k_p, p, strategy, single, func)
    return decoded[0] if single else decoded


def _as_tracks(scores: Any, lengths: Any, func: str) -> tuple[list[np.ndarray], bool]:
    """The tracks as contiguous 1-D arrays (their own dtypes), and whether one track was given."""
    if lengths is not None:
        batch = to_numpy(scores, func, "scores")
        if batch.ndim != 2:
            raise ValueError(
                f"{func}: with lengths, scores must be a 2-D padded batch [videos, frames], "
                f"got shape {tuple(batch.shape)}"
            )
        check_real_dtype(batch, func, "scores")
        sizes = to_numpy(lengths, func, "lengths")
        if sizes.dtype.kind not in "iu":
            raise TypeError(f"{func}: lengths must hold integers, got dtype {sizes.dtype}")
        if sizes.shape != (batch.shape[0],):
            raise ValueError(
                f"{func}: lengths must have shape ({batch.shape[0]},), one per row of scores "
                f"{tuple(batch.shape)}, got shape {tuple(sizes.shape)}"
            )
        bad = np.flatnonzero((sizes < 1) | (sizes > batch.shape[1]))
        if bad.size:
            v = int(bad[0])
            raise ValueError(
                f"{func}: lengths[{v}] must lie in [1, {batch.shape[1]}] (the padded width), "
                f"got {int(sizes[v])}"
            )
        return [np.ascontiguousarray(batch[v, : int(size)]) for v, size in enumerate(sizes)], False

    if isinstance(scores, (list, tuple)):
        if len(scores) == 0:
            return [], False
        if np.ndim(scores[0]) > 0:
            tracks = []
            for v, item in enumerate(scores):
                track = to_numpy(item, func, f"scores[{v}]")
                if track.ndim != 1:
                    raise ValueError(
                        f"{func}: scores[{v}] must be a 1-D track, got shape {tuple(track.shape)}"
                    )
                check_real_dtype(track, func, f"scores[{v}]")
                tracks.append(np.ascontiguousarray(track))
            return tracks, False

    track = to_numpy(scores, func, "scores")
    if track.ndim == 2:
        raise ValueError(
            f"{func}: scores must be a 1-D track [frames], got a 2-D array of shape {tuple(track.shape)}; "
            "pass a list of 1-D tracks, or the padded batch together with lengths="
        )
    if track.ndim != 1:
        raise ValueError(f"{func}: scores must be a 1-D track [frames], got shape {tuple(track.shape)}")
    check_real_dtype(track, func, "scores")
    return [np.ascontiguousarray(track)], True


def _decode(
    tracks: list[np.ndarray], k_p: int, p: float, strategy: int, single: bool, func: str
) -> list[list[Interval]]:
    n_videos = len(tracks)
    if n_videos == 0:
        return []

    def name(v: int) -> str:
        return "scores" if single else f"video {v}"

    length = np.fromiter((t.shape[0] for t in tracks), dtype=np.int64, count=n_videos)
    if (length == 0).any():
        raise ValueError(f"{func}: {name(int(np.argmax(length == 0)))} has no frames")
    box = 2 * k_p
    _check_short_tracks(length, box, name, func)
    n = np.maximum(length, box)  # numpy's "same" mode returns max(M, N) samples
    start_of = np.zeros(n_videos, dtype=np.int64)
    np.cumsum(n[:-1], out=start_of[1:])
    total = int(n.sum())
    short = length < n

    # Raw scores, flat, on the smoothed tracks' offsets (a short track is followed by unread zeros).
    if not short.any():
        raw = np.concatenate(tracks, dtype=np.float64, casting="unsafe")
    else:
        raw = np.zeros(total)
        for v, track in enumerate(tracks):
            raw[start_of[v] : start_of[v] + length[v]] = track
    finite = np.isfinite(raw)
    if not finite.all():
        i = int(np.argmax(~finite))
        v = int(np.searchsorted(start_of, i, side="right") - 1)
        raise ValueError(f"{func}: {name(v)} has a non-finite score {raw[i]} at frame {i - start_of[v]}")

    # Smoothing and the peak threshold, per video through numpy itself: a cumulative-sum box filter rounds
    # differently, and a rounding difference moves plateaus and ties (docs/me.md).
    kernel = np.ones(box) / box
    smooth = np.empty(total)
    threshold = np.empty(n_videos)
    t1 = np.empty(n_videos)
    t2 = np.empty(n_videos)
    native_means = {}
    for v, track in enumerate(tracks):
        sm = np.convolve(track, kernel, mode="same")
        smooth[start_of[v] : start_of[v] + n[v]] = sm
        mean = sm.mean()
        threshold[v] = mean + p * (sm.max() - mean)
        if strategy == 1:
            raw_mean = track.mean()  # in the track's dtype, as the published code takes it
            t2[v] = raw_mean
            t1[v] = raw_mean / _T1_DIVISOR
            if short[v]:
                native_means[v] = raw_mean

    peak, peak_video = _find_peaks(smooth, start_of, n, threshold, k_p)
    local = peak - start_of[peak_video]

    if strategy == 0:
        onset, offset, apex = local - k_p, local + k_p, local
        order = np.arange(peak.size)
    else:
        onset, offset, apex = _strategy1(raw, start_of, n, t1, t2, peak, peak_video, k_p)
        for i in np.flatnonzero(short[peak_video]):
            v = int(peak_video[i])
            onset[i], offset[i], apex[i] = _strategy1_short(
                tracks[v], int(n[v]), int(local[i]), k_p, native_means[v], name(v), func
            )
        order = _suppress(peak_video, onset, offset, apex, k_p)

    video = peak_video[order]
    rows = list(zip(onset[order].tolist(), offset[order].tolist(), apex[order].tolist(), strict=True))
    bounds = np.searchsorted(video, np.arange(n_videos + 1)).tolist()
    return [rows[bounds[v] : bounds[v + 1]] for v in range(n_videos)]


def _check_short_tracks(length: np.ndarray, box: int, name: Any, func: str) -> None:
    """Refuse, before allocating anything, a k_p whose smoothing grid for the tracks shorter than 2*k_p
    would add more than _MAX_SHORT_PADDING samples (k_p = 10**9 asked for about 15 GB; 10**18 cannot be
    allocated at all). Python integers: 2*k_p may exceed int64."""
    padding = 0
    first = None
    for v, size in enumerate(length.tolist()):
        if size < box:
            padding += box - size
            first = v if first is None else first
    if padding > _MAX_SHORT_PADDING:
        raise ValueError(
            f"{func}: {name(first)} has {int(length[first])} frames, fewer than 2*k_p = {box}, so numpy's "
            f"'same' convolution would smooth it on {box} samples; the tracks shorter than 2*k_p would need "
            f"{padding} samples more than they hold, beyond this decoder's limit of 2**24 = "
            f"{_MAX_SHORT_PADDING} (strategy 1 fails on such a track anyway whenever it has a peak); use a "
            "smaller k_p (half the expected expression length in frames) or longer tracks"
        )


def _find_peaks(
    smooth: np.ndarray, start_of: np.ndarray, n: np.ndarray, threshold: np.ndarray, distance: int
) -> tuple[np.ndarray, np.ndarray]:
    """scipy.signal.find_peaks(sm, height=thr, distance=distance) over all videos at once.

    `smooth` holds the videos' tracks back to back (video v at start_of[v], n[v] samples). Returns the flat
    positions of the kept peaks, ascending, and their videos.
    """
    total = smooth.size
    first = np.zeros(total, dtype=bool)
    first[start_of] = True
    last = np.zeros(total, dtype=bool)
    last[start_of + n - 1] = True
    before, here = smooth[:-1], smooth[1:]

    # Left edges of candidate runs: a strict rise into a sample at or above its video's threshold (a run of
    # equal samples is wholly above or below it, so the height filter can come first).
    left = np.zeros(total, dtype=bool)
    np.less(before, here, out=left[1:])
    left &= ~first
    left &= smooth >= np.repeat(threshold, n)
    left = np.flatnonzero(left)
    # Right edges: the run goes on while the next sample is equal and in the same video.
    continues = np.zeros(total, dtype=bool)
    np.equal(here, before, out=continues[:-1])
    continues &= ~last
    right = left.copy()
    plateau = continues[left]
    if plateau.any():
        ends = np.flatnonzero(~continues)
        right[plateau] = ends[np.searchsorted(ends, left[plateau])]
    # A peak when the run stops before its video ends and the next sample is strictly lower.
    peak_run = ~last[right] & (smooth[np.minimum(right + 1, total - 1)] < smooth[right])
    peak = (left[peak_run] + right[peak_run]) // 2

    video = np.searchsorted(start_of, peak, side="right") - 1
    keep = _thin_by_distance(peak, video, smooth[peak], distance)
    return peak[keep], video[keep]


def _thin_by_distance(peak: np.ndarray, video: np.ndarray, height: np.ndarray, distance: int) -> np.ndarray:
    """SciPy's greedy distance selection, for all videos at once; returns the keep mask.

    SciPy visits the peaks from the highest priority down and drops every peak within `distance` - 1
    samples of a kept one. A peak is therefore kept exactly when no higher-priority peak within reach is
    kept, so the same set is reached by rounds that settle every peak whose higher-priority neighbours are
    all settled (kept if none of them is kept). Priority: height, then position (a stable argsort).
    """
    count = peak.size
    keep = np.ones(count, dtype=bool)
    if count < 2 or distance < 2:
        return keep
    close = (video[1:] == video[:-1]) & (peak[1:] - peak[:-1] < distance)
    if not close.any():
        return keep
    involved = np.zeros(count, dtype=bool)
    involved[:-1] |= close
    involved[1:] |= close
    who = np.flatnonzero(involved)
    # Neighbours are at most distance - 1 peaks away on each side (peaks sit on distinct samples).
    reach = min(distance - 1, count - 1)
    steps = np.concatenate([np.arange(-reach, 0), np.arange(1, reach + 1)])
    other = who[:, None] + steps[None, :]
    valid = (other >= 0) & (other < count)
    other = np.clip(other, 0, count - 1)
    valid &= (video[other] == video[who][:, None]) & (np.abs(peak[other] - peak[who][:, None]) < distance)
    h_self = height[who][:, None]
    higher = valid & ((height[other] > h_self) | ((height[other] == h_self) & (other > who[:, None])))

    undecided, kept, dropped = 0, 1, 2
    state = np.full(count, kept, dtype=np.int8)
    state[who] = undecided
    while True:
        open_ = state[who] == undecided
        if not open_.any():
            break
        neighbour_state = state[other]
        loses = open_ & (higher & (neighbour_state == kept)).any(axis=1)
        wins = open_ & ~loses & (~higher | (neighbour_state == dropped)).all(axis=1)
        state[who[loses]] = dropped
        state[who[wins]] = kept
    return state == kept


def _next_true(mask: np.ndarray, at: np.ndarray) -> np.ndarray:
    """For each query i in `at`: the smallest j >= i with mask[j], else len(mask)."""
    where = np.flatnonzero(mask)
    if where.size == 0:
        return np.full(at.shape, mask.size, dtype=np.int64)
    slot = np.searchsorted(where, at, side="left")
    return np.where(slot < where.size, where[np.minimum(slot, where.size - 1)], mask.size)


def _previous_true(mask: np.ndarray, at: np.ndarray) -> np.ndarray:
    """For each query i in `at`: the largest j <= i with mask[j], else -1."""
    where = np.flatnonzero(mask)
    if where.size == 0:
        return np.full(at.shape, -1, dtype=np.int64)
    slot = np.searchsorted(where, at, side="right") - 1
    return np.where(slot >= 0, where[np.maximum(slot, 0)], -1)


def _strategy1(
    raw: np.ndarray,
    start_of: np.ndarray,
    n: np.ndarray,
    t1: np.ndarray,
    t2: np.ndarray,
    peak: np.ndarray,
    video: np.ndarray,
    k_p: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Strategy 1's scans for every peak at once, in flat coordinates; returns local (onset, offset, apex).

    Every "first i in a range with a condition" becomes a binary search among the frames where that
    condition holds; the conditions never look across a video boundary because the ranges stay
    inside [0, n). Results for peaks of tracks shorter than 2 k_p are placeholders (see _strategy1_short).
    """
    total = raw.size
    first = np.zeros(total, dtype=bool)
    first[start_of] = True
    last = np.zeros(total, dtype=bool)
    last[start_of + n - 1] = True
    t1_frame = np.repeat(t1, n)
    t2_frame = np.repeat(t2, n)
    here, before = raw[1:], raw[:-1]

    # s[i] > s[i-1] and s[i] > t1 (i >= 1 within the video)
    rise = np.zeros(total, dtype=bool)
    rise[1:] = (here > before) & (here > t1_frame[1:])
    rise &= ~first
    # s[i] > s[i+1] and s[i] > t1 (i <= n - 2)
    fall = np.zeros(total, dtype=bool)
    fall[:-1] = (before > here) & (before > t1_frame[:-1])
    fall &= ~last
    # i > 0 and s[i] < t2 and s[i-1] < t2
    low_left = np.zeros(total, dtype=bool)
    low_left[1:] = (here < t2_frame[1:]) & (before < t2_frame[1:])
    low_left &= ~first
    # j < n - 1 and s[j] < t2 and s[j+1] < t2
    low_right = np.zeros(total, dtype=bool)
    low_right[:-1] = (before < t2_frame[:-1]) & (here < t2_frame[:-1])
    low_right &= ~last

    base = start_of[video]
    local = peak - base
    last_frame = base + n[video] - 1
    l0 = base + np.maximum(local - k_p, 0)
    r0 = np.minimum(peak + k_p, last_frame)

    found = _next_true(rise, l0 + 1)
    start = np.where(found <= peak - 1, found - 1, l0)
    found = _previous_true(fall, r0 - 1)
    end = np.where(found >= peak + 1, found + 1, r0)

    reach_left = base + np.maximum(local - _REACH * k_p, 0)
    found = _previous_true(low_left, start - 1)
    start = np.where(found >= reach_left, found + 1, start)
    reach_right = np.minimum(peak + _REACH * k_p, last_frame)
    found = _next_true(low_right, end + 1)
    end = np.where(found <= reach_right, found - 1, end)

    apex = _first_argmax(raw, start, end)
    return start - base, end - base, apex - base


def _first_argmax(values: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """For each row, the first index of the maximum of values[start .. end] (inclusive, end >= start)."""
    out = np.empty(start.size, dtype=np.int64)
    if start.size == 0:
        return out
    width = int((end - start).max()) + 1
    rows = max(1, _GATHER_ELEMENTS // width)
    offsets = np.arange(width)
    for lo in range(0, start.size, rows):
        s, e = start[lo : lo + rows], end[lo : lo + rows]
        index = s[:, None] + offsets[None, :]
        inside = offsets[None, :] <= (e - s)[:, None]
        window = np.where(inside, values[np.minimum(index, values.size - 1)], -np.inf)
        out[lo : lo + rows] = s + np.argmax(window, axis=1)
    return out


def _strategy1_short(
    track: np.ndarray, n: int, peak: int, k_p: int, mean: np.generic, name: str, func: str
) -> tuple[int, int, int]:
    """Strategy 1 for a peak of a track shorter than n = 2 k_p, read for read as the published loops do.

    Every read of s goes through `at`, in the published order (Python's `and` short-circuits), so this
    raises exactly where the published code raises IndexError; comparisons stay in the track's dtype.
    """
    size = track.shape[0]

    def at(i: int) -> np.generic:
        if i >= size:
            raise ValueError(
                f"{func}: {name} has {size} frames, fewer than 2*k_p = {2 * k_p}, so numpy's 'same' "
                f"convolution gives {n} smoothed samples and strategy 1 reads raw score {i} past the end of "
                "the track (the published decoder fails here too); use strategy 0, a smaller k_p, or pad "
                "the track"
            )
        return track[i]

    t1, t2 = mean / _T1_DIVISOR, mean
    l0, r0 = max(0, peak - k_p), min(n - 1, peak + k_p)
    start = l0
    for i in range(l0 + 1, peak):
        value = at(i)
        if value > at(i - 1) and value > t1:
            start = i - 1
            break
    end = r0
    for i in range(r0 - 1, peak, -1):
        value = at(i)
        if value > at(i + 1) and value > t1:
            end = i + 1
            break
    for i in range(start - 1, max(0, peak - _REACH * k_p) - 1, -1):
        if i > 0 and at(i) < t2 and at(i - 1) < t2:
            start = i + 1
            break
    for j in range(end + 1, min(n - 1, peak + _REACH * k_p) + 1):
        if j < n - 1 and at(j) < t2 and at(j + 1) < t2:
            end = j - 1
            break
    segment = track[start : end + 1]
    if segment.size == 0:
        raise ValueError(
            f"{func}: {name} has {size} frames, fewer than 2*k_p = {2 * k_p}, and strategy 1's interval "
            f"[{start}, {end}] lies past its end (the published decoder fails here too: argmax of an empty "
            "slice); use strategy 0, a smaller k_p, or pad the track"
        )
    return start, end, start + int(np.argmax(segment))


def _suppress(
    video: np.ndarray, onset: np.ndarray, offset: np.ndarray, apex: np.ndarray, k_p: int
) -> np.ndarray:
    """Strategy 1's suppression for all videos at once; returns the kept indices in output order.

    Per video the intervals are sorted by onset (stable) and visited in that order; one is kept when, for
    every kept earlier one, hull IoU < 0.2 and |apex difference| > k_p. Two intervals whose onsets differ
    by more than (longest interval) + k_p can never conflict, so each interval is compared only with the
    earlier ones within that onset reach: a band of columns, not the whole prefix.
    """
    count = onset.size
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((np.arange(count), onset, video))
    video, onset, offset, apex = video[order], onset[order], offset[order], apex[order]
    first = np.searchsorted(video, video, side="left")
    rank = np.arange(count) - first
    span = int((offset - onset).max()) + k_p
    # Earliest possible rival of each interval (same video, onset >= onset - span).
    scale = int(onset.max()) + span + 1
    key = video * scale + onset  # onsets of strategy 1 are >= 0
    lowest = np.searchsorted(key, key - span, side="left")
    band = int((np.arange(count) - lowest).max())
    keep = np.ones(count, dtype=bool)
    if band > 0:
        by_rank = np.argsort(rank, kind="stable")
        bounds = np.searchsorted(rank[by_rank], np.arange(int(rank.max()) + 2))
        steps = np.arange(1, band + 1)
        for r in range(1, int(rank.max()) + 1):
            row = by_rank[bounds[r] : bounds[r + 1]]
            rival = row[:, None] - steps[None, :]
            live = rival >= np.maximum(lowest[row], first[row])[:, None]
            rival = np.maximum(rival, 0)
            live &= keep[rival]
            if not live.any():
                continue
            on_row, off_row = onset[row][:, None], offset[row][:, None]
            on_rival, off_rival = onset[rival], offset[rival]
            inter = np.maximum(0, np.minimum(off_row, off_rival) - np.maximum(on_row, on_rival))
            hull = np.maximum(off_row, off_rival) - np.minimum(on_row, on_rival)
            iou = np.divide(inter, hull, out=np.zeros(hull.shape), where=hull != 0)
            clash = (iou >= _SUPPRESS_IOU) | (np.abs(apex[row][:, None] - apex[rival]) <= k_p)
            keep[row] = ~(live & clash).any(axis=1)
    return order[keep]
