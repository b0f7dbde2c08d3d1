"""The one loop that wires the stages: source -> detector -> classifier -> tracker -> aggregator -> sinks.

Per frame of each source::

    frame = source.read(timeout)                      # round-robin over the sources
    if the detector is due (every K frames):          # DetectSchedule
        faces = tracker.update(detector.detect(f), classifier.classify(f, boxes))
    else:                                             # carried frame
        faces = tracker.carry(classifier.classify(f, tracker.active_boxes(t)))
    rows = aggregator.add(faces)  ->  every sink.write(row)

Live sources run the detector in a background thread instead (`background_detection`): every frame is
carried, and a detection that has finished is applied to the tracker at its own frame's time.

Each source has its own tracker and aggregator; the detector and the classifier are shared. Live
sources that deliver nothing are `advance`d so that windows without frames become GAP rows. A source
that ends or fails gets its final (partial) window and drops out; the others go on. `stop()` (thread-
and signal-safe) ends the run the same way. Stages never import each other; only this module does.

The cluster mode (`edumood_live.cluster`) runs this same pipeline once per camera, with a classifier
that batches crops from all cameras on a shared worker, and a window grid given by the driver.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType

import numpy as np

from edumood_live.aggregator import Aggregator, AggregatorConfig, engagement_index
from edumood_live.classifier import Classifier, FaceClassifier
from edumood_live.config import RunConfig
from edumood_live.console import LiveState
from edumood_live.detector import FaceDetector
from edumood_live.errors import ConfigError, EduMoodError, SourceError
from edumood_live.outputs import (
    AnnotationOutput,
    LiveSink,
    WindowSink,
    close_all,
    open_file_sinks,
    preflight,
)
from edumood_live.schedule import DetectSchedule
from edumood_live.sources import Source, SourceState, open_source
from edumood_live.stats import FrameTimes, PipelineStats
from edumood_live.tracker import Tracker
from edumood_live.types import Detections, Frame, TrackedFaces, WindowSummary

logger = logging.getLogger(__name__)

LIVE_GAP_GRACE_MS = 1000.0  # a live source silent this long has its empty windows closed as gaps
MAX_BAD_FRAMES_IN_A_ROW = 50  # more failing frames in a row than this is a broken setup, not bad luck
FPS_WINDOW_S = 2.0  # the live view's frame rate is measured over this much wall time
_MS = timedelta(milliseconds=1)


def _now_ms() -> float:
    """The live sources' clock: monotonic milliseconds."""
    return time.monotonic() * 1000.0


@dataclass
class _Feed:
    """One source and its per-source stages and state during a run."""

    name: str
    source: Source
    tracker: Tracker
    aggregator: Aggregator
    schedule: DetectSchedule
    first_ts: float | None = None
    last_ts: float | None = None
    done: bool = False
    final_state: str | None = None
    bad_in_a_row: int = 0
    processed: int = 0  # frames that went through the stages (a frame read past --duration does not)
    sizes_seen: set[tuple[int, int]] = field(default_factory=set)
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=256))
    shown: TrackedFaces | None = None  # the faces of the last processed frame, for the live view
    last_seen: WindowSummary | None = None  # the last written window with frames: the view's last words
    pending: Future[tuple[Detections, float]] | None = None  # background detection of `pending_frame`
    pending_frame: Frame | None = None
    detection_wanted: bool = False  # the schedule asked for a detection while one was still running

    def fps(self) -> float:
        """Frames per wall second over the last `FPS_WINDOW_S`."""
        now = time.monotonic()
        while self.recent and now - self.recent[0] > FPS_WINDOW_S:
            self.recent.popleft()
        if len(self.recent) < 2:
            return 0.0
        span = self.recent[-1] - self.recent[0]
        return (len(self.recent) - 1) / span if span > 0 else 0.0


