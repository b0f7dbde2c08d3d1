"""The one camera stand-in, shared by tests and benchmarks (no webcam exists on these machines).

`PacedCapture` looks like the part of `cv2.VideoCapture` a `LiveSource` uses (`sources.live.CaptureLike`):
it decodes a real clip (or repeats one image) at ``fps`` in real time and loops for ever, as a camera
never ends. ``max_frames`` ends the stream early (a camera unplugged); ``hang_after`` makes `grab` block
until `release_hang` is set (a read that never returns).
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import cv2
import numpy as np


def video_fps(path: Path) -> float:
    """The frame rate a video file declares (30 when it declares none)."""
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return fps if math.isfinite(fps) and fps > 0 else 30.0


class PacedCapture:
    """A real `cv2.VideoCapture` on a clip (or one repeated image), paced like a camera."""

    def __init__(
        self,
        path: Path | None = None,
        fps: float | None = None,
        image: np.ndarray | None = None,
        max_frames: int | None = None,
        hang_after: int | None = None,
    ) -> None:
        if (path is None) == (image is None):
            raise ValueError("give a video path or an image")
        self._cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG) if path is not None else None
        self._image = image
        self._period_s = 1.0 / (fps or (video_fps(path) if path is not None else 30.0))
        self._next_s: float | None = None
        self._max_frames = max_frames
        self._hang_after = hang_after
        self.release_hang = threading.Event()
        self.frames = 0

    def isOpened(self) -> bool:  # OpenCV spells it so
        return self._image is not None or (self._cap is not None and self._cap.isOpened())

    def grab(self) -> bool:
        if self._hang_after is not None and self.frames >= self._hang_after:
            self.release_hang.wait()
            return False
        if self._max_frames is not None and self.frames >= self._max_frames:
            return False
        now = time.monotonic()
        self._next_s = now if self._next_s is None else self._next_s
        if self._next_s > now:
            time.sleep(self._next_s - now)
        self._next_s += self._period_s
        ok = True
        if self._cap is not None:
            ok = self._cap.grab()
            if not ok:  # loop the clip, as a camera never ends
                self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok = self._cap.grab()
        self.frames += ok
        return ok

    def retrieve(self) -> tuple[bool, np.ndarray | None]:
        if self._cap is None:
            return True, self._image
        return self._cap.retrieve()

    def release(self) -> None:
        if self._cap is not None:
            self._cap.release()
