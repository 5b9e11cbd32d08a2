"""facekernels.data.LandmarkWindows: window boundaries and masks against plainly written loops over the
frames, variable-length segments, labels, normalisation, the CSV / Parquet / long-layout readers agreeing
with in-memory tables, the memory-mapped store, and subject-wise splits that never leak a subject."""

import math
import pickle

import numpy as np
import pytest
import torch
from facekernels.data import (
    HOLISTIC_NODES,
    HOLISTIC_PART_RANGES,
    HOLISTIC_SHOULDERS,
    ColumnMap,
    LandmarkWindows,
    Normalization,
    iter_landmark_windows,
    leave_one_subject_out,
    subject_kfold,
)

NAMES = ["nose", "left_eye", "right_eye", "left_shoulder", "right_shoulder"]
COLUMNS = ColumnMap.from_points(NAMES, coords=("x", "y", "z"), visibility="visibility")


def make_table(seed=0, streams=(("s1", "a", 47), ("s1", "b", 23), ("s2", "a", 61)), interleave=True):
    """Frames of a few streams with gaps (dropped frames), NaN coordinates and low visibility; the rows
    of the streams interleaved (in frame order within each stream)."""
    rng = np.random.default_rng(seed)
    rows = []
    for subject, session, n in streams:
        frames = np.arange(3, 3 + n)
        frames = frames[rng.random(n) > 0.15]  # gaps
        for f in frames:
            rows.append((subject, session, int(f)))
    if interleave:
        order = np.argsort([r[2] + 0.1 * hash((r[0], r[1])) % 7 for r in rows], kind="stable")
        rows = [rows[i] for i in order]
    n = len(rows)
    table = {"subject": np.array([r[0] for r in rows]), "session": np.array([r[1] for r in rows]),
             "frame": np.array([r[2] for r in rows]), "label": rng.integers(0, 2, n)}
    for name in NAMES:
        for coord in ("x", "y", "z"):
            values = rng.normal(size=n).astype(np.float32)
            values[rng.random(n) < 0.05] = np.nan
            table[f"{name}_{coord}"] = values
        table[f"{name}_visibility"] = rng.random(n).astype(np.float32)
    return table


def chunks(table, size):
    n = len(table["frame"])
    return [{k: v[i:i + size] for k, v in table.items()} for i in range(0, n, size)]


def reference_windows(table, window, stride, drop_last, threshold=0.5, channels=("x", "y", "z")):
    """Plain loops: per (subject, session), windows start at the first frame every `stride` frames; a
    frame absent from the table, a NaN coordinate or visibility < threshold masks a point."""
    out = {}
    n = len(table["frame"])
    streams = {}
    for i in range(n):
        streams.setdefault((str(table["subject"][i]), str(table["session"][i])), {})[int(table["frame"][i])] = i
    for (subject, session), rows in streams.items():
        first, last = min(rows), max(rows)
        start = first
        while True:
            if drop_last and start + window - 1 > last:
                break
            if not drop_last and start > last:
                break
            x = np.zeros((len(channels), window, len(NAMES)), np.float32)
            mask = np.zeros((window, len(NAMES)), bool)
            votes = {}
            for t in range(window):
                i = rows.get(start + t)
                if i is None:
                    continue
                votes[int(table["label"][i])] = votes.get(int(table["label"][i]), 0) + 1
                for v, name in enumerate(NAMES):
                    values = [float(table[f"{name}_{c}"][i]) for c in channels]
                    if all(math.isfinite(a) for a in values) and table[f"{name}_visibility"][i] >= threshold:
                        mask[t, v] = True
                        x[:, t, v] = values
            label = min(votes, key=lambda k: (-votes[k], k)) if votes else -1
            out[(subject, session, start)] = (x, mask, label)
            start += stride
    return out


def as_dict(data):
    return {(data[i]["subject"], data[i]["session"], int(data[i]["start"])): data[i] for i in range(len(data))}


