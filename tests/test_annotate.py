"""Annotated video: faces blurred by default (checked on a real face), boxes drawn, clear errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

import edumood_live
from edumood_live.errors import OutputError
from edumood_live.sinks.annotate import AnnotatedVideoWriter, blur_regions
from edumood_live.types import TrackedFaces

CLIP = Path(edumood_live.__file__).parent / "assets" / "sample_clip.mp4"
LABELS = ("Angry", "Neutral", "Engaged", "Bored")
FACE = (195, 55, 262, 145)  # the middle person's face in frame 10 of the clip
INNER = (slice(FACE[1] + 10, FACE[3] - 10), slice(FACE[0] + 10, FACE[2] - 10))  # clear of drawn lines


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    cap = cv2.VideoCapture(str(CLIP))
    try:
        for _ in range(11):
            ok, image = cap.read()
            assert ok, "cannot read the bundled sample clip"
    finally:
        cap.release()
    return image


def face_at(box: tuple[int, ...]) -> TrackedFaces:
    probs = np.array([[0.05, 0.1, 0.8, 0.05]], np.float32)
    return TrackedFaces(np.array([17]), np.array([box], np.float32), probs)


def detail(image: np.ndarray) -> float:
    """High-frequency energy: variance of the Laplacian of the grey image."""
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def write_and_read(path: Path, frame: np.ndarray, blur: bool) -> np.ndarray:
    with AnnotatedVideoWriter(path, LABELS, fps=12, frame_size=(frame.shape[1], frame.shape[0]),
                              blur=blur) as writer:
        for _ in range(3):
            writer.write(frame, face_at(FACE))
    cap = cv2.VideoCapture(str(path))
    ok, image = cap.read()
    cap.release()
    assert ok, f"cannot read back {path}"
    return image


def test_faces_are_blurred_by_default(tmp_path: Path, frame: np.ndarray) -> None:
    original = frame[INNER]
    blurred = write_and_read(tmp_path / "blur.mp4", frame, blur=True)[INNER]
    assert detail(blurred) < 0.1 * detail(original)
    assert np.abs(blurred.astype(int) - original.astype(int)).mean() > 5


def test_no_blur_keeps_the_face(tmp_path: Path, frame: np.ndarray) -> None:
    original = frame[INNER]
    kept = write_and_read(tmp_path / "plain.mp4", frame, blur=False)[INNER]
    assert detail(kept) > 0.4 * detail(original)  # mp4v compression smooths a little
    assert np.abs(kept.astype(int) - original.astype(int)).mean() < 6


def test_box_and_label_are_drawn_outside_the_face(tmp_path: Path, frame: np.ndarray) -> None:
    written = write_and_read(tmp_path / "a.mp4", frame, blur=True)
    outside = (slice(0, 40), slice(300, 480))  # far from the box and its label: unchanged
    assert np.abs(written[outside].astype(int) - frame[outside].astype(int)).mean() < 6
    label_band = (slice(FACE[1] - 14, FACE[1] - 3), slice(FACE[0], FACE[0] + 60))
    assert np.abs(written[label_band].astype(int) - frame[label_band].astype(int)).mean() > 20


@pytest.mark.parametrize(
    "box",
    [(-20, -20, 30, 30), (460, 250, 520, 300), (10, 10, 11, 11), (100, 100, 100, 100)],  # edges, tiny, empty
)
def test_blur_regions_handles_edge_and_tiny_boxes(box: tuple[int, ...]) -> None:
    image = np.random.default_rng(0).integers(0, 255, (270, 480, 3), dtype=np.uint8)
    blur_regions(image, np.array([box], np.float32))
    assert image.shape == (270, 480, 3)


def test_frame_size_comes_from_the_first_frame(tmp_path: Path, frame: np.ndarray) -> None:
    path = tmp_path / "lazy.mp4"
    with AnnotatedVideoWriter(path, LABELS, fps=12) as writer:
        writer.write(frame, face_at(FACE))
        writer.write(frame, TrackedFaces(np.zeros(0), np.zeros((0, 4)), np.zeros((0, 4))))
    cap = cv2.VideoCapture(str(path))
    assert int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == frame.shape[1]
    cap.release()


@pytest.mark.parametrize(
    ("make_path", "match"),
    [
        (lambda tmp: tmp / "missing" / "out.mp4", "does not exist"),
        (lambda tmp: tmp, "cannot write"),
    ],
)
def test_unwritable_path_fails_at_open(tmp_path: Path, make_path, match: str) -> None:
    with pytest.raises(OutputError, match=match):
        AnnotatedVideoWriter(make_path(tmp_path), LABELS, fps=12, frame_size=(480, 270))


def test_fps_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="fps"):
        AnnotatedVideoWriter(tmp_path / "a.mp4", LABELS, fps=0)


@pytest.mark.parametrize(("name", "fourccs"), [("review.webm", {"VP80"}), ("review.mp4", {"MP4V", "FMP4"})])
def test_the_codec_follows_the_file_name_and_the_video_plays_back(tmp_path: Path, frame: np.ndarray,
                                                                   name: str, fourccs: set[str]) -> None:
    """.webm is VP8 (browsers play it); .mp4 is MPEG-4 Part 2. Both decode back to the frame size."""
    image = write_and_read(tmp_path / name, frame, blur=True)
    cap = cv2.VideoCapture(str(tmp_path / name))
    got = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode("ascii", "replace")
    cap.release()
    assert image.shape == frame.shape and got.upper() in fourccs  # FFmpeg reads mp4v back as FMP4


def test_frames_of_another_size_are_letterboxed_not_stretched(tmp_path: Path, frame: np.ndarray) -> None:
    """A folder of photos of different sizes: a square photo in a wide video keeps its proportions."""
    path = tmp_path / "photos.mp4"
    square = np.full((200, 200, 3), 255, np.uint8)
    no_faces = TrackedFaces(np.zeros(0), np.zeros((0, 4)), np.zeros((0, 4)))
    with AnnotatedVideoWriter(path, LABELS, fps=2, frame_size=(400, 200), blur=False) as writer:
        for _ in range(3):
            writer.write(square, no_faces)
    cap = cv2.VideoCapture(str(path))
    ok, image = cap.read()
    cap.release()
    assert ok and image.shape == (200, 400, 3)
    assert image[:, :90].mean() < 20 and image[:, 310:].mean() < 20  # black bars left and right
    assert image[:, 110:290].mean() > 235  # the photo, unstretched, in the middle
