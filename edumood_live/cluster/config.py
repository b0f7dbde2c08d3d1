"""Cluster-mode settings and the row type it writes; no Ray import here (picklable, cheap to import).

`ClusterConfig` says where the Ray cluster is and how the work is laid out on it: one camera worker
per source, one or more shared classifier workers that batch face crops across cameras. The run itself
(sources, models, windows, outputs) is the same `RunConfig` as in single-process mode.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from edumood_live.errors import ConfigError
from edumood_live.types import WindowSummary
from edumood_live.validation import require_number

PER_NODE = "per-node"
CLUSTER_COLUMNS = ("node", "actor")  # appended to the single-process window-row columns


@dataclass(frozen=True)
class ClusterConfig:
    """Where and how a run is spread over Ray.

    address: None starts a single-node Ray runtime in this process (stopped at the end); ``"auto"``
        joins the cluster this machine belongs to; ``"host:6379"`` or ``"ray://host:10001"`` a given one.
    num_cpus: CPUs of a runtime started here (None: all cores); ignored when joining a cluster.
    camera_cpus / classifier_cpus: CPUs Ray reserves per camera worker / classifier worker. None
        shares the cluster's CPUs out at start (at most 1 each), so any number of cameras fits; give 1
        (a detector uses one core) on a cluster sized, or autoscaled, for the cameras.
    classifier_gpus: GPUs per classifier worker (0: CPU; the classifier's ``device`` still applies).
    classifier_replicas: number of shared classifier workers, or ``"per-node"`` (one on every node);
        each camera uses a replica on its own node when there is one.
    max_batch_faces: most face crops one classifier call takes.
    batch_wait_ms: how long a classifier worker holds a batch open for crops from the other cameras
        it has heard from in the last second (it never waits when every such camera is in the batch).
    max_restarts: how often Ray restarts a camera or classifier worker that died (-1: for ever).
    poll_s: how long one collection call may wait on a camera for a window row.
    start_timeout_s: bound on starting the workers and opening the cameras (on top of the sources'
        own open timeouts).
    log_to_driver: show the workers' log lines (warnings and errors) on this terminal.
    """

    address: str | None = None
    num_cpus: int | None = None
    camera_cpus: float | None = None
    classifier_cpus: float | None = None
    classifier_gpus: float = 0.0
    classifier_replicas: int | str = 1
    max_batch_faces: int = 256
    batch_wait_ms: float = 2.0
    max_restarts: int = -1
    poll_s: float = 0.25
    start_timeout_s: float = 120.0
    log_to_driver: bool = True

    def __post_init__(self) -> None:
        if self.address is not None and (not isinstance(self.address, str) or not self.address.strip()):
            raise ConfigError(
                f"address={self.address!r} is not allowed; use None (start Ray here), 'auto', 'host:port' or "
                "'ray://host:port'"
            )
        require_number("num_cpus", self.num_cpus, 1, integer=True, none_ok=True)
        for name in ("camera_cpus", "classifier_cpus"):
            require_number(name, getattr(self, name), 0, 256, low_open=True, none_ok=True, extra=" (auto)")
        require_number("classifier_gpus", self.classifier_gpus, 0, 16)
        if self.classifier_replicas != PER_NODE:
            require_number("classifier_replicas", self.classifier_replicas, 1, integer=True, extra=f" or {PER_NODE!r}")
        require_number("max_batch_faces", self.max_batch_faces, 1, integer=True)
        require_number("batch_wait_ms", self.batch_wait_ms, 0, 1000)
        require_number("max_restarts", self.max_restarts, -1, integer=True, extra=" (-1: for ever)")
        for name in ("poll_s", "start_timeout_s"):
            require_number(name, getattr(self, name), 0, low_open=True)


@dataclass(frozen=True)
class ClusterWindow(WindowSummary):
    """A window row from a camera worker, with where it was computed.

    node: the Ray node's IP address. actor: the camera worker, ``cam<i>#<n>`` where n counts the
    restarts of that worker (``cam2#1``: camera 2 after one restart).
    """

    node: str = ""
    actor: str = ""

    @classmethod
    def of(cls, summary: WindowSummary, node: str, actor: str) -> ClusterWindow:
        values = {f.name: getattr(summary, f.name) for f in fields(WindowSummary)}
        return cls(**values, node=node, actor=actor)

    def to_row(self) -> dict[str, object]:
        """The single-process row, then ``node`` and ``actor``."""
        return {**super().to_row(), "node": self.node, "actor": self.actor}
