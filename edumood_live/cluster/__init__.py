"""Cluster mode: many cameras on a Ray cluster, with the same window rows as one process.

One Ray actor per camera runs the single-process `Pipeline` on its source (capture, detection,
tracking, aggregation; restarted by Ray when it dies, reopening its camera); shared classifier actors
batch face crops across cameras; only window rows leave the camera actors, and the driver writes them
to the usual sinks with two more columns, ``node`` and ``actor``. Needs the ``cluster`` extra
(``pip install "edumood-live[cluster]"``); single-process mode never imports Ray.

    from edumood_live.cluster import ClusterConfig, ClusterRun

    with ClusterRun(run_config, ClusterConfig(address=None)) as run:   # None: start Ray here
        for row in run.run():
            print(row.to_row())

Names are imported lazily: ``ClusterConfig`` needs no Ray, the rest imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edumood_live._lazy import lazy_exports

_EXPORTS = {
    "ClusterConfig": "edumood_live.cluster.config",
    "ClusterWindow": "edumood_live.cluster.config",
    "CLUSTER_COLUMNS": "edumood_live.cluster.config",
    "ClusterRun": "edumood_live.cluster.driver",
    "run_cluster": "edumood_live.cluster.driver",
}

__all__ = ["CLUSTER_COLUMNS", "ClusterConfig", "ClusterRun", "ClusterWindow", "run_cluster"]

if TYPE_CHECKING:
    from edumood_live.cluster.config import CLUSTER_COLUMNS, ClusterConfig, ClusterWindow
    from edumood_live.cluster.driver import ClusterRun, run_cluster


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)  # Ray only with the driver
