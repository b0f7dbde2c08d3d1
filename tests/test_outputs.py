"""The run's outputs: paths checked before a run (`preflight`), the file sinks it opens, the fan-out by
role (`sinks.fanout.Fanout`) and the annotated video's frame rate taken from the frames' timestamps."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_sinks import LABELS, read_csv, summary, track_row

from edumood_live.config import OutputConfig
from edumood_live.errors import OutputError
from edumood_live.sinks import LiveState, close_all
from edumood_live.sinks.annotate import AnnotatedVideoWriter
from edumood_live.sinks.fanout import Fanout
from edumood_live.sinks.files import CsvSink, JsonlSink, open_file_sinks, preflight
from edumood_live.types import TrackedFaces

NO_FACES = TrackedFaces(np.zeros(0), np.zeros((0, 4)), np.zeros((0, 4)))


class Recorder:
    """An extra sink that shows live states and keeps what it is given."""

    def __init__(self) -> None:
        self.rows: list[object] = []
        self.states: list[LiveState] = []
        self.closed = False

    def write(self, summary: object) -> None:
        self.rows.append(summary)

    def update(self, state: LiveState) -> None:
        self.states.append(state)

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda tmp: OutputConfig(csv_path=tmp / "missing" / "a.csv"), "does not exist"),
        (lambda tmp: OutputConfig(jsonl_path=tmp), "it is a folder"),
    ],
)
def test_preflight_fails_before_any_file_is_touched(tmp_path: Path, make, match: str) -> None:
    before = sorted(tmp_path.iterdir())
    with pytest.raises(OutputError, match=match):
        preflight(make(tmp_path), LABELS)
    assert sorted(tmp_path.iterdir()) == before


def test_preflight_refuses_to_append_to_another_header(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("window_start,source\n")
    with pytest.raises(OutputError, match=r"cannot append to .*a\.csv: its header differs"):
        preflight(OutputConfig(csv_path=path, append=True), LABELS)
    preflight(OutputConfig(csv_path=path), LABELS)  # overwriting is fine


def test_open_file_sinks_opens_what_is_configured(tmp_path: Path) -> None:
    config = OutputConfig(csv_path=tmp_path / "a.csv", jsonl_path=tmp_path / "a.jsonl", per_track=True)
    sinks = open_file_sinks(config, LABELS)
    try:
        assert [type(s) for s in sinks] == [CsvSink, JsonlSink]
    finally:
        close_all(sinks)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "a.jsonl", "a.tracks.csv", "a.tracks.jsonl"]


def test_fanout_sends_each_role_its_share(tmp_path: Path) -> None:
    extra = Recorder()
    fanout = Fanout([extra])
    fanout.open(OutputConfig(csv_path=tmp_path / "a.csv", per_track=True), LABELS)
    assert fanout.shows_live
    fanout.write([summary()], [track_row()])
    fanout.update(LiveState("room"))
    fanout.close()
    assert len(extra.rows) == 1 and [s.source for s in extra.states] == ["room"] and extra.closed
    assert len(read_csv(tmp_path / "a.csv")) == 1 and len(read_csv(tmp_path / "a.tracks.csv")) == 1


def test_fanout_closes_every_sink_and_raises_the_first_output_error() -> None:
    class Broken(Recorder):
        def close(self) -> None:
            super().close()
            raise OutputError("disk full")

    first, second = Broken(), Recorder()
    with pytest.raises(OutputError, match="disk full"):
        Fanout([first, second]).close()
    assert first.closed and second.closed


@pytest.mark.parametrize(("step_ms", "fps"), [(40.0, 25.0), (0.0, 10.0), (2.0, 120.0)])
def test_annotated_video_takes_its_rate_from_the_timestamps(tmp_path: Path, step_ms: float, fps: float) -> None:
    path = tmp_path / "a.mp4"
    image = np.zeros((120, 160, 3), np.uint8)
    with AnnotatedVideoWriter(path, LABELS) as writer:
        for i in range(3):
            writer.write(image, NO_FACES, i * step_ms)
        assert writer.fps == pytest.approx(fps)
    cap = cv2.VideoCapture(str(path))
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 3 and cap.get(cv2.CAP_PROP_FPS) == pytest.approx(fps, rel=0.01)
    cap.release()


def test_a_single_frame_still_makes_a_video(tmp_path: Path) -> None:
    path = tmp_path / "one.webm"
    writer = AnnotatedVideoWriter(path, LABELS)
    writer.write(np.zeros((120, 160, 3), np.uint8), NO_FACES, 0.0)
    writer.close()
    writer.close()  # idempotent
    assert writer.frames_written == 1 and os.path.getsize(path) > 0
