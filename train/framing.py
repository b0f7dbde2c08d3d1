"""Framing equalisation: how much of a crop is padding must not tell the label.

A dataset of tight crops is padded before detection, and the runtime's crop of it is part real pixels, part
edge replication (``Dataset.padding``). If one label's images were framed looser than the others' (measured
in ``aiducation_affectnet4``: Neutral crops are 9 % padding, Angry/Engaged/Bored 28-33 %; the padding share
alone tells Neutral from the rest for 89 % of test faces), a network learns "real context around the face =
Neutral", and every classroom frame, which has real context all round, looks Neutral to it.

The fix here can only add padding (a crop cannot be given context it does not have): each training crop is
re-framed to the padding share ``max(own, one draw from every other label of its source)``. For every label
that is the maximum of one draw from each label's own distribution, so after it the padding share has the
same distribution whatever the label. The crop keeps a window of its real pixels of that area, placed near
their middle (the face is at the crop's centre), and the rest is edge-replicated from the window, as the
runtime pads a face at a frame's edge.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from train.data import SPLITS, Dataset


def content_boxes(images_u8: np.ndarray) -> np.ndarray:
    """(N, 4) int ``top, bottom, left, right`` (exclusive ends) of each crop's real pixels.

    Edge replication copies a crop's outermost real row (column) outwards, so a padded band is a run of
    identical rows (columns) at the border; real image rows are practically never identical end to end.
    """
    n, _, h, w = images_u8.shape
    boxes = np.empty((n, 4), np.int64)
    rows_same = (images_u8[:, :, 1:, :] == images_u8[:, :, :-1, :]).all(axis=(1, 3))  # (N, H-1): row i == i+1
    cols_same = (images_u8[:, :, :, 1:] == images_u8[:, :, :, :-1]).all(axis=(1, 2))  # (N, W-1)
    for i in range(n):
        boxes[i] = (*_band(rows_same[i], h), *_band(cols_same[i], w))
    return boxes


def _band(same: np.ndarray, size: int) -> tuple[int, int]:
    """First and one-past-last index not in a run of repeats touching either border."""
    start = 0
    while start < size - 1 and same[start]:
        start += 1
    end = size
    while end - 1 > start and same[end - 2]:
        end -= 1
    return start, end


def padding_shares(boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Share of each crop's area outside its content box."""
    area = (boxes[:, 1] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 2])
    return 1.0 - area / float(size[0] * size[1])


class FramingEqualiser:
    """Re-frames training crops so that their padding share has one distribution for every label.

    ``labels`` are class indices, ``sources`` source indices of the ``images_u8`` the sampler draws from;
    only the rows in ``train_idx`` are used as the per-(source, label) pools of padding shares.
    """

    def __init__(self, images_u8: np.ndarray, labels: np.ndarray, sources: np.ndarray,
                 train_idx: np.ndarray) -> None:
        self.size = images_u8.shape[-2:]
        self.boxes = content_boxes(images_u8)
        self.shares = padding_shares(self.boxes, self.size)
        self.labels, self.sources = labels, sources
        self.pools: dict[int, dict[int, np.ndarray]] = {}  # source -> label -> padding shares of its crops
        for s in np.unique(sources[train_idx]):
            rows = train_idx[sources[train_idx] == s]
            self.pools[int(s)] = {int(k): self.shares[rows[labels[rows] == k]] for k in np.unique(labels[rows])}
        # every training source's crops of each label: how a crop of a source that does not train is framed
        # "like a training crop" (a diagnostic: does a model read real context as a label?)
        self.any_source = {int(k): self.shares[train_idx[labels[train_idx] == k]] for k in np.unique(labels[train_idx])}

    def target_shares(self, idx: np.ndarray, rng: np.random.Generator, every_source: bool = False) -> np.ndarray:
        """The padding share each crop in ``idx`` is re-framed to: max(own, a draw from every other label).
        ``every_source``: a crop of a source that does not train gets max(own, a draw from every label)."""
        out = self.shares[idx].copy()
        for j, i in enumerate(idx):
            pools = self.pools.get(int(self.sources[i]))
            if pools is not None:  # a training crop's own share is its label's draw
                draws = [pool for label, pool in pools.items() if label != self.labels[i]]
            else:  # its own share is no training label's draw
                draws = list(self.any_source.values()) if every_source else []
            for pool in draws:
                out[j] = max(out[j], pool[rng.integers(len(pool))])
        return out

    def apply(self, batch_u8: torch.Tensor, idx: np.ndarray, rng: np.random.Generator,
              every_source: bool = False) -> torch.Tensor:
        """``batch_u8`` (the crops ``idx``) re-framed to their target padding shares."""
        targets = self.target_shares(idx, rng, every_source)
        out = batch_u8.clone()
        h, w = self.size
        for j, (i, target) in enumerate(zip(idx, targets, strict=True)):
            if target <= self.shares[i] + 1e-3:
                continue
            top, bottom, left, right = self.boxes[i]
            ch, cw = bottom - top, right - left
            keep = (1.0 - target) * h * w / (ch * cw)  # share of the content area to keep
            # a window of the content's aspect ratio, shrunk on both axes, near the middle of the content (the
            # face is at the crop's centre; a tight-crop dataset's face sits anywhere in its middle half)
            wh, ww = max(2, round(ch * np.sqrt(keep))), max(2, round(cw * np.sqrt(keep)))
            y0 = top + round((ch - wh) * rng.uniform(0.25, 0.75))
            x0 = left + round((cw - ww) * rng.uniform(0.25, 0.75))
            rows = torch.arange(h).clamp_(y0, y0 + wh - 1)
            cols = torch.arange(w).clamp_(x0, x0 + ww - 1)
            out[j] = batch_u8[j][:, rows][:, :, cols]
        return out


EVALUATION_SEED = 0  # one fixed re-framing of the evaluation faces, the same for every run and every seed


def equalised(data: Dataset, splits: tuple[str, ...] = ("val",), seed: int = EVALUATION_SEED,
              every_source: bool = False) -> Dataset:
    """A copy of ``data`` whose faces in ``splits`` are re-framed by the equaliser of its training split.

    Selection and calibration on equalised validation faces cannot reward a model for reading the label off
    the framing. Faces of sources that do not train are left as they are, or with ``every_source`` framed
    like a training crop (max(own, a draw from every label)): what a model makes of real context.
    """
    train_idx = np.flatnonzero(data.split_mask("train"))
    equaliser = FramingEqualiser(data.images, data.targets, data.source, train_idx)
    rows = np.flatnonzero(np.isin(data.split, [SPLITS.index(s) for s in splits]))
    images = data.images.copy()
    if len(rows):
        images[rows] = equaliser.apply(torch.from_numpy(images[rows]), rows, np.random.default_rng(seed),
                                       every_source).numpy()
    return replace(data, images=images)
