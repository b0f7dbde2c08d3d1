"""Framing equalisation: padding found in the pixels, re-framed crops whose padding no longer tells the label."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from edumood_live.classifier import CropSpec, crop_faces
from train.data import Dataset, FaceCropper
from train.framing import FramingEqualiser, content_boxes, equalised, padding_shares


def _padded(rng: np.random.Generator, size: int, pad: tuple[int, int, int, int]) -> np.ndarray:
    """(1, size, size) noise whose top/bottom/left/right bands are edge replication of the rest."""
    top, bottom, left, right = pad
    inner = rng.integers(0, 256, (size - top - bottom, size - left - right), dtype=np.uint8)
    return cv2.copyMakeBorder(inner, top, bottom, left, right, cv2.BORDER_REPLICATE)[None]


def test_content_box_is_found_in_the_pixels() -> None:
    rng = np.random.default_rng(0)
    images = np.stack([_padded(rng, 32, (0, 0, 0, 0)), _padded(rng, 32, (5, 0, 9, 2))])
    boxes = content_boxes(images)
    np.testing.assert_array_equal(boxes, [[0, 32, 0, 32], [5, 32, 9, 30]])
    assert padding_shares(boxes, (32, 32))[0] == 0.0


def test_padding_of_a_real_tight_crop_matches_the_croppers_account(demo_frames: list[np.ndarray]) -> None:
    cropper = FaceCropper((64, 64), 1, CropSpec(0.3))
    try:
        frame = demo_frames[10]
        tight = crop_faces(frame, cropper.find(frame, "frames")[None], CropSpec(0.05), (96, 96), grey=False)[0]
        pixels, padding = cropper.cut(tight, cropper.find(tight, "crops"))
    finally:
        cropper.close()
    found = padding_shares(content_boxes(pixels[None]), (64, 64))[0]
    assert padding > 0.1 and abs(found - padding) < 0.08  # the resize blends one row at each edge


def _two_framings(n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Label 0 crops have no padding, label 1 crops 4-12 px of it on every side: framing tells the label."""
    rng = np.random.default_rng(1)
    images, labels = [], []
    for i in range(n):
        pad = (0, 0, 0, 0) if i % 2 == 0 else tuple(int(p) for p in rng.integers(4, 13, 4))
        images.append(_padded(rng, 48, pad))
        labels.append(i % 2)
    return np.stack(images), np.array(labels)


def _best_threshold_accuracy(shares: np.ndarray, labels: np.ndarray) -> float:
    """The best accuracy of "label 1 if the padding share is above t" over every t."""
    return max(float(np.mean((shares > t) == (labels == 1))) for t in np.unique(np.r_[shares, -1.0]))


def test_equalised_padding_has_one_distribution_for_every_label() -> None:
    images, labels = _two_framings()
    idx = np.arange(len(labels))
    equaliser = FramingEqualiser(images, labels, np.zeros(len(labels), np.int64), idx)
    before = equaliser.shares
    assert before[labels == 0].max() == 0.0 and before[labels == 1].min() > 0.25
    out = equaliser.apply(torch.from_numpy(images), idx, np.random.default_rng(2)).numpy()
    after = padding_shares(content_boxes(out), (48, 48))
    assert abs(after[labels == 0].mean() - after[labels == 1].mean()) < 0.04
    assert _best_threshold_accuracy(before, labels) == 1.0  # the label was readable off the padding alone
    assert _best_threshold_accuracy(after, labels) < 0.65   # and no longer is
    assert np.all(after >= before - 0.02)  # padding is only ever added
    # the window it keeps is real pixels of the crop, unmoved
    top, bottom, left, right = content_boxes(out[:1])[0]
    np.testing.assert_array_equal(out[0, :, top:bottom, left:right], images[0, :, top:bottom, left:right])


def test_equalised_view_changes_only_the_evaluation_split_and_is_one_fixed_draw() -> None:
    images, labels = _two_framings(120)
    split = np.tile([0, 0, 1], 40)
    n = len(labels)
    data = Dataset(("A", "B"), images, labels, split, np.zeros(n, np.int64), ("s",), [str(i) for i in range(n)],
                   [str(i) for i in range(n)])
    a, b = equalised(data), equalised(data)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.images[split == 0], images[split == 0])
    val_no_pad = (split == 1) & (labels == 0)
    assert not np.array_equal(a.images[val_no_pad], images[val_no_pad])
    assert data.images is images  # the original is left as it was


def test_a_source_that_does_not_train_is_padded_like_training_crops_only_when_asked() -> None:
    images, labels = _two_framings(120)
    n = len(labels)
    split = np.where(np.arange(n) < 80, 0, 2)
    source = np.where(np.arange(n) < 100, 0, 1)  # source 1: test only, its crops unpadded (label 0)
    data = Dataset(("A", "B"), images, labels, split, source, ("trains", "eval"), [str(i) for i in range(n)],
                   [str(i) for i in range(n)])
    eval_rows = (source == 1) & (labels == 0)
    np.testing.assert_array_equal(equalised(data, ("test",)).images[eval_rows], images[eval_rows])
    padded = equalised(data, ("test",), every_source=True).images[eval_rows]
    assert padding_shares(content_boxes(padded), (48, 48)).min() > 0.2  # label 1's training crops are padded
