"""The pipeline through its Python API, on real media: every source kind, detect-every-K, gaps,
failing sources, stop, outputs and privacy defaults. Models: the tiny test classifier (labels from
its metadata) and the shipped MediaPipe detector."""

from __future__ import annotations

import csv
import json
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
from live_fixtures import paced_clip

import edumood_live.pipeline as pipeline_module
from edumood_live import (
    ClassifierConfig,
    ConfigError,
    OutputConfig,
    OutputError,
    Pipeline,
    RunConfig,
    SourceConfig,
    SourceError,
    WindowStatus,
    WindowSummary,
    run,
)
from edumood_live.classifier import FaceClassifier
from edumood_live.detector import DetectorConfig
from edumood_live.errors import FrameError
from edumood_live.schedule import AUTO_MAX_EVERY
from edumood_live.sinks import LiveState
from edumood_live.sources import open_source

CLIP_FRAMES = 36  # the bundled clip: 36 frames at 12 fps, 3 faces
FAST_LIVE = {"open_timeout_s": 5.0, "read_timeout_s": 1.0, "watchdog_s": 2.0,
             "backoff_initial_s": 0.2, "backoff_max_s": 1.0}


def make_config(model: Path, sources: tuple = ("demo",), **kwargs: object) -> RunConfig:
    return RunConfig(sources=sources, classifier=ClassifierConfig(model_path=model), **kwargs)  # type: ignore[arg-type]


def seconds(summary: WindowSummary) -> float:
    start, end = (datetime.fromisoformat(t.replace("Z", "+00:00"))
                  for t in (summary.window_start_utc, summary.window_end_utc))
    return (end - start).total_seconds()


def assert_valid(summary: WindowSummary, faces: float | None = 3.0) -> None:
    """Shares sum to 1 when there were faces; absent values are None, never NaN."""
    if summary.frames == 0:
        assert summary.status == WindowStatus.GAP and all(v is None for v in summary.shares.values())
        return
    if faces is not None:
        assert summary.faces_mean == pytest.approx(faces, abs=0.35)
    if summary.status != WindowStatus.SUPPRESSED and summary.dominant_label is not None:
        assert sum(summary.shares.values()) == pytest.approx(1.0, abs=1e-6)
        assert summary.dominant_label in summary.shares


class Recorder:
    """A real sink that keeps what it is given (rows and live states)."""

    def __init__(self) -> None:
        self.rows: list[WindowSummary] = []
        self.states: list[LiveState] = []
        self.closed = False

    def write(self, summary: WindowSummary) -> None:
        self.rows.append(summary)

    def update(self, state: LiveState) -> None:
        self.states.append(state)

    def close(self) -> None:
        self.closed = True


def webcam(**capture: object) -> Callable[..., object]:
    """Open the webcam path on a real-time capture of the clip (no camera exists here)."""

    def opener(**config: object) -> object:
        factory = lambda: paced_clip(**capture)  # noqa: E731
        return open_source(SourceConfig("webcam", **{**FAST_LIVE, **config}), capture_factory=factory)

    return opener


# ----------------------------------------------------------------------------- API and file sources


def test_api_builds_a_pipeline_and_iterates_summaries(tiny_classifier_path: Path) -> None:
    sink = Recorder()
    with Pipeline(make_config(tiny_classifier_path, window_s=1.0), sinks=[sink]) as pipeline:
        assert pipeline.labels == ("Angry", "Neutral", "Engaged", "Bored")  # from the model metadata
        assert "tiny-test-classifier" in pipeline.describe() and "CPU" in pipeline.describe()
        summaries = list(pipeline.run())
    assert [s.source for s in summaries] == ["demo"] * 3
    assert [s.frames for s in summaries] == [12, 12, 12]
    for summary in summaries:
        assert_valid(summary)
        assert summary.status == WindowStatus.OK and seconds(summary) == pytest.approx(1.0)
    assert sink.rows == summaries and sink.closed
    assert pipeline.source_states == {"demo": "ended"}
    final = sink.states[-1]  # the panel of an ended file shows its last window, marked ended
    assert final.source_state == "ended" and final.faces == round(summaries[-1].faces_mean) > 0
    assert final.engagement_index == summaries[-1].engagement_index
    stats = pipeline.stats.as_dict()
    # The default --detect-every auto skips the detector on some frames and the tracker carries the faces.
    assert stats["frames"] == CLIP_FRAMES and 1 <= stats["detected_frames"] < CLIP_FRAMES
    assert stats["faces"] == pytest.approx(3 * CLIP_FRAMES, abs=4)
    assert all(stats[f"{stage}_ms_per_frame"] > 0 for stage in ("read", "detect", "classify", "track"))


