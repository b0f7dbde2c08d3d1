"""Build an in-memory, deduplicated, group-split dataset from a recipe.

Steps: scan the recipe's folders (labels from folder names, or from crowd votes) -> decode every image
(undecodable and blank files are counted and logged, never silently dropped) -> find the face with the
runtime's MediaPipe detector and cut it with the runtime's crop (`edumood_live.crop.crop_faces`),
tight dataset crops padded first (`FaceCropper`) -> drop pixel-identical groups whose labels disagree,
keep one copy of the others -> split by group (file, folder = person, or blocks of consecutive frame
numbers) stratified per label; eval-only sources go whole to the test split -> a manifest with counts,
the crop and a hash of the file list, saved with every run.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edumood_live.crop import CropSpec, crop_faces, square_boxes
from train.recipe import ANY_FOLDER, Recipe, RecipeError, SourceSpec

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
SPLITS = ("train", "val", "test")
BLANK_STD = 3.0
CACHE_VERSION = 2  # bump when the way a cached dataset is built changes


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
    soft: np.ndarray | None = None  # (N, K) float32 target distribution (crowd votes; else one-hot)
    padding: np.ndarray | None = None  # (N,) share of each crop that is padding, not image
    crop: CropSpec = field(default_factory=CropSpec)
    eval_sources: frozenset[str] = frozenset()  # the recipe's evaluation-only sources (test split only)

    def __post_init__(self) -> None:
        if self.soft is None:
            self.soft = np.eye(len(self.labels), dtype=np.float32)[self.targets]
        if self.padding is None:
            self.padding = np.zeros(len(self.targets), np.float32)

    def subset(self, mask: np.ndarray) -> Dataset:
        idx = np.flatnonzero(mask)
        return Dataset(
            self.labels, self.images[idx], self.targets[idx], self.split[idx], self.source[idx],
            self.source_names, [self.paths[i] for i in idx], [self.hashes[i] for i in idx],
            dict(self.skipped), self.soft[idx], self.padding[idx], self.crop, self.eval_sources,
        )

    def split_mask(self, name: str) -> np.ndarray:
        return self.split == SPLITS.index(name)

    def training_source_mask(self) -> np.ndarray:
        """Images of the sources the recipe trains on (not of its evaluation-only ones)."""
        return ~np.isin(self.source, [i for i, name in enumerate(self.source_names) if name in self.eval_sources])

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
        padding = {name: round(float(self.padding[self.source == i].mean()), 4)
                   for i, name in enumerate(self.source_names) if (self.source == i).any()}
        return {
            "labels": list(self.labels),
            "images": int(len(self.targets)),
            "counts": counts,
            "skipped": self.skipped,
            "crop": json.loads(self.crop.to_json()),
            "mean_padding_share": padding,
            "file_list_sha256": hashlib.sha256(listing.encode()).hexdigest(),
        }


def _decode(path: Path) -> np.ndarray | None:
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    return image


def _frame_number(path: Path) -> int:
    digits = re.findall(r"\d+", path.stem)
    return int(digits[-1]) if digits else 0


@dataclass
class _Item:
    path: Path
    folder: str
    target: int | None  # None: folder not mapped (still hashed, to catch cross-label duplicates)
    group: str
    soft: np.ndarray | None = None  # crowd-vote distribution over the recipe labels (vote sources)
    pixels: np.ndarray | None = None
    digest: str = ""
    padding: float = 0.0  # share of the crop's area that lies outside the image (filled by padding)


# A tight face crop is padded by this share of its side on every side (edge replication, as the
# runtime fills a crop that leaves the frame) and enlarged to at least DETECT_SIDE px before detection,
# so the detector sees a whole face with room around it, as in a frame.
TIGHT_PAD = 0.5
DETECT_SIDE = 192  # the full-range BlazeFace input size


class FaceCropper:
    """The runtime's detector and crop (`crop_faces`) applied to one training or evaluation image.

    ``kind='frames'``: the image is searched as the runtime searches a frame (default detector
    settings). ``kind='crops'``: the image is a dataset's tight face crop; it is padded first (see
    ``TIGHT_PAD``), searched, and the box mapped back, so the crop itself is cut from the original pixels
    and filled by edge replication where it leaves them — exactly what the runtime does for a face at a
    frame's edge. The largest face is kept; an image without one is not used (the runtime would not
    classify it either), and the caller counts it.
    """

    def __init__(self, size: tuple[int, int], channels: int, crop: CropSpec) -> None:
        from edumood_live.detector import DetectorConfig, FaceDetector

        self.size, self.channels, self.crop = size, channels, crop
        self._detector = FaceDetector(DetectorConfig(workers=1))

    def find(self, image: np.ndarray, kind: str) -> np.ndarray | None:
        """The largest face's box (xyxy float32, in ``image`` pixels), or None."""
        scale, pad = 1.0, 0
        if kind == "crops":
            pad = round(TIGHT_PAD * max(image.shape[:2]))
            image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
            scale = max(1.0, DETECT_SIDE / max(image.shape[:2]))
            if scale > 1.0:
                image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        found = self._detector.detect(image)
        if len(found) == 0:
            return None
        area = np.prod(found.boxes[:, 2:] - found.boxes[:, :2], axis=1)
        return (found.boxes[int(np.argmax(area))] / scale - pad).astype(np.float32)

    def cut(self, image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, float]:
        """(C, H, W) uint8 model input of the face in ``box``, and the share of it that is padding."""
        face = crop_faces(image, box[None], self.crop, self.size, grey=self.channels == 1)[0]
        x0, y0, x1, y1 = square_boxes(box[None], self.crop.margin)[0].tolist()
        h, w = image.shape[:2]
        inside = max(0, min(x1, w) - max(x0, 0)) * max(0, min(y1, h) - max(y0, 0))
        padding = 1.0 - inside / max((x1 - x0) * (y1 - y0), 1)
        return (face[None] if self.channels == 1 else face.transpose(2, 0, 1)), padding

    def close(self) -> None:
        self._detector.close()


