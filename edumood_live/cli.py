"""The ``edumood-live`` command: parse flags, install logging and signal handlers, run the pipeline.

This module parses the arguments and runs the commands; `cli_process` installs the logging and signal
handlers (only these two touch the process). Every `EduMoodError` becomes one line ``error: ...`` on
stderr and exit status 2, as do usage errors. Heavy modules (MediaPipe, onnxruntime) are imported only
once the flags are known, so ``--help``, ``--version`` and usage errors answer at once.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from rich.console import Console

from edumood_live import __version__
from edumood_live.cli_process import EXIT_FORCED, logging_to, prefer_fast_rtsp, quiet_opencv, stop_on_signals
from edumood_live.config import (
    ALL_SIGNALS,
    ClassifierConfig,
    DetectorConfig,
    Device,
    OutputConfig,
    RunConfig,
    SourceConfig,
)
from edumood_live.errors import EduMoodError

if TYPE_CHECKING:
    from edumood_live.cluster import ClusterRun
    from edumood_live.pipeline import Pipeline

logger = logging.getLogger("edumood_live.cli")  # not __name__: "__main__" under python -m

PROG = "edumood-live"
RESPONSIBLE_USE = (
    "responsible use: EduMood Live reports aggregate statistics of a room, never judgments about a person; "
    "emotion inference from faces is scientifically contested and prohibited in EU education "
    "institutions (AI Act art. 5(1)(f))"
)
LOCAL_RAY = "local"  # --ray without an address: start a Ray runtime on this machine
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# the flags' defaults are the configs' own defaults, written once (in edumood_live.config)
_SOURCE, _DETECTOR, _CLASSIFIER, _RUN = SourceConfig(), DetectorConfig(), ClassifierConfig(), RunConfig()

DESCRIPTION = """\
Class-level engagement statistics from classroom or meeting video: finds faces, classifies each
one with the model's labels, tracks them anonymously and writes aggregates per time window to a
live console, CSV and JSONL.

subcommands:
  edumood-live report OUT.html INPUT.csv [INPUT.jsonl ...]   HTML report from outputs
  edumood-live analyze PATH... [--csv FILE] [--jsonl FILE]   one row per face of images / video frames
"""
EXAMPLES = """\
examples:
  edumood-live --source demo                             bundled sample clip, live view
  edumood-live --source lesson.mp4 --csv lesson.csv --no-console
  edumood-live --source rtsp://user:pass@10.0.0.5/stream --csv room12.csv --jsonl room12.jsonl
  edumood-live --source cam1.mp4 --source cam2.mp4 --csv rooms.csv --window 30
  edumood-live --source lesson.mp4 --detect-every 3 --tiles 4x3 --min-face 24 --csv lesson.csv
  edumood-live --source lesson.mp4 --annotate review.webm annotated video, faces blurred
  edumood-live --source lesson.mp4 --signals attention --csv lesson.csv
                                                         head orientation only: no emotion model loaded
  edumood-live --ray --source rtsp://cam1/s --source rtsp://cam2/s --csv rooms.csv
                                                         one Ray actor per camera, Ray started here
  edumood-live --ray auto --source ... --source ...      on the Ray cluster this machine belongs to
  edumood-live report lesson.html lesson.csv             HTML report from CSV/JSONL outputs
  edumood-live analyze photos/ --csv faces.csv           one row per face of each image (see analyze --help)

outputs: one row per source and window (window_start, window_end, source, status, frames, fps,
  faces_mean, tracks, share_<label>..., engagement_index, dominant_label, low_confidence_share,
  dropped_frames, attention_share; with --ray also node, actor); labels come from the model file, and
  --signals attention has no share_<label> columns. Nothing showing a
  face is written unless --annotate is given, and then faces are blurred unless --no-blur.

exit status: 0 done (also after Ctrl-C or SIGTERM: the last window is written, marked partial if short),
  1 a source failed for good, 2 usage, configuration, model, source or output error,
  130 a second Ctrl-C (immediate exit).

responsible use: aggregate statistics only; emotion inference is scientifically contested and
  prohibited in EU education institutions (AI Act art. 5(1)(f)).
