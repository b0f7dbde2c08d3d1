"""The cluster-mode driver: starts the workers on Ray, collects their window rows, writes the sinks.

    with ClusterRun(config, ClusterConfig()) as run:   # config: the same RunConfig as single-process
        for row in run.run():                           # ClusterWindow: the usual row + node, actor
            ...

Construction joins (or starts) Ray, loads the classifier on its worker(s), opens every camera on its
own worker and checks the outputs, so an unusable source, model or path fails with one clear line
before any frame is processed, as in single-process mode. `run()` starts every camera on one window
grid and polls the workers for the windows that closed; the rows are written to the sinks here (CSV
and JSONL get ``node`` and ``actor`` columns) and then yielded. A worker that dies is restarted by Ray
and told which windows the driver already has (see `camera_actor`); one Ray gives up on ends its
source as failed while the others go on. `stop()` ends the run as Ctrl-C does in single-process mode:
every camera writes its last, partial window.

The driver never waits on a worker: every call to one is a future, and the loop waits for whichever
answers first, for at most ``poll_s``. A worker that has not answered for SILENT_S has no running
process (its node left, Ray is placing it again, or there is no room for it): the driver says so, the
live view shows it as "restarting on another node" or "waiting for resources", and the windows of a
live camera pass as ``gap`` rows written here (node empty) until a worker answers again; a file is
replayed by its next worker instead. At a stop, such a worker is not waited for, and a running one
only for STOP_GRACE_S.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from edumood_live.cluster.camera_actor import CameraReport, CameraWorker, Opened
from edumood_live.cluster.classifier_actor import BatchingClassifier, BatchStats, ClassifierInfo
from edumood_live.cluster.config import CLUSTER_COLUMNS, PER_NODE, ClusterConfig, ClusterWindow
from edumood_live.config import RunConfig
from edumood_live.errors import ClusterError, ConfigError, EduMoodError
from edumood_live.naming import unique_names
from edumood_live.sinks import LiveSink, LiveState, WindowSink, close_all
from edumood_live.sinks.files import open_file_sinks, preflight
from edumood_live.states import SourceState, WindowStatus

logger = logging.getLogger(__name__)

FORWARDED_ENV = ("OPENCV_FFMPEG_CAPTURE_OPTIONS", "OPENCV_FFMPEG_LOGLEVEL")  # FFmpeg settings for cameras
STOP_GRACE_S = 5.0  # after stop(), how long running cameras get for their last windows (< 1 s when healthy)
SILENT_S = 3.0  # a worker that answers no poll for this long has no process (a live one answers in < 1 s)
WARN_EVERY_S = 15.0  # how often the driver repeats that a camera is still waiting
STATS_TIMEOUT_S = 2.0  # at the end, for the statistics of all workers together


def fitting_share(node_cpus: list[float], actors: int) -> float:
    """The largest CPU share (<= 1, in hundredths) per actor with which ``actors`` actors fit the nodes.

    Ray places an actor on one node, so a share must fit node by node, not in the cluster's total: 4 actors
    at 3 CPUs / 4 = 0.75 each do not fit nodes of 1 and 2 CPUs (1 + 2 places), 0.5 each do (2 + 4).
    """
    cpus = [c for c in node_cpus if c > 0]
    if not cpus or actors < 1:
        return 1.0
    candidates = sorted({min(1.0, c / k) for c in cpus for k in range(1, actors + 1)}, reverse=True)
    for share in candidates:
        share = math.floor(100 * share) / 100
        if share > 0 and places(cpus, share) >= actors:
            return share
    return 0.01


def places(node_cpus: list[float], share: float) -> int:
    """How many actors of ``share`` CPUs the nodes hold, node by node."""
    return sum(math.floor(c / share + 1e-9) for c in node_cpus if c > 0)


def resilient_share(node_cpus: list[float], actors: int) -> float:
    """`fitting_share` with room to place every actor again after the largest node is lost.

    Ray's CPU shares are bookkeeping (a process may use more), so a smaller share costs nothing while
    all nodes are up; without the headroom, workers of a lost node wait for ever for a place.
    """
    cpus = sorted(c for c in node_cpus if c > 0)
    return fitting_share(cpus[:-1] if len(cpus) > 1 else cpus, actors)


@dataclass
class Camera:
    """The driver's view of one camera worker (read it, do not change it): its source name, the worker's
    node and process, how often Ray restarted it, frames processed so far."""

    index: int
    handle: Any  # ray.actor.ActorHandle
    name: str = ""
    live: bool = False
    node: str = ""
    pid: int = 0
    restarts: int = 0
    last_start: str | None = None  # window_start of the last row received or written as a gap
    last_end: str | None = None  # window_end of that row
    frames: int = 0  # processed by all incarnations of the worker
    frames_before: int = 0  # processed by the incarnations that died
    stats: dict[str, object] = field(default_factory=dict)
    last_seen: ClusterWindow | None = None  # the last row with frames: what the live view shows at the end
    heard_at: float = 0.0  # monotonic time of the worker's last answer to a poll
    warned_at: float = 0.0  # when the driver last said that this camera waits
    waiting: SourceState | None = None  # WAITING, RESTARTING or NO_CLASSIFIER while it waits

    @property
    def actor(self) -> str:
        """``cam<i>#<restarts>``, written in every row."""
        return f"cam{self.index}#{self.restarts}"