class _BoxCache:
    """Face boxes per image file, kept between runs (detection dominates the cost of building a dataset).

    Keyed by the file's path, size and modification time, and stored per source in a JSON file whose
    name depends on everything that can change a box (detector file, tight-crop padding).
    """

    def __init__(self, cache_dir: Path | None, source: str) -> None:
        from edumood_live.resources import default_detector_path

        self._file = None
        self._boxes: dict[str, list[float] | None] = {}
        if cache_dir is not None:
            detector = hashlib.sha256(default_detector_path().read_bytes()).hexdigest()[:12]
            self._file = Path(cache_dir) / f"faces-{source}-{detector}-{TIGHT_PAD}-{DETECT_SIDE}.json"
            if self._file.exists():
                self._boxes = json.loads(self._file.read_text())

    @staticmethod
    def _key(path: Path) -> str:
        stat = path.stat()
        return f"{path}|{stat.st_size}|{int(stat.st_mtime)}"

    def get(self, path: Path) -> tuple[bool, np.ndarray | None]:
        key = self._key(path)
        if key not in self._boxes:
            return False, None
        box = self._boxes[key]
        return True, None if box is None else np.asarray(box, np.float32)

    def put(self, path: Path, box: np.ndarray | None) -> None:
        self._boxes[self._key(path)] = None if box is None else [round(float(v), 3) for v in box]

    def save(self) -> None:
        if self._file is not None:
            self._file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._boxes))
            tmp.replace(self._file)


VOTE_EMOTIONS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
VOTE_COLUMNS = (*VOTE_EMOTIONS, "unknown", "NF")


def _read_votes(csv_path: Path) -> dict[str, np.ndarray]:
    """FER+ vote rows keyed by image path (relative to the CSV's folder), normalised to sum 1."""
    if not csv_path.is_file():
        raise RecipeError(f"votes file {csv_path} does not exist")
    votes: dict[str, np.ndarray] = {}
    with csv_path.open(newline="") as f:
        for row in csv.DictReader(f):
            counts = np.array([float(row[c]) for c in VOTE_COLUMNS])
            if counts.sum() > 0:
                votes[row["path"]] = counts / counts.sum()
    return votes


