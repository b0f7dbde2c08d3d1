"""Configs: pure to import, validated one way, defaults shared with the CLI."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edumood_live.cli import build_parser
from edumood_live.config import (
    AUTO,
    Auto,
    ClassifierConfig,
    DetectorConfig,
    RunConfig,
    SourceConfig,
    TrackerConfig,
    parse_detect_every,
    tracks_path,
)
from edumood_live.errors import ConfigError


def test_importing_config_loads_no_heavy_module() -> None:
    code = (
        "import sys, edumood_live.config\n"
        "heavy = [m for m in ('cv2', 'mediapipe', 'onnxruntime') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: DetectorConfig(workers=1.5), r"workers=1\.5 is not allowed; use an integer in 1\.\.32"),
        (lambda: DetectorConfig(min_face_px="32"), r"min_face_px='32' is not allowed; use an integer in 8\.\.4096"),
        (lambda: DetectorConfig(min_confidence="0.5"), r"min_confidence='0\.5' is not allowed"),
        (lambda: DetectorConfig(whole_frame=1), r"whole_frame=1 is not allowed; use True or False"),
        (lambda: ClassifierConfig(intra_op_threads=2.0), r"intra_op_threads=2\.0 .*1\.\.64"),
        (lambda: TrackerConfig(iou_threshold="0.3"), r"iou_threshold='0\.3' .*\(0, 1\]"),
        (lambda: SourceConfig(read_timeout_s=True), r"read_timeout_s=True .*> 0"),
        (lambda: RunConfig(sources="demo", window_s="10"), r"window_s='10' .*> 0"),
        (lambda: RunConfig(sources="demo", min_group=True), r"min_group=True .*>= 0"),
    ],
)
def test_every_config_rejects_wrong_types_with_a_clear_value_error(make, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        make()
    assert isinstance(info.value, ConfigError)


@pytest.mark.parametrize(("value", "expected"), [("auto", AUTO), ("AUTO", AUTO), (AUTO, AUTO), ("3", 3), (30, 30)])
def test_detect_every_is_an_int_or_the_auto_member(value: object, expected: object) -> None:
    parsed = parse_detect_every(value)  # type: ignore[arg-type]
    assert parsed == expected and type(parsed) is type(expected)


def test_tiles_auto_becomes_the_member() -> None:
    assert DetectorConfig(tiles="auto").tiles is AUTO and isinstance(AUTO, Auto)
    assert DetectorConfig(tiles="4x3").tiles == "4x3"
    assert str(AUTO) == "auto" and f"{AUTO}" == "auto"


def test_cli_defaults_are_the_configs_defaults() -> None:
    args = build_parser().parse_args([])
    source, detector, classifier, run = SourceConfig(), DetectorConfig(), ClassifierConfig(), RunConfig()
    assert (args.stride, args.folder_fps, args.read_timeout, args.watchdog) == (
        source.stride, source.folder_fps, source.read_timeout_s, source.watchdog_s)
    assert (args.min_face, args.detector_workers, args.min_confidence) == (
        detector.min_face_px, detector.workers, detector.min_confidence)
    assert (args.threads, args.device) == (classifier.intra_op_threads, classifier.device)
    assert (args.window, args.min_group) == (run.window_s, run.min_group)
    assert parse_detect_every(args.detect_every) == run.detect_every and args.tiles == detector.tiles


def test_tracks_path_sits_beside_the_file(tmp_path) -> None:
    assert tracks_path(tmp_path / "lesson.csv") == tmp_path / "lesson.tracks.csv"
