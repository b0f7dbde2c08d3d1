"""Data report on the tiny real-face set: plots, counts that add up, markdown, re-run from config."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from train.__main__ import main
from train.report import ReportConfig, run_report

LABELS = ["Left", "Middle", "Right"]


@pytest.fixture(scope="module")
def report_dir(tiny_face_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)  # the dataset cache (runs/cache) lands in the temporary folder
        run_report(ReportConfig(recipe=str(tiny_face_data / "recipe.toml"), data_root=str(tiny_face_data),
                                out_dir=str(work / "report"), size=48, samples_per_class=4))
    return work / "report"


def test_report_writes_readable_plots(report_dir: Path) -> None:
    for name, min_width in (("distribution.png", 800), ("samples.png", 400), ("intensity.png", 1000)):
        image = cv2.imread(str(report_dir / name))
        assert image is not None and image.shape[1] >= min_width, name


def test_summary_counts_add_up(report_dir: Path) -> None:
    summary = json.loads((report_dir / "summary.json").read_text())
    per_split = summary["counts_per_split"]
    assert set(per_split) == {"train", "val", "test"}
    assert sum(sum(c.values()) for c in per_split.values()) == summary["images"]
    assert sum(summary["counts_per_source"]["clip"].values()) == summary["images"]
    assert list(summary["intensity"]) == LABELS
    for stats in summary["intensity"].values():
        assert 0 < stats["brightness_mean"] < 255 and stats["contrast_mean"] > 0


def test_markdown_lists_labels_and_links_plots(report_dir: Path) -> None:
    text = (report_dir / "report.md").read_text()
    assert text.startswith("# Data report: tiny-faces")
    for label in LABELS:
        assert f"| {label} |" in text
    for name in ("distribution.png", "samples.png", "intensity.png"):
        assert f"]({name})" in text


def test_rerun_from_saved_config(report_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(report_dir.parent)
    again = tmp_path / "again"
    assert main(["report", "--config", str(report_dir / "config.json"), "--out", str(again)]) == 0
    summary = json.loads((report_dir / "summary.json").read_text())
    assert json.loads((again / "summary.json").read_text()) == summary
    assert json.loads((again / "config.json").read_text())["out_dir"] == str(again)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["report"], "needs --recipe"),
        (["report", "--recipe", "x.toml", "--size", "8"], "size must be in 16..256"),
        (["report", "--recipe", "missing.toml"], "recipe missing.toml does not exist"),
        (["report", "--config", "nope.json"], "config nope.json does not exist"),
        (["report", "--config", "c.json", "--size", "48"], "only --out may be added"),
    ],
)
def test_cli_errors_name_the_problem(argv: list[str], message: str, capsys: pytest.CaptureFixture[str],
                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_config_of_another_command_is_refused(report_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kfold", "--config", str(report_dir / "config.json")]) == 2
    assert "config of command 'report', not 'kfold'" in capsys.readouterr().err


def test_padding_stats_show_a_label_that_framing_alone_tells() -> None:
    import numpy as np

    from train.data import Dataset
    from train.report import padding_stats

    rng = np.random.default_rng(0)
    n = 400
    targets = np.tile([0, 1], n // 2)  # label B is framed tighter: its crops are mostly padding
    padding = np.where(targets == 1, rng.uniform(0.3, 0.5, n), rng.uniform(0.0, 0.1, n)).astype(np.float32)
    split = np.tile([0, 0, 2, 2], n // 4)
    data = Dataset(("A", "B"), np.zeros((n, 1, 4, 4), np.uint8), targets, split, np.zeros(n, np.int64), ("s",),
                   [str(i) for i in range(n)], [str(i) for i in range(n)], padding=padding)
    stats = padding_stats(data)
    assert stats["mean_share"]["s"]["A"] < 0.1 < 0.3 < stats["mean_share"]["s"]["B"]
    b = stats["threshold_alone"]["B"]
    assert not b["label_below"] and 0.1 <= b["threshold"] <= 0.3
    assert b["test_accuracy"] == 1.0 and b["test_recall"] == 1.0
