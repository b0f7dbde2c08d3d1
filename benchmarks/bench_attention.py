"""How well the attention signal (head orientation from BlazeFace's keypoints) finds people looking away.

``python -m benchmarks.bench_attention`` prints two tables:

1. Student Engagement webcam frames (``../shared/datasets/student_engagement/all/``): the ``Looking Away``
   class against the other five (engaged, bored, confused, drowsy, frustrated). Each image goes through
   the runtime's detector (whole frame, as a webcam close-up needs no tiles); the largest face is scored
   with `edumood_live.attention.facing`. ROC AUC of the facing score (and of -|yaw|, -|pitch| alone) for
   "not Looking Away", on images with a face, and with a missing face counted as not facing (score 0);
   the rates at the runtime's threshold (score >= 0.5). The data set has no person ids, so the AUC is
   per frame, not per person; consecutive frames of the same students make it look more certain than it is.
2. The head-pose clips (``../shared/media/videos/head-pose-*``, people turning): per clip, frames, yaw
   range, the share of face observations facing the front, and the yaw's mirror consistency (median
   ``|yaw(frame) + yaw(mirrored frame)|``: 0 for a perfect sign and size). No ground-truth angles exist.

Skips (exit 0) when ``../shared`` is absent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from edumood_live.attention import FACING_THRESHOLD, facing
from edumood_live.detector import DetectorConfig, FaceDetector

SHARED = Path(__file__).resolve().parents[2] / "shared"
ENGAGEMENT_DIR = SHARED / "datasets" / "student_engagement" / "all"
AWAY_CLASS = "Looking Away"
CLIPS = sorted((SHARED / "media" / "videos").glob("head-pose-*.mp4"))


def roc_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties)."""
    positive = np.asarray(positive, bool)
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), np.float64)
    sorted_scores = np.asarray(score)[order]
    i = 0
    while i < len(sorted_scores):  # mid-ranks for ties
        j = i
        while j + 1 < len(sorted_scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def largest_face(detector: FaceDetector, image: np.ndarray) -> tuple[float, float, float] | None:
    """(yaw, pitch, score) of the largest face, or None without one."""
    dets = detector.detect(image)
    if not len(dets):
        return None
    areas = (dets.boxes[:, 2] - dets.boxes[:, 0]) * (dets.boxes[:, 3] - dets.boxes[:, 1])
    i = int(areas.argmax())
    yaw, pitch, score = facing(dets.keypoints[i : i + 1], dets.boxes[i : i + 1])
    return float(yaw[0]), float(pitch[0]), float(score[0])


def engagement_table(detector: FaceDetector) -> None:
    classes = sorted(p.name for p in ENGAGEMENT_DIR.iterdir() if p.is_dir())
    rows: list[tuple[str, float, float, float, bool]] = []  # class, yaw, pitch, score, face found
    for name in classes:
        for path in sorted((ENGAGEMENT_DIR / name).iterdir()):
            image = cv2.imread(str(path))
            if image is None:
                continue
            found = largest_face(detector, image)
            rows.append((name, *(found or (np.nan, np.nan, 0.0)), found is not None))
    names = np.array([r[0] for r in rows])
    yaw, pitch, score = (np.array([r[i] for r in rows], np.float64) for i in (1, 2, 3))
    found = np.array([r[4] for r in rows])
    attending = names != AWAY_CLASS  # the positive class: not looking away
    print(f"Student Engagement, {len(rows)} webcam frames ({AWAY_CLASS}: {int((~attending).sum())}), "
          "largest face per frame, detector whole frame")  # fmt: skip
    print(f"{'class':14s} {'frames':>6s} {'face found':>10s} {'facing (>=0.5)':>14s} "
          f"{'median |yaw|':>12s} {'median pitch':>12s}")  # fmt: skip
    for name in classes:
        sel = names == name
        with_face = sel & found
        print(f"{name:14s} {int(sel.sum()):6d} {found[sel].mean():10.1%} "
              f"{(score[with_face] >= FACING_THRESHOLD).mean():14.1%} "
              f"{np.median(np.abs(yaw[with_face])):12.1f} {np.median(pitch[with_face]):12.1f}")  # fmt: skip
    print()
    print("ROC AUC for 'not Looking Away' (per frame; no person ids exist, so not per person):")
    a, f = attending, found
    print(f"  facing score, frames with a face ({int(f.sum())}):     {roc_auc(a[f], score[f]):.3f}")
    print(f"  -|yaw| alone, frames with a face:               {roc_auc(a[f], -np.abs(yaw[f])):.3f}")
    print(f"  -|pitch| alone, frames with a face:             {roc_auc(a[f], -np.abs(pitch[f])):.3f}")
    print(f"  facing score, no face counted as 0 (all {len(rows)}):  {roc_auc(a, score):.3f}")
    away, other = ~attending & found, attending & found
    print(f"  at the runtime threshold: {(score[away] < FACING_THRESHOLD).mean():.1%} of Looking Away frames "
          f"(with a face) count as not facing, {(score[other] >= FACING_THRESHOLD).mean():.1%} of the others "
          "as facing")  # fmt: skip


def clip_table(detector: FaceDetector) -> None:
    print()
    print("Head-pose clips (no ground-truth angles): yaw range, facing share, mirror consistency")
    print(f"{'clip':44s} {'frames':>6s} {'faces':>5s} {'yaw min':>7s} {'yaw max':>7s} {'facing':>7s} "
          f"{'|yaw+mirror| med':>16s}")  # fmt: skip
    for clip in CLIPS:
        capture = cv2.VideoCapture(str(clip))
        frames = faces = 0
        yaws: list[float] = []
        scores: list[float] = []
        mirror: list[float] = []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames += 1
            dets = detector.detect(frame)
            yaw, _, score = facing(dets.keypoints, dets.boxes)
            faces += len(dets)
            yaws += yaw.tolist()
            scores += score.tolist()
            flipped = detector.detect(np.ascontiguousarray(frame[:, ::-1]))
            if len(dets) == 1 and len(flipped) == 1:
                mirror.append(abs(float(yaw[0]) + float(facing(flipped.keypoints, flipped.boxes)[0][0])))
        capture.release()
        if not yaws:
            print(f"{clip.name:44s} {frames:6d} {faces:5d}  (no faces)")
            continue
        print(f"{clip.name:44s} {frames:6d} {faces:5d} {min(yaws):7.1f} {max(yaws):7.1f} "
              f"{np.mean(np.array(scores) >= FACING_THRESHOLD):7.1%} "
              f"{(np.median(mirror) if mirror else float('nan')):16.1f}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    if not (ENGAGEMENT_DIR / AWAY_CLASS).is_dir():
        print(f"skipped: {ENGAGEMENT_DIR / AWAY_CLASS} not found (../shared is absent)")
        return 0
    with FaceDetector(DetectorConfig(tiles="1x1")) as detector:
        engagement_table(detector)
        if CLIPS:
            clip_table(detector)
    return 0


if __name__ == "__main__":
    sys.exit(main())
