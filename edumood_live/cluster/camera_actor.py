"""One camera of a cluster run: the single-process `Pipeline` on one source, inside a Ray actor.

The worker opens its source and runs `Pipeline` (the same loop, detector, tracker and aggregator as
single-process mode) in a thread, with a `RemoteClassifier` that crops the faces here and classifies
them on a shared `BatchingClassifier`; without the expressions signal (no classifier workers) the
pipeline runs no classifier at all, as in single-process mode. Only window rows leave the worker: the
driver collects them with `poll`.

When Ray restarts a worker that died, the driver calls `start` again with the run's window grid and
the start of the last window it received. The new worker reopens its camera (retrying with the
source's backoff while the camera is down) and drops the windows the driver already has: a live
source rejoins the grid (windows it could not see become GAP rows); a file is read again from its
start, so its rows stay those of an uninterrupted run.

The worker never blocks on the classifier for good: a classifier that does not answer (it was on a node
that left and waits for Ray to place it again) is waited for in short slices, `poll` tells the driver
how long it has waited, and a `stop` meanwhile ends the pipeline at once (its last window is lost).

The class is plain Python; the driver turns it into a Ray actor.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import ray

from edumood_live.classifier import FacePreprocessor
from edumood_live.cluster.classifier_actor import ClassifierInfo
from edumood_live.config import OutputConfig, RunConfig
from edumood_live.errors import EduMoodError, SourceError
from edumood_live.pipeline import Pipeline
from edumood_live.sources import Source, open_source
from edumood_live.sources.retry import Backoff
from edumood_live.states import SourceState
from edumood_live.types import WindowSummary

logger = logging.getLogger(__name__)

CLASSIFY_SLICE_S = 0.5  # a classifier call is waited for in slices this long, checking for a stop between


class ClassifierWaitStopped(EduMoodError):
    """The run was stopped while the pipeline waited for an unanswered classifier call."""


@dataclass(frozen=True)
class CameraReport:
    """What one `poll` returns: the rows closed since the last poll and the worker's state.

    state: None while running, else how the source finished (ended, failed, stopped).
    """

    rows: list[WindowSummary]
    done: bool
    state: SourceState | None
    error: str | None
    node: str
    pid: int
    frames: int
    started: bool  # False: a fresh (restarted) worker that has not been told to start yet
    classifier_wait_s: float = 0.0  # how long the pipeline has waited for an unanswered classifier call


@dataclass(frozen=True)
class Opened:
    """What `CameraWorker.open` found: the source's own name and kind, or why it cannot be opened."""

    name: str
    live: bool
    error: EduMoodError | None
    node: str
    pid: int


@dataclass
class _Shared:
    """State shared between the actor's methods and its pipeline thread."""

    rows: deque[WindowSummary] = field(default_factory=deque)
    cond: threading.Condition = field(default_factory=threading.Condition)
    stop: threading.Event = field(default_factory=threading.Event)
    done: bool = False
    state: SourceState | None = None
    error: str | None = None