class Pipeline:
    """One run over one or more sources; `run()` yields each `WindowSummary` as its window closes.

    Construction opens everything (classifier, output checks, sources, detector, file sinks) and
    raises an `EduMoodError` with one clear line when something cannot be used, before any frame is
    processed. `sinks` are extra sinks (e.g. `console.ConsoleSink`); `sources` are already-open sources
    to use instead of opening ``config.sources``; `classifier` is one to use instead of loading
    ``config.classifier`` (e.g. one that runs the model on another worker). The pipeline closes all of
    them at the end.
    """

    def __init__(
        self,
        config: RunConfig,
        sinks: Sequence[WindowSink] = (),
        sources: Sequence[Source] | None = None,
        classifier: Classifier | None = None,
    ) -> None:
        self.config = config
        self.stats = PipelineStats()
        self.source_states: dict[str, str] = {}  # name -> final state: ended, failed or stopped
        self._stop = threading.Event()
        self._started = False
        self._sources: list[Source] = list(sources or [])
        self._sinks: list[WindowSink] = list(sinks)
        self._file_sinks: list[WindowSink] = []
        self._annotation: AnnotationOutput | None = None
        self._detector: FaceDetector | None = None
        self._detect_pool: ThreadPoolExecutor | None = None  # background detection for live sources
        self._classifier: Classifier | None = classifier
        try:
            if self._classifier is None:
                self._classifier = FaceClassifier(config.classifier)
            self.labels: tuple[str, ...] = self._classifier.labels
            preflight(config.output, self.labels)
            if sources is None:
                for source_config in config.sources:
                    self._sources.append(open_source(source_config))
            if config.output.annotate_path is not None and len(self._sources) != 1:
                raise ConfigError(
                    f"annotate_path={str(config.output.annotate_path)!r} is not allowed with "
                    f"{len(self._sources)} sources; an annotated video needs exactly one source"
                )
            self._detector = FaceDetector(config.detector)
            if config.background_detection and any(s.live for s in self._sources):
                self._detect_pool = ThreadPoolExecutor(1, thread_name_prefix="background-detection")
            self._file_sinks = open_file_sinks(config.output, self.labels)
            if config.output.annotate_path is not None:
                out = config.output
                self._annotation = AnnotationOutput(out.annotate_path, self.labels, out.blur)
        except BaseException:
            self.close()
            raise
        self.source_names = unique_names([s.name for s in self._sources])
        self._live_sinks = [s for s in self._sinks if isinstance(s, LiveSink)]

    # ----------------------------------------------------------------- public API

    @property
    def provider(self) -> str:
        """The onnxruntime provider the classifier runs on, e.g. ``CPUExecutionProvider``."""
        return self._classifier.provider if self._classifier else ""

    def describe(self) -> str:
        """One line: sources, model, provider, tiling, detection interval, window."""
        assert self._classifier is not None
        meta = self._classifier.meta
        det = self.config.detector
        tiles = f"auto (min face {det.min_face_px} px)" if det.tiles == "auto" else det.tiles
        return (
            f"sources: {', '.join(self.source_names)}; model {meta.model_name} {meta.version} "
            f"({self._classifier.model_path.name}) on {self.provider.removesuffix('ExecutionProvider')}; "
            f"tiles {tiles}; detect every {self.config.detect_every}; window {self.config.window_s:g} s; "
            f"min group {self.config.min_group}"
        )

    def stop(self) -> None:
        """Ask the run to end: final windows are written (a short one marked partial), sinks closed. Thread- and
        signal-handler-safe; returns at once."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """True once `stop()` was called."""
        return self._stop.is_set()

    def run(self, start_utc: datetime | None = None) -> Iterator[WindowSummary]:
        """Process the sources until they end, `stop()` or ``duration_s``; yields rows as windows close.

        Rows are written to the sinks before they are yielded. Closing the iterator early still writes
        the final windows and closes everything. Can be called once. `start_utc` (timezone-aware) is the
        start of the window grid, default now; live sources' windows are aligned to it, so that a
        restarted cluster camera worker rejoins the grid of its run.
        """
        if self._started:
            raise RuntimeError("Pipeline.run() can be called only once; build a new Pipeline")
        if start_utc is not None and (start_utc.tzinfo is None or start_utc.utcoffset() is None):
            raise ConfigError(f"start_utc={start_utc!r} is not allowed; use a timezone-aware datetime")
        self._started = True
        started = time.monotonic()
        late = start_utc is not None
        start_utc = start_utc or datetime.now(UTC)
        pairs = zip(self.source_names, self._sources, strict=True)
        feeds = [self._new_feed(name, source, start_utc, late) for name, source in pairs]
        try:
            yield from self._loop(feeds, started)
            for feed in feeds:
                yield from self._emit(feed, self._finish(feed))
        finally:
            for feed in feeds:  # an exception or an abandoned iterator: still close the windows
                if not feed.done:
                    try:
                        self._write(feed, self._finish(feed))
                    except EduMoodError as exc:  # e.g. the disk that failed the run is still full
                        logger.error("%s: could not write the final window: %s", feed.name, exc)
                    except Exception:
                        logger.exception("%s: could not write the final window", feed.name)
            self.stats.add(wall_s=time.monotonic() - started)
            self.close()
            logger.info("run finished: %s", self.stats.summary())

    def close(self) -> None:
        """Release sources, models and sinks (idempotent); raises the first OutputError of a sink."""
        for source in self._sources:
            source.close()
        if self._detect_pool is not None:  # a running detection finishes before the detector closes
            self._detect_pool.shutdown(wait=True, cancel_futures=True)
            self._detect_pool = None
        if self._detector is not None:
            self._detector.close()
            self._detector = None
        if self._classifier is not None:
            self._classifier.close()
        annotation, self._annotation = self._annotation, None
        sinks = [*([annotation] if annotation else []), *self._file_sinks, *self._sinks]
        self._file_sinks, self._sinks, self._live_sinks = [], [], []
        close_all(sinks)

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ----------------------------------------------------------------- the loop

    def _new_feed(self, name: str, source: Source, start_utc: datetime, late: bool = False) -> _Feed:
        cfg = self.config
        aggregator = Aggregator(
            AggregatorConfig(
                labels=self.labels, window_s=cfg.window_s, min_group=cfg.min_group,
                low_confidence=cfg.low_confidence, source=name, start_utc=start_utc,
                per_track=cfg.output.per_track,
            )
        )  # fmt: skip
        if source.live:  # windows of a live source start at start_utc (now by default), frames or not
            late_ms = (datetime.now(UTC) - start_utc) / _MS if late else 0.0
            aggregator.advance(_now_ms() - max(late_ms, 0.0))
        return _Feed(name, source, Tracker(cfg.tracker), aggregator, DetectSchedule(cfg.detect_every))

    def _loop(self, feeds: list[_Feed], started: float) -> Iterator[WindowSummary]:
        """Round-robin reads until every source is done, stop() or the duration is over."""
        duration_s = self.config.duration_s
        active = list(feeds)
        idle = False
        while active and not self._stop.is_set():
            live = any(f.source.live for f in active)
            if live and duration_s is not None and time.monotonic() - started >= duration_s:
                logger.info("duration of %g s reached", duration_s)
                return
            timeout_s = self.config.poll_s / len(active) if idle else 0.0
            idle = True
            for feed in list(active):
                if self._stop.is_set():
                    return
                t0 = time.perf_counter()
                try:
                    frame = feed.source.read(timeout_s)
                except SourceError as exc:
                    logger.error("%s: %s", feed.name, exc)
                    frame, feed.final_state = None, SourceState.FAILED.value
                read_s = time.perf_counter() - t0
                if frame is None:
                    if feed.source.finished or feed.final_state is not None:
                        active.remove(feed)
                        yield from self._emit(feed, self._finish(feed))
                    elif feed.source.live:
                        yield from self._emit(feed, feed.aggregator.advance(_now_ms() - LIVE_GAP_GRACE_MS))
                        self._show(feed, feed.shown)  # no new frame yet: the last one's faces stay
                    continue
                idle = False
                if feed.first_ts is None:
                    feed.first_ts = frame.timestamp_ms
                elapsed_ms = frame.timestamp_ms - feed.first_ts
                if not feed.source.live and duration_s is not None and elapsed_ms >= duration_s * 1000.0:
                    logger.info("%s: duration of %g s of source time reached", feed.name, duration_s)
                    active.remove(feed)
                    yield from self._emit(feed, self._finish(feed))
                    continue
                feed.processed += 1
                yield from self._emit(feed, self._process(feed, frame, read_s))

    def _process(self, feed: _Feed, frame: Frame, read_s: float) -> list[WindowSummary]:
        """Detect (or carry), classify, track and aggregate one frame; returns the windows it closed."""
        assert self._detector is not None and self._classifier is not None
        times = FrameTimes(read=read_s)
        image, ts = frame.image, frame.timestamp_ms
        self._log_grid(feed, image)
        try:
            t0 = time.perf_counter()
            # A live source's first frame is detected in line (it starts with faces), the rest beside it.
            if self._detect_pool is not None and feed.source.live and feed.last_ts is not None:
                faces, detected = self._process_beside_detection(feed, frame, times)
                t2 = time.perf_counter()
            elif detected := feed.schedule.due(ts):
                detections = self._detector.detect(image)
                t1 = time.perf_counter()
                probs = self._classifier.classify(image, detections.boxes)
                t2 = time.perf_counter()
                faces = feed.tracker.update(detections, probs, ts)
                feed.schedule.observe(faces, ts)
                times.detect, times.classify = t1 - t0, t2 - t1
            else:
                boxes = feed.tracker.active_boxes(ts)
                probs = self._classifier.classify(image, boxes)
                t2 = time.perf_counter()
                faces = feed.tracker.carry(probs, ts)
                times.classify = t2 - t0
            stats = feed.source.stats()
            closed = feed.aggregator.add(faces, ts, stats.frames_dropped)
            t3 = time.perf_counter()
            times.track = t3 - t2
        except (EduMoodError, MemoryError):
            raise
        except Exception as exc:  # one bad frame is counted and logged, not fatal
            self._bad_frame(feed, frame, exc)
            return []
        feed.bad_in_a_row = 0
        feed.last_ts = ts
        feed.recent.append(time.monotonic())
        if self._annotation is not None:
            self._annotation.write(image, faces, ts)
        feed.shown = faces
        self._show(feed, faces, stats.frames_dropped, stats.state, stats.attempt)
        times.sinks = time.perf_counter() - t3
        latency_s = (_now_ms() - ts) / 1000.0 if feed.source.live else None
        self.stats.add_frame(feed.name, times, len(faces), detected, latency_s)
        return closed

    def _process_beside_detection(self, feed: _Feed, frame: Frame, times: FrameTimes) -> tuple[TrackedFaces, bool]:
        """A live frame that never waits for the detector: returns its faces and whether a detection landed.

        A finished background detection is applied first, at its own frame's time (its faces are
        classified on that frame), exactly as an in-line detection would have been; the schedule may
        then start the next one on this frame; and this frame's faces are the carried tracks.
        """
        assert self._detector is not None and self._classifier is not None and self._detect_pool is not None
        landed = feed.pending is not None and feed.pending.done()
        if landed:
            assert feed.pending is not None and feed.pending_frame is not None
            past, future = feed.pending_frame, feed.pending
            feed.pending = feed.pending_frame = None
            detections, times.detect = future.result()  # a detector error fails this frame, like in line
            t0 = time.perf_counter()
            probs = self._classifier.classify(past.image, detections.boxes)
            feed.schedule.observe(feed.tracker.update(detections, probs, past.timestamp_ms), past.timestamp_ms)
            times.classify += time.perf_counter() - t0
        feed.detection_wanted |= feed.schedule.due(frame.timestamp_ms)
        if feed.detection_wanted and feed.pending is None:
            feed.pending = self._detect_pool.submit(self._timed_detect, frame.image)
            feed.pending_frame, feed.detection_wanted = frame, False
        t0 = time.perf_counter()
        probs = self._classifier.classify(frame.image, feed.tracker.active_boxes(frame.timestamp_ms))
        faces = feed.tracker.carry(probs, frame.timestamp_ms)
        times.classify += time.perf_counter() - t0
        return faces, landed

    def _timed_detect(self, image: np.ndarray) -> tuple[Detections, float]:
        assert self._detector is not None
        t0 = time.perf_counter()
        return self._detector.detect(image), time.perf_counter() - t0

    def _bad_frame(self, feed: _Feed, frame: Frame, exc: Exception) -> None:
        feed.bad_in_a_row += 1
        self.stats.add(bad_frames=1)
        if feed.bad_in_a_row > MAX_BAD_FRAMES_IN_A_ROW:
            failed = f"{feed.name}: {feed.bad_in_a_row} frames in a row failed"
            raise RuntimeError(f"{failed}; last: {type(exc).__name__}: {exc}") from exc
        logger.warning("%s: skipping frame %d (%s: %s)", feed.name, frame.index, type(exc).__name__, exc)

    def _finish(self, feed: _Feed) -> list[WindowSummary]:
        """Close the source's last windows (a short last one ENDED or PARTIAL) and the source itself."""
        if feed.done:
            return []
        feed.done = True
        stats = feed.source.stats()
        closed: list[WindowSummary] = []
        if feed.source.live:
            now = _now_ms()
            healthy = stats.state == SourceState.CONNECTED and feed.last_ts is not None
            if not healthy or now - feed.last_ts > LIVE_GAP_GRACE_MS:  # type: ignore[operator]
                closed += feed.aggregator.advance(now)  # the silence up to now is a gap
        if feed.final_state is None:
            feed.final_state = stats.state.value if feed.source.finished else "stopped"
        closed += feed.aggregator.finish(ended=feed.final_state == SourceState.ENDED.value)
        if feed.final_state == SourceState.FAILED.value:
            logger.error("%s failed: %s; its rows stop here", feed.name, stats.last_error or "unknown error")
        elif stats.last_error and not feed.source.live and feed.final_state == SourceState.ENDED.value:
            note = (f"{stats.decode_errors} could not be decoded and were skipped (last: {stats.last_error})"
                    if stats.decode_errors else stats.last_error)
            logger.warning("%s ended after %d frames; %s", feed.name, feed.processed, note)
        else:
            logger.info("%s %s after %d frames", feed.name, feed.final_state, feed.processed)
        self.source_states[feed.name] = feed.final_state
        feed.source.close()
        last = next((r for r in reversed(closed) if r.frames), feed.last_seen)
        if last is None:
            self._show(feed, None, stats.frames_dropped, feed.final_state, 0)
        else:  # an ended source keeps showing what its last window found, not "0 faces"
            view = LiveState.of_window(last, self.provider, feed.final_state, stats.frames_dropped)
            for sink in self._live_sinks:
                sink.update(view)
        return closed

    # ----------------------------------------------------------------- outputs

    def _emit(self, feed: _Feed, summaries: list[WindowSummary]) -> Iterator[WindowSummary]:
        """Write the rows to every sink, then yield them."""
        if summaries:
            t0 = time.perf_counter()
            self._write(feed, summaries)
            self.stats.add(sinks_s=time.perf_counter() - t0, windows=len(summaries))
            yield from summaries

    def _write(self, feed: _Feed, summaries: list[WindowSummary]) -> None:
        for summary in summaries:
            for sink in (*self._file_sinks, *self._sinks):
                sink.write(summary)
            if summary.frames:
                feed.last_seen = summary
        rows = feed.aggregator.track_rows()
        if rows:
            for sink in self._file_sinks:
                sink.write_tracks(rows)  # type: ignore[attr-defined]  # opened with per_track

    def _show(
        self,
        feed: _Feed,
        faces: TrackedFaces | None,
        dropped: int | None = None,
        state: str | None = None,
        attempt: int | None = None,
    ) -> None:
        """Hand the live view this source's current state (the view throttles its redraws)."""
        if not self._live_sinks:
            return
        if dropped is None or state is None or attempt is None:
            stats = feed.source.stats()
            dropped, state, attempt = stats.frames_dropped, stats.state, stats.attempt
        if state != SourceState.CONNECTED:  # down or done: nothing is in view any more
            faces = feed.shown = None
        n = 0 if faces is None else len(faces)
        shares: dict[str, float | None] | None = None
        index = None
        if n and n >= max(self.config.min_group, 1):  # below min-group the view withholds shares too
            assert faces is not None
            counts = np.bincount(faces.probs.argmax(axis=1), minlength=len(self.labels)) / n
            shares = {label: float(c) for label, c in zip(self.labels, counts, strict=True)}
            index = engagement_index(shares)
        live = LiveState(
            source=feed.name, fps=feed.fps(), faces=n, tracks=len(feed.tracker), shares=shares,
            engagement_index=index, dropped=dropped, provider=self.provider,
            source_state=getattr(state, "value", state), attempt=attempt,
        )  # fmt: skip
        for sink in self._live_sinks:
            sink.update(live)

    def _log_grid(self, feed: _Feed, image: np.ndarray) -> None:
        """Log the tiling grid once per source and frame size."""
        h, w = image.shape[:2]
        if (w, h) in feed.sizes_seen or self._detector is None:
            return
        feed.sizes_seen.add((w, h))
        rows, cols = self._detector.grid_for(w, h)
        how = "auto" if self.config.detector.tiles == "auto" else "fixed"
        logger.info("%s: %dx%d frames, tiles %dx%d (%s)", feed.name, w, h, cols, rows, how)


def unique_names(names: list[str]) -> list[str]:
    """Source names made unique with a ``#2``, ``#3`` suffix where they repeat."""
    seen: dict[str, int] = {}
    result = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        result.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return result


def run(config: RunConfig, sinks: Sequence[WindowSink] = ()) -> list[WindowSummary]:
    """Run a pipeline to the end and return every window row (give ``duration_s`` for live sources)."""
    pipeline = Pipeline(config, sinks=sinks)
    return list(pipeline.run())


__all__ = ["Pipeline", "PipelineStats", "run"]
