"""Landmark windows for engagement models: per-frame landmark tables (CSV, Parquet, or in-memory column
chunks) cut into fixed windows or given variable-length segments, packed to ``[N, C, T, V]`` with a
validity mask, normalised, and split subject-wise. See docs/landmarks.md for the design and the memory
reasoning.

Re-exported from :mod:`facekernels.data`. Parquet needs pyarrow (the ``[landmarks]`` extra); CSV and
in-memory chunks need nothing beyond numpy and torch.
"""

from __future__ import annotations

import csv
import itertools
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._csvfile import open_csv

__all__ = [
    "HOLISTIC_NODES",
    "HOLISTIC_PARTS",
    "HOLISTIC_PART_RANGES",
    "HOLISTIC_SHOULDERS",
    "ColumnMap",
    "LandmarkWindows",
    "Normalization",
    "iter_landmark_windows",
    "leave_one_subject_out",
    "subject_kfold",
]

# MediaPipe Holistic as Kaggle's GISLR files order it: face, left hand, pose, right hand.
HOLISTIC_PARTS: tuple[tuple[str, int], ...] = (("face", 468), ("left_hand", 21), ("pose", 33), ("right_hand", 21))


def _part_ranges(parts: Sequence[tuple[str, int]]) -> dict[str, tuple[int, int]]:
    ranges, first = {}, 0
    for name, count in parts:
        ranges[name] = (first, first + count)
        first += count
    return ranges


HOLISTIC_PART_RANGES: dict[str, tuple[int, int]] = _part_ranges(HOLISTIC_PARTS)
HOLISTIC_NODES = sum(count for _, count in HOLISTIC_PARTS)
# Pose landmarks 11 and 12 (left and right shoulder) in the 543-node order.
HOLISTIC_SHOULDERS = (HOLISTIC_PART_RANGES["pose"][0] + 11, HOLISTIC_PART_RANGES["pose"][0] + 12)

_ZERO = torch.zeros((), dtype=torch.float32)
_BATCH_BYTES = 24 << 20
_KEY_FIELDS = ("frame", "time", "subject", "session", "label")


@dataclass(frozen=True)
class ColumnMap:
    """Which columns of a landmark table hold what.

    Wide layout (one row per frame): ``points[c][v]`` is the column of coordinate ``coords[c]`` of node
    ``v`` (None: that node has no such column, read as NaN = missing); ``visibility[v]`` the visibility
    column of node ``v`` (None, or a column absent from the table: visible).

    Long layout (``layout="long"``, one row per frame and point, GISLR-style): ``coords`` are the
    coordinate columns themselves (``"x"``, ``"y"``, ``"z"``), ``part`` and ``index`` the columns naming
    the point (node = first node of the part in ``parts`` + index); rows of one frame must be adjacent.

    Key columns (None or absent from the table: not used): ``frame`` (integer frame index; a gap is a
    missing frame) or, without it, ``time`` (seconds, placed on the grid of 1/fps), ``subject``,
    ``session`` (a stream is one (subject, session)), ``label`` (integer per frame, < 0: none).
    """

    coords: tuple[str, ...]
    points: tuple[tuple[str | None, ...], ...] = ()
    visibility: tuple[str | None, ...] | None = None
    frame: str | None = "frame"
    time: str | None = "time"
    subject: str | None = "subject"
    session: str | None = "session"
    label: str | None = "label"
    layout: str = "wide"
    part: str = "type"
    index: str = "landmark_index"
    parts: tuple[tuple[str, int], ...] = HOLISTIC_PARTS
    num_nodes: int = field(init=False)

    def __post_init__(self) -> None:
        if self.layout not in ("wide", "long"):
            raise ValueError(f"ColumnMap: layout must be 'wide' or 'long', got {self.layout!r}")
        if len(self.coords) < 2:
            raise ValueError(f"ColumnMap: need at least the x and y coordinates, got {self.coords}")
        if self.layout == "wide":
            if len(self.points) != len(self.coords) or len({len(p) for p in self.points}) != 1:
                raise ValueError("ColumnMap: points must hold one equally long column list per coordinate")
            nodes = len(self.points[0])
            if self.visibility is not None and len(self.visibility) != nodes:
                raise ValueError(f"ColumnMap: visibility names {len(self.visibility)} columns for {nodes} nodes")
        else:
            nodes = sum(count for _, count in self.parts)
        if nodes < 1:
            raise ValueError("ColumnMap: no nodes")
        object.__setattr__(self, "num_nodes", nodes)

    @classmethod
    def from_points(cls, names: Sequence[str], coords: Sequence[str] = ("x", "y"), pattern: str = "{point}_{coord}",
                    visibility: str | None = None, **keys: Any) -> ColumnMap:
        """Wide columns named ``pattern.format(point=name, coord=coord)`` for each point name (node order)
        and coordinate; ``visibility`` names the visibility coordinate (e.g. ``"visibility"``) if any."""
        points = tuple(tuple(pattern.format(point=n, coord=c) for n in names) for c in coords)
        vis = None if visibility is None else tuple(pattern.format(point=n, coord=visibility) for n in names)
        return cls(coords=tuple(coords), points=points, visibility=vis, **keys)

    @classmethod
    def holistic(cls, coords: Sequence[str] = ("x", "y", "z"), visibility: bool = True, **keys: Any) -> ColumnMap:
        """The default: MediaPipe Holistic's 543 points, columns ``{part}_{index}_{coord}`` (``face_0_x``,
        ``left_hand_20_y``, ``pose_12_z``, ``pose_12_visibility``) in the node order of
        :data:`HOLISTIC_PARTS`; visibility columns where present (MediaPipe gives them for the pose)."""
        names = [f"{part}_{i}" for part, count in HOLISTIC_PARTS for i in range(count)]
        return cls.from_points(names, coords, visibility="visibility" if visibility else None, **keys)

    @classmethod
    def long(cls, coords: Sequence[str] = ("x", "y", "z"), part: str = "type", index: str = "landmark_index",
             parts: Sequence[tuple[str, int]] = HOLISTIC_PARTS, **keys: Any) -> ColumnMap:
        """The long layout (one row per frame and point, as GISLR's files): ``frame, type, landmark_index,
        x, y, z`` by default."""
        return cls(coords=tuple(coords), layout="long", part=part, index=index, parts=tuple(parts), **keys)


