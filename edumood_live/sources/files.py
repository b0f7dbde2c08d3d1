"""Files and image folders: read in order at full speed (optionally paced by ``max_fps``, thinned by
``stride``), with media timestamps, so a replay gives the same rows every time."""

from __future__ import annotations

import logging
import math
import queue
import re
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from edumood_live.config import SourceConfig
from edumood_live.errors import SourceError
from edumood_live.naming import redact_url
from edumood_live.sources.base import Source, SourceState, SourceStats, to_bgr_uint8
from edumood_live.types import Frame

logger = logging.getLogger(__name__)

TRUNCATED_SHARE = 0.9  # a file that ends before this share of its announced frames is reported
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm",
     ".pnm", ".jp2", ".sr", ".ras"}
)
FALLBACK_FPS = 30.0  # used for timestamps when a video file does not declare its frame rate
MAX_CONSECUTIVE_DECODE_ERRORS = 16  # a file that fails this often in a row is treated as ending there
PREFETCH_FRAMES = 2  # video files: frames decoded ahead by a background thread (decoding overlaps the rest)
DECODER_JOIN_S = 2.0  # how long close() waits for the decoder thread to let go of the capture


class _Pacer:
    """Holds `read` back so frames are handed out no faster than max_fps (None: no limit)."""

    def __init__(self, max_fps: float | None) -> None:
        self.period_s = 0.0 if max_fps is None else 1.0 / max_fps
        self.next_at = 0.0

    def wait(self, timeout_s: float) -> bool:
        """Sleep until the next frame is due (at most timeout_s); True when it is due."""
        delay = self.next_at - time.monotonic()
        if delay > 0:
            time.sleep(min(delay, max(timeout_s, 0.0)))
        now = time.monotonic()
        if now < self.next_at:
            return False
        self.next_at = (self.next_at if self.next_at > now - self.period_s else now) + self.period_s
        return True


class _FileSource(Source):
    """What the file sources share: the frame held for the next read, their counters (frames read,
    skipped, undecodable) and last error."""

    _counts: dict[str, int]
    _last_error: str | None
    _pending: Frame | None  # the next frame to hand out; None once the source is done

    @property
    def finished(self) -> bool:
        return self._pending is None

    def stats(self) -> SourceStats:
        return SourceStats(
            frames_read=self._counts["read"],
            frames_skipped=self._counts["skipped"],
            decode_errors=self._counts["errors"],
            state=SourceState.ENDED if self.finished else SourceState.CONNECTED,
            last_error=self._last_error,
        )


