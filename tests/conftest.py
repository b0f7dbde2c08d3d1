"""Shared fixtures: real media (bundled clip, dlib photos), the shipped model, small ONNX classifiers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from benchmarks.mosaic import AnnotatedImage, load_dlib_faces

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(__file__).resolve().parents[2] / "shared"

DEV_LABELS = ["Angry", "Neutral", "Engaged", "Bored"]


# ---------------------------------------------------------------- media


@pytest.fixture(scope="session")
def demo_frames() -> list[np.ndarray]:
    """All frames (BGR) of the bundled sample clip, decoded with OpenCV."""
    from edumood_live.resources import demo_clip_path

    capture = cv2.VideoCapture(str(demo_clip_path()))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert frames, "the bundled sample clip decoded to no frames"
    return frames


@pytest.fixture(scope="session")
def dlib_faces() -> list[AnnotatedImage]:
    """The 9 annotated dlib example photos (43 faces) from ../shared/media/faces_dlib."""
    folder = SHARED_DIR / "media" / "faces_dlib"
    if not (folder / "training.xml").is_file():
        pytest.skip(f"annotated face photos not available at {folder} (../shared is absent)")
    return load_dlib_faces(folder)


# ---------------------------------------------------------------- classifier models


@pytest.fixture(scope="session")
def classifier_path() -> Path:
    """The shipped classifier; skips while it has not been trained and exported yet."""
    from edumood_live.errors import ModelError
    from edumood_live.resources import default_classifier_path

    try:
        return default_classifier_path()
    except ModelError as exc:
        pytest.skip(f"shipped classifier not available yet: {exc}")


def build_onnx_classifier(
    path: Path,
    *,
    labels: list[str] | None = None,
    input_size: tuple[int, int] = (64, 64),
    channels: int = 1,
    weights: np.ndarray | None = None,
    metadata: dict[str, Any] | None = None,
    drop_keys: tuple[str, ...] = (),
) -> Path:
    """Write a tiny ONNX classifier: GlobalAveragePool -> Flatten -> MatMul(weights (C, K)).

    Each logit is a weighted sum of the per-channel means of the normalised input, so outputs are
    predictable. ``metadata`` entries override the defaults (values that are not strings are
    JSON-encoded); ``drop_keys`` removes keys, to test the metadata contract.
    """
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    labels = DEV_LABELS if labels is None else labels
    if weights is None:
        weights = np.zeros((channels, len(labels)), np.float32)
        weights[:, 0] = 1.0
    h, w = input_size
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "weights"], ["logits"]),
        ],
        "tiny_classifier",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", channels, h, w])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", weights.shape[1]])],
        [numpy_helper.from_array(weights.astype(np.float32), "weights")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    values: dict[str, Any] = {
        "labels": labels,
        "input_size": [h, w],
        "channels": channels,
        "mean": [0.5] * channels,
        "std": [0.5] * channels,
        "model_name": "tiny-test-classifier",
        "version": "0.0.0-test",
        "trained_on": {"datasets": [], "note": "untrained, built by tests/conftest.py"},
        "metrics": {},
        **(metadata or {}),
    }
    for key, value in values.items():
        if key not in drop_keys:
            text = value if isinstance(value, str) else json.dumps(value)
            model.metadata_props.add(key=key, value=text)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def onnx_classifier_factory(tmp_path: Path) -> Callable[..., Path]:
    """``factory(name="m.onnx", **build_onnx_classifier kwargs) -> Path`` of a tiny model in tmp_path."""

    def factory(name: str = "tiny.onnx", **kwargs: Any) -> Path:
        return build_onnx_classifier(tmp_path / name, **kwargs)

    return factory


@pytest.fixture(scope="session")
def tiny_classifier_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid 4-label, 1x64x64 model honouring the metadata contract (for pipeline-level tests)."""
    return build_onnx_classifier(tmp_path_factory.mktemp("models") / "tiny_classifier.onnx")
