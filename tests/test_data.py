"""facekernels.data: TV-L1 flows as the released compute_TVL1 computes them (OpenCV's defaults), their
cache, and MOLClips over the released folder layout. Skipped without OpenCV's contrib modules."""

import numpy as np
import pytest
import torch

cv2 = pytest.importorskip("cv2")
if not hasattr(cv2, "optflow"):
    pytest.skip("needs opencv-contrib (cv2.optflow)", allow_module_level=True)

from facekernels.data import MOLClips, tvl1_flows  # noqa: E402


def moving_frames(n, size=32, shift=1):
    """A smooth pattern moving right by `shift` pixels per frame."""
    y, x = np.mgrid[0:size, 0:size]
    return [(127 + 100 * np.sin((x - k * shift) / 3.0) * np.cos(y / 4.0)).astype(np.uint8) for k in range(n)]


def test_matches_opencv_defaults_and_caches(tmp_path):
    frames = moving_frames(3)
    flows = tvl1_flows(frames)
    assert flows.shape == (2, 32, 32, 2) and flows.dtype == np.float32
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    np.testing.assert_array_equal(flows[1], tvl1.calc(frames[1], frames[2], None))
    inner = flows[:, 8:-8, 8:-8]
    assert abs(float(inner[..., 0].mean()) - 1.0) < 0.3 and abs(float(inner[..., 1].mean())) < 0.3  # moves right
    cache = tmp_path / "f.npy"
    first = tvl1_flows(frames, cache=cache)
    np.save(cache, np.full_like(first, 7.0))  # a stored result of the right shape is returned as is
    assert (tvl1_flows(frames, cache=cache) == 7.0).all()


def test_bad_frames():
    with pytest.raises(ValueError, match="tvl1_flows: need at least 2 frames, got 1"):
        tvl1_flows(moving_frames(1))
    with pytest.raises(ValueError, match=r"tvl1_flows: frame 1 must be a grayscale image of shape \[32, 32\]"):
        tvl1_flows([moving_frames(1)[0], np.zeros((16, 16), np.uint8)])
    with pytest.raises(TypeError, match="uint8 or float32"):
        tvl1_flows([np.zeros((8, 8)), np.zeros((8, 8))])


def test_clips_over_the_released_layout(tmp_path):
    frames = moving_frames(17, size=24)
    for cls, videos in (("surprise", ["01_EP01_1"]), ("others", ["02_EP03_2", "03_EP04_1"])):
        for v in videos:
            folder = tmp_path / cls / v
            folder.mkdir(parents=True)
            for k, f in enumerate(frames):
                cv2.imwrite(str(folder / f"img{k + 1}.jpg"), f)
    np.save(tmp_path / "others" / "02_EP03_2" / "landmarks.npy", np.arange(17 * 136, dtype=np.float32).reshape(17, 136))
    data = MOLClips(tmp_path, classes=["surprise", "others"])
    assert len(data) == 3 * 2  # 17 frames: 2 clips of 8 per video, frames j, j + 2, ...
    clip, flows, landmarks, label = data[3]  # others/02_EP03_2, offset 1
    assert clip.shape == (1, 8, 24, 24) and flows.shape == (2, 24, 24, 7) and landmarks.shape == (136, 8)
    assert label == 1 and 0 <= float(clip.min()) and float(clip.max()) <= 1
    picked = [1 + 2 * i for i in range(8)]
    torch.testing.assert_close(landmarks, torch.arange(17 * 136, dtype=torch.float32).view(17, 136)[picked].T)
    assert (tmp_path / "others" / "02_EP03_2" / "tvl1_clip1.npy").exists()
    assert torch.isnan(data[0][2]).all()  # no landmarks.npy
    batch = torch.utils.data.default_collate([data[0], data[1]])
    assert batch[0].shape == (2, 1, 8, 24, 24) and batch[1].shape == (2, 2, 24, 24, 7)
