"""Shared pieces of the pipeline benchmarks (bench_pipeline, bench_soak): sources, probes, memory.

Everything here drives the real `Pipeline` through its public interface: sources are `Source`
subclasses handed to ``Pipeline(config, sources=...)``, probes are sinks, and the classifier is a
`TimedClassifier` handed to ``Pipeline(config, classifier=...)``: it also times the crop step (the
pipeline times crop + inference as one stage).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.fake_camera import video_fps
from edumood_live.classifier import ClassifierConfig, FaceClassifier
from edumood_live.config import OutputConfig, RunConfig
from edumood_live.detector import DetectorConfig
from edumood_live.errors import ModelError
from edumood_live.pipeline import Pipeline
from edumood_live.resources import default_classifier_path
from edumood_live.sinks import LiveState
from edumood_live.sinks.console import ConsoleSink
from edumood_live.sources import Source, SourceConfig, SourceState, SourceStats, VideoFileSource
from edumood_live.types import Frame, WindowSummary

DEV_MODEL = Path("/tmp/dev_classifier.onnx")
BUSY_PATTERNS = ("train fit", "pytest")  # other work on this machine that would skew timings


def default_model() -> Path | None:
    """The shipped classifier, else the development model in /tmp, else None."""
    try:
        return default_classifier_path()
    except ModelError:
        return DEV_MODEL if DEV_MODEL.is_file() else None


# --------------------------------------------------------------------------------------- sources


class LoopingFileSource(Source):
    """A video file replayed at full speed ``loops`` times (None: for ever) with rising timestamps,
    at most ``max_frames`` frames; each pass is a fresh `VideoFileSource`, so decoding is the real one."""

    live = False

    def __init__(self, path: Path, loops: int | None = 1, max_frames: int | None = None) -> None:
        self.name = path.name
        self._path = path
        self._loops = loops
        self._max_frames = max_frames
        self._passes = 1
        self._offset_ms = 0.0
        self._last_ts = 0.0
        self._period_ms = 1000.0 / video_fps(path)
        self._read = 0
        self._inner: VideoFileSource | None = self._open()

    def _open(self) -> VideoFileSource:
        return VideoFileSource(SourceConfig(spec=str(self._path)), self._path, name=self.name)

    @property
    def finished(self) -> bool:
        return self._inner is None

    def read(self, timeout_s: float = 1.0) -> Frame | None:
        if self._inner is None:
            return None
        if self._inner.finished:
            self._inner.close()
            if (self._loops is not None and self._passes >= self._loops) or self._read == 0:
                self._inner = None
                return None
            self._passes += 1
            self._offset_ms = self._last_ts + self._period_ms
            self._inner = self._open()
        frame = self._inner.read(timeout_s)
        if frame is None:
            return None
        self._read += 1
        self._last_ts = frame.timestamp_ms + self._offset_ms
        if self._max_frames is not None and self._read >= self._max_frames:
            self._inner.close()
            self._inner = None
        return Frame(frame.image, self._last_ts, self._read - 1, self.name)

    def stats(self) -> SourceStats:
        state = SourceState.ENDED if self.finished else SourceState.CONNECTED
        return SourceStats(frames_read=self._read, state=state)

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()
            self._inner = None


class StillSource(Source):
    """One image handed out ``frames`` times with timestamps at ``fps`` (the mosaic as a still camera)."""

    live = False

    def __init__(self, image: np.ndarray, frames: int, fps: float = 30.0, name: str = "still") -> None:
        self.name = name
        self._image = image
        self._frames = frames
        self._fps = fps
        self._read = 0

    @property
    def finished(self) -> bool:
        return self._read >= self._frames

    def read(self, timeout_s: float = 1.0) -> Frame | None:
        if self.finished:
            return None
        self._read += 1
        return Frame(self._image, (self._read - 1) * 1000.0 / self._fps, self._read - 1, self.name)

    def stats(self) -> SourceStats:
        return SourceStats(
            frames_read=self._read, state=SourceState.ENDED if self.finished else SourceState.CONNECTED
        )

    def close(self) -> None:
        self._read = self._frames


class ProbedSource(Source):
    """Forwards to a source and remembers the timestamp of the frame just read (for `LatencyProbe`)."""

    def __init__(self, inner: Source) -> None:
        self.inner = inner
        self.name = inner.name
        self.live = inner.live
        self.pending_ts: float | None = None

    @property
    def finished(self) -> bool:
        return self.inner.finished

    def read(self, timeout_s: float = 1.0) -> Frame | None:
        frame = self.inner.read(timeout_s)
        if frame is not None:
            self.pending_ts = frame.timestamp_ms
        return frame

    def stats(self) -> SourceStats:
        return self.inner.stats()

    def close(self) -> None:
        self.inner.close()


@dataclass
class LatencyProbe:
    """A live + window sink: capture-to-processed latency per frame, and row latency per window.

    The pipeline calls `update` right after a frame went through tracker and aggregator; the live
    source stamps each frame with its capture time (monotonic ms). A window row's latency is the wall
    time of its `write` minus the window's end.
    """

    source: ProbedSource
    frame_ms: list[float] = field(default_factory=list)
    row_ms: list[float] = field(default_factory=list)
    rows: list[WindowSummary] = field(default_factory=list)

    def update(self, state: LiveState) -> None:
        if self.source.pending_ts is not None:
            self.frame_ms.append(time.monotonic() * 1000.0 - self.source.pending_ts)
            self.source.pending_ts = None

    def write(self, summary: WindowSummary) -> None:
        self.rows.append(summary)
        if summary.status in ("ok", "suppressed"):
            end = datetime.fromisoformat(summary.window_end_utc.replace("Z", "+00:00"))
            self.row_ms.append((datetime.now(UTC) - end).total_seconds() * 1000.0)

    def close(self) -> None:
        pass


def quiet_console_sink() -> ConsoleSink:
    """The real live view, drawn to /dev/null (its cost is measured without a terminal).

    Not into a StringIO: that buffer keeps every frame drawn and reads as a memory leak in the soak.
    """
    from rich.console import Console

    return ConsoleSink(Console(file=open(os.devnull, "w"), force_terminal=True, width=120))  # noqa: SIM115


# --------------------------------------------------------------------------------------- timing


class TimedClassifier(FaceClassifier):
    """`FaceClassifier` that also adds up the seconds spent in `preprocess` (crop, resize, normalise)."""

    def __init__(self, config: ClassifierConfig | None = None) -> None:
        super().__init__(config)
        self.preprocess_s = 0.0

    def preprocess(
        self, image_bgr: np.ndarray, boxes: np.ndarray, out: np.ndarray | None = None
    ) -> np.ndarray:
        t0 = time.perf_counter()
        try:
            return super().preprocess(image_bgr, boxes, out)
        finally:
            self.preprocess_s += time.perf_counter() - t0


@dataclass(frozen=True)
class Setup:
    """One pipeline configuration under test."""

    name: str
    detect_every: int | str = 1
    workers: int = 1
    threads: int = 1
    tiles: str = "auto"
    min_face: int = 32
    spinning: bool = False
    whole_frame: bool = True
    background: bool = True  # live sources: detector beside the frame loop (RunConfig.background_detection)

    def describe(self) -> dict[str, Any]:
        return {
            "setup": self.name,
            "K": self.detect_every,
            "workers": self.workers,
            "threads": self.threads,
            "tiles": self.tiles,
            "min_face": self.min_face,
            "spinning": self.spinning,
            "background": self.background,
        }


def run_config(
    setup: Setup, model: Path, spec: str, out_dir: Path, window_s: float, duration_s: float | None = None
) -> RunConfig:
    """The RunConfig of a setup, writing CSV + JSONL rows under ``out_dir`` (sinks are part of the cost)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{setup.name}-{Path(spec).stem}".replace("/", "_")
    return RunConfig(
        sources=(SourceConfig(spec=spec),),
        detector=DetectorConfig(
            tiles=setup.tiles,
            min_face_px=setup.min_face,
            workers=setup.workers,
            whole_frame=setup.whole_frame,
        ),
        classifier=ClassifierConfig(
            model_path=model, device="cpu", intra_op_threads=setup.threads, allow_spinning=setup.spinning
        ),
        output=OutputConfig(csv_path=out_dir / f"{stem}.csv", jsonl_path=out_dir / f"{stem}.jsonl"),
        window_s=window_s,
        detect_every=setup.detect_every,
        duration_s=duration_s,
        min_group=0,
        background_detection=setup.background,
    )


