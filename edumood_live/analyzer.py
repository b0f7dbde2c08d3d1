"""Faces of single images: the runtime's detector, crop and classifier, without tracking or windows.

``FaceAnalyzer(AnalyzerConfig(...)).analyze(image_bgr)`` returns every face of one image as `Faces`, a
frozen container of arrays with the face on the first axis: boxes, detector scores, the six BlazeFace
keypoints, class probabilities (labels from the model file) and head orientation (`attention.facing`).
It runs exactly what the live pipeline runs on a frame whose detector is due: `FaceDetector.detect`,
then the classifier's own crop and preprocessing (`FaceClassifier.preprocess`, the model's `CropSpec`)
and one onnxruntime call; only the tracker's smoothing is left out, so the probabilities are the
pipeline's per-frame ones. `analyze_batch` does the same for many images with one classifier call.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import overload

import cv2
import numpy as np

from edumood_live.attention import FACING_THRESHOLD, NUM_KEYPOINTS, facing
from edumood_live.classifier import FaceClassifier
from edumood_live.config import AnalyzerConfig
from edumood_live.detector import FaceDetector
from edumood_live.errors import FrameError
from edumood_live.sources.base import to_bgr_uint8


@dataclass(frozen=True)
class Face:
    """One face of an image, as plain Python values (one row of `Faces`)."""

    index: int
    box: tuple[float, float, float, float]  # xyxy pixels
    score: float  # detector confidence
    keypoints: np.ndarray  # (6, 2) pixels in `attention.KEYPOINTS` order; NaN where the detector gave none
    probs: dict[str, float]  # label -> probability, in the model's label order; empty without a classifier
    label: str | None  # the most probable label; None without a classifier
    yaw_deg: float  # NaN when unknown (no keypoints)
    pitch_deg: float
    facing_score: float  # in [0, 1]; NaN when unknown

    @property
    def facing(self) -> bool | None:
        """Whether the face looks towards the camera (score >= 0.5); None when unknown."""
        return None if math.isnan(self.facing_score) else self.facing_score >= FACING_THRESHOLD


@dataclass(frozen=True)
class Faces:
    """The faces of one image; every array has the face on its first axis.

    ``faces[i]`` is one `Face`; ``faces[mask]`` / ``faces[1:3]`` / ``faces[[0, 2]]`` another `Faces`;
    iterating gives the `Face` records in detection order.
    """

    boxes: np.ndarray  # (N, 4) float32 xyxy pixels
    scores: np.ndarray  # (N,) float32 detector confidence in [0, 1]
    keypoints: np.ndarray  # (N, 6, 2) float32 pixels, `attention.KEYPOINTS` order; NaN where none
    probs: np.ndarray  # (N, K) float32, rows sum to 1, column order = labels
    labels: tuple[str, ...]  # the model's labels (its metadata), K of them
    yaw_deg: np.ndarray  # (N,) float32, positive = turned towards the image's right; NaN when unknown
    pitch_deg: np.ndarray  # (N,) float32, positive = looking up
    facing_score: np.ndarray  # (N,) float32 in [0, 1]: looks towards the camera (>= 0.5); NaN when unknown

    def __post_init__(self) -> None:
        n = len(np.asarray(self.boxes).reshape(-1, 4))
        shapes = {
            "boxes": (n, 4), "scores": (n,), "keypoints": (n, NUM_KEYPOINTS, 2),
            "probs": (n, len(self.labels)), "yaw_deg": (n,), "pitch_deg": (n,), "facing_score": (n,),
        }  # fmt: skip
        for name, shape in shapes.items():
            value = np.asarray(getattr(self, name), np.float32)
            if name == "boxes":
                value = value.reshape(shape)
            if value.shape != shape:
                raise ValueError(f"{name} must have shape {shape} for {n} faces, got {value.shape}")
            object.__setattr__(self, name, value)
        object.__setattr__(self, "labels", tuple(self.labels))

    @classmethod
    def empty(cls, labels: Sequence[str]) -> Faces:
        """No faces."""
        none = np.zeros((0,), np.float32)
        return cls(np.zeros((0, 4)), none, np.zeros((0, NUM_KEYPOINTS, 2)), np.zeros((0, len(labels))),
                   tuple(labels), none, none, none)  # fmt: skip

    def __len__(self) -> int:
        return len(self.boxes)

    @overload
    def __getitem__(self, index: int) -> Face: ...

    @overload
    def __getitem__(self, index: slice | np.ndarray | Sequence[int]) -> Faces: ...

    def __getitem__(self, index: int | slice | np.ndarray | Sequence[int]) -> Face | Faces:
        if isinstance(index, (int, np.integer)):
            i = range(len(self))[index]  # IndexError past the end; negative indices count from the end
            probs = self.probs[i]
            x0, y0, x1, y1 = (float(v) for v in self.boxes[i])
            return Face(
                index=i,
                box=(x0, y0, x1, y1),
                score=float(self.scores[i]),
                keypoints=self.keypoints[i].copy(),
                probs={label: float(p) for label, p in zip(self.labels, probs, strict=True)},
                label=self.labels[int(np.argmax(probs))] if len(probs) else None,
                yaw_deg=float(self.yaw_deg[i]),
                pitch_deg=float(self.pitch_deg[i]),
                facing_score=float(self.facing_score[i]),
            )  # fmt: skip
        if not isinstance(index, (slice, np.ndarray)):
            index = np.asarray(index)
        return Faces(self.boxes[index], self.scores[index], self.keypoints[index], self.probs[index],
                     self.labels, self.yaw_deg[index], self.pitch_deg[index], self.facing_score[index])  # fmt: skip

    def __iter__(self) -> Iterator[Face]:
        return (self[i] for i in range(len(self)))

    @property
    def top_labels(self) -> tuple[str, ...]:
        """The most probable label of each face (empty without a classifier)."""
        if not self.labels:
            return ()
        return tuple(self.labels[i] for i in np.argmax(self.probs, axis=1).tolist())


class FaceAnalyzer:
    """``analyze(image_bgr) -> Faces``, ``analyze_batch(images) -> list[Faces]``; a context manager.

    Construction loads the detector and the classifier (a `ModelError` names a bad model file, a
    `ConfigError` a bad setting). Images are BGR ``uint8`` (H, W, 3) arrays, as OpenCV reads them;
    anything else raises `FrameError` (`read_image` converts grey, BGRA and 16-bit files).
    """

    def __init__(self, config: AnalyzerConfig | None = None) -> None:
        self.config = config or AnalyzerConfig()
        self._detector: FaceDetector | None = None
        self._classifier: FaceClassifier | None = None
        if self.config.expressions:
            self._classifier = FaceClassifier(self.config.classifier)
        try:
            self._detector = FaceDetector(self.config.detector)
        except BaseException:
            self.close()
            raise
        self.labels: tuple[str, ...] = () if self._classifier is None else self._classifier.labels
        self._closed = False

    @property
    def classifier(self) -> FaceClassifier | None:
        """The classifier (its `meta` describes the model); None when expressions are not inferred."""
        if self._closed:
            raise RuntimeError("FaceAnalyzer used after close()")
        return self._classifier

    @property
    def detector(self) -> FaceDetector:
        """The face detector."""
        if self._detector is None:
            raise RuntimeError("FaceAnalyzer used after close()")
        return self._detector

    def analyze(self, image_bgr: np.ndarray) -> Faces:
        """The faces of one BGR uint8 image (H, W, 3)."""
        return self.analyze_batch([image_bgr])[0]

    def analyze_batch(self, images_bgr: Sequence[np.ndarray]) -> list[Faces]:
        """The faces of each image: one detection per image, then one classifier call for all faces."""
        for position, image in enumerate(images_bgr):
            if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
                raise FrameError(f"image {position}: expected a BGR uint8 (H, W, 3) array, got {got}")
        detector, classifier = self.detector, self.classifier
        detections = [detector.detect(image) for image in images_bgr]
        total = sum(len(found) for found in detections)
        if classifier is None:
            probs = np.zeros((total, 0), np.float32)
        else:
            batch = np.empty((total, classifier.channels, *classifier.input_size), np.float32)
            start = 0
            for image, found in zip(images_bgr, detections, strict=True):
                classifier.preprocess(image, found.boxes, out=batch[start : start + len(found)])
                start += len(found)
            probs = classifier.classify_batch(batch)
        results, start = [], 0
        for found in detections:
            if self.config.attention:
                yaw, pitch, score = facing(found.keypoints, found.boxes)
            else:
                yaw = pitch = score = np.full((len(found),), np.nan, np.float32)
            results.append(Faces(found.boxes, found.scores, found.keypoints, probs[start : start + len(found)],
                                 self.labels, yaw, pitch, score))  # fmt: skip
            start += len(found)
        return results

    def close(self) -> None:
        """Release the detector and the classifier (idempotent)."""
        if self._detector is not None:
            self._detector.close()
            self._detector = None
        if self._classifier is not None:
            self._classifier.close()
            self._classifier = None
        self._closed = True

    def __enter__(self) -> FaceAnalyzer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def read_image(path: Path | str) -> np.ndarray:
    """An image file as a BGR uint8 (H, W, 3) array, decoded as an image-folder source decodes it (grey,
    BGRA and 16-bit converted; EXIF orientation not applied). FrameError when it cannot be decoded."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise FrameError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    try:
        return to_bgr_uint8(cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None)
    except (ValueError, cv2.error):
        raise FrameError(f"{path}: not an image that can be decoded (empty, damaged or another kind of file)") from None
