"""EduMood Live: class-level engagement statistics from classroom or meeting video.

The public API is small::

    from edumood_live import Pipeline, RunConfig, OutputConfig, run

    config = RunConfig(sources=("lesson.mp4",), window_s=10, output=OutputConfig(csv_path="lesson.csv"))
    for row in Pipeline(config).run():      # WindowSummary per source and window, as windows close
        print(row.to_row())

    rows = run(config)                      # the same, to the end, as a list

    with FaceAnalyzer() as analyzer:        # faces of single images: boxes, keypoints, probabilities, facing
        faces = analyzer.analyze(cv2.imread("photo.jpg"))

Every config (`SourceConfig`, `DetectorConfig`, `ClassifierConfig`, `TrackerConfig`, `OutputConfig`,
`RunConfig`, `AnalyzerConfig`) lives in `edumood_live.config` and is re-exported here. Names are
imported lazily, so ``import edumood_live`` stays cheap (MediaPipe and onnxruntime load on first use).
"""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING

from edumood_live._lazy import lazy_exports

try:
    __version__ = metadata.version("edumood-live")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

_EXPORTS = {
    "Pipeline": "edumood_live.pipeline",
    "FaceAnalyzer": "edumood_live.analyzer",
    "Faces": "edumood_live.analyzer",
    "Face": "edumood_live.analyzer",
    "AnalyzerConfig": "edumood_live.config",
    "run": "edumood_live.pipeline",
    "RunConfig": "edumood_live.config",
    "OutputConfig": "edumood_live.config",
    "PipelineStats": "edumood_live.stats",
    "SourceConfig": "edumood_live.config",
    "DetectorConfig": "edumood_live.config",
    "ClassifierConfig": "edumood_live.config",
    "TrackerConfig": "edumood_live.config",
    "WindowSummary": "edumood_live.types",
    "WindowStatus": "edumood_live.states",
    "EduMoodError": "edumood_live.errors",
    "ConfigError": "edumood_live.errors",
    "SourceError": "edumood_live.errors",
    "ModelError": "edumood_live.errors",
    "OutputError": "edumood_live.errors",
}

__all__ = [
    "AnalyzerConfig",
    "ClassifierConfig",
    "ConfigError",
    "DetectorConfig",
    "EduMoodError",
    "Face",
    "FaceAnalyzer",
    "Faces",
    "ModelError",
    "OutputConfig",
    "OutputError",
    "Pipeline",
    "PipelineStats",
    "RunConfig",
    "SourceConfig",
    "SourceError",
    "TrackerConfig",
    "WindowStatus",
    "WindowSummary",
    "__version__",
    "run",
]

if TYPE_CHECKING:
    from edumood_live.analyzer import Face, FaceAnalyzer, Faces
    from edumood_live.config import (
        AnalyzerConfig,
        ClassifierConfig,
        DetectorConfig,
        OutputConfig,
        RunConfig,
        SourceConfig,
        TrackerConfig,
    )
    from edumood_live.errors import ConfigError, EduMoodError, ModelError, OutputError, SourceError
    from edumood_live.pipeline import Pipeline, run
    from edumood_live.states import WindowStatus
    from edumood_live.stats import PipelineStats
    from edumood_live.types import WindowSummary


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
