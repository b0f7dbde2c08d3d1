"""Score exported classifiers the way the product runs them, per source: the model card's tables.

``python -m export.evaluate --model default --model fast`` loads each ONNX model with the runtime's own
`FaceClassifier`, builds the recipe's data with the model's own input size and crop (the runtime's
detector and `crop_faces`, cached under ``runs/cache``), and classifies the test split with onnxruntime.
A source from a dataset none of whose folders trained the model (per the model's own ``trained_on``
metadata) is cross-source; "cross-source, pooled" scores all of their faces together. Per source
it also prints the share of each predicted label, so a source mapped onto one label shows at a glance.

``python -m export.evaluate --agreement --model default --model fast`` compares two models on the same
faces instead (labels unused): per source, how often they give a face the same label, and the engagement
index (share Engaged - share Bored) each gives the source, as the runtime computes it over a window.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from edumood_live.aggregator import class_shares, engagement_index
from edumood_live.classifier import ClassifierConfig, FaceClassifier
from edumood_live.errors import EduMoodError
from train.data import Dataset, build_dataset
from train.framing import equalised
from train.metrics import classification_metrics
from train.recipe import RecipeError, load_recipe

DEFAULT_RECIPE = "train/recipes/four_class.toml"
POOLED = "cross-source, pooled"


def _probabilities(classifier: FaceClassifier, images_u8: np.ndarray) -> np.ndarray:
    """Class probabilities of (N, C, H, W) uint8 crops, normalised as the runtime normalises them."""
    meta = classifier.meta
    out = []
    for start in range(0, len(images_u8), 256):
        batch = images_u8[start:start + 256].astype(np.float32) / 255.0
        batch = ((batch - meta.mean.reshape(1, -1, 1, 1)) / meta.std.reshape(1, -1, 1, 1)).astype(np.float32)
        out.append(classifier.classify_batch(batch))
    return np.concatenate(out) if out else np.zeros((0, len(classifier.labels)), np.float32)


def _trained_roots(trained_on: object) -> set[str]:
    sources = trained_on.get("sources", {}) if isinstance(trained_on, dict) else {}
    return {root for spec in sources.values() for root in spec.get("roots", [])}


def _overlaps(root: str, trained: set[str]) -> bool:
    """``root`` belongs to the same dataset (top folder of the data root) as one of the ``trained`` folders:
    FER-2013's test folder is not cross-source for a model trained on its train folder."""
    return Path(root).parts[0] in {Path(t).parts[0] for t in trained}


def predict_split(model: str, recipe_path: Path, data_root: Path, split: str = "test",
                  flip: bool = False, equalise: bool = False, pad_all: bool = False
                  ) -> tuple[Dataset, np.ndarray, FaceClassifier]:
    """One split of a recipe, built with the model's own input size and crop, the label the runtime's
    classifier gives each image, and the (closed) classifier: its metadata, file and crop. ``equalise``:
    the faces of the training sources re-framed so that no label can be read off their padding
    (``train.framing.equalised``, the fixed draw training selects on); ``pad_all``: that, and the faces of
    every other source framed like training crops."""
    recipe = load_recipe(recipe_path)
    with FaceClassifier(ClassifierConfig(model_path=model, device="cpu", flip_average=flip)) as classifier:
        meta, crop = classifier.meta, classifier.preprocessor.crop
        if tuple(meta.labels) != tuple(recipe.labels):
            raise RecipeError(f"model labels {list(meta.labels)} differ from the recipe's {list(recipe.labels)}")
        data: Dataset = build_dataset(recipe, data_root, meta.input_size, meta.channels,
                                      cache_dir=Path("runs/cache"), crop=crop)
        data = equalised(data, (split,), every_source=pad_all) if equalise or pad_all else data
        data = data.subset(data.split_mask(split))
        return data, _probabilities(classifier, data.images).argmax(1), classifier


def evaluate_model(model: str, recipe_path: Path, data_root: Path, split: str = "test",
                   flip: bool = False, equalise: bool = False, pad_all: bool = False) -> dict:
    """Metrics per source (and pooled over eval-only sources) of one model on one split of a recipe."""
    recipe = load_recipe(recipe_path)
    data, predicted, classifier = predict_split(model, recipe_path, data_root, split, flip, equalise, pad_all)
    meta = classifier.meta
    # cross-source: no folder of the source's dataset trained this model (its metadata lists them)
    trained = _trained_roots(meta.trained_on)
    eval_only = {s.name for s in recipe.sources if not any(_overlaps(root, trained) for root in s.roots)}
    by_source = {}
    for i, name in enumerate(data.source_names):
        mask = data.source == i
        if mask.any():
            by_source[name] = classification_metrics(data.targets[mask], predicted[mask], data.labels)
            by_source[name]["cross_source"] = name in eval_only
    pooled = np.isin(np.array(data.source_names)[data.source], sorted(eval_only))
    if pooled.any():
        by_source[POOLED] = classification_metrics(data.targets[pooled], predicted[pooled], data.labels)
        by_source[POOLED]["cross_source"] = True
    return {"model": f"{meta.model_name} {meta.version}", "path": str(classifier.model_path), "split": split,
            "crop": json.loads(classifier.preprocessor.crop.to_json()), "flip_averaged": flip,
            "framing_equalised": equalise or pad_all, "every_source_padded": pad_all,
            "faces_not_found": {k: v for k, v in data.skipped.items() if "no face" in k},
            "by_source": by_source}