def _vote_target(spec: SourceSpec, votes: np.ndarray, labels: tuple[str, ...]
                 ) -> tuple[int | None, np.ndarray | None, str]:
    """(target, soft target over ``labels``, meaning) from one normalised FER+ vote row.

    The crowd's majority emotion decides the target; an image the crowd mostly called 'not a face' or
    'unknown' has none. The soft target spreads over the mapped emotions only.
    """
    emotions = votes[: len(VOTE_EMOTIONS)]
    if votes[len(VOTE_EMOTIONS):].sum() >= 0.5:
        return None, None, "no emotion"
    top = VOTE_EMOTIONS[int(np.argmax(emotions))]
    if top not in spec.label_map:
        return None, None, f"unmapped:{top}"
    soft = np.zeros(len(labels), np.float32)
    for column, label in spec.label_map.items():
        soft[labels.index(label)] += emotions[VOTE_EMOTIONS.index(column)]
    return labels.index(spec.label_map[top]), soft / soft.sum(), top


def _scan(spec: SourceSpec, roots: list[Path], labels: tuple[str, ...], data_root: Path) -> list[_Item]:
    votes = _read_votes(data_root / spec.votes) if spec.votes else None
    items: list[_Item] = []
    for root in roots:
        folders = sorted(p for p in root.iterdir() if p.is_dir())
        missing = set() if votes or ANY_FOLDER in spec.label_map else set(spec.label_map) - {p.name for p in folders}
        if missing:
            raise RecipeError(f"source '{spec.name}': label folders {sorted(missing)} not found in {root}")
        for folder in folders:
            mapped = spec.label_map.get(folder.name, spec.label_map.get(ANY_FOLDER))
            if votes is None and mapped is None and spec.kind == "frames":
                continue  # unmapped full frames are never used and are expensive to decode
            for path in sorted(folder.iterdir()):
                if path.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                block = spec.block_size
                group = (f"{root}/{folder.name}" if spec.group == "folder" else str(path) if block is None
                         else f"{root}/{folder.name}/{_frame_number(path) // block}")
                soft = None
                if votes is not None:
                    row = votes.get(str(path.relative_to((data_root / spec.votes).parent)))
                    if row is None:
                        continue  # FER+ lists why in ferplus_excluded.csv; counted by the caller
                    target, soft, meaning = _vote_target(spec, row, labels)
                    folder_name = meaning
                else:
                    target, folder_name = (None if mapped is None else labels.index(mapped)), folder.name
                items.append(_Item(path, folder_name, target, group, soft))
    return items


def _load_items(spec: SourceSpec, items: list[_Item], cropper: FaceCropper, boxes: _BoxCache,
                skipped: Counter) -> None:
    for i, item in enumerate(items):
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
        known, box = boxes.get(item.path)
        if not known:
            box = cropper.find(image, spec.kind)
            boxes.put(item.path, box)
        if box is None:
            skipped[f"{spec.name}: no face found"] += 1
            continue
        item.pixels, item.padding = cropper.cut(image, box)
        if i % 2000 == 1999:
            boxes.save()
            log.info("source %s: %d/%d images cropped", spec.name, i + 1, len(items))
    boxes.save()


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


