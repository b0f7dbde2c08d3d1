"""Expression classification of face crops with an ONNX model that carries its own metadata.

The model file is the single source of truth (DESIGN §2): labels, input size, channels and
normalisation come from its ``metadata_props``. All faces of a frame are cropped into one
preallocated batch and classified with one onnxruntime call.

Cropping (`FacePreprocessor`) needs only the metadata, so it can run where the frame is while the
model runs elsewhere: `FaceClassifier.classify_batch` takes batches that were preprocessed apart
(the cluster mode crops on each camera and classifies on a shared, batching classifier).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import onnxruntime as ort

from edumood_live.config import ClassifierConfig, Device, PadMode
from edumood_live.crop import LEGACY_CROP, CropSpec, crop_faces
from edumood_live.errors import ConfigError, FrameError, ModelError
from edumood_live.resources import SHIPPED_CLASSIFIERS, classifier_path

logger = logging.getLogger(__name__)

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
REQUIRED_KEYS = (
    "labels",
    "input_size",
    "channels",
    "mean",
    "std",
    "model_name",
    "version",
    "trained_on",
    "metrics",
)
CROP_KEY = "crop"  # optional metadata key: the crop geometry the model was trained on (`CropSpec`)


@dataclass(frozen=True)
class ModelMetadata:
    """The classifier's metadata contract, parsed and checked."""

    labels: tuple[str, ...]
    input_size: tuple[int, int]  # (H, W)
    channels: int  # 1 = grey, 3 = colour in `channel_order`
    mean: np.ndarray  # (channels,) applied to pixel / 255
    std: np.ndarray
    model_name: str
    version: str
    trained_on: Any
    metrics: dict[str, Any]
    channel_order: str = "RGB"  # optional key; only used when channels == 3
    crop: CropSpec = LEGACY_CROP  # optional key `crop`; files without it predate the crop contract
    extra: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view: the contract keys, ``channel_order`` and any extra keys."""
        return {
            **self.extra,
            "labels": list(self.labels),
            "input_size": list(self.input_size),
            "channels": self.channels,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "model_name": self.model_name,
            "version": self.version,
            "trained_on": self.trained_on,
            "metrics": self.metrics,
            "channel_order": self.channel_order,
            CROP_KEY: json.loads(self.crop.to_json()),
        }

    @classmethod
    def parse(cls, raw: dict[str, str], path: Path) -> ModelMetadata:
        """Check ``metadata_props``; any missing or invalid key -> ModelError naming file and key."""

        def fail(key: str, why: str) -> ModelError:
            return ModelError(f"classifier model {path}: metadata key {key!r} {why}")

        def load(key: str) -> Any:
            if key not in raw:
                raise fail(key, "is missing (the model file must carry its metadata, see DESIGN §2)")
            try:
                return json.loads(raw[key])
            except json.JSONDecodeError:
                raise fail(key, f"is not valid JSON: {raw[key][:60]!r}") from None

        labels = load("labels")
        if (
            not isinstance(labels, list)
            or len(labels) < 2
            or not all(isinstance(x, str) and x for x in labels)
            or len(set(labels)) != len(labels)
        ):
            raise fail(
                "labels",
                f"must be a JSON list of >= 2 distinct non-empty strings, got {raw['labels'][:60]!r}",
            )
        size = load("input_size")
        if not (
            isinstance(size, list) and len(size) == 2 and all(type(v) is int and 8 <= v <= 1024 for v in size)
        ):
            raise fail(
                "input_size", f"must be [H, W] with integers in 8..1024, got {raw['input_size'][:60]!r}"
            )
        channels = load("channels")
        if channels not in (1, 3) or isinstance(channels, bool):
            raise fail("channels", f"must be 1 or 3, got {raw['channels'][:20]!r}")
        norm = {}
        for key in ("mean", "std"):
            value = load(key)
            values = value if isinstance(value, list) else [value]
            numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            if not numbers or len(values) not in (1, channels):
                raise fail(key, f"must be a number or a list of {channels} numbers, got {raw[key][:60]!r}")
            norm[key] = np.broadcast_to(np.asarray(values, np.float32), (channels,)).copy()
        if not np.all(norm["std"] > 0):
            raise fail("std", f"must be > 0, got {raw['std'][:60]!r}")
        for key in ("model_name", "version"):
            if not raw.get(key, "").strip():
                raise fail(key, "is missing or empty")
        if not raw.get("trained_on", "").strip():
            raise fail("trained_on", "is missing or empty")
        try:
            trained_on: Any = json.loads(raw["trained_on"])
        except json.JSONDecodeError:
            trained_on = raw["trained_on"]  # free text is allowed
        metrics = load("metrics")
        if not isinstance(metrics, dict):
            raise fail("metrics", "must be a JSON object")
        order = raw.get("channel_order", "RGB").upper()
        if order not in ("RGB", "BGR"):
            raise fail("channel_order", f"must be 'RGB' or 'BGR', got {raw['channel_order'][:20]!r}")
        crop = LEGACY_CROP
        if CROP_KEY in raw:
            try:
                crop = CropSpec.from_json(raw[CROP_KEY])
            except (json.JSONDecodeError, ConfigError) as exc:
                raise fail(CROP_KEY, f"is invalid: {exc}") from None
        extra = {k: v for k, v in raw.items() if k not in (*REQUIRED_KEYS, "channel_order", CROP_KEY)}
        return cls(
            tuple(labels), (size[0], size[1]), channels, norm["mean"], norm["std"], raw["model_name"],
            raw["version"], trained_on, metrics, order, crop, extra,
        )  # fmt: skip


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32."""
    z = logits.astype(np.float32) - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