@pytest.mark.parametrize("window_frames,stride_frames,drop_last,chunk,threshold", [
    (10, 10, True, 7, 0.5), (10, 4, True, 1000, 0.5), (6, 9, False, 5, 0.5), (10, 10, False, 13, 0.5),
    (1, 1, True, 11, 0.5),
    (10, 10, True, 1000, 0.05),  # few invalid points: the placement zeroes them one by one
])
def test_windows_and_masks_match_the_plain_reference(window_frames, stride_frames, drop_last, chunk, threshold):
    table = make_table()
    data = LandmarkWindows(chunks(table, chunk), COLUMNS, fps=10, window=window_frames / 10, stride=stride_frames / 10,
                           drop_last=drop_last, visibility_threshold=threshold, progress=False)
    expected = reference_windows(table, window_frames, stride_frames, drop_last, threshold)
    got = as_dict(data)
    assert sorted(got) == sorted(expected)
    assert data.x.shape == (len(expected), 3, window_frames, len(NAMES)) and data.mask.dtype == torch.bool
    for key, (x, mask, label) in expected.items():
        sample = got[key]
        np.testing.assert_array_equal(sample["mask"].numpy(), mask, err_msg=str(key))
        np.testing.assert_array_equal(sample["x"].numpy(), x, err_msg=str(key))
        assert int(sample["label"]) == label and sample["length"] == window_frames
    keys = list(zip(data.subjects, data.sessions, data.starts))
    assert keys == sorted(keys)  # ordered by (subject, session, start)


def test_streaming_iterator_and_memory_mapped_store_agree_with_the_dataset(tmp_path):
    table = make_table(seed=1)
    data = LandmarkWindows(table, COLUMNS, fps=10, window=0.8, stride=0.5, progress=False)
    streamed = list(iter_landmark_windows(chunks(table, 9), COLUMNS, fps=10, window=0.8, stride=0.5, progress=False))
    got = {(s, t, int(st)): (b["x"][j], b["mask"][j]) for b in streamed
           for j, (s, t, st) in enumerate(zip(b["subjects"], b["sessions"], b["starts"]))}
    assert len(got) == len(data)
    for i in range(len(data)):
        x, mask = got[(data.subjects[i], data.sessions[i], int(data.starts[i]))]
        torch.testing.assert_close(x, data.x[i], rtol=0, atol=0)
        assert torch.equal(mask, data.mask[i])
    stored = LandmarkWindows(chunks(table, 9), COLUMNS, fps=10, window=0.8, stride=0.5, store=tmp_path / "w",
                             progress=False)
    half = LandmarkWindows(table, COLUMNS, fps=10, window=0.8, stride=0.5, store=tmp_path / "h", dtype=torch.float16,
                           progress=False)
    assert (tmp_path / "w" / "x.raw").exists() and len(stored) == len(data)
    for i in range(len(data)):
        assert torch.equal(stored[i]["x"], data[i]["x"]) and torch.equal(stored[i]["mask"], data[i]["mask"])
        torch.testing.assert_close(half[i]["x"], data[i]["x"], rtol=1e-3, atol=1e-3)
    copied = pickle.loads(pickle.dumps(stored))  # what a DataLoader worker receives: the path, not the data
    assert copied.x._array is None and copied.mask._array is None  # mapped again on first use
    assert torch.equal(copied[3]["x"], stored[3]["x"]) and torch.equal(copied[3]["mask"], stored[3]["mask"])
    batch = next(iter(torch.utils.data.DataLoader(stored, batch_size=4)))
    assert batch["x"].shape == (4, 3, 8, 5) and batch["mask"].shape == (4, 8, 5) and len(batch["subject"]) == 4


def test_time_column_places_rows_on_the_frame_grid():
    fps = 30.0
    frames = np.array([0, 1, 2, 4, 5, 6, 7, 9, 10, 11])  # 3 and 8 missing
    times = 100.0 + frames / fps + np.random.default_rng(2).uniform(-0.004, 0.004, len(frames))
    table = {"time": times, "subject": np.array(["p"] * 10), "a_x": frames.astype(np.float32),
             "a_y": np.zeros(10, np.float32)}
    data = LandmarkWindows(table, ColumnMap.from_points(["a"]), fps=fps, window=6 / fps, progress=False)
    assert len(data) == 2
    np.testing.assert_allclose(data.starts, [times[0], times[0] + 6 / fps])
    assert data.mask[:, :, 0].tolist() == [[True, True, True, False, True, True], [True, True, False, True, True, True]]
    assert data.x[1, 0, :, 0].tolist() == [6, 7, 0, 9, 10, 11]


