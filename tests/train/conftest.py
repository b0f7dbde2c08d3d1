"""A tiny real-face dataset for training tests: faces cropped from the bundled 3-face clip."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

TINY_RECIPE = """
name = "tiny-faces"
labels = ["Left", "Middle", "Right"]
seed = 7
[split]
val_fraction = 0.25
test_fraction = 0.25
[[sources]]
name = "clip"
roots = ["faces"]
kind = "crops"
[sources.labels]
left = "Left"
middle = "Middle"
right = "Right"
"""


@pytest.fixture(scope="session")
def tiny_face_data(tmp_path_factory: pytest.TempPathFactory, demo_frames: list[np.ndarray]) -> Path:
    """``<root>/faces/{left,middle,right}/*.png`` (the three people of the clip) and ``<root>/recipe.toml``.

    The label is who the face belongs to (ordered by x position), so a model can really learn it.
    """
    from edumood_live.classifier import CropSpec, crop_faces
    from edumood_live.detector import DetectorConfig, FaceDetector

    root = tmp_path_factory.mktemp("tiny_faces")
    names = ("left", "middle", "right")
    for name in names:
        (root / "faces" / name).mkdir(parents=True)
    framing = CropSpec(margin=0.3)  # a dataset of face crops; training pads them before detection
    with FaceDetector(DetectorConfig(tiles="1x1")) as detector:
        for i, frame in enumerate(demo_frames):
            boxes = detector.detect(frame).boxes
            if len(boxes) != 3:
                continue
            for name, box in zip(names, boxes[np.argsort(boxes[:, 0])], strict=True):
                crop = crop_faces(frame, box[None], framing, (96, 96), grey=False)[0]
                cv2.imwrite(str(root / "faces" / name / f"{i:03d}.png"), crop)
    (root / "recipe.toml").write_text(TINY_RECIPE)
    return root


@pytest.fixture(scope="module")
def dataset_cache_in_a_temporary_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Runs cache their datasets under ./runs/cache: a module that trains keeps that out of the working tree
    (``pytestmark = pytest.mark.usefixtures("dataset_cache_in_a_temporary_folder")``)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path_factory.mktemp("work"))
        yield
