"""A cluster run's statistics: per camera worker and per classifier worker, fetched at the end.

Workers are asked all together and given STATS_TIMEOUT_S; a worker without a process (silent, see
`cameras.SILENT_S`) is not asked, and one that does not answer in time is left out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import ray
from ray.exceptions import RayActorError

from edumood_live.cluster.cameras import Camera
from edumood_live.cluster.classifier_actor import BatchStats
from edumood_live.cluster.placement import first_line
from edumood_live.states import SourceState

logger = logging.getLogger(__name__)

STATS_TIMEOUT_S = 2.0  # at the end, for the statistics of all workers together


def collect_stats(
    cameras: Sequence[Camera],
    classifiers: Sequence[Any],
    source_states: dict[str, SourceState],
    started: float,
) -> dict[str, object]:
    """Per-camera and classifier statistics (``classifiers``: their Ray handles), fetched before the
    workers are stopped; fills each camera's ``stats``. ``started``: the run's monotonic start."""
    wall_s = time.monotonic() - started
    now = time.monotonic()
    asked = {c.handle.stats.remote(): c for c in cameras if not c.silent(now)}  # others: no process
    replicas = [h.stats.remote() for h in classifiers]
    answers = _answers([*asked, *replicas])
    for ref, camera in asked.items():
        camera.stats = answers.get(ref, {})
    per_classifier: list[BatchStats] = [answers[ref] for ref in replicas if ref in answers]
    batching = BatchStats()
    for replica in per_classifier:
        batching.merge(replica)
    frames = sum(c.frames for c in cameras)
    return {
        "wall_s": wall_s,
        "frames": frames,
        "fps": frames / wall_s if wall_s > 0 else 0.0,
        "cameras": [
            {"name": c.name, "actor": c.actor, "node": c.node, "restarts": c.restarts, "frames": c.frames,
             "state": source_states.get(c.name), "pipeline": c.stats}
            for c in cameras
        ],
        "classifiers": [replica.as_dict() for replica in per_classifier],
        "batching": batching.as_dict(),
    }  # fmt: skip


def summary(stats: dict[str, object]) -> str:
    """One line for the end of a run: frames, rate, how well the classifier batched."""
    if not stats:
        return "no statistics"
    batching = stats.get("batching") or {}
    assert isinstance(batching, dict)
    head = f"{stats['frames']} frames in {stats['wall_s']:.1f} s = {stats['fps']:.1f} fps over all cameras"
    if not stats.get("classifiers"):  # none started (--signals attention), or none answered
        return f"{head}; no classifier statistics"
    return (
        f"{head}; classifier: {batching.get('calls', 0)} calls, {batching.get('faces_per_call', 0):.1f} faces and "
        f"{batching.get('requests_per_call', 0):.2f} camera requests per call"
    )


def _answers(refs: list[Any]) -> dict[Any, Any]:
    """The answers that come within STATS_TIMEOUT_S, all calls together; the rest are left out."""
    ready, late = ray.wait(refs, num_returns=len(refs), timeout=STATS_TIMEOUT_S) if refs else ([], [])
    answers = {}
    for ref in ready:
        try:
            answers[ref] = ray.get(ref)
        except RayActorError as exc:
            logger.debug("a worker could not give its statistics: %s", first_line(exc))
    if late:
        logger.warning("%d worker(s) gave no statistics within %g s", len(late), STATS_TIMEOUT_S)
    return answers