def test_variable_length_segments_are_padded_with_the_mask():
    table = make_table(seed=3)
    segments = [("s1", "a", 5, 17), ("s2", "a", 10, 14), ("s2", "a", 40, 70), ("s1", "b", 3, 4)]  # 70: past the end
    data = LandmarkWindows(chunks(table, 8), COLUMNS, fps=30, segments=segments, progress=False)
    assert len(data) == 4 and data.x.shape == (4, 3, 30, 5)
    got = as_dict(data)
    for subject, session, start, end in segments:
        sample = got[(subject, session, start)]
        length = end - start
        assert sample["length"] == length
        rows = {int(f): i for i, f in enumerate(table["frame"])
                if table["subject"][i] == subject and table["session"][i] == session}
        for t in range(30):
            i = rows.get(start + t) if t < length else None
            for v, name in enumerate(NAMES):
                valid = i is not None and all(math.isfinite(table[f"{name}_{c}"][i]) for c in "xyz") and \
                    table[f"{name}_visibility"][i] >= 0.5
                assert bool(sample["mask"][t, v]) == valid, (subject, session, start, t, v)
                if valid:
                    assert float(sample["x"][1, t, v]) == float(table[f"{name}_y"][i])
        assert not sample["mask"][length:].any() and not sample["x"][:, length:].any()


def test_window_labels_table_and_majority():
    table = make_table(seed=4, streams=(("s1", "a", 30),))
    table["label"] = np.where(table["frame"] < 13, 1, 0)
    data = LandmarkWindows(table, COLUMNS, fps=10, window=1.0, progress=False)
    first = int(data.starts[0])
    assert first in (3, 4) and len(data) == 3  # frames 3..32 with gaps: windows of 10 from the first frame
    assert data.labels.tolist() == [1, 0, 0]
    relabelled = LandmarkWindows(table, COLUMNS, fps=10, window=1.0, window_labels={("s1", "a", first): 7},
                                 progress=False)
    assert relabelled.labels.tolist() == [7, -1, -1]
    del table["label"]
    assert (LandmarkWindows(table, COLUMNS, fps=10, window=1.0, progress=False).labels == -1).all()


def test_normalisation_per_frame_with_the_window_mean_where_the_reference_is_missing():
    rng = np.random.default_rng(5)
    n = 8
    table = {"frame": np.arange(n), "subject": np.array(["p"] * n)}
    for name in NAMES:
        for coord in "xyz":
            table[f"{name}_{coord}"] = rng.normal(size=n).astype(np.float32)
    table["left_shoulder_x"][2] = np.nan  # frame 2: no centre and no scale -> the window's mean ones
    norm = Normalization(center=(3, 4), scale=(3, 4))
    data = LandmarkWindows(table, ColumnMap.from_points(NAMES, ("x", "y", "z")), fps=1, window=4, normalize=norm,
                           progress=False)
    raw = np.stack([np.stack([table[f"{name}_{c}"] for name in NAMES], 1) for c in "xyz"])  # [C, F, V]
    for w in range(2):
        frames = range(4 * w, 4 * w + 4)
        centres, scales = {}, {}
        for f in frames:
            if np.isfinite(raw[:, f, 3]).all():
                centres[f] = (raw[:, f, 3] + raw[:, f, 4]) / 2
                scales[f] = math.hypot(raw[0, f, 3] - raw[0, f, 4], raw[1, f, 3] - raw[1, f, 4])
        mean_centre = sum(centres.values()) / len(centres)
        mean_scale = sum(scales.values()) / len(scales)
        for t, f in enumerate(frames):
            centre, scale = centres.get(f, mean_centre), scales.get(f, mean_scale)
            for v in range(5):
                if np.isfinite(raw[:, f, v]).all():
                    np.testing.assert_allclose(data.x[w, :, t, v].numpy(), (raw[:, f, v] - centre) / scale,
                                               rtol=1e-5, atol=1e-5)
                else:
                    assert not data.mask[w, t, v] and (data.x[w, :, t, v] == 0).all()
    for f in range(n):  # no reference in any frame: the whole sample is masked
        table["left_shoulder_x"][f] = np.nan
    assert not LandmarkWindows(table, ColumnMap.from_points(NAMES, ("x", "y", "z")), fps=1, window=4, normalize=norm,
                               progress=False).mask.any()


