"""BoostingVRME's spotting features: Farneback flows of landmark regions against each window's first frame,
summarised per region with the head motion (the nose-bridge region's flow) subtracted (docs/me.md,
"Region flow features"). Needs OpenCV (the ``[data]`` extra: opencv-contrib-python-headless).

The released extraction (``feature_extraction.py``) summarises each region in a Python loop over its
pixels; here the summaries of every region are computed for all frames of a window at once in NumPy,
with results equal to the released loop's bit for bit (same flows, same sort, the same float32
summation order). ``facekernels.bench.region_flow_peer`` restates the released loop for the tests and
the benchmark (``tools/region_flow_goal.py``).
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

__all__ = ["FARNEBACK_PARAMS", "NUM_FEATURES", "region_flow_features", "window_starts"]

# calcOpticalFlowFarneback(prev, next, None, *these): pyr_scale, levels, winsize, iterations, poly_n,
# poly_sigma, flags
FARNEBACK_PARAMS = (0.5, 3, 15, 5, 7, 1.5, 0)
NUM_REGIONS = 18
NUM_FEATURES = 2 * NUM_REGIONS  # (dx, dy) per region
_MAX_ALIGN_STEPS = 3


def _cv2():
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError("facekernels.me.features needs OpenCV: pip install facekernels[data] "
                          "(opencv-contrib-python-headless)") from e
    return cv2


def window_starts(n_frames: int, k: int) -> np.ndarray:
    """The first frame of every window: ``w * (k // 2)`` for ``w < n_frames // (k // 2) - 1`` (the
    released windowing: windows of ``k`` frames overlapping by half)."""
    half = k // 2
    return np.arange(max(n_frames // half - 1, 0), dtype=np.int64) * half


class _Patch(NamedTuple):
    rows: slice
    cols: slice


class _Summary(NamedTuple):
    patch: str
    rows: slice
    cols: slice
    percent: float  # the share of the largest-magnitude pixels that is averaged


def _bounds(points: np.ndarray, first: int, stop: int, pad: int = 0) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of points[first:stop], widened by pad: x is column 0, y column 1."""
    xs, ys = points[first:stop, 0], points[first:stop, 1]
    return int(xs.min()) - pad, int(ys.min()) - pad, int(xs.max()) + pad, int(ys.max()) + pad


def _centres(points: np.ndarray, indices: tuple[int, ...], top: int, left: int) -> list[tuple[int, int]]:
    """(row, column) of landmarks in a patch whose origin is (top, left) (the released offsets, which
    ignore the clamping of the patch's own first row and column)."""
    return [(int(points[i, 1]) - top, int(points[i, 0]) - left) for i in indices]


def _window(centre: tuple[int, int], up: int, down: int, before: int, after: int) -> tuple[slice, slice]:
    row, col = centre
    return slice(row - up, row + down), slice(col - before, col + after)


