"""End to end: ``edumood-live`` in a child process on real media. Output schema and values, the
shipped model, SIGINT/SIGTERM, a real RTSP server killed and restarted mid-run, privacy defaults."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import (
    check_row,
    cli_command,
    csv_rows,
    model_labels,
    read_csv,
    read_jsonl,
    run_cli,
    schema,
    span_s,
    wait_until,
)
from live_fixtures import RtspServer, serve_rtsp

pytestmark = pytest.mark.slow
MEDIA_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif",
                  ".tif", ".tiff", ".ppm", ".pgm"}


@pytest.fixture
def rtsp_server(tmp_path: Path) -> Iterator[RtspServer]:
    """A real RTSP server (tests/rtsp_server.py) on a free port; skips when GStreamer is missing."""
    yield from serve_rtsp(tmp_path)


def run_demo(model: Path | None, tmp_path: Path, *extra: object) -> tuple[list[str], list[dict[str, str]],
                                                                      list[dict[str, object]]]:
    """`--source demo` to CSV and JSONL; returns the CSV header and rows, and the JSONL records."""
    csv_out, jsonl_out = tmp_path / "out.csv", tmp_path / "out.jsonl"
    model_args = [] if model is None else ["--model", model]
    proc = run_cli("--source", "demo", *model_args, "--csv", csv_out, "--jsonl", jsonl_out, "--no-console",
                   *extra)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    header, rows = read_csv(csv_out)
    return header, rows, read_jsonl(jsonl_out)


@pytest.mark.parametrize(
    ("window", "statuses", "last_span_s"),
    [("1", ["ok", "ok", "ok"], 1.0), ("2", ["ok", "ended"], 1.0)],  # the clip lasts 3 s
)
def test_demo_to_csv_and_jsonl(tiny_classifier_path: Path, tmp_path: Path, window: str, statuses: list[str],
                               last_span_s: float) -> None:
    labels = model_labels(tiny_classifier_path)
    header, rows, records = run_demo(tiny_classifier_path, tmp_path, "--window", window)
    assert header == schema(labels)
    assert [r["status"] for r in rows] == statuses
    assert span_s(rows[-1]) == pytest.approx(last_span_s, abs=0.01)
    for row in rows:
        check_row(row, labels)
        assert row["source"] == "demo" and row["tracks"] == "3" and row["dropped_frames"] == "0"
    assert sum(int(r["frames"]) for r in rows) == 36
    assert [list(r) for r in records] == [header] * len(rows)  # JSONL: same fields, same order
    for row, record in zip(rows, records, strict=True):
        assert {k: "" if v is None else str(v) for k, v in record.items()} == row


def test_demo_with_signals_attention_runs_no_classifier(tmp_path: Path) -> None:
    """``--signals attention`` with a --model that does not exist: no model is loaded, the rows have the
    documented columns without class shares, and every window has an attention share."""
    header, rows, records = run_demo(tmp_path / "absent.onnx", tmp_path, "--window", "1", "--signals", "attention")
    assert header == schema([])
    assert [r["status"] for r in rows] == ["ok", "ok", "ok"]
    for row in rows:
        check_row(row, [])
        assert row["engagement_index"] == row["dominant_label"] == row["low_confidence_share"] == ""
        assert 0 <= float(row["attention_share"]) <= 1
    assert [list(r) for r in records] == [header] * len(rows)


def test_bad_signals_is_a_usage_error() -> None:
    proc = run_cli("--source", "demo", "--no-console", "--signals", "mood")
    assert proc.returncode == 2, proc.stderr
    assert "--signals 'mood' is not allowed; use one or more of 'expressions', 'attention'" in proc.stderr


def test_demo_with_the_shipped_model(classifier_path: Path, tmp_path: Path) -> None:
    labels = model_labels(classifier_path)
    header, rows, records = run_demo(None, tmp_path, "--window", "2")
    assert header == schema(labels)
    assert [r["status"] for r in rows] == ["ok", "ended"]
    for row in rows:
        check_row(row, labels)
    assert len(records) == len(rows)


# ----------------------------------------------------------------------------- signals


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_writes_a_final_partial_window(tiny_classifier_path: Path, tmp_path: Path,
                                              signum: int) -> None:
    csv_out, jsonl_out = tmp_path / "out.csv", tmp_path / "out.jsonl"
    command = cli_command("--source", "demo", "--max-fps", "6", "--model", tiny_classifier_path,
                          "--csv", csv_out, "--jsonl", jsonl_out, "--no-console", "--window", "1")  # 6 s
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            wait_until(lambda: len(csv_rows(csv_out)) >= 1, 60, "the first window row", proc)
            proc.send_signal(signum)
            _, stderr = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and f"stopped by {signal.Signals(signum).name}" in stderr
    header, rows = read_csv(csv_out)  # whole rows only
    assert rows[-1]["status"] == "partial" and span_s(rows[-1]) < 1.0
    assert 2 <= len(rows) < 4
    records = read_jsonl(jsonl_out)
    assert [r["status"] for r in records] == [r["status"] for r in rows]


# ----------------------------------------------------------------------------- RTSP


@pytest.mark.rtsp
def test_rtsp_server_killed_and_restarted(rtsp_server: RtspServer, tiny_classifier_path: Path,
                                          tmp_path: Path) -> None:
    csv_out = tmp_path / "room.csv"
    command = cli_command("--source", rtsp_server.url, "--model", tiny_classifier_path, "--csv", csv_out,
                          "--no-console", "--window", "1", "--read-timeout", "1", "--watchdog", "2")
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            wait_until(lambda: any(int(r["frames"]) for r in csv_rows(csv_out)), 60, "frames", proc)
            rtsp_server.kill()
            wait_until(lambda: any(r["status"] == "gap" for r in csv_rows(csv_out)), 20, "a gap row", proc)
            rtsp_server.start()
            gap_rows = len(csv_rows(csv_out))

            def resumed() -> bool:
                return any(int(r["frames"]) > 0 for r in csv_rows(csv_out)[gap_rows:])

            wait_until(resumed, 40, "rows with frames after the restart", proc)
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 0, stderr
    header, rows = read_csv(csv_out)
    labels = model_labels(tiny_classifier_path)
    assert header == schema(labels)
    statuses = [r["status"] for r in rows]
    first_gap = statuses.index("gap")
    assert any(int(r["frames"]) > 0 for r in rows[:first_gap])
    assert any(int(r["frames"]) > 0 for r in rows[first_gap:])
    assert rows[-1]["status"] in ("partial", "gap")
    for row in rows:
        check_row(row, labels, faces=None)
        assert row["source"] == rtsp_server.url


@pytest.mark.rtsp
def test_a_second_interrupt_exits_at_once(rtsp_server: RtspServer, tiny_classifier_path: Path,
                                         tmp_path: Path) -> None:
    """With a frozen camera the clean stop waits for a hung read; a second Ctrl-C does not wait."""
    csv_out = tmp_path / "room.csv"
    command = cli_command("--source", rtsp_server.url, "--model", tiny_classifier_path, "--csv", csv_out,
                          "--no-console", "--window", "1")
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            wait_until(lambda: any(int(r["frames"]) for r in csv_rows(csv_out)), 60, "frames", proc)
            rtsp_server.freeze()  # the grabber's read now hangs; closing the source waits for it
            proc.send_signal(signal.SIGINT)
            wait_for_line(proc, "stopping: writing the last window", 10)
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=30)
        finally:
            rtsp_server.thaw()
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "interrupted again, exiting at once" in stderr
    read_csv(csv_out)  # the rows written before are whole


def wait_for_line(proc: subprocess.Popen[str], text: str, timeout_s: float) -> None:
    """Read the child's stderr (unbuffered) until `text` appears (bounded)."""
    assert proc.stderr is not None
    fd, seen = proc.stderr.fileno(), b""
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while text.encode() not in seen:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {text!r} on stderr within {timeout_s} s: {seen[-500:]!r}"
            if selector.select(timeout=remaining):
                chunk = os.read(fd, 65536)
                assert chunk, f"stderr closed before {text!r}: {seen[-500:]!r}"
                seen += chunk


