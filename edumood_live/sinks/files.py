"""File sinks for window summaries: CSV and JSON Lines, crash-safe row by row; paths checked before a run.

Each row is encoded first and written as one whole line with a single ``os.write`` on an unbuffered
descriptor, then fsync'd, so every row already written survives a crash or ``kill -9`` and no row is
ever half-written by us. Paths that cannot be written fail at open, not at the first row. Per-track
rows (``--per-track``) go to a separate file next to the main one (``out.csv`` -> ``out.tracks.csv``).
Output paths are checked (`preflight`) before anything is opened, so a typo fails at once and an
existing file is never truncated by a run that cannot start.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType

from edumood_live.config import OutputConfig, tracks_path
from edumood_live.errors import OutputError
from edumood_live.sinks import RowLike, WindowSink
from edumood_live.types import WindowStatus, WindowSummary


def summary_columns(labels: Sequence[str], extra: Sequence[str] = ()) -> list[str]:
    """Window-row columns for these labels, in `WindowSummary.to_row` order, then `extra` (the cluster
    mode's ``node`` and ``actor``)."""
    shares: dict[str, float | None] = dict.fromkeys(labels, 0.0)
    probe = WindowSummary("", "", "", WindowStatus.GAP, 0, 0.0, 0.0, 0, shares, None, None, None, 0)
    return [*probe.to_row(), *extra]


def track_columns(labels: Sequence[str]) -> list[str]:
    """Per-track-row columns for these labels, in ``aggregator.TrackRow.to_row`` order."""
    shares = [f"share_{label.lower()}" for label in labels]
    head = ["window_start", "window_end", "source", "track", "frames_seen"]
    return [*head, *shares, "dominant_label", "attention_share"]


class _LineFile:
    """An append-only text file written one fsync'd line at a time."""

    def __init__(self, path: Path, append: bool) -> None:
        self.path = Path(path)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
        try:
            self._fd: int | None = os.open(self.path, flags, 0o644)
        except OSError as exc:
            raise OutputError(_describe(exc, self.path, "cannot open")) from exc

    def write_line(self, line: str) -> None:
        """Write `line` (newline added) in one call, then flush it to disk."""
        if self._fd is None:
            raise ValueError(f"{self.path} is closed")
        data = (line + "\n").encode("utf-8")
        try:
            written = os.write(self._fd, data)
            while written < len(data):  # only on exotic files; regular files take the whole line
                written += os.write(self._fd, data[written:])
        except OSError as exc:
            raise OutputError(_describe(exc, self.path, "cannot write")) from exc
        try:
            os.fsync(self._fd)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EROFS):  # pipes, /dev/* cannot fsync
                raise OutputError(_describe(exc, self.path, "cannot flush")) from exc

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError as exc:
                raise OutputError(_describe(exc, self.path, "cannot close")) from exc


def _describe(exc: OSError, path: Path, action: str) -> str:
    """One clear line for an OS error on an output path."""
    if exc.errno == errno.ENOSPC:
        return f"{action} {path}: disk full (no space left on device)"
    if exc.errno == errno.ENOENT and not path.parent.exists():
        return f"{action} {path}: folder {path.parent} does not exist"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"{action} {path}: permission denied"
    if exc.errno == errno.EISDIR:
        return f"{action} {path}: it is a folder, not a file"
    return f"{action} {path}: {exc.strerror or exc}"