def connect(cluster: ClusterConfig) -> bool:
    """Join the cluster at ``cluster.address``, or start a runtime here when it is None; True when this
    call started a runtime (`ClusterRun.close` stops it again). An existing connection is reused."""
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": cluster.log_to_driver,
                               "logging_level": logging.WARNING}
    try:
        if cluster.address is None:
            ray.init(address="local", num_cpus=cluster.num_cpus, **options)
            return True
        ray.init(address=cluster.address, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = "start a Ray runtime here" if cluster.address is None else f"reach Ray at {cluster.address!r}"
        raise ClusterError(f"cannot {where}: {_first_line(exc)}") from exc
    return False


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
        self.stats: dict[str, object] = {}  # filled at the end of `run` (see `_collect_stats`)
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
            strategies, camera_cpus, classifier_cpus = self._layout()
            self._start_classifiers(strategies, classifier_cpus)
            self.labels = self._classifiers[0][0].meta.labels
            preflight(config.output, self.labels, CLUSTER_COLUMNS)
            self._start_cameras(camera_cpus)
            self._file_sinks = open_file_sinks(config.output, self.labels, CLUSTER_COLUMNS)
        except BaseException:
            self.close()
            raise

    # ----------------------------------------------------------------- public API

    def describe(self) -> str:
        """One line: cameras and nodes, model and provider, batching, detection, window."""
        info = self._classifiers[0][0]
        nodes = sorted({c.node for c in self._cameras})
        replicas = len(self._classifiers)
        return (
            f"{len(self._cameras)} camera worker(s) on Ray ({', '.join(nodes)}): "
            f"{', '.join(c.name for c in self._cameras)}; model {info.meta.model_name} {info.meta.version} "
            f"({info.model_name}) on {info.provider.removesuffix('ExecutionProvider')} in {replicas} shared "
            f"classifier worker(s), batches up to {self.cluster.max_batch_faces} faces, wait "
            f"{self.cluster.batch_wait_ms:g} ms; detect every {self.config.detect_every}; window "
            f"{self.config.window_s:g} s; min group {self.config.min_group}"
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
            self._get([c.handle.start.remote(c.name, self.start_utc) for c in self._cameras], "start")
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
            self._collect_stats(started)
            self.close()
            logger.info("run finished: %s", _summary(self.stats))

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

    # ----------------------------------------------------------------- starting

    def _layout(self) -> tuple[list[Any], float, float]:
        """Where the classifier replicas go, and the CPUs per camera and per classifier worker."""
        cl = self.cluster
        if cl.classifier_replicas == PER_NODE:
            nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
            strategies: list[Any] = [NodeAffinitySchedulingStrategy(n, soft=False) for n in nodes]
        else:
            strategies = ["DEFAULT"] * int(cl.classifier_replicas)
        total = float(ray.cluster_resources().get("CPU", 0.0))
        cameras = len(self.config.sources)
        node_cpus = [float(n.get("Resources", {}).get("CPU", 0.0)) for n in ray.nodes() if n.get("Alive")]
        share = resilient_share(node_cpus, cameras + len(strategies))
        camera_cpus = cl.camera_cpus if cl.camera_cpus is not None else max(share, 0.01)
        self._camera_cpus = camera_cpus
        classifier_cpus = cl.classifier_cpus if cl.classifier_cpus is not None else max(share, 0.01)
        wanted = cameras * camera_cpus + len(strategies) * classifier_cpus
        room = places(node_cpus, camera_cpus)
        if cl.camera_cpus is not None and room < cameras:
            logger.warning(
                "%d camera(s) at %g CPU each do not fit these nodes (%s CPUs: room for %d); the rest wait for a "
                "node with room. --camera-cpus %g would fit them all", cameras, camera_cpus,
                "+".join(f"{c:g}" for c in node_cpus), room, share,
            )  # fmt: skip
        if wanted > total + 1e-6:
            logger.warning(
                "this run asks Ray for %.2f CPUs (%d cameras x %g + %d classifiers x %g) but the cluster has "
                "%g now; workers wait for more nodes (an autoscaler) up to %g s",
                wanted, cameras, camera_cpus, len(strategies), classifier_cpus, total, cl.start_timeout_s,
            )  # fmt: skip
        return strategies, camera_cpus, classifier_cpus

    def _start_classifiers(self, strategies: list[Any], cpus: float) -> None:
        cl = self.cluster
        actor = ray.remote(BatchingClassifier)
        run_id = uuid.uuid4().hex[:8]
        names = [f"edumood-{run_id}-classifier{i}" for i in range(len(strategies))]
        handles: list[Any] = [  # Ray actor handles (untyped)
            actor.options(
                name=name, num_cpus=cpus, num_gpus=cl.classifier_gpus, max_restarts=cl.max_restarts,
                max_task_retries=_task_retries(cl), scheduling_strategy=strategy,
            ).remote(self.config.classifier, cl.max_batch_faces, cl.batch_wait_ms, name)
            for name, strategy in zip(names, strategies, strict=True)
        ]  # fmt: skip
        self._classifiers = [(info, handle) for info, handle in
                             zip(self._get([h.info.remote() for h in handles], "load the model"), handles,
                                 strict=True)]  # fmt: skip
        for info, _ in self._classifiers:
            if isinstance(info, EduMoodError):
                raise info

    def _start_cameras(self, cpus: float) -> None:
        cl = self.cluster
        actor = ray.remote(CameraWorker)
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        for index, source in enumerate(self.config.sources):
            handle = actor.options(
                num_cpus=cpus, max_restarts=cl.max_restarts, max_task_retries=_task_retries(cl),
                scheduling_strategy="SPREAD",
            ).remote(index, replace(self.config, sources=(source,)), [i for i, _ in self._classifiers], env)
            self._cameras.append(Camera(index, handle))
        open_s = max(s.open_timeout_s for s in self.config.sources)
        opened: list[Opened] = self._get([c.handle.open.remote() for c in self._cameras], "open", open_s)
        for result in opened:
            if result.error is not None:
                raise result.error
        for camera, result, name in zip(self._cameras, opened, unique_names([o.name for o in opened]),
                                        strict=True):
            camera.name, camera.live, camera.node, camera.pid = name, result.live, result.node, result.pid
        for error in self._get([c.handle.prepare.remote(c.name) for c in self._cameras], "load the detector"):
            if error is not None:
                raise error

    def _get(self, refs: list[Any], what: str, extra_s: float = 0.0) -> list[Any]:
        """`ray.get` bounded by ``start_timeout_s``; a timeout becomes one clear ClusterError."""
        timeout_s = self.cluster.start_timeout_s + extra_s
        try:
            return ray.get(refs, timeout=timeout_s)
        except GetTimeoutError:
            cpus = ray.cluster_resources().get("CPU", 0)
            raise ClusterError(
                f"the workers did not {what} within {timeout_s:g} s; the cluster has {cpus:g} CPUs for "
                f"{len(self.config.sources)} camera(s): give them fewer CPUs each or add nodes"
            ) from None
        except RayActorError as exc:
            raise ClusterError(f"a worker died while it should {what}: {_first_line(exc)}") from exc

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
                silent = [ref for ref, c in pending.items() if now - c.heard_at > SILENT_S]
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
                                 camera.actor, _first_line(exc))
                    self.source_states[camera.name] = SourceState.FAILED
                    continue
                if report.pid != camera.pid:
                    self._restarted(camera, report, stopping=stop_by is not None)
                self._mind_classifier(camera, report.classifier_wait_s, camera.heard_at)
                camera.frames = camera.frames_before + report.frames
                rows = [ClusterWindow.of(r, report.node, camera.actor) for r in report.rows
                        if _is_new(camera, r.window_start_utc)]  # not written as a gap meanwhile
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
        silent = [c for c in cameras if now - c.heard_at > SILENT_S]
        due = [c for c in silent if now - c.warned_at > WARN_EVERY_S]
        if due:
            free, room = self._room()
            for camera in due:
                camera.warned_at = now
                no_room = free is not None and free < self._camera_cpus
                camera.waiting = SourceState.WAITING if no_room else SourceState.RESTARTING
                logger.warning(
                    "%s: %s: no answer from its worker for %.0f s (did its node leave?); it needs %g CPU, %s%s; "
                    "Ctrl-C stops without it", camera.name, camera.waiting, now - camera.heard_at,
                    self._camera_cpus, room, "; its windows are written as gap rows meanwhile" if camera.live else "",
                )  # fmt: skip
                self._show_waiting(camera)
        utc_now = datetime.now(UTC)
        for camera in silent:
            yield from self._emit(camera, self._gap_rows(camera, utc_now))

    def _room(self) -> tuple[float | None, str]:
        """Free CPUs of the cluster (None when Ray cannot be asked) and a phrase that says what it has."""
        try:
            free, total = ray.available_resources().get("CPU", 0.0), ray.cluster_resources().get("CPU", 0.0)
            nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        except Exception as exc:  # the GCS itself may be unreachable: say so rather than fail the run
            return None, f"the cluster cannot be asked ({_first_line(exc)})"
        return free, f"the cluster now has {nodes} node(s), {total:g} CPUs, {free:g} free"

    def _mind_classifier(self, camera: Camera, wait_s: float, now: float) -> None:
        """A worker whose pipeline has waited SILENT_S for its classifier (a classifier on a lost node):
        say so and show it; and say when it goes on."""
        waiting = SourceState.NO_CLASSIFIER
        if wait_s >= SILENT_S and (camera.waiting != waiting or now - camera.warned_at > WARN_EVERY_S):
            camera.waiting, camera.warned_at = waiting, now
            _, room = self._room()
            logger.warning("%s: %s: its calls have gone unanswered for %.0f s (was the classifier on a node that "
                           "left?); no rows until Ray places it again; %s; Ctrl-C stops without it", camera.name,
                           waiting, wait_s, room)  # fmt: skip
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
        if camera.waiting or time.monotonic() - camera.heard_at > SILENT_S:
            yield from self._emit(camera, self._gap_rows(camera, datetime.now(UTC), last=True))
        if camera.last_seen is not None:
            self._show(self._live_state(camera.last_seen, SourceState.STOPPED))

    def _gap_rows(self, camera: Camera, until: datetime, last: bool = False) -> list[ClusterWindow]:
        """Gap rows for a live camera's windows that passed without a worker: from the end of its last row
        to the windows that ended by `until` (with `last`, the one open then too, cut at `until`). A file
        gets none: its next worker replays it."""
        if not camera.live or self.start_utc is None:
            return []
        window_ms = self.config.window_s * 1000.0
        done_ms = (_parse_utc(camera.last_end) - self.start_utc) / _MS if camera.last_end else 0.0
        until_ms = (until - self.start_utc) / _MS
        index = math.ceil(done_ms / window_ms - 1e-6)
        rows = []
        while (start_ms := index * window_ms) < until_ms:
            end_ms = start_ms + window_ms
            if end_ms > until_ms:
                if not last:
                    break
                end_ms = until_ms
            rows.append(ClusterWindow(
                camera.name, _iso(self.start_utc, start_ms), _iso(self.start_utc, end_ms), WindowStatus.GAP, 0,
                0.0, 0.0, 0, dict.fromkeys(self.labels), None, None, None, 0, node="", actor=camera.actor,
            ))  # fmt: skip
            index += 1
        return rows

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
        return LiveState.of_window(row, self._classifiers[0][0].provider, state, row.dropped_frames)

    def _collect_stats(self, started: float) -> None:
        """Per-camera and classifier statistics, fetched before the workers are stopped."""
        wall_s = time.monotonic() - started
        cameras = self._cameras
        now = time.monotonic()
        asked = {c.handle.stats.remote(): c for c in cameras if now - c.heard_at <= SILENT_S}  # others: no process
        replicas = [h.stats.remote() for _, h in self._classifiers]
        answers = self._answers([*asked, *replicas])
        for ref, camera in asked.items():
            camera.stats = answers.get(ref, {})
        per_classifier: list[BatchStats] = [answers[ref] for ref in replicas if ref in answers]
        batching = BatchStats()
        for replica in per_classifier:
            batching.merge(replica)
        frames = sum(c.frames for c in cameras)
        self.stats = {
            "wall_s": wall_s,
            "frames": frames,
            "fps": frames / wall_s if wall_s > 0 else 0.0,
            "cameras": [
                {"name": c.name, "actor": c.actor, "node": c.node, "restarts": c.restarts, "frames": c.frames,
                 "state": self.source_states.get(c.name), "pipeline": c.stats}
                for c in cameras
            ],
            "classifiers": [replica.as_dict() for replica in per_classifier],
            "batching": batching.as_dict(),
        }  # fmt: skip

    @staticmethod
    def _answers(refs: list[Any]) -> dict[Any, Any]:
        """The answers that come within STATS_TIMEOUT_S, all calls together; the rest are left out."""
        ready, late = ray.wait(refs, num_returns=len(refs), timeout=STATS_TIMEOUT_S) if refs else ([], [])
        answers = {}
        for ref in ready:
            try:
                answers[ref] = ray.get(ref)
            except RayActorError as exc:
                logger.debug("a worker could not give its statistics: %s", _first_line(exc))
        if late:
            logger.warning("%d worker(s) gave no statistics within %g s", len(late), STATS_TIMEOUT_S)
        return answers


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


def _task_retries(cluster: ClusterConfig) -> int:
    """Calls to a worker that Ray is restarting wait for the new one (none when restarts are off)."""
    return 0 if cluster.max_restarts == 0 else -1


def _summary(stats: dict[str, object]) -> str:
    if not stats:
        return "no statistics"
    batching = stats.get("batching") or {}
    assert isinstance(batching, dict)
    return (
        f"{stats['frames']} frames in {stats['wall_s']:.1f} s = {stats['fps']:.1f} fps over all cameras; "
        f"classifier: {batching.get('calls', 0)} calls, {batching.get('faces_per_call', 0):.1f} faces and "
        f"{batching.get('requests_per_call', 0):.2f} camera requests per call"
    )


_MS = timedelta(milliseconds=1)


def _iso(start_utc: datetime, offset_ms: float) -> str:
    """A window bound as the camera workers' rows write it (ISO-8601 UTC, milliseconds, ``Z``)."""
    when = start_utc + timedelta(milliseconds=round(offset_ms, 3))
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _is_new(camera: Camera, window_start: str) -> bool:
    """True when the driver has no row for this camera's window yet (rows arrive in order)."""
    return camera.last_start is None or _parse_utc(window_start) > _parse_utc(camera.last_start)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
