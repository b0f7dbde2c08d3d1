"""How a face box becomes the network's input: the crop geometry (`CropSpec`) and the crops themselves.

DESIGN §2: the crop is part of the model's contract. Training, evaluation and the runtime all crop with
these functions, and the exported model carries its `CropSpec` in its ``crop`` metadata key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import cv2
import numpy as np

from edumood_live.config import PadMode
from edumood_live.errors import ConfigError


@dataclass(frozen=True)
class CropSpec:
    """How a face box becomes the network's input (DESIGN §2: the crop is part of the model's contract).

    A square of side ``max(w, h) * (1 + 2 * margin)`` centred on the detector's box; where it leaves the
    image it is filled as ``pad`` says; then an area resize to the model's input size. Training and
    evaluation crop every image with this same spec and the runtime's detector, and the exported model
    carries it in its ``crop`` metadata key, so the runtime cannot crop differently from training.
    """

    margin: float = 0.3
    pad: PadMode = PadMode.EDGE

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "pad", PadMode(self.pad))
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in PadMode)
            raise ConfigError(f"crop pad={self.pad!r} is not allowed; use one of {allowed}") from None
        if isinstance(self.margin, bool) or not isinstance(self.margin, (int, float)) or not 0 <= self.margin <= 1:
            raise ConfigError(f"crop margin={self.margin!r} is not allowed; use a number in [0, 1]")

    def to_json(self) -> str:
        return json.dumps({"margin": self.margin, "square": True, "pad": self.pad.value})

    @classmethod
    def from_json(cls, text: str) -> CropSpec:
        raw = json.loads(text)
        if not isinstance(raw, dict) or raw.get("square", True) is not True or set(raw) - {"margin", "square", "pad"}:
            raise ConfigError(f"crop {text[:80]!r} must be an object with 'margin', 'pad' and 'square': true")
        return cls(raw.get("margin", cls.margin), raw.get("pad", cls.pad))


# Models exported before the crop was written into the file were trained (and are served) with this.
LEGACY_CROP = CropSpec(margin=0.15, pad=PadMode.EDGE)


def square_boxes(boxes: np.ndarray, margin: float) -> np.ndarray:
    """(N, 4) int32 xyxy squares of side max(w, h) * (1 + 2 * margin) centred on each box.

    This is the crop used both at run time and when cropping training frames, so the two match.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = np.maximum(np.max(boxes[:, 2:] - boxes[:, :2], axis=1) * (1 + 2 * margin), 1.0)
    x0y0 = np.round(centre - side[:, None] / 2)
    side_px = np.round(side)
    return np.concatenate([x0y0, x0y0 + side_px[:, None]], axis=1).astype(np.int32)


def crop_square(
    image: np.ndarray,
    square: np.ndarray,
    size_hw: tuple[int, int],
    pad: PadMode,
    out: np.ndarray,
    grey: bool = False,
) -> None:
    """Crop ``square`` (xyxy int, may leave the frame) from ``image`` and resize it into ``out``.

    ``grey`` converts the BGR region to grey before resizing (``out`` is then (H, W)): both steps are
    linear, so this equals resizing then converting to within one grey level, and the area resize of
    one channel costs a third of three.
    """
    frame_h, frame_w = image.shape[:2]
    x0, y0, x1, y1 = (int(v) for v in square)
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, frame_w), min(y1, frame_h)
    if cx1 <= cx0 or cy1 <= cy0:
        out[...] = 0
        return
    region = image[cy0:cy1, cx0:cx1]
    if grey:
        region = cv2.cvtColor(region, cv2.COLOR_BGR2GRAY)
    if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
        border = cv2.BORDER_REPLICATE if pad is PadMode.EDGE else cv2.BORDER_CONSTANT
        region = cv2.copyMakeBorder(region, cy0 - y0, y1 - cy1, cx0 - x0, x1 - cx1, border, value=0)
    cv2.resize(region, (size_hw[1], size_hw[0]), dst=out, interpolation=cv2.INTER_AREA)


def crop_faces(
    image_bgr: np.ndarray, boxes: np.ndarray, crop: CropSpec, size_hw: tuple[int, int], grey: bool,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """uint8 crops (N, H, W) grey or (N, H, W, 3) BGR of the faces in ``boxes`` (xyxy), cut as ``crop`` says.

    The one crop of the project: the runtime's preprocessing and the training data both call it.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if out is None:
        out = np.empty((len(boxes), *size_hw, *(() if grey else (3,))), np.uint8)
    for face, square in zip(out, square_boxes(boxes, crop.margin), strict=True):
        crop_square(image_bgr, square, size_hw, crop.pad, face, grey)
    return out


