"""Replay speed alone: the 720p gallery at full speed, naive loop vs the defaults with each shipped model.

``python -m benchmarks.bench_replay [--repeats N]`` prints fps and × real time per run, so the replay target
(≥ 3× real time) can be checked in a fresh process without the full benchmark's other sections; the naive
loop in the same process gives the machine's speed at that moment for ratios.
"""

from __future__ import annotations

import argparse
import sys

from benchmarks import bench_detection
from benchmarks import bench_pipeline as bp
from benchmarks.gallery import media_missing_reason
from edumood_live.resources import SHIPPED_CLASSIFIERS, shipped_classifier_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2, help="runs per setup (default 2)")
    args = parser.parse_args(argv)
    reason = media_missing_reason()
    if reason is not None:
        print(f"skipped: {reason}")
        return 0
    item = next(i for i in bp.build_inputs(False) if i.key == "gallery720")
    speed = bench_detection.machine_speed_ms()
    print(f"machine speed: whole-frame detector pass {speed:.2f} ms ({bench_detection.USUAL_SPEED_MS} usual)")
    print("run  setup            fps   x_realtime  faces  ms/frame: detect classify crop")
    for run in range(args.repeats):
        naive = bp.run_naive(item, shipped_classifier_path("default"), item.replay_frames)
        x_naive = naive["fps"] / item.fps
        print(f"{run:3d}  naive          {naive['fps']:6.1f}  {x_naive:9.2f}  {naive['faces_per_frame']:5.1f}")
        for name in SHIPPED_CLASSIFIERS:
            r = bp.replay(item, bp.default_setup(item), shipped_classifier_path(name))
            ms = r["ms"]
            print(f"{run:3d}  defaults/{name:7s} {r['fps']:6.1f}  {r['x_realtime']:9.2f}  {r['faces_per_frame']:5.1f}"
                  f"  {ms['detect']:6.2f} {ms['classify']:8.2f} {ms['crop']:4.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