def test_visibility_channel_and_channel_choice():
    table = make_table(seed=6, streams=(("s1", "a", 20),))
    data = LandmarkWindows(table, COLUMNS, fps=10, window=0.5, channels=("x", "y", "visibility"), progress=False)
    ref = reference_windows(table, 5, 5, True, channels=("x", "y"))
    got = as_dict(data)
    for key, (x, mask, _) in ref.items():
        np.testing.assert_array_equal(got[key]["mask"].numpy(), mask)
        np.testing.assert_array_equal(got[key]["x"][:2].numpy(), x)
        assert (got[key]["x"][2][mask] >= 0.5).all() and (got[key]["x"][2][~mask] == 0).all()
    with pytest.raises(ValueError, match="channels must be coordinates"):
        LandmarkWindows(table, COLUMNS, channels=("x", "w"), progress=False)


def write_csv(path, table):
    names = list(table)
    with open(path, "w") as f:
        f.write(",".join(names) + "\n")
        for i in range(len(table["frame"])):
            cells = []
            for name in names:
                value = table[name][i]
                cells.append("" if isinstance(value, (float, np.floating)) and np.isnan(value) else str(value))
            f.write(",".join(cells) + "\n")


def test_csv_reads_in_chunks_as_the_table(tmp_path):
    table = make_table(seed=7)
    expected = LandmarkWindows(table, COLUMNS, fps=10, window=0.7, stride=0.3, progress=False)
    write_csv(tmp_path / "t.csv", table)
    from_csv = LandmarkWindows(tmp_path / "t.csv", COLUMNS, fps=10, window=0.7, stride=0.3, chunk_rows=6,
                               progress=False)
    assert torch.equal(from_csv.mask, expected.mask) and torch.equal(from_csv.x, expected.x)
    assert torch.equal(from_csv.labels, expected.labels)


def test_parquet_reads_in_row_batches_as_the_table(tmp_path):
    table = make_table(seed=7)
    expected = LandmarkWindows(table, COLUMNS, fps=10, window=0.7, stride=0.3, progress=False)
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table(table), tmp_path / "t.parquet", row_group_size=10)
    from_parquet = LandmarkWindows(tmp_path / "t.parquet", COLUMNS, fps=10, window=0.7, stride=0.3, chunk_rows=6,
                                   progress=False)
    assert torch.equal(from_parquet.mask, expected.mask) and torch.equal(from_parquet.x, expected.x)
    assert list(from_parquet.subjects) == list(expected.subjects)


def test_long_layout_matches_the_wide_one():
    parts = (("face", 3), ("pose", 2))
    table = make_table(seed=8, streams=(("s1", "a", 25), ("s2", "b", 14)), interleave=False)
    rows = {"frame": [], "subject": [], "session": [], "label": [], "type": [], "landmark_index": [],
            "x": [], "y": [], "z": []}
    for i in range(len(table["frame"])):
        for v, name in enumerate(NAMES):
            part, index = ("face", v) if v < 3 else ("pose", v - 3)
            for key in ("frame", "subject", "session", "label"):
                rows[key].append(table[key][i])
            rows["type"].append(part)
            rows["landmark_index"].append(index)
            for c in "xyz":
                rows[c].append(table[f"{name}_{c}"][i])
    rows = {k: np.array(v) for k, v in rows.items()}
    wide = LandmarkWindows(table, ColumnMap.from_points(NAMES, ("x", "y", "z")), fps=10, window=0.6, progress=False)
    long = LandmarkWindows(chunks(rows, 7), ColumnMap.long(parts=parts), fps=10, window=0.6, progress=False)
    assert torch.equal(long.mask, wide.mask) and torch.equal(long.x, wide.x) and torch.equal(long.labels, wide.labels)
    rows["type"][4] = "hand"
    with pytest.raises(ValueError, match="unknown point 'hand'"):
        LandmarkWindows(rows, ColumnMap.long(parts=parts), fps=10, window=0.6, progress=False)