def run_pipeline(
    config: RunConfig, source: Source, source_fps: float, console: bool = True
) -> dict[str, Any]:
    """Run one pipeline over ``source`` to its end (or the config's duration); stage ms/frame and more."""
    probed = ProbedSource(source)
    probe = LatencyProbe(probed)
    sinks: list[Any] = [probe] + ([quiet_console_sink()] if console else [])
    reset_peak_rss()
    cpu0 = time.process_time()
    timed = TimedClassifier(config.classifier)
    pipeline = Pipeline(config, sinks=sinks, sources=[probed], classifier=timed)
    stats_source = probed.inner
    for _ in pipeline.run():
        pass
    crop_s = timed.preprocess_s
    cpu_s = time.process_time() - cpu0
    d = pipeline.stats.as_dict()
    frames = max(int(d["frames"]), 1)
    ms = {
        "decode": d["read_ms_per_frame"],
        "detect": d["detect_ms_per_frame"],
        "crop": 1000.0 * crop_s / frames,
        "classify": d["classify_ms_per_frame"] - 1000.0 * crop_s / frames,
        "track_aggregate": d["track_ms_per_frame"],
        "sinks": 1000.0 * float(d["sinks_s"]) / frames,  # live view per frame + window rows, all sinks
    }
    wall_ms = 1000.0 * float(d["wall_s"]) / frames
    ms["other"] = max(wall_ms - sum(ms.values()), 0.0)
    fps = float(d["fps"])
    src_stats = stats_source.stats()
    result: dict[str, Any] = {
        "frames": int(d["frames"]),
        "detected_frames": int(d["detected_frames"]),
        "wall_s": float(d["wall_s"]),
        "fps": fps,
        "x_realtime": fps / source_fps if source_fps else None,
        "faces_per_frame": float(d["faces"]) / frames,
        "ms": ms,
        "ms_total": wall_ms,
        "cpu_ms_per_frame": 1000.0 * cpu_s / frames,  # all threads of this process: the work itself
        "load_1m_after": os.getloadavg()[0],
        "dropped": src_stats.frames_dropped,
        "rows": len(probe.rows),
        "peak_rss_mb": peak_rss_mb(),
        "rss_mb": rss_mb(),
    }
    if source.live:
        result["latency_frame_ms"] = summarize(probe.frame_ms)
        result["latency_row_ms"] = summarize(probe.row_ms)
        result["source_frames"] = src_stats.frames_read + src_stats.frames_dropped
    return result


