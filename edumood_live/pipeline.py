"""The one loop that wires the stages: source -> detector -> classifier -> tracker -> aggregator -> sinks.

Per frame of each source (round-robin)::

    frame = source.read(timeout)
    faces, rows = feed.step(frame)     # detect when due (else carry the tracks), classify, track, aggregate
    rows -> every sink.write(row)      # the windows that frame closed; the live view gets the frame's state

Each source is a `feed.Feed` (its own tracker, aggregator and detection schedule); the detector and the
classifier are shared. Live sources detect beside the loop (`feed.BackgroundDetection`), files in line.
Silent live sources are `advance`d, so windows without frames become GAP rows. A source that ends or fails
gets its final (partial) window and drops out; `stop()` (thread- and signal-safe) ends the run the same
way. A bad frame (`feed.FRAME_ERRORS`) is counted and skipped; too many in a row end the run with one
`SourceError`; any other error is a bug and surfaces at once. The cluster mode runs this same pipeline
once per camera, with a classifier that batches crops from all cameras on a shared worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from types import TracebackType

from edumood_live.classifier import Classifier, FaceClassifier
from edumood_live.config import AUTO, RunConfig, Signal
from edumood_live.detector import FaceDetector
from edumood_live.errors import ConfigError, EduMoodError, SourceError
from edumood_live.feed import (
    FRAME_ERRORS,
    LIVE_GAP_GRACE_MS,
    BackgroundDetection,
    Detection,
    Feed,
    InlineDetection,
)
from edumood_live.naming import unique_names
from edumood_live.sinks import WindowSink
from edumood_live.sinks.fanout import Fanout
from edumood_live.sinks.files import preflight
from edumood_live.sources import Source, SourceStats, open_source
from edumood_live.states import SourceState
from edumood_live.stats import PipelineStats, StageTimer
from edumood_live.types import Frame, WindowSummary

logger = logging.getLogger(__name__)

MAX_BAD_FRAMES_IN_A_ROW = 50  # more failing frames in a row than this is a broken setup, not bad luck


class Pipeline:
    """One run over one or more sources; `run()` yields each `WindowSummary` as its window closes.

    Construction opens everything (classifier, output checks, sources, detector, file sinks) and
    raises an `EduMoodError` with one clear line when something cannot be used, before any frame is
    processed. `sinks` are extra sinks (e.g. `sinks.console.ConsoleSink`); `sources` are already-open
    sources to use instead of opening ``config.sources``; `classifier` is one to use instead of loading
    ``config.classifier`` (e.g. one that runs the model on another worker); `clock` is the monotonic
    clock in seconds that live sources stamp their frames with. The pipeline closes all of them at the end.
    """

    def __init__(
        self,
        config: RunConfig,
        sinks: Sequence[WindowSink] = (),
        sources: Sequence[Source] | None = None,
        classifier: Classifier | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.stats = PipelineStats()
        self.source_states: dict[str, SourceState] = {}  # name -> final state: ended, failed or stopped
        self._clock = clock
        self._stop = threading.Event()
        self._started = False
        self._sources: list[Source] = list(sources or [])
        self._outputs = Fanout(sinks)
        self._detector: FaceDetector | None = None
        self._detect_pool: ThreadPoolExecutor | None = None  # background detection for live sources
        self._classifier: Classifier | None = classifier
        try:
            if self._classifier is None and config.expressions:
                self._classifier = FaceClassifier(config.classifier)
            # Without the expressions signal no classifier is loaded or run: rows have no class shares.
            self.labels: tuple[str, ...] = self._classifier.labels if config.expressions and self._classifier else ()
            preflight(config.output, self.labels)
            if sources is None:
                self._sources += [open_source(source_config) for source_config in config.sources]
            out = config.output
            if out.annotate_path is not None and len(self._sources) != 1:
                raise ConfigError(
                    f"annotate_path={str(out.annotate_path)!r} is not allowed with "
                    f"{len(self._sources)} sources; an annotated video needs exactly one source"
                )
            self._detector = FaceDetector(config.detector)
            if config.background_detection and any(s.live for s in self._sources):
                self._detect_pool = ThreadPoolExecutor(1, thread_name_prefix="background-detection")
            self._outputs.open(out, self.labels)
        except BaseException:
            self.close()
            raise
        self.source_names = unique_names([s.name for s in self._sources])

    @property
    def provider(self) -> str:
        """The onnxruntime provider the classifier runs on, e.g. ``CPUExecutionProvider``."""
        return self._classifier.provider if self._classifier and self.config.expressions else ""

    def describe(self) -> str:
        """One line: sources, model, provider, signals, tiling, detection interval, window."""
        det = self.config.detector
        tiles = f"auto (min face {det.min_face_px} px)" if det.tiles is AUTO else det.tiles
        if self._classifier is not None and self.config.expressions:
            meta = self._classifier.meta
            model = (f"model {meta.model_name} {meta.version} ({self._classifier.model_path.name}) on "
                     f"{self.provider.removesuffix('ExecutionProvider')}")  # fmt: skip
        else:
            model = "no expression classifier"
        signals = ",".join(Signal(s).value for s in self.config.signals)
        return (
            f"sources: {', '.join(self.source_names)}; {model}; signals {signals}; "
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
        self._outputs.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ----------------------------------------------------------------- the loop

    def _now_ms(self) -> float:
        return self._clock() * 1000.0

    def _new_feed(self, name: str, source: Source, start_utc: datetime, late: bool) -> Feed:
        assert self._detector is not None
        classifier = self._classifier if self.config.expressions else None
        detection: Detection = InlineDetection(self._detector, classifier)
        if self._detect_pool is not None and source.live:
            detection = BackgroundDetection(self._detector, classifier, self._detect_pool)
        return Feed.start(name, source, self.config, self.labels, detection, start_utc, late, self._clock)

    def _loop(self, feeds: list[Feed], started: float) -> Iterator[WindowSummary]:
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
                    frame, feed.final_state = None, SourceState.FAILED
                read_s = time.perf_counter() - t0
                if frame is None:
                    if feed.source.finished or feed.final_state is not None:
                        active.remove(feed)
                        yield from self._emit(feed, self._finish(feed))
                    elif feed.source.live:
                        yield from self._emit(feed, feed.aggregator.advance(self._now_ms() - LIVE_GAP_GRACE_MS))
                        self._show(feed, feed.source.stats())  # no new frame yet: the last one's faces stay
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

    def _process(self, feed: Feed, frame: Frame, read_s: float) -> list[WindowSummary]:
        """One frame through the feed's stages, then to the annotated video and the live view."""
        timer = StageTimer(read_s)
        try:
            faces, detected, closed, stats = feed.step(frame, timer)
        except FRAME_ERRORS as exc:  # one bad frame is counted and logged, not fatal
            self.stats.add(bad_frames=1)
            feed.skip(frame, exc, MAX_BAD_FRAMES_IN_A_ROW)
            return []
        self._outputs.frame(frame.image, faces, frame.timestamp_ms)
        self._show(feed, stats)
        timer.lap("sinks")
        latency_s = (self._now_ms() - frame.timestamp_ms) / 1000.0 if feed.source.live else None
        self.stats.add_frame(feed.name, timer.times, len(faces), detected, latency_s)
        return closed

    def _finish(self, feed: Feed) -> list[WindowSummary]:
        """Close the source's last windows and the source itself; the view keeps its last words."""
        if feed.done:
            return []
        closed = feed.finish(self._now_ms())
        assert feed.final_state is not None
        self.source_states[feed.name] = feed.final_state
        if self._outputs.shows_live:
            self._outputs.update(feed.last_words(closed, self.provider))
        return closed

    # ----------------------------------------------------------------- outputs

    def _emit(self, feed: Feed, summaries: list[WindowSummary]) -> Iterator[WindowSummary]:
        """Write the rows to every sink, then yield them."""
        if summaries:
            t0 = time.perf_counter()
            self._write(feed, summaries)
            self.stats.add(sinks_s=time.perf_counter() - t0, windows=len(summaries))
            yield from summaries

    def _write(self, feed: Feed, summaries: list[WindowSummary]) -> None:
        self._outputs.write(summaries, feed.aggregator.track_rows())
        feed.last_seen = next((s for s in reversed(summaries) if s.frames), feed.last_seen)

    def _show(self, feed: Feed, stats: SourceStats) -> None:
        """Hand the live view a source's current state (the view throttles its redraws)."""
        if self._outputs.shows_live:
            self._outputs.update(feed.view(self.labels, self.config.min_group, self.provider, stats))



def run(config: RunConfig, sinks: Sequence[WindowSink] = ()) -> list[WindowSummary]:
    """Run a pipeline to the end and return every window row (give ``duration_s`` for live sources)."""
    pipeline = Pipeline(config, sinks=sinks)
    return list(pipeline.run())


__all__ = ["Pipeline", "PipelineStats", "run"]
