"""Tracker: association, anonymous ids, time-based smoothing, expiry, carry between detections."""

from __future__ import annotations

import numpy as np
import pytest

from edumood_live.errors import ConfigError
from edumood_live.tracker import Tracker, TrackerConfig, greedy_match, iou_matrix
from edumood_live.types import Detections, TrackedFaces

K = 4
ENGAGED = np.array([[0.0, 0.1, 0.8, 0.1]], np.float32)
BORED = np.array([[0.0, 0.1, 0.1, 0.8]], np.float32)


def dets(*boxes: tuple[float, float, float, float]) -> Detections:
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.ones(len(boxes), np.float32))


def uniform(n: int) -> np.ndarray:
    return np.full((n, K), 1.0 / K, np.float32)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"iou_threshold": 0.0}, "iou_threshold"),
        ({"iou_threshold": 1.5}, "iou_threshold"),
        ({"max_age_ms": 0}, "max_age_ms"),
        ({"max_age_ms": float("inf")}, "max_age_ms"),
        ({"smoothing_half_life_ms": -1}, "smoothing_half_life_ms"),
        ({"min_hits": 0}, "min_hits"),
        ({"min_hits": 1.5}, "min_hits"),
        ({"min_hits": True}, "min_hits"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TrackerConfig(**kwargs)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),
        ((0, 0, 10, 10), (5, 0, 15, 10), 50 / 150),
        ((0, 0, 10, 10), (20, 20, 30, 30), 0.0),
        ((0, 0, 0, 0), (0, 0, 0, 0), 0.0),  # degenerate boxes: no division by zero
    ],
)
def test_iou_matrix(a: tuple, b: tuple, expected: float) -> None:
    assert iou_matrix(np.array([a]), np.array([b]))[0, 0] == pytest.approx(expected)


def test_greedy_match_takes_best_pairs_first() -> None:
    iou = np.array([[0.9, 0.8], [0.85, 0.1]])
    assert sorted(greedy_match(iou, 0.3)) == [(0, 0)]  # row 1's only good column is taken
    assert sorted(greedy_match(np.array([[0.9, 0.8], [0.85, 0.4]]), 0.3)) == [(0, 0), (1, 1)]
    assert greedy_match(np.zeros((0, 3)), 0.3) == []


def test_ids_follow_moving_faces_and_new_faces_get_new_ids() -> None:
    tracker = Tracker()
    first = tracker.update(dets((0, 0, 40, 40), (100, 0, 140, 40)), uniform(2), 0)
    assert first.track_ids.tolist() == [1, 2]
    assert first.detected.all()
    moved = tracker.update(dets((104, 2, 144, 42), (3, 0, 43, 40), (300, 0, 340, 40)), uniform(3), 40)
    assert moved.track_ids.tolist() == [2, 1, 3]  # output follows detection order
    np.testing.assert_allclose(moved.boxes[0], [104, 2, 144, 42])
    assert moved.probs.dtype == np.float32 and moved.track_ids.dtype == np.int64


def test_empty_frame_gives_empty_faces() -> None:
    faces = Tracker().update(Detections.empty(), np.zeros((0, K), np.float32), 0)
    assert len(faces) == 0 and faces.boxes.shape == (0, 4)


@pytest.mark.parametrize(
    ("dt_ms", "half_life_ms", "new_weight"),
    [
        (500, 500, 0.5),
        (1000, 500, 0.75),
        (250, 500, 1 - 0.5**0.5),
        (40, 0, 1.0),  # half-life 0: no smoothing
    ],
)
def test_smoothing_is_time_based(dt_ms: float, half_life_ms: float, new_weight: float) -> None:
    tracker = Tracker(TrackerConfig(smoothing_half_life_ms=half_life_ms))
    tracker.update(dets((0, 0, 40, 40)), ENGAGED, 0)
    faces = tracker.update(dets((0, 0, 40, 40)), BORED, dt_ms)
    expected = (1 - new_weight) * ENGAGED[0] + new_weight * BORED[0]
    np.testing.assert_allclose(faces.probs[0], expected, atol=1e-6)
    assert faces.probs[0].sum() == pytest.approx(1.0)


