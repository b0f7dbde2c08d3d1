"""Grouped, stratified k-fold on the tiny real-face set: fold construction and the full run."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from train.data import Dataset, build_dataset
from train.kfold import KFoldConfig, fold_splits, foldable, recording_groups, run_kfold
from train.recipe import load_recipe

BLOCK = 6  # consecutive clip frames of one person form a recording block


@pytest.fixture(scope="module")
def grouped_recipe(tiny_face_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny recipe with recording blocks of BLOCK consecutive frames as groups."""
    text = (tiny_face_data / "recipe.toml").read_text()
    text = text.replace('kind = "crops"', f'kind = "crops"\ngroup = "block:{BLOCK}"')
    path = tmp_path_factory.mktemp("recipes") / "grouped.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def data_and_groups(grouped_recipe: Path, tiny_face_data: Path):
    recipe = load_recipe(grouped_recipe)
    data = build_dataset(recipe, tiny_face_data, (48, 48), 1)
    return data, recording_groups(data, recipe)


def test_groups_are_recording_blocks(data_and_groups) -> None:
    data, groups = data_and_groups
    for path, group in zip(data.paths, groups, strict=True):
        same = [p for p, g in zip(data.paths, groups, strict=True) if g == group]
        assert {Path(p).parent for p in same} == {Path(path).parent}
        assert {int(Path(p).stem) // BLOCK for p in same} == {int(Path(path).stem) // BLOCK}


PEOPLE_RECIPE = """
name = "people"
labels = ["A", "B"]
seed = 1
[[sources]]
name = "people"
roots = ["people"]
kind = "crops"
group = "folder"
[sources.labels]
"*" = "A"
[[sources]]
name = "other"
roots = ["other"]
kind = "crops"
role = "eval"
[sources.labels]
"*" = "B"
"""


def test_folds_leave_evaluation_only_sources_out_and_keep_a_person_together(tmp_path: Path) -> None:
    (tmp_path / "people.toml").write_text(PEOPLE_RECIPE)
    recipe = load_recipe(tmp_path / "people.toml")
    paths = [f"people/p{i % 4}/{i}.jpg" for i in range(16)] + [f"other/x/{i}.jpg" for i in range(4)]
    n = len(paths)
    data = Dataset(labels=("A", "B"), images=np.zeros((n, 1, 4, 4), np.uint8),
                   targets=np.array([0] * 16 + [1] * 4), split=np.zeros(n, np.int64),
                   source=np.array([0] * 16 + [1] * 4), source_names=("people", "other"), paths=paths,
                   hashes=[str(i) for i in range(n)], eval_sources=frozenset({"other"}))
    kept = foldable(data)
    assert kept.paths == paths[:16]  # the evaluation-only source is in no fold, so never trained on
    groups = recording_groups(kept, recipe)
    assert len(np.unique(groups)) == 4  # one group per person folder
    for g in np.unique(groups):
        assert len({Path(p).parent for p, h in zip(kept.paths, groups, strict=True) if h == g}) == 1


@pytest.mark.parametrize("folds", [2, 3, 5])
def test_folds_partition_data_without_splitting_a_group(data_and_groups, folds: int) -> None:
    data, groups = data_and_groups
    splits = fold_splits(data, groups, folds, val_fraction=0.25, seed=0)
    assert len(splits) == folds
    test_count = np.sum([s == 2 for s in splits], axis=0)
    assert (test_count == 1).all()  # every image is tested exactly once
    for split in splits:
        for g in np.unique(groups):
            assert len(set(split[groups == g].tolist())) == 1  # no group straddles two splits
        assert (split == 0).any() and (split == 1).any()
        assert set(data.targets[split == 2].tolist()) == {0, 1, 2}  # stratified: every label tested


def test_too_many_folds_for_the_groups(data_and_groups) -> None:
    data, groups = data_and_groups
    n = len(np.unique(groups))
    message = f"folds={n + 1} needs at least {n + 1} groups; the recipe's data has {n}"
    with pytest.raises(ValueError, match=message):
        fold_splits(data, groups, n + 1, 0.25, 0)


@pytest.fixture(scope="module")
def kfold_run(grouped_recipe: Path, tiny_face_data: Path, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("kfold")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        cfg = KFoldConfig(recipe=str(grouped_recipe), arch="fast_small", folds=3,
                          data_root=str(tiny_face_data), out_dir=str(work / "out"), epochs=1, batch_size=16,
                          threads=1)
        return work / "out", run_kfold(cfg)


def test_kfold_run_reports_folds_mean_std_and_single_split(kfold_run) -> None:
    out, report = kfold_run
    assert len(report["per_fold"]) == 3 and report["single_split"] is not None
    accuracies = [f["accuracy"] for f in report["per_fold"]]
    assert report["summary"]["accuracy"]["mean"] == pytest.approx(np.mean(accuracies))
    assert report["summary"]["accuracy"]["std"] == pytest.approx(np.std(accuracies, ddof=1))
    assert np.sum(report["pooled_confusion"]) == sum(f["n"] for f in report["per_fold"])
    table = (out / "kfold.md").read_text()
    assert "| fold 3 |" in table and "| **mean ± std** |" in table and "| single split |" in table
    for name in ("folds.png", "confusion_pooled.png"):
        assert cv2.imread(str(out / name)) is not None, name


def test_each_fold_is_a_repeatable_fit_run(kfold_run) -> None:
    out, _ = kfold_run
    config = json.loads((out / "fold_02" / "config.json").read_text())
    assert config["split_file"] == str(out / "fold_02" / "split.json")
    split = json.loads((out / "fold_02" / "split.json").read_text())
    manifest = json.loads((out / "fold_02" / "manifest.json").read_text())
    tested = sum(sum(c.values()) for c in manifest["counts"]["test"].values())
    assert tested == list(split.values()).count("test")


def test_parts_trained_apart_are_resumed_not_retrained(grouped_recipe: Path, tiny_face_data: Path,
                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    options = dict(recipe=str(grouped_recipe), arch="fast_small", folds=3, data_root=str(tiny_face_data),
                   out_dir=str(tmp_path / "out"), epochs=1, batch_size=16, threads=1, single_split=False)
    assert run_kfold(KFoldConfig(**options, only=("2",))) == {}
    out = tmp_path / "out"
    assert (out / "fold_02" / "metrics.json").is_file() and not (out / "fold_01").exists()
    assert not (out / "kfold.json").exists()
    trained = (out / "fold_02" / "last.pt").stat().st_mtime_ns
    report = run_kfold(KFoldConfig(**options))
    assert len(report["per_fold"]) == 3 and (out / "kfold.json").is_file()
    assert (out / "fold_02" / "last.pt").stat().st_mtime_ns == trained


def test_only_names_parts_of_the_run() -> None:
    with pytest.raises(ValueError, match="only: 4 is not a part of this run"):
        KFoldConfig(recipe="r.toml", folds=3, only=("1", "4"))
    with pytest.raises(ValueError, match="only: single is not a part"):
        KFoldConfig(recipe="r.toml", folds=3, single_split=False, only=("single",))


def test_bad_fold_count() -> None:
    with pytest.raises(ValueError, match="folds must be in 2..50, got 1"):
        KFoldConfig(recipe="r.toml", folds=1)