class FacePreprocessor:
    """Crops, resizes, converts and normalises faces into the model's input batch, from its metadata
    alone. Thread-safe; one crop buffer, grown on demand and reused."""

    def __init__(self, meta: ModelMetadata, config: ClassifierConfig) -> None:
        self.meta = meta
        self.config = config
        self.input_size: tuple[int, int] = meta.input_size
        self.channels: int = meta.channels
        self.crop = CropSpec(
            meta.crop.margin if config.crop_margin is None else config.crop_margin,
            meta.crop.pad if config.pad_mode is None else PadMode(config.pad_mode),
        )
        self._scale = (1.0 / (255.0 * meta.std)).reshape(1, -1, 1, 1)
        self._offset = (meta.mean / meta.std).reshape(1, -1, 1, 1)
        self._lock = threading.Lock()
        # (N, H, W) grey crops for a grey model, (N, H, W, 3) BGR otherwise; grown on demand
        self._crops = np.zeros((0, *self.input_size, *(() if meta.channels == 1 else (3,))), np.uint8)

    def preprocess(
        self, image_bgr: np.ndarray, boxes: np.ndarray, out: np.ndarray | None = None
    ) -> np.ndarray:
        """One (N, C, H, W) float32 batch for the faces in ``boxes`` (xyxy pixels), into ``out`` if given."""
        if image_bgr.dtype != np.uint8 or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
            raise FrameError(f"expected a BGR uint8 (H, W, 3) image, got {image_bgr.dtype} {image_bgr.shape}")
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        n, (h, w) = len(boxes), self.input_size
        if out is None:
            out = np.empty((n, self.channels, h, w), np.float32)
        if n == 0:
            return out
        grey = self.channels == 1
        with self._lock:
            if len(self._crops) < n:
                self._crops = np.empty((max(n, 2 * len(self._crops)), *self._crops.shape[1:]), np.uint8)
            crops = crop_faces(image_bgr, boxes, self.crop, self.input_size, grey, out=self._crops[:n])
            if grey:
                out[:, 0] = crops
            elif self.meta.channel_order == "RGB":  # one colour conversion for the whole batch
                rgb = cv2.cvtColor(crops.reshape(n * h, w, 3), cv2.COLOR_BGR2RGB).reshape(n, h, w, 3)
                out[...] = rgb.transpose(0, 3, 1, 2)
            else:
                out[...] = crops.transpose(0, 3, 1, 2)
        out *= self._scale
        out -= self._offset
        return out


