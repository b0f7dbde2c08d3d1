"""What every source is: the `Source` interface, its state and counters, and the frame conversion.

Every frame handed out is a contiguous BGR ``uint8`` array of shape (H, W, 3) with the source's
timestamp in milliseconds (media time for files, monotonic capture time for live sources).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType

import cv2
import numpy as np

from edumood_live.states import SourceState
from edumood_live.types import Frame


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


