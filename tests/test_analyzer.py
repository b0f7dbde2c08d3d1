"""FaceAnalyzer and ``edumood-live analyze``: faces of single images and frames, on real photos and the
bundled clip; the same probabilities as the live pipeline for the same frame and box."""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from cli_helpers import model_labels, read_csv

from benchmarks.mosaic import AnnotatedImage, count_matched
from edumood_live import AnalyzerConfig, FaceAnalyzer, Faces, RunConfig
from edumood_live.analyzer import read_image
from edumood_live.attention import NUM_KEYPOINTS
from edumood_live.classifier import FaceClassifier
from edumood_live.cli import main
from edumood_live.cli_analyze import columns
from edumood_live.config import ClassifierConfig, DetectorConfig
from edumood_live.errors import ConfigError, FrameError, ModelError
from edumood_live.pipeline import Pipeline


@pytest.fixture(scope="module")
def analyzer(classifier_path: Path) -> Iterator[FaceAnalyzer]:
    with FaceAnalyzer(AnalyzerConfig(classifier=ClassifierConfig(model_path=classifier_path))) as instance:
        yield instance


def check_faces(faces: Faces, labels: tuple[str, ...]) -> None:
    """Shapes, dtypes and ranges of a `Faces` container."""
    n = len(faces)
    assert faces.labels == labels
    assert faces.boxes.shape == (n, 4) and faces.boxes.dtype == np.float32
    assert faces.keypoints.shape == (n, NUM_KEYPOINTS, 2)
    assert faces.probs.shape == (n, len(labels))
    np.testing.assert_allclose(faces.probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.all((faces.scores > 0) & (faces.scores <= 1))
    assert np.all((faces.facing_score >= 0) & (faces.facing_score <= 1))


# ----------------------------------------------------------------------------- real media


def test_photos_give_the_annotated_faces(analyzer: FaceAnalyzer, dlib_faces: list[AnnotatedImage]) -> None:
    results = analyzer.analyze_batch([p.image for p in dlib_faces])
    found = sum(count_matched(p.boxes, faces.boxes, 0.3) for p, faces in zip(dlib_faces, results, strict=True))
    assert found >= 41  # the detector's own figure at auto tiling (test_detector: >= 42 of 43 at 2x2)
    for faces in results:
        check_faces(faces, analyzer.labels)
        nose = faces.keypoints[:, 2]  # the nose tip lies inside its face's box
        inside = (nose >= faces.boxes[:, :2]) & (nose <= faces.boxes[:, 2:])
        assert inside.all()


def test_batch_is_one_classifier_call_with_the_single_image_results(
    analyzer: FaceAnalyzer, demo_frames: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    frames = demo_frames[::12]
    singles = [analyzer.analyze(frame) for frame in frames]
    calls: list[int] = []
    classifier = analyzer.classifier
    assert classifier is not None
    original = classifier.classify_batch

    def counted(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return original(batch)

    monkeypatch.setattr(classifier, "classify_batch", counted)
    batch = analyzer.analyze_batch(frames)
    assert calls == [sum(len(f) for f in singles)] and calls[0] == 3 * len(frames)
    for one, many in zip(singles, batch, strict=True):
        np.testing.assert_array_equal(one.boxes, many.boxes)
        np.testing.assert_allclose(one.probs, many.probs, atol=1e-5)
        np.testing.assert_allclose(one.facing_score, many.facing_score, atol=1e-6)


class RecordingClassifier(FaceClassifier):
    """The pipeline's classifier, remembering each frame, its boxes and the probabilities it gave."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__(config)
        self.calls: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def classify(self, image_bgr: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        probs = super().classify(image_bgr, boxes)
        self.calls.append((image_bgr.copy(), np.array(boxes, np.float32), probs.copy()))
        return probs


def test_pipeline_and_analyze_agree_on_the_same_frame_and_box(analyzer: FaceAnalyzer) -> None:
    """The live pipeline (detector due on every frame) and `analyze` give the same boxes and probabilities."""
    config = RunConfig(sources=("demo",), detect_every=1, window_s=1.0, detector=analyzer.config.detector,
                       classifier=analyzer.config.classifier)  # fmt: skip
    recorder = RecordingClassifier(config.classifier)
    with Pipeline(config, classifier=recorder) as pipeline:
        for _ in pipeline.run():
            pass
    assert len(recorder.calls) >= 30  # every frame of the clip was detected and classified
    for image, boxes, probs in recorder.calls[::5]:
        faces = analyzer.analyze(image)
        np.testing.assert_array_equal(faces.boxes, boxes)
        np.testing.assert_allclose(faces.probs, probs, rtol=0, atol=1e-6)
        assert len(faces) == 3


@pytest.mark.parametrize("signals", ["attention", "expressions"])
def test_signals_leave_out_the_classifier_or_the_head_pose(
    signals: str, classifier_path: Path, tmp_path: Path, demo_frames: list[np.ndarray]
) -> None:
    (tmp_path / "bad.onnx").write_text("not a model")
    model = tmp_path / "bad.onnx" if signals == "attention" else classifier_path  # attention alone loads none
    config = AnalyzerConfig(classifier=ClassifierConfig(model_path=model), signals=signals)
    with FaceAnalyzer(config) as only:
        faces = only.analyze(demo_frames[0])
    assert len(faces) == 3
    if signals == "attention":
        assert only.labels == () and faces.probs.shape == (3, 0) and faces.top_labels == ()
        assert np.isfinite(faces.facing_score).all() and faces[0].label is None and faces[0].probs == {}
    else:
        assert len(only.labels) >= 2 and np.isnan(faces.facing_score).all() and faces[0].facing is None


# ----------------------------------------------------------------------------- the container


def sample_faces() -> Faces:
    keypoints = np.zeros((3, NUM_KEYPOINTS, 2))
    keypoints[2] = np.nan
    return Faces(
        boxes=np.array([[0, 0, 10, 10], [20, 0, 30, 12], [5, 5, 9, 9]]),
        scores=np.array([0.9, 0.8, 0.6]),
        keypoints=keypoints,
        probs=np.array([[0.7, 0.3], [0.2, 0.8], [0.5, 0.5]]),
        labels=("Calm", "Busy"),
        yaw_deg=np.array([0.0, 40.0, np.nan]),
        pitch_deg=np.array([0.0, 0.0, np.nan]),
        facing_score=np.array([0.99, 0.1, np.nan]),
    )


def test_a_face_is_a_record_and_a_selection_is_a_container() -> None:
    faces = sample_faces()
    assert len(faces) == 3 and faces.top_labels == ("Calm", "Busy", "Calm")
    first, second, third = faces
    assert first.index == 0 and first.box == (0.0, 0.0, 10.0, 10.0) and first.label == "Calm"
    assert first.probs == pytest.approx({"Calm": 0.7, "Busy": 0.3}) and first.facing is True
    assert second.facing is False and third.facing is None and math.isnan(third.yaw_deg)
    assert faces[-1].index == 2
    picked = faces[faces.scores > 0.7]
    assert isinstance(picked, Faces) and len(picked) == 2 and picked.labels == faces.labels
    assert len(faces[[0, 2]]) == 2 and len(faces[1:]) == 2
    with pytest.raises(IndexError):
        faces[3]
    empty = Faces.empty(("Calm", "Busy"))
    assert len(empty) == 0 and list(empty) == [] and empty.probs.shape == (0, 2)


def test_container_rejects_arrays_of_other_lengths() -> None:
    faces = sample_faces()
    with pytest.raises(ValueError, match=r"probs must have shape \(3, 2\) for 3 faces, got \(2, 2\)"):
        Faces(faces.boxes, faces.scores, faces.keypoints, faces.probs[:2], faces.labels, faces.yaw_deg,
              faces.pitch_deg, faces.facing_score)  # fmt: skip


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((32, 32), np.uint8), r"image 0: expected a BGR uint8 \(H, W, 3\) array, got uint8 \(32, 32\)"),
        (np.zeros((32, 32, 3), np.float32), r"got float32 \(32, 32, 3\)"),
        ("photo.jpg", r"got str"),
    ],
)
def test_images_that_are_not_bgr_arrays_are_frame_errors(analyzer: FaceAnalyzer, image: object, match: str) -> None:
    with pytest.raises(FrameError, match=match):
        analyzer.analyze(image)  # type: ignore[arg-type]


def test_blank_image_has_no_faces(analyzer: FaceAnalyzer) -> None:
    faces = analyzer.analyze(np.full((240, 320, 3), 127, np.uint8))
    assert len(faces) == 0 and faces.probs.shape == (0, len(analyzer.labels))


def test_bad_settings_and_models_fail_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"detector=3 is not allowed; use a DetectorConfig"):
        AnalyzerConfig(detector=3)  # type: ignore[arg-type]
    (tmp_path / "bad.onnx").write_text("not a model")
    with pytest.raises(ModelError, match=r"bad\.onnx is not a valid ONNX model"):
        FaceAnalyzer(AnalyzerConfig(classifier=ClassifierConfig(model_path=tmp_path / "bad.onnx")))
    with pytest.raises(ModelError, match=r"cannot read face detector model"):
        FaceAnalyzer(AnalyzerConfig(detector=DetectorConfig(model_path=tmp_path / "missing.tflite")))


def test_read_image_names_a_file_it_cannot_decode(tmp_path: Path) -> None:
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(FrameError, match=r"broken\.jpg: not an image that can be decoded"):
        read_image(tmp_path / "broken.jpg")
    cv2.imwrite(str(tmp_path / "grey.png"), np.zeros((8, 8), np.uint8))
    assert read_image(tmp_path / "grey.png").shape == (8, 8, 3)


# ----------------------------------------------------------------------------- the command


def run_cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, list[str]]:
    try:
        status = main(["analyze", *(str(a) for a in args)])
    except SystemExit as exc:  # argparse usage errors
        status = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return status, captured.out, captured.err.splitlines()


@pytest.fixture
def photo_folder(tmp_path: Path, dlib_faces: list[AnnotatedImage], demo_frames: list[np.ndarray]) -> Path:
    """Three real photos, the clip's first frame, a damaged JPEG and a text file."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in dlib_faces[:3]:
        cv2.imwrite(str(folder / f"{photo.name}.png"), photo.image)
    cv2.imwrite(str(folder / "clip_frame.png"), demo_frames[0])
    (folder / "damaged.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    (folder / "notes.txt").write_text("not an image\n")
    return folder


def test_folder_rows_survive_a_damaged_image(
    capsys: pytest.CaptureFixture[str], photo_folder: Path, analyzer: FaceAnalyzer, demo_frames: list[np.ndarray],
) -> None:
    out_csv, out_jsonl = photo_folder.parent / "faces.csv", photo_folder.parent / "faces.jsonl"
    status, stdout, stderr = run_cli(capsys, photo_folder, "--csv", out_csv, "--jsonl", out_jsonl)
    assert status == 1  # one input could not be read; the others' rows are written
    assert [line for line in stderr if "ERROR" in line or "error" in line] == [
        line for line in stderr if "damaged.jpg: not an image that can be decoded" in line
    ]
    header, rows = read_csv(out_csv)
    assert analyzer.classifier is not None
    labels = model_labels(analyzer.classifier.model_path)
    assert header == columns(labels)
    assert {Path(r["file"]).name for r in rows} >= {"clip_frame.png"} and len({r["file"] for r in rows}) == 4
    assert len(stdout.splitlines()) == len(rows) == len(out_jsonl.read_text().splitlines())
    records = [json.loads(line) for line in out_jsonl.read_text().splitlines()]
    assert all(r["frame"] is None and r["label"] in labels for r in records)
    # the command gives what the Python API gives for the same image
    clip = [r for r in records if r["file"].endswith("clip_frame.png")]
    faces = analyzer.analyze(demo_frames[0])
    assert [r["face"] for r in clip] == list(range(len(faces))) == [0, 1, 2]
    for record, face in zip(clip, faces, strict=True):
        assert [record[k] for k in ("x0", "y0", "x1", "y1")] == pytest.approx(face.box, abs=0.05)
        assert [record[f"prob_{label.lower()}"] for label in labels] == pytest.approx(
            list(face.probs.values()), abs=1e-4
        )
        assert record["facing"] == face.facing


def test_video_frames_with_stride(capsys: pytest.CaptureFixture[str], classifier_path: Path) -> None:
    status, stdout, _ = run_cli(capsys, "demo", "--stride", "10", "--model", classifier_path, "--csv", "-")
    assert status == 0
    rows = list(csv.DictReader(stdout.splitlines()))
    assert sorted({int(r["frame"]) for r in rows}) == [0, 10, 20, 30]
    assert all(r["file"] == "demo" and float(r["time_s"]) >= 0 for r in rows) and len(rows) == 12


def test_attention_only_rows_have_no_label_values(capsys: pytest.CaptureFixture[str]) -> None:
    status, stdout, _ = run_cli(capsys, "demo", "--stride", "30", "--signals", "attention", "--csv", "-")
    assert status == 0
    header = stdout.splitlines()[0].split(",")
    assert header == columns(()) and not any(c.startswith("prob_") for c in header)
    rows = list(csv.DictReader(stdout.splitlines()))
    assert len(rows) == 6 and all(r["label"] == "" and r["facing"] in ("True", "False") for r in rows)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.jpg"], r"^error: missing\.jpg: no such file or folder$"),
        (["{empty}"], r"^error: .*: folder contains no image files \(-r looks in subfolders\)$"),
        (["{frame}", "--model", "{tmp}/bad.onnx"], r"^error: classifier model .*bad\.onnx is not a valid ONNX model"),
        (["{frame}", "--csv", "{tmp}/no/such/folder/out.csv"], r"^error: cannot open .*out\.csv: No such file"),
        (["{frame}", "--csv", "{frame}"], r"^error: output .*frame\.png is also an input"),
        (["{frame}", "--csv", "-", "--jsonl", "-"], r"^error: --csv and --jsonl cannot both be '-'"),
        (["{frame}", "--tiles", "0x3"], r"^error: --tiles '0x3' is not allowed"),
        (["{frame}", "--stride", "0"], r"^error: argument --stride: expected a number >= 1"),
        (["{frame}", "--signals", "mood"], r"^error: --signals 'mood' is not allowed; use one or more of"),
    ],
)
def test_bad_input_is_one_line_and_status_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, demo_frames: list[np.ndarray], args: list[str], message: str,
) -> None:
    cv2.imwrite(str(tmp_path / "frame.png"), demo_frames[0])
    (tmp_path / "bad.onnx").write_text("not a model")
    empty = tmp_path / "empty"
    empty.mkdir()
    filled = [a.format(tmp=tmp_path, empty=empty, frame=tmp_path / "frame.png") for a in args]
    status, _, stderr = run_cli(capsys, *filled)
    assert status == 2
    errors = [line for line in stderr if line.startswith("error:")]
    assert len(errors) == 1 and not any("Traceback" in line for line in stderr), stderr
    assert re.search(message, errors[0]), errors[0]