def test_run_function_returns_every_row(tiny_classifier_path: Path) -> None:
    rows = run(make_config(tiny_classifier_path, window_s=2.0))
    assert [r.status for r in rows] == [WindowStatus.OK, WindowStatus.ENDED]  # the file's own end
    assert seconds(rows[-1]) == pytest.approx(1.0, abs=0.01)  # 3 s clip: the last window is half full


@pytest.mark.parametrize(("every", "detected"), [(1, 36), (3, 12), (6, 6), ("auto", None)])
def test_detect_every_k_keeps_the_faces(tiny_classifier_path: Path, every: int | str,
                                        detected: int | None) -> None:
    pipeline = Pipeline(make_config(tiny_classifier_path, window_s=1.0, detect_every=every))
    summaries = list(pipeline.run())
    for summary in summaries:
        assert_valid(summary)
        assert summary.tracks == 3  # carried frames keep the same anonymous tracks
    stats = pipeline.stats
    assert stats.frames == CLIP_FRAMES
    if detected is not None:
        assert stats.detected_frames == detected
    else:
        assert CLIP_FRAMES / AUTO_MAX_EVERY <= stats.detected_frames < CLIP_FRAMES


def test_duration_and_stride_use_source_time(tiny_classifier_path: Path) -> None:
    source = SourceConfig("demo", stride=2)
    summaries = run(make_config(tiny_classifier_path, sources=(source,), window_s=1.0, duration_s=1.5))
    assert [s.frames for s in summaries] == [6, 3]  # every 2nd frame of the first 1.5 s
    assert summaries[-1].status == WindowStatus.PARTIAL


@pytest.fixture
def image_folder(tmp_path: Path, demo_frames: list[np.ndarray]) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(demo_frames[:8]):
        cv2.imwrite(str(folder / f"img{i}.png"), frame)
    return folder


def test_folder_of_images(tiny_classifier_path: Path, image_folder: Path) -> None:
    summaries = run(make_config(tiny_classifier_path, sources=(str(image_folder),), window_s=4.0))
    assert [s.frames for s in summaries] == [4, 4]  # folder frames are 1 s apart
    assert summaries[0].source == str(image_folder)
    for summary in summaries:
        assert_valid(summary)


# ----------------------------------------------------------------------------- live sources


def test_webcam_path_with_a_real_time_capture(tiny_classifier_path: Path) -> None:
    config = make_config(tiny_classifier_path, sources=("webcam",), window_s=0.5, duration_s=1.6)
    pipeline = Pipeline(config, sources=[webcam(fps=30.0)()])
    summaries = list(pipeline.run())
    assert len(summaries) >= 3 and {s.source for s in summaries} == {"camera:0"}
    for summary in summaries[:-1]:
        assert summary.frames > 0 and summary.status == WindowStatus.OK
        assert_valid(summary)
    assert summaries[-1].status in (WindowStatus.PARTIAL, WindowStatus.OK)
    assert pipeline.source_states == {"camera:0": "stopped"}
    stats = pipeline.stats.as_dict()
    assert stats["live_frames"] == stats["frames"] > 0
    assert stats["latency_max_ms"] is not None and stats["latency_max_ms"] < 1000


