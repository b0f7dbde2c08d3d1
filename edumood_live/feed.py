"""One source's run: its tracker, aggregator and detection schedule, and how a frame goes through them.

A `Feed` turns one frame into tracked faces and closed windows (`step`), says what the live view shows
of it (`view`) and closes its last windows (`finish`). How the detector is run is a strategy:
`InlineDetection` (files, and every source with ``background_detection=False``: the frame waits for
the detector when the schedule says so) or `BackgroundDetection` (live sources: the detector runs
beside the loop, no frame waits for it, and a finished detection is applied at its own frame's time).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

import cv2
import numpy as np

from edumood_live.aggregator import Aggregator, AggregatorConfig, engagement_index, live_attention, live_shares
from edumood_live.classifier import Classifier
from edumood_live.config import AUTO, RunConfig
from edumood_live.detector import FaceDetector
from edumood_live.errors import FrameError, SourceError
from edumood_live.schedule import DetectSchedule
from edumood_live.sinks import LiveState
from edumood_live.sources import Source, SourceStats
from edumood_live.states import SourceState
from edumood_live.stats import StageTimer
from edumood_live.tracker import Tracker
from edumood_live.types import Detections, Frame, TrackedFaces, WindowSummary

logger = logging.getLogger(__name__)

# What one bad frame may raise: a stage refusing its image, OpenCV failing on it. Anything else is a bug
# and ends the run with its own traceback at once.
FRAME_ERRORS: tuple[type[Exception], ...] = (FrameError, cv2.error)
LIVE_GAP_GRACE_MS = 1000.0  # a live source silent this long has its empty windows closed as gaps
FPS_WINDOW_S = 2.0  # the live view's frame rate is measured over this much wall time


class Detection(Protocol):
    """How a feed gets one frame's faces: detect (when due), classify, track."""

    detector: FaceDetector

    def faces(self, feed: Feed, frame: Frame, timer: StageTimer) -> tuple[TrackedFaces, bool]:
        """This frame's tracked faces, and whether a detection landed with them."""
        ...


def classify(classifier: Classifier | None, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N, K) probabilities; (N, 0) when no expression classifier runs (``--signals attention``)."""
    if classifier is None:
        return np.zeros((len(boxes), 0), np.float32)
    return classifier.classify(image, boxes)


class InlineDetection:
    """The frame waits for the detector when the schedule says so; tracks are carried in between.
    `classifier` None: no expression classifier runs (faces get zero-column probabilities)."""

    def __init__(self, detector: FaceDetector, classifier: Classifier | None) -> None:
        self.detector = detector
        self.classifier = classifier

    def faces(self, feed: Feed, frame: Frame, timer: StageTimer) -> tuple[TrackedFaces, bool]:
        image, ts = frame.image, frame.timestamp_ms
        if feed.schedule.due(ts):
            detections = self.detector.detect(image)
            timer.lap("detect")
            probs = classify(self.classifier, image, detections.boxes)
            timer.lap("classify")
            faces = feed.tracker.update(detections, probs, ts)
            feed.schedule.observe(faces, ts)
            return faces, True
        probs = classify(self.classifier, image, feed.tracker.active_boxes(ts))
        timer.lap("classify")
        return feed.tracker.carry(probs, ts), False


class BackgroundDetection:
    """A live frame never waits for the detector: the first frame is detected in line (the source starts
    with faces); after that a due detection runs in `pool` on its frame, and once it has finished it is
    applied first, at its own frame's time (its faces classified on that frame), exactly as an in-line
    detection would have been. Every frame's own faces are the carried tracks."""

    def __init__(self, detector: FaceDetector, classifier: Classifier | None, pool: ThreadPoolExecutor) -> None:
        self.detector = detector
        self.inline = InlineDetection(detector, classifier)
        self.pool = pool
        self.pending: Future[tuple[Detections, float]] | None = None
        self.pending_frame: Frame | None = None
        self.wanted = False  # the schedule asked for a detection while one was still running

    def faces(self, feed: Feed, frame: Frame, timer: StageTimer) -> tuple[TrackedFaces, bool]:
        if feed.last_ts is None:
            return self.inline.faces(feed, frame, timer)
        classifier = self.inline.classifier
        landed = self.pending is not None and self.pending.done()
        if landed:
            assert self.pending is not None and self.pending_frame is not None
            past, future = self.pending_frame, self.pending
            self.pending = self.pending_frame = None
            detections, detect_s = future.result()  # a detector error fails this frame, like in line
            timer.add("detect", detect_s)
            timer.restart()
            probs = classify(classifier, past.image, detections.boxes)
            feed.schedule.observe(feed.tracker.update(detections, probs, past.timestamp_ms), past.timestamp_ms)
            timer.lap("classify")
        self.wanted |= feed.schedule.due(frame.timestamp_ms)
        if self.wanted and self.pending is None:
            self.pending = self.pool.submit(self._timed_detect, frame.image)
            self.pending_frame, self.wanted = frame, False
        timer.restart()
        probs = classify(classifier, frame.image, feed.tracker.active_boxes(frame.timestamp_ms))
        faces = feed.tracker.carry(probs, frame.timestamp_ms)
        timer.lap("classify")
        return faces, landed

    def _timed_detect(self, image: np.ndarray) -> tuple[Detections, float]:
        t0 = time.perf_counter()
        return self.inline.detector.detect(image), time.perf_counter() - t0


