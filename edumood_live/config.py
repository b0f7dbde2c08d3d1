"""Every configuration of a run: picklable frozen dataclasses, validated at construction, no I/O.

`RunConfig` combines the stage configs (`SourceConfig`, `DetectorConfig`, `ClassifierConfig`,
`TrackerConfig`, `OutputConfig`); the CLI builds it from its flags (and takes its defaults from here),
Python users build it directly. Importing this module costs nothing but the standard library: no
MediaPipe, onnxruntime or OpenCV (the cluster driver and the CLI's argument parsing rely on that).
A `ConfigError` names the field, the value and what is allowed (`edumood_live.validation`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from edumood_live.errors import ConfigError
from edumood_live.validation import require_bool, require_choice, require_number


class Auto(str, Enum):
    """The one non-numeric choice of ``tiles`` and ``detect_every``: let the run decide."""

    AUTO = "auto"

    def __str__(self) -> str:
        return self.value


AUTO = Auto.AUTO
MAX_DETECT_EVERY = 30  # a fixed K above this would leave faces unseen for too long to be useful
# containers of the annotated video: .webm is VP8, which browsers play; the others MPEG-4 Part 2 (mp4v),
# which desktop players play but browsers do not (the OpenCV wheel has no H.264 encoder)
VIDEO_SUFFIXES = (".webm", ".mp4", ".m4v", ".mov", ".avi")
_GRID_RE = re.compile(r"^([1-9][0-9]?)x([1-9][0-9]?)$")


class Device(str, Enum):
    """Where onnxruntime runs the classifier."""

    AUTO = "auto"  # CUDA when onnxruntime offers it, else CPU
    CPU = "cpu"
    CUDA = "cuda"


class Signal(str, Enum):
    """What a run infers from each face."""

    EXPRESSIONS = "expressions"  # the expression classifier: class shares, engagement index
    ATTENTION = "attention"  # head orientation from the detector's keypoints: attention share


ALL_SIGNALS = (Signal.EXPRESSIONS, Signal.ATTENTION)


class _ChosenSignals:
    """``expressions`` / ``attention`` of a config that holds a parsed ``signals`` tuple."""

    signals: tuple[Signal, ...] | str

    @property
    def expressions(self) -> bool:
        """Whether the expression classifier runs (class shares, labels, probabilities)."""
        return Signal.EXPRESSIONS in self.signals

    @property
    def attention(self) -> bool:
        """Whether head orientation is measured (attention share, head angles, facing scores)."""
        return Signal.ATTENTION in self.signals


def parse_signals(value: Sequence[Signal | str] | str) -> tuple[Signal, ...]:
    """``"expressions,attention"``, ``"attention"``, ... or a sequence of `Signal`: a non-empty tuple in
    `ALL_SIGNALS` order; else ConfigError."""
    items = value.split(",") if isinstance(value, str) else list(value)
    allowed = ", ".join(repr(s.value) for s in Signal)
    chosen = set()
    for item in items:
        text = item.value if isinstance(item, Signal) else str(item).strip().lower()
        if text not in {s.value for s in Signal}:
            raise ConfigError(f"signals={value!r} is not allowed; use one or more of {allowed}, comma-separated")
        chosen.add(Signal(text))
    if not chosen:
        raise ConfigError(f"signals={value!r} is not allowed; name at least one of {allowed}")
    return tuple(s for s in ALL_SIGNALS if s in chosen)


class PadMode(str, Enum):
    """How a crop reaching outside the frame is filled."""

    EDGE = "edge"  # replicate the border pixels
    ZEROS = "zeros"


# ----------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class SourceConfig:
    """How to open and read one source. Timeouts, watchdog and backoff apply to live sources only."""

    spec: str = "webcam"
    stride: int = 1  # files/folders: hand out every stride-th frame
    max_fps: float | None = None  # files: replay no faster than this; live: drop frames above it
    open_timeout_s: float = 10.0
    read_timeout_s: float = 5.0
    watchdog_s: float = 10.0  # live: no frame for this long -> drop the connection and reconnect
    max_retries: int | None = None  # live: reconnect attempts after a loss; None = forever
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    folder_fps: float = 1.0  # image folders: timestamps are index * 1000 / folder_fps

    def __post_init__(self) -> None:
        if not isinstance(self.spec, str) or not self.spec.strip():
            raise ConfigError(
                f"spec={self.spec!r} is not allowed; expected 'webcam', a camera index, rtsp://..., "
                "http(s)://..., a video file, a folder of images or 'demo'"
            )
        require_number("stride", self.stride, 1, integer=True)
        require_number("max_retries", self.max_retries, 0, integer=True, none_ok=True)
        require_number("max_fps", self.max_fps, 0, low_open=True, none_ok=True)
        for name in ("open_timeout_s", "read_timeout_s", "watchdog_s", "backoff_initial_s",
                     "backoff_max_s", "folder_fps"):
            require_number(name, getattr(self, name), 0, low_open=True)
        if self.backoff_max_s < self.backoff_initial_s:
            raise ConfigError(
                f"backoff_max_s={self.backoff_max_s!r} is not allowed; it must be >= "
                f"backoff_initial_s ({self.backoff_initial_s!r})"
            )


# ----------------------------------------------------------------------------- detector


def parse_grid(tiles: str) -> tuple[int, int] | None:
    """``"CxR"`` (columns x rows, like W x H) -> (rows, cols); ``"auto"`` -> None; else ConfigError."""
    if tiles == AUTO:
        return None
    match = _GRID_RE.match(tiles) if isinstance(tiles, str) else None
    if match is None:
        raise ConfigError(
            f"tiles={tiles!r} is not allowed; use 'auto' or 'CxR' (columns x rows, each 1..99), e.g. '4x3'"
        )
    return int(match.group(2)), int(match.group(1))


@dataclass(frozen=True)
class DetectorConfig:
    """Settings of `detector.FaceDetector`."""

    model_path: Path | None = None  # None = shipped full-range model
    min_confidence: float = 0.5
    tiles: Auto | str = AUTO  # AUTO (from frame size and min_face_px) or "CxR" (columns x rows), e.g. "4x3"
    min_face_px: int = 32  # smallest face width to find; drives tiles=AUTO
    # Fraction of a tile shared with its neighbour. 0.15 rather than 0.25: on six layouts of the 43-face
    # mosaic, auto tiling found >= 42 faces either way, with 19 instead of 25 regions (benchmarks/README.md).
    tile_overlap: float = 0.15
    nms_iou: float = 0.3  # boxes from different tiles overlapping more than this are one face
    workers: int = 2  # detector instances running tiles in parallel threads (2 cores: about 1.7x faster)
    whole_frame: bool = True  # also run the model on the whole frame when tiling (faces bigger than a tile)

    def __post_init__(self) -> None:
        require_number("min_confidence", self.min_confidence, 0, 1, low_open=True, high_open=True)
        if parse_grid(self.tiles) is None:
            object.__setattr__(self, "tiles", AUTO)
        require_number("min_face_px", self.min_face_px, 8, 4096, integer=True)
        require_number("tile_overlap", self.tile_overlap, 0, 0.5)
        require_number("nms_iou", self.nms_iou, 0, 1, low_open=True)
        require_number("workers", self.workers, 1, 32, integer=True)
        require_bool("whole_frame", self.whole_frame)


# ----------------------------------------------------------------------------- classifier


@dataclass(frozen=True)
class ClassifierConfig:
    """Settings of `classifier.FaceClassifier`."""

    model_path: Path | str | None = None  # None = the shipped default; "fast" = the shipped fast model
    device: Device | str = Device.AUTO
    intra_op_threads: int = 2  # onnxruntime threads; the detector is idle while it runs (benchmarks/README.md)
    # Let onnxruntime's idle pool threads spin (busy-wait) for work: off, because a spinning thread
    # takes a core from the detector between classifier calls (benchmarks/README.md measures it).
    allow_spinning: bool = False
    # Override the model's own crop (its `crop` metadata; `classifier.CropSpec`). None = as the model was
    # trained, which is what its accuracy figures assume; an override is for experiments only.
    crop_margin: float | None = None
    pad_mode: PadMode | str | None = None
    # Average each face's probabilities with its mirror image's (one batch of 2N): steadier, twice the
    # classifier cost (models/MODEL_CARD.md has what it buys).
    flip_average: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", require_choice("device", self.device, Device))
        if self.pad_mode is not None:
            object.__setattr__(self, "pad_mode", require_choice("pad_mode", self.pad_mode, PadMode))
        require_number("intra_op_threads", self.intra_op_threads, 1, 64, integer=True)
        require_bool("flip_average", self.flip_average)
        require_bool("allow_spinning", self.allow_spinning)
        require_number("crop_margin", self.crop_margin, 0, 1, none_ok=True)


# ----------------------------------------------------------------------------- tracker


@dataclass(frozen=True)
class TrackerConfig:
    """Settings of `tracker.Tracker`.

    iou_threshold: minimum IoU between a track's predicted box and a detection to associate them.
    max_age_ms: a track not matched by the detector for longer than this is dropped; keep it above the
        detection interval (detect-every-K frame period) so tracks survive the frames in between.
    smoothing_half_life_ms: half-life of the exponential moving average of class probabilities, in
        source time, so smoothing does not depend on the frame rate; 0 disables smoothing.
    min_hits: detector matches a new track needs before it is reported (1 = report at once).
    """

    iou_threshold: float = 0.3
    max_age_ms: float = 1000.0
    smoothing_half_life_ms: float = 500.0
    min_hits: int = 1

    def __post_init__(self) -> None:
        require_number("iou_threshold", self.iou_threshold, 0, 1, low_open=True)
        require_number("max_age_ms", self.max_age_ms, 0, low_open=True)
        require_number("smoothing_half_life_ms", self.smoothing_half_life_ms, 0, extra=" (0 = no smoothing)")
        require_number("min_hits", self.min_hits, 1, integer=True)


# ----------------------------------------------------------------------------- outputs


def tracks_path(path: Path) -> Path:
    """Where per-track rows for `path` go: ``lesson.csv`` -> ``lesson.tracks.csv``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.tracks{path.suffix}")


