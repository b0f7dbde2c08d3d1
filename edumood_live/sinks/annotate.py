"""Annotated video output (``--annotate out.webm`` or ``.mp4``): boxes, anonymous track ids and labels.

Faces are blurred by default before anything is drawn: each face box (plus a margin) is reduced to a
few pixels across and smoothed, so no face can be recognised or restored from the written video.
Only an explicit ``blur=False`` (CLI ``--no-blur``) writes faces as they are.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np

from edumood_live.errors import OutputError
from edumood_live.sinks.style import class_colour
from edumood_live.types import TrackedFaces

log = logging.getLogger(__name__)

DEFAULT_VIDEO_FPS = 10.0  # the annotated video of a source that yielded a single frame
MAX_VIDEO_FPS = 120.0

BLUR_CELLS = 6  # a blurred face keeps at most this many pixels across, before smoothing
BLUR_MARGIN = 0.15  # fraction of the box size added on each side (hair, ears, jaw)


def _bgr(hex_colour: str) -> tuple[int, int, int]:
    value = hex_colour.lstrip("#")
    r, g, b = (int(value[i : i + 2], 16) for i in (0, 2, 4))
    return b, g, r


def blur_regions(image: np.ndarray, boxes: np.ndarray, margin: float = BLUR_MARGIN) -> None:
    """Irreversibly blur each xyxy box of `image` in place (pixelate to a few cells, then smooth)."""
    h, w = image.shape[:2]
    for x1, y1, x2, y2 in np.asarray(boxes, np.float64).reshape(-1, 4):
        mx, my = (x2 - x1) * margin, (y2 - y1) * margin
        left, top = max(int(x1 - mx), 0), max(int(y1 - my), 0)
        right, bottom = min(int(np.ceil(x2 + mx)), w), min(int(np.ceil(y2 + my)), h)
        if right - left < 2 or bottom - top < 2:
            continue
        region = image[top:bottom, left:right]
        small = cv2.resize(region, (BLUR_CELLS, BLUR_CELLS), interpolation=cv2.INTER_AREA)
        coarse = cv2.resize(small, (right - left, bottom - top), interpolation=cv2.INTER_LINEAR)
        kernel = max(3, (min(right - left, bottom - top) // 4) | 1)
        region[:] = cv2.GaussianBlur(coarse, (kernel, kernel), 0)


def draw_faces(image: np.ndarray, faces: TrackedFaces, labels: Sequence[str]) -> None:
    """Draw each face's box, anonymous id (``t17``) and top label with its probability, in place."""
    thickness = max(1, round(min(image.shape[:2]) / 360))
    scale = max(0.4, min(image.shape[:2]) / 900)
    for tid, box, probs in zip(faces.track_ids.tolist(), faces.boxes, faces.probs, strict=True):
        top = int(np.argmax(probs)) if len(probs) else -1
        label = labels[top] if 0 <= top < len(labels) else "?"
        colour = _bgr(class_colour(label, max(top, 0)))
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, thickness, cv2.LINE_AA)
        text = f"t{tid} {label} {float(probs[top]):.2f}" if top >= 0 else f"t{tid}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = y1 - 4 if y1 - th - base - 4 >= 0 else y2 + th + 4  # above the box, else below it
        cv2.rectangle(image, (x1, ty - th - 2), (x1 + tw + 4, ty + base), colour, cv2.FILLED)
        white = (255, 255, 255)
        cv2.putText(image, text, (x1 + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, white, 1, cv2.LINE_AA)


def codec_for(path: Path) -> tuple[str, str]:
    """(FourCC, description) of the annotated video's codec, chosen by the file name."""
    if path.suffix.lower() == ".webm":
        return "VP80", "VP8 in WebM (plays in browsers)"
    return "mp4v", "MPEG-4 Part 2 (desktop players; browsers need .webm)"


def letterbox(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` scaled to fit (width, height) with its aspect ratio kept, centred on black."""
    width, height = size
    scale = min(width / image.shape[1], height / image.shape[0])
    w, h = max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))
    out = np.zeros((height, width, 3), np.uint8)
    x, y = (width - w) // 2, (height - h) // 2
    out[y:y + h, x:x + w] = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    return out


class AnnotatedVideoWriter:
    """The annotated video of one source (`codec_for` the file name); faces blurred unless ``blur=False``.

    `fps` None takes the frame rate from the first two frames' timestamps (the first frame is held until
    then). `frame_size` is (width, height); None takes it from the first frame. Frames of another size
    (photos of a folder) are letterboxed into it, never stretched. An unwritable path raises OutputError
    here, not at the first frame.
    """

    def __init__(
        self, path: Path, labels: Sequence[str], fps: float | None = None,
        frame_size: tuple[int, int] | None = None, blur: bool = True,
    ) -> None:
        self.path = Path(path)
        self.labels = tuple(labels)
        self.fps = None if fps is None else float(fps)
        self.blur = blur
        self.frames_written = 0
        if self.fps is not None and not self.fps > 0:
            raise OutputError(f"annotated video {self.path}: fps={fps!r} must be positive")
        what = f"cannot write annotated video {self.path}"
        if not self.path.parent.is_dir():
            raise OutputError(f"{what}: folder {self.path.parent} does not exist")
        try:  # fail now on permissions, read-only disks, a folder in the way, ...
            with open(self.path, "wb"):
                pass
        except OSError as exc:
            raise OutputError(f"{what}: {exc.strerror or exc}") from exc
        if not blur:
            log.warning("annotated video %s shows faces unblurred (--no-blur)", self.path)
        self._size = (int(frame_size[0]), int(frame_size[1])) if frame_size is not None else None
        self._writer: cv2.VideoWriter | None = None
        self._held: tuple[np.ndarray, TrackedFaces, float] | None = None
        self._closed = False

    def write(self, image_bgr: np.ndarray, faces: TrackedFaces, timestamp_ms: float = 0.0) -> None:
        """Blur (by default) and annotate a copy of the frame, then append it to the video."""
        if self._closed:
            raise ValueError(f"{self.path} is closed")
        if self.fps is None:
            if self._held is None:
                self._held = (image_bgr, faces, timestamp_ms)
                return
            step_ms = timestamp_ms - self._held[2]
            self.fps = min(max(1000.0 / step_ms if step_ms > 0 else DEFAULT_VIDEO_FPS, 1.0), MAX_VIDEO_FPS)
            self._release_held()
        self._append(image_bgr, faces)

    def _release_held(self) -> None:
        if self._held is not None:
            image, faces, _ = self._held
            self._held = None
            self._append(image, faces)

    def _append(self, image_bgr: np.ndarray, faces: TrackedFaces) -> None:
        if self._size is None:
            self._size = (image_bgr.shape[1], image_bgr.shape[0])
        if self._writer is None:
            self._writer = self._open(self._size)
        frame = image_bgr.copy()
        if self.blur:
            blur_regions(frame, faces.boxes)
        draw_faces(frame, faces, self.labels)
        if (frame.shape[1], frame.shape[0]) != self._size:
            frame = letterbox(frame, self._size)
        self._writer.write(frame)
        self.frames_written += 1

    def _open(self, size: tuple[int, int]) -> cv2.VideoWriter:
        fourcc, description = codec_for(self.path)
        fps = self.fps or DEFAULT_VIDEO_FPS
        writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter.fourcc(*fourcc), fps, size)
        if not writer.isOpened():
            raise OutputError(f"cannot write annotated video {self.path}: OpenCV cannot open a {fourcc} writer")
        log.info("annotated video %s: %s, %dx%d at %g fps", self.path, description, *size, fps)
        return writer

    def close(self) -> None:
        """Write what is held and finish the file; OutputError if frames were written but the file stayed
        empty (disk full). Idempotent."""
        if self._closed:
            return
        if self._held is not None:
            self.fps = self.fps or DEFAULT_VIDEO_FPS
            self._release_held()
        self._closed = True
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        writer.release()
        if self.frames_written and (not self.path.exists() or os.path.getsize(self.path) == 0):
            n = self.frames_written
            raise OutputError(f"annotated video {self.path} is empty after writing {n} frames (disk full?)")
        log.info("annotated video written to %s (%d frames, faces %s)", self.path, self.frames_written,
                 "blurred" if self.blur else "NOT blurred")

    def __enter__(self) -> AnnotatedVideoWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
