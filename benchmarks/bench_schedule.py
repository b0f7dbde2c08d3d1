"""What detecting every K frames costs in fidelity: rows of K auto / fixed K against the detector on every frame.

``python -m benchmarks.bench_schedule [--model default|fast|PATH] [--window 2]``

Between detector frames the tracker carries the boxes, so crops may sit a little off and a new face
appears a few frames late. This replays real clips (the 720p gallery and the single clips of
``../shared/media/videos``) once with the detector on every frame (exact) and once per schedule, with
the same window grid, and compares the rows window by window: the largest share difference of any
label (percentage points), faces per frame, and how often the dominant label agrees. It also prints the
detector frames and the replay fps (meaningful only on an idle machine). ``--auto-max-every`` tries
other caps of the auto schedule's K (`edumood_live.schedule.AUTO_MAX_EVERY`, 8) for comparison.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import edumood_live.schedule as schedule_module
from benchmarks.gallery import VIDEOS_DIR, WORK_DIR, ensure_galleries, media_missing_reason
from benchmarks.harness import Setup, run_config
from edumood_live.pipeline import Pipeline
from edumood_live.resources import classifier_path
from edumood_live.types import WindowSummary

CLIPS = ("classroom.mp4", "face-demographics-walking.mp4", "head-pose-face-detection-female-and-male.mp4",
         "pexels-wolfgang-langer-woman-emotions-3063838.mp4")
START = datetime(2026, 1, 1, tzinfo=UTC)  # one window grid for every run, so windows line up


@dataclass(frozen=True)
class Result:
    rows: list[WindowSummary]
    frames: int
    detected: int
    fps: float


@contextmanager
def auto_cap(max_every: int) -> Iterator[None]:
    """The auto schedule with another cap on K, for this run only."""
    saved = schedule_module.AUTO_MAX_EVERY
    schedule_module.AUTO_MAX_EVERY = max_every
    try:
        yield
    finally:
        schedule_module.AUTO_MAX_EVERY = saved


def replay(path: Path, every: int | str, model: Path, window_s: float) -> Result:
    setup = Setup(f"K{every}", detect_every=every, workers=2, threads=2)
    pipeline = Pipeline(run_config(setup, model, str(path), WORK_DIR / "out", window_s))
    rows = list(pipeline.run(start_utc=START))
    stats = pipeline.stats
    return Result(rows, stats.frames, stats.detected_frames, stats.frames / max(stats.wall_s, 1e-9))


def compare(exact: list[WindowSummary], other: list[WindowSummary]) -> dict[str, float]:
    """Window-by-window differences of `other` from `exact` over the windows where both saw faces."""
    assert [r.window_start_utc for r in exact] == [r.window_start_utc for r in other]
    pairs = [(a, b) for a, b in zip(exact, other, strict=True) if a.shares and b.shares]
    if not pairs:
        return {"windows": 0, "share_pp_mean": float("nan"), "share_pp_max": float("nan"),
                "faces_pct": float("nan"), "dominant_agree": float("nan")}
    share_pp = [100 * max(abs(a.shares[k] - b.shares[k]) for k in a.shares) for a, b in pairs]
    faces = [100 * (b.faces_mean - a.faces_mean) / a.faces_mean for a, b in pairs if a.faces_mean]
    return {
        "windows": len(pairs),
        "share_pp_mean": statistics.fmean(share_pp),
        "share_pp_max": max(share_pp),
        "faces_pct": statistics.fmean(faces) if faces else float("nan"),
        "dominant_agree": statistics.fmean(a.dominant_label == b.dominant_label for a, b in pairs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=classifier_path, default="default", help="default, fast or a path")
    parser.add_argument("--window", type=float, default=2.0, help="window seconds (default 2)")
    parser.add_argument("--auto-max-every", type=int, nargs="*", default=[schedule_module.AUTO_MAX_EVERY],
                        help="caps of the auto schedule's K to compare (default: the shipped one)")
    args = parser.parse_args(argv)
    reason = media_missing_reason()
    if reason is not None:
        print(f"skipped: {reason}")
        return 0
    inputs = [ensure_galleries()[(1280, 720)], *(VIDEOS_DIR / c for c in CLIPS)]
    schedules: list[tuple[str, int | str, int]] = [("K=3", 3, schedule_module.AUTO_MAX_EVERY)]
    schedules += [(f"auto<={cap}", "auto", cap) for cap in args.auto_max_every]
    print(f"model {args.model.name}; window {args.window:g} s; differences from the detector on every frame")
    print(f"{'input':48s} {'schedule':9s} {'detected':>9s} {'fps':>6s} {'exact fps':>9s} {'windows':>7s} "
          f"{'share pp mean':>13s} {'max':>5s} {'faces %':>7s} {'dominant':>8s}")
    for path in inputs:
        exact = replay(path, 1, args.model, args.window)
        for name, every, cap in schedules:
            with auto_cap(cap):
                result = replay(path, every, args.model, args.window)
            d = compare(exact.rows, result.rows)
            print(f"{path.name[:48]:48s} {name:9s} {result.detected:4d}/{result.frames:<4d} {result.fps:6.1f} "
                  f"{exact.fps:9.1f} {d['windows']:7d} {d['share_pp_mean']:13.1f} {d['share_pp_max']:5.1f} "
                  f"{d['faces_pct']:+7.1f} {d['dominant_agree']:8.0%}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
