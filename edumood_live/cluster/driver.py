"""The cluster-mode driver: starts the workers on Ray, collects their window rows, writes the sinks.

    with ClusterRun(config, ClusterConfig()) as run:   # config: the same RunConfig as single-process
        for row in run.run():                           # ClusterWindow: the usual row + node, actor
            ...

Construction joins (or starts) Ray, loads the classifier on its worker(s), opens every camera on its
own worker and checks the outputs, so an unusable source, model or path fails with one clear line
before any frame is processed, as in single-process mode. Without the expressions signal (``--signals
attention``) no classifier worker starts and no model is opened: the camera workers detect, track and
measure attention, and rows have no class shares, as in single-process mode. `run()` starts every
camera on one window grid and polls the workers for the windows that closed; the rows are written to
the sinks here (CSV and JSONL get ``node`` and ``actor`` columns) and then yielded. A worker that dies
is restarted by Ray and told which windows the driver already has (see `camera_actor`); one Ray gives
up on ends its source as failed while the others go on. `stop()` ends the run as Ctrl-C does in
single-process mode: every camera writes its last, partial window.

The driver never waits on a worker: every call to one is a future, and the loop waits for whichever
answers first, for at most ``poll_s``. A worker that has not answered for SILENT_S has no running
process (its node left, Ray is placing it again, or there is no room for it): the driver says so, the
live view shows it as "restarting on another node" or "waiting for resources", and the windows of a
live camera pass as ``gap`` rows written here (node empty) until a worker answers again; a file is
replayed by its next worker instead. At a stop, such a worker is not waited for, and a running one
only for STOP_GRACE_S.

Joining Ray, sizing and starting the workers live in `placement`; the driver's view of a camera and
its gap rows in `cameras`; the end-of-run statistics in `run_stats`. This module is the loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import ray
from ray.exceptions import RayActorError

from edumood_live.cluster.camera_actor import CameraReport
from edumood_live.cluster.cameras import SILENT_S, Camera, gap_rows
from edumood_live.cluster.classifier_actor import ClassifierInfo
from edumood_live.cluster.config import CLUSTER_COLUMNS, ClusterConfig, ClusterWindow
from edumood_live.cluster.placement import (
    connect,
    first_line,
    open_cameras,
    plan,
    room,
    spawn_cameras,
    start_classifiers,
    wait_for,
)
from edumood_live.cluster.run_stats import collect_stats, summary
from edumood_live.config import RunConfig, Signal
from edumood_live.errors import ConfigError
from edumood_live.sinks import LiveSink, LiveState, WindowSink, close_all
from edumood_live.sinks.files import open_file_sinks, preflight
from edumood_live.states import SourceState

logger = logging.getLogger(__name__)

STOP_GRACE_S = 5.0  # after stop(), how long running cameras get for their last windows (< 1 s when healthy)
WARN_EVERY_S = 15.0  # how often the driver repeats that a camera is still waiting


class ClusterRun:
    """One run over Ray: a worker per source, shared batching classifier(s), rows gathered here."""

    def __init__(
        self, config: RunConfig, cluster: ClusterConfig | None = None, sinks: Sequence[WindowSink] = ()
    ) -> None:
        self.config = config
        self.cluster = cluster or ClusterConfig()
        _check_supported(config)
        self.source_states: dict[str, SourceState] = {}  # name -> ended, failed or stopped
        self.labels: tuple[str, ...] = ()
        self.stats: dict[str, object] = {}  # filled at the end of `run` (see `run_stats.collect_stats`)
        self.start_utc: datetime | None = None
        self._stop = threading.Event()
        self._started = self._closed = False
        self._sinks: list[WindowSink] = list(sinks)
        self._file_sinks: list[WindowSink] = []
        self._classifiers: list[tuple[ClassifierInfo, Any]] = []
        self._cameras: list[Camera] = []
        self._camera_cpus = 0.0
        self._own_runtime = False
        try:
            self._own_runtime = connect(self.cluster)
            layout = plan(config, self.cluster)
            self._camera_cpus = layout.camera_cpus
            self._classifiers = start_classifiers(config, self.cluster, layout)
            self.labels = self._classifiers[0][0].meta.labels if self._classifiers else ()
            preflight(config.output, self.labels, CLUSTER_COLUMNS)
            infos = [info for info, _ in self._classifiers]
            self._cameras = spawn_cameras(config, self.cluster, layout.camera_cpus, infos)
            open_cameras(self._cameras, config, self.cluster)
            self._file_sinks = open_file_sinks(config.output, self.labels, CLUSTER_COLUMNS)
        except BaseException:
            self.close()
            raise

    # ----------------------------------------------------------------- public API

    def describe(self) -> str:
        """One line: cameras and nodes, model and provider, batching, signals, detection, window."""
        nodes = sorted({c.node for c in self._cameras})
        if self._classifiers:
            info = self._classifiers[0][0]
            model = (f"model {info.meta.model_name} {info.meta.version} ({info.model_name}) on "
                     f"{info.provider.removesuffix('ExecutionProvider')} in {len(self._classifiers)} shared "
                     f"classifier worker(s), batches up to {self.cluster.max_batch_faces} faces, wait "
                     f"{self.cluster.batch_wait_ms:g} ms")  # fmt: skip
        else:
            model = "no expression classifier"
        signals = ",".join(Signal(s).value for s in self.config.signals)
        return (
            f"{len(self._cameras)} camera worker(s) on Ray ({', '.join(nodes)}): "
            f"{', '.join(c.name for c in self._cameras)}; {model}; signals {signals}; detect every "
            f"{self.config.detect_every}; window {self.config.window_s:g} s; min group {self.config.min_group}"
        )

    def stop(self) -> None:
        """Ask the run to end: every camera writes its last (partial) window. Thread- and signal-safe."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """True once `stop()` was called."""
        return self._stop.is_set()

    @property
    def cameras(self) -> tuple[Camera, ...]:
        """The camera workers, in source order."""
        return tuple(self._cameras)

    def run(self) -> Iterator[ClusterWindow]:
        """Run every camera until its source ends, `stop()` or ``duration_s``; yields rows as they
        arrive, after writing them to the sinks. Can be called once; closes everything at the end."""
        if self._started:
            raise RuntimeError("ClusterRun.run() can be called only once; build a new ClusterRun")
        self._started = True
        started = time.monotonic()
        self.start_utc = datetime.now(UTC)
        pending: dict[Any, Camera] = {}
        try:
            refs = [c.handle.start.remote(c.name, self.start_utc) for c in self._cameras]
            wait_for(refs, "start", self.cluster, len(self._cameras))
            pending.update({c.handle.poll.remote(self.cluster.poll_s): c for c in self._cameras})
            yield from self._collect(pending, started)
        finally:
            if pending:  # an exception or an abandoned iterator: still write the last windows
                self._stop.set()
                try:
                    for _ in self._collect(pending, started):
                        pass
                except Exception:
                    logger.exception("could not collect the last windows")
            classifiers = [handle for _, handle in self._classifiers]
            self.stats = collect_stats(self._cameras, classifiers, self.source_states, started)
            self.close()
            logger.info("run finished: %s", summary(self.stats))

    def close(self) -> None:
        """Stop the workers (and a Ray runtime started here); close the sinks. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for handle in [c.handle for c in self._cameras] + [h for _, h in self._classifiers]:
            try:
                ray.kill(handle, no_restart=True)
            except Exception:  # already gone
                logger.debug("could not kill %r", handle, exc_info=True)
        if self._own_runtime:
            ray.shutdown()
        sinks, self._file_sinks, self._sinks = [*self._file_sinks, *self._sinks], [], []
        close_all(sinks)

    def __enter__(self) -> ClusterRun:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ----------------------------------------------------------------- collecting rows

    def _collect(self, pending: dict[Any, Camera], started: float) -> Iterator[ClusterWindow]:
        """Poll the cameras until all are done; `pending` maps each outstanding poll to its camera."""
        duration_s = self.config.duration_s
        live = any(c.live for c in self._cameras)
        deadline = started + duration_s if live and duration_s is not None else None
        stop_by: float | None = None
        for camera in pending.values():
            camera.heard_at = time.monotonic()
        while pending:
            now = time.monotonic()
            yield from self._mind_silent(pending.values(), now)
            if stop_by is None and (self._stop.is_set() or (deadline is not None and now >= deadline)):
                if not self._stop.is_set():
                    logger.info("duration of %g s reached", duration_s)
                for camera in pending.values():
                    camera.handle.stop.remote()
                stop_by = now + STOP_GRACE_S
                silent = [ref for ref, c in pending.items() if c.silent(now)]
                for ref in silent:  # a worker without a process cannot write its last window: do not wait
                    camera = pending.pop(ref)
                    logger.error("%s: no worker for %.0f s; stopping without its last window", camera.name,
                                 now - camera.heard_at)
                    yield from self._end_waiting(camera)
            if stop_by is not None and now > stop_by:
                late = sorted(c.name for c in pending.values())
                logger.error("%s did not finish within %g s of stopping; their last windows are lost",
                             ", ".join(late), STOP_GRACE_S)
                for camera in list(pending.values()):
                    yield from self._end_waiting(camera)
                pending.clear()
                return
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=self.cluster.poll_s)
            for ref in ready:
                camera = pending.pop(ref)
                camera.heard_at = time.monotonic()
                try:
                    report: CameraReport = ray.get(ref)
                except RayActorError as exc:  # Ray will not restart it any more
                    logger.error("%s: worker %s lost for good (%s); its rows stop here", camera.name,
                                 camera.actor, first_line(exc))
                    self.source_states[camera.name] = SourceState.FAILED
                    continue
                if report.pid != camera.pid:
                    self._restarted(camera, report, stopping=stop_by is not None)
                self._mind_classifier(camera, report.classifier_wait_s, camera.heard_at)
                camera.frames = camera.frames_before + report.frames
                rows = [ClusterWindow.of(r, report.node, camera.actor) for r in report.rows
                        if camera.is_new(r.window_start_utc)]  # not written as a gap meanwhile
                if report.done:
                    self._finished(camera, report)
                else:  # asked before yielding, so that an abandoned iterator still collects this camera
                    pending[camera.handle.poll.remote(self.cluster.poll_s)] = camera
                camera.last_seen = next((r for r in reversed(rows) if r.frames), camera.last_seen)
                yield from self._emit(camera, rows)
                if report.done and camera.waiting:  # stopped while waiting for the classifier
                    yield from self._end_waiting(camera)
                elif report.done and camera.last_seen is not None:  # ended, failed or stopped: say so
                    self._show(self._live_state(camera.last_seen, self.source_states[camera.name]))

    def _mind_silent(self, cameras: Iterable[Camera], now: float) -> Iterator[ClusterWindow]:
        """Cameras whose worker has not answered for SILENT_S have no process: say so (every WARN_EVERY_S),
        show them as waiting, and write a live camera's windows that passed meanwhile as gap rows."""
        silent = [c for c in cameras if c.silent(now)]
        due = [c for c in silent if now - c.warned_at > WARN_EVERY_S]
        if due:
            free, phrase = room()
            for camera in due:
                camera.warned_at = now
                no_room = free is not None and free < self._camera_cpus
                camera.waiting = SourceState.WAITING if no_room else SourceState.RESTARTING
                logger.warning(
                    "%s: %s: no answer from its worker for %.0f s (did its node leave?); it needs %g CPU, %s%s; "
                    "Ctrl-C stops without it", camera.name, camera.waiting, now - camera.heard_at,
                    self._camera_cpus, phrase, "; its windows are written as gap rows meanwhile" if camera.live else "",
                )  # fmt: skip
                self._show_waiting(camera)
        utc_now = datetime.now(UTC)
        for camera in silent:
            yield from self._emit(camera, self._gap_rows(camera, utc_now))

    def _mind_classifier(self, camera: Camera, wait_s: float, now: float) -> None:
        """A worker whose pipeline has waited SILENT_S for its classifier (a classifier on a lost node):
        say so and show it; and say when it goes on."""
        waiting = SourceState.NO_CLASSIFIER
        if wait_s >= SILENT_S and (camera.waiting != waiting or now - camera.warned_at > WARN_EVERY_S):
            camera.waiting, camera.warned_at = waiting, now
            _, phrase = room()
            logger.warning("%s: %s: its calls have gone unanswered for %.0f s (was the classifier on a node that "
                           "left?); no rows until Ray places it again; %s; Ctrl-C stops without it", camera.name,
                           waiting, wait_s, phrase)  # fmt: skip
            self._show_waiting(camera)
        elif wait_s < SILENT_S and camera.waiting:
            logger.info("%s: its worker goes on (%s)", camera.name, camera.actor)
            camera.waiting, camera.warned_at = None, 0.0

    def _show_waiting(self, camera: Camera) -> None:
        if camera.last_seen is not None:
            waiting = self._live_state(camera.last_seen, camera.waiting)
            self._show(replace(waiting, fps=0.0, faces=0, shares=None, engagement_index=None))

    def _end_waiting(self, camera: Camera) -> Iterator[ClusterWindow]:
        """A camera stopped while it waited: a live one's windows up to now become gap rows."""
        self.source_states[camera.name] = SourceState.STOPPED
        if camera.waiting or camera.silent(time.monotonic()):
            yield from self._emit(camera, self._gap_rows(camera, datetime.now(UTC), last=True))
        if camera.last_seen is not None:
            self._show(self._live_state(camera.last_seen, SourceState.STOPPED))

    def _gap_rows(self, camera: Camera, until: datetime, last: bool = False) -> list[ClusterWindow]:
        """A live camera's windows that passed without a worker, as gap rows (see `cameras.gap_rows`)."""
        return gap_rows(camera, self.start_utc, self.config.window_s, self.labels, until, last)

    def _show(self, state: LiveState) -> None:
        """Hand the live view (if any) one camera's state."""
        for sink in self._sinks:
            if isinstance(sink, LiveSink):
                sink.update(state)

    def _restarted(self, camera: Camera, report: CameraReport, stopping: bool) -> None:
        """Ray restarted the worker (a new process): tell it where to pick up."""
        camera.restarts += 1
        camera.frames_before = camera.frames
        camera.pid, camera.node = report.pid, report.node
        camera.waiting, camera.warned_at = None, 0.0
        logger.warning("%s: its worker died; Ray restarted it on %s as %s", camera.name, report.node,
                       camera.actor)
        if not report.started:
            assert self.start_utc is not None
            camera.handle.start.remote(camera.name, self.start_utc, camera.last_start)
            if stopping:
                camera.handle.stop.remote()

    def _finished(self, camera: Camera, report: CameraReport) -> None:
        state = SourceState(report.state or SourceState.STOPPED)
        self.source_states[camera.name] = state
        if state == SourceState.FAILED:
            logger.error("%s failed: %s; its rows stop here", camera.name, report.error or "unknown error")
        else:
            logger.info("%s %s after %d frames", camera.name, state.value, camera.frames)

    def _emit(self, camera: Camera, rows: list[ClusterWindow]) -> Iterator[ClusterWindow]:
        """Write one camera's rows to every sink, then yield them. A live view (console) shows each camera's
        last window, and what it waits for: per-frame state stays on the camera workers."""
        for row in rows:
            camera.last_start, camera.last_end = row.window_start_utc, row.window_end_utc
            for sink in (*self._file_sinks, *self._sinks):
                sink.write(row)
                if isinstance(sink, LiveSink):
                    sink.update(self._live_state(row, camera.waiting))
        yield from rows

    def _live_state(self, row: ClusterWindow, state: SourceState | None = None) -> LiveState:
        state = state or (SourceState.CONNECTED if row.frames else SourceState.GAP)
        provider = self._classifiers[0][0].provider if self._classifiers else ""
        return LiveState.of_window(row, provider, state, row.dropped_frames)


def run_cluster(
    config: RunConfig, cluster: ClusterConfig | None = None, sinks: Sequence[WindowSink] = ()
) -> list[ClusterWindow]:
    """Run on Ray to the end and return every window row (give ``duration_s`` for live sources)."""
    return list(ClusterRun(config, cluster, sinks).run())


def _check_supported(config: RunConfig) -> None:
    if config.output.annotate_path is not None:
        raise ConfigError(
            f"annotate_path={str(config.output.annotate_path)!r} is not allowed in cluster mode: only window "
            "rows leave the camera workers, never pixels; annotate a single source without --ray"
        )
    if config.output.per_track:
        raise ConfigError(
            "per_track=True is not allowed in cluster mode yet; run without --ray for per-track rows"
        )
