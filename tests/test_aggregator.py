"""Aggregator: windows, shares, engagement index, gaps, min-group suppression, partial, per-track."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from edumood_live.aggregator import Aggregator, AggregatorConfig, engagement_index
from edumood_live.errors import ConfigError
from edumood_live.types import TrackedFaces, WindowStatus

LABELS = ("Angry", "Neutral", "Engaged", "Bored")
START = datetime(2025, 3, 4, 9, 0, tzinfo=UTC)


def faces(labels: list[int], ids: list[int] | None = None, confidence: float = 0.7) -> TrackedFaces:
    """Faces whose smoothed top class is `labels[i]` with probability `confidence`."""
    n = len(labels)
    probs = np.full((n, len(LABELS)), (1 - confidence) / (len(LABELS) - 1), np.float32)
    probs[np.arange(n), labels] = confidence
    ids = ids if ids is not None else list(range(1, n + 1))
    return TrackedFaces(np.array(ids, np.int64), np.zeros((n, 4), np.float32), probs)


def make(**kwargs) -> Aggregator:
    config = {"labels": LABELS, "window_s": 10.0, "min_group": 2, "source": "room", "start_utc": START}
    return Aggregator(AggregatorConfig(**{**config, **kwargs}))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"labels": (), "attention": False}, r"labels=\(\) and attention=False: .*labels, attention or both"),
        ({"labels": ("A", "")}, "labels"),
        ({"labels": ("A", "a")}, "unique"),
        ({"window_s": 0}, "window_s"),
        ({"window_s": float("nan")}, "window_s"),
        ({"min_group": -1}, "min_group"),
        ({"min_group": 2.5}, "min_group"),
        ({"low_confidence": 1.5}, "low_confidence"),
        ({"source": ""}, "source"),
        ({"start_utc": datetime(2025, 1, 1)}, "timezone-aware"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict, match: str) -> None:
    config = {"labels": LABELS, "start_utc": START, **kwargs}
    with pytest.raises(ConfigError, match=match):
        AggregatorConfig(**config)


def test_config_defaults_start_to_now_in_utc() -> None:
    config = AggregatorConfig(labels=["Engaged", "Bored"])
    assert config.labels == ("Engaged", "Bored")
    assert config.start_utc is not None and config.start_utc.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("shares", "expected"),
    [
        ({"Angry": 0.0, "Neutral": 0.0, "Engaged": 1.0, "Bored": 0.0}, 1.0),
        ({"Angry": 0.0, "Neutral": 0.0, "Engaged": 0.0, "Bored": 1.0}, -1.0),
        ({"Angry": 0.2, "Neutral": 0.3, "Engaged": 0.3, "Bored": 0.2}, 0.1),
        ({"angry": 0.5, "neutral": 0.5, "engaged": 0.0, "bored": 0.0}, 0.0),
        ({"Happy": 0.5, "Sad": 0.5}, None),
        ({"Engaged": None, "Bored": None}, None),
    ],
)
def test_engagement_index(shares: dict, expected: float | None) -> None:
    assert engagement_index(shares) == (None if expected is None else pytest.approx(expected))


def test_full_window_statistics() -> None:
    agg = make()
    out = []
    # 10 frames at 1 fps in a 10 s window, 4 faces each: ids 1-4, then 1-3 and a new 5
    for i in range(10):
        ids = [1, 2, 3, 4] if i < 5 else [1, 2, 3, 5]
        low = 0.4 if i == 0 else 0.7  # the first frame's faces are all low-confidence
        out += agg.add(faces([2, 2, 3, 1], ids, confidence=low), i * 1000.0, dropped_frames_total=i)
    assert out == []
    (row,) = agg.add(faces([2, 2]), 10_000.0, dropped_frames_total=12)  # first frame of window 1
    assert row.status == WindowStatus.OK
    assert row.window_start_utc == "2025-03-04T09:00:00.000Z"
    assert row.window_end_utc == "2025-03-04T09:00:10.000Z"
    assert (row.frames, row.fps, row.faces_mean, row.tracks) == (10, 1.0, 4.0, 5)
    assert row.shares == pytest.approx({"Angry": 0.0, "Neutral": 0.25, "Engaged": 0.5, "Bored": 0.25})
    assert sum(row.shares.values()) == pytest.approx(1.0)
    assert row.engagement_index == pytest.approx(0.25)
    assert row.dominant_label == "Engaged"
    assert row.low_confidence_share == pytest.approx(0.1)
    assert row.dropped_frames == 9
    flat = row.to_row()
    assert flat["share_engaged"] == 0.5 and flat["source"] == "room"


def test_windows_are_anchored_on_the_first_timestamp() -> None:
    agg = make(window_s=2.0)
    agg.add(faces([2, 2]), 5_000.0, 0)  # source time starts at 5 s: window 0 is [5 s, 7 s)
    (row,) = agg.add(faces([2, 2]), 7_000.0, 0)
    assert row.window_start_utc == "2025-03-04T09:00:00.000Z"
    assert row.window_end_utc == "2025-03-04T09:00:02.000Z"


def test_missing_windows_become_gap_rows_never_interpolated() -> None:
    agg = make()
    agg.add(faces([2, 2]), 0.0, 0)
    rows = agg.add(faces([3, 3]), 35_000.0, 0)  # windows 1 and 2 saw no frame
    assert [r.status for r in rows] == [WindowStatus.OK, WindowStatus.GAP, WindowStatus.GAP]
    gap = rows[1]
    assert (gap.frames, gap.fps, gap.faces_mean, gap.tracks) == (0, 0.0, 0.0, 0)
    assert gap.shares == dict.fromkeys(LABELS)
    assert (gap.engagement_index, gap.dominant_label, gap.low_confidence_share) == (None, None, None)
    assert gap.window_start_utc == "2025-03-04T09:00:10.000Z"
    assert all(v is None for k, v in gap.to_row().items() if k.startswith("share_"))


def test_advance_closes_windows_while_no_frames_arrive() -> None:
    agg = make()
    assert agg.advance(500.0) == []  # anchors time; nothing has ended yet
    agg.add(faces([2, 2]), 1_000.0, 0)
    assert agg.advance(9_999.0) == []
    assert [r.status for r in agg.advance(30_000.0)] == ["ok", "gap"]  # windows start at 0.5 s
    assert agg.advance(30_000.0) == []  # idempotent
    assert [r.status for r in agg.advance(30_500.0)] == ["gap"]


def test_few_faces_are_suppressed_but_counts_kept() -> None:
    agg = make(min_group=3)
    for i in range(10):
        agg.add(faces([2, 3]), i * 1000.0, 0)
    (row,) = agg.advance(10_000.0)
    assert row.status == WindowStatus.SUPPRESSED
    assert (row.frames, row.faces_mean, row.tracks) == (10, 2.0, 2)
    assert row.shares == dict.fromkeys(LABELS)
    assert (row.engagement_index, row.dominant_label, row.low_confidence_share) == (None, None, None)


def test_frames_without_faces_have_no_shares() -> None:
    agg = make(min_group=0)
    agg.add(faces([]), 0.0, 0)
    (row,) = agg.advance(10_000.0)
    assert row.status == WindowStatus.OK and row.frames == 1 and row.faces_mean == 0.0
    assert row.shares == dict.fromkeys(LABELS) and row.engagement_index is None


@pytest.mark.parametrize(
    ("timestamps", "status", "end", "fps"),
    [
        ([0, 500, 1000, 1500, 2000, 2500], "partial", "09:00:03.000Z", 2.0),  # 6 frames over 3 s
        ([i * 1000 for i in range(10)], "ok", "09:00:10.000Z", 1.0),  # stopped right at the end
        ([i * 1000 / 12 for i in range(120)], "ok", "09:00:10.000Z", 12.0),  # float frame period
    ],
)
def test_finish_emits_the_last_window(timestamps: list[int], status: str, end: str, fps: float) -> None:
    agg = make()
    for t in timestamps:
        agg.add(faces([2, 2]), float(t), 0)
    (row,) = agg.finish()
    assert row.status == status
    assert row.window_end_utc == f"2025-03-04T{end}"
    assert row.fps == pytest.approx(fps)
    assert row.shares["Engaged"] == 1.0
    assert agg.finish() == []


@pytest.mark.parametrize("ended", [False, True])
def test_a_short_last_window_with_too_few_faces_says_why_its_shares_are_empty(ended: bool) -> None:
    agg = make(min_group=5)
    agg.add(faces([2]), 0.0, 0)
    agg.add(faces([2]), 500.0, 0)
    (row,) = agg.finish(ended=ended)
    assert row.status == WindowStatus.SUPPRESSED  # the reason for the empty shares, not "partial"
    assert row.shares == dict.fromkeys(LABELS) and row.dominant_label is None


@pytest.mark.parametrize(("ended", "status"), [(True, "ended"), (False, "partial")])
def test_a_short_last_window_says_whether_the_source_ended_or_the_run_stopped(ended: bool, status: str) -> None:
    agg = make()
    for t in (0, 500, 1000):
        agg.add(faces([2, 2]), float(t), 0)
    (row,) = agg.finish(ended=ended)
    assert row.status == status and row.shares["Engaged"] == 1.0


def test_finish_without_frames_writes_nothing() -> None:
    assert make().finish() == []


def test_finish_with_a_single_frame_keeps_it() -> None:
    agg = make()
    agg.add(faces([2, 2]), 0.0, 0)
    (row,) = agg.finish()
    assert (row.status, row.frames, row.fps, row.shares["Engaged"]) == ("partial", 1, 0.0, 1.0)


def test_frame_period_carries_across_windows() -> None:
    agg = make(window_s=1.0)
    agg.add(faces([2, 2]), 0.0, 0)
    agg.add(faces([2, 2]), 500.0, 0)
    agg.add(faces([2, 2]), 1000.0, 0)  # alone in window 1; one frame covers 500 ms
    (row,) = agg.finish()
    assert row.window_end_utc.endswith("09:00:01.500Z") and row.fps == pytest.approx(2.0)


def test_no_frames_after_finish() -> None:
    agg = make()
    agg.finish()
    with pytest.raises(RuntimeError, match="finish"):
        agg.add(faces([2]), 0.0, 0)


def test_finish_reports_a_trailing_gap() -> None:
    agg = make()
    agg.add(faces([2, 2]), 0.0, 0)
    agg.advance(10_000.0)
    (row,) = (*agg.advance(14_000.0), *agg.finish())
    assert row.status == WindowStatus.GAP and row.window_end_utc.endswith("09:00:14.000Z")


def test_dropped_frames_are_counted_per_window() -> None:
    agg = make()
    agg.add(faces([2, 2]), 0.0, 3)
    agg.add(faces([2, 2]), 5_000.0, 5)
    rows = agg.add(faces([2, 2]), 12_000.0, 9)
    rows += agg.finish()
    assert [r.dropped_frames for r in rows] == [5, 4]


def test_labels_without_engaged_or_bored_have_no_engagement_index() -> None:
    agg = Aggregator(AggregatorConfig(labels=("Happy", "Sad"), start_utc=START, min_group=1))
    agg.add(TrackedFaces(np.array([1]), np.zeros((1, 4)), np.array([[0.9, 0.1]])), 0.0, 0)
    (row,) = agg.advance(10_000.0)
    assert row.shares == {"Happy": 1.0, "Sad": 0.0} and row.engagement_index is None


def test_probs_must_match_the_labels() -> None:
    agg = make()
    with pytest.raises(ValueError, match="3 classes"):
        agg.add(TrackedFaces(np.array([1]), np.zeros((1, 4)), np.ones((1, 3)) / 3), 0.0, 0)


def test_per_track_rows_are_anonymous_and_follow_suppression() -> None:
    agg = make(per_track=True, min_group=2)
    agg.add(faces([2, 3], ids=[17, 4]), 0.0, 0)
    agg.add(faces([2, 2], ids=[17, 4]), 1_000.0, 0)
    agg.add(faces([3], ids=[17]), 10_000.0, 0)  # window 1: one face -> suppressed
    agg.advance(20_000.0)
    first, second, third = agg.track_rows()
    assert agg.track_rows() == []  # drained
    assert (first.track, first.frames_seen) == ("t4", 2)
    assert first.shares == pytest.approx({"Angry": 0.0, "Neutral": 0.0, "Engaged": 0.5, "Bored": 0.5})
    assert (second.track, second.dominant_label, second.shares["Engaged"]) == ("t17", "Engaged", 1.0)
    assert (third.track, third.frames_seen, third.dominant_label) == ("t17", 1, None)
    assert third.shares == dict.fromkeys(LABELS)
    assert list(first.to_row())[:5] == ["window_start", "window_end", "source", "track", "frames_seen"]


def test_per_track_rows_are_off_by_default() -> None:
    agg = make()
    agg.add(faces([2, 2]), 0.0, 0)
    agg.advance(10_000.0)
    assert agg.track_rows() == []


# ---------------------------------------------------------------- attention


def facing_faces(scores: list[float], labels: list[int] | None = None) -> TrackedFaces:
    """Faces with smoothed facing `scores` (NaN = unknown), top class `labels` (Neutral by default)."""
    base = faces(labels if labels is not None else [1] * len(scores))
    return TrackedFaces(base.track_ids, base.boxes, base.probs, facing=np.float32(scores))


def test_attention_share_counts_known_observations_facing_the_front() -> None:
    agg = make()
    agg.add(facing_faces([0.9, 0.2, 0.5, float("nan")]), 0.0, 0)  # 2 of 3 known face the front
    agg.add(facing_faces([0.1, 0.1, 0.99, 0.7]), 5000.0, 0)  # 2 of 4
    (row,) = agg.add(facing_faces([1.0, 1.0]), 10_000.0, 0)
    assert row.attention_share == pytest.approx(4 / 7)
    assert list(row.to_row())[-1] == "attention_share"  # appended after the existing columns
    (last,) = agg.finish(ended=True)
    assert last.attention_share == 1.0


@pytest.mark.parametrize(
    ("kwargs", "scores", "expected"),
    [
        ({"attention": False}, [0.9, 0.9], None),  # --signals expressions
        ({}, [float("nan"), float("nan")], None),  # no keypoints: unknown, not 0
        ({"min_group": 3}, [0.9, 0.9], None),  # withheld with the class shares
    ],
)
def test_attention_share_absent(kwargs: dict, scores: list[float], expected: float | None) -> None:
    agg = make(**kwargs)
    agg.add(facing_faces(scores), 0.0, 0)
    (row,) = agg.finish(ended=True)
    assert row.attention_share is expected


def test_attention_only_rows_have_no_class_statistics() -> None:
    agg = make(labels=(), per_track=True)
    n = 3
    none = TrackedFaces(np.arange(1, n + 1), np.zeros((n, 4), np.float32), np.zeros((n, 0), np.float32),
                        facing=np.float32([0.9, 0.1, 0.8]))  # fmt: skip
    agg.add(none, 0.0, 0)
    (row,) = agg.finish(ended=True)
    assert row.shares == {} and row.engagement_index is None and row.dominant_label is None
    assert row.low_confidence_share is None and row.faces_mean == 3 and row.attention_share == pytest.approx(2 / 3)
    assert not any(key.startswith("share_") for key in row.to_row())
    tracks = agg.track_rows()
    assert [t.attention_share for t in tracks] == [1.0, 0.0, 1.0]
    assert [t.dominant_label for t in tracks] == [None, None, None]
