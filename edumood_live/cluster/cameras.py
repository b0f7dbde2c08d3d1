"""The driver's view of each camera worker, and the gap rows for a live camera's lost windows.

A worker that has not answered a poll for SILENT_S has no running process (its node left, Ray is
placing it again, or there is no room for it). Meanwhile the windows of a live camera pass as ``gap``
rows that the driver writes itself (node empty), on the run's window grid and after the last row it
has for that camera; a file gets none, its next worker replays it. No Ray import here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from edumood_live.cluster.config import ClusterWindow
from edumood_live.states import SourceState, WindowStatus

SILENT_S = 3.0  # a worker that answers no poll for this long has no process (a live one answers in < 1 s)

_MS = timedelta(milliseconds=1)


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

    def silent(self, now: float) -> bool:
        """True when the worker has not answered for SILENT_S (monotonic ``now``): it has no process."""
        return now - self.heard_at > SILENT_S

    def is_new(self, window_start: str) -> bool:
        """True when the driver has no row for this camera's window yet (rows arrive in order)."""
        return self.last_start is None or _parse_utc(window_start) > _parse_utc(self.last_start)


def gap_rows(
    camera: Camera,
    start_utc: datetime | None,
    window_s: float,
    labels: tuple[str, ...],
    until: datetime,
    last: bool = False,
) -> list[ClusterWindow]:
    """Gap rows for a live camera's windows that passed without a worker: from the end of its last row
    to the windows that ended by `until` (with `last`, the one open then too, cut at `until`), on the
    grid of windows of ``window_s`` from ``start_utc``. A file gets none: its next worker replays it."""
    if not camera.live or start_utc is None:
        return []
    window_ms = window_s * 1000.0
    done_ms = (_parse_utc(camera.last_end) - start_utc) / _MS if camera.last_end else 0.0
    until_ms = (until - start_utc) / _MS
    index = math.ceil(done_ms / window_ms - 1e-6)
    rows = []
    while (start_ms := index * window_ms) < until_ms:
        end_ms = start_ms + window_ms
        if end_ms > until_ms:
            if not last:
                break
            end_ms = until_ms
        rows.append(ClusterWindow(
            camera.name, _iso(start_utc, start_ms), _iso(start_utc, end_ms), WindowStatus.GAP, 0,
            0.0, 0.0, 0, dict.fromkeys(labels), None, None, None, 0, node="", actor=camera.actor,
        ))  # fmt: skip
        index += 1
    return rows


def _iso(start_utc: datetime, offset_ms: float) -> str:
    """A window bound as the camera workers' rows write it (ISO-8601 UTC, milliseconds, ``Z``)."""
    when = start_utc + timedelta(milliseconds=round(offset_ms, 3))
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
