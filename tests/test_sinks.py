"""CSV/JSONL sinks: crash-safe rows, header checks, clear errors."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edumood_live.aggregator import TrackRow
from edumood_live.config import tracks_path
from edumood_live.errors import OutputError
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


def test_status_is_a_member_and_written_as_its_value() -> None:
    row = summary(status="gap")
    assert row.status is WindowStatus.GAP and row.to_row()["status"] == "gap" and str(row.status) == "gap"
    with pytest.raises(ValueError, match="'later'"):
        summary(status="later")
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