"""


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (usage is in --help)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {message} (see {self.prog} --help)\n")


def _number(kind: type, minimum: float, strict: bool) -> Any:
    """argparse type: an int/float above (or at) `minimum`."""
    relation = ">" if strict else ">="

    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"expected a number {relation} {minimum:g}, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``edumood-live [options]`` (the ``report`` subcommand has its own)."""
    p = _Parser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pos, int1 = _number(float, 0, True), _number(int, 1, False)
    src = p.add_argument_group("sources")
    src.add_argument("--source", action="append", metavar="SPEC",
                     help="webcam | 0 | 1 | rtsp://... | http(s)://... | file.mp4 | folder/ | demo; "
                          "repeat for several sources (default: webcam)")
    src.add_argument("--max-fps", type=pos, metavar="FPS", help="process at most this many frames per second")
    src.add_argument("--stride", type=int1, default=_SOURCE.stride, metavar="N", help="files/folders: every N-th frame")
    src.add_argument("--duration", type=pos, metavar="S",
                     help="stop after S seconds of source time (files) or wall time (live)")
    src.add_argument("--folder-fps", type=pos, default=_SOURCE.folder_fps, metavar="N",
                     help="image folders: images per second of source time, which sets how many images "
                          f"fall into a window (default {_SOURCE.folder_fps:g}: one image per second)")
    src.add_argument("--max-retries", type=_number(int, 0, False), metavar="N",
                     help="live: reconnect attempts after a loss (default: forever)")
    src.add_argument("--read-timeout", type=pos, default=_SOURCE.read_timeout_s, metavar="S",
                     help=f"live: read timeout (default {_SOURCE.read_timeout_s:g})")
    src.add_argument("--watchdog", type=pos, default=_SOURCE.watchdog_s, metavar="S",
                     help=f"live: reconnect when no frame came for S seconds (default {_SOURCE.watchdog_s:g})")
    mdl = p.add_argument_group("models")
    mdl.add_argument("--model", metavar="NAME|PATH",
                     help="ONNX classifier: a shipped one by name, 'default' or 'fast' (about 7x fewer "
                          "multiply-adds per face, less accurate: models/MODEL_CARD.md), or a file "
                          "(default: 'default')")
    mdl.add_argument("--device", choices=[d.value for d in Device], default=Device(_CLASSIFIER.device).value,
                     help="classifier device")
    mdl.add_argument("--flip-average", action="store_true",
                     help="average each face with its mirror image (twice the classifier work)")
    mdl.add_argument("--threads", type=int1, default=_CLASSIFIER.intra_op_threads, metavar="N",
                     help=f"classifier threads (default {_CLASSIFIER.intra_op_threads})")
    mdl.add_argument("--detector-workers", type=int1, default=_DETECTOR.workers, metavar="N",
                     help=f"detector instances running tiles in parallel (default {_DETECTOR.workers})")
    mdl.add_argument("--tiles", default=str(_DETECTOR.tiles), metavar="auto|CxR",
                     help="detector tiling: auto (from frame size and --min-face) or columns x rows, "
                          "e.g. 4x3")
    mdl.add_argument("--min-face", type=int1, default=_DETECTOR.min_face_px, metavar="PX",
                     help=f"smallest face to find (default {_DETECTOR.min_face_px})")
    mdl.add_argument("--min-confidence", type=pos, default=_DETECTOR.min_confidence, metavar="P",
                     help="detector threshold (0..1)")
    mdl.add_argument("--detect-every", default=str(_RUN.detect_every), metavar="K|auto",
                     help="run the detector every K-th frame (K in 1..30) and track in between; auto "
                          "(default) picks K from how fast faces move; 1 = every frame")
    mdl.add_argument("--signals", default=",".join(s.value for s in ALL_SIGNALS), metavar="LIST",
                     help="what to infer: expressions,attention (default), expressions, or attention (head "
                          "orientation from the detector's keypoints only; no expression/emotion model is "
                          "loaded or run, and rows have no class shares)")
    out = p.add_argument_group("outputs")
    out.add_argument("--csv", type=Path, metavar="PATH", help="write window rows to this CSV")
    out.add_argument("--jsonl", type=Path, metavar="PATH", help="write window rows to this JSON Lines file")
    out.add_argument("--append", action="store_true", help="append to existing files (same CSV header)")
    out.add_argument("--per-track", action="store_true",
                     help="also write anonymous per-track rows (out.csv -> out.tracks.csv)")
    out.add_argument("--window", type=pos, default=_RUN.window_s, metavar="S",
                     help=f"window length in seconds (default {_RUN.window_s:g})")
    out.add_argument("--min-group", type=_number(int, 0, False), default=_RUN.min_group, metavar="N",
                     help=f"withhold per-class shares for fewer than N faces (default {_RUN.min_group}; 0 = never)")
    out.add_argument("--no-console", action="store_true", help="no live view in the terminal")
    out.add_argument("--annotate", type=Path, metavar="OUT.webm|OUT.mp4",
                     help="write an annotated video (boxes, anonymous ids, labels; faces blurred): .webm is "
                          "VP8, which browsers play; .mp4 is MPEG-4 Part 2 for desktop players")
    out.add_argument("--no-blur", action="store_true", help="with --annotate: do not blur faces")
    p.add_argument("--ray", nargs="?", const=LOCAL_RAY, metavar="ADDRESS",
                   help="cluster mode: one Ray actor per source and a shared batching classifier (needs "
                        "pip install 'edumood-live[cluster]'); ADDRESS of a running cluster ('auto', "
                        "host:6379, ray://host:10001), or none to start Ray on this machine")
    ray = p.add_argument_group("cluster mode (--ray)")
    ray.add_argument("--camera-cpus", type=pos, metavar="N",
                     help="CPUs Ray reserves per camera worker (default: shared out so that every worker fits "
                          "node by node, with room to re-place a lost node's workers)")
    ray.add_argument("--classifier-cpus", type=pos, metavar="N", help="CPUs per classifier worker (default: as above)")
    ray.add_argument("--classifier-replicas", metavar="N|per-node", default="1",
                     help="shared classifier workers: a number, or per-node (one on every node; default 1)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def build_config(args: argparse.Namespace) -> RunConfig:
    """The run configuration for parsed flags; ConfigError names what is not allowed."""
    sources = tuple(
        SourceConfig(
            spec=spec, stride=args.stride, max_fps=args.max_fps, read_timeout_s=args.read_timeout,
            watchdog_s=args.watchdog, max_retries=args.max_retries, folder_fps=args.folder_fps,
        )
        for spec in (args.source or ["webcam"])
    )  # fmt: skip
    return RunConfig(
        sources=sources,
        detector=DetectorConfig(
            min_confidence=args.min_confidence, tiles=args.tiles, min_face_px=args.min_face,
            workers=args.detector_workers,
        ),  # fmt: skip
        classifier=ClassifierConfig(model_path=args.model, device=args.device, intra_op_threads=args.threads,
                                    flip_average=args.flip_average),
        output=OutputConfig(
            csv_path=args.csv, jsonl_path=args.jsonl, append=args.append, per_track=args.per_track,
            annotate_path=args.annotate, blur=not args.no_blur,
        ),  # fmt: skip
        window_s=args.window,
        min_group=args.min_group,
        detect_every=args.detect_every,
        duration_s=args.duration,
        signals=args.signals,
    )


# --------------------------------------------------------------------- commands


def run_command(args: argparse.Namespace, console: Console) -> int:
    """``edumood-live [options]``: build, announce, run until the end or a signal."""
    from edumood_live.pipeline import Pipeline
    from edumood_live.sinks.console import ConsoleSink

    prefer_fast_rtsp(args.source or [])
    config = build_config(args)
    view = None if args.no_console else ConsoleSink(console)
    sinks = [] if view is None else [view]
    with quiet_opencv(args.verbose):  # errors out here, before any frame, with one line
        if args.ray is None:
            pipeline: Pipeline | ClusterRun = Pipeline(config, sinks=sinks)
        else:
            pipeline = open_cluster(config, args.ray, sinks, args)
    logger.info("starting: %s", pipeline.describe())
    logger.info(RESPONSIBLE_USE)
    if args.no_console and not config.output.writes_rows:
        if config.output.annotate_path is None:
            logger.warning("nothing will be written: no --csv or --jsonl given and --no-console is set")
        else:
            logger.warning("no statistics will be written (no --csv or --jsonl); only the annotated video")
    if args.per_track and not config.output.writes_rows:
        logger.warning("--per-track has no effect without --csv or --jsonl")
    notice = view.show_stopping if view is not None and console.is_terminal else None
    with quiet_opencv(args.verbose), stop_on_signals(pipeline, notice):
        for _ in pipeline.run():
            pass
    failed = sorted(name for name, state in pipeline.source_states.items() if state == "failed")
    if failed:
        logger.error("source(s) failed: %s", ", ".join(failed))
        return EXIT_FAILED
    return EXIT_OK


def open_cluster(config: RunConfig, address: str, sinks: list[Any], args: argparse.Namespace | None = None
                 ) -> ClusterRun:
    """``--ray [ADDRESS]``: the same run spread over Ray (ConfigError when Ray is not installed)."""
    try:
        from edumood_live.cluster import ClusterConfig, ClusterRun
    except ModuleNotFoundError as exc:
        if exc.name != "ray":
            raise
        from edumood_live.errors import ConfigError

        raise ConfigError("--ray needs Ray: pip install 'edumood-live[cluster]'") from None
    if address == LOCAL_RAY:  # every actor runs on this machine: a missing file fails now, not after Ray starts
        from edumood_live.sources import check_local_path

        for source in config.sources:
            check_local_path(source.spec)
    sizing: dict[str, Any] = {}
    if args is not None:
        replicas = args.classifier_replicas
        sizing = {"camera_cpus": args.camera_cpus, "classifier_cpus": args.classifier_cpus,
                  "classifier_replicas": int(replicas) if replicas.isdigit() else replicas}
    cluster = ClusterConfig(address=None if address == LOCAL_RAY else address, **sizing)
    return ClusterRun(config, cluster, sinks=sinks)


def report_command(argv: Sequence[str]) -> int:
    """``edumood-live report OUT.html INPUT...``: one self-contained HTML report."""
    parser = _Parser(
        prog=f"{PROG} report",
        description="Build a self-contained HTML report (plots and tables) from CSV/JSONL window outputs.",
        epilog="example:\n  edumood-live report lesson.html lesson.csv other-room.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("out", type=Path, metavar="OUT.html", help="the report to write")
    parser.add_argument("inputs", type=Path, nargs="+", metavar="INPUT", help="CSV or JSONL outputs")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    args = parser.parse_args(list(argv))
    with logging_to(Console(stderr=True), args.verbose):
        try:
            from edumood_live.report import build_report

            out = build_report(list(args.inputs), args.out)
        except EduMoodError as exc:
            return fail(exc)
        logger.info("report written to %s", out)
    return EXIT_OK


# Config fields as the command line spells them: errors raised by the configs name the field (right for
# the Python API); on the command line they name the flag the user typed.
FIELD_FLAGS = {
    "tiles": "--tiles", "detect_every": "--detect-every", "annotate_path": "--annotate",
    "min_confidence": "--min-confidence", "min_face_px": "--min-face", "workers": "--detector-workers",
    "intra_op_threads": "--threads", "window_s": "--window", "min_group": "--min-group", "max_fps": "--max-fps",
    "stride": "--stride", "duration_s": "--duration", "max_retries": "--max-retries",
    "read_timeout_s": "--read-timeout", "watchdog_s": "--watchdog", "csv_path": "--csv", "jsonl_path": "--jsonl",
    "folder_fps": "--folder-fps", "camera_cpus": "--camera-cpus", "classifier_cpus": "--classifier-cpus",
    "classifier_replicas": "--classifier-replicas", "signals": "--signals",
}  # fmt: skip
_FIELD_RE = re.compile(r"\b(" + "|".join(FIELD_FLAGS) + r")=")


def fail(exc: BaseException) -> int:
    """Print ``error: <one line>`` to stderr (config fields named as flags); the exit status for user errors."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    message = _FIELD_RE.sub(lambda m: f"{FIELD_FLAGS[m.group(1)]} ", message)
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``edumood-live``; returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["report"]:
        return report_command(arguments[1:])
    if arguments[:1] == ["analyze"]:
        from edumood_live.cli_analyze import analyze_command

        return analyze_command(arguments[1:])
    args = build_parser().parse_args(arguments)
    console = Console(stderr=True)
    with logging_to(console, args.verbose):
        try:
            return run_command(args, console)
        except EduMoodError as exc:
            return fail(exc)
        except KeyboardInterrupt:  # before the signal handlers are in place (loading models)
            sys.stderr.write("interrupted\n")
            return EXIT_FORCED


if __name__ == "__main__":
    sys.exit(main())
