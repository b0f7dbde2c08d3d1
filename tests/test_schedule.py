"""When the detector runs: every K-th frame, or `AUTO` from how fast the tracked faces move."""

from __future__ import annotations

import numpy as np
import pytest

from edumood_live.config import AUTO
from edumood_live.schedule import AUTO_MAX_EVERY, DetectSchedule
from edumood_live.types import TrackedFaces


def faces_at(x: float, ids: tuple[int, ...] = (1, 2)) -> TrackedFaces:
    boxes = np.array([[x + 100 * i, 50, x + 100 * i + 60, 110] for i in range(len(ids))], np.float32)
    return TrackedFaces(np.array(ids), boxes, np.full((len(ids), 4), 0.25, np.float32))


def run_schedule(every: int | str, speed_px_per_frame: float, frames: int = 60,
                 period_ms: float = 33.3) -> list[bool]:
    schedule = DetectSchedule(every)
    due = []
    for i in range(frames):
        ts = i * period_ms
        due.append(schedule.due(ts))
        if due[-1]:
            schedule.observe(faces_at(i * speed_px_per_frame), ts)
    return due


@pytest.mark.parametrize(
    ("every", "speed", "low", "high"),
    [
        (1, 0.0, 60, 60),
        (4, 0.0, 15, 15),
        ("auto", 0.0, 60 // AUTO_MAX_EVERY, 60 // AUTO_MAX_EVERY + 2),  # still faces: the longest interval
        ("auto", 1.0, 20, 30),  # 1/60 of a face per frame: about every 3rd frame
        ("auto", 12.0, 60, 60),  # a fifth of a face per frame: every frame
    ],
)
def test_detect_schedule(every: int | str, speed: float, low: int, high: int) -> None:
    assert low <= sum(run_schedule(every, speed)) <= high


def test_auto_schedule_respects_the_time_bound() -> None:
    due = run_schedule("auto", 0.0, frames=40, period_ms=200.0)  # 5 fps: 400 ms allows only K=2
    assert sum(due) == pytest.approx(20, abs=2)


def test_auto_detects_every_frame_until_motion_is_known() -> None:
    schedule = DetectSchedule(AUTO)
    assert schedule.auto and schedule.every == 1
    assert all(schedule.due(i * 33.3) for i in range(3))  # nothing observed yet: K stays 1


def test_fixed_k_ignores_what_it_observes() -> None:
    schedule = DetectSchedule(3)
    schedule.observe(faces_at(0.0), 0.0)
    assert not schedule.auto and schedule.every == 3
