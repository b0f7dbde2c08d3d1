"""Soak: replay a video in a loop through the real pipeline for a long time; memory and fps every minute.

Run from the repository root (default: 30 minutes of the 720p gallery at full speed, speed mode):

    python -m benchmarks.bench_soak                       # --minutes 30 --sample-s 60
    python -m benchmarks.bench_soak --minutes 10 --live   # paced at 30 fps through LiveSource

Prints one row per sample (RSS, Python heap objects, threads, open files, fps over the interval,
frames, windows, tracker ids handed out) and a verdict: memory is "flat" when RSS grew by less than
``--max-growth-mb`` between the first sample after warm-up and the last one, and no later sample
exceeds that first one by more. Writes benchmarks/results/soak_<UTC time>.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console

from benchmarks import bench_detection
from benchmarks.fake_camera import PacedCapture
from benchmarks.gallery import ensure_galleries, media_missing_reason
from benchmarks.harness import (
    LoopingFileSource,
    Setup,
    busy_processes,
    default_model,
    machine_extra,
    quiet_console_sink,
    rss_mb,
    run_config,
)
from edumood_live.config import parse_detect_every
from edumood_live.pipeline import Pipeline
from edumood_live.resources import classifier_path
from edumood_live.sources import SourceConfig, open_source

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
WORK_DIR = BENCH_DIR / "work"


def open_files() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


class Sampler(threading.Thread):
    """Every ``interval_s``: RSS, fps since the last sample and the pipeline's counters."""

    def __init__(self, pipeline: Pipeline, interval_s: float, console: Console) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.pipeline = pipeline
        self.interval_s = interval_s
        self.console = console
        self.samples: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self._t0 = time.monotonic()
        self._last = (self._t0, 0)

    def sample(self) -> None:
        now = time.monotonic()
        snap = self.pipeline.stats.snapshot()
        t_last, f_last = self._last
        self._last = (now, snap.frames)
        row = {
            "minute": (now - self._t0) / 60.0,
            "rss_mb": rss_mb(),
            "gc_objects": len(gc.get_objects()),
            "threads": threading.active_count(),
            "open_files": open_files(),
            "fps": (snap.frames - f_last) / (now - t_last) if now > t_last else 0.0,
            "frames": snap.frames,
            "windows": snap.windows,
            "bad_frames": snap.bad_frames,
            "load_1m": os.getloadavg()[0],
        }
        self.samples.append(row)
        self.console.print(
            f"  {row['minute']:5.1f} min  rss {row['rss_mb']:7.1f} MB  fps {row['fps']:6.1f}  "
            f"frames {row['frames']:7d}  objects {row['gc_objects']:7d}  threads {row['threads']}"
        )

    def run(self) -> None:
        while not self.stop.wait(self.interval_s):
            self.sample()