@dataclass
class Feed:
    """One source and its per-source stages and state during a run."""

    name: str
    source: Source
    tracker: Tracker
    aggregator: Aggregator
    schedule: DetectSchedule
    detection: Detection
    clock: Callable[[], float] = time.monotonic  # wall seconds, for the live view's frame rate
    first_ts: float | None = None
    last_ts: float | None = None
    done: bool = False
    final_state: SourceState | None = None
    bad_in_a_row: int = 0
    processed: int = 0  # frames that went through the stages (a frame read past --duration does not)
    sizes_seen: set[tuple[int, int]] = field(default_factory=set)
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=256))
    shown: TrackedFaces | None = None  # the faces of the last processed frame, for the live view
    last_seen: WindowSummary | None = None  # the last written window with frames: the view's last words
    final_dropped: int = 0  # the source's dropped-frame count when it finished

    @classmethod
    def start(
        cls, name: str, source: Source, config: RunConfig, labels: tuple[str, ...], detection: Detection,
        start_utc: datetime, late: bool = False, clock: Callable[[], float] = time.monotonic,
    ) -> Feed:
        """A feed for `source` whose windows start at `start_utc`; a live source's windows start then,
        frames or not (``late``: `start_utc` lies in the past, a restarted cluster worker rejoining its grid)."""
        aggregator = Aggregator(AggregatorConfig(
            labels=labels, window_s=config.window_s, min_group=config.min_group,
            low_confidence=config.low_confidence, source=name, start_utc=start_utc,
            per_track=config.output.per_track, attention=config.attention,
        ))  # fmt: skip
        if source.live:
            late_ms = (datetime.now(UTC) - start_utc) / timedelta(milliseconds=1) if late else 0.0
            aggregator.advance(clock() * 1000.0 - max(late_ms, 0.0))
        schedule = DetectSchedule(config.detect_every)
        return cls(name, source, Tracker(config.tracker), aggregator, schedule, detection, clock=clock)

    def skip(self, frame: Frame, exc: Exception, most_in_a_row: int) -> None:
        """Count and log a frame that failed (`FRAME_ERRORS`); more than `most_in_a_row` failing frames in
        a row is a broken source, not bad luck: SourceError."""
        self.bad_in_a_row += 1
        if self.bad_in_a_row > most_in_a_row:
            raise SourceError(
                f"{self.name}: {self.bad_in_a_row} frames in a row could not be processed; last: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        logger.warning("%s: skipping frame %d (%s: %s)", self.name, frame.index, type(exc).__name__, exc)

    def step(self, frame: Frame, timer: StageTimer) -> tuple[TrackedFaces, bool, list[WindowSummary], SourceStats]:
        """Detect (or carry), classify, track and aggregate one frame: its faces, whether the detector's
        result came with it, the windows it closed and the source's counters."""
        self._log_grid(frame)
        faces, detected = self.detection.faces(self, frame, timer)
        stats = self.source.stats()
        closed = self.aggregator.add(faces, frame.timestamp_ms, stats.frames_dropped)
        timer.lap("track")
        self.bad_in_a_row = 0
        self.last_ts = frame.timestamp_ms
        self.recent.append(self.clock())
        self.shown = faces
        return faces, detected, closed, stats

    def _log_grid(self, frame: Frame) -> None:
        """Log the tiling grid once per frame size."""
        h, w = frame.image.shape[:2]
        if (w, h) not in self.sizes_seen:
            self.sizes_seen.add((w, h))
            detector = self.detection.detector
            rows, cols = detector.grid_for(w, h)
            how = "auto" if detector.config.tiles is AUTO else "fixed"
            logger.info("%s: %dx%d frames, tiles %dx%d (%s)", self.name, w, h, cols, rows, how)

    def fps(self) -> float:
        """Frames per wall second over the last `FPS_WINDOW_S`."""
        now = self.clock()
        while self.recent and now - self.recent[0] > FPS_WINDOW_S:
            self.recent.popleft()
        if len(self.recent) < 2:
            return 0.0
        span = self.recent[-1] - self.recent[0]
        return (len(self.recent) - 1) / span if span > 0 else 0.0

    def view(self, labels: tuple[str, ...], min_group: int, provider: str, stats: SourceStats) -> LiveState:
        """What the live view shows of this source now (no faces while it is down)."""
        if stats.state != SourceState.CONNECTED:  # down or done: nothing is in view any more
            self.shown = None
        faces = self.shown
        shares = None if faces is None else live_shares(faces, labels, min_group)
        attention = None if faces is None or not self.aggregator.config.attention else live_attention(faces, min_group)
        return LiveState(
            source=self.name, fps=self.fps(), faces=0 if faces is None else len(faces), tracks=len(self.tracker),
            shares=shares, engagement_index=None if shares is None else engagement_index(shares),
            dropped=stats.frames_dropped, provider=provider, source_state=stats.state, attempt=stats.attempt,
            attention=attention,
        )  # fmt: skip

    def finish(self, now_ms: float) -> list[WindowSummary]:
        """Close the last windows (a short last one ENDED or PARTIAL), log how the source ended, close it."""
        self.done = True
        stats = self.source.stats()
        self.final_dropped = stats.frames_dropped
        closed: list[WindowSummary] = []
        if self.source.live:
            healthy = stats.state == SourceState.CONNECTED and self.last_ts is not None
            if not healthy or self.last_ts is None or now_ms - self.last_ts > LIVE_GAP_GRACE_MS:
                closed += self.aggregator.advance(now_ms)  # the silence up to now is a gap
        if self.final_state is None:
            self.final_state = stats.state if self.source.finished else SourceState.STOPPED
        closed += self.aggregator.finish(ended=self.final_state == SourceState.ENDED)
        if self.final_state == SourceState.FAILED:
            logger.error("%s failed: %s; its rows stop here", self.name, stats.last_error or "unknown error")
        elif stats.last_error and not self.source.live and self.final_state == SourceState.ENDED:
            note = (f"{stats.decode_errors} could not be decoded and were skipped (last: {stats.last_error})"
                    if stats.decode_errors else stats.last_error)
            logger.warning("%s ended after %d frames; %s", self.name, self.processed, note)
        else:
            logger.info("%s %s after %d frames", self.name, self.final_state.value, self.processed)
        self.source.close()
        return closed

    def last_words(self, rows: list[WindowSummary], provider: str) -> LiveState:
        """The view of an ended source: what its last window with frames found, not "0 faces"."""
        assert self.final_state is not None
        dropped = self.final_dropped
        last = next((r for r in reversed(rows) if r.frames), self.last_seen)
        if last is None:
            self.shown = None
            return LiveState(source=self.name, fps=self.fps(), tracks=len(self.tracker), dropped=dropped,
                             provider=provider, source_state=self.final_state)
        return LiveState.of_window(last, provider, self.final_state, dropped)
