"""The CLI in-process (`cli.main(argv)`): flags, one-line errors with exit status 2, start-up lines,
warnings, appending, the report subcommand. Child-process runs are in test_e2e.py."""

from __future__ import annotations

import csv
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

import cv2
import pytest
from cli_helpers import check_row, model_labels, read_csv, schema
from live_fixtures import free_port

from edumood_live import __version__
from edumood_live.cli import main
from edumood_live.cli_process import FAST_RTSP_OPTIONS, FFMPEG_OPTIONS_ENV, prefer_fast_rtsp


@pytest.fixture(autouse=True)
def _no_ffmpeg_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI may set FFmpeg's RTSP options in this process: undo it after each test."""
    monkeypatch.delenv(FFMPEG_OPTIONS_ENV, raising=False)


def cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, list[str]]:
    """Exit status, stdout and stderr lines of ``edumood-live args...`` run in this process."""
    try:
        status = main([str(a) for a in args])
    except SystemExit as exc:  # argparse: --help, --version, usage errors
        status = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return status, captured.out, captured.err.splitlines()


# ----------------------------------------------------------------------------- errors


@pytest.fixture
def files(tmp_path: Path, onnx_classifier_factory: Callable[..., Path]) -> dict[str, Path]:
    """Bad inputs: a text file, a text file named .onnx, an ONNX without labels, a foreign CSV."""
    text = tmp_path / "notes.txt"
    text.write_text("not a video\n")
    fake_model = tmp_path / "fake.onnx"
    fake_model.write_text("not a model\n")
    foreign = tmp_path / "foreign.csv"
    foreign.write_text("time,value\n1,2\n")
    return {
        "text": text,
        "fake_model": fake_model,
        "no_labels": onnx_classifier_factory("no_labels.onnx", drop_keys=("labels",)),
        "foreign_csv": foreign,
        "tmp": tmp_path,
    }


ERROR_CASES = [
    # (arguments; {name} is replaced by a path from `files`, {tiny} by the tiny model), expected message
    (["--source", "foo://cam", "--model", "{tiny}"], r"unknown scheme foo://"),
    (["--source", "{tmp}/missing.mp4", "--model", "{tiny}"], r"missing\.mp4': no such file or folder"),
    (["--source", "{text}", "--model", "{tiny}"], r"could not be opened as a video"),
    (["--ray", "--source", "{tmp}/missing.mp4", "--model", "{tiny}"], r"missing\.mp4': no such file"),
    (["--ray", "--source", "demo", "--model", "{tiny}", "--classifier-replicas", "all"],
     r"--classifier-replicas 'all' is not allowed; use an integer >= 1 or 'per-node'"),
    (["--ray", "--source", "demo", "--model", "{tiny}", "--camera-cpus", "0"], r"--camera-cpus: expected a number > 0"),
    (["--source", "demo", "--model", "{tmp}/none.onnx"], r"classifier model .*none\.onnx does not exist"),
    (["--source", "demo", "--model", "{fake_model}"], r"fake\.onnx is not a valid ONNX model"),
    (["--source", "demo", "--model", "{no_labels}"], r"metadata key 'labels' is missing"),
    (["--source", "demo", "--model", "{tiny}", "--csv", "{tmp}/no/out.csv"], r"folder .*no does not exist"),
    (["--source", "demo", "--model", "{tiny}", "--jsonl", "{tmp}"], r"it is a folder"),
    (["--source", "demo", "--model", "{tiny}", "--csv", "{foreign_csv}", "--append"], r"header differs"),
    (["--source", "demo", "--model", "{tiny}", "--tiles", "4by3"], r"--tiles '4by3' is not allowed.*'4x3'"),
    (["--source", "demo", "--model", "{tiny}", "--tiles", "0x2"], r"--tiles '0x2' is not allowed"),
    (["--source", "demo", "--model", "{tiny}", "--detect-every", "0"],
     r"--detect-every 0 is not allowed; use an integer in 1\.\.30"),
    (["--source", "demo", "--model", "{tiny}", "--min-confidence", "1.5"], r"--min-confidence 1.5 is not allowed"),
    (["--source", "demo", "--source", "demo", "--model", "{tiny}", "--annotate", "{tmp}/v.mp4"],
     r"needs exactly one source"),
    (["--source", "demo", "--model", "{tiny}", "--annotate", "{tmp}/v.gif"], r"ending in \.webm, \.mp4"),
    # usage errors (argparse), also one line and status 2
    (["--window", "0"], r"argument --window: expected a number > 0, got '0'"),
    (["--window", "-1"], r"argument --window: expected a number > 0"),
    (["--window", "ten"], r"argument --window: expected a number > 0, got 'ten'"),
    (["--stride", "0"], r"argument --stride: expected a number >= 1"),
    (["--device", "tpu"], r"argument --device: invalid choice: 'tpu'"),
    (["--frobnicate"], r"unrecognized arguments: --frobnicate"),
]


