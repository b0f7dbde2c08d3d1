"""The typed states that rows and views carry: where a source stands, what a window row is.

Both are ``(str, Enum)``: members compare equal to their values, so rows read back from files and
configs written as text still match. Standard library only.
"""

from __future__ import annotations

from enum import Enum


class SourceState(str, Enum):
    """Where a source stands; compares equal to its string value."""

    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    ENDED = "ended"  # reached its end (end of file or folder)
    FAILED = "failed"  # gave up (retries used up, or an error)
    STOPPED = "stopped"  # a final state only: the run stopped before the source ended
    GAP = "gap"  # cluster view only: the camera's last window had no frames
    WAITING = "waiting for resources"  # cluster view only: the camera's worker lost its node, none has room
    RESTARTING = "restarting on another node"  # cluster view only: Ray is placing the camera's worker again
    NO_CLASSIFIER = "waiting for the classifier"  # cluster view only: the worker's classifier does not answer

    def __str__(self) -> str:
        return self.value


class WindowStatus(str, Enum):
    """Values of `types.WindowSummary.status`.

    Each value says one thing; when two apply, the first in this list wins (gap, then suppressed).
    """

    GAP = "gap"  # no frame arrived in the window (camera down, reconnecting): frames = 0, no shares
    SUPPRESSED = "suppressed"  # fewer faces than --min-group: per-class stats withheld (any window)
    ENDED = "ended"  # the last window of a source that reached its end (end of file or folder), cut short
    PARTIAL = "partial"  # the last window of a run stopped before the source ended (Ctrl-C, SIGTERM, --duration)
    OK = "ok"  # a full window with frames and shares

    def __str__(self) -> str:
        return self.value
