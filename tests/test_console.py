"""The rich live view: a pure render of each source's `LiveState`, throttled redraws, one line per window."""

from __future__ import annotations

import os

import pytest
from rich.console import Console
from test_sinks import LABELS, summary

from edumood_live.sinks import LiveState
from edumood_live.sinks.console import ConsoleSink, render, sparkline
from edumood_live.states import SourceState, WindowStatus


def render_text(renderable: object, width: int = 100) -> str:
    console = Console(record=True, width=width, file=open(os.devnull, "w"), color_system=None)  # noqa: SIM115
    console.print(renderable)
    return console.export_text()


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([-1.0, 0.0, 1.0], "▁▅█"),
        ([None, 2.0, float("nan")], "·█·"),
        ([], ""),
    ],
)
def test_sparkline(values: list, expected: str) -> None:
    assert sparkline(values) == expected


def test_render_shows_one_source() -> None:
    state = LiveState(
        source="room-101",
        fps=29.5,
        faces=31,
        tracks=40,
        dropped=3,
        provider="CUDAExecutionProvider",
        shares={"Angry": 0.05, "Neutral": 0.25, "Engaged": 0.5, "Bored": 0.2},
        engagement_index=0.3,
        trend=(-1.0, 0.0, 1.0, None),
    )
    text = render_text(render(state))
    for expected in (
        "room-101",
        "fps 29.5",
        "faces 31",
        "tracks 40",
        "dropped 3",
        "CUDA",
        "connected",
        "Engaged",
        "50.0%",
        "engagement +0.30",
        "trend ▁▅█·",
    ):
        assert expected in text, expected
    assert "█" * 12 in text  # the Engaged bar is half of 24 cells


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (LiveState("cam", source_state="reconnecting", attempt=3), "reconnecting (attempt 3)"),
        (LiveState("cam", faces=0), "no faces in view"),
        (LiveState("cam", faces=1, shares=dict.fromkeys(LABELS)), "withheld"),
        (LiveState("cam", source_state="reconnecting", attempt=1), "no frames: the source is down"),
        (LiveState("cam", source_state="stopped"), "source stopped"),
        (LiveState("cam", trend=(0.5, None)), "last 2 windows, ▁ −1 … █ +1, · none"),
        (LiveState("cam [bold]x[/]"), "cam [bold]x[/]"),  # no markup injection from source names
        (LiveState("rtsp://me:secret@10.0.0.5/live"), "rtsp://me:***@10.0.0.5/live"),
    ],
)
def test_render_states(state: LiveState, expected: str) -> None:
    assert expected in render_text(render(state))


def test_render_several_sources_and_none() -> None:
    text = render_text(render([LiveState("a"), LiveState("b")]))
    assert "a" in text and "b" in text
    assert "waiting" in render_text(render([]))


def test_console_sink_throttles_and_keeps_the_trend() -> None:
    now = [0.0]
    console = Console(record=True, width=100, file=open(os.devnull, "w"), color_system=None)  # noqa: SIM115
    with ConsoleSink(console=console, refresh_hz=4, clock=lambda: now[0]) as sink:
        for i in range(10):  # 10 frames over 0.45 s at 4 Hz: redrawn at 0 s and 0.25 s only
            now[0] = i * 0.05
            sink.update(LiveState("room", faces=i))
        assert sink.redraws == 2
        sink.write(summary(source="room", engagement_index=0.5))
        sink.write(summary(WindowStatus.GAP, source="room"))
        assert sink.current()[0].trend == (0.5, None)
        assert sink.current()[0].faces == 9
    text = console.export_text()
    assert "engagement +0.50" in text and "gap: no frames" in text and "faces 9" in text


