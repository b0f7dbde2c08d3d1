"""Every sink of one run, by role: the pipeline hands rows, per-track rows, live states and frames here.

Window rows go to the file sinks (CSV, JSONL) and the extra sinks (e.g. the console); per-track rows to
the file sinks opened with ``per_track``; live states to the sinks that show them (`LiveSink`); frames
to the annotated video, when one was asked for.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edumood_live.config import OutputConfig
from edumood_live.sinks import LiveSink, LiveState, RowLike, TrackSink, WindowSink, close_all
from edumood_live.sinks.annotate import AnnotatedVideoWriter
from edumood_live.sinks.files import open_file_sinks
from edumood_live.types import TrackedFaces, WindowSummary


class Fanout:
    """The run's sinks: `extra` ones given by the caller, and (after `open`) the configured files."""

    def __init__(self, extra: Sequence[WindowSink] = ()) -> None:
        self._extra = list(extra)
        self._files: list[WindowSink] = []
        self._video: AnnotatedVideoWriter | None = None
        self._live = [s for s in self._extra if isinstance(s, LiveSink)]
        self._tracks: list[TrackSink] = []

    def open(self, output: OutputConfig, labels: Sequence[str]) -> None:
        """Open the configured file sinks and annotated video (OutputError when one cannot be written)."""
        self._files = open_file_sinks(output, labels)
        self._tracks = [s for s in self._files if isinstance(s, TrackSink)]  # opened with per_track
        if output.annotate_path is not None:
            self._video = AnnotatedVideoWriter(output.annotate_path, labels, blur=output.blur)

    @property
    def shows_live(self) -> bool:
        """True when some sink shows live states (computing them is wasted otherwise)."""
        return bool(self._live)

    def write(self, summaries: Sequence[WindowSummary], track_rows: Sequence[RowLike] = ()) -> None:
        """Window rows to every sink, then per-track rows to the per-track files."""
        for summary in summaries:
            for sink in (*self._files, *self._extra):
                sink.write(summary)
        if track_rows:
            for track_sink in self._tracks:
                track_sink.write_tracks(track_rows)

    def update(self, state: LiveState) -> None:
        """A source's current state to the live views (they throttle their redraws)."""
        for sink in self._live:
            sink.update(state)

    def frame(self, image_bgr: np.ndarray, faces: TrackedFaces, timestamp_ms: float) -> None:
        """One processed frame to the annotated video, if any."""
        if self._video is not None:
            self._video.write(image_bgr, faces, timestamp_ms)

    def close(self) -> None:
        """Close every sink (idempotent); raises the first OutputError after closing them all."""
        sinks = [*([self._video] if self._video else []), *self._files, *self._extra]
        self._video, self._files, self._extra, self._live, self._tracks = None, [], [], [], []
        close_all(sinks)
