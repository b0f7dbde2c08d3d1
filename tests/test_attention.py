"""Head orientation from BlazeFace keypoints: the geometry on exact projections, then real MediaPipe output."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from edumood_live.attention import HEAD_MODEL, PITCH_LIMIT_DEG, YAW_LIMIT_DEG, facing, facing_score
from edumood_live.detector import DetectorConfig, FaceDetector

HEAD_POSE_DIR = Path(__file__).resolve().parents[2] / "shared" / "media" / "videos"


def project(yaw_deg: float, pitch_deg: float, scale: float = 1.5, at: tuple[float, float] = (320, 200)) -> np.ndarray:
    """(6, 2) image points of the generic head turned by yaw (towards the image's right) and pitch (up),
    seen by a scaled orthographic camera."""
    yaw, pitch = np.radians(yaw_deg), np.radians(pitch_deg)
    # Head frame: x right, y down, z into the head; the face looks along -z. Turning towards the image's
    # right is a rotation about y taking -z to +x; looking up one about x taking -z to -y.
    turn = np.array([[np.cos(yaw), 0, -np.sin(yaw)], [0, 1, 0], [np.sin(yaw), 0, np.cos(yaw)]])
    tilt = np.array([[1, 0, 0], [0, np.cos(pitch), np.sin(pitch)], [0, -np.sin(pitch), np.cos(pitch)]])
    rotated = HEAD_MODEL @ (turn @ tilt).T
    return rotated[:, :2] * scale + np.asarray(at)


def box_of(points: np.ndarray) -> np.ndarray:
    return np.concatenate([points.min(axis=0), points.max(axis=0)])


@pytest.mark.parametrize(
    ("yaw", "pitch"), [(0, 0), (20, 0), (-20, 0), (45, -10), (-60, 15), (0, 20), (0, -30), (30, 30)]
)
def test_angles_of_an_exact_projection_are_recovered(yaw: float, pitch: float) -> None:
    points = project(yaw, pitch)
    got_yaw, got_pitch, score = facing(points[None], box_of(points)[None])
    assert got_yaw[0] == pytest.approx(yaw, abs=0.5)
    assert got_pitch[0] == pytest.approx(pitch, abs=0.5)
    assert (score[0] >= 0.5) == (abs(yaw) <= YAW_LIMIT_DEG and abs(pitch) <= PITCH_LIMIT_DEG)


def test_angles_ignore_where_the_face_is_and_how_big() -> None:
    a, b = project(25, -10, scale=0.4, at=(50, 40)), project(25, -10, scale=3.0, at=(900, 500))
    one = facing(np.stack([a, b]), np.stack([box_of(a), box_of(b)]))
    np.testing.assert_allclose(one[0][0], one[0][1], atol=1e-3)
    np.testing.assert_allclose(one[1][0], one[1][1], atol=1e-3)


@pytest.mark.parametrize(
    ("yaw", "pitch", "low", "high"),
    [(0, 0, 0.99, 1.0), (YAW_LIMIT_DEG, 0, 0.49, 0.51), (0, -PITCH_LIMIT_DEG, 0.49, 0.51), (60, 0, 0, 0.01)],
)
def test_score_is_one_inside_half_on_a_limit_and_zero_far_beyond(
    yaw: float, pitch: float, low: float, high: float
) -> None:
    assert low <= facing_score(np.float32([yaw]), np.float32([pitch]))[0] <= high


def test_missing_keypoints_are_unknown_not_turned_away() -> None:
    points = np.full((1, 6, 2), np.nan, np.float32)
    yaw, pitch, score = facing(points, np.float32([[0, 0, 10, 10]]))
    assert np.isnan(yaw[0]) and np.isnan(pitch[0]) and np.isnan(score[0])


def test_no_faces_and_mismatched_shapes() -> None:
    yaw, pitch, score = facing(np.zeros((0, 6, 2), np.float32), np.zeros((0, 4), np.float32))
    assert yaw.shape == pitch.shape == score.shape == (0,)
    with pytest.raises(ValueError, match=r"keypoints must have shape \(2, 6, 2\) for 2 boxes, got \(1, 6, 2\)"):
        facing(np.zeros((1, 6, 2)), np.zeros((2, 4)))


# ---------------------------------------------------------------- real MediaPipe keypoints


@pytest.fixture(scope="module")
def detector() -> Iterator[FaceDetector]:
    with FaceDetector(DetectorConfig(tiles="1x1")) as det:
        yield det


def head_pose_frames(name: str) -> list[np.ndarray]:
    path = HEAD_POSE_DIR / f"head-pose-face-detection-{name}.mp4"
    if not path.is_file():
        pytest.skip(f"{path} not available (../shared is absent)")
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def test_a_mirrored_face_turns_the_other_way(detector: FaceDetector) -> None:
    """The head-pose clip's woman turns from the image's left (about -45 degrees) to its right: mirrored,
    every yaw changes sign and keeps its size within ~10 degrees (the detector sees other pixels)."""
    yaws, mirrored = [], []
    for frame in head_pose_frames("female"):
        a, b = detector.detect(frame), detector.detect(np.ascontiguousarray(frame[:, ::-1]))
        if len(a) == 1 and len(b) == 1:
            yaws.append(facing(a.keypoints, a.boxes)[0][0])
            mirrored.append(facing(b.keypoints, b.boxes)[0][0])
    yaw, flip = np.array(yaws), np.array(mirrored)
    assert len(yaw) >= 15
    assert yaw.min() < -30 and yaw.max() > 20  # she does turn both ways
    turned = np.abs(yaw) > 10
    assert (np.sign(yaw[turned]) == -np.sign(flip[turned])).all()
    assert np.median(np.abs(yaw + flip)) < 10


def test_a_man_facing_the_camera_reads_frontal(detector: FaceDetector) -> None:
    """The head-pose clip's man looks into the camera throughout: every frame counts as facing."""
    scores = []
    for frame in head_pose_frames("male"):
        dets = detector.detect(frame)
        scores.extend(facing(dets.keypoints, dets.boxes)[2].tolist())
    assert len(scores) >= 50 and min(scores) >= 0.5


def test_the_sample_clips_faces_have_finite_angles(detector: FaceDetector, demo_frames: list[np.ndarray]) -> None:
    dets = detector.detect(demo_frames[0])
    yaw, pitch, score = facing(dets.keypoints, dets.boxes)
    assert len(yaw) == 3 and np.isfinite(yaw).all() and np.isfinite(pitch).all()
    assert ((score >= 0) & (score <= 1)).all()
