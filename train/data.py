"""Build an in-memory, deduplicated, group-split dataset from a recipe.

Steps: scan the recipe's folders -> decode every image (undecodable and blank files are counted and
logged, never silently dropped) -> crop faces from full frames with the runtime's MediaPipe detector
-> drop pixel-identical groups whose labels disagree, keep one copy of the others -> split by group
(file, or blocks of consecutive frame numbers) stratified per label -> a manifest with counts and a
hash of the file list, saved with every run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from train.recipe import Recipe, RecipeError, SourceSpec

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
SPLITS = ("train", "val", "test")
BLANK_STD = 3.0


@dataclass
class Dataset:
    """Images (N, C, H, W) uint8 with labels, split ids (0 train, 1 val, 2 test) and provenance."""

    labels: tuple[str, ...]
    images: np.ndarray
    targets: np.ndarray
    split: np.ndarray
    source: np.ndarray  # index into source_names
    source_names: tuple[str, ...]
    paths: list[str]
    hashes: list[str]
    skipped: dict[str, int] = field(default_factory=dict)

    def subset(self, mask: np.ndarray) -> Dataset:
        idx = np.flatnonzero(mask)
        return Dataset(
            self.labels, self.images[idx], self.targets[idx], self.split[idx], self.source[idx],
            self.source_names, [self.paths[i] for i in idx], [self.hashes[i] for i in idx],
            dict(self.skipped),
        )

    def split_mask(self, name: str) -> np.ndarray:
        return self.split == SPLITS.index(name)

    def manifest(self) -> dict:
        """Counts per split/source/label and a hash of the sorted file list (reproducibility)."""
        counts: dict[str, dict[str, dict[str, int]]] = {}
        for split_id, split_name in enumerate(SPLITS):
            per_source: dict[str, dict[str, int]] = {}
            for s_id, s_name in enumerate(self.source_names):
                mask = (self.split == split_id) & (self.source == s_id)
                if mask.any():
                    c = Counter(self.targets[mask].tolist())
                    per_source[s_name] = {self.labels[k]: int(c.get(k, 0)) for k in range(len(self.labels))}
            counts[split_name] = per_source
        listing = "\n".join(sorted(f"{p}\t{self.labels[t]}\t{SPLITS[s]}" for p, t, s in
                                   zip(self.paths, self.targets, self.split, strict=True)))
        return {
            "labels": list(self.labels),
            "images": int(len(self.targets)),
            "counts": counts,
            "skipped": self.skipped,
            "file_list_sha256": hashlib.sha256(listing.encode()).hexdigest(),
        }


def _decode(path: Path) -> np.ndarray | None:
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    return image


def _to_model_input(bgr: np.ndarray, size: tuple[int, int], channels: int) -> np.ndarray:
    """Resize a face crop to (C, H, W) uint8, greyscale when channels == 1."""
    resized = cv2.resize(bgr, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    if channels == 1:
        return cv2.cvtColor(resized, cv2.COLOR_BGR2GRAY)[None]
    return resized.transpose(2, 0, 1)


def _frame_number(path: Path) -> int:
    digits = re.findall(r"\d+", path.stem)
    return int(digits[-1]) if digits else 0


@dataclass
class _Item:
    path: Path
    folder: str
    target: int | None  # None: folder not mapped (still hashed, to catch cross-label duplicates)
    group: str
    pixels: np.ndarray | None = None
    digest: str = ""


class _FaceCropper:
    """Largest-face crop of a full frame with the runtime's detector and crop geometry.

    Crops go straight to the model input size with the runtime's own ``crop_square``, so a face seen
    in training is cut and resized exactly as the live pipeline will cut it.
    """

    def __init__(self, size: tuple[int, int]) -> None:
        from edumood_live.classifier import ClassifierConfig, PadMode, crop_square, square_boxes
        from edumood_live.detector import DetectorConfig, FaceDetector

        self._size = size
        self._margin = ClassifierConfig().crop_margin
        self._square_boxes, self._crop_square, self._pad = square_boxes, crop_square, PadMode.EDGE
        self._detector = FaceDetector(DetectorConfig(tiles="1x1"))

    def __call__(self, frame: np.ndarray) -> np.ndarray | None:
        detections = self._detector.detect(frame)
        if len(detections) == 0:
            return None
        box = detections.boxes[np.argmax(detections.scores)]
        out = np.empty((*self._size, 3), np.uint8)
        self._crop_square(frame, self._square_boxes(box[None], self._margin)[0], self._size, self._pad, out)
        return out

    def close(self) -> None:
        self._detector.close()


def _scan(spec: SourceSpec, roots: list[Path], labels: tuple[str, ...]) -> list[_Item]:
    items: list[_Item] = []
    for root in roots:
        folders = sorted(p for p in root.iterdir() if p.is_dir())
        missing = set(spec.label_map) - {p.name for p in folders}
        if missing:
            raise RecipeError(f"source '{spec.name}': label folders {sorted(missing)} not found in {root}")
        for folder in folders:
            mapped = spec.label_map.get(folder.name)
            if mapped is None and spec.kind == "frames":
                continue  # unmapped full frames are never used and are expensive to decode
            for path in sorted(folder.iterdir()):
                if path.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                block = spec.block_size
                group = str(path) if block is None else f"{root}/{folder.name}/{_frame_number(path) // block}"
                target = None if mapped is None else labels.index(mapped)
                items.append(_Item(path, folder.name, target, group))
    return items


def _load_items(spec: SourceSpec, items: list[_Item], size: tuple[int, int], channels: int,
                skipped: Counter) -> None:
    cropper = _FaceCropper(size) if spec.kind == "frames" else None
    try:
        for item in items:
            image = _decode(item.path)
            if image is None:
                skipped[f"{spec.name}: undecodable"] += 1
                log.warning("skipping undecodable image %s", item.path)
                continue
            item.digest = hashlib.md5(image.tobytes()).hexdigest()
            if image.std() < BLANK_STD:
                skipped[f"{spec.name}: blank"] += 1
                log.info("skipping blank image %s", item.path)
                item.digest = ""
                continue
            if item.target is None:
                continue
            if cropper is not None:
                image = cropper(image)
                if image is None:
                    skipped[f"{spec.name}: no face found"] += 1
                    continue
            item.pixels = _to_model_input(image, size, channels)
    finally:
        if cropper is not None:
            cropper.close()


def _dedupe(items: list[_Item], skipped: Counter) -> list[_Item]:
    """Drop every copy of a pixel-identical group with conflicting labels; keep one of the rest."""
    by_digest: dict[str, list[_Item]] = defaultdict(list)
    for item in items:
        if item.digest:
            by_digest[item.digest].append(item)
    kept: list[_Item] = []
    for group in by_digest.values():
        meanings = {item.target if item.target is not None else f"unmapped:{item.folder}" for item in group}
        usable = [item for item in group if item.pixels is not None]
        if not usable:
            continue
        if len(meanings) > 1:
            skipped["duplicate with conflicting labels"] += len(usable)
            continue
        skipped["duplicate copy"] += len(usable) - 1
        kept.append(usable[0])
    return kept


def _assign_splits(items: list[_Item], sources: list[str], val: float, test: float, seed: str) -> np.ndarray:
    """Group-level split, stratified per source and label, so no group straddles two splits.

    Each (source, label) cell is shuffled by its own seeded generator, so one source's split does not
    change when another source is added to or removed from a recipe.
    """
    split = np.zeros(len(items), np.int64)
    cells: dict[tuple[str, int], dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, (item, source) in enumerate(zip(items, sources, strict=True)):
        cells[(source, item.target)][item.group].append(i)
    for (source, target), groups in cells.items():
        keys = sorted(groups)
        digest = hashlib.sha256(f"{seed}/{source}/{target}".encode()).digest()
        cell_seed = int.from_bytes(digest[:8], "little")
        np.random.default_rng(cell_seed).shuffle(keys)
        n = len(keys)
        n_test, n_val = round(n * test), round(n * val)
        for rank, key in enumerate(keys):
            split[groups[key]] = 2 if rank < n_test else 1 if rank < n_test + n_val else 0
    return split


def build_dataset(recipe: Recipe, data_root: Path, size: tuple[int, int], channels: int,
                  cache_dir: Path | None = None) -> Dataset:
    """Scan, decode, crop, dedupe and split the recipe's data (cached per recipe and size)."""
    roots = recipe.resolve_roots(Path(data_root))
    cache_file = None
    if cache_dir is not None:
        key = hashlib.sha256(json.dumps([recipe.path.read_text(), list(size), channels,
                                         str(Path(data_root).resolve())]).encode()).hexdigest()[:16]
        cache_file = Path(cache_dir) / f"{recipe.name}-{key}.npz"
        if cache_file.exists():
            return _load_cache(cache_file, recipe)
    skipped: Counter = Counter()
    all_items: list[tuple[int, _Item]] = []
    for s_id, spec in enumerate(recipe.sources):
        items = _scan(spec, roots[spec.name], recipe.labels)
        log.info("source %s: %d files", spec.name, len(items))
        _load_items(spec, items, size, channels, skipped)
        all_items += [(s_id, item) for item in items]
    source_of = {id(item): s_id for s_id, item in all_items}
    kept = _dedupe([item for _, item in all_items], skipped)
    if not kept:
        raise RecipeError(f"{recipe.path.name}: no usable image found")
    source_names = [recipe.sources[source_of[id(item)]].name for item in kept]
    split = _assign_splits(kept, source_names, recipe.val_fraction, recipe.test_fraction,
                           f"{recipe.name}/{recipe.seed}")
    dataset = Dataset(
        labels=recipe.labels,
        images=np.stack([item.pixels for item in kept]),
        targets=np.array([item.target for item in kept], np.int64),
        split=split,
        source=np.array([source_of[id(item)] for item in kept], np.int64),
        source_names=tuple(s.name for s in recipe.sources),
        paths=[str(item.path.relative_to(data_root)) for item in kept],
        hashes=[item.digest for item in kept],
        skipped=dict(skipped),
    )
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache_file, images=dataset.images, targets=dataset.targets, split=dataset.split,
                 source=dataset.source, paths=np.array(dataset.paths), hashes=np.array(dataset.hashes),
                 skipped=json.dumps(dataset.skipped))
    return dataset


def _load_cache(path: Path, recipe: Recipe) -> Dataset:
    with np.load(path) as z:
        return Dataset(recipe.labels, z["images"], z["targets"], z["split"], z["source"],
                       tuple(s.name for s in recipe.sources), z["paths"].tolist(), z["hashes"].tolist(),
                       json.loads(str(z["skipped"])))
