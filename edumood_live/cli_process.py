"""What the ``edumood-live`` command does to its own process: log handlers, OpenCV's and FFmpeg's native
logging and RTSP options, and the SIGINT/SIGTERM handlers. Only the CLI uses this module.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Protocol

from rich.console import Console

logger = logging.getLogger("edumood_live.cli")

# FFmpeg options for RTSP sources, set only when the user has not set their own: TCP interleaving
# survives NAT and lossy links, and a 0.5 s stream probe cut open-to-first-frame on the test RTSP
# server from 2.4 s to 0.6 s (measured), and with it every reconnect after a camera restart. A camera
# whose stream needs a longer probe: set OPENCV_FFMPEG_CAPTURE_OPTIONS yourself (ours is then not used).
FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
FAST_RTSP_OPTIONS = "rtsp_transport;tcp|analyzeduration;500000"
FFMPEG_LOGLEVEL_ENV, FFMPEG_FATAL_ONLY = "OPENCV_FFMPEG_LOGLEVEL", "8"  # AV_LOG_FATAL
# Loggers whose info lines show by default (start, grid, end, reconnects); the others: warnings unless -v.
SHOWN_BY_DEFAULT = ("edumood_live.cli", "edumood_live.pipeline", "edumood_live.feed", "edumood_live.sources.live",
                    "edumood_live.sinks.annotate", "edumood_live.cluster.driver")
STOPPING_MESSAGE = b"stopping: writing the last window (interrupt again to quit at once)\n"
EXIT_FORCED = 130  # a second interrupt: exit at once


class Stoppable(Protocol):
    """A run that a signal can ask to stop (`Pipeline`, `ClusterRun`)."""

    def stop(self) -> None: ...


class _ShowFilter(logging.Filter):
    """Warnings from everywhere; info from the CLI and the pipeline; everything with -v."""

    def __init__(self, verbosity: int) -> None:
        super().__init__()
        self.verbosity = verbosity

    def filter(self, record: logging.LogRecord) -> bool:
        return self.verbosity > 0 or record.levelno >= logging.WARNING or record.name in SHOWN_BY_DEFAULT


@contextmanager
def logging_to(console: Console, verbosity: int) -> Iterator[None]:
    """Log the package through rich on a terminal (plain lines otherwise); undone on exit."""
    handler: logging.Handler
    if console.is_terminal:
        from rich.logging import RichHandler

        handler = RichHandler(console=console, show_path=False, markup=False, log_time_format="%H:%M:%S")
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    handler.addFilter(_ShowFilter(verbosity))
    package = logging.getLogger("edumood_live")
    previous = package.level
    package.setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO)
    package.addHandler(handler)
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(previous)


@contextmanager
def quiet_opencv(verbosity: int) -> Iterator[None]:
    """Silence OpenCV's and FFmpeg's native log lines unless -vv (our own lines say what failed and
    what is retried); the user's OPENCV_FFMPEG_LOGLEVEL wins. FFmpeg reads it when first used."""
    import cv2

    previous = cv2.utils.logging.getLogLevel()
    set_ffmpeg = verbosity < 2 and FFMPEG_LOGLEVEL_ENV not in os.environ
    if verbosity < 2:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    if set_ffmpeg:
        os.environ[FFMPEG_LOGLEVEL_ENV] = FFMPEG_FATAL_ONLY
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(previous)
        if set_ffmpeg:
            os.environ.pop(FFMPEG_LOGLEVEL_ENV, None)


@contextmanager
def stop_on_signals(pipeline: Stoppable, notice: Callable[[], None] | None = None) -> Iterator[None]:
    """SIGINT/SIGTERM: stop the pipeline cleanly; a second one exits at once (status 130).

    ``notice`` tells a live view to show that it is stopping; without one the notice goes straight to
    stderr. (A raw write into a live view lands inside its redrawn region: the line was overwritten and half
    a panel stayed behind in the scrollback.)
    """
    if threading.current_thread() is not threading.main_thread():  # handlers need the main thread
        yield
        return
    received: list[int] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        received.append(signum)  # os.write, not logging: logging takes locks, unsafe in a handler
        if len(received) > 1:
            os.write(2, b"error: interrupted again, exiting at once (outputs may lack the last window)\n")
            os._exit(EXIT_FORCED)
        if notice is None:
            os.write(2, STOPPING_MESSAGE)
        else:
            notice()  # sets a flag the view draws on its next refresh
        pipeline.stop()  # only sets a flag

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        if received:
            name = signal.Signals(received[0]).name
            logger.info("stopped by %s; writing the final windows (one cut short is marked partial)", name)


def prefer_fast_rtsp(specs: Sequence[str]) -> None:
    """Set FFmpeg's RTSP options (TCP, short probe) for RTSP sources unless the user set their own."""
    if FFMPEG_OPTIONS_ENV in os.environ:
        return
    if any(spec.strip().lower().startswith(("rtsp://", "rtsps://")) for spec in specs):
        os.environ[FFMPEG_OPTIONS_ENV] = FAST_RTSP_OPTIONS