def test_smoothing_stops_label_flicker() -> None:
    tracker = Tracker(TrackerConfig(smoothing_half_life_ms=500))
    labels = []
    for i in range(30):  # 25 fps, a mostly engaged face with single-frame "bored" blips
        probs = BORED if i % 3 == 2 else ENGAGED
        labels.append(int(tracker.update(dets((0, 0, 40, 40)), probs, i * 40).probs[0].argmax()))
    assert set(labels) == {2}


def test_unmatched_tracks_coast_then_expire_and_ids_are_never_reused() -> None:
    tracker = Tracker(TrackerConfig(max_age_ms=300))
    tracker.update(dets((0, 0, 40, 40)), uniform(1), 0)
    assert len(tracker.update(Detections.empty(), uniform(0), 200)) == 0  # unseen, but kept
    assert tracker.update(dets((0, 0, 40, 40)), uniform(1), 250).track_ids.tolist() == [1]
    tracker.update(Detections.empty(), uniform(0), 600)  # 350 ms unseen > 300: expired
    assert len(tracker) == 0
    assert tracker.update(dets((0, 0, 40, 40)), uniform(1), 650).track_ids.tolist() == [2]


def test_a_still_face_survives_a_noisy_velocity_while_unseen() -> None:
    tracker = Tracker(TrackerConfig(max_age_ms=1000))
    tracker.update(dets((100, 100, 140, 140)), uniform(1), 0)
    tracker.update(dets((104, 100, 144, 140)), uniform(1), 33)  # 4 px jitter: "0.12 px/ms"
    tracker.update(Detections.empty(), uniform(0), 500)  # missed for a while; prediction drifts 60 px
    assert tracker.update(dets((101, 100, 141, 140)), uniform(1), 600).track_ids.tolist() == [1]


def test_min_hits_holds_back_new_tracks() -> None:
    tracker = Tracker(TrackerConfig(min_hits=2))
    assert len(tracker.update(dets((0, 0, 40, 40)), uniform(1), 0)) == 0
    assert tracker.update(dets((1, 0, 41, 40)), uniform(1), 40).track_ids.tolist() == [1]


def test_carry_predicts_boxes_at_constant_velocity_and_smooths_probs() -> None:
    tracker = Tracker(TrackerConfig(smoothing_half_life_ms=100))
    tracker.update(dets((0, 0, 40, 40)), ENGAGED, 0)
    tracker.update(dets((10, 0, 50, 40)), ENGAGED, 100)  # 0.1 px/ms to the right
    np.testing.assert_allclose(tracker.active_boxes(), [[10, 0, 50, 40]])
    np.testing.assert_allclose(tracker.active_boxes(200), [[20, 0, 60, 40]])
    carried = tracker.carry(BORED, 200)
    assert carried.track_ids.tolist() == [1]
    assert not carried.detected.any()
    np.testing.assert_allclose(carried.boxes, [[20, 0, 60, 40]])
    np.testing.assert_allclose(carried.probs[0], 0.5 * ENGAGED[0] + 0.5 * BORED[0], atol=1e-6)
    # the next detection is matched against the predicted box: same id despite the movement
    assert tracker.update(dets((30, 0, 70, 40)), ENGAGED, 300).track_ids.tolist() == [1]


def test_carry_does_not_extend_a_track_life() -> None:
    tracker = Tracker(TrackerConfig(max_age_ms=100))
    tracker.update(dets((0, 0, 40, 40)), uniform(1), 0)
    tracker.carry(uniform(1), 80)
    tracker.update(Detections.empty(), uniform(0), 150)
    assert len(tracker) == 0
    assert tracker.active_boxes().shape == (0, 4)
    assert len(tracker.carry(uniform(0), 160)) == 0


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda t: t.update(dets((0, 0, 1, 1)), uniform(2), 0), r"shape \(1, K\)"),
        (lambda t: t.carry(uniform(3), 0), r"shape \(1, K\)"),
        (lambda t: t.update(dets((0, 0, 40, 40)), np.ones((1, 3)) / 3, 40), "3 classes"),
    ],
)
def test_probs_must_match_the_faces(call, match: str) -> None:
    tracker = Tracker()
    tracker.update(dets((0, 0, 40, 40)), uniform(1), 0)
    with pytest.raises(ValueError, match=match):
        call(tracker)


