"""Class-level aggregates per time window: the only thing EduMood Live writes by default.

Windows are ``[k * window_s, (k + 1) * window_s)`` of source time, counted from the first timestamp the
aggregator sees (by `Aggregator.add` or `Aggregator.advance`); ``window_start``/``window_end`` are
``start_utc`` plus that offset, in ISO-8601 UTC. Nothing is ever interpolated: a window without frames
becomes a GAP row, and a window with fewer than ``min_group`` faces on average keeps its counts but has
its per-class statistics withheld (SUPPRESSED).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from edumood_live.attention import FACING_THRESHOLD
from edumood_live.errors import ConfigError
from edumood_live.types import TrackedFaces, WindowStatus, WindowSummary
from edumood_live.validation import require_number


@dataclass(frozen=True)
class AggregatorConfig:
    """Aggregator settings.

    labels: class names in model output order (from the model file); empty when no expression classifier
        runs (``--signals attention``): rows then have no class shares.
    window_s: window length in seconds of source time.
    min_group: windows with fewer faces per frame on average get per-class stats withheld (0 = never).
    low_confidence: an observation whose top smoothed probability is below this counts as low-confidence.
    source: source name written in every row.
    start_utc: wall-clock time (timezone-aware) of the first timestamp; None = now.
    per_track: also collect anonymous per-track rows (`Aggregator.track_rows`).
    attention: report `WindowSummary.attention_share` (False: it stays None).
    """

    labels: tuple[str, ...]
    window_s: float = 10.0
    min_group: int = 2
    low_confidence: float = 0.5
    source: str = "source"
    start_utc: datetime | None = None
    per_track: bool = False
    attention: bool = True

    def __post_init__(self) -> None:
        labels = tuple(self.labels) if not isinstance(self.labels, str) else (self.labels,)
        if not all(isinstance(x, str) and x.strip() for x in labels):
            raise ConfigError(f"labels={self.labels!r}: must be a list of non-empty names")
        if not labels and not self.attention:
            raise ConfigError("labels=() and attention=False: a run needs class labels, attention or both")
        lowered = [x.lower() for x in labels]
        if len(set(lowered)) != len(lowered):
            raise ConfigError(f"labels={labels!r}: names must be unique (case-insensitively)")
        object.__setattr__(self, "labels", labels)
        require_number("window_s", self.window_s, 0, low_open=True)
        require_number("min_group", self.min_group, 0, integer=True, extra=" (0 = no suppression)")
        require_number("low_confidence", self.low_confidence, 0, 1)
        if not self.source:
            raise ConfigError("source='': must name the source")
        start = self.start_utc if self.start_utc is not None else datetime.now(UTC)
        if start.tzinfo is None or start.utcoffset() is None:
            raise ConfigError(f"start_utc={start!r}: must be timezone-aware, e.g. datetime.now(timezone.utc)")
        object.__setattr__(self, "start_utc", start.astimezone(UTC))


@dataclass(frozen=True)
class TrackRow:
    """Per-track statistics of one window (``--per-track``): anonymous id, no identity, no pixels.

    ``shares`` values are None when the window's stats were withheld (suppressed by min-group).
    """

    source: str
    window_start_utc: str
    window_end_utc: str
    track: str  # "t17"
    frames_seen: int
    shares: dict[str, float | None]
    dominant_label: str | None
    attention_share: float | None = None

    def to_row(self) -> dict[str, object]:
        """Flat dict in the documented column order."""
        row: dict[str, object] = {
            "window_start": self.window_start_utc,
            "window_end": self.window_end_utc,
            "source": self.source,
            "track": self.track,
            "frames_seen": self.frames_seen,
        }
        for label, share in self.shares.items():
            row[f"share_{label.lower()}"] = None if share is None else round(share, 4)
        row["dominant_label"] = self.dominant_label
        row["attention_share"] = None if self.attention_share is None else round(self.attention_share, 4)
        return row


def attention_share(facing: int, known: int) -> float | None:
    """Fraction of face observations that faced the front, among those whose facing was known."""
    return facing / known if known else None


def engagement_index(shares: dict[str, float | None]) -> float | None:
    """``share_Engaged - share_Bored``, in [-1, 1] (labels matched case-insensitively).

    +1: every face observation was Engaged; -1: every one was Bored; Angry and Neutral observations
    count in the denominator but pull towards 0. None when there are no shares or the labels lack
    Engaged or Bored.
    """
    by_name = {k.lower(): v for k, v in shares.items()}
    engaged, bored = by_name.get("engaged"), by_name.get("bored")
    if engaged is None or bored is None:
        return None
    return float(engaged - bored)


def class_shares(counts: np.ndarray, total: int, labels: tuple[str, ...]) -> dict[str, float | None]:
    """Each label's fraction of `total` face observations, from per-label `counts`: the one place shares
    are computed (window rows, per-track rows and the live view)."""
    fractions = np.asarray(counts, np.int64) / total
    return {label: float(f) for label, f in zip(labels, fractions, strict=True)}


def live_shares(faces: TrackedFaces, labels: tuple[str, ...], min_group: int) -> dict[str, float | None] | None:
    """Class shares over the faces of one frame, for the live view; None without faces or below
    `min_group` (the view withholds them as the rows do)."""
    n = len(faces)
    if not n or n < max(min_group, 1):
        return None
    return class_shares(np.bincount(faces.probs.argmax(axis=1), minlength=len(labels)), n, labels)


def live_attention(faces: TrackedFaces, min_group: int) -> float | None:
    """Attention share over the faces of one frame, for the live view; None as `live_shares`, or when no
    face's facing is known."""
    n = len(faces)
    if not n or n < max(min_group, 1):
        return None
    return attention_share(int((faces.facing >= FACING_THRESHOLD).sum()), int(np.isfinite(faces.facing).sum()))


