"""Live sources (webcam, rtsp://, http(s)://): a grabber thread keeps only the newest frame.

Each connection is a `_Link`: one capture object and the daemon thread that reads it. A supervisor
thread watches the link: when reads fail (a killed server) or no frame arrives for `watchdog_s` (a
frozen server, whose read can block for several read timeouts or for ever), it abandons the link and
opens a new one after a capped exponential backoff, for ever or up to `max_retries` attempts. An
abandoned link is never touched from outside its thread: the thread releases its own capture when the
blocked call returns, so `close()` and reconnects never wait on a hung read.

Network captures use OpenCV's FFmpeg backend with open/read timeouts. FFmpeg probes a new RTSP stream
for about two seconds before the first frame; set ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` (e.g.
``rtsp_transport;tcp|analyzeduration;500000``) to shorten that.
"""

from __future__ import annotations

import functools
import glob
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Protocol

import cv2
import numpy as np

from edumood_live.config import SourceConfig
from edumood_live.errors import SourceError
from edumood_live.naming import redact_url
from edumood_live.sources.base import Source, SourceState, SourceStats, to_bgr_uint8
from edumood_live.sources.retry import Backoff
from edumood_live.types import Frame

logger = logging.getLogger(__name__)

OPEN_MARGIN_S = 2.0  # grace on top of open_timeout_s before an open that has not returned is given up
CLOSE_JOIN_S = 1.0  # how long close() waits for the grabber to release its capture
STALL_FRACTION = 0.9  # a grab that blocked this fraction of read_timeout_s returned a stale frame


class CaptureLike(Protocol):
    """The part of `cv2.VideoCapture` a live source uses."""

    def isOpened(self) -> bool: ...  # OpenCV spells it so

    def grab(self) -> bool: ...

    def retrieve(self) -> tuple[bool, np.ndarray | None]: ...

    def release(self) -> None: ...


CaptureFactory = Callable[[], CaptureLike]


def opencv_capture(target: str | int, open_timeout_s: float, read_timeout_s: float) -> cv2.VideoCapture:
    """An OpenCV capture: a camera index on the default backend, a URL on FFmpeg with timeouts."""
    if isinstance(target, int):
        return cv2.VideoCapture(target)
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, round(open_timeout_s * 1000),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC, round(read_timeout_s * 1000),
    ]
    return cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)


def camera_hint() -> str:
    """Why a camera index may have failed, for the error line."""
    if sys.platform.startswith("linux"):
        devices = sorted(glob.glob("/dev/video*"))
        if not devices:
            return "no camera device exists (/dev/video* is absent); use a file, a folder, rtsp://... or demo"
        return f"it may be in use or the index may be wrong (devices: {', '.join(devices)})"
    return "check that the camera is connected and not in use, or try another index"


class _Link:
    """One capture object and the daemon thread reading it."""

    def __init__(self, number: int) -> None:
        self.number = number  # 0 for the first connection
        self.started_at = time.monotonic()
        self.opened_at = 0.0
        self.last_frame_at: float | None = None
        self.frames = 0
        self.error: str | None = None
        self.opened = threading.Event()
        self.settled = threading.Event()  # opened, or ended before opening
        self.ended = threading.Event()
        self.abandoned = threading.Event()
        self.thread: threading.Thread | None = None