@dataclass(frozen=True)
class Normalization:
    """Per-frame normalisation of the coordinate channels (not visibility): subtract the mean of the
    ``center`` nodes, divide by the 2-D (x, y) distance between the two ``scale`` nodes.

    A frame's centre (scale) is defined when all its ``center`` nodes (both ``scale`` nodes) are valid
    and the distance exceeds ``min_scale``; where it is not, the mean over the sample's frames where it
    is defined is used; a sample with no such frame is masked out entirely.
    """

    center: int | tuple[int, ...]
    scale: tuple[int, int] | None = None
    min_scale: float = 1e-6

    @property
    def center_nodes(self) -> tuple[int, ...]:
        return (self.center,) if isinstance(self.center, int) else tuple(self.center)


# ---------------------------------------------------------------------------------------------------------
# Reading: every source becomes an iterator of column chunks {name: 1-D array}.


class _Progress:
    """A stderr progress line for reads longer than ``delay`` seconds (tqdm when installed)."""

    def __init__(self, enabled: bool, total: int | None, desc: str, delay: float = 2.0) -> None:
        self.enabled, self.total, self.desc, self.delay = enabled, total, desc, delay
        self.start, self.done, self.last, self.bar = time.monotonic(), 0, 0.0, None

    def update(self, rows: int) -> None:
        self.done += rows
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.start < self.delay:
            return
        if self.bar is None:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=self.total, desc=self.desc, unit="rows", initial=self.done)
                return
            except ImportError:
                self.bar = False
        if self.bar:
            self.bar.update(rows)
        elif now - self.last > 0.5:
            self.last = now
            total = f"/{self.total}" if self.total else ""
            rate = self.done / (now - self.start)
            sys.stderr.write(f"\r{self.desc}: {self.done}{total} rows, {rate:,.0f} rows/s")
            sys.stderr.flush()

    def close(self) -> None:
        if self.bar:
            self.bar.close()
        elif self.bar is False:
            sys.stderr.write("\n")


def _pyarrow_parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError("LandmarkWindows: reading Parquet needs pyarrow: pip install facekernels[landmarks]") from e
    return pq


def _parquet_chunks(path: Path, wanted: list[str], chunk_rows: int, progress: bool) -> tuple[list[str], Iterator]:
    pq = _pyarrow_parquet()
    handle = pq.ParquetFile(path)
    names = list(handle.schema_arrow.names)
    present = [n for n in wanted if n in set(names)]

    def chunks():
        bar = _Progress(progress, handle.metadata.num_rows, f"reading {path.name}")
        try:
            for batch in handle.iter_batches(batch_size=chunk_rows, columns=present):
                columns = {n: batch.column(i).to_numpy(zero_copy_only=False) for i, n in enumerate(batch.schema.names)}
                bar.update(batch.num_rows)
                yield columns
        finally:
            bar.close()

    return names, chunks()


def _csv_chunks(path: Path, wanted: list[str], chunk_rows: int, progress: bool) -> tuple[list[str], Iterator]:
    with open_csv(path) as handle:
        names = next(csv.reader(handle), None)
    if names is None:
        raise ValueError(f"LandmarkWindows: {path} is empty (no header)")
    where = {n: i for i, n in enumerate(names)}
    present = [n for n in wanted if n in where]
    take = [where[n] for n in present]

    def chunks():
        bar = _Progress(progress, None, f"reading {path.name}")
        with open_csv(path) as handle:
            reader = csv.reader(handle)
            next(reader)
            try:
                while True:
                    rows = [[row[i] for i in take] for _, row in zip(range(chunk_rows), reader)]
                    if not rows:
                        return
                    table = np.array(rows, dtype=str).reshape(len(rows), len(take))
                    bar.update(len(rows))
                    yield {n: table[:, j] for j, n in enumerate(present)}
            finally:
                bar.close()

    return names, chunks()