@dataclass(frozen=True)
class OutputConfig:
    """Where results go. Nothing is written unless a path is given; faces only with `annotate_path`.

    csv_path / jsonl_path: one row per source and window. append: append to existing files (a CSV
    must have the same header). per_track: also write anonymous per-track rows next to each file
    (``out.csv`` -> ``out.tracks.csv``). annotate_path: annotated video (one source only), faces
    blurred unless ``blur=False``.
    """

    csv_path: Path | None = None
    jsonl_path: Path | None = None
    append: bool = False
    per_track: bool = False
    annotate_path: Path | None = None
    blur: bool = True

    def __post_init__(self) -> None:
        for name in ("csv_path", "jsonl_path", "annotate_path"):
            value = getattr(self, name)
            if value is not None:
                if not str(value).strip():
                    raise ConfigError(f"{name}={value!r} is not allowed; give a file path or None")
                object.__setattr__(self, name, Path(value).expanduser())
        if self.annotate_path is not None and self.annotate_path.suffix.lower() not in VIDEO_SUFFIXES:
            raise ConfigError(
                f"annotate_path={str(self.annotate_path)!r} is not allowed; use a video file name ending in "
                + ", ".join(VIDEO_SUFFIXES)
            )
        paths = [p.resolve() for p in self.file_paths()]
        if len(set(paths)) != len(paths):
            raise ConfigError(
                f"output paths {[str(p) for p in self.file_paths()]} are not allowed; each output needs its "
                "own file"
            )

    def file_paths(self) -> list[Path]:
        """Every file this configuration writes, per-track files included."""
        paths: list[Path] = []
        for path in (self.csv_path, self.jsonl_path):
            if path is not None:
                paths.append(path)
                if self.per_track:
                    paths.append(tracks_path(path))
        if self.annotate_path is not None:
            paths.append(self.annotate_path)
        return paths

    @property
    def writes_rows(self) -> bool:
        """True when window rows go to at least one file."""
        return self.csv_path is not None or self.jsonl_path is not None


