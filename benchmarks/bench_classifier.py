"""Classifier speed alone: ms/face of each shipped model per batch size, crop and inference apart.

``python -m benchmarks.bench_classifier [--repeats N] [--model NAME|PATH ...]`` prints one line per model,
onnxruntime thread count and batch (faces of the dlib-photo mosaic, 20-70 px), so the classifier target
(<= 0.1 ms/face batched) can be checked in a fresh process without the full benchmark. The machine's
speed at that moment is printed first (`bench_detection.machine_speed_ms`), since the VM's varies.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_detection import USUAL_SPEED_MS, bench_classifier, machine_speed_ms
from benchmarks.mosaic import FACES_DLIB_DIR, load_dlib_faces
from edumood_live.resources import SHIPPED_CLASSIFIERS, classifier_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per configuration (x4 per batch)")
    parser.add_argument("--model", type=classifier_path, nargs="*", help="models (default: every shipped one)")
    args = parser.parse_args(argv)
    if not (FACES_DLIB_DIR / "training.xml").is_file():
        print(f"skipped: annotated photos not found at {FACES_DLIB_DIR}")
        return 0
    photos = load_dlib_faces()
    models = args.model or [classifier_path(name) for name in SHIPPED_CLASSIFIERS]
    speed = machine_speed_ms()
    print(f"machine speed: whole-frame detector pass {speed:.2f} ms ({USUAL_SPEED_MS} at this VM's usual speed)")
    print(f"{'model':32s} {'input':>7s} {'threads':>7s} {'batch':>5s} {'ms/face':>8s} {'crop':>6s} {'inference':>9s}")
    for model in models:
        for row in bench_classifier(model, photos, args.repeats):
            size = "x".join(str(v) for v in row["input"][1:])
            total, crop = row["ms_per_face"], row["preprocess_ms_per_face"]
            print(f"{row['model']:32s} {size:>7s} {row['intra_op_threads']:7d} {row['batch']:5d} {total:8.3f} "
                  f"{crop:6.3f} {total - crop:9.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
