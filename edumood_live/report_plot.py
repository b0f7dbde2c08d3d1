"""The lesson plot of the HTML report (`report.py`): class shares, engagement index and faces in view
over one time axis, gaps and withheld windows shaded, never interpolated. matplotlib is imported only
when a plot is drawn.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from edumood_live.sinks.style import CLASS_COLOURS, GAP_COLOUR, WITHHELD_COLOUR, class_colour, safe_source_name

if TYPE_CHECKING:
    from edumood_live.report import Window


ATTENTION_COLOUR = "#1F5FA8"  # the attention-share line: a blue apart from the class colours


def display_labels(windows: Sequence[Window]) -> dict[str, str]:
    """Column key (lower case) -> label as the model spells it (from dominant_label), else capitalised."""
    spelled = {w.dominant_label.lower(): w.dominant_label for w in windows if w.dominant_label}
    return {k: spelled.get(k, k.capitalize()) for k in windows[0].shares}


def _runs(windows: Sequence[Window], keep: Callable[[Window], bool]) -> list[list[Window]]:
    """Maximal runs of back-to-back windows for which keep(window) holds."""
    runs: list[list[Window]] = []
    for w in windows:
        if not keep(w):
            continue
        if runs and abs((w.start - runs[-1][-1].end).total_seconds()) < 1e-3:
            runs[-1].append(w)
        else:
            runs.append([w])
    return runs


def _share_of(key: str) -> Callable[[Window], float | None]:
    """The share of class `key` in a window."""
    return lambda w: w.shares[key]


def _steps(
    run: Sequence[Window], value: Callable[[Window], float | None], origin: datetime
) -> tuple[list[float], list[float]]:
    """Piecewise-constant x/y of a run: each window drawn flat over its own time span (x: seconds
    since `origin`)."""
    xs: list[float] = []
    ys: list[float] = []
    for w in run:
        y = value(w)
        assert y is not None, "runs hold only windows that have the value"
        xs += [(w.start - origin).total_seconds(), (w.end - origin).total_seconds()]
        ys += [y] * 2
    return xs, ys


# Tick spacings for the time axis (seconds): whole seconds, minutes, quarter hours.
_TICK_STEPS_S = (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200)


def _tick_step(span_s: float, most: int = 12) -> float:
    """The smallest tick spacing that puts at most `most` ticks on a span of `span_s` seconds."""
    return next((step for step in _TICK_STEPS_S if span_s / step <= most), _TICK_STEPS_S[-1])


def clock(seconds: float) -> str:
    """Elapsed time as m:ss, or h:mm:ss from an hour on (tenths only when not whole)."""
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    whole = int(round(seconds, 1))
    tenths = round(seconds - whole, 1)
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    text = f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
    return sign + text + (f"{tenths:.1f}"[1:] if tenths > 0 else "")


def plot_source(source: str, windows: Sequence[Window]) -> bytes:
    """PNG of one source's lesson, three panels over one time axis (time since the first window):
    class shares (stacked), engagement index, faces in view. Gaps and withheld windows are shaded
    and hatched in every panel and labelled; nothing is drawn across them. The page's heading names
    the source; the PNG carries it in its metadata."""
    from matplotlib import ticker
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    names = display_labels(windows)
    keys = list(names)
    origin = windows[0].start
    span = max((windows[-1].end - origin).total_seconds(), 1e-3)
    fig = Figure(figsize=(11, 7), dpi=100, layout="constrained")
    shares_ax, index_ax, faces_ax = fig.subplots(3, 1, sharex=True, height_ratios=[3, 1.7, 1.1])

    for run in _runs(windows, lambda w: w.has_shares):
        base = [0.0] * (2 * len(run))
        for i, key in enumerate(keys):
            xs, ys = _steps(run, _share_of(key), origin)
            upper = [b + y for b, y in zip(base, ys, strict=True)]
            shares_ax.fill_between(xs, base, upper, color=class_colour(key, i), linewidth=0)
            base = upper
    for run in _runs(windows, lambda w: w.engagement_index is not None):
        xs, ys = _steps(run, lambda w: w.engagement_index, origin)
        index_ax.plot(xs, ys, color="#333333", linewidth=1.4)
        for sign, colour in ((1, CLASS_COLOURS["engaged"]), (-1, CLASS_COLOURS["bored"])):
            index_ax.fill_between(
                xs, 0, ys, where=[sign * y > 0 for y in ys], color=colour, alpha=0.45, linewidth=0,
                interpolate=True,
            )  # fmt: skip
    # Attention share (0..1) on the engagement chart, on its own right-hand axis with the same scale.
    attention_runs = _runs(windows, lambda w: w.attention_share is not None)
    if attention_runs:
        attention_ax = index_ax.twinx()
        attention_ax.set_ylim(-1.1, 1.1)
        attention_ax.yaxis.set_major_locator(ticker.FixedLocator([0, 0.5, 1]))
        attention_ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
        attention_ax.set_ylabel("attention share\n(facing the front)", color=ATTENTION_COLOUR)
        attention_ax.tick_params(axis="y", colors=ATTENTION_COLOUR)
        attention_ax.spines[["top"]].set_visible(False)
        for run in attention_runs:
            xs, ys = _steps(run, lambda w: w.attention_share, origin)
            attention_ax.plot(xs, ys, color=ATTENTION_COLOUR, linewidth=1.4, linestyle="--")
    for run in _runs(windows, lambda w: w.frames > 0):
        xs, ys = _steps(run, lambda w: w.faces_mean, origin)
        faces_ax.plot(xs, ys, color="#222222", linewidth=1.6)  # a line only: grey fill would look like a gap

    # withheld: fewer faces than --min-group (class shares withheld; with attention alone, its share)
    rated: Callable[[Window], bool] = (lambda w: w.has_shares) if keys else (lambda w: w.attention_share is not None)
    shaded = (
        ("gap", lambda w: w.status == "gap", GAP_COLOUR, "///", "no frames (gap)"),
        ("withheld", lambda w: w.frames > 0 and not rated(w), WITHHELD_COLOUR, "..", "withheld"),
    )
    handles = [Patch(facecolor=class_colour(k, i), label=names[k]) for i, k in enumerate(keys)]
    for kind, keep, colour, hatch, text in shaded:
        runs = _runs(windows, keep)
        for run in runs:
            x0, x1 = (run[0].start - origin).total_seconds(), (run[-1].end - origin).total_seconds()
            for ax in (shares_ax, index_ax, faces_ax):
                ax.axvspan(
                    x0, x1, facecolor=colour, edgecolor="#888888", hatch=hatch, linewidth=0, zorder=0.8
                )
            if (x1 - x0) / span > 0.05:
                box = {"boxstyle": "round,pad=0.3", "facecolor": "white", "edgecolor": "none", "alpha": 0.85}
                shares_ax.text(
                    (x0 + x1) / 2, 0.5, text, ha="center", va="center", fontsize=10, color="#333333", bbox=box
                )
        if runs:
            label = "gap: no frames" if kind == "gap" else "withheld: fewer faces than --min-group"
            handles.append(Patch(facecolor=colour, edgecolor="#888888", hatch=hatch, label=label))

    if not keys:  # --signals attention: no expression classifier ran, so there are no class shares
        shares_ax.text(0.5, 0.9, "no class shares: no expression classifier ran (--signals attention)",
                       transform=shares_ax.transAxes, ha="center", va="center", fontsize=10, color="#555555",
                       bbox={"boxstyle": "round,pad=0.3", "facecolor": "white", "edgecolor": "none"})
    shares_ax.set_ylim(0, 1)
    shares_ax.set_ylabel("class shares\n(of face observations)")
    shares_ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    shares_ax.yaxis.set_major_locator(ticker.MultipleLocator(0.25))
    index_ax.set_ylim(-1.1, 1.1)
    # the ends say what they mean: +1 every observation Engaged, −1 every one Bored
    ends = {1: "all Engaged  +1", 0.5: "+0.5", 0: "0", -0.5: "−0.5", -1: "all Bored  −1"}
    index_ax.yaxis.set_major_locator(ticker.FixedLocator(list(ends)))
    index_ax.yaxis.set_major_formatter(lambda v, _: ends.get(round(v, 1), ""))
    index_ax.axhline(0, color="#666666", linewidth=0.8)
    index_ax.set_ylabel("engagement index\n(Engaged − Bored)")
    faces_ax.set_ylim(0, max([w.faces_mean for w in windows] + [1.0]) * 1.2)
    faces_ax.yaxis.set_major_locator(ticker.MaxNLocator(nbins=3, integer=True))
    faces_ax.set_ylabel("faces in view\n(mean per frame)")
    faces_ax.set_xlim(0, span)
    faces_ax.xaxis.set_major_locator(ticker.MultipleLocator(_tick_step(span)))
    faces_ax.xaxis.set_major_formatter(lambda v, _: clock(v))
    faces_ax.set_xlabel(f"time since the start ({origin:%Y-%m-%d %H:%M:%S} UTC)")
    for ax in (shares_ax, index_ax, faces_ax):
        ax.grid(axis="y", color="#DDDDDD", linewidth=0.6)
        ax.grid(axis="x", color="#EEEEEE", linewidth=0.6)
        ax.set_axisbelow(True)
        ax.spines[["top", "right"]].set_visible(False)

    shares_ax.legend(
        handles=handles, loc="lower left", bbox_to_anchor=(0, 1.01), ncol=len(handles), frameon=False,
        fontsize=9.5, handlelength=1.6, handleheight=1.1, columnspacing=1.4, borderaxespad=0,
    )  # fmt: skip
    buf = io.BytesIO()
    title = f"{safe_source_name(source)} from {origin:%Y-%m-%d %H:%M:%S} UTC"
    fig.savefig(buf, format="png", metadata={"Title": title, "Software": "EduMood Live"})
    return buf.getvalue()


# -- HTML ---------------------------------------------------------------------------------------

