"""``python -m export``: checkpoint -> ONNX with metadata, checker, parity, optional int8."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edumood_live.classifier import LEGACY_CROP, CropSpec
from export.onnx_export import ExportError, export_onnx, load_checkpoint, normalise, time_per_face
from train.data import build_dataset
from train.metrics import classification_metrics
from train.recipe import RecipeError, load_recipe


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Export a training run's best checkpoint to ONNX with its metadata (labels, input size, "
                    "normalisation, crop, provenance), run onnx.checker and the parity check against PyTorch, "
                    "and print the result as JSON (optionally also an int8 copy, compared).")
    p.add_argument("--run", required=True, help="training run folder (has best.pt, config.json, manifest.json)")
    p.add_argument("--out", default="models/edumood_classifier.onnx", help="ONNX file to write")
    p.add_argument("--name", default="edumood-default", help="model_name written into the metadata")
    p.add_argument("--version", default="0.1.0", help="version written into the metadata")
    p.add_argument("--data-root", help="datasets folder (default: the one the run was trained on)")
    p.add_argument("--int8", action="store_true", help="also write an int8 copy (<out>.int8.onnx) and compare")
    return p


def _logits(path: Path, images_u8: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(["logits"], {"images": normalise(images_u8[i:i + 256])})[0]
                           for i in range(0, len(images_u8), 256)])


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    run = Path(args.run)
    try:
        config = json.loads((run / "config.json").read_text())
        manifest = json.loads((run / "manifest.json").read_text())
        recipe = load_recipe(Path(config["recipe"]))
        data_root = Path(args.data_root or config["data_root"])
        meta = load_checkpoint(run / "best.pt")[1]
        crop = CropSpec(meta["crop"]["margin"], meta["crop"]["pad"]) if "crop" in meta else LEGACY_CROP
        data = build_dataset(recipe, data_root, tuple(meta["input_size"]), 1, cache_dir=Path("runs/cache"), crop=crop)
        test = data.subset(data.split_mask("test") if data.split_mask("test").any() else data.split_mask("val"))
        trained_on = {  # the sources the classifier was trained on; eval-only ones are listed apart
            "recipe": recipe.name,
            "sources": {s.name: {"roots": list(s.roots), "label_map": s.label_map}
                        for s in recipe.sources if s.role == "train"},
            "evaluated_on": [s.name for s in recipe.sources if s.role == "eval"],
            "crop": meta.get("crop"),
            "initialised_from": config.get("init_from"),
            # training batches and the validation faces its metrics and calibration come from were re-framed
            # so that padding carries no label (train/framing.py)
            "framing_equalised": bool(config.get("equalise_framing", False)),
            "file_list_sha256": manifest["file_list_sha256"],
            "counts": manifest["counts"],
        }
        result = export_onnx(run / "best.pt", Path(args.out), test.images[:512], args.name, args.version,
                             trained_on)
    except (RecipeError, FileNotFoundError, KeyError, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    shape = test.images.shape[1:]
    report = {"out": str(result.path), "sha256": result.sha256, "parity_max_abs_diff": result.max_abs_diff,
              "parity_images": result.parity_images, "fp32_ms_per_face_b64": time_per_face(result.path, shape)}
    fp32_pred = _logits(result.path, test.images).argmax(1)
    report["fp32_test"] = {k: classification_metrics(test.targets, fp32_pred, data.labels)[k]
                           for k in ("accuracy", "macro_f1")}
    if args.int8:
        from export.quantize import quantize_int8

        train_imgs = data.images[data.split_mask("train")]
        calib = train_imgs[np.random.default_rng(0).permutation(len(train_imgs))[:512]]
        q_path = quantize_int8(result.path, result.path.with_suffix(".int8.onnx"), calib)
        q_pred = _logits(q_path, test.images).argmax(1)
        report["int8"] = {"path": str(q_path), "ms_per_face_b64": time_per_face(q_path, shape),
                          **{k: classification_metrics(test.targets, q_pred, data.labels)[k]
                             for k in ("accuracy", "macro_f1")}}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
