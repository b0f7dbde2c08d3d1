"""Training data: cut by the runtime's own detector and crop, eval-only sources, crowd-vote labels."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from edumood_live.classifier import ClassifierConfig, CropSpec, FaceClassifier, crop_faces
from edumood_live.detector import DetectorConfig, FaceDetector
from train.data import SPLITS, VOTE_COLUMNS, FaceCropper, build_dataset
from train.recipe import load_recipe


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
    return float(inter / (np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter))


@pytest.mark.parametrize("margin", [0.15, 0.3])
def test_a_training_crop_is_the_runtime_crop(demo_frames: list[np.ndarray], onnx_classifier_factory,
                                             margin: float) -> None:
    """The same real frame, cut for training and cut by the running product, gives the same pixels."""
    crop = CropSpec(margin)
    frame = demo_frames[10]
    cropper = FaceCropper((64, 64), 1, crop)
    try:
        box = cropper.find(frame, "frames")
        training, padding = cropper.cut(frame, box)
    finally:
        cropper.close()
    with FaceDetector(DetectorConfig()) as detector:  # the runtime's detector, default settings
        runtime_boxes = detector.detect(frame).boxes
    assert any(np.array_equal(box, b) for b in runtime_boxes)
    model = onnx_classifier_factory(input_size=(64, 64), metadata={"crop": crop.to_json(), "mean": 0.0, "std": 1.0})
    with FaceClassifier(ClassifierConfig(model_path=model)) as classifier:  # crop read from the model file
        runtime = classifier.preprocess(frame, box[None])
    assert training.shape == (1, 64, 64) and training.dtype == np.uint8 and padding == 0.0
    np.testing.assert_array_equal(training[0], np.round(runtime[0, 0] * 255).astype(np.uint8))


def test_a_tight_dataset_crop_is_padded_before_detection(demo_frames: list[np.ndarray]) -> None:
    """A face cut tightly (as datasets cut them) is found again, in its own pixels, and padded by edge
    replication where the contract's wider crop leaves it."""
    frame = demo_frames[10]
    cropper = FaceCropper((64, 64), 1, CropSpec(0.3))
    try:
        box = cropper.find(frame, "frames")
        origin = CropSpec(0.05)
        tight = crop_faces(frame, box[None], origin, (96, 96), grey=False)[0]
        found = cropper.find(tight, "crops")
        _, padding = cropper.cut(tight, found)
    finally:
        cropper.close()
    side = max(box[2:] - box[:2]) * 1.1
    centre = (box[:2] + box[2:]) / 2
    expected = (np.concatenate([box[:2], box[2:]]) - np.tile(centre - side / 2, 2)) * 96 / side
    assert _iou(found, expected) > 0.7
    assert 0.1 < padding < 0.6  # the 1.6x crop of a 1.1x image is partly padding, and says how much


def _data_root(tiny_face_data: Path, root: Path) -> Path:
    """``faces/`` with FER+-style ``votes.csv`` (left: mostly anger, middle: mostly not a face, right: no
    row), and the right-hand person again under ``others/right/``."""
    (root / "others").mkdir(parents=True)
    (root / "faces").symlink_to(tiny_face_data / "faces")
    (root / "others" / "right").symlink_to(tiny_face_data / "faces" / "right")
    with (root / "votes.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", *VOTE_COLUMNS])
        for path in sorted((root / "faces").glob("*/*.png")):
            folder = path.parent.name
            votes = {"left": {"anger": 8, "neutral": 2}, "middle": {"NF": 6, "happiness": 4}}.get(folder)
            if votes is not None:
                writer.writerow([f"faces/{folder}/{path.name}", *(votes.get(c, 0) for c in VOTE_COLUMNS)])
    return root


