"""MOL's training data: TV-L1 optical-flow targets (OpenCV's DualTVL1, as the released
utils/compute_TVL1.py computes them, cached as .npy) and the ``MOLClips`` dataset over the released
folder layout. Needs the ``[data]`` extra (``pip install facekernels[data]``: opencv-contrib-python-headless).

The landmark-window datasets (``LandmarkWindows`` and its helpers, facekernels.landmarks_data) are
re-exported here; they need neither OpenCV nor, except for Parquet, pyarrow."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from . import landmarks_data
from .landmarks_data import *

__all__ = ["MOLClips", "tvl1_flows"]
__all__ += landmarks_data.__all__

CLIP_LENGTH = 8
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def _cv2():
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError("facekernels.data needs OpenCV with its contrib modules: pip install facekernels[data] "
                          "(opencv-contrib-python-headless)") from e
    if not hasattr(cv2, "optflow"):
        raise ImportError("facekernels.data needs cv2.optflow (opencv-contrib-python-headless), not plain opencv")
    return cv2


def tvl1_flows(frames: Sequence[np.ndarray] | np.ndarray, cache: str | os.PathLike | None = None) -> np.ndarray:
    """The TV-L1 flows between consecutive frames: ``[T - 1, H, W, 2]`` float32, (dx, dy) per pixel.

    ``frames``: ``T >= 2`` grayscale images ``[H, W]`` (or ``[H, W, 1]``), uint8 or float32, all one
    shape. Each flow is ``cv2.optflow.DualTVL1OpticalFlow_create().calc(prev, next, None)`` with
    OpenCV's defaults, as the released ``compute_TVL1``. With ``cache`` (a ``.npy`` path) a stored result
    of the right shape is returned instead of recomputed, and a new one is stored there.
    """
    arrays = [np.asarray(f) for f in frames]
    if len(arrays) < 2:
        raise ValueError(f"tvl1_flows: need at least 2 frames, got {len(arrays)}")
    arrays = [a[..., 0] if a.ndim == 3 and a.shape[-1] == 1 else a for a in arrays]
    shape = arrays[0].shape
    for i, a in enumerate(arrays):
        if a.ndim != 2 or a.shape != shape:
            raise ValueError(f"tvl1_flows: frame {i} must be a grayscale image of shape {list(shape)}, got "
                             f"{list(a.shape)}")
        if a.dtype not in (np.uint8, np.float32):
            raise TypeError(f"tvl1_flows: frames must be uint8 or float32, got {a.dtype} (frame {i})")
    want = (len(arrays) - 1, *shape, 2)
    if cache is not None and Path(cache).exists():
        stored = np.load(cache)
        if stored.shape == want and stored.dtype == np.float32:
            return stored
    cv2 = _cv2()
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    flows = np.stack([tvl1.calc(arrays[i], arrays[i + 1], None) for i in range(len(arrays) - 1)])
    flows = flows.astype(np.float32, copy=False)
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, flows)
    return flows


def _frame_number(name: str) -> int:
    """The frame's index in its file name (img12.jpg, image012.jpg, 012.jpg: the released sort keys)."""
    found = re.findall(r"\d+", Path(name).stem)
    if not found:
        raise ValueError(f"MOLClips: cannot read a frame number from {name!r}")
    return int(found[-1])


class MOLClips(torch.utils.data.Dataset):
    """Clips of ``clip_length`` frames over the released folder layout ``root/<class>/<video>/<frames>``
    (``data/CASME2_data_5/disgust/01_EP19_05f/img1.jpg`` ...), one sample per (video, offset) as the
    released dataset samples them: with ``n`` frames and ``s = n // clip_length``, clip ``j < s`` takes
    frames ``j, j + s, ..., j + (clip_length - 1) s`` (frames sorted by the number in their names).

    Each video folder may hold ``landmarks.npy``: ``[n, 136]`` float (68 points, x and y interleaved, in
    the frames' pixels, e.g. from dlib as the released code computes them); without it the landmarks are
    NaN. Flows are computed with :func:`tvl1_flows` on first use and cached next to the frames as
    ``tvl1_clip<j>.npy``.

    A sample is ``(video [1, T, H, W] float32 in [0, 1], flows [2, H, W, T - 1] float32, landmarks [136, T]
    float32, label int)``: the layouts ``MOL`` and ``mol_loss`` take after batching. ``classes`` fixes the
    label order (the released lists, e.g. ``["surprise", "happiness", "disgust", "repression", "others"]``);
    by default the sorted sub-folders of ``root``.
    """

    def __init__(self, root: str | os.PathLike, classes: Sequence[str] | None = None, clip_length: int = CLIP_LENGTH,
                 transform: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"MOLClips: {self.root} is not a folder")
        self.classes = list(classes) if classes is not None else sorted(p.name for p in self.root.iterdir() if p.is_dir())
        self.clip_length = clip_length
        self.transform = transform
        self.samples: list[tuple[Path, list[Path], int, int]] = []  # (video folder, frames, offset, label)
        for label, name in enumerate(self.classes):
            folder = self.root / name
            if not folder.is_dir():
                raise FileNotFoundError(f"MOLClips: class folder {folder} is missing")
            for video in sorted(p for p in folder.iterdir() if p.is_dir()):
                frames = sorted((p for p in video.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES),
                                key=lambda p: _frame_number(p.name))
                for offset in range(len(frames) // clip_length):
                    self.samples.append((video, frames, offset, label))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: int) -> tuple[Tensor, Tensor, Tensor, int]:
        cv2 = _cv2()
        video, frames, offset, label = self.samples[item]
        step = len(frames) // self.clip_length
        picked = [offset + i * step for i in range(self.clip_length)]
        images = []
        for i in picked:
            image = cv2.imread(str(frames[i]), cv2.IMREAD_GRAYSCALE)
            if image is None:
                raise OSError(f"MOLClips: cannot read {frames[i]}")
            images.append(self.transform(image) if self.transform is not None else image)
        flows = tvl1_flows(images, cache=video / f"tvl1_clip{offset}.npy")
        landmarks_path = video / "landmarks.npy"
        if landmarks_path.exists():
            landmarks = np.load(landmarks_path).astype(np.float32)[picked].T
        else:
            landmarks = np.full((136, self.clip_length), np.nan, dtype=np.float32)
        clip = torch.from_numpy(np.stack(images).astype(np.float32) / 255.0).unsqueeze(0)
        return clip, torch.from_numpy(flows).permute(3, 1, 2, 0).contiguous(), torch.from_numpy(landmarks), label
