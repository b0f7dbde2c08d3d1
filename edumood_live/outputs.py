"""The pipeline's outputs: checking paths before a run, opening the file sinks, the annotated video.

Output paths are checked (`preflight`) before anything is opened, so a typo fails at once and an
existing file is never truncated by a run that cannot start. Nothing here writes pixels except
`AnnotationOutput`, which exists only when an annotated video was asked for.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from edumood_live.annotate import AnnotatedVideoWriter
from edumood_live.config import OutputConfig
from edumood_live.console import LiveState
from edumood_live.errors import OutputError
from edumood_live.sinks import CsvSink, JsonlSink, RowLike, summary_columns
from edumood_live.types import TrackedFaces, WindowSummary

logger = logging.getLogger(__name__)

DEFAULT_VIDEO_FPS = 10.0  # annotated video of a source that yielded a single frame
MAX_VIDEO_FPS = 120.0


@runtime_checkable
class WindowSink(Protocol):
    """Receives every closed window (``write``) and is closed at the end of the run."""

    def write(self, summary: WindowSummary) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class LiveSink(Protocol):
    """A sink that also shows the current state of a source, e.g. `console.ConsoleSink`."""

    def update(self, state: LiveState) -> None: ...


@runtime_checkable
class TrackSink(Protocol):
    """A sink that also takes anonymous per-track rows (file sinks opened with ``per_track``)."""

    def write_tracks(self, rows: Sequence[RowLike]) -> None: ...


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
        existing = _csv_header(output.csv_path)
        wanted = summary_columns(labels, extra_columns)
        if existing is not None and existing != wanted:
            missing = [c for c in wanted if c not in existing]
            extra = [c for c in existing if c not in wanted]
            diff = f"file lacks {missing}, has extra {extra}" if missing or extra else "another column order"
            raise OutputError(f"cannot append to {output.csv_path}: its header differs ({diff})")


def _csv_header(path: Path) -> list[str] | None:
    """The header of an existing non-empty CSV; None when there is none."""
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return None
        with open(path, newline="", encoding="utf-8") as f:
            return next(csv.reader(f), None)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise OutputError(f"cannot append to {path}: cannot read its header ({exc})") from exc


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


class AnnotationOutput:
    """The annotated video of one source: boxes, anonymous ids, labels; faces blurred unless blur=False.

    The video's frame rate comes from the first two frame timestamps, so the writer opens at the second
    frame (the first is held until then).
    """

    def __init__(self, path: Path, labels: Sequence[str], blur: bool = True) -> None:
        self.path = Path(path)
        self.labels = tuple(labels)
        self.blur = blur
        self._writer: AnnotatedVideoWriter | None = None
        self._held: tuple[np.ndarray, TrackedFaces, float] | None = None

    def write(self, image_bgr: np.ndarray, faces: TrackedFaces, timestamp_ms: float) -> None:
        """Add one frame (the image is not modified)."""
        if self._writer is None:
            if self._held is None:
                self._held = (image_bgr, faces, timestamp_ms)
                return
            step_ms = timestamp_ms - self._held[2]
            fps = 1000.0 / step_ms if step_ms > 0 else DEFAULT_VIDEO_FPS
            self._open(min(max(fps, 1.0), MAX_VIDEO_FPS))
        assert self._writer is not None
        self._writer.write(image_bgr, faces, self.labels)

    def _open(self, fps: float) -> None:
        self._writer = AnnotatedVideoWriter(self.path, fps, blur=self.blur)
        if self._held is not None:
            image, faces, _ = self._held
            self._held = None
            self._writer.write(image, faces, self.labels)

    def close(self) -> None:
        """Write what is held and finish the file."""
        if self._writer is None and self._held is not None:
            self._open(DEFAULT_VIDEO_FPS)
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()
            logger.info("annotated video written to %s (%d frames, faces %s)", self.path,
                        writer.frames_written, "blurred" if self.blur else "NOT blurred")


def close_all(sinks: Sequence[object]) -> None:
    """Close every sink even when some fail; raise the first OutputError afterwards."""
    first: BaseException | None = None
    for sink in sinks:
        close = getattr(sink, "close", None)
        if close is None:
            continue
        try:
            close()
        except OutputError as exc:
            first = first or exc
        except Exception:  # a broken third-party sink must not keep the files from being closed
            logger.exception("closing %r failed", sink)
    if first is not None:
        raise first