def test_window_lines_stay_one_line_each_in_a_terminal() -> None:
    console = Console(record=True, width=80, file=open(os.devnull, "w"), color_system=None,  # noqa: SIM115
                      force_terminal=True)
    with ConsoleSink(console=console) as sink:
        sink.write(summary(source="rtsp://127.0.0.1:8554/a-long-camera-name"))
    first = console.export_text().splitlines()[0]
    assert first.endswith("…") and len(first) == 80
    assert "engagement +0.30" in first  # the telling fields come first, the cut takes the rest


def test_window_lines_are_whole_when_not_a_terminal() -> None:
    """Redirected to a file or a pipe (no terminal width), a window line is never cut."""
    console = Console(record=True, width=80, file=open(os.devnull, "w"), color_system=None)  # noqa: SIM115
    assert not console.is_terminal
    with ConsoleSink(console=console) as sink:
        sink.write(summary(source="rtsp://127.0.0.1:8554/a-long-camera-name"))
    first = console.export_text().splitlines()[0]
    assert len(first) > 80 and "…" not in first and first.rstrip().endswith(f"fps {summary().fps:.1f}")


def test_several_sources_fit_an_80x24_terminal_with_room_for_window_lines() -> None:
    console = Console(record=True, width=80, height=24, file=open(os.devnull, "w"),  # noqa: SIM115
                      color_system=None, force_terminal=True)
    shares = {"Angry": 0.1, "Neutral": 0.4, "Engaged": 0.3, "Bored": 0.2}
    with ConsoleSink(console=console) as sink:
        for i in range(4):
            sink.update(LiveState(f"rtsp://10.0.0.{i}/classroom-camera-{i}", fps=29.9, faces=30, shares=shares,
                                  engagement_index=0.1, source_state="connected", attention=0.75))
    drawn = console.export_text()  # every redraw; the first, with one source, is still a panel
    assert "eng." in drawn and "╭" not in drawn.split("eng.")[-1]  # then the sink switched to the table
    view = render_text(render(sink.current(), compact=True), width=80).rstrip("\n").splitlines()
    assert len(view) == 5 and all(len(line) <= 80 for line in view)  # a header and a line per source
    assert "40%" in view[1] and "+0.10" in view[1] and "75%" in view[1]
    one = render_text(render(sink.current()[:1]), width=80).splitlines()
    assert len(one) <= 12  # a single source keeps its panel


def test_the_view_says_it_is_stopping_and_ends_cleanly() -> None:
    console = Console(record=True, width=80, height=24, file=open(os.devnull, "w"),  # noqa: SIM115
                      color_system=None, force_terminal=True)
    with ConsoleSink(console=console) as sink:
        sink.update(LiveState("room", faces=3))
        sink.show_stopping()  # what the signal handler calls
        sink.update(LiveState("room", faces=3, source_state="stopped"))
    last_frame = console.export_text().split("room")[-1]
    assert "stopping: writing the last window" in last_frame


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (SourceState.GAP, "gap: no frames"),
        (SourceState.WAITING, "no frames: waiting for resources"),
        (SourceState.ENDED, "source ended"),
    ],
)
def test_typed_states_are_what_the_view_matches_on(state: SourceState, expected: str) -> None:
    assert expected in render_text(render(LiveState("cam", source_state=state)))


def test_a_state_that_is_not_a_member_is_refused() -> None:
    with pytest.raises(ValueError, match="gap: no frames"):
        LiveState("cam", source_state="gap: no frames")


def test_attention_in_the_panel_the_compact_line_and_the_window_line() -> None:
    state = LiveState(source="room", faces=4, shares={"Engaged": 0.5, "Bored": 0.5}, attention=0.75)
    assert "attention 75%" in render_text(render(state))
    assert "att." in render_text(render([state], compact=True)) and "75%" in render_text(render([state], compact=True))
    only = LiveState(source="room", faces=4, shares={}, attention=0.25)
    assert "no expression classifier (--signals attention)" in render_text(render(only))
    from edumood_live.sinks.console import summary_line

    assert "attention 40%" in summary_line(summary(attention_share=0.4)).plain
