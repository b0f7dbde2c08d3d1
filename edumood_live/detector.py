"""Face detection with MediaPipe's BlazeFace full-range model, tiled for small faces.

The full-range model sees a 192x192 input and finds faces down to about 7 % of the image's long
side, so a 720p frame misses faces under ~90 px. The detector therefore runs the model on
overlapping tiles (plus, optionally, the whole frame for faces too big for a tile) and merges the
boxes with class-agnostic non-maximum suppression. Tiles can be spread over several detector
instances in threads: MediaPipe runs in C++ and releases the GIL.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import cv2
import mediapipe as mp
import numpy as np
from mediapipe.tasks.python import vision
from mediapipe.tasks.python.core.base_options import BaseOptions

from edumood_live.attention import NUM_KEYPOINTS
from edumood_live.config import DetectorConfig, parse_grid
from edumood_live.errors import FrameError, ModelError
from edumood_live.resources import default_detector_path
from edumood_live.types import Detections

logger = logging.getLogger(__name__)

MIN_FACE_FRACTION = 0.07  # full-range BlazeFace needs a face >= ~7 % of the tile's long side
MAX_GRID_SIDE = 8  # auto tiling never goes beyond 8 rows or 8 columns
CUT_BOX_MAX_SHARED = 0.2  # a box cut by a tile edge is a duplicate when this much of it lies in a kept box
CUT_EDGE_PX = 1  # a box within this distance of a tile's inner edge counts as cut
@contextmanager
def native_stderr_to_debug_log() -> Iterator[None]:
    """Route what native code writes to fd 2 (LiteRT prints ~50 lines per model load) to DEBUG logging."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        saved = -1
    if saved < 0:
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines():
                if line.strip():
                    logger.debug("mediapipe: %s", line)


def auto_grid(frame_w: int, frame_h: int, min_face_px: int, overlap: float) -> tuple[int, int]:
    """Fewest (rows, cols) whose tiles have a long side <= min_face_px / 7 %, capped at 8 per side."""
    max_side = min_face_px / MIN_FACE_FRACTION

    def count(length: int) -> int:
        if length <= max_side:
            return 1
        n = math.ceil((length / max_side - 1.0) / (1.0 - overlap) + 1.0 - 1e-9)
        return min(max(n, 1), MAX_GRID_SIDE)

    return count(frame_h), count(frame_w)


def tile_boxes(frame_w: int, frame_h: int, rows: int, cols: int, overlap: float) -> np.ndarray:
    """(rows*cols, 4) int32 xyxy tiles covering the frame, neighbours sharing ``overlap`` of a tile."""

    def spans(length: int, n: int) -> list[tuple[int, int]]:
        if n == 1:
            return [(0, length)]
        size = min(length, math.ceil(length / (1.0 + (n - 1) * (1.0 - overlap))))
        step = (length - size) / (n - 1)
        return [(round(i * step), round(i * step) + size) for i in range(n)]

    return np.asarray(
        [(x0, y0, x1, y1) for (y0, y1) in spans(frame_h, rows) for (x0, x1) in spans(frame_w, cols)],
        np.int32,
    ).reshape(-1, 4)


