"""Live terminal view: just another sink, drawn with rich.

`render(states)` is a pure function from the per-source `LiveState` to a rich renderable; the
`ConsoleSink` only stores the latest state per source, remembers the engagement index of recent closed
windows (the trend sparkline) and redraws at most `refresh_hz` times per second.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from types import TracebackType

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from edumood_live.sinks import LiveState
from edumood_live.sinks.style import class_colour, safe_source_name
from edumood_live.states import SourceState, WindowStatus
from edumood_live.types import WindowSummary

SPARK_CHARS = "▁▂▃▄▅▆▇█"
BAR_WIDTH = 24


def sparkline(values: Sequence[float | None], low: float = -1.0, high: float = 1.0) -> str:
    """One character per value scaled to [low, high]; a middle dot where there is no value."""
    chars = []
    for v in values:
        if v is None or not math.isfinite(v):
            chars.append("·")
            continue
        frac = (min(max(v, low), high) - low) / (high - low)
        chars.append(SPARK_CHARS[round(frac * (len(SPARK_CHARS) - 1))])
    return "".join(chars)


def _provider_name(provider: str) -> str:
    """``CUDAExecutionProvider`` -> ``CUDA``."""
    return provider.removesuffix("ExecutionProvider") or "?"


_STATE_STYLES = {SourceState.CONNECTED: "green", SourceState.ENDED: "dim", SourceState.FAILED: "bold red",
                 SourceState.GAP: "yellow", SourceState.WAITING: "yellow", SourceState.RESTARTING: "yellow",
                 SourceState.NO_CLASSIFIER: "yellow"}


def _state_text(state: LiveState) -> Text:
    match SourceState(state.source_state):
        case SourceState.RECONNECTING:
            return Text(f"reconnecting (attempt {state.attempt})", style="bold yellow")
        case SourceState.GAP:
            return Text("gap: no frames", style="yellow")
        case other:
            return Text(other.value, style=_STATE_STYLES.get(other, ""))


def _bar(share: float, width: int = BAR_WIDTH) -> tuple[str, str]:
    filled = round(min(max(share, 0.0), 1.0) * width)
    return "█" * filled, "░" * (width - filled)


def _no_shares_reason(state: LiveState) -> str:
    """Why a panel shows no class bars."""
    match SourceState(state.source_state):
        case SourceState.RECONNECTING | SourceState.FAILED:
            return "no frames: the source is down"
        case SourceState.ENDED | SourceState.STOPPED as final:
            return f"source {final.value}"
        case SourceState.WAITING | SourceState.RESTARTING | SourceState.NO_CLASSIFIER as waiting:
            return f"no frames: {waiting.value}"
    if state.faces == 0:
        return "no faces in view"
    if state.shares is not None and not state.shares:
        return "no expression classifier (--signals attention)"
    return "class shares withheld (fewer faces than --min-group)"


def render_source(state: LiveState) -> Panel:
    """The panel of one source."""
    header = Text()
    for name, value in (
        ("fps", f"{state.fps:.1f}"),
        ("faces", str(state.faces)),
        ("tracks", str(state.tracks)),
        ("dropped", str(state.dropped)),
    ):
        header.append(f"{name} ", style="dim").append(value, style="bold").append("   ")
    header.append("on ", style="dim").append(_provider_name(state.provider), style="cyan").append("   ")
    header.append_text(_state_text(state))

    body = Table.grid(padding=(0, 1))
    body.add_column(no_wrap=True)
    body.add_column(no_wrap=True)
    body.add_column(justify="right", no_wrap=True)
    if state.shares and all(v is not None for v in state.shares.values()):
        for i, (label, share) in enumerate(state.shares.items()):
            assert share is not None
            full, empty = _bar(share)
            bar = Text(full, style=class_colour(label, i)).append(empty, style="grey35")
            body.add_row(Text(label), bar, Text(f"{share:6.1%}"))
    else:
        body.add_row(Text(_no_shares_reason(state), style="dim italic"), Text(""), Text(""))

    index = "n/a" if state.engagement_index is None else f"{state.engagement_index:+.2f}"
    footer = Text("engagement ", style="dim").append(index, style="bold")
    if state.attention is not None:
        footer.append("   attention ", style="dim").append(f"{state.attention:.0%}", style="bold")
    if state.trend:
        footer.append("   trend ", style="dim").append(sparkline(state.trend), style="magenta")
        footer.append(
            f"   last {len(state.trend)} windows, {SPARK_CHARS[0]} −1 … {SPARK_CHARS[-1]} +1", style="dim"
        )
        if None in state.trend:
            footer.append(", · none", style="dim")
    title = Text(safe_source_name(state.source), style="bold")
    return Panel(Group(header, body, footer), title=title, title_align="left")


PANEL_LINES = 9  # lines one source's panel takes (borders, header, four bars, footer, spacing)


def render_table(states: Sequence[LiveState]) -> Table:
    """The compact view: one line per source (several sources on a small terminal)."""
    table = Table(box=None, padding=(0, 1), header_style="dim", pad_edge=False)
    table.add_column("source", no_wrap=True, max_width=22, overflow="ellipsis")
    table.add_column("state", no_wrap=True, max_width=14, overflow="ellipsis")
    for name in ("fps", "faces"):
        table.add_column(name, justify="right", no_wrap=True)
    labels = next((list(s.shares) for s in states if s.shares), [])
    for label in labels:
        table.add_column(label[:5], justify="right", no_wrap=True)
    table.add_column("eng.", justify="right", no_wrap=True)
    attention = any(s.attention is not None for s in states)
    if attention:  # in place of the trend, so a line still fits 80 columns (the panels show both)
        table.add_column("att.", justify="right", no_wrap=True)
    else:
        table.add_column("trend", no_wrap=True, max_width=12)
    for state in states:
        if state.shares and all(v is not None for v in state.shares.values()):
            shares = [f"{state.shares[label]:.0%}" for label in labels]
        else:
            shares = ["–"] * len(labels)
        index = "n/a" if state.engagement_index is None else f"{state.engagement_index:+.2f}"
        last = (Text("–" if state.attention is None else f"{state.attention:.0%}") if attention
                else Text(sparkline(state.trend[-12:]), style="magenta"))  # fmt: skip
        table.add_row(Text(safe_source_name(state.source), style="bold"), _state_text(state), f"{state.fps:.1f}",
                      str(state.faces), *shares, index, last)
    return table


def render(states: LiveState | Sequence[LiveState], compact: bool = False) -> RenderableType:
    """The whole live view (pure; called on every refresh): one panel per source, or with ``compact``
    one line per source."""
    if isinstance(states, LiveState):
        states = [states]
    if not states:
        return Text("waiting for the first frame…", style="dim")
    if compact:
        return render_table(states)
    return Group(*(render_source(s) for s in states))


def summary_line(summary: WindowSummary) -> Text:
    """One line for a closed window, printed above the live view. The most telling fields come first
    and the line is cut with an ellipsis rather than wrapped, so the log stays one line per window."""
    start, end = summary.window_start_utc[11:19], summary.window_end_utc[11:19]
    line = Text(f"{start}–{end} ", style="dim", no_wrap=True, overflow="ellipsis")
    line.append(safe_source_name(summary.source), style="bold").append(" ")
    if summary.status == WindowStatus.GAP:
        return line.append("gap: no frames", style="yellow")
    line.append(summary.status.value, style="green" if summary.status == WindowStatus.OK else "yellow")
    if summary.engagement_index is not None:
        line.append(f"  engagement {summary.engagement_index:+.2f}", style="bold")
    if summary.dominant_label is not None:
        line.append(f"  mostly {summary.dominant_label}")
    elif summary.frames and summary.shares:
        line.append("  class shares withheld", style="dim")
    if summary.attention_share is not None:
        line.append(f"  attention {summary.attention_share:.0%}", style="bold")
    line.append(
        f"  faces {summary.faces_mean:.1f}  tracks {summary.tracks}  fps {summary.fps:.1f}", style="dim"
    )
    return line


class ConsoleSink:
    """rich Live view; `update` every frame (cheap), redraws at most `refresh_hz` per second."""

    def __init__(
        self,
        console: Console | None = None,
        refresh_hz: float = 4.0,
        trend_windows: int = 30,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console or Console(stderr=True)
        self._min_interval_s = 1.0 / refresh_hz if refresh_hz > 0 else 0.0
        self._clock = clock
        self._states: dict[str, LiveState] = {}
        self._trends: dict[str, deque[float | None]] = {}
        self._trend_windows = trend_windows
        self._live: Live | None = None
        self._last_refresh = -math.inf
        self.redraws = 0
        self.stopping = False  # set from a signal handler: the view says so on its next redraw

    def show_stopping(self) -> None:
        """Say "stopping" in the view (safe in a signal handler: it only sets a flag)."""
        self.stopping = True

    def current(self) -> list[LiveState]:
        """The state per source as it would be drawn now (trend filled in)."""
        return [replace(s, trend=tuple(self._trends.get(s.source, ()))) for s in self._states.values()]

    def update(self, state: LiveState) -> None:
        """Store the latest state of `state.source`; redraw if the last redraw is old enough."""
        self._states[state.source] = state
        now = self._clock()
        if now - self._last_refresh >= self._min_interval_s:
            self._refresh()
            self._last_refresh = now

    def write(self, summary: WindowSummary) -> None:
        """Record a closed window in the trend and print its one-line summary above the view."""
        trend = self._trends.setdefault(summary.source, deque(maxlen=self._trend_windows))
        trend.append(summary.engagement_index)
        line = summary_line(summary)
        if self.console.is_terminal:
            # print's own no_wrap/overflow: rich re-joins printed Text and drops the Text's own settings
            self._ensure_live().console.print(line, no_wrap=True, overflow="ellipsis")
        else:  # a log file or a pipe: the whole line, never cut at an assumed width
            self._ensure_live().console.print(line, soft_wrap=True)
        self._refresh()

    def close(self) -> None:
        """Draw the final state and stop the live display (idempotent)."""
        if self._live is not None:
            self._refresh()
            self._live.stop()
            self._live = None

    def _ensure_live(self) -> Live:
        if self._live is None:
            self._live = Live(console=self.console, auto_refresh=False, transient=False)
            self._live.start()
        return self._live

    def _refresh(self) -> None:
        states = self.current()
        # panels while they take at most half the screen, so the window lines above stay in view
        compact = len(states) > 1 and len(states) * PANEL_LINES > self.console.height // 2
        view = render(states, compact=compact)
        if self.stopping:
            view = Group(view, Text("stopping: writing the last window (interrupt again to quit at once)",
                                    style="bold yellow"))
        self._ensure_live().update(view, refresh=True)
        self.redraws += 1

    def __enter__(self) -> ConsoleSink:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
