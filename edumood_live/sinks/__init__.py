"""Where window rows and the live state go: the sink roles and the live view's state.

Every sink takes closed windows (`WindowSink.write`) and is closed at the end of the run; some also
show each source's current state (`LiveSink.update` with a `LiveState`) or take anonymous per-track
rows (`TrackSink.write_tracks`). The pipeline fans rows out by these roles only.

The sinks themselves: `sinks.files` (CSV, JSON Lines, checking paths before a run), `sinks.console`
(the rich live view), `sinks.annotate` (the annotated video), `sinks.style` (colours and names shared
with the offline report). Imports go one way: pipeline -> sinks -> types/config/naming.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from edumood_live.errors import OutputError
from edumood_live.states import SourceState

if TYPE_CHECKING:
    from edumood_live.types import WindowSummary

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveState:
    """What the live view shows for one source, refreshed by the pipeline every frame.

    shares: current class shares over the faces in view (None: no faces, or withheld by min-group).
    source_state: where the source stands (`SourceState`, incl. STOPPED and the cluster's GAP).
    trend: engagement index of the most recent closed windows, oldest first (None = gap/withheld);
        `ConsoleSink` fills it in from the rows it is given.
    attention: fraction of the faces in view facing the front (None: attention off, no faces, withheld).
    """

    source: str
    fps: float = 0.0
    faces: int = 0
    tracks: int = 0
    shares: Mapping[str, float | None] | None = None
    engagement_index: float | None = None
    dropped: int = 0
    provider: str = ""
    source_state: SourceState | str = SourceState.CONNECTED
    attempt: int = 0
    trend: tuple[float | None, ...] = ()
    attention: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "source_state", SourceState(self.source_state))

    @classmethod
    def of_window(
        cls, row: WindowSummary, provider: str, source_state: SourceState | str, dropped: int = 0
    ) -> LiveState:
        """The view of a source as its window ``row`` summed it up (cluster mode; a source's last words)."""
        return cls(
            source=row.source, fps=row.fps, faces=round(row.faces_mean), tracks=row.tracks,
            shares=None if row.dominant_label is None else row.shares, engagement_index=row.engagement_index,
            dropped=dropped, provider=provider, source_state=source_state, attention=row.attention_share,
        )  # fmt: skip


class RowLike(Protocol):
    """Anything with a flat ``to_row()`` dict, e.g. ``aggregator.TrackRow``."""

    def to_row(self) -> dict[str, object]: ...


@runtime_checkable
class WindowSink(Protocol):
    """Receives every closed window (``write``) and is closed at the end of the run."""

    def write(self, summary: WindowSummary) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class LiveSink(Protocol):
    """A sink that also shows the current state of a source, e.g. `sinks.console.ConsoleSink`."""

    def update(self, state: LiveState) -> None: ...


@runtime_checkable
class TrackSink(Protocol):
    """A sink that also takes anonymous per-track rows (file sinks opened with ``per_track``)."""

    def write_tracks(self, rows: Sequence[RowLike]) -> None: ...


def close_all(sinks: Sequence[object]) -> None:
    """Close every sink even when some fail; raise the first OutputError afterwards."""
    first: BaseException | None = None
    for sink in sinks:
        close = getattr(sink, "close", None)
        if close is None:
            continue
        try:
            close()
        except OutputError as exc:
            first = first or exc
        except Exception:  # a broken third-party sink must not keep the files from being closed
            logger.exception("closing %r failed", sink)
    if first is not None:
        raise first


__all__ = ["LiveSink", "LiveState", "RowLike", "TrackSink", "WindowSink", "close_all"]
