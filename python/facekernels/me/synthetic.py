"""Synthetic grey face videos for the spotting pipeline's tests, benchmark and example: a textured face
with dark eyes, brows, nose and mouth, dlib 68-point landmarks, an optional head drift, and
micro-expression-like events (a bright blob on a brow or a mouth corner that rises and returns).
NumPy only."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["FACE_TEMPLATE", "SyntheticVideo", "synthetic_face_video"]


def _template() -> np.ndarray:
    """dlib's 68 points of a frontal face in units of half the inner-eye-corner distance, origin at the
    inner corners' midpoint, y down."""
    t = np.linspace(0.0, np.pi, 17)
    jaw = np.stack([-4.0 * np.cos(t), 5.0 * np.sin(t)], axis=1)
    brow_x = np.linspace(-3.4, -0.7, 5)
    brow_y = np.array([-1.0, -1.3, -1.4, -1.35, -1.2])
    brows = np.concatenate([np.stack([brow_x, brow_y], 1), np.stack([-brow_x[::-1], brow_y[::-1]], 1)])
    bridge = np.stack([np.zeros(4), [-0.6, 0.1, 0.8, 1.5]], axis=1)
    nostrils = np.stack([[-0.7, -0.35, 0.0, 0.35, 0.7], [1.9, 2.0, 2.1, 2.0, 1.9]], axis=1)
    left_eye = np.array([[-2.8, 0.0], [-2.3, -0.3], [-1.5, -0.3], [-1.0, 0.0], [-1.5, 0.25], [-2.3, 0.25]])
    right_eye = np.array([[1.0, 0.0], [1.5, -0.3], [2.3, -0.3], [2.8, 0.0], [2.3, 0.25], [1.5, 0.25]])
    outer_lip = np.array([[-1.5, 3.2], [-1.0, 2.95], [-0.4, 2.8], [0.0, 2.85], [0.4, 2.8], [1.0, 2.95],
                          [1.5, 3.2], [1.0, 3.55], [0.4, 3.7], [0.0, 3.72], [-0.4, 3.7], [-1.0, 3.55]])
    inner_lip = np.array([[-1.3, 3.2], [-0.5, 3.1], [0.0, 3.1], [0.5, 3.1], [1.3, 3.2], [0.5, 3.3],
                          [0.0, 3.32], [-0.5, 3.3]])
    return np.concatenate([jaw, brows, bridge, nostrils, left_eye, right_eye, outer_lip, inner_lip])


FACE_TEMPLATE = _template()  # [68, 2]


class SyntheticVideo(NamedTuple):
    frames: np.ndarray  # uint8 [T, H, W]
    landmarks: np.ndarray  # float32 [T, 68, 2], (x, y) in frame pixels
    intervals: np.ndarray  # int64 [n, 2], (onset, offset) of each event, offset included
    labels: list  # the event's region ("brow" or "mouth") per interval


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    coarse = rng.standard_normal((height // cell + 2, width // cell + 2))
    rows = np.linspace(0, coarse.shape[0] - 1.001, height)
    cols = np.linspace(0, coarse.shape[1] - 1.001, width)
    r0, c0 = rows.astype(int), cols.astype(int)
    fr, fc = (rows - r0)[:, None], (cols - c0)[None, :]
    top = coarse[r0][:, c0] * (1 - fc) + coarse[r0][:, c0 + 1] * fc
    bottom = coarse[r0 + 1][:, c0] * (1 - fc) + coarse[r0 + 1][:, c0 + 1] * fc
    return top * (1 - fr) + bottom * fr


def _blob(yy, xx, y, x, sigma):
    return np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma**2))


def synthetic_face_video(n_frames: int = 200, *, height: int = 240, width: int = 240, unit: float = 20.0,
                         events: int = 2, event_length: int = 12, amplitude: float = 3.0,
                         head_drift: float = 0.0, noise: float = 1.0, seed: int = 0) -> SyntheticVideo:
    """A grey face video with ``events`` non-overlapping events of ``event_length`` frames.

    ``unit``: half the inner-eye-corner distance in pixels (the face is ~9 units tall). During an event a
    bright blob on one brow (or one mouth corner) rises by up to ``amplitude`` pixels and comes back
    (a raised cosine). ``head_drift``: the standard deviation, in pixels per frame, of a random walk of
    the whole face (rounded to whole pixels). ``noise``: the per-frame sensor noise (grey levels)."""
    rng = np.random.default_rng(seed)
    margin = int(4 * max(head_drift, 0.0) * np.sqrt(n_frames)) + 8
    canvas_h, canvas_w = height + 2 * margin, width + 2 * margin
    texture = 120 + 25 * _smooth_noise(rng, canvas_h, canvas_w, 8)
    texture += 10 * _smooth_noise(rng, canvas_h, canvas_w, 3)
    centre = np.array([margin + width / 2, margin + height * 0.42])
    points = centre + unit * FACE_TEMPLATE
    yy, xx = np.mgrid[0:canvas_h, 0:canvas_w].astype(np.float64)
    # (first point, stop, blob width in units, darkness): brows, eyes, nose, outer lips
    features = ((17, 27, 0.25, 45), (36, 48, 0.22, 60), (27, 36, 0.2, 25), (48, 60, 0.25, 55))
    for first, stop, sigma, depth in features:
        for x, y in points[first:stop]:
            texture -= depth * _blob(yy, xx, y, x, sigma * unit) / 2
    drift = np.zeros((n_frames, 2))
    if head_drift > 0:
        drift = np.rint(np.cumsum(rng.normal(0.0, head_drift, (n_frames, 2)), axis=0))
        drift = np.clip(drift, -margin + 1, margin - 1)

    slots = max(n_frames // max(events, 1), event_length + 2)
    onsets = [s * slots + int(rng.integers(1, max(slots - event_length, 2))) for s in range(events)]
    onsets = [o for o in onsets if o + event_length <= n_frames]
    kinds = ["brow" if i % 2 == 0 else "mouth" for i in range(len(onsets))]

    frames = np.empty((n_frames, height, width), np.uint8)
    fy, fx = np.mgrid[0:height, 0:width].astype(np.float64)
    for t in range(n_frames):
        dx, dy = drift[t]
        top, left = int(margin - dy), int(margin - dx)
        image = texture[top:top + height, left:left + width].copy()
        for onset, kind in zip(onsets, kinds):
            if onset <= t < onset + event_length:
                phase = (t - onset + 0.5) / event_length
                rise = amplitude * 0.5 * (1 - np.cos(2 * np.pi * phase))
                anchor = points[19] if kind == "brow" else points[48]
                x, y = anchor[0] - margin + dx, anchor[1] - margin + dy - rise
                image += 50 * _blob(fy, fx, y, x, 0.35 * unit)
        image += rng.normal(0.0, noise, image.shape)
        frames[t] = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    landmarks = (points[None] - margin + drift[:, None, :]).astype(np.float32)
    intervals = np.array([[o, o + event_length - 1] for o in onsets], np.int64).reshape(-1, 2)
    return SyntheticVideo(frames, landmarks, intervals, kinds)
