"""Detection and classification speed/recall on the dlib-photo mosaics (DESIGN §3, §4).

Run from the repository root:  nice -n 10 python -m benchmarks.bench_detection
Prints tables and writes benchmarks/results/detection_<UTC time>.json (machine, versions, results).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import mediapipe as mp
import numpy as np
import onnxruntime as ort
from rich.console import Console
from rich.table import Table

from benchmarks.mosaic import FACES_DLIB_DIR, AnnotatedImage, build_mosaic, count_matched, load_dlib_faces
from edumood_live.classifier import ClassifierConfig, FaceClassifier
from edumood_live.detector import DetectorConfig, FaceDetector
from edumood_live.errors import ModelError
from edumood_live.resources import classifier_path, default_classifier_path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
LAYOUTS = 6  # photo arrangements of the mosaic that recall is also measured on
TILINGS = ("1x1", "2x2", "3x2", "4x3", "5x3", "6x4", "auto")
FRAME_SIZES = ((1280, 720), (1920, 1080))
BATCHES = (1, 8, 32, 64)
MIN_FACE_PX = 20  # mosaic faces are ~20-70 px
DEV_MODEL = Path("/tmp/dev_classifier.onnx")


def time_ms(fn: Callable[[], object], repeats: int) -> tuple[float, float, float]:
    """Median and min wall ms of ``fn`` after a warm-up, and mean process CPU ms (all threads).

    On a shared machine wall time includes waiting for a core; CPU time is the work itself.
    """
    fn()
    times = []
    cpu_start = time.process_time()
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    cpu_ms = (time.process_time() - cpu_start) * 1000 / repeats
    return statistics.median(times), min(times), cpu_ms


def machine() -> dict[str, Any]:
    """CPU, core count, load and library versions: timings mean little without them."""
    cpu = platform.processor() or "unknown"
    try:
        names = [
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in ln
        ]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_avg_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "nice": os.nice(0),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            "mediapipe": mp.__version__,
            "onnxruntime": ort.__version__,
            "opencv": cv2.__version__,
            "numpy": np.__version__,
        },
    }


USUAL_SPEED_MS = 6.5  # machine_speed_ms() when the project VM runs at its usual speed (it varies +-30 %)


def machine_speed_ms(repeats: int = 60) -> float:
    """Median ms of one whole-frame detector pass on a 720p frame: this machine's speed right now.

    The shared VM's speed drifts during a day; printed before and after a benchmark, it tells a slow run
    from a slow change.
    """
    image = np.random.default_rng(0).integers(0, 256, (720, 1280, 3), np.uint8)
    with FaceDetector(DetectorConfig(tiles="1x1", workers=1)) as detector:
        median, _, _ = time_ms(lambda: detector.detect(image), repeats)
    return median


def layouts(photos: list[AnnotatedImage], frame_w: int, frame_h: int, count: int = LAYOUTS) -> list[AnnotatedImage]:
    """The mosaic with the photos in their order, then in ``count - 1`` seeded shuffles of it: where faces
    fall relative to tile edges changes recall, so one layout alone would flatter a tiling tuned on it."""
    rng = np.random.default_rng(1)
    orders = [np.arange(len(photos))] + [rng.permutation(len(photos)) for _ in range(count - 1)]
    return [build_mosaic([photos[i] for i in order], frame_w, frame_h) for order in orders]


def bench_detection(photos: list[AnnotatedImage], repeats: int) -> list[dict[str, Any]]:
    """Recall (IoU >= 0.3) and ms/frame per tiling option, worker count and mosaic size; recall also as
    the minimum and mean over `LAYOUTS` layouts of the same photos."""
    rows = []
    shuffled = {size: layouts(photos, *size) for size in FRAME_SIZES}
    mosaics = [shuffled[size][0] for size in FRAME_SIZES]
    for tiles in TILINGS:
        per_layout: dict[tuple[int, int], list[float]] = {}
        for workers in (1, 2):
            config = DetectorConfig(tiles=tiles, min_face_px=MIN_FACE_PX, workers=workers)
            with FaceDetector(config) as det:
                photo_hits = sum(count_matched(p.boxes, det.detect(p.image).boxes) for p in photos)
                for mosaic in mosaics:
                    h, w = mosaic.image.shape[:2]
                    dets = det.detect(mosaic.image)
                    median, fastest, cpu = time_ms(lambda m=mosaic, d=det: d.detect(m.image), repeats)
                    if workers == 1:  # recall does not depend on the worker count: measured once
                        per_layout[(w, h)] = [count_matched(m.boxes, det.detect(m.image).boxes) / len(m.boxes)
                                              for m in shuffled[(w, h)]]
                    rows.append(
                        {
                            "frame": f"{w}x{h}",
                            "tiles": tiles,
                            "grid_cxr": "{1}x{0}".format(*det.grid_for(w, h)),
                            "regions": len(det.regions_for(w, h)),
                            "workers": workers,
                            "recall": count_matched(mosaic.boxes, dets.boxes) / len(mosaic.boxes),
                            "recall_layouts_min": min(per_layout[(w, h)]),
                            "recall_layouts_mean": float(np.mean(per_layout[(w, h)])),
                            "found": count_matched(mosaic.boxes, dets.boxes),
                            "faces": len(mosaic.boxes),
                            "detections": len(dets),
                            "photos_found": photo_hits,
                            "photos_faces": sum(len(p.boxes) for p in photos),
                            "ms_per_frame": median,
                            "ms_per_frame_min": fastest,
                            "cpu_ms_per_frame": cpu,
                        }
                    )
                    print(
                        f"  {rows[-1]['frame']} {tiles} w{workers}: {rows[-1]['ms_per_frame']:.1f} ms",
                        flush=True,
                    )
    return rows


def bench_whole_frame_pass(photos: list[AnnotatedImage], repeats: int) -> list[dict[str, Any]]:
    """What the extra whole-frame pass costs and buys on tiled configurations (720p mosaic, photos)."""
    rows = []
    mosaic = build_mosaic(photos, 1280, 720)
    for tiles in ("2x2", "4x3", "auto"):
        for whole in (False, True):
            config = DetectorConfig(tiles=tiles, min_face_px=MIN_FACE_PX, whole_frame=whole)
            with FaceDetector(config) as det:
                median, fastest, cpu = time_ms(lambda d=det: d.detect(mosaic.image), repeats)
                rows.append(
                    {
                        "tiles": tiles,
                        "whole_frame": whole,
                        "photos_found": sum(
                            count_matched(p.boxes, det.detect(p.image).boxes) for p in photos
                        ),
                        "mosaic_found": count_matched(mosaic.boxes, det.detect(mosaic.image).boxes),
                        "ms_per_frame": median,
                        "ms_per_frame_min": fastest,
                        "cpu_ms_per_frame": cpu,
                    }
                )
    return rows


def bench_classifier(model: Path, photos: list[AnnotatedImage], repeats: int) -> list[dict[str, Any]]:
    """ms/face of classify (crop + resize + normalise + one session.run + softmax) per batch size."""
    mosaic = build_mosaic(photos, 1280, 720)
    boxes = np.resize(mosaic.boxes, (max(BATCHES), 4)).astype(np.float32)
    rows = []
    for threads in (1, 2):
        with FaceClassifier(
            ClassifierConfig(model_path=model, intra_op_threads=threads, device="cpu")
        ) as clf:
            for n in BATCHES:
                total, _, _ = time_ms(lambda c=clf, k=n: c.classify(mosaic.image, boxes[:k]), repeats * 4)
                prep, _, _ = time_ms(lambda c=clf, k=n: c.preprocess(mosaic.image, boxes[:k]), repeats * 4)
                rows.append(
                    {
                        "model": model.name,
                        "model_name": clf.metadata["model_name"],
                        "provider": clf.provider,
                        "input": [clf.channels, *clf.input_size],
                        "intra_op_threads": threads,
                        "batch": n,
                        "ms_per_face": total / n,
                        "preprocess_ms_per_face": prep / n,
                    }
                )
    return rows


def show(console: Console, title: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*(f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in columns))
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per configuration")
    parser.add_argument("--model", type=classifier_path,
                        help="classifier: a shipped name (default, fast) or an ONNX file (default: default)")
    parser.add_argument(
        "--out", type=Path, help="JSON path (default: benchmarks/results/detection_<time>.json)"
    )
    args = parser.parse_args(argv)
    console = Console(width=150)
    if not (FACES_DLIB_DIR / "training.xml").is_file():
        console.print(f"annotated photos not found at {FACES_DLIB_DIR}; nothing to benchmark")
        return 1
    photos = load_dlib_faces()
    started = datetime.now(UTC)
    info = machine()
    console.print(
        f"machine: {info['cpu']}, {info['usable_cores']} usable cores, load {info['load_avg_1_5_15']}"
    )
    detection = bench_detection(photos, args.repeats)
    whole = bench_whole_frame_pass(photos, args.repeats)
    model = args.model
    if model is None:
        try:
            model = default_classifier_path()
        except ModelError:
            model = DEV_MODEL if DEV_MODEL.is_file() else None
    classifier = bench_classifier(model, photos, args.repeats) if model else []
    info["load_avg_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    cols = ["frame", "tiles", "grid_cxr", "regions", "workers", "found", "faces", "detections", "recall",
            "recall_layouts_min", "recall_layouts_mean"]
    show(
        console,
        "Detection on the dlib-photo mosaic (faces 20-70 px)",
        detection,
        [*cols, "ms_per_frame", "ms_per_frame_min", "cpu_ms_per_frame"],
    )
    show(
        console,
        "Whole-frame pass on top of tiles (1280x720 mosaic; photos = 43 faces in 9 photos)",
        whole,
        [
            "tiles",
            "whole_frame",
            "photos_found",
            "mosaic_found",
            "ms_per_frame",
            "ms_per_frame_min",
            "cpu_ms_per_frame",
        ],
    )
    if classifier:
        show(
            console,
            f"Classifier {model} (CPU)",
            classifier,
            ["intra_op_threads", "batch", "ms_per_face", "preprocess_ms_per_face"],
        )
    out = args.out or RESULTS_DIR / f"detection_{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "bench_detection",
        "started_utc": started.isoformat(timespec="seconds"),
        "command": " ".join(
            [Path(sys.executable).name, "-m", "benchmarks.bench_detection", *(argv or sys.argv[1:])]
        ),
        "machine": info,
        "settings": {
            "repeats": args.repeats,
            "min_face_px": MIN_FACE_PX,
            "iou_match": 0.3,
            "tile_overlap": DetectorConfig().tile_overlap,
            "timing": "median and min wall ms of `repeats` runs after one warm-up; cpu = process CPU ms/run",
        },
        "detection": detection,
        "whole_frame_pass": whole,
        "classifier": classifier,
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
