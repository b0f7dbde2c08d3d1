"""A tiny real train -> ONNX export -> onnxruntime load -> metadata and parity check."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from edumood_live.classifier import ClassifierConfig, CropSpec, FaceClassifier
from export.onnx_export import PARITY_TOLERANCE, ExportError, check_parity, export_onnx, load_checkpoint
from train.__main__ import main
from train.data import build_dataset
from train.fit import TrainConfig, _aux_train_data, run, source_label_masks
from train.recipe import load_recipe

pytestmark = pytest.mark.usefixtures("dataset_cache_in_a_temporary_folder")


@pytest.fixture(scope="module")
def trained_run(tiny_face_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(recipe=str(tiny_face_data / "recipe.toml"), arch="fast_small", data_root=str(tiny_face_data),
                      out_dir=str(out), epochs=3, batch_size=16, lr=3e-3, patience=3, threads=1)
    run(cfg)
    return out


def test_run_folder_has_config_manifest_metrics_and_plot(trained_run: Path) -> None:
    for name in ("config.json", "manifest.json", "metrics.json", "best.pt", "last.pt", "confusion_test.png"):
        assert (trained_run / name).is_file(), name
    manifest = json.loads((trained_run / "manifest.json").read_text())
    assert manifest["labels"] == ["Left", "Middle", "Right"]
    assert len(manifest["file_list_sha256"]) == 64
    assert sum(manifest["counts"]["test"]["clip"].values()) > 0
    metrics = json.loads((trained_run / "metrics.json").read_text())
    test = metrics["splits"]["test"]["all"]
    assert {"accuracy", "macro_f1", "micro_f1", "macro_precision", "micro_recall", "confusion_matrix"} <= set(test)
    assert np.asarray(test["confusion_matrix"]).sum() == test["n"]
    assert metrics["temperature"] > 0 and len(metrics["class_bias"]) == 3
    assert set(metrics["uncalibrated"]) == {"val", "test"}


def test_export_loads_in_runtime_with_metadata_and_parity(trained_run: Path, tiny_face_data: Path,
                                                          tmp_path: Path) -> None:
    recipe = load_recipe(tiny_face_data / "recipe.toml")
    data = build_dataset(recipe, tiny_face_data, (48, 48), 1)
    onnx_path = tmp_path / "tiny.onnx"
    result = export_onnx(trained_run / "best.pt", onnx_path, data.images, "tiny", "0.0.1",
                         {"recipe": recipe.name})
    assert result.max_abs_diff <= PARITY_TOLERANCE and result.parity_images == len(data.images)

    with FaceClassifier(ClassifierConfig(model_path=onnx_path, device="cpu")) as classifier:
        assert classifier.labels == ("Left", "Middle", "Right")
        assert tuple(classifier.input_size) == (48, 48) and classifier.channels == 1
        assert classifier.metadata["trained_on"] == {"recipe": "tiny-faces"}
        assert "test" in classifier.metadata["metrics"]
        frame = np.full((120, 160, 3), 128, np.uint8)
        probs = classifier.classify(frame, np.array([[10, 10, 60, 60], [50, 20, 120, 100]], np.float32))
    assert probs.shape == (2, 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)


def test_runtime_classifies_a_real_frame_as_training_saw_it(trained_run: Path, tmp_path: Path,
                                                             demo_frames: list[np.ndarray]) -> None:
    """Train -> export -> the product's detector, crop and onnxruntime on a real frame: the same logits as
    the PyTorch network on the training pipeline's crops of that frame."""
    from edumood_live.detector import DetectorConfig, FaceDetector
    from export.onnx_export import normalise
    from train.data import FaceCropper

    onnx_path = tmp_path / "tiny.onnx"
    export_onnx(trained_run / "best.pt", onnx_path, np.zeros((2, 1, 48, 48), np.uint8), "tiny", "0.0.1", {})
    frame = demo_frames[20]
    with FaceDetector(DetectorConfig()) as detector:
        boxes = detector.detect(frame).boxes
    with FaceClassifier(ClassifierConfig(model_path=onnx_path, device="cpu")) as classifier:
        assert classifier.preprocessor.crop == CropSpec(TrainConfig(recipe="").crop_margin)
        probs = classifier.classify(frame, boxes)
    cropper = FaceCropper((48, 48), 1, CropSpec(TrainConfig(recipe="").crop_margin))
    try:
        crops = np.stack([cropper.cut(frame, box)[0] for box in boxes])
    finally:
        cropper.close()
    model, meta = load_checkpoint(trained_run / "best.pt")
    with torch.no_grad():
        logits = model(torch.from_numpy(normalise(crops))) / meta["temperature"] + torch.tensor(meta["class_bias"])
    assert len(boxes) == 3
    np.testing.assert_allclose(probs, torch.softmax(logits, 1).numpy(), atol=1e-4)