# ----------------------------------------------------------------------------- privacy


def media_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES)


@pytest.mark.parametrize("annotate", [False, True], ids=["aggregates-only", "annotate"])
def test_nothing_showing_a_face_is_written_unless_asked(tiny_classifier_path: Path, tmp_path: Path,
                                                        annotate: bool) -> None:
    work, scratch = tmp_path / "work", tmp_path / "scratch"
    work.mkdir()
    scratch.mkdir()
    extra = ["--annotate", "review.mp4"] if annotate else []
    proc = run_cli("--source", "demo", "--model", tiny_classifier_path, "--csv", "out.csv", "--jsonl",
                   "out.jsonl", "--per-track", "--no-console", *extra, cwd=work, env={"TMPDIR": str(scratch)})
    assert proc.returncode == 0, proc.stderr
    written = sorted(p.name for p in work.iterdir())
    expected = ["out.csv", "out.jsonl", "out.tracks.csv", "out.tracks.jsonl"]
    assert written == sorted(expected + (["review.mp4"] if annotate else []))
    assert media_files(scratch) == [] and media_files(work) == ([work / "review.mp4"] if annotate else [])


def test_errors_in_a_child_process_are_one_line(tiny_classifier_path: Path, tmp_path: Path) -> None:
    proc = run_cli("--source", tmp_path / "missing.mp4", "--model", tiny_classifier_path, "--no-console")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"error: source '{tmp_path / 'missing.mp4'}': no such file or folder "
        "(other sources: 'webcam', a camera index, rtsp://..., http(s)://..., 'demo')"
    ]
    assert proc.stdout == ""