def _layout(points: np.ndarray) -> tuple[dict[str, _Patch], list[_Summary]]:
    """The patches of the crop that are flowed and the 18 summaries taken from them, in output order, for
    the window's landmarks in crop coordinates (int64 [68, 2])."""
    patches: dict[str, _Patch] = {}
    summaries: list[_Summary] = []

    def add(name, rows, cols, whole=None, centres=(), windows=None, percent=0.2, whole_percent=0.3):
        patches[name] = _Patch(rows, cols)
        if whole is not None:
            summaries.append(_Summary(name, whole[0], whole[1], whole_percent))
        for i, centre in enumerate(centres):
            spans = windows[i] if isinstance(windows, list) else windows
            summaries.append(_Summary(name, *_window(centre, *spans), percent))

    # eyebrows: the whole brow (a 10-pixel border dropped) and 20 x 20 windows round three brow points
    left, top, right, bottom = _bounds(points, 17, 22)
    first_row = max(0, top - 15)
    bottom_border = 4 if bottom + 5 - first_row - 3 < 10 + max(0, 10 + min(0, top - 15)) else 10
    add("brow_left", slice(first_row, bottom + 5), slice(max(0, left - 5), right),
        whole=(slice(max(0, 10 + min(0, top - 15)), -bottom_border), slice(10, -10)),
        centres=_centres(points, (20, 19, 18), top - 15, left - 5), windows=(10, 10, 10, 10))
    left, top, right, bottom = _bounds(points, 22, 27)
    add("brow_right", slice(max(0, top - 15), bottom + 5), slice(left, right),
        whole=(slice(max(0, 10 + min(0, top - 15)), -10), slice(10, -10)),
        centres=_centres(points, (23, 24, 25), top - 15, left), windows=(10, 10, 10, 10), percent=0.3)
    # mouth (points 48..66): the whole mouth and windows round its corners, lip centres and inner lip
    left, top, right, bottom = _bounds(points, 48, 67)
    add("mouth", slice(top - 15, bottom + 10), slice(max(0, left - 20), right + 20),
        whole=(slice(10, -10), slice(10, -10)),
        centres=_centres(points, (48, 54, 51, 57, 62), top - 15, left - 20),
        windows=[(10, 10, 10, 20), (10, 10, 20, 10), (10, 10, 10, 10), (10, 10, 10, 10), (10, 10, 10, 10)])
    # the nose wings (points 31 and 35), windows reaching up and outwards
    left, top, right, bottom = _bounds(points, 30, 36)
    add("nose", slice(top - 20, bottom + 5), slice(max(0, left - 30), right + 30),
        centres=_centres(points, (31, 35), top - 20, left - 30), windows=[(20, 5, 20, 10), (20, 5, 10, 20)])
    # below each eye: a band half to one and a half eye-heights (half the eye width) under its centre
    for name, first in (("lid_left", 36), ("lid_right", 42)):
        left, top, right, bottom = _bounds(points, first, first + 6)
        half_width = (right - left) / 2
        centre = (bottom + top) / 2
        add(name, slice(int(centre + half_width / 2), int(centre + 3 * half_width / 2)),
            slice(max(0, left), right), whole=(slice(5, -5), slice(5, -5)))
    # the nose bridge (points 29, 30, widened by 13): the head motion subtracted from every summary
    left, top, right, bottom = _bounds(points, 29, 31, pad=13)
    patches["bridge"] = _Patch(slice(top, bottom), slice(left, right))
    return patches, summaries


_BRIDGE_WINDOW = (slice(15, -10), slice(5, -5))
_BRIDGE_PERCENT = 0.7
_EMPTY_WHEN_NO_ROWS = ("lid_left", "lid_right")


@functools.cache
def _magnitude_rule() -> str:
    """How this OpenCV computes cartToPolar's magnitude, so NumPy can give the same float32 values:
    "fma" (sqrt(fma(x, x, y*y)), OpenCV's SIMD path with FMA), "plain" (sqrt(x*x + y*y)), or "opencv"
    (neither: call cartToPolar itself)."""
    cv2 = _cv2()
    rng = np.random.default_rng(0)
    probes = [(rng.standard_normal((2, n)) * 4).astype(np.float32) for n in (1, 7, 33, 1000)]
    for rule in ("fma", "plain"):
        if all(np.array_equal(cv2.cartToPolar(x, y, angleInDegrees=True)[0].ravel(), _magnitude(x, y, rule))
               for x, y in probes):
            return rule
    return "opencv"


def _magnitude(x: np.ndarray, y: np.ndarray, rule: str) -> np.ndarray:
    if rule == "fma":
        # x*x is exact in float64, so this is fma(x, x, round(y*y)) up to a double rounding that needs the
        # float64 sum to land on a float32 midpoint (odds ~1e-9 a pixel)
        x64 = x.astype(np.float64)
        return np.sqrt((x64 * x64 + (y * y).astype(np.float64)).astype(np.float32))
    if rule == "plain":
        return np.sqrt(x * x + y * y)
    cv2 = _cv2()
    return np.stack([cv2.cartToPolar(a, b, angleInDegrees=True)[0].ravel() for a, b in zip(x, y)])


