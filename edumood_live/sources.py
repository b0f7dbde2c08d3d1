"""Video sources: one `read` verb over files, image folders, the demo clip, webcams and network streams.

`open_source(SourceConfig(spec=...))` picks the source from the spec. Files and folders are read in
order at full speed (optionally paced by ``max_fps``, thinned by ``stride``) with media timestamps;
live sources (webcam, rtsp://, http(s)://) live in `live_source.py` and keep only the newest frame.
Every frame handed out is a contiguous BGR ``uint8`` array of shape (H, W, 3).
"""

from __future__ import annotations

import logging
import math
import queue
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import cv2
import numpy as np

from edumood_live.errors import ConfigError, SourceError
from edumood_live.types import Frame

if TYPE_CHECKING:
    from edumood_live.live_source import CaptureFactory

logger = logging.getLogger(__name__)

LIVE_SCHEMES = ("rtsp", "rtsps", "http", "https")
SCHEME_RE = re.compile(r"^([a-zA-Z][\w+.-]*)://")  # a URL's scheme: not a local path
HTTP_SCHEMES = ("http", "https")  # a link that serves a file of known length is read like a file
TRUNCATED_SHARE = 0.9  # a file that ends before this share of its announced frames is reported
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm",
     ".pnm", ".jp2", ".sr", ".ras"}
)
FALLBACK_FPS = 30.0  # used for timestamps when a video file does not declare its frame rate
MAX_CONSECUTIVE_DECODE_ERRORS = 16  # a file that fails this often in a row is treated as ending there
PREFETCH_FRAMES = 2  # video files: frames decoded ahead by a background thread (decoding overlaps the rest)
DECODER_JOIN_S = 2.0  # how long close() waits for the decoder thread to let go of the capture


class SourceState(str, Enum):
    """Where a source stands; compares equal to its string value."""

    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    ENDED = "ended"
    FAILED = "failed"


@dataclass(frozen=True)
class SourceConfig:
    """How to open and read one source. Timeouts, watchdog and backoff apply to live sources only."""

    spec: str = "webcam"
    stride: int = 1  # files/folders: hand out every stride-th frame
    max_fps: float | None = None  # files: replay no faster than this; live: drop frames above it
    open_timeout_s: float = 10.0
    read_timeout_s: float = 5.0
    watchdog_s: float = 10.0  # live: no frame for this long -> drop the connection and reconnect
    max_retries: int | None = None  # live: reconnect attempts after a loss; None = forever
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    folder_fps: float = 1.0  # image folders: timestamps are index * 1000 / folder_fps

    def __post_init__(self) -> None:
        if not isinstance(self.spec, str) or not self.spec.strip():
            raise ConfigError(
                f"spec={self.spec!r} is not allowed; expected 'webcam', a camera index, rtsp://..., "
                "http(s)://..., a video file, a folder of images or 'demo'"
            )
        _require_int("stride", self.stride, minimum=1)
        if self.max_retries is not None:
            _require_int("max_retries", self.max_retries, minimum=0, none_ok=True)
        if self.max_fps is not None:
            _require_positive("max_fps", self.max_fps, none_ok=True)
        for name in ("open_timeout_s", "read_timeout_s", "watchdog_s", "backoff_initial_s",
                     "backoff_max_s", "folder_fps"):
            _require_positive(name, getattr(self, name))
        if self.backoff_max_s < self.backoff_initial_s:
            raise ConfigError(
                f"backoff_max_s={self.backoff_max_s!r} is not allowed; it must be >= "
                f"backoff_initial_s ({self.backoff_initial_s!r})"
            )


def _require_int(name: str, value: object, minimum: int, none_ok: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        extra = " or None" if none_ok else ""
        raise ConfigError(f"{name}={value!r} is not allowed; expected an integer >= {minimum}{extra}")


def _require_positive(name: str, value: object, none_ok: bool = False) -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and value > 0):
        extra = " or None" if none_ok else ""
        raise ConfigError(f"{name}={value!r} is not allowed; expected a finite number > 0{extra}")


@dataclass(frozen=True)
class SourceStats:
    """Counters of one source since it was opened.

    frames_read: frames handed out by `read`. frames_dropped: frames decoded but never handed out
    (superseded by a newer one on a live source, or above max_fps). frames_skipped: passed over on
    purpose (stride; non-image files in a folder). decode_errors: frames or images that could not be
    decoded. reconnects: live connections re-established after a loss. attempt: the reconnect attempt
    in progress (0 when connected).
    """

    frames_read: int = 0
    frames_dropped: int = 0
    frames_skipped: int = 0
    decode_errors: int = 0
    reconnects: int = 0
    state: SourceState = SourceState.CONNECTED
    attempt: int = 0
    last_error: str | None = None