def summarize(values: Sequence[float]) -> dict[str, float | None]:
    """Mean, median, 95th percentile and max (None when empty)."""
    if not values:
        return {"n": 0, "mean": None, "p50": None, "p95": None, "max": None}
    arr = np.asarray(values, np.float64)
    return {
        "n": len(arr),
        "mean": float(arr.mean()),
        "p50": float(np.percentile(arr, 50)),
        "p95": float(np.percentile(arr, 95)),
        "max": float(arr.max()),
    }


# --------------------------------------------------------------------------------------- machine


def _status_kb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def rss_mb() -> float | None:
    """Resident memory of this process now (MB)."""
    kb = _status_kb("VmRSS")
    return None if kb is None else kb / 1024.0


def peak_rss_mb() -> float | None:
    """Peak resident memory since the last `reset_peak_rss` (Linux VmHWM), else since start (ru_maxrss)."""
    kb = _status_kb("VmHWM")
    if kb is None:
        import resource

        kb = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return kb / 1024.0


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark for this process (``echo 5 > /proc/self/clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def machine_extra() -> dict[str, Any]:
    """Memory size and the other heavy work running now (what `bench_detection.machine` leaves out)."""
    total_kb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                total_kb = float(line.split()[1])
    except OSError:
        pass
    return {
        "memory_gb": None if total_kb is None else round(total_kb / 2**20, 1),
        "gpu": "none used (CPU only)",
        "busy_at_start": busy_processes(),
    }


def busy_processes(min_cpu_percent: float = 10.0) -> list[str]:
    """Other processes using CPU now (``ps`` %CPU over their lifetime >= ``min_cpu_percent``, or named
    like training or test runs), as "pid %cpu command", for the report: timings mean little without it."""
    try:
        out = subprocess.run(
            ["ps", "-eo", "pid=,ppid=,pcpu=,args="], capture_output=True, text=True, timeout=5
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    me = os.getpid()
    found = []
    for line in out.splitlines():
        parts = line.split(None, 3)
        if len(parts) < 4 or me in (int(parts[0]), int(parts[1])) or parts[3].startswith("ps "):
            continue
        named = any(p in parts[3] for p in BUSY_PATTERNS)
        if float(parts[2]) >= min_cpu_percent or named:
            found.append(f"{parts[0]} {parts[2]}% {parts[3][:100]}")
    return found


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