@pytest.mark.parametrize(("args", "match"), ERROR_CASES, ids=[" ".join(a[:4]) for a, _ in ERROR_CASES])
def test_errors_are_one_line_and_status_2(
    capsys: pytest.CaptureFixture[str], files: dict[str, Path], tiny_classifier_path: Path,
    args: list[str], match: str,
) -> None:
    values = {k: str(v) for k, v in files.items()}
    values.update(tiny=str(tiny_classifier_path), port=str(free_port()))
    status, out, err = cli(capsys, *(a.format(**values) for a in args), "--no-console")
    assert status == 2, err
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert re.search(match, err[0]), err[0]
    assert out == ""


def test_a_camera_down_at_start_is_waited_for_then_fails_with_status_1(
    capsys: pytest.CaptureFixture[str], tiny_classifier_path: Path, tmp_path: Path
) -> None:
    """Retried like a lost camera (gap rows meanwhile); when the retries run out: status 1, not 2."""
    url = f"rtsp://127.0.0.1:{free_port()}/none"
    status, _, err = cli(capsys, "--source", url, "--model", str(tiny_classifier_path), "--max-retries", "2",
                         "--window", "0.5", "--csv", str(tmp_path / "rows.csv"), "--no-console")
    assert status == 1, err
    rows = list(csv.DictReader((tmp_path / "rows.csv").open()))
    assert rows and {r["status"] for r in rows} == {"gap"}


@pytest.mark.skipif(any(Path("/dev").glob("video*")), reason="a camera exists on this machine")
def test_missing_webcam_is_a_clear_error(capsys: pytest.CaptureFixture[str],
                                         tiny_classifier_path: Path) -> None:
    status, _, err = cli(capsys, "--model", tiny_classifier_path, "--no-console")  # default source: webcam
    assert status == 2 and err == [
        "error: camera 0 could not be opened; no camera device exists (/dev/video* is absent); "
        "use a file, a folder, rtsp://... or demo"
    ]


def test_a_failed_run_leaves_an_existing_csv_alone(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                   tiny_classifier_path: Path) -> None:
    out = tmp_path / "lesson.csv"
    out.write_text("yesterday's rows\n")
    status, _, _ = cli(capsys, "--source", tmp_path / "typo.mp4", "--model", tiny_classifier_path,
                       "--csv", out)
    assert status == 2 and out.read_text() == "yesterday's rows\n"


# ----------------------------------------------------------------------------- help and version


def test_help_shows_examples_and_the_report_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = cli(capsys, "--help")
    assert status == 0
    for text in ("examples:", "--source demo", "edumood-live report", "--detect-every", "--min-group",
                 "exit status", "AI Act art. 5(1)(f)"):
        assert text in out, text


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = cli(capsys, "--version")
    assert status == 0 and out.strip() == f"edumood-live {__version__}"


# ----------------------------------------------------------------------------- runs