def _summaries(flows: np.ndarray, percent: float) -> np.ndarray:
    """The released region summary for each of F flows ``[F, h, w, 2]``: the mean (dx, dy) over the
    ``n - int(n * (1 - percent))`` pixels of largest magnitude, summed in float32 in ascending-magnitude
    order (numpy.argsort's order, as the released loop); (0, 0) for an empty region. -> float32 [F, 2]."""
    count, n = flows.shape[0], flows.shape[1] * flows.shape[2]
    if n == 0:
        return np.zeros((count, 2), np.float32)
    pixels = flows.reshape(count, n, 2)  # one copy when the region is a strided window of the patch
    first = int(n * (1 - percent))
    top = np.argsort(_magnitude(pixels[..., 0], pixels[..., 1], _magnitude_rule()), axis=1)[:, first:]
    # cumsum is a sequential float32 sum, as the loop's `total += value`, per frame and component
    sums = np.cumsum(np.take_along_axis(pixels, top[..., None], axis=1), axis=1, dtype=np.float32)[:, -1]
    return sums / (n - first)


def _crop_box(points: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the face crop: 9 x 9 half eye-corner distances round the inner eye
    corners' midpoint, 3.5 of them above it (the top and left clamped at 0)."""
    (x39, y39), (x42, y42) = points[39], points[42]
    unit = int((x42 - x39) / 2)
    cx, cy = int((x42 + x39) / 2), int((y42 + y39) / 2)
    top, left = max(cy - int(3.5 * unit), 0), max(cx - int(4.5 * unit), 0)
    return top, cy + int(5.5 * unit), left, cx + int(4.5 * unit)


def _window_features(cv2, frames, points, valid, start, k, size, align) -> np.ndarray:
    out = np.zeros((NUM_FEATURES, k), np.float32)
    offsets = np.flatnonzero(valid[start:start + k])
    if offsets.size == 0:
        return out
    ref = int(offsets[0])
    later = k - 1 - ref  # frames flowed against the reference; columns ref+1 .. k-1
    if later == 0:
        return out
    top, bottom, left, right = _crop_box(points[start + ref])
    crop_points = points[start + ref].copy()
    # the landmarks in the resized crop, truncated to int as the released integer matrix stores them
    crop_points[:, 0] = ((crop_points[:, 0] - left) * (size / (right - left))).astype(np.int64)
    crop_points[:, 1] = ((crop_points[:, 1] - top) * (size / (bottom - top))).astype(np.int64)
    patches, summaries = _layout(crop_points)
    reference = cv2.resize(frames[start + ref][top:bottom, left:right], (size, size))
    previous = {name: reference[p.rows, p.cols] for name, p in patches.items()}

    def flow(name, image, into=None):
        p = patches[name]
        return cv2.calcOpticalFlowFarneback(previous[name], image[p.rows, p.cols], into, *FARNEBACK_PARAMS)

    # The patches' shapes are fixed for the window, so each patch's flows go into one array. A band below
    # an eye with no rows is not flowed (the released check); its summary is 0.
    flows = {name: np.empty((later, *previous[name].shape[:2], 2), np.float32) for name in patches
             if name != "bridge" and not (name in _EMPTY_WHEN_NO_ROWS and previous[name].shape[0] == 0)}
    motion = np.zeros((later, 2), np.float32)
    for j in range(later):
        image_index = start + ref + 1 + j
        image = cv2.resize(frames[image_index][top:bottom, left:right], (size, size))
        bridge = flow("bridge", image)
        x1, y1 = _summaries(bridge[None][:, _BRIDGE_WINDOW[0], _BRIDGE_WINDOW[1]], _BRIDGE_PERCENT)[0]
        steps = 0
        while align and x1 ** 2 + y1 ** 2 > 1.0:  # the head moved: move the crop with it (at most 3 times)
            steps += 1
            if steps > _MAX_ALIGN_STEPS:
                break
            dx, dy = int(round(x1)), int(round(y1))
            left, top = max(left + dx, 0), max(top + dy, 0)
            right, bottom = right + dx, bottom + dy
            image = cv2.resize(frames[image_index][top:bottom, left:right], (size, size))
            bridge = flow("bridge", image)
            x1, y1 = _summaries(bridge[None][:, _BRIDGE_WINDOW[0], _BRIDGE_WINDOW[1]], _BRIDGE_PERCENT)[0]
        motion[j] = x1, y1
        for name, stack in flows.items():
            result = flow(name, image, stack[j])  # OpenCV writes into stack[j]
            if not np.may_share_memory(result, stack):  # pragma: no cover - a build that reallocates
                stack[j] = result

    for r, s in enumerate(summaries):
        values = np.zeros((later, 2), np.float32)
        if s.patch in flows:
            values = _summaries(flows[s.patch][:, s.rows, s.cols], s.percent)
        out[2 * r:2 * r + 2, ref + 1:] = (values - motion).T
    return out


def region_flow_features(frames, landmarks, k: int, *, size: int = 320, align: bool = True,
                         workers: int = 1) -> np.ndarray:
    """BoostingVRME's region optical-flow features of one video: float32 ``[W, 36, k]``.

    ``frames``: ``[T, H, W]`` uint8 grayscale. ``landmarks``: ``[T, 68, 2]`` dlib-layout (x, y) points in
    frame pixels (rounded to int, as dlib gives them); a frame whose points are not all finite counts as
    a failed face detection. ``k``: the window length, even (BoostingVRME: 50 for CAS(ME)^3, 30 for
    SAMM-LV). Windows start every ``k // 2`` frames and there are ``T // (k // 2) - 1`` of them
    (``window_starts``).

    In each window the first frame with landmarks is the reference: the face is cropped round its inner
    eye corners and resized to ``size x size``, 7 landmark patches are cut from it (both brows, mouth, nose
    wings, below both eyes, nose bridge), and every later frame's same patches are flowed against them
    with ``cv2.calcOpticalFlowFarneback(..., *FARNEBACK_PARAMS)``. With ``align`` the crop follows the head
    (the nose-bridge flow, up to 3 moves a frame). Row ``2 r`` / ``2 r + 1`` is summary r's dx / dy: the
    mean flow of the largest-magnitude pixels of one region minus the nose bridge's; column c is frame
    ``start + c``, and columns up to the reference's are 0. The values equal the released
    ``feature_extraction_spotting``'s (given these landmarks in place of its dlib detections) exactly.

    ``workers``: threads over windows (the result does not depend on it). OpenCV's Farneback, most of
    the time, runs single-threaded, so more workers pay up to the number of free cores.
    """
    cv2 = _cv2()
    frames = np.asarray(frames)
    landmarks = np.asarray(landmarks)
    if frames.ndim != 3 or frames.dtype != np.uint8:
        raise ValueError(f"region_flow_features: frames must be uint8 [T, H, W], got {frames.dtype} "
                         f"{list(frames.shape)}")
    if landmarks.shape != (frames.shape[0], 68, 2):
        raise ValueError(f"region_flow_features: landmarks must be [T, 68, 2] = [{frames.shape[0]}, 68, 2], "
                         f"got {list(landmarks.shape)}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2 or k % 2:
        raise ValueError(f"region_flow_features: k must be an even int >= 2, got {k!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"region_flow_features: size must be a positive int, got {size!r}")
    valid = np.isfinite(landmarks).all(axis=(1, 2))
    points = np.zeros(landmarks.shape, np.int64)
    points[valid] = np.rint(landmarks[valid]).astype(np.int64)
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"region_flow_features: workers must be a positive int, got {workers!r}")
    starts = window_starts(frames.shape[0], int(k))
    out = np.zeros((len(starts), NUM_FEATURES, int(k)), np.float32)
    _magnitude_rule()  # probed once, before any thread needs it

    def one(w: int) -> None:
        out[w] = _window_features(cv2, frames, points, valid, int(starts[w]), int(k), int(size), align)

    if workers == 1 or len(starts) < 2:
        for w in range(len(starts)):
            one(w)
    else:
        # OpenCV's Farneback is single-threaded and releases the GIL; windows are independent
        with ThreadPoolExecutor(max_workers=min(int(workers), len(starts))) as pool:
            list(pool.map(one, range(len(starts))))
    return out
