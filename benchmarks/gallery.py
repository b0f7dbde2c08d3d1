"""Gallery-view benchmark videos: the real clips of ``../shared/media/videos`` tiled 3x3 (an online class).

Run from the repository root:  python -m benchmarks.gallery  [--duration 20] [--fps 30]
Writes ``benchmarks/work/gallery_<W>x<H>.mp4`` (1280x720 and 1920x1080) and a ``.json`` manifest next
to each (cells, clips, expected faces). ``benchmarks/work/`` is git-ignored; nothing here is committed.

Each cell shows one clip letterboxed into a 16:9 tile with a dark gutter between tiles; every clip
loops at its own frame rate, so a 12 fps clip in a 30 fps gallery holds each frame for 2-3 output
frames (as a meeting client shows a slow participant). The ninth cell repeats the two-person corridor
clip half a loop later. Expected faces per cell are the estimates of ``shared/media/PROVENANCE.md``
(19 in all; the classroom clip's four faces are 11-20 px at 720p and hard for any detector).

The OpenCV wheel has no H.264 encoder, so the videos are MPEG-4 Part 2 (``mp4v``) at FFmpeg's default
quality (about 38 dB PSNR against the tiled frames); decoding them costs about as much as H.264.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
VIDEOS_DIR = REPO_ROOT.parent / "shared" / "media" / "videos"
WORK_DIR = Path(__file__).resolve().parent / "work"
SIZES = ((1280, 720), (1920, 1080))
GRID = 3  # 3x3 cells
GUTTER_PX = 4  # dark border between cells, as in a meeting client's gallery view
BACKGROUND = (32, 32, 32)
SMALL_CLIP = VIDEOS_DIR / "test_clip_small.mp4"  # input (a): 3 faces, 480x270, 12 fps


@dataclass(frozen=True)
class Cell:
    """One gallery tile: a clip, its loop offset in seconds and the faces it shows (PROVENANCE.md)."""

    clip: str
    faces: int
    offset_s: float = 0.0


CELLS = (
    Cell("classroom.mp4", 4),
    Cell("face-demographics-walking-and-pause.mp4", 3),
    Cell("head-pose-face-detection-female-and-male.mp4", 2),
    Cell("face-demographics-walking.mp4", 2),
    Cell("pexels-wolfgang-langer-woman-emotions-3063838.mp4", 1),
    Cell("head-pose-face-detection-male.mp4", 1),
    Cell("test_clip_small.mp4", 3),
    Cell("head-pose-face-detection-female.mp4", 1),
    Cell("face-demographics-walking.mp4", 2, offset_s=1.5),
)


def gallery_path(width: int, height: int, work_dir: Path = WORK_DIR) -> Path:
    """Where the gallery video of this size lives."""
    return work_dir / f"gallery_{width}x{height}.mp4"


def media_missing_reason() -> str | None:
    """Why the gallery cannot be built here (``../shared`` absent), or None."""
    missing = [c.clip for c in CELLS if not (VIDEOS_DIR / c.clip).is_file()]
    if missing:
        return (
            f"clips not found in {VIDEOS_DIR} ({', '.join(sorted(set(missing)))}); ../shared/media is needed"
        )
    return None


def cell_rects(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """(x0, y0, w, h) of each cell's 16:9 picture area, row by row, inside gutters."""
    cell_w, cell_h = width // GRID, height // GRID
    rects = []
    for row in range(GRID):
        for col in range(GRID):
            avail_w, avail_h = cell_w - GUTTER_PX, cell_h - GUTTER_PX
            w = min(avail_w, avail_h * 16 // 9)
            h = min(avail_h, w * 9 // 16)
            x0 = col * cell_w + (cell_w - w) // 2
            y0 = row * cell_h + (cell_h - h) // 2
            rects.append((x0, y0, w, h))
    return rects


def load_clip(path: Path, size_wh: tuple[int, int]) -> tuple[list[np.ndarray], float]:
    """All frames of a clip resized to ``size_wh`` (INTER_AREA down, INTER_LINEAR up), and its fps."""
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        shrink = size_wh[0] < image.shape[1]
        frames.append(
            cv2.resize(image, size_wh, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        )
    cap.release()
    if not frames:
        raise RuntimeError(f"{path} has no decodable frame")
    return frames, fps


def build_gallery(width: int, height: int, out: Path, duration_s: float, fps: float) -> dict[str, object]:
    """Write one gallery video; returns its manifest."""
    rects = cell_rects(width, height)
    clips: dict[tuple[str, tuple[int, int]], tuple[list[np.ndarray], float]] = {}
    for cell, (_, _, w, h) in zip(CELLS, rects, strict=True):
        key = (cell.clip, (w, h))
        if key not in clips:
            clips[key] = load_clip(VIDEOS_DIR / cell.clip, (w, h))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.mp4")
    writer = cv2.VideoWriter(str(tmp), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {tmp} with the mp4v codec")
    canvas = np.empty((height, width, 3), np.uint8)
    n_frames = int(round(duration_s * fps))
    for k in range(n_frames):
        canvas[...] = BACKGROUND
        t = k / fps
        for cell, (x0, y0, w, h) in zip(CELLS, rects, strict=True):
            frames, clip_fps = clips[(cell.clip, (w, h))]
            canvas[y0 : y0 + h, x0 : x0 + w] = frames[int((t + cell.offset_s) * clip_fps) % len(frames)]
        writer.write(canvas)
    writer.release()
    tmp.replace(out)
    manifest = {
        "video": out.name,
        "size": [width, height],
        "fps": fps,
        "frames": n_frames,
        "codec": "mp4v (MPEG-4 Part 2)",
        "grid": f"{GRID}x{GRID}",
        "expected_faces": sum(c.faces for c in CELLS),
        "cells": [
            {"clip": c.clip, "faces": c.faces, "offset_s": c.offset_s, "rect_xywh": list(r)}
            for c, r in zip(CELLS, rects, strict=True)
        ],
        "source": "shared/media/videos (Intel IoT DevKit sample-videos, CC BY 4.0; Pexels clip by "
        "Wolfgang Langer); see shared/media/PROVENANCE.md",
    }
    out.with_suffix(".json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def ensure_galleries(
    duration_s: float = 20.0, fps: float = 30.0, force: bool = False, work_dir: Path = WORK_DIR
) -> dict[tuple[int, int], Path]:
    """The gallery videos of every size in `SIZES`, built when missing (or ``force``)."""
    reason = media_missing_reason()
    if reason is not None:
        raise FileNotFoundError(reason)
    paths = {}
    for width, height in SIZES:
        path = gallery_path(width, height, work_dir)
        manifest = path.with_suffix(".json")
        current = False
        if path.is_file() and manifest.is_file():
            meta = json.loads(manifest.read_text())
            current = meta.get("frames") == int(round(duration_s * fps)) and meta.get("fps") == fps
        if force or not current:
            build_gallery(width, height, path, duration_s, fps)
        paths[(width, height)] = path
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of video (default 20)")
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate of the gallery (default 30)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the videos exist")
    args = parser.parse_args(argv)
    try:
        paths = ensure_galleries(args.duration, args.fps, force=args.force)
    except FileNotFoundError as exc:
        print(f"skipped: {exc}")
        return 0
    for (width, height), path in paths.items():
        meta = json.loads(path.with_suffix(".json").read_text())
        print(
            f"{width}x{height}: {path} ({meta['frames']} frames at {meta['fps']:g} fps, "
            f"{meta['expected_faces']} faces expected)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
