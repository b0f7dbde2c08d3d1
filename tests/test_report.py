"""Lesson report: reading outputs, whole-lesson numbers, one self-contained HTML, friendly errors."""

from __future__ import annotations

import base64
import csv
import json
import re
from pathlib import Path

import pytest

from edumood_live.errors import ConfigError, OutputError
from edumood_live.report import build_report, class_colour, load_windows, summarise

pytest.importorskip("matplotlib")

COLUMNS = [
    "window_start",
    "window_end",
    "source",
    "status",
    "frames",
    "fps",
    "faces_mean",
    "tracks",
    "share_angry",
    "share_neutral",
    "share_engaged",
    "share_bored",
    "engagement_index",
    "dominant_label",
    "low_confidence_share",
    "dropped_frames",
]
# (start, end, status, frames, faces_mean, shares A/N/E/B or None, engagement index)
WINDOWS = [
    ("09:00:00", "09:00:10", "ok", 100, 10.0, (0.1, 0.2, 0.5, 0.2), 0.3),
    ("09:00:10", "09:00:20", "ok", 100, 10.0, (0.0, 0.2, 0.3, 0.5), -0.2),
    ("09:00:20", "09:00:30", "gap", 0, 0.0, None, None),
    ("09:00:30", "09:00:40", "suppressed", 100, 1.0, None, None),
    ("09:00:40", "09:00:45", "partial", 50, 20.0, (0.0, 0.0, 1.0, 0.0), 1.0),
]


def rows(source: str = "room-101") -> list[dict[str, object]]:
    out = []
    for start, end, status, frames, faces, shares, index in WINDOWS:
        row: dict[str, object] = dict.fromkeys(COLUMNS, "")
        row.update(
            window_start=f"2025-03-04T{start}.000Z",
            window_end=f"2025-03-04T{end}.000Z",
            source=source,
            status=status,
            frames=frames,
            fps=frames / 10,
            faces_mean=faces,
            tracks=int(faces),
            engagement_index="" if index is None else index,
            dropped_frames=1,
        )
        if shares:
            row.update(zip(COLUMNS[8:12], shares, strict=True))
            row["dominant_label"] = ["Angry", "Neutral", "Engaged", "Bored"][shares.index(max(shares))]
        out.append(row)
    return out