class LiveSource(Source):
    """A webcam or network stream; `read` returns the newest frame not yet returned."""

    live = True

    def __init__(
        self,
        config: SourceConfig,
        target: str | int,
        capture_factory: CaptureFactory | None = None,
        name: str | None = None,
    ) -> None:
        self.name = name or (f"camera:{target}" if isinstance(target, int) else redact_url(target))
        self._config = config
        self._target = target
        self._factory: CaptureFactory = capture_factory or functools.partial(
            opencv_capture, target, config.open_timeout_s, config.read_timeout_s
        )
        self._period_s = 0.0 if config.max_fps is None else 1.0 / config.max_fps
        self._next_due_s = 0.0  # max_fps schedule, used by the current grabber only
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._latest: Frame | None = None
        self._grabbed = 0
        self._counts = {"read": 0, "dropped": 0, "errors": 0, "reconnects": 0}
        self._state = SourceState.CONNECTED
        self._attempt = 0
        self._last_error: str | None = None
        self._finished = False
        self._link_count = 0
        self._ever_connected = False
        first = self._start_link()  # the first open is synchronous: a missing camera fails here
        first.settled.wait(config.open_timeout_s + OPEN_MARGIN_S)
        if not first.opened.is_set():
            if isinstance(target, int):
                self._stop.set()
                first.abandoned.set()
                raise SourceError(self._open_error(first))
            # A network camera that is not up yet (a recorder started before the camera): wait for it with
            # the same backoff and retry limit as for a lost connection; the run writes gap windows meanwhile.
            self._state, self._last_error = SourceState.RECONNECTING, self._open_error(first)
        self._supervisor = threading.Thread(
            target=self._supervise, args=(first,), name=f"edumood-watch-{self.name}", daemon=True
        )
        self._supervisor.start()

    def _open_error(self, link: _Link) -> str:
        if isinstance(self._target, int):
            return f"camera {self._target} could not be opened; {camera_hint()}"
        why = link.error or f"no answer within {self._config.open_timeout_s:g} s"
        return f"{self.name} could not be opened ({why}); check the URL, credentials and that it is reachable"

    # ----------------------------------------------------------------- consumer side

    @property
    def finished(self) -> bool:
        return self._finished

    def read(self, timeout_s: float = 1.0) -> Frame | None:
        deadline = time.monotonic() + max(timeout_s, 0.0)
        with self._cond:
            while self._latest is None:
                remaining = deadline - time.monotonic()
                if self._finished or remaining <= 0:
                    return None
                self._cond.wait(remaining)
            frame, self._latest = self._latest, None
            self._counts["read"] += 1
            return frame

    def stats(self) -> SourceStats:
        with self._cond:
            return SourceStats(
                frames_read=self._counts["read"],
                frames_dropped=self._counts["dropped"],
                decode_errors=self._counts["errors"],
                reconnects=self._counts["reconnects"],
                state=self._state,
                attempt=self._attempt,
                last_error=self._last_error,
            )

    def close(self) -> None:
        self._stop.set()
        supervisor = getattr(self, "_supervisor", None)
        if supervisor is not None and supervisor is not threading.current_thread():
            supervisor.join(timeout=CLOSE_JOIN_S)
        with self._cond:
            link = self._link
            link.abandoned.set()
            if self._state is not SourceState.FAILED:
                self._state = SourceState.ENDED
            self._finished = True
            self._cond.notify_all()
        if link.thread is not None and link.thread is not threading.current_thread():
            link.thread.join(timeout=CLOSE_JOIN_S)  # lets a responsive capture release its device

    # ----------------------------------------------------------------- grabber side

    def _start_link(self) -> _Link:
        """Start a new connection in its own daemon thread; it becomes the current link."""
        with self._cond:
            link = _Link(self._link_count)
            self._link_count += 1
            self._link = link
            link.thread = threading.Thread(
                target=self._run_link, args=(link,), name=f"edumood-grab-{self.name}-{link.number}",
                daemon=True,
            )
            link.thread.start()
            return link

    def _run_link(self, link: _Link) -> None:
        """Open the capture and grab frames until it fails or the link is abandoned."""
        cap: CaptureLike | None = None
        try:
            cap = self._factory()
            if link.abandoned.is_set():
                return
            if not cap.isOpened():
                link.error = "the capture could not be opened"
                return
            link.opened_at = time.monotonic()
            link.opened.set()
            link.settled.set()
            while not link.abandoned.is_set():
                started = time.monotonic()
                if not cap.grab():
                    link.error = "no frame (stream ended or connection lost)"
                    return
                if time.monotonic() - started >= STALL_FRACTION * self._config.read_timeout_s:
                    self._on_stale_grab()
                else:
                    self._on_grab(link, cap)
        except Exception as exc:  # a broken capture is a lost connection, not a crash
            link.error = f"{type(exc).__name__}: {exc}"
        finally:
            if cap is not None:
                try:
                    cap.release()
                except Exception:  # releasing a dead capture must not mask why it died
                    logger.debug("%s: release failed", self.name, exc_info=True)
            link.ended.set()
            link.settled.set()

    def _on_stale_grab(self) -> None:
        """A grab that returned only after the read timeout fired: FFmpeg flushing its decoder after
        a stall (a frozen server yields a few such frames, one per read timeout). The picture is old,
        so it is dropped and does not count as a sign of life for the watchdog."""
        with self._cond:
            self._grabbed += 1
            self._counts["dropped"] += 1

    def _on_grab(self, link: _Link, cap: CaptureLike) -> None:
        """Decode the grabbed frame (unless max_fps drops it) and make it the newest one."""
        now = time.monotonic()
        if self._period_s and now < self._next_due_s - self._period_s / 4:
            link.last_frame_at = now
            with self._cond:
                self._grabbed += 1
                self._counts["dropped"] += 1
            return
        if self._period_s:
            base = self._next_due_s if self._next_due_s > now - self._period_s else now
            self._next_due_s = base + self._period_s
        ok, image = cap.retrieve()
        try:
            if not ok:
                raise ValueError("the capture returned no image")
            image = to_bgr_uint8(image)
        except ValueError as exc:
            with self._cond:
                self._counts["errors"] += 1
                self._last_error = str(exc)
            return
        link.last_frame_at = now
        with self._cond:
            if link.abandoned.is_set():
                return
            if link.frames == 0 and link.number > 0:
                if self._ever_connected:
                    self._counts["reconnects"] += 1
                    logger.info("%s: reconnected after %.1f s", self.name, now - link.started_at)
                else:
                    logger.info("%s: connected after %d attempt(s)", self.name, link.number)
            if self._latest is not None:
                self._counts["dropped"] += 1
            link.frames += 1
            self._ever_connected = True
            self._state, self._attempt = SourceState.CONNECTED, 0
            self._latest = Frame(image, now * 1000.0, self._grabbed, self.name)
            self._grabbed += 1
            self._cond.notify_all()

    # ----------------------------------------------------------------- supervisor

    def _supervise(self, link: _Link) -> None:
        """Watch the current link; on loss, back off and reconnect until closed or out of retries."""
        backoff = Backoff(self._config, self._stop)
        while True:
            reason = self._watch(link)
            if reason is None:
                return
            with self._cond:
                link.abandoned.set()
                # a link that held for a while starts the count afresh; one that failed at once does not
                held_s = (link.last_frame_at or link.opened_at) - link.opened_at if link.frames else 0.0
                delay = backoff.fail(afresh=held_s >= self._config.watchdog_s)
                self._last_error = reason
                if delay is None:
                    self._state, self._finished = SourceState.FAILED, True
                    self._cond.notify_all()
                    logger.error("%s: %s; giving up after %d retries", self.name, reason, self._config.max_retries)
                    return
                self._state, self._attempt = SourceState.RECONNECTING, backoff.failures
            failures = backoff.failures
            if self._ever_connected:
                logger.warning("%s: %s; reconnect attempt %d in %.1f s", self.name, reason, failures, delay)
            else:
                logger.warning("waiting for %s (%s); attempt %d in %.1f s", self.name, reason, failures, delay)
            if backoff.wait(delay):
                return
            with self._cond:  # close() abandons the current link under this lock: start none after it
                if self._stop.is_set():
                    return
                link = self._start_link()

    def _watch(self, link: _Link) -> str | None:
        """Block until `link` is lost (returns why) or the source is closing (returns None)."""
        config = self._config
        poll_s = min(0.1, config.watchdog_s / 10)
        while not self._stop.is_set():
            if link.ended.wait(poll_s):
                return link.error or "the capture stopped"
            now = time.monotonic()
            if link.opened.is_set():
                silent_s = now - (link.last_frame_at or link.opened_at)
                if silent_s > config.watchdog_s:
                    return f"no frame for {silent_s:.1f} s (watchdog)"
            elif now - link.started_at > config.open_timeout_s + OPEN_MARGIN_S:
                return f"open did not return within {config.open_timeout_s:g} s"
        return None