class RemoteClassifier:
    """A `classifier.Classifier` that crops here and runs the model on a shared classifier actor."""

    def __init__(self, info: ClassifierInfo, camera: str, pipeline_config: RunConfig,
                 stop: threading.Event | None = None) -> None:
        self.meta = info.meta
        self.labels: tuple[str, ...] = info.meta.labels
        self.provider = info.provider
        self.model_path = Path(info.model_name)
        self._actor_name = info.actor_name
        self._handle: Any = None  # looked up on first use, by name
        self._camera = camera
        self._preprocessor = FacePreprocessor(info.meta, pipeline_config.classifier)
        self._stop = stop or threading.Event()
        self._waiting_since: float | None = None  # monotonic start of an unanswered call

    @property
    def wait_s(self) -> float:
        """How long the current call has gone unanswered for more than a slice (0: answered)."""
        since = self._waiting_since
        return 0.0 if since is None else time.monotonic() - since

    def classify(self, image_bgr: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        batch = self._preprocessor.preprocess(image_bgr, boxes)
        if len(batch) == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        if self._handle is None:
            self._handle = ray.get_actor(self._actor_name)
        ref = self._handle.classify.remote(batch, self._camera)
        started = time.monotonic()
        while not ray.wait([ref], timeout=CLASSIFY_SLICE_S)[0]:
            if self._stop.is_set():
                raise ClassifierWaitStopped(f"{self._camera}: stopped while waiting {time.monotonic() - started:.0f} s "
                                            f"for the classifier {self._actor_name}")
            if self._waiting_since is None:
                self._waiting_since = started
        self._waiting_since = None
        return ray.get(ref)

    def close(self) -> None:
        """Nothing to release: the model belongs to the classifier actor."""


class CameraWorker:
    """One source, its pipeline and its window rows: `open`, `prepare`, `start`, then `poll` until done;
    `stop` ends it early."""

    def __init__(
        self,
        index: int,
        config: RunConfig,
        classifiers: list[ClassifierInfo],
        env: dict[str, str] | None = None,
    ) -> None:
        if len(config.sources) != 1:
            raise ValueError(f"a camera worker runs exactly one source, got {len(config.sources)}")
        os.environ.update(env or {})  # e.g. FFmpeg's RTSP options, as set on the driver
        self.label = f"cam{index}"
        self.config = replace(config, output=OutputConfig())  # rows go to the driver, not to files here
        self.node = ray.util.get_node_ip_address()
        self.pid = os.getpid()
        self._shared = _Shared()
        self._classifier: RemoteClassifier | None = None  # none: no expressions signal, no classifier runs
        if classifiers:
            node_id = ray.get_runtime_context().get_node_id()
            nearby = [info for info in classifiers if info.node_id == node_id] or classifiers
            info = nearby[index % len(nearby)]  # a replica on this node when there is one
            self._classifier = RemoteClassifier(info, self.label, self.config, self._shared.stop)
        self._source: Source | None = None
        self._pipeline: Pipeline | None = None
        self._thread: threading.Thread | None = None
        self._after: datetime | None = None

    # ----------------------------------------------------------------- called by the driver

    def open(self) -> Opened:
        """Open the camera now (as `Pipeline` would); its name and kind, or the error."""
        try:
            self._source = open_source(self.config.sources[0])
        except EduMoodError as exc:
            return Opened("", False, exc, self.node, self.pid)
        return Opened(self._source.name, self._source.live, None, self.node, self.pid)

    def prepare(self, name: str) -> EduMoodError | None:
        """Build the pipeline around the opened camera, under its run-wide unique `name`."""
        if self._source is None:
            return SourceError(f"{self.label}: prepare() before open()")
        self._source.name = name
        try:
            self._pipeline = Pipeline(self.config, sources=[self._source], classifier=self._classifier)
        except EduMoodError as exc:
            return exc
        return None

    def start(self, name: str, start_utc: datetime, after: str | None = None) -> None:
        """Run the pipeline on the window grid that starts at `start_utc`, dropping windows that start
        at or before `after` (the driver has them from an earlier incarnation). A restarted worker
        (nothing opened yet) opens its camera first, retrying while it is down. Idempotent."""
        if self._thread is not None:
            return
        self._after = _parse_utc(after) if after else None
        self._thread = threading.Thread(target=self._run, args=(name, start_utc), daemon=True,
                                        name=f"edumood-{self.label}")
        self._thread.start()

    def poll(self, timeout_s: float) -> CameraReport:
        """Rows closed since the last poll (waits up to `timeout_s` for one), and whether it is done."""
        shared = self._shared
        deadline = time.monotonic() + timeout_s
        with shared.cond:
            while not shared.rows and not shared.done and self._thread is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                shared.cond.wait(remaining)
            rows = list(shared.rows)
            shared.rows.clear()
            done, state, error = shared.done, shared.state, shared.error
        if self._after is not None:
            rows = [r for r in rows if _parse_utc(r.window_start_utc) > self._after]
        frames = self._pipeline.stats.frames if self._pipeline is not None else 0
        wait_s = self._classifier.wait_s if self._classifier is not None else 0.0
        return CameraReport(rows, done, state, error, self.node, self.pid, frames, self._thread is not None, wait_s)

    def stop(self) -> None:
        """End the run: the pipeline writes its last (partial) window; `poll` then reports done."""
        self._shared.stop.set()
        if self._pipeline is not None:
            self._pipeline.stop()
        with self._shared.cond:
            if self._thread is None:  # never started: nothing will come
                self._shared.done, self._shared.state = True, SourceState.STOPPED
            self._shared.cond.notify_all()

    def stats(self) -> dict[str, object]:
        """The pipeline's counters and per-stage times (`PipelineStats.as_dict`)."""
        return self._pipeline.stats.as_dict() if self._pipeline is not None else {}

    # ----------------------------------------------------------------- the pipeline thread

    def _run(self, name: str, start_utc: datetime) -> None:
        shared = self._shared
        state: SourceState | None = None
        try:
            if self._pipeline is None:
                self._pipeline = self._reopen(name)
            if self._pipeline is not None:
                if shared.stop.is_set():
                    self._pipeline.stop()
                for summary in self._pipeline.run(start_utc):
                    with shared.cond:
                        shared.rows.append(summary)
                        shared.cond.notify_all()
                state = self._pipeline.source_states.get(name, SourceState.STOPPED)
            else:
                state = SourceState.STOPPED if shared.stop.is_set() else SourceState.FAILED
        except ClassifierWaitStopped as exc:
            logger.warning("%s", exc)
            state = SourceState.STOPPED
        except BaseException as exc:  # reported to the driver, which logs it with the camera's name
            shared.error = f"{type(exc).__name__}: {exc}"
            state = SourceState.FAILED
            logger.exception("%s: the pipeline failed", name)
        finally:
            with shared.cond:
                shared.done, shared.state = True, state
                shared.cond.notify_all()

    def _reopen(self, name: str) -> Pipeline | None:
        """A restarted worker: open the camera with the source's backoff; None when stopped or given up."""
        config = self.config.sources[0]
        backoff = Backoff(config, self._shared.stop)
        while not self._shared.stop.is_set():
            try:
                source = open_source(config)
            except SourceError as exc:
                self._shared.error = str(exc)
                delay = backoff.fail()
                if delay is None:
                    logger.error("%s: %s; giving up after %d retries", name, exc, config.max_retries)
                    return None
                logger.warning("%s: %s; retrying in %.1f s", name, exc, delay)
                backoff.wait(delay)
                continue
            self._shared.error = None
            source.name = name
            return Pipeline(self.config, sources=[source], classifier=self._classifier)
        return None


def _parse_utc(text: str) -> datetime:
    """The rows' ISO-8601 UTC timestamps (``...Z``) as aware datetimes."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