class Classifier(Protocol):
    """What the pipeline needs of a classifier: `FaceClassifier`, or one that runs the model elsewhere."""

    labels: tuple[str, ...]
    provider: str
    meta: ModelMetadata
    model_path: Path

    def classify(self, image_bgr: np.ndarray, boxes: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


class FaceClassifier:
    """``classify(image_bgr, boxes) -> probs (N, K)``, label order = ``labels``; thread-safe."""

    def __init__(self, config: ClassifierConfig | None = None) -> None:
        self.config = config or ClassifierConfig()
        self.model_path = classifier_path(self.config.model_path)
        if not self.model_path.is_file():
            raise ModelError(
                f"classifier model {self.model_path} does not exist (give a file, or a shipped model's name: "
                f"{', '.join(SHIPPED_CLASSIFIERS)})"
            )
        session = self._open_session()
        self.provider: str = session.get_providers()[0]
        raw = session.get_modelmeta().custom_metadata_map
        self.meta = ModelMetadata.parse(dict(raw), self.model_path)
        self.metadata: dict[str, Any] = self.meta.as_dict()
        self.labels: tuple[str, ...] = self.meta.labels
        self.input_size: tuple[int, int] = self.meta.input_size
        self.channels: int = self.meta.channels
        self._input_name, self._output_name = self._check_signature(session)
        self._session: ort.InferenceSession | None = session
        self.preprocessor = FacePreprocessor(self.meta, self.config)
        self._lock = threading.RLock()
        self._batch = np.zeros((0, self.channels, *self.input_size), np.float32)  # grown, reused per frame
        meta = self.meta
        logger.info(
            "classifier %s %s (%s) on %s, labels %s",
            *(meta.model_name, meta.version, self.model_path.name, self.provider, list(self.labels)),
        )

    def _open_session(self) -> ort.InferenceSession:
        available = ort.get_available_providers()
        device = Device(self.config.device)
        if device is Device.CUDA and CUDA_PROVIDER not in available:
            raise ConfigError(
                f"device='cuda' is not allowed here: onnxruntime offers no {CUDA_PROVIDER} "
                f"(available: {', '.join(available)}); replace the onnxruntime package by onnxruntime-gpu "
                "(install exactly one of them) and the CUDA libraries, or use --device cpu"
            )
        use_cuda = device is not Device.CPU and CUDA_PROVIDER in available
        providers = [CUDA_PROVIDER, CPU_PROVIDER] if use_cuda else [CPU_PROVIDER]
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.config.intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        spinning = "1" if self.config.allow_spinning else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        options.add_session_config_entry("session.inter_op.allow_spinning", spinning)
        try:
            session = ort.InferenceSession(str(self.model_path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(
                f"classifier model {self.model_path} is not a valid ONNX model: {first_line}"
            ) from exc
        if device is Device.CUDA and session.get_providers()[0] != CUDA_PROVIDER:
            raise ConfigError(
                "device='cuda' is not allowed here: onnxruntime-gpu could not load CUDA (missing CUDA/cuDNN "
                "libraries?); use --device cpu or auto"
            )
        return session

    def _check_signature(self, session: ort.InferenceSession) -> tuple[str, str]:
        """One float input [N, C, H, W] and an output [N, K] matching the metadata; checked by a dry run."""
        inputs, outputs = session.get_inputs(), session.get_outputs()
        c, (h, w), k = self.channels, self.input_size, len(self.labels)
        name = self.model_path
        if len(inputs) != 1 or inputs[0].type != "tensor(float)" or len(inputs[0].shape) != 4:
            got = [(i.name, i.type, i.shape) for i in inputs]
            raise ModelError(
                f"classifier model {name}: expected one float input [N, {c}, {h}, {w}], got {got}"
            )
        wanted = {"channels": c, "input_size H": h, "input_size W": w}
        for got_dim, (what, want) in zip(inputs[0].shape[1:], wanted.items(), strict=True):
            if isinstance(got_dim, int) and got_dim != want:
                raise ModelError(
                    f"classifier model {name}: input shape {inputs[0].shape} disagrees with "
                    f"metadata {what}={want}"
                )
        try:
            (logits,) = session.run([outputs[0].name], {inputs[0].name: np.zeros((2, c, h, w), np.float32)})
        except Exception as exc:
            raise ModelError(
                f"classifier model {name}: a dry run on [2, {c}, {h}, {w}] failed: {exc}"
            ) from exc
        if logits.shape != (2, k):
            raise ModelError(
                f"classifier model {name}: output {outputs[0].name!r} gives shape {list(logits.shape)} for "
                f"a batch of 2, but metadata 'labels' has {k} entries; expected [2, {k}]"
            )
        return inputs[0].name, outputs[0].name

    def preprocess(
        self, image_bgr: np.ndarray, boxes: np.ndarray, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Crop, resize, convert and normalise each face into one (N, C, H, W) float32 batch."""
        return self.preprocessor.preprocess(image_bgr, boxes, out)

    def classify(self, image_bgr: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Softmax probabilities (N, K) float32 for the faces in ``boxes`` (xyxy pixels)."""
        n = len(np.asarray(boxes).reshape(-1, 4))
        if n == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        if self._session is None:
            raise RuntimeError("FaceClassifier.classify() called after close()")
        with self._lock:
            if len(self._batch) < n:
                self._batch = np.empty(
                    (max(n, 2 * len(self._batch)), self.channels, *self.input_size), np.float32
                )
            batch = self.preprocess(image_bgr, boxes, out=self._batch[:n])
            return self.classify_batch(batch)

    def classify_batch(self, batch: np.ndarray) -> np.ndarray:
        """Softmax probabilities (N, K) float32 for a batch made by `preprocess` (one onnxruntime call)."""
        c, (h, w) = self.channels, self.input_size
        if batch.dtype != np.float32 or batch.ndim != 4 or batch.shape[1:] != (c, h, w):
            raise ValueError(f"expected a float32 batch (N, {c}, {h}, {w}), got {batch.dtype} {batch.shape}")
        if len(batch) == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        n = len(batch)
        if self.config.flip_average:
            batch = np.concatenate([batch, batch[..., ::-1]])
        with self._lock:
            if self._session is None:
                raise RuntimeError("FaceClassifier.classify() called after close()")
            (logits,) = self._session.run([self._output_name], {self._input_name: batch})
        probs = softmax(logits)
        return (probs[:n] + probs[n:]) / 2 if self.config.flip_average else probs

    def close(self) -> None:
        """Release the onnxruntime session."""
        self._session = None

    def __enter__(self) -> FaceClassifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