# ----------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class RunConfig(_ChosenSignals):
    """Everything one run needs.

    sources: one or more sources (a `SourceConfig` or just its spec string, e.g. ``"demo"``).
    window_s: window length in seconds of source time. min_group: windows (and the live view) with
    fewer faces than this have their per-class statistics withheld (0 = never). low_confidence: an
    observation whose top smoothed probability is below this counts as low-confidence.
    detect_every: run the detector every K-th frame (1 = every frame, exact) and carry the tracks in
    between, or `AUTO` (also ``"auto"``) to choose K from how fast the tracked boxes move. duration_s:
    stop after this many seconds of source time (files) or wall time (live sources); None = until the end.
    poll_s: how long one round of reads may wait when no source has a new frame.
    background_detection: live sources run the detector beside the frame loop, so no frame waits
    for it (capture-to-row latency stays near one classifier call; the tracker takes each detection
    at its own frame's time). False = in line, as files always are (their rows are reproducible).
    signals: what to infer (`Signal`, also ``"expressions,attention"``): without EXPRESSIONS no
    expression classifier is loaded or run, and rows have no class shares; without ATTENTION the
    rows' ``attention_share`` stays empty.
    """

    sources: tuple[SourceConfig, ...] = (SourceConfig(),)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    window_s: float = 10.0
    min_group: int = 2
    low_confidence: float = 0.5
    detect_every: int | Auto | str = AUTO
    duration_s: float | None = None
    poll_s: float = 0.1
    background_detection: bool = True
    signals: tuple[Signal, ...] | str = ALL_SIGNALS

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", _normalise_sources(self.sources))
        object.__setattr__(self, "signals", parse_signals(self.signals))
        require_number("window_s", self.window_s, 0, low_open=True)
        require_number("duration_s", self.duration_s, 0, low_open=True, none_ok=True, extra=" (until the end)")
        require_number("poll_s", self.poll_s, 0, low_open=True)
        require_number("min_group", self.min_group, 0, integer=True, extra=" (0 = never)")
        require_number("low_confidence", self.low_confidence, 0, 1)
        object.__setattr__(self, "detect_every", parse_detect_every(self.detect_every))
        require_bool("background_detection", self.background_detection)
        if self.output.annotate_path is not None and len(self.sources) > 1:
            raise ConfigError(
                f"annotate_path={str(self.output.annotate_path)!r} is not allowed with {len(self.sources)} "
                "sources; an annotated video needs exactly one source"
            )


