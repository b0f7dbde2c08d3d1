"""CSV/JSONL sinks (crash-safe rows, header checks, clear errors) and the rich console view."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from edumood_live.aggregator import TrackRow
from edumood_live.config import tracks_path
from edumood_live.errors import OutputError
from edumood_live.sinks import LiveState
from edumood_live.sinks.console import ConsoleSink, render, sparkline
from edumood_live.sinks.files import CsvSink, JsonlSink, summary_columns, track_columns
from edumood_live.types import WindowStatus, WindowSummary

LABELS = ("Angry", "Neutral", "Engaged", "Bored")


def summary(status: str = WindowStatus.OK, start: str = "2025-03-04T09:00:00.000Z", **kw) -> WindowSummary:
    shares = {"Angry": 0.1, "Neutral": 0.2, "Engaged": 0.5, "Bored": 0.2}
    if status == WindowStatus.GAP:
        shares = dict.fromkeys(LABELS)  # type: ignore[assignment]
    fields = {
        "source": "room, 101",  # a comma: CSV quoting must hold
        "window_start_utc": start,
        "window_end_utc": "2025-03-04T09:00:10.000Z",
        "status": status,
        "frames": 0 if status == WindowStatus.GAP else 100,
        "fps": 0.0 if status == WindowStatus.GAP else 10.0,
        "faces_mean": 0.0 if status == WindowStatus.GAP else 12.5,
        "tracks": 0 if status == WindowStatus.GAP else 14,
        "shares": shares,
        "engagement_index": None if status == WindowStatus.GAP else 0.3,
        "dominant_label": None if status == WindowStatus.GAP else "Engaged",
        "low_confidence_share": None if status == WindowStatus.GAP else 0.05,
        "dropped_frames": 2,
    }
    return WindowSummary(**{**fields, **kw})


def track_row(track: str = "t17") -> TrackRow:
    shares = {"Angry": 0.0, "Neutral": 0.0, "Engaged": 1.0, "Bored": 0.0}
    start, end = "2025-03-04T09:00:00.000Z", "2025-03-04T09:00:10.000Z"
    return TrackRow("room", start, end, track, 10, shares, "Engaged")


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_columns_follow_the_row_types() -> None:
    assert summary_columns(LABELS) == list(summary().to_row())
    assert track_columns(LABELS) == list(track_row().to_row())
    assert tracks_path(Path("out/lesson.csv")) == Path("out/lesson.tracks.csv")


def test_csv_rows_are_on_disk_before_close(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    sink = CsvSink(path, LABELS)
    assert path.read_text().splitlines() == [",".join(summary_columns(LABELS))]  # header at open
    sink.write(summary())
    sink.write(summary(WindowStatus.GAP, start="2025-03-04T09:00:10.000Z"))
    rows = read_csv(path)  # read while still open
    assert [r["status"] for r in rows] == ["ok", "gap"]
    assert rows[0]["source"] == "room, 101" and rows[0]["share_engaged"] == "0.5"
    assert rows[1]["share_engaged"] == "" and rows[1]["engagement_index"] == ""
    sink.close()
    sink.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        sink.write(summary())


def test_rows_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    script = f"""
import os, signal
from edumood_live.sinks.files import CsvSink
from edumood_live.types import WindowSummary
row = WindowSummary("cam", "t0", "t1", "ok", 10, 1.0, 3.0, 3, {{"Engaged": 1.0}}, 1.0, "Engaged", 0.0, 0)
sink = CsvSink({str(path)!r}, ["Engaged"])
sink.write(row)
sink.write(row)
os.kill(os.getpid(), signal.SIGKILL)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert done.returncode == -9, done.stderr.decode()
    assert len(read_csv(path)) == 2


def test_append_keeps_one_header(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    with CsvSink(path, LABELS) as sink:
        sink.write(summary())
    with CsvSink(path, LABELS, append=True) as sink:
        sink.write(summary())
    assert len(read_csv(path)) == 2
    assert path.read_text().count("window_start") == 1


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (("Angry", "Neutral", "Engaged"), "file has extra share_bored"),
        (("Angry", "Neutral", "Engaged", "Bored", "Sad"), "file lacks share_sad"),
        (("Neutral", "Angry", "Engaged", "Bored"), "another order"),
    ],
)
def test_append_to_a_different_header_is_refused(tmp_path: Path, labels: tuple, match: str) -> None:
    path = tmp_path / "out.csv"
    CsvSink(path, LABELS).close()
    with pytest.raises(OutputError, match=match):
        CsvSink(path, labels, append=True)


@pytest.mark.parametrize(
    ("make_path", "match"),
    [
        (lambda tmp: tmp / "missing" / "out.csv", "folder .* does not exist"),
        (lambda tmp: tmp, "folder, not a file"),
        (lambda tmp: (tmp / "file").write_text("x") and tmp / "file" / "out.csv", "cannot open"),
    ],
)
@pytest.mark.parametrize("sink_type", [CsvSink, JsonlSink])
def test_unwritable_paths_fail_at_open(tmp_path: Path, make_path, match: str, sink_type: type) -> None:
    args = (LABELS,) if sink_type is CsvSink else ()
    with pytest.raises(OutputError, match=match):
        sink_type(make_path(tmp_path), *args)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores permissions")
def test_permission_denied(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="permission denied"):
            CsvSink(tmp_path / "out.csv", LABELS)
    finally:
        tmp_path.chmod(0o700)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_disk_full_is_a_clear_error() -> None:
    with pytest.raises(OutputError, match="disk full"):
        CsvSink(Path("/dev/full"), LABELS)  # the header is written at open
    sink = JsonlSink(Path("/dev/full"))
    with pytest.raises(OutputError, match="disk full"):
        sink.write(summary())
    sink.close()


def test_jsonl_has_the_same_fields_with_null(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    with JsonlSink(path) as sink:
        sink.write(summary())
        sink.write(summary(WindowStatus.GAP))
    first, gap = (json.loads(line) for line in path.read_text().splitlines())
    assert list(first) == summary_columns(LABELS)
    assert gap["share_engaged"] is None and gap["frames"] == 0


@pytest.mark.parametrize(("sink_type", "suffix"), [(CsvSink, ".csv"), (JsonlSink, ".jsonl")])
def test_per_track_rows_go_to_their_own_file(tmp_path: Path, sink_type: type, suffix: str) -> None:
    path = tmp_path / f"out{suffix}"
    args = (LABELS,) if sink_type is CsvSink else ()
    with sink_type(path, *args, per_track=True) as sink:
        sink.write(summary())
        sink.write_tracks([track_row("t1"), track_row("t2")])
    text = tracks_path(path).read_text()
    assert "t1" in text and "t2" in text and "t1" not in path.read_text()
    with sink_type(tmp_path / f"plain{suffix}", *args) as sink, pytest.raises(ValueError, match="per_track"):
        sink.write_tracks([track_row()])
    assert not tracks_path(tmp_path / f"plain{suffix}").exists()


# -- console ---------------------------------------------------------------------------------------


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
                                  engagement_index=0.1, source_state="connected"))
    drawn = console.export_text()  # every redraw; the first, with one source, is still a panel
    assert "eng." in drawn and "╭" not in drawn.split("eng.")[-1]  # then the sink switched to the table
    view = render_text(render(sink.current(), compact=True), width=80).rstrip("\n").splitlines()
    assert len(view) == 5 and all(len(line) <= 80 for line in view)  # a header and a line per source
    assert "40%" in view[1] and "+0.10" in view[1]
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