def _open_source(source: Any, wanted: list[str], chunk_rows: int, progress: bool) -> tuple[list[str], Iterator]:
    """(the column names of the source, an iterator of its chunks restricted to the wanted columns)."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        suffix = path.suffix.lower()
        if suffix in (".parquet", ".pq"):
            return _parquet_chunks(path, wanted, chunk_rows, progress)
        if suffix in (".csv", ".txt"):
            return _csv_chunks(path, wanted, chunk_rows, progress)
        raise ValueError(f"LandmarkWindows: cannot read {path} (want .parquet or .csv)")
    if isinstance(source, Mapping):
        source = [source]
    iterator = iter(source)
    try:
        first = next(iterator)
    except StopIteration:
        return [], iter(())
    if not isinstance(first, Mapping):
        raise TypeError(f"LandmarkWindows: source chunks must be mappings of column name to array, got {type(first)}")
    names = list(first.keys())

    def chunks():
        bar = _Progress(progress, None, "reading chunks")
        try:
            for table in itertools.chain([first], iterator):
                bar.update(len(next(iter(table.values()))) if table else 0)
                yield table
        finally:
            bar.close()

    return names, chunks()


def _as_float(column: Any) -> np.ndarray:
    """A column as float32; empty strings (CSV's missing cells) are NaN."""
    array = np.asarray(column)
    if array.dtype.kind in "US":
        array = np.where(array == "", "nan", array)
    return array.astype(np.float32, copy=False)


@dataclass
class _Rows:
    """Frames of one chunk in the internal layout: points [C, n, V] float32 (channel-first as the
    output; NaN: missing), the rest one entry per frame."""

    subject: np.ndarray
    session: np.ndarray
    position: np.ndarray  # frame index (int64) or time (float64)
    points: np.ndarray
    visibility: np.ndarray | None
    label: np.ndarray | None


def _key_column(table: Mapping[str, Any], name: str | None, n: int) -> np.ndarray:
    if name is None or name not in table:
        return np.full(n, "", dtype=object)
    return np.asarray(table[name]).astype(str)


def _labels(table: Mapping[str, Any], name: str | None) -> np.ndarray | None:
    if name is None or name not in table:
        return None
    raw = np.asarray(table[name])
    if raw.dtype.kind in "US":
        raw = np.where(raw == "", "-1", raw)
    values = raw.astype(np.float64)
    return np.where(np.isfinite(values), values, -1).astype(np.int64)


class _Reader:
    """Turns a source's column chunks into :class:`_Rows` under a column map."""

    def __init__(self, source: Any, columns: ColumnMap, chunk_rows: int, progress: bool) -> None:
        self.columns = columns
        keys = [getattr(columns, f) for f in _KEY_FIELDS if getattr(columns, f) is not None]
        if columns.layout == "wide":
            coords = [n for names in columns.points for n in names if n is not None]
            vis = [n for n in (columns.visibility or ()) if n is not None]
            wanted = list(dict.fromkeys(keys + coords + vis))
        else:
            wanted = list(dict.fromkeys(keys + [columns.part, columns.index, *columns.coords]))
        names, self.chunks = _open_source(source, wanted, chunk_rows, progress)
        present = set(names)
        if names:
            if columns.frame in present:
                self.position = columns.frame
            elif columns.time in present:
                self.position = columns.time
            else:
                raise ValueError(f"LandmarkWindows: the table has neither the frame column {columns.frame!r} nor "
                                 f"the time column {columns.time!r}")
            required = coords if columns.layout == "wide" else [columns.part, columns.index, *columns.coords]
            missing = [n for n in required if n not in present]
            if missing:
                raise ValueError(f"LandmarkWindows: {len(missing)} mapped columns are not in the table, e.g. "
                                 f"{missing[:3]}")
            self.time_axis = self.position != columns.frame
        else:
            self.position, self.time_axis = columns.frame, False
        self._carry: dict[str, np.ndarray] | None = None
        self._scratch: tuple[np.ndarray, np.ndarray] | None = None

    def __iter__(self) -> Iterator[_Rows]:
        if self.columns.layout == "wide":
            for table in self.chunks:
                yield self._wide(table)
            return
        for table in self.chunks:
            rows = self._long(table, final=False)
            if rows is not None:
                yield rows
        if self._carry is not None:
            rows = self._long({}, final=True)
            if rows is not None:
                yield rows

    def _position(self, table: Mapping[str, Any]) -> np.ndarray:
        raw = np.asarray(table[self.position])
        if self.time_axis:
            return _as_float(raw).astype(np.float64)
        return raw.astype(np.float64).astype(np.int64) if raw.dtype.kind in "USf" else raw.astype(np.int64)

    def _wide(self, table: Mapping[str, Any]) -> _Rows:
        cmap = self.columns
        n = len(np.asarray(table[self.position]))
        # the chunk's arrays are reused from chunk to chunk (the windower copies the frames out before it
        # asks for the next): fresh ones would be page-faulted in on every chunk
        shape = (len(cmap.coords), n, cmap.num_nodes)
        if self._scratch is None or self._scratch[0].shape != shape:
            self._scratch = (np.empty(shape, np.float32), np.empty((cmap.num_nodes, n), np.float32))
        points, stacked = self._scratch
        missing = np.full(n, np.nan, dtype=np.float32)
        for c, names in enumerate(cmap.points):
            # columns are contiguous: stack them [V, n] (copies of whole columns), then one blocked transpose
            np.stack([missing if name is None else _as_float(table[name]) for name in names], out=stacked)
            torch.from_numpy(points[c]).copy_(torch.from_numpy(stacked).t())
        visibility = None
        if cmap.visibility is not None and any(n is not None and n in table for n in cmap.visibility):
            visibility = np.ones((n, cmap.num_nodes), dtype=np.float32)
            present = [v for v, name in enumerate(cmap.visibility) if name is not None and name in table]
            visibility[:, present] = np.stack([_as_float(table[cmap.visibility[v]]) for v in present], axis=1)
        return _Rows(_key_column(table, cmap.subject, n), _key_column(table, cmap.session, n), self._position(table),
                     points, visibility, _labels(table, cmap.label))

    def _long(self, table: Mapping[str, Any], final: bool) -> _Rows | None:
        """One row per (frame, point) to one row per frame. The rows of the last frame of a chunk are
        carried into the next chunk (a frame may straddle two chunks)."""
        cmap = self.columns
        fields = [f for f in (cmap.subject, cmap.session, cmap.label) if f is not None]
        wanted = [self.position, cmap.part, cmap.index, *cmap.coords, *fields]
        columns = {n: np.asarray(table[n]) for n in wanted if n in table}
        if self._carry is not None:
            if columns:
                columns = {n: np.concatenate([self._carry[n], columns[n]]) for n in self._carry}
            else:
                columns = self._carry
            self._carry = None
        if not columns or len(columns[self.position]) == 0:
            return None
        n = len(columns[self.position])
        subject, session = _key_column(columns, cmap.subject, n), _key_column(columns, cmap.session, n)
        position = self._position(columns)
        change = np.ones(n, dtype=bool)
        change[1:] = (subject[1:] != subject[:-1]) | (session[1:] != session[:-1]) | (position[1:] != position[:-1])
        frame_id = np.cumsum(change) - 1
        if not final:
            last = frame_id == frame_id[-1]
            self._carry = {name: col[last] for name, col in columns.items()}
            if last.all():
                return None
            keep = ~last
            columns = {name: col[keep] for name, col in columns.items()}
            subject, session, position, frame_id = subject[keep], session[keep], position[keep], frame_id[keep]
        parts = np.asarray(columns[cmap.part]).astype(str)
        index = np.asarray(columns[cmap.index]).astype(np.int64)
        first = np.full(len(parts), -1, dtype=np.int64)
        size = np.zeros(len(parts), dtype=np.int64)
        for name, (start, stop) in _part_ranges(cmap.parts).items():
            here = parts == name
            first[here], size[here] = start, stop - start
        bad = (first < 0) | (index < 0) | (index >= size)
        if bad.any():
            raise ValueError(f"LandmarkWindows: unknown point {str(parts[bad][0])!r} {int(index[bad][0])} (parts "
                             f"{[f'{p} 0..{k - 1}' for p, k in cmap.parts]})")
        row = frame_id - frame_id[0]
        points = np.full((len(cmap.coords), int(row[-1]) + 1, cmap.num_nodes), np.nan, dtype=np.float32)
        for c, name in enumerate(cmap.coords):
            points[c, row, first + index] = _as_float(columns[name])
        heads = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
        label = _labels(columns, cmap.label)
        return _Rows(subject[heads], session[heads], position[heads], points, None,
                     None if label is None else label[heads])


# ---------------------------------------------------------------------------------------------------------
# Windowing: per stream, a buffer on the frame grid (NaN rows: missing frames) from which windows are cut.


@dataclass
class _Stream:
    subject: str
    session: str
    origin: float  # frame index or time of grid position 0
    buffer: np.ndarray  # [C, capacity, V] float32, 0 where not valid
    valid: np.ndarray  # [capacity, V] bool
    labels: np.ndarray  # [capacity] int64, -1: none
    start: int = 0  # grid position of buffer[:, 0]
    end: int = 0  # one past the last grid position written
    next_window: int = 0
    segments: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))  # (start, length)
    next_segment: int = 0


