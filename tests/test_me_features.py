"""facekernels.me.region_flow_features against the restated released extraction loop
(facekernels.bench.region_flow_peer): the same values bit for bit on synthetic face videos, with head
motion (the crop alignment), failed detections and threads. Skipped without OpenCV."""

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from facekernels.bench.region_flow_peer import loop_region_mean, released_region_flow  # noqa: E402
from facekernels.me import region_flow_features, synthetic_face_video, window_starts  # noqa: E402
from facekernels.me import features  # noqa: E402


@pytest.fixture(scope="module")
def video():
    return synthetic_face_video(36, head_drift=0.6, events=1, event_length=8, seed=3)


def peer(frames, landmarks, k, **kwargs):
    windows = released_region_flow(frames, landmarks, k, **kwargs)
    return np.stack(windows) if windows else np.zeros((0, 36, k))


def test_equals_released_loop_with_head_motion(video):
    k = 8
    got = region_flow_features(video.frames, video.landmarks, k)
    want = peer(video.frames, video.landmarks, k)
    assert got.shape == (36 // 4 - 1, 36, k) and got.dtype == np.float32
    assert want.dtype == np.float64 and np.array_equal(want.astype(np.float32), want)  # float32 values
    np.testing.assert_array_equal(got, want)
    assert np.all(got[:, :, 0] == 0) and np.abs(got).max() > 0.1
    # the head drift moved the crop: without the alignment both give other (and again equal) values
    unaligned = region_flow_features(video.frames, video.landmarks, k, align=False)
    assert not np.array_equal(unaligned, got)
    np.testing.assert_array_equal(unaligned, peer(video.frames, video.landmarks, k, align=False))


def test_failed_detections_and_threads(video):
    k = 8
    landmarks = video.landmarks.copy()
    landmarks[[0, 1, 9, 15]] = np.nan  # window 0's reference is frame 2; frame 15 ends window 2
    landmarks[20:28] = np.nan  # window 5 (frames 20..27) has no face at all
    got = region_flow_features(video.frames, landmarks, k)
    np.testing.assert_array_equal(got, peer(video.frames, landmarks, k))
    assert np.all(got[0, :, :3] == 0) and np.any(got[0, :, 3] != 0)
    assert np.all(got[5] == 0)
    np.testing.assert_array_equal(region_flow_features(video.frames, landmarks, k, workers=3), got)


def test_empty_band_below_an_eye(video):
    """A left eye of zero width leaves the band below it no rows: not flowed, summary 0 - head motion."""
    landmarks = video.landmarks[:12].copy()
    landmarks[:, 36:42, 0] = landmarks[:, 39:40, 0]
    got = region_flow_features(video.frames[:12], landmarks, 6)
    np.testing.assert_array_equal(got, peer(video.frames[:12], landmarks, 6))


def test_other_crop_size(video):
    got = region_flow_features(video.frames[:12], video.landmarks[:12], 6, size=256)
    np.testing.assert_array_equal(got, peer(video.frames[:12], video.landmarks[:12], 6, size=256))


def test_summary_equals_loop():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (3, 7), (20, 20), (41, 57), (58, 147)]:
        flows = (rng.standard_normal((4, *shape, 2)) * 2).astype(np.float32)
        ties = rng.integers(-2, 3, (4, *shape, 2)).astype(np.float32) / 2  # many equal magnitudes
        for case, percent in [(c, p) for c in (flows, ties) for p in (0.2, 0.3, 0.7)]:
            got = features._summaries(case, percent)
            want = np.array([loop_region_mean(cv2, f, percent) for f in case], np.float32)
            np.testing.assert_array_equal(got, want)
    assert np.array_equal(features._summaries(np.zeros((2, 0, 5, 2), np.float32), 0.3), np.zeros((2, 2)))


def test_magnitude_rule_matches_opencv():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((3, 5001)) * 5).astype(np.float32)
    y = (rng.standard_normal((3, 5001)) * 5).astype(np.float32)
    want = np.stack([cv2.cartToPolar(a, b, angleInDegrees=True)[0].ravel() for a, b in zip(x, y)])
    np.testing.assert_array_equal(features._magnitude(x, y, features._magnitude_rule()), want)
    np.testing.assert_array_equal(features._magnitude(x, y, "opencv"), want)


def test_windows_and_short_videos(video):
    assert window_starts(36, 8).tolist() == [0, 4, 8, 12, 16, 20, 24, 28]
    assert window_starts(7, 8).tolist() == [] and window_starts(8, 8).tolist() == [0]
    out = region_flow_features(video.frames[:7], video.landmarks[:7], 8)
    assert out.shape == (0, 36, 8) and out.dtype == np.float32


def test_bad_inputs(video):
    frames, landmarks = video.frames[:12], video.landmarks[:12]
    with pytest.raises(ValueError, match="frames must be uint8"):
        region_flow_features(frames.astype(np.float32), landmarks, 6)
    with pytest.raises(ValueError, match="frames must be uint8"):
        region_flow_features(frames[..., None], landmarks, 6)
    with pytest.raises(ValueError, match=r"landmarks must be \[T, 68, 2\] = \[12, 68, 2\]"):
        region_flow_features(frames, landmarks[:, :67], 6)
    for k in (7, 0, 6.0, True):
        with pytest.raises(ValueError, match="k must be an even int"):
            region_flow_features(frames, landmarks, k)
    with pytest.raises(ValueError, match="size must be a positive int"):
        region_flow_features(frames, landmarks, 6, size=0)
    with pytest.raises(ValueError, match="workers must be a positive int"):
        region_flow_features(frames, landmarks, 6, workers=0)


def test_synthetic_video_layout():
    v = synthetic_face_video(40, events=2, event_length=10, seed=0)
    assert v.frames.shape == (40, 240, 240) and v.frames.dtype == np.uint8
    assert v.landmarks.shape == (40, 68, 2) and np.isfinite(v.landmarks).all()
    assert v.intervals.shape == (2, 2) and np.all(v.intervals[:, 1] - v.intervals[:, 0] == 9)
    assert v.labels == ["brow", "mouth"]
    inner = v.landmarks[0, 42, 0] - v.landmarks[0, 39, 0]
    assert inner == pytest.approx(40.0)  # 2 units of 20 px


def test_spot_videos_example_runs():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "spot_videos.py"
    common = [sys.executable, str(script), "--frames", "60", "--k", "10", "--events", "2", "--event-length", "8"]
    run = subprocess.run([*common, "--videos", "1", "--test-videos", "1", "--scorer", "stand-in"],
                         capture_output=True, text=True, check=True)
    assert "STRS" in run.stdout and "stand-in scorer" in run.stdout and "spotting (MEGC" in run.stdout
    # METST_SF trained on one video, run on the other (a narrow network and a few epochs: it runs, and
    # its loss goes down)
    run = subprocess.run([*common, "--videos", "2", "--test-videos", "1", "--dim", "16", "--epochs", "10",
                          "--lr", "1e-2"], capture_output=True, text=True, check=True)
    assert "METST_SF trained here" in run.stdout and "video 1 (held out)" in run.stdout
    losses = [float(line.split("loss")[1]) for line in run.stdout.splitlines() if line.startswith("epoch")]
    assert len(losses) >= 2 and losses[-1] < losses[0]
