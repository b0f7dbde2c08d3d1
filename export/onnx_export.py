"""PyTorch checkpoint -> ONNX classifier carrying its own metadata, verified against PyTorch.

The exported graph takes ``images`` float32 ``[N, C, H, W]`` (dynamic N) normalised as
``(pixel / 255 - mean) / std`` and returns calibrated ``logits`` ``[N, K]`` (``network / T + bias``). Everything
the runtime needs to use it (labels, input size, channels, normalisation) is in ``metadata_props``.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from edumood_live.classifier import CROP_KEY, LEGACY_CROP, CropSpec
from train.engine import MEAN, STD
from train.models import Calibrated, build_model

PARITY_TOLERANCE = 1e-4  # max abs logit difference allowed between onnxruntime and PyTorch (fp32)


class ExportError(RuntimeError):
    """Export produced a model that fails the checker or the numerical parity check."""


@dataclass(frozen=True)
class ExportResult:
    path: Path
    max_abs_diff: float
    parity_images: int
    sha256: str


def load_checkpoint(path: Path) -> tuple[nn.Module, dict]:
    """Rebuild the model of a ``best.pt`` checkpoint written by ``train.fit``."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    meta = ckpt["meta"]
    model = build_model(meta["arch"], len(meta["labels"]), meta["channels"])
    model.load_state_dict(ckpt["model"])
    return model.eval(), meta


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def build_metadata(meta: dict, model_name: str, version: str, trained_on: dict) -> dict[str, str]:
    """The DESIGN §2 metadata contract, every value a string (JSON where structured)."""
    return {
        "labels": json.dumps(meta["labels"]),
        "input_size": json.dumps(meta["input_size"]),
        "channels": str(meta["channels"]),
        "mean": json.dumps([MEAN] * meta["channels"]),
        "std": json.dumps([STD] * meta["channels"]),
        "model_name": model_name,
        "version": version,
        "trained_on": json.dumps(trained_on),
        "metrics": json.dumps(meta.get("metrics", {})),
        # the crop the network was trained on; a checkpoint without one predates the crop contract
        CROP_KEY: CropSpec(**{k: v for k, v in meta.get("crop", {}).items() if k != "square"}).to_json()
        if "crop" in meta else LEGACY_CROP.to_json(),
        "arch": meta["arch"],
        "temperature": f"{meta.get('temperature', 1.0):.6f}",
        "class_bias": json.dumps(meta.get("class_bias", [])),
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "source_commit": _git_commit(),
    }


def normalise(images_u8: np.ndarray) -> np.ndarray:
    """uint8 (N, C, H, W) -> the float input the graph expects."""
    return ((images_u8.astype(np.float32) / 255.0 - MEAN) / STD).astype(np.float32)


def check_parity(model: nn.Module, onnx_path: Path, images_u8: np.ndarray,
                 tolerance: float = PARITY_TOLERANCE) -> float:
    """Max abs logit difference between onnxruntime and PyTorch on real images; raises above tolerance."""
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = normalise(images_u8)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    got = session.run(["logits"], {"images": x})[0]
    diff = float(np.abs(got - expected).max()) if len(x) else 0.0
    if diff > tolerance:
        raise ExportError(f"onnxruntime differs from PyTorch by {diff:.2e} (> {tolerance:.0e}) on {len(x)} images")
    return diff


def export_onnx(checkpoint: Path, out: Path, parity_images: np.ndarray, model_name: str, version: str,
                trained_on: dict, opset: int = 18) -> ExportResult:
    """Export, attach metadata, run ``onnx.checker`` and the parity check; returns the result."""
    model, meta = load_checkpoint(checkpoint)
    wrapped = Calibrated(model, float(meta.get("temperature", 1.0)), meta.get("class_bias", []),
                         len(meta["labels"])).eval()
    h, w = meta["input_size"]
    example = torch.zeros(2, meta["channels"], h, w)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.onnx")
    torch.onnx.export(wrapped, (example,), str(tmp), input_names=["images"], output_names=["logits"],
                      dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1, max=65536)}},
                      dynamo=True, opset_version=opset, external_data=False)
    proto = onnx.load(str(tmp))
    tmp.unlink()
    for key, value in build_metadata(meta, model_name, version, trained_on).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = f"{model_name} {version}: face expression classifier for EduMood Live"
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(out))
    diff = check_parity(wrapped, out, parity_images)
    return ExportResult(out, diff, len(parity_images), hashlib.sha256(out.read_bytes()).hexdigest())


def read_metadata(path: Path) -> dict[str, str]:
    """metadata_props of an ONNX file as a dict."""
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def time_per_face(path: Path, input_shape: tuple[int, int, int], batch: int = 64, threads: int = 2,
                  repeats: int = 20) -> float:
    """Median ms per face of one batched onnxruntime call (spinning off, fixed threads)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((batch, *input_shape)).astype(np.float32)
    session.run(None, {"images": x})
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        session.run(None, {"images": x})
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000 / batch)