def merge_boxes(boxes: np.ndarray, scores: np.ndarray, cut: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Class-agnostic NMS across tiles; indices of kept boxes.

    A face that crosses a tile's inner edge yields a ``cut`` box (BlazeFace shifts it inside the
    tile), which overlaps the face's complete box from a neighbour tile or the whole-frame pass
    too little for plain IoU. Complete boxes therefore go first, and a cut box is also dropped when
    more than `CUT_BOX_MAX_SHARED` of it lies inside a box already kept.
    """
    order = np.lexsort((-scores, cut))
    x0, y0, x1, y1 = boxes.T
    areas = np.maximum(x1 - x0, 0) * np.maximum(y1 - y0, 0)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        iw = np.clip(np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]), 0, None)
        ih = np.clip(np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]), 0, None)
        inter = iw * ih
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        shared = inter / np.maximum(np.minimum(areas[i], areas[rest]), 1e-9)
        order = rest[(iou <= iou_threshold) & ~(cut[rest] & (shared > CUT_BOX_MAX_SHARED))]
    return np.asarray(keep, np.int64)


class FaceDetector:
    """Finds faces in BGR frames: ``detect(image_bgr) -> Detections`` (xyxy float32 boxes, clipped to the
    frame; the six BlazeFace keypoints per face in frame pixels, not clipped: an ear may lie outside)."""

    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = config or DetectorConfig()
        self._grid = parse_grid(self.config.tiles)
        path = Path(self.config.model_path) if self.config.model_path else default_detector_path()
        try:
            model = path.read_bytes()
        except OSError as exc:
            raise ModelError(f"cannot read face detector model {path}: {exc.strerror or exc}") from exc
        self.model_path = path
        with native_stderr_to_debug_log():
            self._detectors = [self._create(model, path) for _ in range(self.config.workers)]
        self._pool = (
            ThreadPoolExecutor(self.config.workers, thread_name_prefix="face-detector")
            if self.config.workers > 1
            else None
        )
        self._warned_cap: set[tuple[int, int]] = set()

    def _create(self, model: bytes, path: Path) -> vision.FaceDetector:
        options = vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_buffer=model),
            running_mode=vision.RunningMode.IMAGE,
            min_detection_confidence=self.config.min_confidence,
        )
        try:
            detector = vision.FaceDetector.create_from_options(options)
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"{path} is not a usable MediaPipe face detector model: {exc}") from exc
        # Warm up: the first calls allocate, and the second logs natively (captured by the caller).
        blank = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.zeros((64, 64, 3), np.uint8))
        for _ in range(2):
            detector.detect(blank)
        return detector

    def grid_for(self, frame_w: int, frame_h: int) -> tuple[int, int]:
        """(rows, cols) used for a frame of this size: the explicit grid or the auto-tiling rule."""
        if self._grid is not None:
            return self._grid
        grid = auto_grid(frame_w, frame_h, self.config.min_face_px, self.config.tile_overlap)
        if MAX_GRID_SIDE in grid and (frame_w, frame_h) not in self._warned_cap:
            self._warned_cap.add((frame_w, frame_h))
            logger.warning(
                "auto tiling capped at %dx%d tiles for %dx%d frames; faces of %d px may be missed",
                grid[1],
                grid[0],
                frame_w,
                frame_h,
                self.config.min_face_px,
            )
        return grid

    def regions_for(self, frame_w: int, frame_h: int) -> np.ndarray:
        """(T, 4) int32 xyxy regions the model runs on: tiles, then the whole frame when enabled."""
        rows, cols = self.grid_for(frame_w, frame_h)
        regions = tile_boxes(frame_w, frame_h, rows, cols, self.config.tile_overlap)
        if len(regions) > 1 and self.config.whole_frame:
            regions = np.vstack([regions, np.array([[0, 0, frame_w, frame_h]], np.int32)])
        return regions

    def detect(self, image_bgr: np.ndarray) -> Detections:
        """Faces in one BGR uint8 frame of shape (H, W, 3)."""
        if image_bgr.dtype != np.uint8 or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
            raise FrameError(f"expected a BGR uint8 (H, W, 3) image, got {image_bgr.dtype} {image_bgr.shape}")
        if not self._detectors:
            raise RuntimeError("FaceDetector.detect() called after close()")
        frame_h, frame_w = image_bgr.shape[:2]
        rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        regions = self.regions_for(frame_w, frame_h)
        n = len(self._detectors)
        if self._pool is None or len(regions) == 1:
            parts = [self._run(self._detectors[0], rgb, regions)]
        else:
            chunks = [regions[i::n] for i in range(n)]
            parts = list(self._pool.map(self._run, self._detectors, [rgb] * n, chunks))
        boxes = np.concatenate([p[0] for p in parts])
        scores = np.concatenate([p[1] for p in parts])
        cut = np.concatenate([p[2] for p in parts])
        keypoints = np.concatenate([p[3] for p in parts])
        if len(boxes) == 0:
            return Detections.empty()
        np.clip(boxes, 0, [frame_w, frame_h, frame_w, frame_h], out=boxes)
        valid = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
        if len(regions) > 1:
            keep = merge_boxes(boxes[valid], scores[valid], cut[valid], self.config.nms_iou)
            return Detections(boxes[valid][keep], scores[valid][keep], keypoints[valid][keep])
        return Detections(boxes[valid], scores[valid], keypoints[valid])

    @staticmethod
    def _run(
        detector: vision.FaceDetector, rgb: np.ndarray, regions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Run one detector instance over some regions: boxes and keypoints in frame coordinates, scores,
        cut flags. A face's keypoints come from the same tile as its box, so merging keeps them together."""
        frame_h, frame_w = rgb.shape[:2]
        rows: list[list[float]] = []
        for x0, y0, x1, y1 in regions.tolist():
            whole = (x0, y0, x1, y1) == (0, 0, frame_w, frame_h)
            tile = rgb if whole else np.ascontiguousarray(rgb[y0:y1, x0:x1])
            # Which tile edges lie inside the frame (left, top, right, bottom): a box touching one is cut.
            inner = (x0 > 0, y0 > 0, x1 < frame_w, y1 < frame_h)
            tile_w, tile_h = x1 - x0, y1 - y0
            for det in detector.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=tile)).detections:
                bb = det.bounding_box
                cut = (
                    (inner[0] and bb.origin_x <= CUT_EDGE_PX)
                    or (inner[1] and bb.origin_y <= CUT_EDGE_PX)
                    or (inner[2] and bb.origin_x + bb.width >= tile_w - CUT_EDGE_PX)
                    or (inner[3] and bb.origin_y + bb.height >= tile_h - CUT_EDGE_PX)
                )
                left, top = x0 + bb.origin_x, y0 + bb.origin_y
                score = det.categories[0].score if det.categories else 0.0
                points = [math.nan] * (2 * NUM_KEYPOINTS)
                if len(det.keypoints) == NUM_KEYPOINTS:  # normalised to the tile
                    points = [v for k in det.keypoints for v in (x0 + k.x * tile_w, y0 + k.y * tile_h)]
                rows.append([left, top, left + bb.width, top + bb.height, score, float(cut), *points])
        table = np.asarray(rows, np.float32).reshape(-1, 6 + 2 * NUM_KEYPOINTS)
        keypoints = table[:, 6:].reshape(-1, NUM_KEYPOINTS, 2).copy()
        return table[:, :4].copy(), table[:, 4].copy(), table[:, 5] > 0, keypoints

    def close(self) -> None:
        """Release the detector instances and the worker threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with native_stderr_to_debug_log():
            for detector in self._detectors:
                detector.close()
        self._detectors = []

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