def test_crowd_votes_give_soft_targets_and_eval_sources_only_test(tiny_face_data: Path, tmp_path: Path) -> None:
    data_root = _data_root(tiny_face_data, tmp_path / "data")
    recipe_path = tmp_path / "recipe.toml"
    recipe_path.write_text("""
name = "votes-and-eval"
labels = ["Angry", "Neutral", "Right"]
seed = 3
[split]
val_fraction = 0.2
test_fraction = 0.2
[[sources]]
name = "voted"
roots = ["faces"]
kind = "crops"
votes = "votes.csv"
[sources.labels]
anger = "Angry"
neutral = "Neutral"
[[sources]]
name = "held_out"
roots = ["others"]
kind = "crops"
role = "eval"
group = "folder"
[sources.labels]
right = "Right"
""")
    data = build_dataset(load_recipe(recipe_path), data_root, (48, 48), 1)
    voted, held = data.source == 0, data.source == 1
    assert voted.any() and held.any()
    # only "left" faces have an emotion majority; their soft targets are the normalised votes
    assert all(p.startswith("faces/left/") for p in np.array(data.paths)[voted])
    assert set(data.targets[voted].tolist()) == {0}
    np.testing.assert_allclose(data.soft[voted], [[0.8, 0.2, 0.0]] * int(voted.sum()), atol=1e-6)
    # the eval-only source is whole in the test split; the voted one is split three ways
    assert set(data.split[held].tolist()) == {SPLITS.index("test")}
    assert set(data.split[voted].tolist()) == {0, 1, 2}
    assert data.eval_sources == {"held_out"} and data.subset(held).eval_sources == {"held_out"}
    assert (data.training_source_mask() == voted).all()
    manifest = data.manifest()
    assert manifest["crop"] == {"margin": 0.3, "square": True, "pad": "edge"}
    assert manifest["mean_padding_share"]["voted"] > 0


def test_a_source_can_have_its_own_split_fractions(tiny_face_data: Path, tmp_path: Path) -> None:
    recipe = (tiny_face_data / "recipe.toml").read_text().replace(
        'kind = "crops"', 'kind = "crops"\nval_fraction = 0.3\ntest_fraction = 0.0')
    (tmp_path / "recipe.toml").write_text(recipe)
    data = build_dataset(load_recipe(tmp_path / "recipe.toml"), tiny_face_data, (48, 48), 1)
    assert not data.split_mask("test").any()  # the recipe's 0.25 test share is overridden for this source
    assert 0.2 < data.split_mask("val").mean() < 0.4


def test_source_balanced_sampling_gives_each_source_of_a_label_the_same_mass() -> None:
    from train.data import Dataset
    from train.fit import _sampling_weights

    # label 0 from two sources (90 and 10 images), label 1 from one source (20 images)
    targets = np.array([0] * 90 + [0] * 10 + [1] * 20)
    source = np.array([0] * 90 + [1] * 10 + [0] * 20)
    n = len(targets)
    data = Dataset(("A", "B"), np.zeros((n, 1, 4, 4), np.uint8), targets, np.zeros(n, np.int64), source,
                   ("big", "small"), [str(i) for i in range(n)], [str(i) for i in range(n)])
    w = _sampling_weights(data, np.arange(n), {}, "source")
    assert w.sum() == pytest.approx(1.0)
    assert w[:90].sum() == pytest.approx(0.25) and w[90:100].sum() == pytest.approx(0.25)
    assert w[100:].sum() == pytest.approx(0.5)
    by_class = _sampling_weights(data, np.arange(n), {}, "class")
    assert by_class[:90].sum() == pytest.approx(0.45)  # class balance alone lets the big source dominate


def test_within_source_balance_spreads_each_source_evenly_over_its_own_labels() -> None:
    from train.data import Dataset
    from train.fit import _sampling_weights

    # a source with all three labels (60/20/20 images) and one holding only label 0 (200 images)
    targets = np.array([0] * 60 + [1] * 20 + [2] * 20 + [0] * 200)
    source = np.array([0] * 100 + [1] * 200)
    n = len(targets)
    data = Dataset(("A", "B", "C"), np.zeros((n, 1, 4, 4), np.uint8), targets, np.zeros(n, np.int64), source,
                   ("full", "partial"), [str(i) for i in range(n)], [str(i) for i in range(n)])
    w = _sampling_weights(data, np.arange(n), {}, "within_source")
    assert w.sum() == pytest.approx(1.0)
    # the full source: half the mass, a sixth per label, so its look predicts none of them
    assert [w[:60].sum(), w[60:80].sum(), w[80:100].sum()] == pytest.approx([1 / 6] * 3)
    assert w[100:].sum() == pytest.approx(0.5)
    weighted = _sampling_weights(data, np.arange(n), {"partial": 0.25}, "within_source")
    assert weighted[100:].sum() == pytest.approx(0.2)  # 0.25 / (1 + 0.25)
    assert weighted[:60].sum() == pytest.approx(0.8 / 3)
