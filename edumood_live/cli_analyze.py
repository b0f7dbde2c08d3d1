"""``edumood-live analyze PATH...``: one row per face of images, folders of images and video frames.

Each input goes through `analyzer.FaceAnalyzer` (the runtime's detector, crop and classifier, no
tracking). Rows go to stdout as readable lines, and with ``--csv`` / ``--jsonl`` to files (``-`` = stdout
instead of the lines); they hold numbers and labels only, nothing that shows a face. An input that cannot
be read (missing, not an image, damaged) is reported in one line and skipped; the rows of the others are
written (and flushed) image by image, frame by frame, and the exit status is then 1.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np
from rich.console import Console

from edumood_live.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, PROG, _number, _Parser, fail
from edumood_live.cli_process import EXIT_FORCED, logging_to, quiet_opencv
from edumood_live.config import ALL_SIGNALS, AnalyzerConfig, ClassifierConfig, DetectorConfig, Device, SourceConfig
from edumood_live.errors import EduMoodError, FrameError, OutputError, SourceError

if TYPE_CHECKING:
    from edumood_live.analyzer import FaceAnalyzer, Faces

logger = logging.getLogger("edumood_live.cli")

STDOUT = "-"
DEMO = "demo"  # the bundled sample clip, as in ``--source demo``
_DETECTOR, _CLASSIFIER = DetectorConfig(), ClassifierConfig()
RESPONSIBLE_USE = (
    "responsible use: a label is what the model makes of one face in one image, not a reading of that "
    "person's state; emotion inference from faces is scientifically contested and prohibited in EU "
    "education institutions (AI Act art. 5(1)(f))"
)

DESCRIPTION = """\
Find and classify the faces of images, folders of images and video files: one row per face (file,
frame, face index, box, detector score, label, the probability of each label, head yaw/pitch and
whether the face looks towards the camera), with the same detector, crop and classifier as a live run
but without tracking or windows. Nothing that shows a face is written.
"""
EXAMPLES = """\
examples:
  edumood-live analyze photo.jpg                         readable lines on stdout
  edumood-live analyze photos/ --csv faces.csv           every image of a folder (-r: and its subfolders)
  edumood-live analyze lesson.mp4 --stride 30 --jsonl faces.jsonl   every 30th frame of a video
  edumood-live analyze a.jpg b.png --csv -               CSV on stdout

rows: file, frame, time_s (videos; empty for images), face, x0, y0, x1, y1 (pixels), score, label,
  prob_<label>... (labels from the model file; none with --signals attention), yaw_deg, pitch_deg,
  facing_score, facing (empty with --signals expressions, or where the detector gave no keypoints).

