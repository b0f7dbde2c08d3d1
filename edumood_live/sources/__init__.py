"""Video sources: one `read` verb over files, image folders, the demo clip, webcams and network streams.

`open_source(SourceConfig(spec=...))` picks the source from the spec. Files and folders are read in
order at full speed (optionally paced by ``max_fps``, thinned by ``stride``) with media timestamps;
live sources (webcam, rtsp://, http(s)://) are in `sources.live` and keep only the newest frame.
Every frame handed out is a contiguous BGR ``uint8`` array of shape (H, W, 3).
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import cv2

from edumood_live.config import SourceConfig
from edumood_live.errors import SourceError
from edumood_live.naming import redact_url
from edumood_live.sources.base import Source, SourceState, SourceStats, to_bgr_uint8
from edumood_live.sources.files import ImageFolderSource, VideoFileSource
from edumood_live.sources.live import CaptureFactory, LiveSource, opencv_capture

logger = logging.getLogger(__name__)

LIVE_SCHEMES = ("rtsp", "rtsps", "http", "https")
SCHEME_RE = re.compile(r"^([a-zA-Z][\w+.-]*)://")  # a URL's scheme: not a local path
HTTP_SCHEMES = ("http", "https")  # a link that serves a file of known length is read like a file


def demo_path() -> Path:
    """The bundled sample clip behind the spec ``demo``."""
    from edumood_live.resources import demo_clip_path

    return demo_clip_path()


def _served_file(config: SourceConfig, url: str) -> cv2.VideoCapture | None:
    """The open capture of an http(s) URL that serves a video file (a known frame count), else None.

    A file is read like a local one: in order, ending at its end. A stream (no frame count) or a link
    that cannot be opened yet is left to `LiveSource`, which waits for it and reconnects.
    """
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


__all__ = [
    "CaptureFactory",
    "ImageFolderSource",
    "LiveSource",
    "Source",
    "SourceConfig",
    "SourceState",
    "SourceStats",
    "VideoFileSource",
    "check_local_path",
    "demo_path",
    "open_source",
    "redact_url",
    "to_bgr_uint8",
]