def write_csv(path: Path, records: list[dict[str, object]]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    return path


def write_jsonl(path: Path, records: list[dict[str, object]]) -> Path:
    lines = [json.dumps({k: (None if v == "" else v) for k, v in r.items()}) for r in records]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_load_windows_parses_rows(tmp_path: Path) -> None:
    (windows,) = load_windows([write_csv(tmp_path / "a.csv", rows())]).values()
    assert [w.status for w in windows] == ["ok", "ok", "gap", "suppressed", "partial"]
    assert windows[0].shares == {"angry": 0.1, "neutral": 0.2, "engaged": 0.5, "bored": 0.2}
    assert windows[2].shares["engaged"] is None and windows[2].engagement_index is None
    assert windows[4].seconds == 5.0


def test_summary_weights_by_face_observations(tmp_path: Path) -> None:
    (windows,) = load_windows([write_csv(tmp_path / "a.csv", rows())]).values()
    s = summarise(windows)
    # observations: 1000, 1000, 1000 (partial: 50 frames x 20 faces); gap and suppressed carry no shares
    assert s.mean_engagement == pytest.approx((0.3 - 0.2 + 1.0) / 3)
    assert s.shares["engaged"] == pytest.approx((0.5 + 0.3 + 1.0) / 3)
    assert sum(v for v in s.shares.values() if v is not None) == pytest.approx(1.0)
    assert s.mean_faces == pytest.approx((1000 + 1000 + 100 + 1000) / 350)
    assert (s.gap_seconds, s.windows, s.dropped_frames) == (10.0, 5, 5)
    assert s.status_counts == {"ok": 2, "gap": 1, "suppressed": 1, "partial": 1}
    assert (s.end - s.start).total_seconds() == 45


def test_build_report_writes_one_self_contained_html(tmp_path: Path) -> None:
    inputs = [
        write_csv(tmp_path / "room.csv", rows()),
        write_jsonl(tmp_path / "cam.jsonl", rows("rtsp://teacher:secret@10.0.0.5/stream")),
    ]
    out = build_report(inputs, tmp_path / "report.html")
    page = out.read_text()
    pngs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(pngs) == 2  # one plot per source
    assert all(base64.b64decode(p).startswith(b"\x89PNG") for p in pngs)
    assert "room-101" in page and "rtsp://teacher:***@10.0.0.5/stream" in page and "secret" not in page
    assert "Article 5(1)(f)" in page and "Aggregate statistics only" in page
    assert "http" not in page.replace("rtsp://", "")  # nothing loaded from elsewhere
    assert "Mean engagement index" in page and "+0.37" in page
    assert not list(tmp_path.glob(".*.tmp"))


def test_sources_in_input_order_then_by_name(tmp_path: Path) -> None:
    mixed = [r for pair in zip(rows("cam-b"), rows("cam-a"), strict=True) for r in pair]  # b's rows first
    inputs = [write_csv(tmp_path / "first.csv", rows("room-9")), write_csv(tmp_path / "cams.csv", mixed)]
    assert list(load_windows(inputs)) == ["room-9", "cam-a", "cam-b"]


def test_duplicate_windows_from_several_files_are_merged(tmp_path: Path) -> None:
    a = write_csv(tmp_path / "a.csv", rows()[:3])
    b = write_csv(tmp_path / "b.csv", rows()[2:])
    (windows,) = load_windows([a, b]).values()
    assert len(windows) == 5


@pytest.mark.parametrize(
    ("make_input", "match"),
    [
        (lambda tmp: tmp / "nope.csv", "no such file"),
        (lambda tmp: _text(tmp / "empty.csv", ""), "empty"),
        (lambda tmp: _text(tmp / "header.csv", ",".join(COLUMNS) + "\n"), "empty"),
        (lambda tmp: _text(tmp / "notes.txt", "hello"), "unrecognised type .txt"),
        (lambda tmp: _text(tmp / "other.csv", "a,b\n1,2\n"), "not an EduMood Live output"),
        (lambda tmp: _text(tmp / "x.tracks.csv", "window_start,track,share_a\nx,t1,1\n"), "per-track"),
        (lambda tmp: _text(tmp / "bad.jsonl", "{not json\n"), "cannot be read as JSONL"),
        (lambda tmp: _text(tmp / "list.jsonl", "[1, 2]\n"), "must be an object"),
        (lambda tmp: write_csv(tmp / "badnum.csv", [{**rows()[0], "frames": "many"}]), "line 2: frames"),
        (lambda tmp: write_csv(tmp / "badtime.csv", [{**rows()[0], "window_start": "noon"}]), "ISO-8601"),
    ],
)
def test_bad_inputs_are_friendly_errors(tmp_path: Path, make_input, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_report([make_input(tmp_path)], tmp_path / "r.html")


def test_no_inputs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no input files"):
        build_report([], tmp_path / "r.html")


def test_unwritable_output(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "a.csv", rows())
    with pytest.raises(OutputError, match="does not exist"):
        build_report([source], tmp_path / "missing" / "r.html")
    with pytest.raises(OutputError, match="cannot write report"):
        build_report([source], tmp_path)  # a folder


def test_only_gaps_still_makes_a_report(tmp_path: Path) -> None:
    gaps = [r for r in rows() if r["status"] == "gap"]
    page = build_report([write_csv(tmp_path / "g.csv", gaps)], tmp_path / "r.html").read_text()
    assert "n/a" in page and "data:image/png" in page


@pytest.mark.parametrize(
    ("label", "index", "colour"),
    [("Engaged", 0, "#009E73"), ("engaged", 5, "#009E73"), ("Bored", 0, "#56B4E9"), ("Happy", 0, "#0072B2")],
)
def test_class_colours_are_stable(label: str, index: int, colour: str) -> None:
    assert class_colour(label, index) == colour


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_attention_share_is_read_and_drawn_on_the_engagement_chart(tmp_path: Path) -> None:
    from edumood_live.report_plot import plot_source

    with_attention = [{**r, "attention_share": 0.8} for r in rows()]
    (windows,) = load_windows([write_csv(tmp_path / "a.csv", with_attention)]).values()
    assert all(w.attention_share == 0.8 for w in windows if w.frames)
    (older,) = load_windows([write_csv(tmp_path / "b.csv", rows())]).values()  # files without the column
    assert all(w.attention_share is None for w in older)
    assert plot_source("room-101", windows) != plot_source("room-101", older)  # a line more


ATTENTION = (0.9, 0.5, None, None, 1.0)  # per window of WINDOWS: none in the gap, withheld in the suppressed one


@pytest.mark.parametrize(
    ("attention", "write", "mean"),
    [
        (ATTENTION, write_csv, 0.8),  # (0.9 x 1000 + 0.5 x 1000 + 1.0 x 1000 observations) / 3000
        (ATTENTION, write_jsonl, 0.8),
        ((None,) * 5, write_csv, None),  # the column without values (--signals expressions)
        (None, write_csv, None),  # no column: a file written before the attention signal
    ],
)
def test_attention_share_in_the_summary_and_window_table_only_where_the_file_has_it(
    tmp_path: Path, attention: tuple | None, write, mean: float | None
) -> None:
    records = rows()
    if attention is not None:
        records = [{**r, "attention_share": "" if a is None else a} for r, a in zip(records, attention, strict=True)]
    source = write(tmp_path / ("room.csv" if write is write_csv else "room.jsonl"), records)
    (windows,) = load_windows([source]).values()
    assert summarise(windows).attention_share == (None if mean is None else pytest.approx(mean))
    page = build_report([source], tmp_path / "report.html").read_text()
    summary, table = page.split("<details>")
    if mean is None:
        assert "Attention share" not in summary and "<th>attention</th>" not in table
        return
    assert "<th>Attention share (facing the front)</th><td>80%</td>" in summary
    assert "<th>engagement</th><th>attention</th></tr>" in table
    cells = re.findall(r"<td class=num>([^<]*)</td></tr>", table)  # the last cell of each window's row
    assert cells == ["90%", "50%", "n/a", "n/a", "100%"]


def test_an_attention_only_file_makes_a_report(tmp_path: Path) -> None:
    """``--signals attention`` rows have no share_<label> columns, no engagement and no dominant label."""
    records = [
        {**{k: v for k, v in r.items() if not k.startswith("share_")}, "engagement_index": "", "dominant_label": "",
         "attention_share": "" if a is None else a}
        for r, a in zip(rows(), ATTENTION, strict=True)
    ]  # fmt: skip
    source = write_csv(tmp_path / "attention.csv", records)
    (windows,) = load_windows([source]).values()
    assert all(w.shares == {} for w in windows)
    page = build_report([source], tmp_path / "report.html").read_text()
    assert "<th>Attention share (facing the front)</th><td>80%</td>" in page and "Share " not in page
    assert "data:image/png" in page