@dataclass
class _Window:
    """Counts accumulated for the open window."""

    index: int
    num_classes: int
    frames: int = 0
    observations: int = 0
    low_confidence: int = 0
    facing_known: int = 0  # observations with a known facing score
    facing: int = 0  # ... of which facing the front (smoothed score >= 0.5)
    last_ms: float = -math.inf
    counts: np.ndarray = field(init=False)
    per_track: dict[int, list] = field(default_factory=dict)  # id -> [frames_seen, counts (K,), known, facing]

    def __post_init__(self) -> None:
        self.counts = np.zeros(self.num_classes, np.int64)


class Aggregator:
    """Turns tracked faces per frame into one `WindowSummary` per window of source time."""

    def __init__(self, config: AggregatorConfig) -> None:
        self.config = config
        self._window_ms = config.window_s * 1000.0
        self._t0: float | None = None
        self._win: _Window | None = None
        self._last_seen_ms = -math.inf
        self._last_frame_ms: float | None = None
        self._frame_interval_ms = 0.0  # latest gap between two frames: the time one frame covers
        self._finished = False
        self._dropped_total = 0
        self._dropped_base = 0
        self._pending_tracks: list[TrackRow] = []

    def add(self, faces: TrackedFaces, timestamp_ms: float, dropped_frames_total: int) -> list[WindowSummary]:
        """Count one frame's faces; returns the windows this frame closed (usually none).

        `dropped_frames_total` is the source's cumulative dropped-frame count.
        """
        k = len(self.config.labels)
        if len(faces) and faces.probs.shape[1] != k:
            raise ValueError(f"faces.probs has {faces.probs.shape[1]} classes but labels has {k}")
        closed = self._roll(timestamp_ms)
        win = self._win
        assert win is not None
        if self._last_frame_ms is not None and timestamp_ms > self._last_frame_ms:
            self._frame_interval_ms = timestamp_ms - self._last_frame_ms
        self._last_frame_ms = timestamp_ms
        win.frames += 1
        win.last_ms = max(win.last_ms, timestamp_ms)
        self._dropped_total = max(self._dropped_total, int(dropped_frames_total))
        if len(faces):
            probs = np.asarray(faces.probs, np.float64)
            top = probs.argmax(axis=1) if k else np.zeros(len(faces), np.int64)
            win.observations += len(faces)
            if k:
                win.counts += np.bincount(top, minlength=k)
            if k:
                win.low_confidence += int((probs.max(axis=1) < self.config.low_confidence).sum())
            known = np.isfinite(faces.facing)
            front = faces.facing >= FACING_THRESHOLD  # False for NaN
            win.facing_known += int(known.sum())
            win.facing += int(front.sum())
            for i, tid in enumerate(faces.track_ids.tolist()):
                seen = win.per_track.setdefault(int(tid), [0, np.zeros(k, np.int64), 0, 0])
                seen[0] += 1
                if k:
                    seen[1][top[i]] += 1
                seen[2] += int(known[i])
                seen[3] += int(front[i])
        return closed

    def advance(self, now_ms: float) -> list[WindowSummary]:
        """Close every window that ended at or before `now_ms` (same clock as the frame timestamps).

        Call it while no frames arrive (e.g. a live source reconnecting): windows without frames come
        out as GAP rows.
        """
        return self._roll(now_ms)

    def finish(self, ended: bool = False) -> list[WindowSummary]:
        """Close the open window at the end of a run. When it covers less than window_s it is ENDED if
        the source reached its end (``ended``), else PARTIAL (the run was stopped).

        The run is over afterwards: `add` and `advance` refuse, `finish` returns [].
        """
        win, t0 = self._win, self._t0
        self._finished = True
        if win is None or t0 is None:
            return []
        start_ms = t0 + win.index * self._window_ms
        if win.frames:
            covered = max(win.last_ms - start_ms + self._frame_interval_ms, self._last_seen_ms - start_ms)
        else:
            covered = self._last_seen_ms - start_ms
        covered = min(max(covered, 0.0), self._window_ms)
        self._win = None
        if covered == 0 and not win.frames:
            return []
        return [self._close(win, covered, WindowStatus.ENDED if ended else WindowStatus.PARTIAL)]

    def track_rows(self) -> list[TrackRow]:
        """Per-track rows of the windows closed since the last call (empty unless config.per_track)."""
        rows, self._pending_tracks = self._pending_tracks, []
        return rows

    # -- internals -------------------------------------------------------------------------------

    def _roll(self, timestamp_ms: float) -> list[WindowSummary]:
        """Anchor time on first use, then close windows that end at or before `timestamp_ms`."""
        if self._finished:
            raise RuntimeError("Aggregator.finish() was called: this run is over")
        if self._t0 is None:
            self._t0 = timestamp_ms
            self._win = _Window(0, len(self.config.labels))
        self._last_seen_ms = max(self._last_seen_ms, timestamp_ms)
        assert self._win is not None
        index = math.floor((timestamp_ms - self._t0) / self._window_ms)
        closed: list[WindowSummary] = []
        while self._win.index < index:
            closed.append(self._close(self._win, self._window_ms))
            self._win = _Window(self._win.index + 1, len(self.config.labels))
        return closed

    def _close(self, win: _Window, covered_ms: float, short: WindowStatus = WindowStatus.PARTIAL) -> WindowSummary:
        cfg = self.config
        assert self._t0 is not None
        offset_ms = win.index * self._window_ms
        start, end = _iso(cfg.start_utc, offset_ms), _iso(cfg.start_utc, offset_ms + covered_ms)
        none_shares: dict[str, float | None] = dict.fromkeys(cfg.labels)
        dropped = self._dropped_total - self._dropped_base
        self._dropped_base = self._dropped_total
        if win.frames == 0:
            return WindowSummary(
                source=cfg.source,
                window_start_utc=start,
                window_end_utc=end,
                status=WindowStatus.GAP,
                frames=0,
                fps=0.0,
                faces_mean=0.0,
                tracks=0,
                shares=none_shares,  # None values: nothing to share
                engagement_index=None,
                dominant_label=None,
                low_confidence_share=None,
                dropped_frames=dropped,
            )
        faces_mean = win.observations / win.frames
        suppressed = faces_mean < cfg.min_group
        if suppressed:  # the reason the shares are empty comes first, however long the window
            status = WindowStatus.SUPPRESSED
        elif covered_ms < self._window_ms - 1.0:  # 1 ms tolerance for float frame periods
            status = short
        else:
            status = WindowStatus.OK
        attention: float | None = None
        if suppressed or win.observations == 0:
            shares, index, dominant, low = none_shares, None, None, None
        else:
            shares = class_shares(win.counts, win.observations, cfg.labels)
            index = engagement_index(shares)
            dominant = cfg.labels[int(win.counts.argmax())] if cfg.labels else None
            low = win.low_confidence / win.observations if cfg.labels else None
            if cfg.attention:
                attention = attention_share(win.facing, win.facing_known)
        if cfg.per_track:
            self._pending_tracks.extend(self._track_rows(win, start, end, withheld=suppressed))
        return WindowSummary(
            source=cfg.source,
            window_start_utc=start,
            window_end_utc=end,
            status=status,
            frames=win.frames,
            fps=win.frames / (covered_ms / 1000.0) if covered_ms > 0 else 0.0,
            faces_mean=faces_mean,
            tracks=len(win.per_track),
            shares=shares,  # None values when withheld
            engagement_index=index,
            dominant_label=dominant,
            low_confidence_share=low,
            dropped_frames=dropped,
            attention_share=attention,
        )

    def _track_rows(self, win: _Window, start: str, end: str, withheld: bool) -> list[TrackRow]:
        labels = self.config.labels
        rows = []
        for tid in sorted(win.per_track):
            seen, counts, known, front = win.per_track[tid]
            attention = None
            if withheld:
                shares: dict[str, float | None] = dict.fromkeys(labels)
                dominant = None
            else:
                shares = class_shares(counts, seen, labels)
                dominant = labels[int(counts.argmax())] if labels else None
                attention = attention_share(front, known) if self.config.attention else None
            rows.append(TrackRow(self.config.source, start, end, f"t{tid}", seen, shares, dominant, attention))
        return rows


def _iso(start_utc: datetime | None, offset_ms: float) -> str:
    """ISO-8601 UTC with milliseconds and a ``Z`` suffix."""
    assert start_utc is not None
    when = start_utc + timedelta(milliseconds=round(offset_ms, 3))
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