def verdict(samples: list[dict[str, Any]], warmup: int, max_growth_mb: float) -> dict[str, Any]:
    """Flat when RSS after warm-up never rises more than ``max_growth_mb`` above its first value."""
    usable = samples[warmup:] if len(samples) > warmup + 1 else samples
    if len(usable) < 2:
        return {"flat": None, "why": "fewer than two samples after warm-up"}
    first = usable[0]["rss_mb"]
    growth = usable[-1]["rss_mb"] - first
    worst = max(s["rss_mb"] for s in usable) - first
    minutes = usable[-1]["minute"] - usable[0]["minute"]
    return {
        "flat": worst < max_growth_mb,
        "rss_first_mb": first,
        "rss_last_mb": usable[-1]["rss_mb"],
        "growth_mb": growth,
        "max_rise_mb": worst,
        "slope_mb_per_hour": growth / minutes * 60 if minutes > 0 else None,
        "objects_growth": usable[-1]["gc_objects"] - usable[0]["gc_objects"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="how long to run (default 30)")
    parser.add_argument("--sample-s", type=float, default=60.0, help="seconds between samples (default 60)")
    parser.add_argument("--video", type=Path, help="video to loop (default: the 1280x720 gallery)")
    parser.add_argument(
        "--live",
        action="store_true",
        help="pace the video at its frame rate through LiveSource (a camera) instead of replaying "
        "it at full speed",
    )
    parser.add_argument("--model", type=classifier_path,
                        help="classifier: a shipped name (default, fast) or an ONNX file (default: default)")
    parser.add_argument("--detect-every", type=parse_detect_every, default="auto",
                        help="K or auto (default auto, as the CLI)")
    parser.add_argument("--workers", type=int, default=2, help="detector instances (default 2)")
    parser.add_argument("--min-face", type=int, default=32, help="--min-face for tiles=auto (default 32)")
    parser.add_argument(
        "--warmup-samples", type=int, default=1, help="samples ignored by the verdict (default 1)"
    )
    parser.add_argument(
        "--max-growth-mb", type=float, default=5.0, help="flat means less growth (default 5)"
    )
    parser.add_argument("--out", type=Path, help="JSON path (default: benchmarks/results/soak_<time>.json)")
    args = parser.parse_args(argv)
    console = Console(width=160)
    if args.video is None:
        reason = media_missing_reason()
        if reason is not None:
            console.print(f"skipped: {reason}")
            return 0
        args.video = ensure_galleries()[(1280, 720)]
    model = args.model or default_model()
    if model is None:
        console.print("no classifier model: pass --model PATH")
        return 2
    started = datetime.now(UTC)
    info = bench_detection.machine()
    info.update(machine_extra())
    setup = Setup("soak", detect_every=args.detect_every, workers=args.workers, min_face=args.min_face)
    config = run_config(setup, model, str(args.video), WORK_DIR / "soak", window_s=10.0)
    if args.live:
        source = open_source(
            SourceConfig(spec="webcam"), capture_factory=lambda: PacedCapture(args.video)
        )
    else:
        source = LoopingFileSource(args.video, loops=None)
    pipeline = Pipeline(config, sinks=[quiet_console_sink()], sources=[source])
    console.print(
        f"soak: {args.video.name}, {'live (paced)' if args.live else 'replay (full speed)'}, "
        f"{args.minutes:g} min, sample every {args.sample_s:g} s; load {info['load_avg_1_5_15']}, "
        f"other work: {info['busy_at_start'] or 'none'}"
    )
    sampler = Sampler(pipeline, args.sample_s, console)

    def finish() -> None:  # the last sample is taken while everything is still running
        sampler.stop.set()
        sampler.sample()
        pipeline.stop()

    timer = threading.Timer(args.minutes * 60.0, finish)
    sampler.sample()
    sampler.start()
    timer.start()
    try:
        for _ in pipeline.run():
            pass
    finally:
        timer.cancel()
        sampler.stop.set()
        sampler.join()
    result = verdict(sampler.samples, args.warmup_samples, args.max_growth_mb)
    info["busy_at_end"] = busy_processes()
    info["load_avg_at_end"] = list(os.getloadavg())
    bench_detection.show(
        console,
        f"Soak: {args.video.name} ({'live' if args.live else 'replay'}), RSS and fps",
        sampler.samples,
        list(sampler.samples[0]),
    )
    console.print(f"memory flat: {result['flat']} ({result})")
    report = {
        "benchmark": "bench_soak",
        "started_utc": started.isoformat(timespec="seconds"),
        "command": " ".join(
            ["python", "-m", "benchmarks.bench_soak", *(argv if argv is not None else sys.argv[1:])]
        ),
        "machine": info,
        "settings": {**vars(args), "video": str(args.video), "model": str(model), "setup": setup.describe()},
        "stats": pipeline.stats.as_dict(),
        "samples": sampler.samples,
        "verdict": result,
    }
    out = args.out or RESULTS_DIR / f"soak_{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    console.print(f"saved {out}")
    return 0 if result["flat"] is not False else 1


if __name__ == "__main__":
    sys.exit(main())