exit status: 0 every input analysed, 1 some inputs could not be read (the others' rows are written),
  2 usage, model or output error, or no input could be read.
"""


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``edumood-live analyze``."""
    p = _Parser(prog=f"{PROG} analyze", description=DESCRIPTION, epilog=EXAMPLES,
                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    pos, int1 = _number(float, 0, True), _number(int, 1, False)
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help=f"image files, folders of images, video files, or '{DEMO}' (the bundled clip)")
    p.add_argument("-r", "--recursive", action="store_true", help="folders: also the images of their subfolders")
    p.add_argument("--stride", type=int1, default=1, metavar="N", help="videos: every N-th frame (default 1)")
    p.add_argument("--csv", metavar="PATH", help=f"write the rows to this CSV ('{STDOUT}': stdout)")
    p.add_argument("--jsonl", metavar="PATH", help=f"write the rows to this JSON Lines file ('{STDOUT}': stdout)")
    p.add_argument("-q", "--quiet", action="store_true", help="no readable lines on stdout")
    p.add_argument("--signals", default=",".join(s.value for s in ALL_SIGNALS), metavar="LIST",
                   help="what to infer: expressions,attention (default), expressions, or attention (head "
                        "orientation only: no expression model is loaded, rows have no label or prob_ values)")
    p.add_argument("--model", metavar="NAME|PATH", help="ONNX classifier: 'default', 'fast' or a file")
    p.add_argument("--device", choices=[d.value for d in Device], default=Device(_CLASSIFIER.device).value,
                   help="classifier device")
    p.add_argument("--flip-average", action="store_true", help="average each face with its mirror image")
    p.add_argument("--threads", type=int1, default=_CLASSIFIER.intra_op_threads, metavar="N",
                   help=f"classifier threads (default {_CLASSIFIER.intra_op_threads})")
    p.add_argument("--detector-workers", type=int1, default=_DETECTOR.workers, metavar="N",
                   help=f"detector instances running tiles in parallel (default {_DETECTOR.workers})")
    p.add_argument("--tiles", default=str(_DETECTOR.tiles), metavar="auto|CxR",
                   help="detector tiling: auto (from image size and --min-face) or columns x rows")
    p.add_argument("--min-face", type=int1, default=_DETECTOR.min_face_px, metavar="PX",
                   help=f"smallest face to find (default {_DETECTOR.min_face_px})")
    p.add_argument("--min-confidence", type=pos, default=_DETECTOR.min_confidence, metavar="P",
                   help="detector threshold (0..1)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    return p


def build_config(args: argparse.Namespace) -> AnalyzerConfig:
    return AnalyzerConfig(
        detector=DetectorConfig(min_confidence=args.min_confidence, tiles=args.tiles, min_face_px=args.min_face,
                                workers=args.detector_workers),
        classifier=ClassifierConfig(model_path=args.model, device=args.device, intra_op_threads=args.threads,
                                    flip_average=args.flip_average),
        signals=args.signals,
    )  # fmt: skip


# ----------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Input:
    """One file to analyse and the name its rows carry."""

    path: Path
    name: str
    video: bool


def _natural_key(path: Path) -> list[object]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", str(path))]


def collect_inputs(paths: Sequence[str], recursive: bool) -> tuple[list[Input], list[str]]:
    """The files named by `paths` (folders give their images, in natural order), and one line per path
    that gives nothing (missing, an empty folder)."""
    from edumood_live.resources import demo_clip_path
    from edumood_live.sources.files import IMAGE_SUFFIXES

    inputs: list[Input] = []
    problems: list[str] = []
    for spec in paths:
        path = Path(spec).expanduser()
        if spec == DEMO and not path.exists():
            inputs.append(Input(demo_clip_path(), DEMO, video=True))
        elif path.is_dir():
            found = path.rglob("*") if recursive else path.iterdir()
            images = sorted((p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                             and not any(part.startswith(".") for part in p.relative_to(path).parts)),
                            key=_natural_key)  # fmt: skip
            if not images:
                deeper = "" if recursive else " (-r looks in subfolders)"
                problems.append(f"{spec}: folder contains no image files{deeper}")
            inputs += [Input(p, str(p), video=False) for p in images]
        elif path.is_file():
            inputs.append(Input(path, spec, video=path.suffix.lower() not in IMAGE_SUFFIXES))
        else:
            problems.append(f"{spec}: no such file or folder")
    return inputs, problems


def frames_of(item: Input, stride: int) -> Iterator[tuple[int | None, float | None, np.ndarray]]:
    """(frame index, time in s, BGR image) of an input: one for an image, every stride-th for a video.
    FrameError / SourceError when it cannot be read."""
    if not item.video:
        from edumood_live.analyzer import read_image

        yield None, None, read_image(item.path)
        return
    from edumood_live.sources.files import VideoFileSource

    source = VideoFileSource(SourceConfig(spec=str(item.path), stride=stride), item.path, name=item.name)
    try:
        while not source.finished:
            frame = source.read()
            if frame is not None:
                yield frame.index, frame.timestamp_ms / 1000.0, frame.image
        if source.stats().decode_errors:
            stats = source.stats()
            logger.warning("%s: %d frame(s) could not be decoded (last: %s)", item.name, stats.decode_errors,
                           stats.last_error)
    finally:
        source.close()


# ----------------------------------------------------------------------------- rows


def columns(labels: Sequence[str]) -> list[str]:
    """The row columns for a model with these labels."""
    probs = [f"prob_{label.lower()}" for label in labels]
    return ["file", "frame", "time_s", "face", "x0", "y0", "x1", "y1", "score", "label", *probs,
            "yaw_deg", "pitch_deg", "facing_score", "facing"]  # fmt: skip


def _num(value: float, digits: int) -> float | None:
    return None if math.isnan(value) else round(value, digits)


def face_rows(file: str, frame: int | None, time_s: float | None, faces: Faces) -> list[dict[str, object]]:
    """One row per face, in `columns` order; None for what is unknown (no keypoints, an image's frame)."""
    rows = []
    for face in faces:
        row: dict[str, object] = {"file": file, "frame": frame, "time_s": None if time_s is None else round(time_s, 3),
                                  "face": face.index}  # fmt: skip
        row.update(zip(("x0", "y0", "x1", "y1"), (round(v, 1) for v in face.box), strict=True))
        row["score"] = round(face.score, 4)
        row["label"] = face.label
        row.update({f"prob_{label.lower()}": round(p, 4) for label, p in face.probs.items()})
        row.update(yaw_deg=_num(face.yaw_deg, 1), pitch_deg=_num(face.pitch_deg, 1),
                   facing_score=_num(face.facing_score, 3), facing=face.facing)  # fmt: skip
        rows.append(row)
    return rows


def readable(row: dict[str, object], labels: Sequence[str]) -> str:
    """One row as a line for people: ``photo.jpg  face 0  box 12,40,96,130  score 0.97  Engaged 0.71 ...``."""
    where = str(row["file"]) + ("" if row["frame"] is None else f"  frame {row['frame']}")
    box = ",".join(f"{row[k]:.0f}" for k in ("x0", "y0", "x1", "y1"))
    parts = [where, f"face {row['face']}", f"box {box}", f"score {row['score']:.2f}"]
    if labels:
        probs = " ".join(f"{label.lower()} {row[f'prob_{label.lower()}']:.2f}" for label in labels)
        parts.append(f"{row['label']}  ({probs})")
    if row["facing"] is not None:
        parts.append(f"{'facing' if row['facing'] else 'turned away'} (yaw {row['yaw_deg']:+.0f}°, "
                     f"pitch {row['pitch_deg']:+.0f}°)")  # fmt: skip
    return "  ".join(parts)


class RowWriters:
    """Where rows go: readable lines on stdout, a CSV, a JSONL (each flushed after every image or frame)."""

    def __init__(self, stack: ExitStack, args: argparse.Namespace, labels: Sequence[str]) -> None:
        self.labels = list(labels)
        self.columns = columns(labels)
        self.lines = not args.quiet and STDOUT not in (args.csv, args.jsonl)
        self.csv: csv.DictWriter[str] | None = None
        self.jsonl: IO[str] | None = None
        self._files: list[IO[str]] = []
        if args.csv is not None:
            self.csv = csv.DictWriter(self._open(stack, args.csv), self.columns, lineterminator="\n")
            self.csv.writeheader()
        if args.jsonl is not None:
            self.jsonl = self._open(stack, args.jsonl)

    def _open(self, stack: ExitStack, name: str) -> IO[str]:
        if name == STDOUT:
            file: IO[str] = sys.stdout
        else:
            try:
                file = stack.enter_context(open(name, "w", encoding="utf-8", newline=""))  # noqa: SIM115
            except OSError as exc:
                raise OutputError(f"cannot open {name}: {exc.strerror or exc}") from exc
        self._files.append(file)
        return file

    def write(self, rows: list[dict[str, object]]) -> None:
        try:
            for row in rows:
                if self.lines:
                    sys.stdout.write(readable(row, self.labels) + "\n")
                if self.csv is not None:
                    self.csv.writerow(row)
                if self.jsonl is not None:
                    self.jsonl.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
            for file in (sys.stdout, *self._files):
                file.flush()
        except OSError as exc:
            raise OutputError(f"cannot write the rows: {exc.strerror or exc}") from exc


# ----------------------------------------------------------------------------- the command


def check_outputs(args: argparse.Namespace, inputs: Sequence[Input]) -> None:
    """OutputError for outputs that would clash: two on stdout, the same file twice, an input overwritten."""
    named = [name for name in (args.csv, args.jsonl) if name is not None]
    if named.count(STDOUT) > 1:
        raise OutputError(f"--csv and --jsonl cannot both be '{STDOUT}' (stdout)")
    files = [Path(name).resolve() for name in named if name != STDOUT]
    if len(set(files)) != len(files):
        raise OutputError("--csv and --jsonl need different files")
    clash = set(files) & {item.path.resolve() for item in inputs}
    if clash:
        raise OutputError(f"output {sorted(clash)[0]} is also an input; write the rows elsewhere")


def analyze_all(analyzer: FaceAnalyzer, inputs: Sequence[Input], stride: int, writers: RowWriters) -> list[str]:
    """Analyse every input, writing the rows of each image or frame as it is done; the names of the inputs
    that could not be read (each reported in one line)."""
    failed, counts = [], {"images": 0, "frames": 0, "faces": 0}
    for item in inputs:
        found = 0
        try:
            for frame, time_s, image in frames_of(item, stride):
                rows = face_rows(item.name, frame, time_s, analyzer.analyze(image))
                writers.write(rows)
                found += len(rows)
                counts["frames" if item.video else "images"] += 1
        except (FrameError, SourceError) as exc:
            reason = str(exc).removeprefix(item.name).removeprefix(str(item.path)).lstrip(": ")
            logger.error("skipped %s: %s", item.name, reason)
            failed.append(item.name)
            continue
        finally:
            counts["faces"] += found
        if not found:
            logger.info("%s: no face found", item.name)
    logger.info("analysed %d image(s) and %d video frame(s): %d face(s)%s", counts["images"], counts["frames"],
                counts["faces"], f"; {len(failed)} input(s) could not be read" if failed else "")
    return failed


def analyze_command(argv: Sequence[str]) -> int:
    """``edumood-live analyze PATH...``; returns the exit status."""
    args = build_parser().parse_args(list(argv))
    with logging_to(Console(stderr=True), args.verbose), quiet_opencv(args.verbose):
        try:
            config = build_config(args)
            inputs, problems = collect_inputs(args.paths, args.recursive)
            if not inputs:
                return fail(EduMoodError("; ".join(problems) or "no image or video to analyse"))
            for problem in problems:
                logger.error("skipped %s", problem)
            check_outputs(args, inputs)
            from edumood_live.analyzer import FaceAnalyzer

            with FaceAnalyzer(config) as analyzer, ExitStack() as stack:
                writers = RowWriters(stack, args, analyzer.labels)
                logger.info(RESPONSIBLE_USE)
                failed = analyze_all(analyzer, inputs, args.stride, writers)
        except EduMoodError as exc:
            return fail(exc)
        except KeyboardInterrupt:
            sys.stderr.write("interrupted\n")
            return EXIT_FORCED
    if len(failed) == len(inputs):
        return EXIT_USAGE
    return EXIT_FAILED if failed or problems else EXIT_OK
