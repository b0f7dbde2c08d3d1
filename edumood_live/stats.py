"""Per-stage timings of a pipeline run, for the live view, logs and the performance benchmark.

The loop measures each frame's stages with a `StageTimer` and hands them over in one
`PipelineStats.add_frame` call; other threads read a consistent copy with `snapshot()`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace

STAGES = ("read", "detect", "classify", "track", "sinks")


@dataclass
class FrameTimes:
    """Seconds one frame spent in each stage.

    read: `Source.read` (decoding for files; waiting for the grabber for live sources). detect: the
    face detector (0 on carried frames). classify: crop + one onnxruntime call. track: tracker and
    aggregator. sinks: window rows, the live view and the annotated video.
    """

    read: float = 0.0
    detect: float = 0.0
    classify: float = 0.0
    track: float = 0.0
    sinks: float = 0.0


class StageTimer:
    """Times one frame's stages: `lap(stage)` books the time since the previous lap to `stage`."""

    def __init__(self, read_s: float = 0.0, clock: Callable[[], float] = time.perf_counter) -> None:
        self.times = FrameTimes(read=read_s)
        self._clock = clock
        self._last = clock()

    def lap(self, stage: str) -> None:
        """Book the seconds since the last lap (or the start) to `stage`."""
        now = self._clock()
        self.add(stage, now - self._last)
        self._last = now

    def add(self, stage: str, seconds: float) -> None:
        """Book `seconds` measured elsewhere (a background detection) to `stage`."""
        setattr(self.times, stage, getattr(self.times, stage) + seconds)

    def restart(self) -> None:
        """Start the next lap now (time since the last lap is booked nowhere)."""
        self._last = self._clock()


@dataclass
class PipelineStats:
    """Counters and cumulative stage seconds since the run started (all sources together).

    frames: frames processed; detected_frames: of those, frames the detector ran on; faces: face
    observations; bad_frames: frames skipped because a stage failed on them. latency: seconds from
    capture to the end of processing, live frames only (files have no capture time).
    """

    frames: int = 0
    detected_frames: int = 0
    faces: int = 0
    bad_frames: int = 0
    windows: int = 0
    read_s: float = 0.0
    detect_s: float = 0.0
    classify_s: float = 0.0
    track_s: float = 0.0
    sinks_s: float = 0.0
    wall_s: float = 0.0
    live_frames: int = 0
    latency_sum_s: float = 0.0
    latency_max_s: float = 0.0
    frames_by_source: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add_frame(
        self, source: str, times: FrameTimes, faces: int, detected: bool, latency_s: float | None
    ) -> None:
        """Account one processed frame."""
        with self._lock:
            self.frames += 1
            self.detected_frames += int(detected)
            self.faces += faces
            for stage in STAGES:
                setattr(self, f"{stage}_s", getattr(self, f"{stage}_s") + getattr(times, stage))
            self.frames_by_source[source] = self.frames_by_source.get(source, 0) + 1
            if latency_s is not None:
                self.live_frames += 1
                self.latency_sum_s += latency_s
                self.latency_max_s = max(self.latency_max_s, latency_s)

    def add(self, **counters: float) -> None:
        """Add to named counters, e.g. ``add(bad_frames=1)`` or ``add(wall_s=0.5)``."""
        with self._lock:
            for name, value in counters.items():
                setattr(self, name, getattr(self, name) + value)

    def snapshot(self) -> PipelineStats:
        """A consistent copy, safe to read while the loop runs."""
        with self._lock:
            return replace(self, frames_by_source=dict(self.frames_by_source), _lock=threading.Lock())

    def as_dict(self) -> dict[str, object]:
        """Counters, totals and per-frame milliseconds per stage (JSON-friendly)."""
        snap = self.snapshot()
        out: dict[str, object] = {f.name: getattr(snap, f.name) for f in fields(snap) if f.name != "_lock"}
        per_frame = max(snap.frames, 1)
        for stage in STAGES:
            out[f"{stage}_ms_per_frame"] = 1000.0 * getattr(snap, f"{stage}_s") / per_frame
        out["fps"] = snap.frames / snap.wall_s if snap.wall_s > 0 else 0.0
        out["latency_mean_ms"] = 1000.0 * snap.latency_sum_s / snap.live_frames if snap.live_frames else None
        out["latency_max_ms"] = 1000.0 * snap.latency_max_s if snap.live_frames else None
        return out

    def summary(self) -> str:
        """One log line: frames, fps and milliseconds per frame per stage."""
        d = self.as_dict()
        stages = ", ".join(f"{s} {d[f'{s}_ms_per_frame']:.1f}" for s in STAGES)
        return (
            f"{d['frames']} frames ({d['detected_frames']} detected) in {d['wall_s']:.1f} s = "
            f"{d['fps']:.1f} fps; ms/frame: {stages}"
        )