def test_tracked_faces_reject_a_detected_array_of_another_length() -> None:
    boxes, probs = np.zeros((2, 4), np.float32), np.full((2, 4), 0.25, np.float32)
    assert TrackedFaces(np.array([1, 2]), boxes, probs).detected.tolist() == [True, True]  # None: all detected
    with pytest.raises(ValueError, match="detected has 1 entries for 2 faces"):
        TrackedFaces(np.array([1, 2]), boxes, probs, detected=np.array([True]))


# ---------------------------------------------------------------- keypoints and facing


def test_carried_keypoints_follow_the_box(demo_frames: list[np.ndarray]) -> None:
    """Real MediaPipe keypoints: between detections a track's keypoints move and scale with its predicted
    box, keeping their place in it, and the facing score is the track's (no new measurement)."""
    from edumood_live.detector import DetectorConfig, FaceDetector
    from edumood_live.tracker import relative_keypoints

    with FaceDetector(DetectorConfig(tiles="1x1")) as detector:
        first, second = detector.detect(demo_frames[0]), detector.detect(demo_frames[6])
    tracker = Tracker(TrackerConfig(min_hits=1))
    tracker.update(first, uniform(len(first)), 0.0)
    # A moving copy of the second detection: shifted 30 px right, 20 % bigger, so the velocity is large.
    moved = second.boxes.copy()
    centre = (moved[:, :2] + moved[:, 2:]) / 2
    moved = np.concatenate([centre - (centre - moved[:, :2]) * 1.2, centre + (moved[:, 2:] - centre) * 1.2], 1)
    moved[:, [0, 2]] += 30
    relative = relative_keypoints(second.keypoints, second.boxes)
    scaled = moved[:, None, :2] + relative * (moved[:, 2:] - moved[:, :2])[:, None, :]
    detected = tracker.update(Detections(moved, second.scores, scaled), uniform(len(second)), 500.0)
    carried = tracker.carry(uniform(len(detected)), 750.0)
    assert len(carried) == len(detected) == 3
    assert not np.allclose(carried.boxes, detected.boxes, atol=5)  # the carried boxes did move
    np.testing.assert_allclose(relative_keypoints(carried.keypoints, carried.boxes),
                               relative_keypoints(detected.keypoints, detected.boxes), atol=1e-4)  # fmt: skip
    np.testing.assert_array_equal(carried.facing, detected.facing)
    assert np.isfinite(carried.facing).all()


def test_facing_is_smoothed_along_the_track_and_unknown_without_keypoints() -> None:
    from edumood_live.attention import HEAD_MODEL

    frontal = (HEAD_MODEL[:, :2] + [100, 100])[None].astype(np.float32)
    turned = HEAD_MODEL @ np.array([[0.0, 0, -1], [0, 1, 0], [1, 0, 0]]).T  # 90 degrees to the right
    away = (turned[:, :2] + [100, 100])[None].astype(np.float32)
    box = np.float32([[0, 0, 200, 200]])
    tracker = Tracker(TrackerConfig(min_hits=1, smoothing_half_life_ms=1000))
    assert np.isnan(tracker.update(dets((0, 0, 200, 200)), uniform(1), 0.0).facing).all()  # no keypoints
    assert tracker.update(Detections(box, np.ones(1), frontal), uniform(1), 100.0).facing[0] > 0.99
    half = tracker.update(Detections(box, np.ones(1), away), uniform(1), 1100.0).facing[0]
    assert half == pytest.approx(0.5, abs=0.01)  # one half-life later: half way to 0