@dataclass
class _Batch:
    """Samples cut from one stream: points [m, C, T, V] and valid [m, T, V] (views of the stream's
    buffers), labels [m, T]; starts in grid positions."""

    stream: _Stream
    points: np.ndarray
    valid: np.ndarray
    labels: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray


class _Windower:
    """Places each stream's frames on its frame grid (a buffer holding only what samples still to be cut
    need; rows never written are missing frames) and cuts the samples as soon as their frames are in."""

    def __init__(self, options: _Options, time_axis: bool) -> None:
        self.options, self.time_axis = options, time_axis
        self.window, self.stride = options.window, options.stride
        self.streams: dict[tuple[str, str], _Stream] = {}

    def positions(self, stream: _Stream, position: np.ndarray) -> np.ndarray:
        if self.time_axis:
            return np.rint((position - stream.origin) * self.options.fps).astype(np.int64)
        return position.astype(np.int64) - int(stream.origin)

    def feed(self, rows: _Rows) -> Iterator[_Batch]:
        n = len(rows.position)
        if n == 0:
            return
        options = self.options
        points = rows.points if options.channels == list(range(len(rows.points))) else rows.points[options.channels]
        # a point is valid when its coordinates are finite and it is visible
        valid = np.isfinite(points[0])
        for channel in points[1:]:
            valid &= np.isfinite(channel)
        if rows.visibility is not None:
            valid &= rows.visibility >= options.visibility_threshold
        if options.visibility_channel:
            vis = rows.visibility if rows.visibility is not None else np.ones((n, points.shape[2]), np.float32)
            points = np.concatenate([points, vis[None]], axis=0)
        labels = rows.label if rows.label is not None else np.full(n, -1, dtype=np.int64)
        if (rows.subject[0] == rows.subject).all() and (rows.session[0] == rows.session).all():
            groups = [(rows.subject[0], rows.session[0], slice(None))]
        else:
            key = np.char.add(np.char.add(rows.subject.astype(str), "\x1f"), rows.session.astype(str))
            _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
            groups = [(rows.subject[i], rows.session[i], np.flatnonzero(inverse == g)) for g, i in enumerate(first)]
        fed = set()
        for subject, session, pick in groups:
            stream = self._stream(str(subject), str(session), rows.position[pick], points.shape[0], points.shape[2])
            self._place(stream, self.positions(stream, rows.position[pick]), points[:, pick], valid[pick], labels[pick])
            fed.add((stream.subject, stream.session))
            yield from self._cut(stream, final=False)
        for key, stream in self.streams.items():
            if key not in fed:
                self._shrink(stream)

    def _shrink(self, stream: _Stream) -> None:
        """Keep only the rows a stream not fed by this chunk still needs: a stream whose rows have ended
        (or pause while other streams are read) holds at most a window's frames, not a chunk's."""
        keep = min(max(self._keep_from(stream), stream.start), stream.end)
        live = stream.end - keep
        if stream.buffer.shape[1] <= 2 * max(live, self.window or 1):
            return
        lo = keep - stream.start
        stream.buffer = stream.buffer[:, lo:lo + live].copy()
        stream.valid = stream.valid[lo:lo + live].copy()
        stream.labels = stream.labels[lo:lo + live].copy()
        stream.start = keep

    def finish(self) -> Iterator[_Batch]:
        for stream in self.streams.values():
            yield from self._cut(stream, final=True)

    def _stream(self, subject: str, session: str, position: np.ndarray, channels: int, nodes: int) -> _Stream:
        key = (subject, session)
        stream = self.streams.get(key)
        if stream is not None:
            return stream
        capacity = max(2 * (self.window or 0), 1024)
        origin = float(position.min())
        table = None
        if self.options.segments is not None:
            table = self.options.segments.get(key, np.zeros((0, 2)))
            origin = min(origin, float(table[:, 0].min())) if len(table) else origin  # frames before: missing
        stream = _Stream(subject, session, origin, np.zeros((channels, capacity, nodes), np.float32),
                         np.zeros((capacity, nodes), dtype=bool), np.full(capacity, -1, dtype=np.int64))
        if table is not None:
            kind = np.float64 if self.time_axis else np.int64
            starts = self.positions(stream, np.asarray(table[:, 0], dtype=kind))
            ends = self.positions(stream, np.asarray(table[:, 1], dtype=kind))
            order = np.argsort(starts, kind="stable")
            stream.segments = np.stack([starts[order], (ends - starts)[order]], axis=1)
        self.streams[key] = stream
        return stream

    def _keep_from(self, stream: _Stream) -> int:
        """The first grid position a sample still to be cut may need."""
        if self.window is not None:
            return stream.next_window * self.stride
        if stream.next_segment < len(stream.segments):
            return int(stream.segments[stream.next_segment:, 0].min())
        return stream.end

    def _place(self, stream: _Stream, position: np.ndarray, points: np.ndarray, valid: np.ndarray,
               labels: np.ndarray) -> None:
        """Write frames (positions on the grid, points [C, n, V], valid [n, V]) into the stream's buffer,
        zeroing the points that are not valid on the way."""
        keep = min(max(self._keep_from(stream), stream.start), stream.end)
        if position.min() < keep:
            raise ValueError(f"LandmarkWindows: the rows of stream ({stream.subject}, {stream.session}) must come "
                             f"in frame order across chunks (a frame before one already windowed)")
        old_end = stream.end
        new_end = max(old_end, int(position.max()) + 1)
        live = old_end - keep
        if new_end - keep > stream.buffer.shape[1]:
            capacity = 2 * (new_end - keep)
            buffer = np.empty((stream.buffer.shape[0], capacity, stream.buffer.shape[2]), np.float32)
            valid_buffer = np.empty((capacity, stream.buffer.shape[2]), dtype=bool)
            labels_buffer = np.empty(capacity, dtype=np.int64)
        else:
            buffer, valid_buffer, labels_buffer = stream.buffer, stream.valid, stream.labels
        if live > 0 and (buffer is not stream.buffer or keep > stream.start):
            lo = keep - stream.start
            buffer[:, :live] = stream.buffer[:, lo:lo + live]  # moves down in place, or into the larger buffer
            valid_buffer[:live] = stream.valid[lo:lo + live]
            labels_buffer[:live] = stream.labels[lo:lo + live]
        stream.buffer, stream.valid, stream.labels, stream.start = buffer, valid_buffer, labels_buffer, keep
        rows = position - keep
        if new_end > old_end:  # new grid rows: the ones no frame lands on are missing frames
            fresh = np.ones(new_end - old_end, dtype=bool)
            fresh[rows[rows >= live] - live] = False
            gaps = live + np.flatnonzero(fresh)
            if len(gaps):
                stream.buffer[:, gaps] = 0
                stream.valid[gaps] = False
                stream.labels[gaps] = -1
        # whole-chunk operations only (both threads): many small ones stall on a busy machine
        source = torch.from_numpy(points)
        invalid = ~valid
        count = np.count_nonzero(invalid)
        if 0 < count <= invalid.size // 4:
            frame, node = np.nonzero(invalid)  # few invalid points: zero just those
            points[:, frame, node] = 0.0
        elif count:
            torch.where(torch.from_numpy(valid), source, _ZERO, out=source)
        low, high = int(rows.min()), int(rows.max()) + 1
        target = torch.from_numpy(stream.buffer[:, low:high])
        if high - low == len(rows) and (len(rows) < 2 or (np.diff(rows) == 1).all()):
            target.copy_(source)  # consecutive frames
        else:  # dropped frames between them (or out of order): whole frames [C, V] by index
            target.index_copy_(1, torch.from_numpy(rows - low), source)
        stream.valid[rows] = valid
        stream.labels[rows] = labels
        stream.end = new_end

    def _cut(self, stream: _Stream, final: bool) -> Iterator[_Batch]:
        if self.window is not None:
            t, s = self.window, self.stride
            if final and not self.options.drop_last:
                last = (stream.end - 1) // s  # every window starting inside the stream
            else:
                last = (stream.end - t) // s  # every window ending inside the stream
            count = last - stream.next_window + 1
            if count <= 0:
                return
            first = stream.next_window * s
            span = (count - 1) * s + t
            if first + span > stream.end:  # the stream's last window runs past its end: missing frames
                self._pad(stream, first + span)
            lo = first - stream.start
            windows = np.lib.stride_tricks.sliding_window_view
            view = windows(stream.buffer[:, lo:lo + span], t, axis=1, writeable=True)[:, ::s].transpose(1, 0, 3, 2)
            valid = windows(stream.valid[lo:lo + span], t, axis=0, writeable=True)[::s].transpose(0, 2, 1)
            labels = windows(stream.labels[lo:lo + span], t)[::s]
            starts = first + s * np.arange(count)
            stream.next_window += count
            # batches under glibc's largest mmap threshold (32 MB): the memory of a freed batch is then
            # reused for the next instead of being returned to the system and faulted in again
            step = max(1, _BATCH_BYTES // (view[0].size * 4))
            for i in range(0, count, step):
                yield _Batch(stream, view[i:i + step], valid[i:i + step], labels[i:i + step], starts[i:i + step],
                             np.full(len(starts[i:i + step]), t))
            return
        while stream.next_segment < len(stream.segments):
            start, length = (int(v) for v in stream.segments[stream.next_segment])
            if start + length > stream.end:
                if not final:
                    return
                self._pad(stream, start + length)
            lo = start - stream.start
            yield _Batch(stream, stream.buffer[None, :, lo:lo + length], stream.valid[None, lo:lo + length],
                         stream.labels[None, lo:lo + length], np.array([start]), np.array([length]))
            stream.next_segment += 1

    def _pad(self, stream: _Stream, end: int) -> None:
        pad = np.arange(stream.end, end)
        shape = (stream.buffer.shape[0], len(pad), stream.buffer.shape[2])
        self._place(stream, pad, np.zeros(shape, np.float32), np.zeros((len(pad), shape[2]), bool),
                    np.full(len(pad), -1, np.int64))


def _majority(labels: np.ndarray) -> np.ndarray:
    """The most frequent label >= 0 of each row of [m, T] (ties: the smallest), -1 when none."""
    classes = np.unique(labels[labels >= 0])
    if len(classes) == 0:
        return np.full(len(labels), -1, dtype=np.int64)
    counts = (labels[:, :, None] == classes).sum(axis=1)
    return np.where(counts.max(axis=1) > 0, classes[counts.argmax(axis=1)], -1)


def _normalise(x: Tensor, mask: Tensor, lengths: Tensor, norm: Normalization, coords: int) -> Tensor:
    """Normalise x [m, C, T, V] in place (coordinate channels < coords); returns the mask with samples
    without any reference frame cleared."""
    t = x.shape[2]
    inside = torch.arange(t)[None, :] < lengths[:, None]
    nodes = list(norm.center_nodes)
    ref_valid = mask[:, :, nodes].all(dim=2) & inside  # [m, T]
    centre = x[:, :coords][:, :, :, nodes].mean(dim=3)  # [m, c, T]
    centre = _fill_from_mean(centre, ref_valid)
    keep = ref_valid.any(dim=1)
    x[:, :coords] -= centre[:, :, :, None]
    if norm.scale is not None:
        a, b = norm.scale
        distance = torch.linalg.vector_norm(x[:, :2, :, a] - x[:, :2, :, b], dim=1)  # [m, T]
        scale_valid = mask[:, :, a] & mask[:, :, b] & (distance > norm.min_scale) & inside
        scale = _fill_from_mean(distance[:, None], scale_valid)[:, 0]
        keep &= scale_valid.any(dim=1)
        x[:, :coords] /= torch.where(keep[:, None], scale, 1.0)[:, None, :, None]
    return mask & keep[:, None, None]


def _fill_from_mean(values: Tensor, valid: Tensor) -> Tensor:
    """values [m, c, T]: where ``valid`` [m, T] is False, the mean over the sample's valid frames."""
    weights = valid[:, None].to(values.dtype)
    total = torch.where(valid[:, None], values, 0.0).sum(dim=2, keepdim=True)
    mean = total / weights.sum(dim=2, keepdim=True).clamp(min=1)
    return torch.where(valid[:, None], values, mean)


@dataclass
class _Options:
    """Everything but the source, resolved once for the dataset and the streaming iterator."""

    columns: ColumnMap
    fps: float
    window: int | None
    stride: int
    segments: Mapping[tuple[str, str], np.ndarray] | None
    channels: list[int]
    channel_names: tuple[str, ...]
    visibility_channel: bool
    visibility_threshold: float
    normalize: Normalization | None
    drop_last: bool
    window_labels: Mapping[tuple[str, str, float], int] | None
    chunk_rows: int
    progress: bool


def _resolve(columns: ColumnMap | None, fps: float, window: float | None, stride: float | None,
             segments: Iterable[tuple[Any, Any, float, float]] | None, channels: Sequence[str] | None,
             visibility_threshold: float, normalize: Normalization | None, drop_last: bool,
             window_labels: Mapping[tuple[Any, Any, float], int] | None, chunk_rows: int, progress: bool) -> _Options:
    columns = ColumnMap.holistic() if columns is None else columns
    if fps <= 0:
        raise ValueError(f"LandmarkWindows: fps must be > 0, got {fps}")
    if window is not None and segments is not None:
        raise ValueError("LandmarkWindows: give either window (seconds) or segments, not both")
    if window is None and segments is None:
        window = 10.0
    frames = stride_frames = None
    if window is not None:
        frames = round(window * fps)
        stride_frames = frames if stride is None else round(stride * fps)
        if frames < 1 or stride_frames < 1:
            raise ValueError(f"LandmarkWindows: window and stride must be at least one frame at {fps} fps, got "
                             f"{window} s and {stride} s")
    table = None
    if segments is not None:
        grouped: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for subject, session, start, end in segments:
            if end <= start:
                raise ValueError(f"LandmarkWindows: segment ({subject}, {session}, {start}, {end}) is empty")
            grouped.setdefault((str(subject), str(session)), []).append((start, end))
        table = {k: np.asarray(v) for k, v in grouped.items()}
    channels = tuple(columns.coords if channels is None else channels)
    visibility_channel = "visibility" in channels
    picked = [c for c in channels if c != "visibility"]
    unknown = [c for c in picked if c not in columns.coords]
    if unknown or channels[:len(picked)] != tuple(picked) or not picked:
        raise ValueError(f"LandmarkWindows: channels must be coordinates of the column map {columns.coords}, "
                         f"optionally followed by 'visibility'; got {channels}")
    if normalize is not None:
        for node in (*normalize.center_nodes, *(normalize.scale or ())):
            if not 0 <= node < columns.num_nodes:
                raise ValueError(f"LandmarkWindows: normalisation node {node} outside [0, {columns.num_nodes})")
    labels = None if window_labels is None else {(str(s), str(t), round(float(st), 6)): int(v)
                                                  for (s, t, st), v in window_labels.items()}
    return _Options(columns, float(fps), frames, stride_frames or 1, table, [columns.coords.index(c) for c in picked],
                    channels, visibility_channel, visibility_threshold, normalize, drop_last, labels,
                    chunk_rows, progress)


def _samples(source: Any, options: _Options) -> Iterator[dict[str, Any]]:
    """Batches of finished samples: x [m, C, T, V] float32 (0 where masked), mask [m, T, V], labels [m],
    subjects, sessions, starts (frame index or seconds) [m], lengths [m]."""
    reader = _Reader(source, options.columns, options.chunk_rows, options.progress)
    windower = _Windower(options, reader.time_axis)
    coords = len(options.channels)

    def finish(batch: _Batch) -> dict[str, Any]:
        # views of the stream's buffers: the one copy of the samples (blocks of T x V floats)
        x = torch.from_numpy(batch.points).clone(memory_format=torch.contiguous_format)
        mask = torch.from_numpy(batch.valid).clone(memory_format=torch.contiguous_format)
        lengths = torch.from_numpy(batch.lengths.astype(np.int64))
        if options.normalize is not None:
            mask = _normalise(x, mask, lengths, options.normalize, coords)
            x.mul_(mask[:, None])
        stream = batch.stream
        if windower.time_axis:
            starts = stream.origin + batch.starts / options.fps
        else:
            starts = (int(stream.origin) + batch.starts).astype(np.int64)
        if options.window_labels is not None:
            labels = np.array([options.window_labels.get((stream.subject, stream.session, round(float(s), 6)), -1)
                               for s in starts], dtype=np.int64)
        else:
            labels = _majority(batch.labels)
        m = len(starts)
        return {"x": x, "mask": mask, "labels": torch.from_numpy(labels), "subjects": [stream.subject] * m,
                "sessions": [stream.session] * m, "starts": torch.from_numpy(np.asarray(starts)), "lengths": lengths}

    for rows in reader:
        for batch in windower.feed(rows):
            yield finish(batch)
    for batch in windower.finish():
        yield finish(batch)


def iter_landmark_windows(source: Any, columns: ColumnMap | None = None, *, fps: float = 30.0,
                          window: float | None = None, stride: float | None = None,
                          segments: Iterable[tuple[Any, Any, float, float]] | None = None,
                          channels: Sequence[str] | None = None, visibility_threshold: float = 0.5,
                          normalize: Normalization | None = None, drop_last: bool = True,
                          window_labels: Mapping[tuple[Any, Any, float], int] | None = None,
                          chunk_rows: int = 8192, progress: bool = True) -> Iterator[dict[str, Any]]:
    """Stream the samples of :class:`LandmarkWindows` without keeping them: one dict per stream and chunk
    read, ``x [m, C, T, V]`` float32, ``mask [m, T, V]`` bool, ``labels [m]`` int64, ``subjects`` and
    ``sessions`` (lists of str), ``starts [m]``, ``lengths [m]``. Memory is bounded by the chunk and the
    open streams' buffers, whatever the source's size. Arguments as :class:`LandmarkWindows`."""
    options = _resolve(columns, fps, window, stride, segments, channels, visibility_threshold, normalize,
                       drop_last, window_labels, chunk_rows, progress)
    return _samples(source, options)


class LandmarkWindows(torch.utils.data.Dataset):
    """Fixed windows (``window`` seconds every ``stride`` seconds) or variable-length ``segments`` cut
    from per-frame landmark tables, packed with a validity mask.

    Args:
        source: a ``.parquet`` (needs pyarrow) or ``.csv`` path, a mapping of column name to 1-D array, or
            an iterable of such mappings (chunks of one table, e.g. from a generator); read in chunks of
            ``chunk_rows`` rows.
        columns: the :class:`ColumnMap` (default: :meth:`ColumnMap.holistic`, 543 points x, y, z).
        fps: the frame grid: a window is ``round(window * fps)`` frames; with a time column (and no frame
            column) each row goes to the grid frame ``round((time - first time) * fps)``.
        window, stride: seconds (window default: 10 s unless segments are given; stride default: window). Windows of a stream start at its first frame,
            every ``stride``; with ``drop_last`` only windows inside the stream are kept, else the last
            one runs past the end with masked frames.
        segments: instead of windows, ``(subject, session, start, end)`` samples (frame indices, or
            seconds with a time column; ``end`` exclusive), padded to the longest with masked frames.
        channels: output channels, coordinates of the map optionally followed by ``"visibility"`` (1
            where the table has no visibility): C = 2, 3 or 4.
        visibility_threshold: a point with visibility below it is masked (as a NaN coordinate is).
        normalize: a :class:`Normalization`, or None for the raw coordinates.
        window_labels: ``{(subject, session, start): label}``; without it, a sample's label is the
            majority of its frames' labels (ties: the smallest), -1 when it has none.
        store: a folder to keep the samples in (``x.npy``, ``mask.npy`` memory-mapped, written as they
            are cut) instead of memory; ``dtype`` float16 halves it.
        progress: a stderr progress line for reads longer than two seconds.

    Samples are ordered by (subject, session, start). ``x [N, C, T, V]`` is 0 where ``mask [N, T, V]``
    is False (a missing frame, a NaN coordinate, low visibility, padding). ``data[i]`` is a dict:
    ``x [C, T, V]`` float32, ``mask [T, V]`` bool, ``label`` (int64 scalar tensor), ``subject``,
    ``session`` (str), ``start`` (float: frame index or seconds), ``length`` (int, frames before padding).
    """

    def __init__(self, source: Any, columns: ColumnMap | None = None, *, fps: float = 30.0,
                 window: float | None = None, stride: float | None = None,
                 segments: Iterable[tuple[Any, Any, float, float]] | None = None,
                 channels: Sequence[str] | None = None, visibility_threshold: float = 0.5,
                 normalize: Normalization | None = None, drop_last: bool = True,
                 window_labels: Mapping[tuple[Any, Any, float], int] | None = None,
                 store: str | os.PathLike | None = None, dtype: torch.dtype = torch.float32,
                 chunk_rows: int = 8192, progress: bool = True) -> None:
        if dtype not in (torch.float32, torch.float16):
            raise ValueError(f"LandmarkWindows: dtype must be float32 or float16, got {dtype}")
        options = _resolve(columns, fps, window, stride, segments, channels, visibility_threshold, normalize,
                           drop_last, window_labels, chunk_rows, progress)
        self.channels = options.channel_names
        self.fps = options.fps
        batches: list[dict[str, Any]] = []
        if store is not None and options.window is None:
            raise ValueError("LandmarkWindows: store is for fixed windows (segments are padded to the longest, "
                             "known only at the end)")
        sink = _FileSink(Path(store), dtype) if store is not None else None
        for batch in _samples(source, options):
            if sink is not None:
                sink.write(batch)
                batch = {k: v for k, v in batch.items() if k not in ("x", "mask")}
            batches.append(batch)
        self.labels = torch.cat([b["labels"] for b in batches]) if batches else torch.zeros(0, dtype=torch.int64)
        self.subjects = np.array([s for b in batches for s in b["subjects"]], dtype=str)
        self.sessions = np.array([s for b in batches for s in b["sessions"]], dtype=str)
        self.starts = np.concatenate([b["starts"].numpy() for b in batches]) if batches else np.zeros(0)
        self.lengths = torch.cat([b["lengths"] for b in batches]) if batches else torch.zeros(0, dtype=torch.int64)
        order = np.lexsort((self.starts, self.sessions, self.subjects))
        self.labels, self.lengths = self.labels[order], self.lengths[order]
        self.subjects, self.sessions, self.starts = self.subjects[order], self.sessions[order], self.starts[order]
        v, c = options.columns.num_nodes, len(self.channels)
        if sink is not None:
            self.x, self.mask = sink.close(order, c, options.window, v)
        elif batches:
            t = max(b["x"].shape[2] for b in batches)
            self.x = torch.zeros(len(order), c, t, v, dtype=dtype)
            self.mask = torch.zeros(len(order), t, v, dtype=torch.bool)
            where = np.empty(len(order), dtype=np.int64)
            where[order] = np.arange(len(order))
            first = 0
            for b in batches:
                m, length = b["x"].shape[0], b["x"].shape[2]
                rows = torch.from_numpy(where[first:first + m])
                self.x[rows, :, :length] = b["x"].to(dtype)
                self.mask[rows, :length] = b["mask"]
                first += m
        else:
            self.x = torch.zeros(0, c, options.window or 0, v, dtype=dtype)
            self.mask = torch.zeros(0, options.window or 0, v, dtype=torch.bool)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, item: int) -> dict[str, Any]:
        x, mask = self.x[item], self.mask[item]
        if isinstance(x, np.ndarray):  # a sample of the memory-mapped store
            x, mask = torch.from_numpy(np.array(x)), torch.from_numpy(np.array(mask))
        return {"x": x.float(), "mask": mask, "label": self.labels[item], "subject": str(self.subjects[item]),
                "session": str(self.sessions[item]), "start": float(self.starts[item]),
                "length": int(self.lengths[item])}