def test_holistic_default_layout():
    columns = ColumnMap.holistic()
    assert HOLISTIC_NODES == 543 and columns.num_nodes == 543
    assert HOLISTIC_PART_RANGES == {"face": (0, 468), "left_hand": (468, 489), "pose": (489, 522),
                                    "right_hand": (522, 543)}
    x, y, z = columns.points
    assert (x[0], y[468 + 20], z[489 + 12], x[542]) == ("face_0_x", "left_hand_20_y", "pose_12_z", "right_hand_20_x")
    assert columns.visibility[489 + 12] == "pose_12_visibility" and HOLISTIC_SHOULDERS == (500, 501)
    n = 40
    rng = np.random.default_rng(9)
    table = {"frame": np.arange(n), "subject": np.array(["a"] * n), "session": np.array(["1"] * n)}
    for c in range(3):
        for name in columns.points[c]:
            table[name] = rng.random(n).astype(np.float32)
    for v in range(489, 522):  # MediaPipe: visibility for the pose only; other parts are read as visible
        table[columns.visibility[v]] = np.ones(n, np.float32)
    table["pose_11_visibility"][:5] = 0.1
    data = LandmarkWindows(table, fps=30, window=1.0, stride=0.5, normalize=Normalization(HOLISTIC_SHOULDERS, HOLISTIC_SHOULDERS),
                           progress=False)
    assert data.x.shape == (1, 3, 30, 543)
    assert not data.mask[0, :5, 500].any() and data.mask[0, 5:, 500].all() and data.mask[0, :, 0].all()


def test_bad_input():
    table = make_table(seed=10, streams=(("s1", "a", 30),))
    with pytest.raises(ValueError, match="either window"):
        LandmarkWindows(table, COLUMNS, window=1.0, segments=[("s1", "a", 0, 3)], progress=False)
    with pytest.raises(ValueError, match="mapped columns are not in the table"):
        LandmarkWindows({k: v for k, v in table.items() if k != "nose_y"}, COLUMNS, progress=False)
    with pytest.raises(ValueError, match="neither the frame column"):
        LandmarkWindows({k: v for k, v in table.items() if k != "frame"}, COLUMNS, progress=False)
    backwards = chunks(table, 10)
    backwards[0], backwards[2] = backwards[2], backwards[0]
    with pytest.raises(ValueError, match="in frame order"):
        LandmarkWindows(backwards, COLUMNS, fps=10, window=0.5, progress=False)
    with pytest.raises(ValueError, match="window and stride must be at least one frame"):
        LandmarkWindows(table, COLUMNS, fps=10, window=0.01, progress=False)
    with pytest.raises(ValueError, match="store is for fixed windows"):
        LandmarkWindows(table, COLUMNS, segments=[("s1", "a", 3, 9)], store="unused", progress=False)
    with pytest.raises(ValueError, match="cannot read"):
        LandmarkWindows("landmarks.xlsx", COLUMNS, progress=False)


def test_subject_splits_never_leak_a_subject():
    subjects = np.array(["p3", "p1", "p2", "p1", "p4", "p3", "p5", "p2", "p1", "p6", "p7"])
    folds = list(leave_one_subject_out(subjects))
    assert len(folds) == 7
    for train, test in folds:
        assert len(set(subjects[test])) == 1 and not set(subjects[train]) & set(subjects[test])
        assert sorted(np.concatenate([train, test])) == list(range(len(subjects)))
    for k in (2, 3, 7):
        folds = list(subject_kfold(subjects, k, seed=1))
        assert len(folds) == k
        tested = np.concatenate([test for _, test in folds])
        assert sorted(tested) == list(range(len(subjects)))  # every sample tested exactly once
        for train, test in folds:
            assert not set(subjects[train]) & set(subjects[test])
        sizes = [len(set(subjects[test])) for _, test in folds]
        assert max(sizes) - min(sizes) <= 1
    again = [test.tolist() for _, test in subject_kfold(subjects, 3, seed=1)]
    assert again == [test.tolist() for _, test in subject_kfold(subjects, 3, seed=1)]
    with pytest.raises(ValueError, match=r"k must be in \[2, 7\]"):
        list(subject_kfold(subjects, 8))


def test_progress_line_for_long_reads(capsys, monkeypatch):
    from facekernels import landmarks_data

    monkeypatch.setitem(__import__("sys").modules, "tqdm", None)  # the plain stderr line, tqdm or not
    bar = landmarks_data._Progress(True, 100, "reading t.parquet", delay=0.0)
    bar.update(40)
    bar.close()
    assert "reading t.parquet: 40/100 rows" in capsys.readouterr().err
    quiet = landmarks_data._Progress(False, 100, "reading", delay=0.0)
    quiet.update(40)
    quiet.close()
    assert capsys.readouterr().err == ""