def _assign_splits(items: list[_Item], sources: list[str], val: float, test: float, seed: str,
                   eval_only: set[str], fractions: dict[str, tuple[float, float]] | None = None) -> np.ndarray:
    """Group-level split, stratified per source and label, so no group straddles two splits.

    Every image of an ``eval_only`` source goes to the test split: the model never trains on it.

    Each (source, label) cell is shuffled by its own seeded generator, so one source's split does not
    change when another source is added to or removed from a recipe.
    """
    split = np.zeros(len(items), np.int64)
    cells: dict[tuple[str, int], dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, (item, source) in enumerate(zip(items, sources, strict=True)):
        cells[(source, item.target)][item.group].append(i)
    for (source, target), groups in cells.items():
        if source in eval_only:
            for members in groups.values():
                split[members] = SPLITS.index("test")
            continue
        keys = sorted(groups)
        val_share, test_share = (fractions or {}).get(source, (val, test))
        digest = hashlib.sha256(f"{seed}/{source}/{target}".encode()).digest()
        cell_seed = int.from_bytes(digest[:8], "little")
        np.random.default_rng(cell_seed).shuffle(keys)
        n = len(keys)
        n_test, n_val = round(n * test_share), round(n * val_share)
        for rank, key in enumerate(keys):
            split[groups[key]] = 2 if rank < n_test else 1 if rank < n_test + n_val else 0
    return split


def build_dataset(recipe: Recipe, data_root: Path, size: tuple[int, int], channels: int,
                  cache_dir: Path | None = None, crop: CropSpec | None = None) -> Dataset:
    """Scan, decode, detect and crop (the runtime's way), dedupe and split the recipe's data.

    Cached per recipe, size, channels and crop; face boxes are cached per image across all of them.
    """
    crop = crop or CropSpec()
    roots = recipe.resolve_roots(Path(data_root))
    cache_file = None
    if cache_dir is not None:
        key = hashlib.sha256(json.dumps([recipe.path.read_text(), list(size), channels, crop.to_json(),
                                         str(Path(data_root).resolve()), CACHE_VERSION]).encode()).hexdigest()[:16]
        cache_file = Path(cache_dir) / f"{recipe.name}-{key}.npz"
        if cache_file.exists():
            return _load_cache(cache_file, recipe, crop)
    skipped: Counter = Counter()
    all_items: list[tuple[int, _Item]] = []
    cropper = FaceCropper(size, channels, crop)
    try:
        for s_id, spec in enumerate(recipe.sources):
            items = _scan(spec, roots[spec.name], recipe.labels, Path(data_root))
            log.info("source %s: %d files", spec.name, len(items))
            _load_items(spec, items, cropper, _BoxCache(cache_dir, spec.name), skipped)
            all_items += [(s_id, item) for item in items]
    finally:
        cropper.close()
    source_of = {id(item): s_id for s_id, item in all_items}
    kept = _dedupe([item for _, item in all_items], skipped)
    if not kept:
        raise RecipeError(f"{recipe.path.name}: no usable image found")
    source_names = [recipe.sources[source_of[id(item)]].name for item in kept]
    split = _assign_splits(kept, source_names, recipe.val_fraction, recipe.test_fraction,
                           f"{recipe.name}/{recipe.seed}", _eval_sources(recipe),
                           {s.name: s.fractions for s in recipe.sources if s.fractions is not None})
    one_hot = np.eye(len(recipe.labels), dtype=np.float32)
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
        soft=np.stack([one_hot[item.target] if item.soft is None else item.soft for item in kept]),
        padding=np.array([item.padding for item in kept], np.float32),
        crop=crop,
        eval_sources=_eval_sources(recipe),
    )
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache_file, images=dataset.images, targets=dataset.targets, split=dataset.split,
                 source=dataset.source, paths=np.array(dataset.paths), hashes=np.array(dataset.hashes),
                 skipped=json.dumps(dataset.skipped), soft=dataset.soft, padding=dataset.padding)
    return dataset


def _load_cache(path: Path, recipe: Recipe, crop: CropSpec) -> Dataset:
    with np.load(path) as z:
        return Dataset(recipe.labels, z["images"], z["targets"], z["split"], z["source"],
                       tuple(s.name for s in recipe.sources), z["paths"].tolist(), z["hashes"].tolist(),
                       json.loads(str(z["skipped"])), z["soft"], z["padding"], crop, _eval_sources(recipe))


def _eval_sources(recipe: Recipe) -> frozenset[str]:
    return frozenset(s.name for s in recipe.sources if s.role == "eval")