class _FileSink:
    """Fixed windows written to raw files in a folder as they are cut, memory-mapped when done."""

    def __init__(self, folder: Path, dtype: torch.dtype) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.dtype = folder, dtype
        self.numpy_dtype = np.float16 if dtype == torch.float16 else np.float32
        self.x_file = open(folder / "x.raw", "wb")  # noqa: SIM115 - written batch by batch, closed by close()
        self.mask_file = open(folder / "mask.raw", "wb")  # noqa: SIM115

    def write(self, batch: dict[str, Any]) -> None:
        batch["x"].to(self.dtype).numpy().tofile(self.x_file)
        batch["mask"].numpy().tofile(self.mask_file)

    def close(self, order: np.ndarray, c: int, t: int, v: int) -> tuple[_StoredArray, _StoredArray]:
        self.x_file.close()
        self.mask_file.close()
        n = len(order)
        return (_StoredArray(self.folder / "x.raw", self.numpy_dtype, (n, c, t, v), order),
                _StoredArray(self.folder / "mask.raw", np.dtype(np.bool_), (n, t, v), order))


class _StoredArray:
    """A read-only memory-mapped array whose first index goes through a permutation (the store's rows are
    in the order they were cut; the dataset's in (subject, session, start) order). Pickles as its path,
    so DataLoader workers map the file instead of receiving a copy of it."""

    def __init__(self, path: Path, dtype: Any, shape: tuple[int, ...], order: np.ndarray) -> None:
        self.path, self.dtype, self.shape, self.order = path, np.dtype(dtype), shape, order
        self._array: np.ndarray | None = None

    def _open(self) -> np.ndarray:
        if self._array is None:
            self._array = np.memmap(self.path, dtype=self.dtype, mode="r", shape=self.shape) if self.shape[0] else \
                np.zeros(self.shape, self.dtype)
        return self._array

    def __getitem__(self, item: int) -> np.ndarray:
        return self._open()[self.order[item]]

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_array": None}


def leave_one_subject_out(subjects: Sequence[Any] | np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(train, test)`` index arrays, one fold per subject (sorted): test holds every sample of that
    subject, train every other sample."""
    subjects = np.asarray(subjects).astype(str)
    for subject in np.unique(subjects):
        test = subjects == subject
        yield np.flatnonzero(~test), np.flatnonzero(test)


def subject_kfold(subjects: Sequence[Any] | np.ndarray, k: int, seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(train, test)`` index arrays over ``k`` folds of whole subjects: the distinct subjects are
    shuffled with ``seed`` and dealt into k groups of sizes differing by at most one; fold i tests group i."""
    subjects = np.asarray(subjects).astype(str)
    unique = np.unique(subjects)
    if not 2 <= k <= len(unique):
        raise ValueError(f"subject_kfold: k must be in [2, {len(unique)}] (the number of subjects), got {k}")
    shuffled = np.random.default_rng(seed).permutation(unique)
    for group in np.array_split(shuffled, k):
        test = np.isin(subjects, group)
        yield np.flatnonzero(~test), np.flatnonzero(test)