@pytest.mark.parametrize("background", [True, False])
def test_live_frames_wait_for_the_detector_only_in_line(tiny_classifier_path: Path, background: bool) -> None:
    # 8x8 tiles on every frame: one detection costs ~65 detector passes, far more than a 30 fps frame period.
    # In the background, frames go on being classified against the tracks meanwhile; in line, each waits.
    config = make_config(tiny_classifier_path, sources=("webcam",), window_s=0.5, duration_s=2.0,
                         detector=DetectorConfig(tiles="8x8", workers=1), detect_every=1,
                         background_detection=background)
    pipeline = Pipeline(config, sources=[webcam(fps=30.0)()])
    summaries = list(pipeline.run())
    stats = pipeline.stats.as_dict()
    detections = stats["detected_frames"]
    per_detection_ms = 1000.0 * stats["detect_s"] / detections
    assert detections >= 2 and all(s.faces_mean for s in summaries if s.frames)
    if background:
        assert stats["frames"] >= 3 * detections  # carried frames between the detections
        assert stats["latency_mean_ms"] < per_detection_ms / 3
    else:
        assert stats["frames"] == detections and stats["latency_mean_ms"] >= per_detection_ms


def test_live_view_keeps_the_last_frame_between_frames(tiny_classifier_path: Path) -> None:
    # A 10 fps camera is polled far more often than it delivers: between its frames the live view must
    # go on showing the last frame's faces, not flicker to "no faces in view".
    sink = Recorder()
    config = make_config(tiny_classifier_path, sources=("webcam",), window_s=0.5, duration_s=1.2)
    list(Pipeline(config, sources=[webcam(fps=10.0)()], sinks=[sink]).run())
    connected = [s for s in sink.states if s.source_state == "connected"]
    first = next(i for i, s in enumerate(connected) if s.faces)
    assert len(connected) - first > 10  # frames and polls in between
    assert all(s.faces and s.shares is not None for s in connected[first:])
    # once stopped, the view keeps what the last window found (not "0 faces"), and says it stopped
    last_row = [r for r in sink.rows if r.frames][-1]
    assert sink.states[-1].source_state == "stopped"
    assert sink.states[-1].faces == round(last_row.faces_mean) and sink.states[-1].fps == last_row.fps


def test_camera_outages_become_gap_rows(tiny_classifier_path: Path) -> None:
    # A camera that delivers 6 frames, then is gone for 0.8 s before each reconnect.
    source = webcam(fps=60.0, max_frames=6)(backoff_initial_s=0.8, backoff_max_s=0.8)
    config = make_config(tiny_classifier_path, sources=("webcam",), window_s=0.25, duration_s=3.0)
    summaries = list(Pipeline(config, sources=[source]).run())
    statuses = [s.status for s in summaries]
    assert WindowStatus.GAP in statuses, statuses
    first_gap = statuses.index(WindowStatus.GAP)
    assert any(s.frames > 0 for s in summaries[first_gap:]), "rows stopped after the first gap"
    for summary in summaries:
        assert_valid(summary, faces=None)
    # Windows tile the run without holes or overlaps.
    for a, b in zip(summaries, summaries[1:], strict=False):
        assert a.window_end_utc == b.window_start_utc


def test_a_failing_source_does_not_stop_the_others(tiny_classifier_path: Path) -> None:
    camera = webcam(fps=60.0, max_frames=6)(max_retries=0)  # unplugged after 6 frames, no retry
    demo = open_source(SourceConfig("demo", max_fps=24.0))  # 1.5 s
    pipeline = Pipeline(make_config(tiny_classifier_path, window_s=0.5), sources=[demo, camera])
    summaries = list(pipeline.run())
    assert pipeline.source_states == {"demo": "ended", "camera:0": "failed"}
    camera_rows = [i for i, s in enumerate(summaries) if s.source == "camera:0"]
    demo_rows = [i for i, s in enumerate(summaries) if s.source == "demo"]
    assert camera_rows and camera_rows[-1] < demo_rows[-1]  # the demo went on after the failure
    assert summaries[camera_rows[-1]].frames > 0  # the camera's final (partial) window
    assert sum(summaries[i].frames for i in demo_rows) == CLIP_FRAMES


