"""When to run the face detector: every K-th frame, fixed or chosen from how fast faces move.

Between detector frames the tracker carries the boxes forward (constant velocity). That is exact
enough while a face moves little relative to its size, so ``auto`` measures the motion of matched
tracks between detector frames and picks the largest K that keeps the expected shift under
`AUTO_TARGET_SHIFT` of a face, with K x frame interval bounded so new faces still appear quickly.
"""

from __future__ import annotations

import math

import numpy as np

from edumood_live.config import AUTO, Auto
from edumood_live.types import TrackedFaces

AUTO_TARGET_SHIFT = 0.05  # carried boxes may drift at most this fraction of a face size
AUTO_MAX_EVERY = 8  # auto never skips more than 7 frames in a row
AUTO_MAX_GAP_MS = 400.0  # ... nor leaves more than this much source time between detections
MOTION_SMOOTHING = 0.3  # weight of the newest motion measurement in the running estimate


class DetectSchedule:
    """``due(timestamp_ms)`` says whether this frame needs the detector; `observe` feeds back tracks."""

    def __init__(self, every: int | Auto | str) -> None:
        self.auto = every == AUTO
        self.every = 1 if self.auto else int(every)  # current K
        self._since = math.inf  # frames since the last detection; inf: detect on the first frame
        self._last_ts: float | None = None
        self._interval_ms: float | None = None  # running frame interval
        self._motion: float | None = None  # face sizes per ms, running estimate
        self._previous: dict[int, tuple[np.ndarray, float]] = {}

    def due(self, timestamp_ms: float) -> bool:
        """True when the detector should run on the frame at `timestamp_ms` (call once per frame)."""
        if self._last_ts is not None and timestamp_ms > self._last_ts:
            step = timestamp_ms - self._last_ts
            self._interval_ms = step if self._interval_ms is None else 0.8 * self._interval_ms + 0.2 * step
        self._last_ts = timestamp_ms
        if self._since + 1 >= self.every:
            self._since = 0
            return True
        self._since += 1
        return False

    def observe(self, faces: TrackedFaces, timestamp_ms: float) -> None:
        """After a detector frame: update the motion estimate and, in auto mode, K."""
        if not self.auto:
            return
        pairs = zip(faces.track_ids.tolist(), faces.boxes, strict=True)
        current = {int(t): (b.astype(np.float64), timestamp_ms) for t, b in pairs}
        shifts = []
        for tid, (box, ts) in current.items():
            if tid in self._previous:
                old, old_ts = self._previous[tid]
                if ts > old_ts:
                    size = max(float(np.max(box[2:] - box[:2])), 1.0)
                    shift = float(np.abs((box[:2] + box[2:]) / 2 - (old[:2] + old[2:]) / 2).max())
                    shifts.append(shift / size / (ts - old_ts))
        self._previous = current
        if shifts:
            measured = float(np.median(shifts))
            self._motion = (
                measured
                if self._motion is None
                else (1 - MOTION_SMOOTHING) * self._motion + MOTION_SMOOTHING * measured
            )
        self.every = self._choose()

    def _choose(self) -> int:
        """Largest K allowed by the motion estimate and the time bound; 1 while motion is unknown."""
        interval = self._interval_ms
        if interval is None or interval <= 0:
            return 1
        by_time = max(int(AUTO_MAX_GAP_MS // interval), 1)
        if self._motion is None:
            return 1 if self._previous else min(by_time, AUTO_MAX_EVERY)  # no faces: nothing to lose
        by_motion = int(AUTO_TARGET_SHIFT / max(self._motion * interval, 1e-9))
        return max(1, min(by_motion, by_time, AUTO_MAX_EVERY))