def parse_detect_every(value: int | Auto | str) -> int | Auto:
    """``1..30`` or `AUTO` (also as text, e.g. ``"auto"`` or ``"3"``); else ConfigError."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == AUTO:
            return AUTO
        value = int(text) if text.isdigit() else value
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DETECT_EVERY:
        raise ConfigError(
            f"detect_every={value!r} is not allowed; use an integer in 1..{MAX_DETECT_EVERY} or 'auto'"
        )
    return value


def _normalise_sources(
    sources: Sequence[SourceConfig | str] | SourceConfig | str,
) -> tuple[SourceConfig, ...]:
    if isinstance(sources, (SourceConfig, str)):
        sources = (sources,)
    try:
        result = tuple(s if isinstance(s, SourceConfig) else SourceConfig(spec=s) for s in sources)
    except TypeError:
        raise ConfigError(f"sources={sources!r} is not allowed; give SourceConfig objects or specs") from None
    if not result:
        raise ConfigError("sources=() is not allowed; give at least one source (e.g. 'webcam' or 'demo')")
    return result


# ----------------------------------------------------------------------------- single images


@dataclass(frozen=True)
class AnalyzerConfig(_ChosenSignals):
    """Settings of `analyzer.FaceAnalyzer` (faces of single images): the run's own detector and classifier
    settings, so an image is analysed exactly as the live pipeline sees a frame. ``signals`` as in
    `RunConfig`: without EXPRESSIONS no classifier is loaded (no labels, no probabilities); without
    ATTENTION the head angles and facing scores are NaN (unknown)."""

    detector: DetectorConfig = field(default_factory=DetectorConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    signals: tuple[Signal, ...] | str = ALL_SIGNALS

    def __post_init__(self) -> None:
        for name, kind in (("detector", DetectorConfig), ("classifier", ClassifierConfig)):
            value = getattr(self, name)
            if not isinstance(value, kind):
                raise ConfigError(f"{name}={value!r} is not allowed; use a {kind.__name__}")
        object.__setattr__(self, "signals", parse_signals(self.signals))