def test_run_logs_the_start_line_and_the_reminder_once(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                       tiny_classifier_path: Path) -> None:
    out = tmp_path / "out.csv"
    status, _, err = cli(capsys, "--source", "demo", "--model", tiny_classifier_path, "--csv", out,
                         "--no-console", "--window", "1")
    assert status == 0, err
    start = [line for line in err if "starting: " in line]
    assert len(start) == 1
    for text in ("sources: demo", "model tiny-test-classifier 0.0.0-test", "on CPU", "tiles auto"):
        assert text in start[0], text
    assert sum("responsible use" in line for line in err) == 1
    assert any("tiles 2x1 (auto)" in line for line in err)  # the grid resolved for the clip's size
    assert not any("nothing will be written" in line for line in err)
    header, rows = read_csv(out)
    assert header == schema(model_labels(tiny_classifier_path)) and len(rows) == 3


def test_a_shipped_model_is_chosen_by_name(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, _, err = cli(capsys, "--source", "demo", "--model", "fast", "--csv", tmp_path / "out.csv",
                         "--no-console", "--duration", "1")
    assert status == 0, err
    start = next(line for line in err if "starting: " in line)
    assert "(edumood_classifier_fast.onnx)" in start


def test_console_view_prints_each_window(capsys: pytest.CaptureFixture[str],
                                         tiny_classifier_path: Path) -> None:
    status, _, err = cli(capsys, "--source", "demo", "--model", tiny_classifier_path, "--window", "1")
    assert status == 0
    windows = [line for line in err if "demo" in line and "faces 3.0" in line]
    assert len(windows) == 3, err


@pytest.mark.parametrize(
    ("args", "warning"),
    [
        (["--no-console"], "nothing will be written"),
        (["--per-track"], "--per-track has no effect"),
    ],
)
def test_useless_flags_are_warned_about(capsys: pytest.CaptureFixture[str], tiny_classifier_path: Path,
                                        args: list[str], warning: str) -> None:
    status, _, err = cli(capsys, "--source", "demo", "--model", tiny_classifier_path, "--duration", "0.5",
                         *args)
    assert status == 0 and any(warning in line for line in err), err


def test_append_keeps_one_header(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                 tiny_classifier_path: Path) -> None:
    out = tmp_path / "week.csv"
    for extra in ([], ["--append"]):
        status, _, err = cli(capsys, "--source", "demo", "--model", tiny_classifier_path, "--csv", out,
                             "--no-console", "--window", "1", *extra)
        assert status == 0, err
    header, rows = read_csv(out)
    assert header[0] == "window_start" and len(rows) == 6
    assert out.read_text().count("window_start") == 1
    for row in rows:
        check_row(row, model_labels(tiny_classifier_path))


def test_report_subcommand(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                           tiny_classifier_path: Path) -> None:
    pytest.importorskip("matplotlib")
    csv_out, jsonl_out, html = tmp_path / "a.csv", tmp_path / "a.jsonl", tmp_path / "report.html"
    assert cli(capsys, "--source", "demo", "--model", tiny_classifier_path, "--csv", csv_out,
               "--jsonl", jsonl_out, "--no-console", "--window", "1")[0] == 0
    status, _, err = cli(capsys, "report", html, csv_out, jsonl_out)
    assert status == 0, err
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") or "<html" in page
    assert "data:image/png;base64," in page


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["{tmp}/r.html", "{tmp}/missing.csv"], r"^error: report input .*missing\.csv: no such file$"),
        (["{tmp}/r.html"], r"^error: the following arguments are required: INPUT"),
        (["{tmp}/none/r.html", "{csv}"], r"^error: cannot write report"),
    ],
)
def test_report_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str],
                       match: str) -> None:
    pytest.importorskip("matplotlib")
    good = tmp_path / "good.csv"
    good.write_text(
        "window_start,window_end,source,status,frames,faces_mean,share_engaged\n"
        "2025-01-01T09:00:00Z,2025-01-01T09:00:10Z,room,ok,10,3,1.0\n"
    )
    status, _, err = cli(capsys, "report", *(a.format(tmp=tmp_path, csv=good) for a in args))
    assert status == 2 and len(err) == 1, err
    assert re.search(match, err[0]), err[0]