# ----------------------------------------------------------------------------- stopping


def test_stop_from_another_thread_writes_a_partial_window(tiny_classifier_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    config = make_config(tiny_classifier_path, sources=(SourceConfig("demo", max_fps=12.0),), window_s=0.5,
                         output=OutputConfig(csv_path=out))
    pipeline = Pipeline(config)
    summaries = []
    for summary in pipeline.run():
        summaries.append(summary)
        if len(summaries) == 1:
            stopper = threading.Thread(target=pipeline.stop)
            stopper.start()
            stopper.join()
    assert pipeline.stopping and pipeline.source_states == {"demo": "stopped"}
    assert summaries[-1].status == WindowStatus.PARTIAL and len(summaries) < 6
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == [s.status for s in summaries]


def test_leaving_the_iterator_early_still_closes_the_window(tiny_classifier_path: Path,
                                                            tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    config = make_config(tiny_classifier_path, window_s=0.5, output=OutputConfig(jsonl_path=out))
    for _ in Pipeline(config).run():
        break
    lines = out.read_text().splitlines()
    assert len(lines) == 2 and '"status": "partial"' in lines[-1]


# ----------------------------------------------------------------------------- outputs and privacy


def test_min_group_withholds_shares_in_rows_and_live_view(tiny_classifier_path: Path) -> None:
    sink = Recorder()
    summaries = run(make_config(tiny_classifier_path, window_s=1.0, min_group=4), sinks=[sink])
    for summary in summaries:
        assert summary.status == WindowStatus.SUPPRESSED and summary.faces_mean == pytest.approx(3, abs=0.35)
        assert all(v is None for v in summary.shares.values())
        assert summary.dominant_label is None and summary.engagement_index is None
    seen = [s for s in sink.states if s.faces]
    assert seen and all(s.shares is None and s.engagement_index is None for s in seen)


def test_live_view_shows_shares_from_min_group_on(tiny_classifier_path: Path) -> None:
    sink = Recorder()
    run(make_config(tiny_classifier_path, window_s=1.0, min_group=2), sinks=[sink])
    states = [s for s in sink.states if s.faces == 3]
    assert states and all(s.shares is not None and sum(s.shares.values()) == pytest.approx(1) for s in states)
    assert all(s.provider == "CPUExecutionProvider" for s in states)


def test_per_track_rows_are_anonymous(tiny_classifier_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "lesson.csv"
    run(make_config(tiny_classifier_path, window_s=1.0, output=OutputConfig(csv_path=out, per_track=True)))
    with open(tmp_path / "lesson.tracks.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["track"] for r in rows} == {"t1", "t2", "t3"}
    assert list(rows[0]) == ["window_start", "window_end", "source", "track", "frames_seen", "share_angry",
                             "share_neutral", "share_engaged", "share_bored", "dominant_label", "attention_share"]


FACE = (196, 72, 259, 135)  # the detector's box of the middle person's face in frame 10 of the clip
INNER = (slice(FACE[1] + 8, FACE[3] - 8), slice(FACE[0] + 8, FACE[2] - 8))  # clear of the drawn box


def detail(image: np.ndarray) -> float:
    """High-frequency energy: variance of the Laplacian of the grey image."""
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


@pytest.mark.parametrize(("blur", "low", "high"), [(True, 0.0, 0.25), (False, 0.4, 2.0)])
def test_annotated_video_blurs_faces_by_default(
    tiny_classifier_path: Path, tmp_path: Path, demo_frames: list[np.ndarray], blur: bool, low: float,
    high: float,
) -> None:
    video = tmp_path / "review.mp4"
    kwargs = {} if blur else {"blur": False}
    run(make_config(tiny_classifier_path, window_s=1.0, output=OutputConfig(annotate_path=video, **kwargs)))
    capture = cv2.VideoCapture(str(video))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(12.0, abs=0.1)
    frames = []
    while (item := capture.read())[0]:
        frames.append(item[1])
    capture.release()
    assert len(frames) == CLIP_FRAMES
    ratio = detail(frames[10][INNER]) / detail(demo_frames[10][INNER])
    assert low <= ratio <= high, ratio


def test_a_run_that_cannot_start_leaves_outputs_alone(tiny_classifier_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "kept.csv"
    out.write_text("precious\n")
    config = make_config(tiny_classifier_path, sources=(str(tmp_path / "missing.mp4"),),
                         output=OutputConfig(csv_path=out))
    with pytest.raises(SourceError, match="no such file"):
        Pipeline(config)
    assert out.read_text() == "precious\n"


@pytest.mark.parametrize(
    ("output", "match"),
    [
        (lambda p: OutputConfig(csv_path=p / "no" / "out.csv"), "folder .* does not exist"),
        (lambda p: OutputConfig(jsonl_path=p), "is a folder"),
        (lambda p: OutputConfig(annotate_path=p / "no" / "v.mp4"), "does not exist"),
    ],
)
def test_unwritable_outputs_fail_before_the_run(
    tiny_classifier_path: Path, tmp_path: Path, output: Callable[[Path], OutputConfig], match: str
) -> None:
    with pytest.raises(OutputError, match=match):
        Pipeline(make_config(tiny_classifier_path, output=output(tmp_path)))


# ----------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window_s": 0}, "window_s=0 is not allowed"),
        ({"window_s": float("inf")}, "window_s"),
        ({"duration_s": -1}, "duration_s"),
        ({"min_group": -1}, "min_group"),
        ({"min_group": 1.5}, "min_group"),
        ({"low_confidence": 2}, "low_confidence"),
        ({"detect_every": 0}, r"detect_every=0 .* 1\.\.30 or 'auto'"),
        ({"detect_every": "sometimes"}, "detect_every"),
        ({"sources": ()}, "at least one source"),
        ({"sources": ("demo", "demo"), "output": {"annotate_path": "a.mp4"}}, "exactly one source"),
        ({"output": {"annotate_path": "a.gif"}}, r"\.mp4"),
        ({"output": {"csv_path": "a.csv", "jsonl_path": "a.csv"}}, "own file"),
        ({"output": {"csv_path": " "}}, "csv_path"),
    ],
)
def test_run_config_rejects_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        output = OutputConfig(**kwargs.pop("output", {}))
        RunConfig(**{"sources": ("demo",), "output": output, **kwargs})


def test_run_config_accepts_specs_and_text() -> None:
    config = RunConfig(sources="demo", detect_every="3")
    assert config.sources == (SourceConfig("demo"),) and config.detect_every == 3


# ----------------------------------------------------------------------------- bad frames


class FailingClassifier(FaceClassifier):
    """The tiny classifier, failing on the frames it is told to with the error it is given."""

    def __init__(self, model: Path, error: Exception, frames: Callable[[int], bool]) -> None:
        super().__init__(ClassifierConfig(model_path=model))
        self.error, self.frames, self.calls = error, frames, 0

    def classify(self, image_bgr: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.frames(self.calls):
            raise self.error
        return super().classify(image_bgr, boxes)


def test_a_bad_frame_is_counted_and_skipped(tiny_classifier_path: Path) -> None:
    classifier = FailingClassifier(tiny_classifier_path, FrameError("not an image"), lambda n: n in (5, 6))
    pipeline = Pipeline(make_config(tiny_classifier_path, detect_every=1), classifier=classifier)
    rows = list(pipeline.run())
    assert pipeline.stats.bad_frames == 2 and pipeline.stats.frames == CLIP_FRAMES - 2
    assert sum(r.frames for r in rows) == CLIP_FRAMES - 2


def test_a_programming_error_surfaces_at_once(tiny_classifier_path: Path) -> None:
    classifier = FailingClassifier(tiny_classifier_path, KeyError("bug"), lambda n: n >= 3)
    pipeline = Pipeline(make_config(tiny_classifier_path, detect_every=1), classifier=classifier)
    with pytest.raises(KeyError, match="bug"):
        list(pipeline.run())
    assert pipeline.stats.bad_frames == 0 and classifier.calls == 3


def test_too_many_bad_frames_in_a_row_is_one_clear_error(tiny_classifier_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline_module, "MAX_BAD_FRAMES_IN_A_ROW", 5)  # the clip has fewer frames than 50
    classifier = FailingClassifier(tiny_classifier_path, FrameError("not an image"), lambda n: n > 2)
    pipeline = Pipeline(make_config(tiny_classifier_path, detect_every=1), classifier=classifier)
    with pytest.raises(SourceError, match=r"demo: 6 frames in a row could not be processed; last: FrameError"):
        list(pipeline.run())
    assert pipeline.stats.frames == 2 and pipeline.stats.bad_frames == 6


# ---------------------------------------------------------------- signals


def test_rows_carry_the_attention_share(tiny_classifier_path: Path, tmp_path: Path) -> None:
    """Real MediaPipe keypoints on the bundled clip: every window reports the facing-front fraction, the
    CSV appends it after the existing columns, and per-track rows carry it too."""
    out = tmp_path / "lesson.csv"
    rows = run(make_config(tiny_classifier_path, window_s=1.0, detect_every=3,
                           output=OutputConfig(csv_path=out, per_track=True)))  # fmt: skip
    assert rows and all(r.attention_share is not None and 0 <= r.attention_share <= 1 for r in rows)
    with open(out, newline="") as f:
        header = next(csv.reader(f))
    assert header[-2:] == ["dropped_frames", "attention_share"]
    with open(tmp_path / "lesson.tracks.csv", newline="") as f:
        tracks = list(csv.DictReader(f))
    assert tracks and all(0 <= float(t["attention_share"]) <= 1 for t in tracks)


def test_attention_only_loads_no_classifier_and_still_writes_rows(tmp_path: Path) -> None:
    """``signals="attention"``: the classifier's model path does not even exist, yet the run opens and
    writes rows with faces, tracks and the attention share, and no class shares at all."""
    out = tmp_path / "lesson.jsonl"
    config = make_config(tmp_path / "no-such-model.onnx", window_s=1.0, signals="attention",
                         output=OutputConfig(jsonl_path=out))  # fmt: skip
    with Pipeline(config) as pipe:
        assert pipe.labels == () and pipe.provider == ""
        assert "no expression classifier; signals attention" in pipe.describe()
        rows = list(pipe.run())
    assert rows and all(r.shares == {} and r.engagement_index is None and r.dominant_label is None for r in rows)
    assert all(r.faces_mean == pytest.approx(3, abs=0.35) and r.attention_share is not None for r in rows)
    first = json.loads(out.read_text().splitlines()[0])
    assert not [k for k in first if k.startswith("share_")] and "attention_share" in first


def test_expressions_only_leaves_the_attention_share_empty(tiny_classifier_path: Path) -> None:
    rows = run(make_config(tiny_classifier_path, window_s=1.0, signals="expressions"))
    assert rows and all(r.attention_share is None and r.dominant_label is not None for r in rows)


@pytest.mark.parametrize("signals", ["", "attention,mood", ()])
def test_unknown_or_no_signals_are_refused(tiny_classifier_path: Path, signals: object) -> None:
    with pytest.raises(ConfigError, match=r"signals=.* is not allowed; .*'expressions', 'attention'"):
        make_config(tiny_classifier_path, signals=signals)