class VideoFileSource(_FileSource):
    """A video file, decoded in order with FFmpeg; timestamps are media time in ms.

    The first frame is decoded at once (a file that cannot be read fails here); after that a decoder
    thread stays up to `PREFETCH_FRAMES` ahead of `read`, so decoding runs on the other core while the
    caller detects and classifies (OpenCV releases the GIL). Frame order and counts are unchanged.
    """

    live = False

    def __init__(self, config: SourceConfig, path: Path | str, name: str | None = None,
                 capture: cv2.VideoCapture | None = None) -> None:
        """``path`` is a file, or the URL of a file served over HTTP (then ``capture`` is its open capture)."""
        url = isinstance(path, str)
        self.name = name or (redact_url(str(path)) if url else str(path))
        self._config = config
        if not url and not Path(path).is_file():
            raise SourceError(f"video file {path} does not exist")
        self._cap = capture or cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        if not self._cap.isOpened():
            self._cap.release()
            raise SourceError(f"{self.name} could not be opened as a video (not a video file, or damaged)")
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self._fps = fps if math.isfinite(fps) and 0 < fps < 1000 else FALLBACK_FPS
        count = self._cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self._frame_count = int(count) if math.isfinite(count) and count > 0 else None
        self._index = 0  # ordinal of the next frame the decoder yields
        self._last_ts = -math.inf
        self._ended = False
        self._pacer = _Pacer(config.max_fps)
        self._counts = {"read": 0, "skipped": 0, "errors": 0}
        self._last_error: str | None = None
        self._pending: Frame | None = self._next_frame()
        if self._pending is None:
            self._cap.release()
            raise SourceError(f"{self.name} opened but contains no decodable video frame")
        self._ahead: queue.Queue[Frame | BaseException | None] = queue.Queue(maxsize=PREFETCH_FRAMES)
        self._stop = threading.Event()
        self._decoder = threading.Thread(
            target=self._decode_ahead, name=f"edumood-decode-{Path(self.name).name[:40]}", daemon=True
        )
        self._decoder.start()

    def read(self, timeout_s: float = 1.0) -> Frame | None:
        if self._pending is None or not self._pacer.wait(timeout_s):
            return None
        frame = self._pending
        self._counts["read"] += 1
        upcoming = self._ahead.get()
        if isinstance(upcoming, BaseException):  # the decoder failed: raise it here, as before
            self.close()
            raise upcoming
        self._pending = upcoming
        if self._pending is None:
            self.close()
        return frame

    def _decode_ahead(self) -> None:
        """Decoder thread: pass over stride-1 frames, decode the next, queue it; None at the end."""
        try:
            while not self._stop.is_set():
                for _ in range(self._config.stride - 1):
                    if not self._grab():
                        break
                    self._counts["skipped"] += 1
                frame = self._next_frame()
                if frame is None:
                    self._check_length()
                self._put(frame)
                if frame is None:
                    return
        except Exception as exc:  # handed to the reader, which raises it
            self._put(exc)
        finally:
            self._ended = True
            self._cap.release()

    def _put(self, item: Frame | BaseException | None) -> None:
        while not self._stop.is_set():
            try:
                self._ahead.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _next_frame(self) -> Frame | None:
        """Decode the next frame; None at the end of the file."""
        while self._grab():
            ok, image = self._cap.retrieve()
            try:
                if not ok:
                    raise ValueError("the decoder returned no image")
                return Frame(to_bgr_uint8(image), self._timestamp_ms(), self._index - 1, self.name)
            except ValueError as exc:
                self._error(f"frame {self._index - 1}: {exc}")
        return None

    def _grab(self) -> bool:
        """Advance the decoder by one frame, counting undecodable ones on the way; False at the end."""
        failures = 0
        while not self._ended:
            if self._cap.grab():
                self._index += 1
                return True
            position = self._cap.get(cv2.CAP_PROP_POS_FRAMES)
            if self._frame_count is None or position >= self._frame_count:
                self._ended = True  # a clean end of file
                break
            failures += 1
            self._error(f"frame {self._index} of {self._frame_count} could not be decoded")
            if failures >= MAX_CONSECUTIVE_DECODE_ERRORS:
                logger.warning("%s: stopping after %d undecodable frames in a row (truncated file?)",
                               self.name, failures)
                self._ended = True
        return False

    def _check_length(self) -> None:
        """At the end: warn when far fewer frames decoded than the container announces (a truncated file)."""
        announced = self._frame_count
        if announced and self._index < TRUNCATED_SHARE * announced:
            self._last_error = (f"only {self._index} of the {announced} frames the file announces could be read "
                                "(truncated or damaged file?)")
            logger.warning("%s: %s", self.name, self._last_error)

    def _timestamp_ms(self) -> float:
        """Media time of the frame just decoded; index * 1000 / fps when the container has none."""
        ts = self._cap.get(cv2.CAP_PROP_POS_MSEC)
        fallback = (self._index - 1) * 1000.0 / self._fps
        if not math.isfinite(ts) or ts < 0 or (ts == 0 and self._index > 1) or ts <= self._last_ts:
            ts = max(fallback, self._last_ts + 1000.0 / self._fps)
        self._last_ts = ts
        return ts

    def _error(self, message: str) -> None:
        self._counts["errors"] += 1
        self._last_error = message
        logger.debug("%s: %s", self.name, message)

    def close(self) -> None:
        self._pending = None
        self._stop.set()
        while True:  # unblock a decoder waiting for room in the queue
            try:
                self._ahead.get_nowait()
            except queue.Empty:
                break
        if self._decoder is not threading.current_thread():
            self._decoder.join(timeout=DECODER_JOIN_S)  # it releases the capture on its way out


def _natural_key(path: Path) -> list[object]:
    """Sort key that puts img2 before img10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


class ImageFolderSource(_FileSource):
    """The images of one folder in natural name order; timestamps index * 1000 / folder_fps."""

    live = False

    def __init__(self, config: SourceConfig, folder: Path, name: str | None = None) -> None:
        self.name = name or str(folder)
        self._config = config
        files = sorted((p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")),
                       key=_natural_key)
        self._images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        skipped = [p.name for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
        if skipped:
            logger.info("%s: skipping %d non-image file(s), e.g. %s", self.name, len(skipped), skipped[0])
        self._counts = {"read": 0, "skipped": len(skipped), "errors": 0}
        self._last_error: str | None = None
        self._position = 0  # next file in self._images; also the frame index
        self._pacer = _Pacer(config.max_fps)
        if not self._images:
            raise SourceError(f"folder {folder} contains no image files ({len(files)} other file(s))")
        self._pending = self._next_frame()
        if self._pending is None:
            raise SourceError(f"folder {folder}: none of its {len(self._images)} image file(s) could be read")

    def read(self, timeout_s: float = 1.0) -> Frame | None:
        if self._pending is None or not self._pacer.wait(timeout_s):
            return None
        frame = self._pending
        self._counts["read"] += 1
        skip = min(self._config.stride - 1, len(self._images) - self._position)
        self._position += skip
        self._counts["skipped"] += skip
        self._pending = self._next_frame()
        return frame

    def _next_frame(self) -> Frame | None:
        """The next readable image, as a frame indexed by its position in the folder; None after the last."""
        while self._position < len(self._images):
            path = self._images[self._position]
            self._position += 1
            try:
                data = np.fromfile(path, dtype=np.uint8)
                image = to_bgr_uint8(cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None)
            except (OSError, ValueError, cv2.error) as exc:
                self._counts["errors"] += 1
                self._last_error = f"{path.name}: {exc}"
                logger.warning("%s: skipping undecodable image %s", self.name, path.name)
                continue
            index = self._position - 1
            return Frame(image, index * 1000.0 / self._config.folder_fps, index, self.name)
        return None

    def close(self) -> None:
        self._pending = None


