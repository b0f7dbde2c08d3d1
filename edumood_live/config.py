"""One run configuration combining the stage configs (picklable frozen dataclasses, no I/O).

`RunConfig` is what the CLI builds from its flags and what `Pipeline` runs; Python users build it
directly. Stage settings stay in their own frozen configs (`SourceConfig`, `DetectorConfig`,
`ClassifierConfig`, `TrackerConfig`); this module adds the window/output settings that belong to the
run as a whole. Everything is validated at construction: a `ConfigError` names the field, the value
and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edumood_live.classifier import ClassifierConfig
from edumood_live.detector import DetectorConfig
from edumood_live.errors import ConfigError
from edumood_live.sinks import tracks_path
from edumood_live.sources import SourceConfig
from edumood_live.tracker import TrackerConfig

DETECT_EVERY_AUTO = "auto"
MAX_DETECT_EVERY = 30  # a fixed K above this would leave faces unseen for too long to be useful
# containers of the annotated video: .webm is VP8, which browsers play; the others MPEG-4 Part 2 (mp4v),
# which desktop players play but browsers do not (the OpenCV wheel has no H.264 encoder)
VIDEO_SUFFIXES = (".webm", ".mp4", ".m4v", ".mov", ".avi")


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


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs.

    sources: one or more sources (a `SourceConfig` or just its spec string, e.g. ``"demo"``).
    window_s: window length in seconds of source time. min_group: windows (and the live view) with
    fewer faces than this have their per-class statistics withheld (0 = never). low_confidence: an
    observation whose top smoothed probability is below this counts as low-confidence.
    detect_every: run the detector every K-th frame (1 = every frame, exact) and carry the tracks in
    between, or ``"auto"`` to choose K from how fast the tracked boxes move. duration_s: stop after
    this many seconds of source time (files) or wall time (live sources); None = until the end.
    poll_s: how long one round of reads may wait when no source has a new frame.
    background_detection: live sources run the detector beside the frame loop, so no frame waits
    for it (capture-to-row latency stays near one classifier call; the tracker takes each detection
    at its own frame's time). False = in line, as files always are (their rows are reproducible).
    """

    sources: tuple[SourceConfig, ...] = (SourceConfig(),)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    window_s: float = 10.0
    min_group: int = 2
    low_confidence: float = 0.5
    detect_every: int | str = "auto"
    duration_s: float | None = None
    poll_s: float = 0.1
    background_detection: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", _normalise_sources(self.sources))
        _require_positive("window_s", self.window_s)
        if self.duration_s is not None:
            _require_positive("duration_s", self.duration_s, extra=" or None (until the end)")
        _require_positive("poll_s", self.poll_s)
        if isinstance(self.min_group, bool) or not isinstance(self.min_group, int) or self.min_group < 0:
            raise ConfigError(f"min_group={self.min_group!r} is not allowed; use an integer >= 0 (0 = never)")
        number = isinstance(self.low_confidence, (int, float)) and not isinstance(self.low_confidence, bool)
        if not (number and 0.0 <= self.low_confidence <= 1.0):
            raise ConfigError(f"low_confidence={self.low_confidence!r} is not allowed; use a value in [0, 1]")
        object.__setattr__(self, "detect_every", parse_detect_every(self.detect_every))
        if not isinstance(self.background_detection, bool):
            raise ConfigError(
                f"background_detection={self.background_detection!r} is not allowed; use True or False"
            )
        if self.output.annotate_path is not None and len(self.sources) > 1:
            raise ConfigError(
                f"annotate_path={str(self.output.annotate_path)!r} is not allowed with {len(self.sources)} "
                "sources; an annotated video needs exactly one source"
            )


def parse_detect_every(value: int | str) -> int | str:
    """``1..30`` or ``"auto"`` (also as text, e.g. ``"3"``); else ConfigError."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == DETECT_EVERY_AUTO:
            return DETECT_EVERY_AUTO
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


def _require_positive(name: str, value: object, extra: str = "") -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and value > 0):  # type: ignore[arg-type]
        raise ConfigError(f"{name}={value!r} is not allowed; use a finite number > 0{extra}")