def test_parity_check_fails_on_a_different_model(trained_run: Path, tiny_face_data: Path, tmp_path: Path) -> None:
    recipe = load_recipe(tiny_face_data / "recipe.toml")
    data = build_dataset(recipe, tiny_face_data, (48, 48), 1)
    onnx_path = tmp_path / "tiny.onnx"
    export_onnx(trained_run / "best.pt", onnx_path, data.images[:8], "tiny", "0.0.1", {})
    model, _ = load_checkpoint(trained_run / "best.pt")
    with pytest.MonkeyPatch.context():
        for p in model.parameters():
            p.data.add_(0.5)
    with pytest.raises(ExportError, match="differs from PyTorch"):
        check_parity(model, onnx_path, data.images[:8])


def test_evaluate_command_recalibrates_a_finished_run(trained_run: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    before = json.loads((trained_run / "metrics.json").read_text())
    assert main(["evaluate", "--run", str(trained_run)]) == 0
    after = json.loads((trained_run / "metrics.json").read_text())
    assert after["history"] == before["history"]  # training history kept
    assert after["splits"]["test"]["all"]["n"] == before["splits"]["test"]["all"]["n"]
    assert "macro_f1" in capsys.readouterr().out
    assert main(["evaluate", "--run", str(tmp_path / "missing")]) == 2
    assert "error:" in capsys.readouterr().err


def test_distillation_from_a_trained_run(trained_run: Path, tiny_face_data: Path, tmp_path: Path) -> None:
    common = dict(recipe=str(tiny_face_data / "recipe.toml"), data_root=str(tiny_face_data), epochs=2,
                  batch_size=16, patience=3, threads=1)
    cfg = TrainConfig(arch="fast_small", out_dir=str(tmp_path / "student"), teacher=str(trained_run / "best.pt"),
                      distill_weight=0.7, **common)
    metrics = run(cfg)
    assert 0.0 <= metrics["splits"]["test"]["all"]["macro_f1"] <= 1.0
    assert json.loads((tmp_path / "student" / "config.json").read_text())["teacher"] == str(trained_run / "best.pt")
    # a teacher of another input size sees the batch resized to its own (48x48 teacher, 64x64 student)
    bigger = run(TrainConfig(arch="fast", out_dir=str(tmp_path / "bigger"), teacher=str(trained_run / "best.pt"),
                             **common))
    assert 0.0 <= bigger["splits"]["test"]["all"]["macro_f1"] <= 1.0
    ckpt = torch.load(trained_run / "best.pt", map_location="cpu", weights_only=False)
    ckpt["meta"]["labels"] = ["Left", "Right", "Middle"]
    torch.save(ckpt, tmp_path / "relabelled.pt")
    with pytest.raises(ValueError, match="teacher .* has labels"):
        run(TrainConfig(arch="fast_small", out_dir=str(tmp_path / "other"), teacher=str(tmp_path / "relabelled.pt"),
                        **common))


SPLIT_SOURCES_RECIPE = """
name = "tiny-two-sources"
labels = ["Left", "Middle", "Right"]
seed = 7
[split]
val_fraction = 0.25
test_fraction = 0.25
[[sources]]
name = "sides"
roots = ["mirrored"]
kind = "crops"
[sources.labels]
left = "Left"
right = "Right"
[[sources]]
name = "everyone"
roots = ["faces"]
kind = "crops"
[sources.labels]
left = "Left"
middle = "Middle"
right = "Right"
"""


def test_partial_labels_train_each_source_over_the_labels_it_holds(tiny_face_data: Path, tmp_path: Path) -> None:
    """A second source with only two of the three labels (the clip's side faces, mirrored: other pixels)."""
    root = tmp_path / "data"
    (root / "faces").parent.mkdir()
    (root / "faces").symlink_to(tiny_face_data / "faces")
    for name in ("left", "right"):
        (root / "mirrored" / name).mkdir(parents=True)
        for path in sorted((tiny_face_data / "faces" / name).glob("*.png")):
            cv2.imwrite(str(root / "mirrored" / name / path.name), cv2.flip(cv2.imread(str(path)), 1))
    (tmp_path / "two.toml").write_text(SPLIT_SOURCES_RECIPE)
    cfg = TrainConfig(recipe=str(tmp_path / "two.toml"), arch="fast_small", data_root=str(root),
                      out_dir=str(tmp_path / "run"), epochs=2, batch_size=16, patience=3, threads=1,
                      partial_labels=True)
    data = build_dataset(load_recipe(tmp_path / "two.toml"), root, (48, 48), 1,
                         cache_dir=tmp_path / "cache", crop=CropSpec(0.3))
    masks = source_label_masks(data, np.flatnonzero(data.split_mask("train")))
    sides, everyone = (data.source_names.index(name) for name in ("sides", "everyone"))
    assert (data.source == sides).any() and (data.source == everyone).any()
    assert (masks[data.source == sides] == [True, False, True]).all()  # no Middle face in this source
    assert masks[data.source == everyone].all()
    metrics = run(cfg)
    assert 0.0 <= metrics["splits"]["test"]["all"]["macro_f1"] <= 1.0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["partial_labels"] is True


AUX_RECIPE = """
name = "tiny-aux"
labels = ["Side", "Centre"]
seed = 11
[split]
val_fraction = 0.2
test_fraction = 0.0
[[sources]]
name = "clip"
roots = ["faces"]
kind = "crops"
[sources.labels]
left = "Side"
middle = "Centre"
right = "Side"
"""


def test_an_auxiliary_recipe_trains_its_own_head_on_its_train_split_only(tiny_face_data: Path,
                                                                          tmp_path: Path) -> None:
    (tmp_path / "aux.toml").write_text(AUX_RECIPE)
    cfg = TrainConfig(recipe=str(tiny_face_data / "recipe.toml"), arch="fast_small", data_root=str(tiny_face_data),
                      out_dir=str(tmp_path / "run"), epochs=2, batch_size=16, patience=3, threads=1,
                      aux_recipe=str(tmp_path / "aux.toml"), aux_weight=0.5, backbone_lr_scale=0.3)
    metrics = run(cfg)
    assert 0.0 <= metrics["splits"]["test"]["all"]["macro_f1"] <= 1.0
    last = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=False)
    assert last["aux_head"]["weight"].shape[0] == 2  # the auxiliary labels' own head was trained and saved
    best = torch.load(tmp_path / "run" / "best.pt", map_location="cpu", weights_only=False)
    assert best["model"]["head.weight"].shape[0] == 3 and not any("aux" in k for k in best["model"])
    # no image the main recipe holds out (val/test) trains the auxiliary head
    main = build_dataset(load_recipe(tiny_face_data / "recipe.toml"), tiny_face_data, (48, 48), 1,
                         cache_dir=tmp_path / "cache", crop=CropSpec(0.3))
    held_out = {h for h, s in zip(main.hashes, main.split, strict=True) if s != 0}
    aux_train = _aux_train_data(cfg, (48, 48))
    assert held_out and len(aux_train.hashes) and not held_out & set(aux_train.hashes)


