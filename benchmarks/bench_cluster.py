"""Cluster mode throughput against the number of cameras, on a local Ray runtime on this machine.

    python -m benchmarks.bench_cluster [--cameras 1,2,4,8] [--loops 10] [--model PATH] [--waits 2]
                                       [--detector-workers 1,2]

Every camera replays the bundled sample clip (480x270, 3 faces, 12 fps) looped ``--loops`` times, at
full speed (files are read in order, nothing is dropped). For each camera count the script runs the
cluster mode (one Ray actor per camera, one shared batching classifier) and, for reference, the
single-process pipeline on the same sources, and reports total frames/s, per-camera frames/s and the
batches the shared classifier achieved across cameras (faces and camera requests per model call).
Worker start-up (process launch, model loading, opening the sources) is timed apart from the run.
Results go to ``benchmarks/results/cluster_<UTC time>.json``; a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2

from benchmarks.bench_detection import machine
from benchmarks.harness import default_model, machine_extra
from edumood_live.classifier import ClassifierConfig
from edumood_live.config import RunConfig
from edumood_live.detector import DetectorConfig
from edumood_live.pipeline import Pipeline
from edumood_live.resources import classifier_path, demo_clip_path
from edumood_live.sources import SourceConfig

RESULTS = Path(__file__).resolve().parent / "results"
WINDOW_S = 10.0


def looped_clip(folder: Path, loops: int) -> tuple[Path, int]:
    """The bundled clip written ``loops`` times into one mp4 (so every camera has a longer stream)."""
    source = cv2.VideoCapture(str(demo_clip_path()))
    fps = source.get(cv2.CAP_PROP_FPS) or 12.0
    frames = []
    while (item := source.read())[0]:
        frames.append(item[1])
    source.release()
    path = folder / f"sample_clip_x{loops}.mp4"
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for _ in range(loops):
        for frame in frames:
            writer.write(frame)
    writer.release()
    return path, loops * len(frames)


def run_config(clip: Path, cameras: int, model: Path, detector_workers: int) -> RunConfig:
    sources = tuple(SourceConfig(str(clip)) for _ in range(cameras))
    return RunConfig(sources=sources, classifier=ClassifierConfig(model_path=model), window_s=WINDOW_S,
                     detector=DetectorConfig(workers=detector_workers))


def bench_cluster(config: RunConfig, batch_wait_ms: float) -> dict[str, Any]:
    from edumood_live.cluster import ClusterConfig, ClusterRun

    t0 = time.perf_counter()
    run = ClusterRun(config, ClusterConfig(batch_wait_ms=batch_wait_ms, log_to_driver=False))
    startup_s = time.perf_counter() - t0
    rows = list(run.run())
    stats = run.stats
    wall_s = float(stats["wall_s"])  # type: ignore[arg-type]
    per_camera = [float(c["pipeline"]["fps"]) for c in stats["cameras"]]  # type: ignore[union-attr,index]
    batching = dict(stats["batching"])  # type: ignore[call-overload]
    return {
        "mode": "cluster",
        "batch_wait_ms": batch_wait_ms,
        "startup_s": round(startup_s, 2),
        "wall_s": round(wall_s, 2),
        "frames": stats["frames"],
        "fps_total": round(float(stats["fps"]), 1),  # type: ignore[arg-type]
        "fps_per_camera_mean": round(sum(per_camera) / len(per_camera), 1),
        "fps_per_camera_min": round(min(per_camera), 1),
        "windows": len(rows),
        "batching": batching,
        "states": sorted(set(run.source_states.values())),
    }


def bench_single(config: RunConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    pipeline = Pipeline(config)
    startup_s = time.perf_counter() - t0
    rows = list(pipeline.run())
    stats = pipeline.stats.as_dict()
    per_source = stats["frames_by_source"]
    wall_s = float(stats["wall_s"])
    per_camera = [n / wall_s for n in per_source.values()]  # type: ignore[union-attr]
    return {
        "mode": "single",
        "startup_s": round(startup_s, 2),
        "wall_s": round(wall_s, 2),
        "frames": stats["frames"],
        "fps_total": round(float(stats["fps"]), 1),
        "fps_per_camera_mean": round(sum(per_camera) / len(per_camera), 1),
        "fps_per_camera_min": round(min(per_camera), 1),
        "windows": len(rows),
    }


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| cameras | detector workers | mode | wait ms | start-up s | frames | wall s | total fps "
        "| fps/camera (mean, min) | faces/call | camera requests/call | calls with >1 camera | max cameras/call |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        b = r.get("batching") or {}
        batching = (
            f"{b['faces_per_call']:.1f} | {b['requests_per_call']:.2f} | "
            f"{100 * b['cross_camera_call_share']:.0f} % | {b['max_cameras_per_call']}"
            if b
            else "– | – | – | –"
        )
        wait = r.get("batch_wait_ms", "–")
        lines.append(
            f"| {r['cameras']} | {r['detector_workers']} | {r['mode']} | {wait} | {r['startup_s']} "
            f"| {r['frames']} | {r['wall_s']} "
            f"| {r['fps_total']} | {r['fps_per_camera_mean']}, {r['fps_per_camera_min']} | {batching} |"
        )
    return "\n".join(lines)


def heavy_processes(min_cpu: float = 20.0) -> list[str]:
    """Other processes using a lot of CPU (lifetime average, from ps): timings mean little beside them."""
    try:
        out = subprocess.run(
            ["ps", "-eo", "pid,pcpu,etime,args", "--sort=-pcpu"], capture_output=True, text=True, timeout=5
        ).stdout.splitlines()[1:]
    except (OSError, subprocess.TimeoutExpired):
        return []
    mine = {os.getpid(), os.getppid()}
    return [
        line.strip()[:160]
        for line in out
        if float(line.split()[1]) >= min_cpu and int(line.split()[0]) not in mine
    ]


def command_line(argv: list[str] | None) -> str:
    return " ".join(["python -m benchmarks.bench_cluster", *(sys.argv[1:] if argv is None else argv)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cameras", default="1,2,4,8", help="camera counts, comma-separated")
    parser.add_argument("--loops", type=int, default=10, help="how often each camera replays the clip")
    parser.add_argument("--model", type=classifier_path,
                        help="classifier: a shipped name (default, fast) or an ONNX file (default: default)")
    parser.add_argument("--waits", default="2", help="cluster batch_wait_ms values to try, comma-separated")
    parser.add_argument("--detector-workers", default="2",
                        help="detector instances per camera (each a thread) to try, comma-separated (default 2)")
    parser.add_argument("--no-single", action="store_true", help="skip the single-process reference runs")
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count(), help="CPUs of the local Ray runtime")
    args = parser.parse_args(argv)
    model = args.model or default_model()
    if model is None:
        parser.error("no classifier: pass --model (the shipped model is not there yet)")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    import ray

    started_utc = datetime.now(UTC)
    info = {
        **machine(),
        **machine_extra(),
        "heavy_processes_at_start": heavy_processes(),
        "ray": ray.__version__,
    }
    t0 = time.perf_counter()
    ray.init(
        address="local",
        num_cpus=args.num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="warning",
    )
    ray_init_s = time.perf_counter() - t0
    results: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory() as folder:
            clip, clip_frames = looped_clip(Path(folder), args.loops)
            for cameras in (int(n) for n in args.cameras.split(",")):
                for workers in (int(n) for n in args.detector_workers.split(",")):
                    config = run_config(clip, cameras, Path(model), workers)
                    for wait in (float(w) for w in args.waits.split(",")):
                        result = {"cameras": cameras, "detector_workers": workers, **bench_cluster(config, wait)}
                        results.append(result)
                        print(json.dumps(result), file=sys.stderr, flush=True)
                    if not args.no_single:
                        result = {"cameras": cameras, "detector_workers": workers, **bench_single(config)}
                        results.append(result)
                        print(json.dumps(result), file=sys.stderr, flush=True)
    finally:
        ray.shutdown()
    report = {
        "benchmark": "bench_cluster",
        "started_utc": started_utc.isoformat(timespec="seconds"),
        "command": command_line(argv),
        "machine": info,
        "at_end": {
            "load_avg_1_5_15": list(os.getloadavg()),
            "busy": machine_extra()["busy_at_start"],
            "heavy_processes": heavy_processes(),
        },
        "settings": {
            "clip": "bundled sample_clip.mp4 (480x270, 3 faces, 12 fps)",
            "loops": args.loops,
            "frames_per_camera": clip_frames,
            "window_s": WINDOW_S,
            "model": str(model),
            "ray_num_cpus": args.num_cpus,
            "ray_init_s": round(ray_init_s, 2),
            "cpus_per_worker": "auto: min(1, CPUs / (cameras + 1))",
        },
        "results": results,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"cluster_{started_utc.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(results))
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