class _RowSink:
    """Shared plumbing: a main file, an optional per-track file, context manager."""

    def __init__(self, path: Path, append: bool, per_track: bool) -> None:
        self.path = Path(path)
        self._append = append
        self._main = self._open(self.path, append)
        self._tracks: _LineFile | None = None
        if per_track:
            try:
                self._tracks = self._open(tracks_path(self.path), append, tracks=True)
            except BaseException:
                self._main.close()
                raise

    def _open(self, path: Path, append: bool, tracks: bool = False) -> _LineFile:
        return _LineFile(path, append)

    def write(self, summary: WindowSummary) -> None:
        """Write one window row."""
        self._main.write_line(self._encode(summary.to_row(), tracks=False))

    def write_tracks(self, rows: Iterable[RowLike]) -> None:
        """Write per-track rows (sink opened with ``per_track=True``)."""
        if self._tracks is None:
            raise ValueError(f"{type(self).__name__}({self.path}) was opened without per_track=True")
        for row in rows:
            self._tracks.write_line(self._encode(row.to_row(), tracks=True))

    def _encode(self, row: dict[str, object], tracks: bool) -> str:
        raise NotImplementedError

    def close(self) -> None:
        """Close the files (idempotent)."""
        try:
            self._main.close()
        finally:
            if self._tracks is not None:
                self._tracks.close()

    def __enter__(self) -> _RowSink:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class CsvSink(_RowSink):
    """CSV with a header derived from the model labels; one fsync'd line per window.

    With ``append=True`` an existing non-empty file must have exactly the same header, else
    `OutputError` says which columns differ. ``extra_columns`` follow the window-row columns (rows
    must then carry them too, e.g. the cluster mode's ``node`` and ``actor``).
    """

    def __init__(
        self, path: Path, labels: Sequence[str], append: bool = False, per_track: bool = False,
        extra_columns: Sequence[str] = (),
    ) -> None:
        self.columns = summary_columns(labels, extra_columns)
        self.track_columns = track_columns(labels)
        super().__init__(path, append, per_track)

    def _open(self, path: Path, append: bool, tracks: bool = False) -> _LineFile:
        header = self.track_columns if tracks else self.columns
        existing = read_csv_header(path) if append else None
        if existing is not None and existing != header:
            diff = _header_diff(existing, header)
            raise OutputError(f"cannot append to {path}: its header differs ({diff})")
        file = _LineFile(path, append)
        if existing is None:
            try:
                file.write_line(_csv_line(header))
            except BaseException:
                file.close()
                raise
        return file

    def _encode(self, row: dict[str, object], tracks: bool) -> str:
        expected = self.track_columns if tracks else self.columns
        if list(row) != expected:
            raise ValueError(f"row columns {list(row)} do not match this sink's header {expected}")
        return _csv_line(["" if v is None else v for v in row.values()])


class JsonlSink(_RowSink):
    """JSON Lines: one object per window with the same fields as the CSV (null for absent values)."""

    def __init__(self, path: Path, append: bool = False, per_track: bool = False) -> None:
        super().__init__(path, append, per_track)

    def _encode(self, row: dict[str, object], tracks: bool) -> str:
        return json.dumps(row, ensure_ascii=False, allow_nan=False)


def _csv_line(values: Iterable[object]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue().rstrip("\n")


def read_csv_header(path: Path) -> list[str] | None:
    """The header of an existing non-empty CSV, or None when there is none to match."""
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return None
        with open(path, newline="", encoding="utf-8") as f:
            return next(csv.reader(f), None)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise OutputError(f"cannot append to {path}: cannot read its header ({exc})") from exc


def _header_diff(existing: list[str], wanted: list[str]) -> str:
    missing = [c for c in wanted if c not in existing]
    extra = [c for c in existing if c not in wanted]
    parts = []
    if missing:
        parts.append(f"file lacks {', '.join(missing)}")
    if extra:
        parts.append(f"file has extra {', '.join(extra)}")
    if not parts:
        parts.append(f"same columns in another order: file {existing}, expected {wanted}")
    return "; ".join(parts)


def preflight(output: OutputConfig, labels: Sequence[str], extra_columns: Sequence[str] = ()) -> None:
    """Fail with OutputError when an output cannot be written; touches no file."""
    for path in output.file_paths():
        what = f"cannot write {path}"
        if path.is_dir():
            raise OutputError(f"{what}: it is a folder, not a file")
        parent = path.parent
        if not parent.is_dir():
            raise OutputError(f"{what}: folder {parent} does not exist")
        if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise OutputError(f"{what}: permission denied")
    if output.append and output.csv_path is not None:
        existing = read_csv_header(output.csv_path)
        wanted = summary_columns(labels, extra_columns)
        if existing is not None and existing != wanted:
            diff = _header_diff(existing, wanted)
            raise OutputError(f"cannot append to {output.csv_path}: its header differs ({diff})")


def open_file_sinks(
    output: OutputConfig, labels: Sequence[str], extra_columns: Sequence[str] = ()
) -> list[WindowSink]:
    """CSV and JSONL sinks for the configured paths (per-track files too with ``per_track``); CSV rows
    get ``extra_columns`` after the window-row columns."""
    sinks: list[WindowSink] = []
    try:
        if output.csv_path is not None:
            sinks.append(CsvSink(output.csv_path, labels, append=output.append, per_track=output.per_track,
                                 extra_columns=extra_columns))
        if output.jsonl_path is not None:
            sinks.append(JsonlSink(output.jsonl_path, append=output.append, per_track=output.per_track))
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    return sinks
