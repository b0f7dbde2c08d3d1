"""Where the cluster's workers go and how they start: joining Ray, CPU shares, starting the workers.

Ray places an actor on one node, so CPU shares are sized node by node (`fitting_share`), with room to
place every worker again after the largest node is lost (`resilient_share`). `plan` picks the shares
and the classifier replicas' nodes and warns when the run does not fit; `start_classifiers` and
`start_cameras` start the workers and wait for them (bounded by ``start_timeout_s``), so an unusable
model or source fails with one clear line before any frame is processed. Without the expressions signal
(``--signals attention``) there are no classifier workers: no model is opened and no CPUs are reserved
for one; the camera workers detect, track and measure attention alone.
"""

from __future__ import annotations

import logging
import math
import os
import uuid
from dataclasses import dataclass, replace
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from edumood_live.cluster.camera_actor import CameraWorker, Opened
from edumood_live.cluster.cameras import Camera
from edumood_live.cluster.classifier_actor import BatchingClassifier, ClassifierInfo
from edumood_live.cluster.config import PER_NODE, ClusterConfig
from edumood_live.config import RunConfig
from edumood_live.errors import ClusterError, EduMoodError
from edumood_live.naming import unique_names

logger = logging.getLogger(__name__)

FORWARDED_ENV = ("OPENCV_FFMPEG_CAPTURE_OPTIONS", "OPENCV_FFMPEG_LOGLEVEL")  # FFmpeg settings for cameras


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
        raise ClusterError(f"cannot {where}: {first_line(exc)}") from exc
    return False


@dataclass(frozen=True)
class Layout:
    """Where the classifier replicas go (one Ray scheduling strategy each), and the CPUs per worker."""

    strategies: list[Any]
    camera_cpus: float
    classifier_cpus: float


def plan(config: RunConfig, cluster: ClusterConfig) -> Layout:
    """The run's layout on the cluster as it is now; warns when the workers do not all fit. Without the
    expressions signal the layout has no classifier replicas."""
    cl = cluster
    if not config.expressions:
        strategies: list[Any] = []
    elif cl.classifier_replicas == PER_NODE:
        nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
        strategies = [NodeAffinitySchedulingStrategy(n, soft=False) for n in nodes]
    else:
        strategies = ["DEFAULT"] * int(cl.classifier_replicas)
    total = float(ray.cluster_resources().get("CPU", 0.0))
    cameras = len(config.sources)
    node_cpus = [float(n.get("Resources", {}).get("CPU", 0.0)) for n in ray.nodes() if n.get("Alive")]
    share = resilient_share(node_cpus, cameras + len(strategies))
    camera_cpus = cl.camera_cpus if cl.camera_cpus is not None else max(share, 0.01)
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
    return Layout(strategies, camera_cpus, classifier_cpus)


def start_classifiers(config: RunConfig, cluster: ClusterConfig, layout: Layout) -> list[tuple[ClassifierInfo, Any]]:
    """Start the shared classifier workers and wait until each has loaded the model (or says why not);
    none (and no model opened) when the layout has no replicas (``--signals attention``)."""
    if not layout.strategies:
        return []
    actor = ray.remote(BatchingClassifier)
    run_id = uuid.uuid4().hex[:8]
    names = [f"edumood-{run_id}-classifier{i}" for i in range(len(layout.strategies))]
    handles: list[Any] = [  # Ray actor handles (untyped)
        actor.options(
            name=name, num_cpus=layout.classifier_cpus, num_gpus=cluster.classifier_gpus,
            max_restarts=cluster.max_restarts, max_task_retries=task_retries(cluster), scheduling_strategy=strategy,
        ).remote(config.classifier, cluster.max_batch_faces, cluster.batch_wait_ms, name)
        for name, strategy in zip(names, layout.strategies, strict=True)
    ]  # fmt: skip
    infos = wait_for([h.info.remote() for h in handles], "load the model", cluster, len(config.sources))
    for info in infos:
        if isinstance(info, EduMoodError):
            raise info
    return list(zip(infos, handles, strict=True))


def spawn_cameras(
    config: RunConfig, cluster: ClusterConfig, cpus: float, classifiers: list[ClassifierInfo]
) -> list[Camera]:
    """One camera worker per source (started, not yet opened), spread over the nodes."""
    actor = ray.remote(CameraWorker)
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    return [
        Camera(index, actor.options(
            num_cpus=cpus, max_restarts=cluster.max_restarts, max_task_retries=task_retries(cluster),
            scheduling_strategy="SPREAD",
        ).remote(index, replace(config, sources=(source,)), classifiers, env))
        for index, source in enumerate(config.sources)
    ]  # fmt: skip


def open_cameras(cameras: list[Camera], config: RunConfig, cluster: ClusterConfig) -> None:
    """Open every camera and load its detector; names the cameras (unique) and notes where they run."""
    open_s = max(s.open_timeout_s for s in config.sources)
    refs = [c.handle.open.remote() for c in cameras]
    opened: list[Opened] = wait_for(refs, "open", cluster, len(cameras), open_s)
    for result in opened:
        if result.error is not None:
            raise result.error
    for camera, result, name in zip(cameras, opened, unique_names([o.name for o in opened]), strict=True):
        camera.name, camera.live, camera.node, camera.pid = name, result.live, result.node, result.pid
    refs = [c.handle.prepare.remote(c.name) for c in cameras]
    for error in wait_for(refs, "load the detector", cluster, len(cameras)):
        if error is not None:
            raise error


def wait_for(refs: list[Any], what: str, cluster: ClusterConfig, cameras: int, extra_s: float = 0.0) -> list[Any]:
    """`ray.get` bounded by ``start_timeout_s`` (+ ``extra_s``); a timeout becomes one clear ClusterError."""
    timeout_s = cluster.start_timeout_s + extra_s
    try:
        return ray.get(refs, timeout=timeout_s)
    except GetTimeoutError:
        cpus = ray.cluster_resources().get("CPU", 0)
        raise ClusterError(
            f"the workers did not {what} within {timeout_s:g} s; the cluster has {cpus:g} CPUs for "
            f"{cameras} camera(s): give them fewer CPUs each or add nodes"
        ) from None
    except RayActorError as exc:
        raise ClusterError(f"a worker died while it should {what}: {first_line(exc)}") from exc


def room() -> tuple[float | None, str]:
    """Free CPUs of the cluster (None when Ray cannot be asked) and a phrase that says what it has."""
    try:
        free, total = ray.available_resources().get("CPU", 0.0), ray.cluster_resources().get("CPU", 0.0)
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    except Exception as exc:  # the GCS itself may be unreachable: say so rather than fail the run
        return None, f"the cluster cannot be asked ({first_line(exc)})"
    return free, f"the cluster now has {nodes} node(s), {total:g} CPUs, {free:g} free"


def task_retries(cluster: ClusterConfig) -> int:
    """Calls to a worker that Ray is restarting wait for the new one (none when restarts are off)."""
    return 0 if cluster.max_restarts == 0 else -1


def first_line(exc: BaseException) -> str:
    """The first line of an error's text (Ray's carry a traceback), or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
