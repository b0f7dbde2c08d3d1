"""The peer: `fer` (github.com/justinshenk/fer) with its defaults on the same videos, in its own venv.

Set up once with ``bash benchmarks/setup_peer.sh`` (creates benchmarks/work/fer-venv), then:

    benchmarks/work/fer-venv/bin/python benchmarks/bench_peer_fer.py VIDEO [VIDEO ...] --out peer.json

`benchmarks.bench_pipeline` runs this for you in the same run and reads the JSON. fer is used exactly
as its README shows: ``FER()`` (OpenCV Haar cascade, minimum face 50 px, the bundled quantised
TFLite expression model) and ``detect_emotions(frame)`` per BGR frame, decoded with OpenCV like ours.
Nothing here imports edumood_live (mediapipe and onnxruntime are not in that venv).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks.mosaic` (cv2 + numpy only)

import cv2
import numpy as np


def load_fer() -> tuple[Any, str, str]:
    """fer's FER class (its import moved in 25.x), fer's version, TensorFlow's version."""
    import fer
    import tensorflow as tf

    try:
        from fer import FER
    except ImportError:
        from fer.fer import FER
    return FER, fer.__version__, tf.__version__


def bench_video(detector: Any, path: Path, loops: int, max_frames: int | None) -> dict[str, Any]:
    """Decode + ``detect_emotions`` on every frame (``loops`` passes over the file); fps and faces."""
    decode_s = fer_s = 0.0
    faces: list[int] = []
    fps = size = None
    for _ in range(loops):
        cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        fps = cap.get(cv2.CAP_PROP_FPS)
        while max_frames is None or len(faces) < max_frames:
            t0 = time.perf_counter()
            ok, frame = cap.read()
            t1 = time.perf_counter()
            if not ok:
                break
            size = [frame.shape[1], frame.shape[0]]
            if not faces and decode_s == 0.0:  # first frame: TensorFlow initialises lazily; not timed
                detector.detect_emotions(frame)
            t2 = time.perf_counter()
            result = detector.detect_emotions(frame)
            t3 = time.perf_counter()
            decode_s += t1 - t0
            fer_s += t3 - t2
            faces.append(len(result))
        cap.release()
    n = len(faces)
    return {
        "video": path.name,
        "size": size,
        "source_fps": fps,
        "frames": n,
        "loops": loops,
        "decode_ms_per_frame": 1000 * decode_s / max(n, 1),
        "fer_ms_per_frame": 1000 * fer_s / max(n, 1),
        "fps": n / (decode_s + fer_s) if n else 0.0,
        "x_realtime": (n / (decode_s + fer_s)) / fps if n and fps else None,
        "faces_per_frame_mean": statistics.fmean(faces) if faces else 0.0,
        "faces_per_frame_median": statistics.median(faces) if faces else 0.0,
        "faces_per_frame_max": max(faces, default=0),
    }


def bench_mosaic(detector: Any, repeats: int) -> list[dict[str, Any]]:
    """fer's face finding (its Haar detector) on the 43-face dlib mosaics, scored like ours."""
    from benchmarks.mosaic import FACES_DLIB_DIR, build_mosaic, count_matched, load_dlib_faces

    if not (FACES_DLIB_DIR / "training.xml").is_file():
        return []
    photos = load_dlib_faces()
    rows = []
    for w, h in ((1280, 720), (1920, 1080)):
        mosaic = build_mosaic(photos, w, h)
        boxes = detector.find_faces(mosaic.image)
        xyxy = np.asarray([[x, y, x + bw, y + bh] for x, y, bw, bh in boxes], np.float32).reshape(-1, 4)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            detector.detect_emotions(mosaic.image)
            times.append(1000 * (time.perf_counter() - t0))
        found = count_matched(mosaic.boxes, xyxy)
        rows.append(
            {
                "frame": f"{w}x{h}",
                "found": found,
                "faces": len(mosaic.boxes),
                "recall": found / len(mosaic.boxes),
                "detections": len(xyxy),
                "ms_per_frame": statistics.median(times),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("videos", type=Path, nargs="+", help="video files to run fer on")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument(
        "--min-frames",
        type=int,
        default=120,
        help="loop short files until at least this many frames were timed (default 120)",
    )
    parser.add_argument("--max-frames", type=int, default=300, help="frames per video at most (default 300)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs on each mosaic (default 5)")
    args = parser.parse_args(argv)
    fer_class, fer_version, tf_version = load_fer()
    detector = fer_class()  # the defaults: Haar cascade, min face 50 px, bundled quantised TFLite model
    started = time.time()
    rows = []
    for path in args.videos:
        cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        cap.release()
        loops = max(1, -(-args.min_frames // max(count, 1)))
        rows.append(bench_video(detector, path, loops, args.max_frames))
        r = rows[-1]
        print(f"fer {path.name}: {r['fps']:.1f} fps, {r['faces_per_frame_mean']:.1f} faces/frame", flush=True)
    report = {
        "benchmark": "bench_peer_fer",
        "peer": "fer",
        "peer_settings": "FER() defaults: OpenCV Haar cascade (scaleFactor 1.1, minNeighbors 5, "
        "min face 50 px), bundled emotion_model_quantized.tflite, detect_emotions() per frame",
        "versions": {
            "fer": fer_version,
            "tensorflow": tf_version,
            "opencv": cv2.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "load_avg_1_5_15": list(os.getloadavg()),
        "wall_s": None,
        "videos": rows,
        "mosaic": bench_mosaic(detector, args.repeats),
    }
    report["wall_s"] = time.time() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