class Source(ABC):
    """A stream of frames. `read` returns the next frame, or None when none came within the timeout."""

    name: str
    live: bool

    @abstractmethod
    def read(self, timeout_s: float = 1.0) -> Frame | None:
        """The next frame (live: the newest not yet returned), or None; then check `finished`."""

    @property
    @abstractmethod
    def finished(self) -> bool:
        """True once the stream has ended for good (end of file, retries exhausted, closed)."""

    @abstractmethod
    def stats(self) -> SourceStats:
        """A snapshot of the counters."""

    @abstractmethod
    def close(self) -> None:
        """Release the underlying capture; safe to call twice, never blocks for long."""

    def __iter__(self) -> Iterator[Frame]:
        while True:
            frame = self.read(1.0)
            if frame is not None:
                yield frame
            elif self.finished:
                return

    def __enter__(self) -> Source:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def to_bgr_uint8(image: np.ndarray | None) -> np.ndarray:
    """Convert grey, BGRA, 16-bit or float images to a contiguous BGR uint8 (H, W, 3) array."""
    if image is None or image.size == 0 or image.ndim not in (2, 3):
        raise ValueError(f"not an image: shape {getattr(image, 'shape', None)}")
    if image.dtype == np.uint16:
        image = cv2.convertScaleAbs(image, alpha=1 / 257)
    elif image.dtype.kind == "f":
        image = np.clip(np.nan_to_num(image) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels == 1:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif channels == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif channels != 3:
        raise ValueError(f"cannot convert an image with {channels} channels to BGR")
    return np.ascontiguousarray(image)


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


class VideoFileSource(Source):
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
        self.name = name or (redact_url(path) if url else str(path))
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

    @property
    def finished(self) -> bool:
        return self._pending is None

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

    def stats(self) -> SourceStats:
        return SourceStats(
            frames_read=self._counts["read"],
            frames_skipped=self._counts["skipped"],
            decode_errors=self._counts["errors"],
            state=SourceState.ENDED if self.finished else SourceState.CONNECTED,
            last_error=self._last_error,
        )

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


class ImageFolderSource(Source):
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

    @property
    def finished(self) -> bool:
        return self._pending is None

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

    def stats(self) -> SourceStats:
        return SourceStats(
            frames_read=self._counts["read"],
            frames_skipped=self._counts["skipped"],
            decode_errors=self._counts["errors"],
            state=SourceState.ENDED if self.finished else SourceState.CONNECTED,
            last_error=self._last_error,
        )

    def close(self) -> None:
        self._pending = None


def demo_path() -> Path:
    """The bundled sample clip behind the spec ``demo``."""
    from edumood_live.resources import demo_clip_path

    return demo_clip_path()


def redact_url(url: str) -> str:
    """The URL with any password replaced by ***, so it can be logged and written to outputs."""
    return re.sub(r"^([a-zA-Z][\w+.-]*://[^/@:]*):[^/@]*@", r"\1:***@", url)


def _served_file(config: SourceConfig, url: str) -> cv2.VideoCapture | None:
    """The open capture of an http(s) URL that serves a video file (a known frame count), else None.

    A file is read like a local one: in order, ending at its end. A stream (no frame count) or a link
    that cannot be opened yet is left to `LiveSource`, which waits for it and reconnects.
    """
    from edumood_live.live_source import opencv_capture

    capture = opencv_capture(url, config.open_timeout_s, config.read_timeout_s)
    count = capture.get(cv2.CAP_PROP_FRAME_COUNT) if capture.isOpened() else 0.0
    if math.isfinite(count) and count > 0:
        logger.info("%s serves a video file of %d frames: read like a file", redact_url(url), int(count))
        return capture
    capture.release()
    return None


def open_source(config: SourceConfig, *, capture_factory: CaptureFactory | None = None) -> Source:
    """Open the source named by ``config.spec``; raises SourceError with one clear line when it cannot.

    ``capture_factory`` replaces the OpenCV capture of a live source (tests drive the webcam path with a
    file-backed capture this way).
    """
    spec = config.spec.strip()
    scheme = SCHEME_RE.match(spec)
    if spec == "demo":
        return VideoFileSource(config, demo_path(), name="demo")
    if spec == "webcam" or spec.isdigit() or scheme is not None and scheme.group(1).lower() in LIVE_SCHEMES:
        from edumood_live.live_source import LiveSource  # builds on this module's base classes

        target: str | int = 0 if spec == "webcam" else int(spec) if spec.isdigit() else spec
        if capture_factory is None and scheme is not None and scheme.group(1).lower() in HTTP_SCHEMES:
            served = _served_file(config, spec)
            if served is not None:
                return VideoFileSource(config, spec, capture=served)
        return LiveSource(config, target, capture_factory=capture_factory)
    if scheme is not None:
        raise SourceError(
            f"unknown scheme {scheme.group(1)}:// in source {redact_url(spec)!r}; allowed: "
            + ", ".join(f"{s}://" for s in LIVE_SCHEMES)
            + ", 'webcam', a camera index, a video file, a folder of images, 'demo'"
        )
    check_local_path(spec)
    path = Path(spec).expanduser()
    return ImageFolderSource(config, path) if path.is_dir() else VideoFileSource(config, path)


def check_local_path(spec: str) -> None:
    """SourceError when ``spec`` names a local file or folder that does not exist (cheap: no opening)."""
    spec = spec.strip()
    if spec in ("demo", "webcam") or spec.isdigit() or SCHEME_RE.match(spec):
        return
    if not Path(spec).expanduser().exists():
        raise SourceError(
            f"source {spec!r}: no such file or folder (other sources: 'webcam', a camera index, rtsp://..., "
            "http(s)://..., 'demo')"
        )