def test_a_transfer_set_trains_the_main_head_from_the_teacher_and_needs_one(trained_run: Path, tiny_face_data: Path,
                                                                            tmp_path: Path) -> None:
    (tmp_path / "aux.toml").write_text(AUX_RECIPE)  # other labels: a transfer set's labels are not used
    common = {"recipe": str(tiny_face_data / "recipe.toml"), "arch": "fast_small", "data_root": str(tiny_face_data),
              "epochs": 2, "batch_size": 16, "patience": 3, "threads": 1, "aux_recipe": str(tmp_path / "aux.toml"),
              "aux_distill": True}
    with pytest.raises(ValueError, match="needs an auxiliary recipe .* and a teacher"):
        TrainConfig(**common)
    metrics = run(TrainConfig(**common, out_dir=str(tmp_path / "run"), teacher=str(trained_run / "best.pt")))
    assert 0.0 <= metrics["splits"]["test"]["all"]["macro_f1"] <= 1.0
    last = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=False)
    assert last["aux_head"] is None  # no head of its own: the transfer images went through the main head


def test_evaluate_scores_the_onnx_model_per_source_the_runtime_way(trained_run: Path, tiny_face_data: Path,
                                                                   tmp_path: Path) -> None:
    from export.evaluate import evaluate_model, table

    recipe_path = tiny_face_data / "recipe.toml"
    recipe = load_recipe(recipe_path)
    trained_on = {"recipe": recipe.name, "sources": {"clip": {"roots": ["faces"]}}}
    onnx_path = tmp_path / "tiny.onnx"
    export_onnx(trained_run / "best.pt", onnx_path, np.zeros((2, 1, 48, 48), np.uint8), "tiny", "0.0.1", trained_on)
    result = evaluate_model(str(onnx_path), recipe_path, tiny_face_data, split="test")
    clip = result["by_source"]["clip"]
    assert clip["cross_source"] is False  # the model's metadata says it trained on these folders
    test_counts = json.loads((trained_run / "manifest.json").read_text())["counts"]["test"]["clip"]
    assert clip["n"] == sum(test_counts.values())  # the run's own test split, cut the same way
    assert sum(clip["predicted_share"].values()) == pytest.approx(1.0)
    assert result["crop"] == {"margin": 0.3, "square": True, "pad": "edge"}
    assert "| clip | no |" in table(result)
    # the same model claiming other training data: the source becomes cross-source
    export_onnx(trained_run / "best.pt", onnx_path, np.zeros((2, 1, 48, 48), np.uint8), "tiny", "0.0.1",
                {"sources": {"other": {"roots": ["elsewhere"]}}})
    other = evaluate_model(str(onnx_path), recipe_path, tiny_face_data, split="test")
    assert other["by_source"]["clip"]["cross_source"] is True and "cross-source, pooled" in other["by_source"]


