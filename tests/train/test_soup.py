"""Weight soups of real tiny fine-tunings: the mean of the weights, calibrated, tested and exportable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from export.onnx_export import export_onnx
from train.__main__ import main
from train.data import build_dataset
from train.fit import TrainConfig, _probe_head, load_run_data, run
from train.models import ARCHS, build_model
from train.recipe import load_recipe
from train.soup import make_soup

pytestmark = pytest.mark.usefixtures("dataset_cache_in_a_temporary_folder")


@pytest.fixture(scope="module")
def seeds(tiny_face_data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two fine-tunings of one recipe that differ in their seed only."""
    root = tmp_path_factory.mktemp("seeds")
    runs = []
    for seed in (0, 1):
        cfg = TrainConfig(recipe=str(tiny_face_data / "recipe.toml"), arch="fast_small", data_root=str(tiny_face_data),
                          out_dir=str(root / f"s{seed}"), epochs=2, batch_size=16, patience=3, threads=1, seed=seed)
        run(cfg)
        runs.append(root / f"s{seed}")
    return runs


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "best.pt", map_location="cpu", weights_only=False)["model"]


def test_a_soup_of_a_run_with_itself_is_that_run(seeds: list[Path], tmp_path: Path) -> None:
    results = make_soup([seeds[0], seeds[0]], tmp_path / "soup")
    for name, tensor in _weights(seeds[0]).items():
        assert torch.equal(_weights(tmp_path / "soup")[name], tensor), name
    alone = json.loads((seeds[0] / "metrics.json").read_text())
    assert results["splits"]["test"]["all"] == alone["splits"]["test"]["all"]
    assert results["temperature"] == pytest.approx(alone["temperature"])


def test_a_soup_is_the_mean_of_its_seeds_calibrated_tested_and_exportable(seeds: list[Path], tiny_face_data: Path,
                                                                         tmp_path: Path) -> None:
    out = tmp_path / "soup"
    results = make_soup(seeds, out)
    a, b, soup = _weights(seeds[0]), _weights(seeds[1]), _weights(out)
    floats = [k for k in a if a[k].is_floating_point()]
    assert any(not torch.equal(a[k], b[k]) for k in floats)  # the seeds really differ
    for k in floats:
        torch.testing.assert_close(soup[k], (a[k] + b[k]) / 2)
    assert set(results["splits"]) == {"val", "test"} and results["temperature"] > 0
    listed = json.loads((out / "soup.json").read_text())["ingredients"]
    assert [item["seed"] for item in listed] == [0, 1]
    assert all(0.0 <= item["val_macro_f1"] <= 1.0 for item in listed)
    data = build_dataset(load_recipe(tiny_face_data / "recipe.toml"), tiny_face_data, (48, 48), 1)
    exported = export_onnx(out / "best.pt", tmp_path / "soup.onnx", data.images[:16], "soup", "0.0.1", {})
    assert exported.max_abs_diff < 1e-3


def test_runs_of_another_recipe_or_start_are_refused_with_one_error_line(
        seeds: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other"
    other.mkdir()
    for name in ("manifest.json", "best.pt", "metrics.json"):
        (other / name).write_bytes((seeds[1] / name).read_bytes())
    config = json.loads((seeds[1] / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "lr": 0.1, "init_from": "elsewhere.pt"}))
    with pytest.raises(ValueError, match="init_from, lr differ"):
        make_soup([seeds[0], other], tmp_path / "soup")
    assert main(["soup", "--runs", str(seeds[0]), str(tmp_path / "missing"), "--out", str(tmp_path / "s")]) == 2
    assert "has no config.json" in capsys.readouterr().err
    with pytest.raises(ValueError, match="at least two"):
        make_soup([seeds[0]], tmp_path / "soup")


def test_a_calibrated_teacher_outputs_what_its_exported_model_outputs(seeds: list[Path]) -> None:
    from train.fit import _load_teacher
    from train.models import build_model

    ckpt = torch.load(seeds[0] / "best.pt", map_location="cpu", weights_only=False)
    meta = ckpt["meta"]
    raw = build_model(meta["arch"], len(meta["labels"]), meta["channels"])
    raw.load_state_dict(ckpt["model"])
    raw.eval()
    teacher, size = _load_teacher(str(seeds[0] / "best.pt"), tuple(meta["labels"]), torch.device("cpu"),
                                  calibrated=True)
    x = torch.rand(3, meta["channels"], *size)
    with torch.no_grad():
        expected = raw(x) / meta["temperature"] + torch.tensor(meta["class_bias"])
        assert torch.allclose(teacher.eval()(x), expected, atol=1e-5)
    assert meta["temperature"] != 1.0  # a fitted calibration, not the identity


def test_a_probe_head_depends_on_the_pretrained_network_and_the_data_not_on_the_seed(
        seeds: list[Path], tiny_face_data: Path) -> None:
    cfg = TrainConfig(recipe=str(tiny_face_data / "recipe.toml"), arch="fast_small", data_root=str(tiny_face_data),
                      init_from=str(seeds[0] / "best.pt"), head_init="probe")
    data = load_run_data(cfg)
    train_idx = np.flatnonzero(data.split_mask("train"))
    backbone = {k: v for k, v in _weights(seeds[0]).items() if not k.startswith("head.")}
    heads = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_model("fast_small", len(data.labels))
        model.load_state_dict(backbone, strict=False)
        random_head = model.head.weight.detach().clone()
        _probe_head(model, data, train_idx, (ARCHS["fast_small"].input_size,) * 2, torch.device("cpu"))
        assert not torch.equal(model.head.weight, random_head)
        heads.append(model.head.state_dict())
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])


def test_a_probe_head_needs_a_pretrained_network() -> None:
    with pytest.raises(ValueError, match="init_from"):
        TrainConfig(recipe="r.toml", head_init="probe")
