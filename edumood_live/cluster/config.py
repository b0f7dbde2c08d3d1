"""Cluster-mode settings and the row type it writes; no Ray import here (picklable, cheap to import).

`ClusterConfig` says where the Ray cluster is and how the work is laid out on it: one camera worker
per source, one or more shared classifier workers that batch face crops across cameras. The run itself
(sources, models, windows, outputs) is the same `RunConfig` as in single-process mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from edumood_live.errors import ConfigError
from edumood_live.types import WindowSummary

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
            _refuse("address", self.address, "None (start Ray here), 'auto', 'host:port' or 'ray://host:port'")
        if self.num_cpus is not None and not _is_int(self.num_cpus, minimum=1):
            _refuse("num_cpus", self.num_cpus, "an integer >= 1 or None")
        for name in ("camera_cpus", "classifier_cpus"):
            value = getattr(self, name)
            if value is not None and not (_is_number(value) and 0 < value <= 256):
                _refuse(name, value, "a number in (0, 256] or None (auto)")
        if not (_is_number(self.classifier_gpus) and 0 <= self.classifier_gpus <= 16):
            _refuse("classifier_gpus", self.classifier_gpus, "a number in [0, 16]")
        if self.classifier_replicas != PER_NODE and not _is_int(self.classifier_replicas, minimum=1):
            _refuse("classifier_replicas", self.classifier_replicas, f"an integer >= 1 or {PER_NODE!r}")
        if not _is_int(self.max_batch_faces, minimum=1):
            _refuse("max_batch_faces", self.max_batch_faces, "an integer >= 1")
        if not (_is_number(self.batch_wait_ms) and 0 <= self.batch_wait_ms <= 1000):
            _refuse("batch_wait_ms", self.batch_wait_ms, "a number in [0, 1000]")
        if not _is_int(self.max_restarts, minimum=-1):
            _refuse("max_restarts", self.max_restarts, "an integer >= -1 (-1: for ever)")
        for name in ("poll_s", "start_timeout_s"):
            value = getattr(self, name)
            if not (_is_number(value) and value > 0):
                _refuse(name, value, "a finite number > 0")


def _refuse(name: str, value: object, allowed: str) -> None:
    raise ConfigError(f"{name}={value!r} is not allowed; use {allowed}")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


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
