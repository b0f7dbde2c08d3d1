"""Architecture comparison on the tiny real-face set: one run folder per arch, table, plots, re-run."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from train.__main__ import main
from train.compare import CompareConfig, ms_per_face, run_compare
from train.models import build_model, count_parameters

ARCHS = ("fast_small", "variant1")


@pytest.fixture(scope="module")
def compared(tiny_face_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    work = tmp_path_factory.mktemp("compare")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)  # the dataset cache (runs/cache) lands in the temporary folder
        cfg = CompareConfig(recipe=str(tiny_face_data / "recipe.toml"), archs=ARCHS,
                            data_root=str(tiny_face_data), out_dir=str(work / "out"), epochs=1, batch_size=16,
                            threads=1, timing_repeats=3)
        return work / "out", run_compare(cfg)


def test_every_arch_trained_tested_and_timed(compared: tuple[Path, list[dict]]) -> None:
    out, rows = compared
    assert [r["arch"] for r in rows] == list(ARCHS)
    for r in rows:
        assert (out / r["arch"] / "best.pt").is_file() and (out / r["arch"] / "confusion_test.png").is_file()
        assert r["params"] == count_parameters(build_model(r["arch"], 3))
        assert r["ms_per_face"] > 0 and r["split"] == "test"
        assert 0 <= r["accuracy"] <= 1 and r["micro_f1"] == pytest.approx(r["accuracy"])
    assert rows[1]["params"] > 10 * rows[0]["params"]  # variant1 is the big original CNN


def test_table_and_plots_written(compared: tuple[Path, list[dict]]) -> None:
    out, rows = compared
    table = (out / "comparison.md").read_text()
    assert "| arch | params | ms/face | accuracy | macro P | macro R | macro F1 | micro P" in table
    for r in rows:
        assert f"| {r['arch']} | {r['params']} |" in table
    assert len((out / "comparison.csv").read_text().strip().splitlines()) == len(rows) + 1
    assert json.loads((out / "comparison.json").read_text()) == rows
    for name in ("confusion_matrices.png", "tradeoff.png"):
        assert cv2.imread(str(out / name)) is not None, name


def test_rerun_from_config_reproduces_metrics(compared: tuple[Path, list[dict]],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    out, rows = compared
    monkeypatch.chdir(out.parent)
    assert main(["compare", "--config", str(out / "config.json")]) == 0  # resumes the finished runs
    again = json.loads((out / "comparison.json").read_text())
    for before, after in zip(rows, again, strict=True):
        assert {k: v for k, v in after.items() if k != "ms_per_face"} == \
               {k: v for k, v in before.items() if k != "ms_per_face"}


def test_ms_per_face_for_single_and_batched_calls(compared: tuple[Path, list[dict]]) -> None:
    out, _ = compared
    single = ms_per_face(out / "fast_small" / "best.pt", threads=1, repeats=3, batch=1)
    batched = ms_per_face(out / "fast_small" / "best.pt", threads=1, repeats=3, batch=8)
    assert np.isfinite(single) and np.isfinite(batched) and batched > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"archs": ("fast", "resnet")}, r"archs \['resnet'\] are not registered"),
        ({"archs": ("fast", "fast")}, "archs must be distinct"),
        ({"archs": ()}, "at least one architecture"),
        ({"timing_repeats": 0}, "timing_repeats"),
        ({"fit_options": {"arch": "fast"}}, r"fit_options \['arch'\] are not allowed"),
        ({"fit_options": {"no_such_field": 1}}, r"fit_options \['no_such_field'\] are not allowed"),
    ],
)
def test_bad_config_names_the_field(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CompareConfig(recipe="r.toml", **kwargs)


def test_fit_options_reach_every_training_run() -> None:
    cfg = CompareConfig(recipe="r.toml", archs=("fast_small",), fit_options={"label_smoothing": 0.0})
    assert cfg.train_config("fast_small").label_smoothing == 0.0


def test_fit_option_flag_parses_json_values() -> None:
    from train.__main__ import _parser, _research_config

    args = _parser().parse_args(["compare", "--recipe", "r.toml", "--fit-option", "label_smoothing=0",
                                 "--fit-option", "balance=none"])
    assert _research_config(args).fit_options == {"label_smoothing": 0, "balance": "none"}