@pytest.mark.parametrize(
    ("specs", "preset", "expected"),
    [
        (["rtsp://cam/stream"], None, FAST_RTSP_OPTIONS),
        (["demo", "RTSPS://cam/x"], None, FAST_RTSP_OPTIONS),
        (["rtsp://cam/stream"], "rtsp_transport;udp", "rtsp_transport;udp"),  # the user's choice wins
        (["demo", "http://cam/mjpg"], None, None),  # files and HTTP are left alone
    ],
)
def test_fast_rtsp_options_only_when_unset(monkeypatch: pytest.MonkeyPatch, specs: list[str],
                                           preset: str | None, expected: str | None) -> None:
    if preset is not None:
        monkeypatch.setenv(FFMPEG_OPTIONS_ENV, preset)
    prefer_fast_rtsp(specs)
    assert os.environ.get(FFMPEG_OPTIONS_ENV) == expected


def test_a_folder_replays_at_folder_fps_and_counts_its_corrupt_images(
    capsys: pytest.CaptureFixture[str], tiny_classifier_path: Path, tmp_path: Path, demo_frames: list
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(8):
        cv2.imwrite(str(folder / f"p{i:02d}.jpg"), demo_frames[i * 4])
    (folder / "p99.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    status, _, err = cli(capsys, "--source", folder, "--model", tiny_classifier_path, "--folder-fps", "4",
                         "--window", "1", "--csv", tmp_path / "rows.csv", "--no-console")
    assert status == 0
    rows = list(csv.DictReader((tmp_path / "rows.csv").open()))
    assert [int(r["frames"]) for r in rows] == [4, 4]  # 4 images per second of source time: 2 windows
    assert any("ended after 8 frames; 1 could not be decoded and were skipped" in line for line in err), err


def test_duration_end_line_and_summary_count_the_same_frames(
    capsys: pytest.CaptureFixture[str], tiny_classifier_path: Path
) -> None:
    """A frame read past --duration is not processed, and not counted as processed either."""
    status, _, err = cli(capsys, "--source", "demo", "--model", tiny_classifier_path, "--duration", "1",
                         "--no-console")
    stopped = next(line for line in err if "demo stopped after" in line)
    finished = next(line for line in err if "run finished:" in line)
    assert status == 0
    assert re.search(r"after (\d+) frames", stopped).group(1) == re.search(r"finished: (\d+) frames", finished).group(1)


def test_a_signal_with_a_live_view_notifies_the_view_not_the_raw_terminal(capfd: pytest.CaptureFixture[str]) -> None:
    """In a terminal the live view draws the notice; a raw write would land inside its redrawn region."""
    from edumood_live.cli_process import stop_on_signals

    class Run:  # the signal plumbing only needs stop(); the real pipelines are tested end to end
        stopped = False

        def stop(self) -> None:
            self.stopped = True

    noticed: list[bool] = []
    run = Run()
    with stop_on_signals(run, notice=lambda: noticed.append(True)):  # type: ignore[arg-type]
        os.kill(os.getpid(), signal.SIGINT)  # the handler runs in this thread before the next line
    assert noticed == [True] and run.stopped
    assert "stopping:" not in capfd.readouterr().err


def test_an_annotate_only_run_does_not_claim_nothing_is_written(
    capsys: pytest.CaptureFixture[str], tiny_classifier_path: Path, tmp_path: Path
) -> None:
    status, _, err = cli(capsys, "--source", "demo", "--model", tiny_classifier_path, "--annotate",
                         tmp_path / "review.webm", "--no-console")
    assert status == 0 and (tmp_path / "review.webm").stat().st_size > 0
    text = "\n".join(err)
    assert "nothing will be written" not in text and "only the annotated video" in text
    assert "VP8 in WebM" in text  # which codec was written is said


def test_help_says_ranges_and_real_costs(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = cli(capsys, "--help")
    assert status == 0
    flat = " ".join(out.split())
    assert "K in 1..30" in flat and "about 7x fewer multiply-adds" in flat and "4x cheaper" not in flat
    assert "--folder-fps" in flat and "--flip-average" in flat