def agreement(model_a: str, model_b: str, recipe_path: Path, data_root: Path, split: str = "test") -> dict:
    """Two models on the same faces of one split, per source and over all: the share of faces given the
    same label, each model's engagement index and their difference, and the largest difference in the
    share of any label. Each model sees its own input size and crop; faces are matched by file."""
    data_a, pred_a, clf_a = predict_split(model_a, recipe_path, data_root, split)
    data_b, pred_b, clf_b = predict_split(model_b, recipe_path, data_root, split)
    row_b = {path: i for i, path in enumerate(data_b.paths)}
    ia = np.array([i for i, path in enumerate(data_a.paths) if path in row_b], np.int64)
    ib = np.array([row_b[data_a.paths[i]] for i in ia], np.int64)
    pred_a, pred_b, source, labels = pred_a[ia], pred_b[ib], data_a.source[ia], data_a.labels
    groups = [(name, source == i) for i, name in enumerate(data_a.source_names)] + [("all", source >= 0)]
    by_source = {}
    for name, mask in groups:
        if not mask.any():
            continue
        n = int(mask.sum())
        counts = [np.bincount(pred[mask], minlength=len(labels)) for pred in (pred_a, pred_b)]
        index_a, index_b = (engagement_index(class_shares(c, n, labels)) for c in counts)
        by_source[name] = {
            "n": n, "same_label": float(np.mean(pred_a[mask] == pred_b[mask])),
            "index_a": index_a, "index_b": index_b,
            "index_diff": None if index_a is None or index_b is None else abs(index_a - index_b),
            "share_diff_max": float(np.abs(counts[0] - counts[1]).max() / n),
        }
    return {"a": _name(clf_a), "b": _name(clf_b), "split": split, "by_source": by_source}


def _name(classifier: FaceClassifier) -> str:
    return f"{classifier.meta.model_name} {classifier.meta.version} ({classifier.model_path.name})"


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.3f}"


def agreement_table(result: dict) -> str:
    """Markdown: one row per source of `agreement`."""
    lines = ["| source | faces | same label | index A | index B | \\|diff\\| | share diff max (pp) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, m in result["by_source"].items():
        diff = "–" if m["index_diff"] is None else f"{m['index_diff']:.3f}"
        lines.append(f"| {name} | {m['n']} | {m['same_label']:.1%} | {_signed(m['index_a'])} | "
                     f"{_signed(m['index_b'])} | {diff} | {100 * m['share_diff_max']:.1f} |")
    return "\n".join(lines)


def table(result: dict) -> str:
    """Markdown: per source n, accuracy, macro-F1, recall per label and the predicted-label shares."""
    any_source = next(iter(result["by_source"].values()))
    labels = list(any_source["per_class"])
    head = ("| source | cross-source | n | accuracy | macro-F1 | " + " | ".join(f"recall {lb}" for lb in labels)
            + " | predicted " + " / ".join(lb[0] for lb in labels) + " |")
    lines = [head, "|---|---|---:|---:|---:|" + "---:|" * len(labels) + "---|"]
    for name, m in result["by_source"].items():
        recalls = [f"{m['per_class'][lb]['recall']:.2f}" if m["per_class"][lb]["support"] else "–" for lb in labels]
        shares = " / ".join(f"{m['predicted_share'][lb]:.2f}" for lb in labels)
        lines.append(f"| {name} | {'yes' if m['cross_source'] else 'no'} | {m['n']} | {m['accuracy']:.3f} | "
                     f"{m['macro_f1']:.3f} | " + " | ".join(recalls) + f" | {shares} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", help="ONNX file or shipped name (repeatable; default: default)")
    parser.add_argument("--recipe", default=DEFAULT_RECIPE, type=Path)
    parser.add_argument("--data-root", default="../shared/datasets", type=Path)
    parser.add_argument("--split", default="test", choices=["val", "test"])
    parser.add_argument("--flip", action="store_true", help="average each face with its mirror image "
                        "(ClassifierConfig.flip_average, --flip-average)")
    parser.add_argument("--equalise-framing", action="store_true", help="score the training sources' faces "
                        "re-framed so that no label can be read off how much of a crop is padding "
                        "(train/framing.py; what fit --equalise-framing selects on)")
    parser.add_argument("--pad-like-training", action="store_true", help="--equalise-framing, and the faces of "
                        "sources that do not train padded as training crops are (does the model read real "
                        "context around a face as a label?)")
    parser.add_argument("--agreement", action="store_true", help="compare the two --model on the same faces "
                        "(labels unused) instead of scoring each")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.agreement and len(args.model or []) != 2:
        parser.error("--agreement needs exactly two --model")
    results = []
    try:
        if args.agreement:
            result = agreement(args.model[0], args.model[1], args.recipe, args.data_root, args.split)
            results.append(result)
            print(f"A = {result['a']}, B = {result['b']}, {args.split} split, the same faces\n")
            print(agreement_table(result))
        else:
            for model in args.model or ["default"]:
                result = evaluate_model(model, args.recipe, args.data_root, args.split, args.flip,
                                        args.equalise_framing, args.pad_like_training)
                results.append(result)
                print(f"### {result['model']} ({Path(result['path']).name}), {args.split} split, crop "
                      f"{json.dumps(result['crop'])}{', flip-averaged' if args.flip else ''}"
                      f"{', framing equalised' if args.equalise_framing else ''}"
                      f"{', every source padded like training crops' if args.pad_like_training else ''}\n")
                print(table(result))
                print(f"\nFaces the detector did not find (not scored, as at run time): "
                      f"{json.dumps(result['faces_not_found'])}\n")
    except (RecipeError, EduMoodError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