def test_agreement_compares_two_models_face_by_face(trained_run: Path, tiny_face_data: Path, tmp_path: Path) -> None:
    from export.evaluate import agreement, agreement_table, evaluate_model
    from export.evaluate import main as evaluate_main

    recipe_path, faces = tiny_face_data / "recipe.toml", np.zeros((2, 1, 48, 48), np.uint8)
    export_onnx(trained_run / "best.pt", tmp_path / "a.onnx", faces, "tiny", "0.0.1", {})
    ckpt = torch.load(trained_run / "best.pt", map_location="cpu", weights_only=False)
    ckpt["model"]["head.bias"][0] += 1e3  # a model that calls every face Left
    torch.save(ckpt, tmp_path / "left.pt")
    export_onnx(tmp_path / "left.pt", tmp_path / "left.onnx", faces, "left", "0.0.1", {})

    itself = agreement(str(tmp_path / "a.onnx"), str(tmp_path / "a.onnx"), recipe_path, tiny_face_data)
    test_counts = json.loads((trained_run / "manifest.json").read_text())["counts"]["test"]["clip"]
    assert itself["by_source"]["clip"]["n"] == itself["by_source"]["all"]["n"] == sum(test_counts.values())
    assert itself["by_source"]["all"]["same_label"] == 1.0 and itself["by_source"]["all"]["share_diff_max"] == 0.0
    assert itself["by_source"]["all"]["index_diff"] is None  # these labels have no Engaged / Bored
    other = agreement(str(tmp_path / "a.onnx"), str(tmp_path / "left.onnx"), recipe_path, tiny_face_data)["by_source"]
    scored = evaluate_model(str(tmp_path / "a.onnx"), recipe_path, tiny_face_data)["by_source"]["clip"]
    left_share = scored["predicted_share"]["Left"]
    assert other["all"]["same_label"] == pytest.approx(left_share)
    assert other["all"]["share_diff_max"] == pytest.approx(1.0 - left_share)
    assert "| all |" in agreement_table({"by_source": other})
    assert evaluate_main(["--agreement", "--model", str(tmp_path / "a.onnx"), "--model", str(tmp_path / "left.onnx"),
                          "--recipe", str(recipe_path), "--data-root", str(tiny_face_data)]) == 0
    with pytest.raises(SystemExit):  # argparse: exactly two models
        evaluate_main(["--agreement", "--model", str(tmp_path / "a.onnx")])


def test_card_without_a_run_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from export.card import main as card

    assert card(["--run", str(tmp_path / "runs" / "fast4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "reproduce.sh" in err[0]


def test_equalised_framing_trains_and_selects_on_reframed_validation_faces(trained_run: Path, tiny_face_data: Path,
                                                                          tmp_path: Path) -> None:
    from export.evaluate import evaluate_model
    from train.fit import load_run_data

    cfg = TrainConfig(recipe=str(tiny_face_data / "recipe.toml"), arch="fast_small", data_root=str(tiny_face_data),
                      out_dir=str(tmp_path / "eq"), epochs=2, batch_size=16, patience=2, threads=1,
                      equalise_framing=True)
    metrics = run(cfg)
    assert metrics["splits"]["val"]["all"]["n"] > 0
    plain, reframed = load_run_data(replace(cfg, equalise_framing=False)), load_run_data(cfg)
    val, train = plain.split_mask("val"), plain.split_mask("train")
    np.testing.assert_array_equal(reframed.images[train], plain.images[train])
    assert not np.array_equal(reframed.images[val], plain.images[val])  # the tiny faces' labels differ in padding
    onnx_path = tmp_path / "tiny.onnx"
    export_onnx(trained_run / "best.pt", onnx_path, np.zeros((2, 1, 48, 48), np.uint8), "tiny", "0.0.1", {})
    result = evaluate_model(str(onnx_path), tiny_face_data / "recipe.toml", tiny_face_data, "val", equalise=True)
    assert result["framing_equalised"] is True
    assert result["by_source"]["clip"]["n"] == int(val.sum())
    # the exported model says so in its provenance
    from export.__main__ import main as export_main

    assert export_main(["--run", str(tmp_path / "eq"), "--out", str(tmp_path / "eq.onnx")]) == 0
    with FaceClassifier(ClassifierConfig(model_path=str(tmp_path / "eq.onnx"), device="cpu")) as classifier:
        assert classifier.meta.trained_on["framing_equalised"] is True
