"""Face-detection test media shared by tests and benchmarks.

Loads the dlib example photos with their box annotations (``../shared/media/faces_dlib``), builds a
"classroom-like" mosaic of them with small faces, and scores detections against ground truth.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
FACES_DLIB_DIR = REPO_ROOT.parent / "shared" / "media" / "faces_dlib"
ANNOTATION_FILES = ("training.xml", "testing.xml")
MOSAIC_PHOTO_SCALE = 0.64  # 500x375 photos -> 320x240 cells: annotated faces become ~24-70 px


@dataclass(frozen=True)
class AnnotatedImage:
    """One photo (BGR uint8) with its annotated face boxes (xyxy float32)."""

    name: str
    image: np.ndarray
    boxes: np.ndarray


def load_dlib_faces(folder: Path = FACES_DLIB_DIR) -> list[AnnotatedImage]:
    """Read the annotated photos of dlib's imglab XML files (``<box top left width height>``)."""
    images: list[AnnotatedImage] = []
    for xml_name in ANNOTATION_FILES:
        root = ET.parse(folder / xml_name).getroot()
        for node in root.iter("image"):
            name = node.attrib["file"]
            image = cv2.imread(str(folder / name), cv2.IMREAD_COLOR)
            if image is None:
                raise FileNotFoundError(f"cannot read {folder / name}")
            boxes = [
                [
                    float(b.attrib["left"]),
                    float(b.attrib["top"]),
                    float(b.attrib["left"]) + float(b.attrib["width"]),
                    float(b.attrib["top"]) + float(b.attrib["height"]),
                ]
                for b in node.iter("box")
            ]
            images.append(AnnotatedImage(name, image, np.asarray(boxes, np.float32).reshape(-1, 4)))
    return images


def build_mosaic(
    photos: list[AnnotatedImage],
    frame_w: int = 1280,
    frame_h: int = 720,
    photo_scale: float = MOSAIC_PHOTO_SCALE,
) -> AnnotatedImage:
    """Tile the photos on a grey canvas, each scaled by ``photo_scale`` and centred in its grid cell.

    With the 9 annotated photos and the default scale, the 1280x720 mosaic holds 43 faces of about
    24-70 px, like a classroom seen by a 720p camera. Larger frames keep the faces that small.
    """
    cols = int(np.ceil(np.sqrt(len(photos) * frame_w / frame_h / (4 / 3))))
    rows = int(np.ceil(len(photos) / cols))
    cell_w, cell_h = frame_w // cols, frame_h // rows
    canvas = np.full((frame_h, frame_w, 3), 96, np.uint8)
    all_boxes: list[np.ndarray] = []
    for i, photo in enumerate(photos):
        h, w = photo.image.shape[:2]
        scale = min(photo_scale, cell_w / w, cell_h / h)
        new_w, new_h = int(round(w * scale)), int(round(h * scale))
        resized = cv2.resize(photo.image, (new_w, new_h), interpolation=cv2.INTER_AREA)
        row, col = divmod(i, cols)
        x0 = col * cell_w + (cell_w - new_w) // 2
        y0 = row * cell_h + (cell_h - new_h) // 2
        canvas[y0 : y0 + new_h, x0 : x0 + new_w] = resized
        sx, sy = new_w / w, new_h / h
        all_boxes.append(photo.boxes * np.float32([sx, sy, sx, sy]) + np.float32([x0, y0, x0, y0]))
    boxes = np.concatenate(all_boxes).astype(np.float32) if all_boxes else np.zeros((0, 4), np.float32)
    return AnnotatedImage(f"mosaic_{frame_w}x{frame_h}", canvas, boxes)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes: (len(a), len(b))."""
    a = a.reshape(-1, 1, 4)
    b = b.reshape(1, -1, 4)
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-9)


def count_matched(gt_boxes: np.ndarray, pred_boxes: np.ndarray, min_iou: float = 0.3) -> int:
    """Ground-truth faces matched one-to-one (greedy by IoU) by a prediction with IoU >= ``min_iou``."""
    if len(gt_boxes) == 0 or len(pred_boxes) == 0:
        return 0
    iou = iou_matrix(gt_boxes, pred_boxes)
    matched = 0
    while True:
        gi, pi = np.unravel_index(int(np.argmax(iou)), iou.shape)
        if iou[gi, pi] < min_iou:
            return matched
        matched += 1
        iou[gi, :] = -1.0
        iou[:, pi] = -1.0
