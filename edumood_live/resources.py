"""Locations of the files shipped inside the package: detector and classifier models, the demo clip.

The models live in the top-level ``models/`` folder, installed as the package ``edumood_live.models``;
the demo clip lives in ``edumood_live.assets``. Nothing is ever downloaded.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from edumood_live.errors import ModelError, SourceError

MODELS_PACKAGE = "edumood_live.models"
ASSETS_PACKAGE = "edumood_live.assets"
DETECTOR_FILE = "face_detection_full_range_sparse.tflite"
CLASSIFIER_FILE = "edumood_classifier.onnx"
# Shipped classifiers by name (models/MODEL_CARD.md): the most accurate one is the default; "fast" is
# about 4x cheaper per face and somewhat less accurate.
SHIPPED_CLASSIFIERS = {"default": CLASSIFIER_FILE, "fast": "edumood_classifier_fast.onnx"}
DEMO_CLIP_FILE = "sample_clip.mp4"


def _packaged_file(package: str, name: str) -> Path | None:
    """Path of ``name`` inside ``package``, or None when the package or the file is absent."""
    try:
        root = resources.files(package)
    except ModuleNotFoundError:
        return None
    path = Path(str(root.joinpath(name)))
    return path if path.is_file() else None


def default_detector_path() -> Path:
    """The shipped BlazeFace full-range (sparse) face detector model."""
    path = _packaged_file(MODELS_PACKAGE, DETECTOR_FILE)
    if path is None:
        raise ModelError(
            f"shipped face detector model {DETECTOR_FILE} not found in package {MODELS_PACKAGE}; "
            "reinstall edumood-live or pass a model path"
        )
    return path


def default_classifier_path() -> Path:
    """The shipped ONNX expression classifier."""
    return shipped_classifier_path("default")


def shipped_classifier_path(name: str) -> Path:
    """A shipped classifier by name (`SHIPPED_CLASSIFIERS`)."""
    if name not in SHIPPED_CLASSIFIERS:
        raise ModelError(f"no shipped classifier is called {name!r}; use one of {', '.join(SHIPPED_CLASSIFIERS)}")
    path = _packaged_file(MODELS_PACKAGE, SHIPPED_CLASSIFIERS[name])
    if path is None:
        raise ModelError(
            f"shipped classifier model {SHIPPED_CLASSIFIERS[name]} not found in package {MODELS_PACKAGE}; "
            "reinstall edumood-live or pass --model PATH"
        )
    return path


def classifier_path(model: str | Path | None) -> Path:
    """A classifier given as None (the default), a shipped name (``"fast"``) or a file path."""
    if model is None or model == "":
        return default_classifier_path()
    if isinstance(model, str) and model in SHIPPED_CLASSIFIERS:
        return shipped_classifier_path(model)
    return Path(model)


def demo_clip_path() -> Path:
    """The bundled sample clip used by ``--source demo`` (480x270, 3 faces)."""
    path = _packaged_file(ASSETS_PACKAGE, DEMO_CLIP_FILE)
    if path is None:
        raise SourceError(
            f"bundled demo clip {DEMO_CLIP_FILE} not found in package {ASSETS_PACKAGE}; "
            "reinstall edumood-live"
        )
    return path
