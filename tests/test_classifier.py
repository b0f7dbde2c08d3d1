"""FaceClassifier: the ONNX metadata contract, metadata-driven preprocessing, batching."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from edumood_live import resources
from edumood_live.classifier import FaceClassifier, softmax
from edumood_live.config import ClassifierConfig, PadMode
from edumood_live.crop import CropSpec, crop_square, square_boxes
from edumood_live.errors import ConfigError, ModelError

DEMO_BOXES = np.float32([[78, 95, 118, 135], [308, 109, 361, 162], [209, 83, 255, 129]])  # frame 0

Factory = Callable[..., Path]

# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("device", "gpu", r"device='gpu' is not allowed; use one of 'auto', 'cpu', 'cuda'"),
        ("pad_mode", "reflect", r"pad_mode='reflect' is not allowed; use one of 'edge', 'zeros'"),
        ("intra_op_threads", 0, r"intra_op_threads=0 .*1\.\.64"),
        ("crop_margin", -0.1, r"crop_margin=-0\.1 .*\[0, 1\]"),
        ("crop_margin", 1.5, r"crop_margin=1\.5"),
    ],
)
def test_config_rejects_bad_values(field: str, value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ClassifierConfig(**{field: value})


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="this onnxruntime offers CUDA"
)
def test_cuda_without_provider_is_a_config_error(onnx_classifier_factory: Factory) -> None:
    with pytest.raises(ConfigError, match=r"device='cuda' .*no CUDAExecutionProvider.*onnxruntime-gpu"):
        FaceClassifier(ClassifierConfig(model_path=onnx_classifier_factory(), device="cuda"))


def test_auto_device_reports_the_provider_used(onnx_classifier_factory: Factory) -> None:
    with FaceClassifier(ClassifierConfig(model_path=onnx_classifier_factory(), device="auto")) as clf:
        assert clf.provider in ort.get_available_providers()
        assert clf.provider in ("CPUExecutionProvider", "CUDAExecutionProvider")


# ---------------------------------------------------------------- the metadata contract


def test_missing_file_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"classifier model .*nope\.onnx does not exist"):
        FaceClassifier(ClassifierConfig(model_path=tmp_path / "nope.onnx"))


def test_non_onnx_bytes_are_a_model_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not an onnx model" * 50)
    with pytest.raises(ModelError, match=r"classifier model .*bad\.onnx is not a valid ONNX model: "):
        FaceClassifier(ClassifierConfig(model_path=bad))


@pytest.mark.parametrize(
    "key",
    ["labels", "input_size", "channels", "mean", "std", "model_name", "version", "trained_on", "metrics"],
)
def test_missing_metadata_key_is_a_model_error(onnx_classifier_factory: Factory, key: str) -> None:
    path = onnx_classifier_factory(drop_keys=(key,))
    with pytest.raises(ModelError, match=rf"tiny\.onnx: metadata key '{key}' is missing"):
        FaceClassifier(ClassifierConfig(model_path=path))


@pytest.mark.parametrize(
    ("metadata", "match"),
    [
        ({"labels": '["Angry", "Neutral"'}, r"'labels' is not valid JSON"),
        ({"labels": '"Angry"'}, r"'labels' must be a JSON list of >= 2 distinct non-empty strings"),
        ({"labels": ["A", "A", "B", "C"]}, r"'labels' must be a JSON list"),
        ({"input_size": [64]}, r"'input_size' must be \[H, W\]"),
        ({"input_size": [64.0, 64.0]}, r"'input_size' must be \[H, W\]"),
        ({"channels": 2}, r"'channels' must be 1 or 3"),
        ({"mean": [0.5, 0.5]}, r"'mean' must be a number or a list of 1 numbers"),
        ({"std": [0.0]}, r"'std' must be > 0"),
        ({"std": "abc"}, r"'std' is not valid JSON"),
        ({"model_name": " "}, r"'model_name' is missing or empty"),
        ({"metrics": [1, 2]}, r"'metrics' must be a JSON object"),
        ({"channel_order": "GBR"}, r"'channel_order' must be 'RGB' or 'BGR'"),
    ],
)
def test_invalid_metadata_is_a_model_error(
    onnx_classifier_factory: Factory, metadata: dict, match: str
) -> None:
    with pytest.raises(ModelError, match=r"classifier model .*tiny\.onnx: metadata key " + match):
        FaceClassifier(ClassifierConfig(model_path=onnx_classifier_factory(metadata=metadata)))


def test_output_width_must_match_labels(onnx_classifier_factory: Factory) -> None:
    path = onnx_classifier_factory(weights=np.ones((1, 3), np.float32))  # 3 logits, 4 labels
    with pytest.raises(ModelError, match=r"gives shape \[2, 3\] .*'labels' has 4 entries; expected \[2, 4\]"):
        FaceClassifier(ClassifierConfig(model_path=path))


def test_input_shape_must_match_metadata(onnx_classifier_factory: Factory) -> None:
    path = onnx_classifier_factory(input_size=(48, 48), metadata={"input_size": [64, 64]})
    with pytest.raises(
        ModelError, match=r"input shape \['N', 1, 48, 48\] disagrees with metadata input_size H=64"
    ):
        FaceClassifier(ClassifierConfig(model_path=path))


def test_metadata_is_exposed(onnx_classifier_factory: Factory) -> None:
    path = onnx_classifier_factory(metadata={"extra_note": "kept"})
    with FaceClassifier(ClassifierConfig(model_path=path)) as clf:
        assert clf.labels == ("Angry", "Neutral", "Engaged", "Bored")
        assert clf.input_size == (64, 64) and clf.channels == 1
        assert clf.metadata["model_name"] == "tiny-test-classifier"
        assert clf.metadata["trained_on"]["datasets"] == []
        assert clf.metadata["extra_note"] == "kept"


# ---------------------------------------------------------------- preprocessing driven by metadata

BGR = (10, 100, 200)  # a uniform colour frame: every crop has known channel means
MEAN, STD = [0.2, 0.4, 0.6], [0.5, 0.25, 0.125]


def _uniform_frame() -> np.ndarray:
    return np.broadcast_to(np.uint8(BGR), (270, 480, 3)).copy()


@pytest.mark.parametrize(
    ("channel_order", "pixels"),
    [("RGB", [200, 100, 10]), ("BGR", [10, 100, 200])],
)
def test_colour_model_gets_normalised_channels(
    onnx_classifier_factory: Factory, channel_order: str, pixels: list[int]
) -> None:
    path = onnx_classifier_factory(
        labels=["a", "b", "c"],
        input_size=(32, 32),
        channels=3,
        weights=np.eye(3, dtype=np.float32),  # logits = per-channel means of the normalised batch
        metadata={"mean": MEAN, "std": STD, "channel_order": channel_order},
    )
    with FaceClassifier(ClassifierConfig(model_path=path)) as clf:
        batch = clf.preprocess(_uniform_frame(), DEMO_BOXES)
        probs = clf.classify(_uniform_frame(), DEMO_BOXES)
    expected = (np.float32(pixels) / 255 - np.float32(MEAN)) / np.float32(STD)
    assert batch.shape == (3, 3, 32, 32) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[1, :, 5, 7], expected, rtol=1e-5)
    np.testing.assert_allclose(probs, softmax(np.tile(expected, (3, 1))), rtol=1e-5)


def test_grey_model_gets_resized_grey_crops(onnx_classifier_factory: Factory) -> None:
    path = onnx_classifier_factory(input_size=(24, 16), channels=1, metadata={"mean": 0.0, "std": 1.0})
    with FaceClassifier(ClassifierConfig(model_path=path)) as clf:
        batch = clf.preprocess(_uniform_frame(), DEMO_BOXES[:2])
    grey = (0.114 * BGR[0] + 0.587 * BGR[1] + 0.299 * BGR[2]) / 255  # OpenCV's BGR2GRAY weights
    assert batch.shape == (2, 1, 24, 16)
    np.testing.assert_allclose(batch, grey, atol=1 / 255)


@pytest.mark.parametrize(("pad_mode", "corner_value"), [("edge", 100 / 255), ("zeros", 0.0)])
def test_crops_leaving_the_frame_are_padded(
    onnx_classifier_factory: Factory, pad_mode: str, corner_value: float
) -> None:
    path = onnx_classifier_factory(input_size=(32, 32), metadata={"mean": 0.0, "std": 1.0})
    frame = np.full((100, 100, 3), 100, np.uint8)
    with FaceClassifier(ClassifierConfig(model_path=path, pad_mode=pad_mode, crop_margin=0.5)) as clf:
        batch = clf.preprocess(frame, np.float32([[0, 0, 20, 20]]))  # square (-10, -10, 30, 30)
    assert batch[0, 0, 0, 0] == pytest.approx(corner_value, abs=1 / 255)
    assert batch[0, 0, 31, 31] == pytest.approx(100 / 255, abs=1 / 255)


@pytest.mark.parametrize(
    ("box", "margin", "square"),
    [
        ([10, 20, 50, 40], 0.0, [10, 10, 50, 50]),  # 40x20 box -> 40 px square on its centre
        ([10, 20, 50, 40], 0.15, [4, 4, 56, 56]),  # side 40 * 1.3 = 52
        ([0, 0, 10, 10], 0.5, [-5, -5, 15, 15]),
    ],
)
def test_square_boxes(box: list[float], margin: float, square: list[int]) -> None:
    assert square_boxes(np.float32([box]), margin).tolist() == [square]


# ---------------------------------------------------------------- classification


def test_batch_equals_single_faces(
    tiny_classifier_path: Path, demo_frames: list[np.ndarray], onnx_classifier_factory: Factory
) -> None:
    weights = np.float32([[1.0, -1.0, 0.5, 2.0]])
    path = onnx_classifier_factory(weights=weights)
    frame = demo_frames[0]
    with FaceClassifier(ClassifierConfig(model_path=path)) as clf:
        together = clf.classify(frame, DEMO_BOXES)
        alone = np.concatenate([clf.classify(frame, box[None]) for box in DEMO_BOXES])
        empty = clf.classify(frame, np.zeros((0, 4), np.float32))
    assert together.shape == (3, 4) and together.dtype == np.float32
    np.testing.assert_allclose(together.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(together, alone, rtol=1e-6)
    assert empty.shape == (0, 4)


def test_shipped_model_classifies_demo_faces(classifier_path: Path, demo_frames: list[np.ndarray]) -> None:
    with FaceClassifier(ClassifierConfig(model_path=classifier_path, device="cpu")) as clf:
        probs = clf.classify(demo_frames[0], DEMO_BOXES)
        assert clf.provider == "CPUExecutionProvider"
        assert probs.shape == (3, len(clf.labels))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert (probs >= 0).all()


def test_classify_after_close_is_an_error(tiny_classifier_path: Path) -> None:
    clf = FaceClassifier(ClassifierConfig(model_path=tiny_classifier_path))
    clf.close()
    with pytest.raises(RuntimeError, match=r"classify\(\) called after close\(\)"):
        clf.classify(np.zeros((64, 64, 3), np.uint8), DEMO_BOXES[:1])


def test_missing_shipped_classifier_is_a_model_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(resources.SHIPPED_CLASSIFIERS, "default", "absent.onnx")
    with pytest.raises(ModelError, match=r"shipped classifier model absent\.onnx not found .*--model PATH"):
        FaceClassifier(ClassifierConfig())


@pytest.mark.parametrize("name", sorted(resources.SHIPPED_CLASSIFIERS))
def test_shipped_classifiers_load_by_name(name: str, demo_frames: list[np.ndarray]) -> None:
    with FaceClassifier(ClassifierConfig(model_path=name, device="cpu")) as clf:
        assert clf.model_path == resources.shipped_classifier_path(name)
        assert clf.labels == ("Angry", "Neutral", "Engaged", "Bored")
        probs = clf.classify(demo_frames[0], DEMO_BOXES)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_an_unknown_model_name_is_a_missing_file_that_lists_the_shipped_names() -> None:
    with pytest.raises(ModelError, match=r"classifier model fastest does not exist .*: default, fast\)"):
        FaceClassifier(ClassifierConfig(model_path="fastest"))


def test_non_bgr_frame_is_rejected(tiny_classifier_path: Path) -> None:
    clf = FaceClassifier(ClassifierConfig(model_path=tiny_classifier_path))
    with pytest.raises(ValueError, match=r"expected a BGR uint8 \(H, W, 3\) image"):
        clf.classify(np.zeros((64, 64), np.uint8), DEMO_BOXES[:1])


def test_grey_crop_matches_resize_then_convert(demo_frames: list[np.ndarray]) -> None:
    """Grey-first cropping (the fast path) equals the training order (resize BGR, then grey) to 1 level."""
    frame = demo_frames[0]
    for square in square_boxes(DEMO_BOXES, 0.15):
        grey = np.empty((64, 64), np.uint8)
        colour = np.empty((64, 64, 3), np.uint8)
        crop_square(frame, square, (64, 64), PadMode.EDGE, grey, grey=True)
        crop_square(frame, square, (64, 64), PadMode.EDGE, colour)
        reference = cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY)
        assert np.abs(grey.astype(int) - reference).max() <= 1


# ---------------------------------------------------------------- the crop contract (DESIGN §2)


@pytest.mark.parametrize(
    ("crop", "margin", "pad"),
    [
        (None, 0.15, "edge"),  # a file made before the crop contract: the crop it was trained on
        ('{"margin": 0.3, "square": true, "pad": "edge"}', 0.3, "edge"),
        ('{"margin": 0.45, "pad": "zeros"}', 0.45, "zeros"),
    ],
)
def test_the_crop_comes_from_the_model_file(
    onnx_classifier_factory: Factory, crop: str | None, margin: float, pad: str
) -> None:
    path = onnx_classifier_factory(metadata={} if crop is None else {"crop": crop})
    with FaceClassifier(ClassifierConfig(model_path=path)) as clf:
        assert clf.preprocessor.crop == CropSpec(margin, pad)
        assert clf.metadata["crop"] == {"margin": margin, "square": True, "pad": pad}
    # an explicit override wins (experiments), field by field
    with FaceClassifier(ClassifierConfig(model_path=path, crop_margin=0.05)) as clf:
        assert clf.preprocessor.crop == CropSpec(0.05, pad)


@pytest.mark.parametrize(
    ("crop", "message"),
    [
        ("{not json", r"metadata key 'crop' is invalid"),
        ('{"margin": 2}', r"crop margin=2 is not allowed"),
        ('{"margin": 0.3, "pad": "mirror"}', r"crop pad='mirror' is not allowed"),
        ('{"margin": 0.3, "square": false}', r"'square': true"),
    ],
)
def test_a_bad_crop_in_the_model_file_is_refused(onnx_classifier_factory: Factory, crop: str, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        FaceClassifier(ClassifierConfig(model_path=onnx_classifier_factory(metadata={"crop": crop})))


def test_the_preprocessor_crops_with_the_models_margin(onnx_classifier_factory: Factory) -> None:
    frame = np.zeros((200, 200, 3), np.uint8)
    frame[80:120, 80:120] = 255  # a 40 px white square: the "face"
    box = np.float32([[80, 80, 120, 120]])
    wide = onnx_classifier_factory("wide.onnx", input_size=(30, 30), metadata={"crop": '{"margin": 0.5}'})
    tight = onnx_classifier_factory("tight.onnx", input_size=(30, 30), metadata={"crop": '{"margin": 0.0}'})
    with FaceClassifier(ClassifierConfig(model_path=wide)) as clf:
        white_wide = float((clf.preprocess(frame, box) * 0.5 + 0.5).mean())  # share of white, by area
    with FaceClassifier(ClassifierConfig(model_path=tight)) as clf:
        white_tight = float((clf.preprocess(frame, box) * 0.5 + 0.5).mean())
    assert white_tight == pytest.approx(1.0) and white_wide == pytest.approx(0.25, abs=0.01)  # side 80: 40²/80²


def _left_half_model(path: Path) -> Path:
    """A 1x8x8 model whose logits are [4, 0] x the mean of the left half of the image only."""
    import json

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    consts = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
              (("starts", [0]), ("ends", [4]), ("axes", [3]))]
    graph = helper.make_graph(
        [helper.make_node("Slice", ["images", "starts", "ends", "axes"], ["left"]),
         helper.make_node("GlobalAveragePool", ["left"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
         helper.make_node("MatMul", ["flat", "weights"], ["logits"])],
        "left_half", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(np.float32([[4.0, 0.0]]), "weights"), *consts])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    meta = {"labels": ["bright", "dark"], "input_size": [8, 8], "channels": 1, "mean": 0.0, "std": 1.0,
            "model_name": "left-half", "version": "0", "trained_on": "tests", "metrics": {}}
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=json.dumps(value))
    onnx.save(model, str(path))
    return path


def test_flip_average_is_the_mean_over_the_mirror_image(tmp_path: Path) -> None:
    """A model that looks only at the left half: flip-averaging gives the mean of both halves' answers."""
    path = _left_half_model(tmp_path / "left.onnx")
    batch = np.zeros((1, 1, 8, 8), np.float32)
    batch[..., :4] = 1.0  # left half white
    with FaceClassifier(ClassifierConfig(model_path=path)) as plain, \
            FaceClassifier(ClassifierConfig(model_path=path, flip_average=True)) as averaged:
        seen, mirrored = plain.classify_batch(batch), plain.classify_batch(np.ascontiguousarray(batch[..., ::-1]))
        assert seen[0, 0] > 0.95 and mirrored[0, 0] == pytest.approx(0.5)  # the model does see left from right
        np.testing.assert_allclose(averaged.classify_batch(batch), (seen + mirrored) / 2, rtol=1e-6)


def test_the_shipped_models_are_named_so_nobody_confuses_them() -> None:
    """The start line names the model: the default one must not read like `--model fast`."""
    names = {}
    for shipped in ("default", "fast"):
        with FaceClassifier(ClassifierConfig(model_path=shipped)) as clf:
            names[shipped] = clf.meta.model_name
            assert clf.preprocessor.crop == CropSpec(0.3)  # both carry the crop they were trained on
    assert "fast" not in names["default"] and "fast" in names["fast"] and names["default"] != names["fast"]
