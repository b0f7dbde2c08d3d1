"""Print the model card's data and metric tables from a training run folder.

``python -m export.card --run runs/fast4_ema`` prints markdown: counts per split/source/label from
``manifest.json`` and test/validation metrics from ``metrics.json``, so every figure in
``models/MODEL_CARD.md`` comes from the run that produced the shipped model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def counts_table(manifest: dict) -> str:
    labels = manifest["labels"]
    lines = ["| split | source | " + " | ".join(labels) + " | total |", "|---|---|" + "---:|" * (len(labels) + 1)]
    for split, per_source in manifest["counts"].items():
        for source, counts in per_source.items():
            row = [counts.get(label, 0) for label in labels]
            lines.append(f"| {split} | {source} | " + " | ".join(map(str, row)) + f" | {sum(row)} |")
    return "\n".join(lines)


def metrics_table(split: dict) -> str:
    rows = [("all sources", split["all"]), *split["by_source"].items()]
    labels = list(split["all"]["per_class"])
    head = "| test data | n | accuracy | macro-F1 | micro-F1 | " + " | ".join(f"recall {lb}" for lb in labels) + " |"
    lines = [head, "|---|---:|---:|---:|---:|" + "---:|" * len(labels)]
    for name, m in rows:
        recalls = [f"{m['per_class'][lb]['recall']:.3f}" if m["per_class"][lb]["support"] else "–" for lb in labels]
        lines.append(f"| {name} | {m['n']} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} | {m['micro_f1']:.3f} | "
                     + " | ".join(recalls) + " |")
    return "\n".join(lines)


def confusion_table(m: dict) -> str:
    labels = list(m["per_class"])
    lines = ["| true \\ predicted | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for label, row in zip(labels, m["confusion_matrix"], strict=True):
        lines.append(f"| {label} | " + " | ".join(map(str, row)) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.card", description=(
        "Print the model card's data and metric tables (markdown) from a finished training run folder."))
    parser.add_argument("--run", required=True, type=Path)
    args = parser.parse_args(argv)
    missing = [name for name in ("manifest.json", "metrics.json") if not (args.run / name).is_file()]
    if missing:
        print(f"error: {args.run} has no {' or '.join(missing)}: not a finished training run (train it first, "
              "e.g. bash train/reproduce.sh, which writes the runs/ folders the model card names)", file=sys.stderr)
        return 2
    manifest = json.loads((args.run / "manifest.json").read_text())
    metrics = json.loads((args.run / "metrics.json").read_text())
    print("### Data (after de-duplication)\n")
    print(counts_table(manifest))
    print(f"\nSkipped: {json.dumps(manifest['skipped'])}. File-list sha256: `{manifest['file_list_sha256']}`.\n")
    for split in ("test", "val"):
        if split in metrics["splits"]:
            print(f"### {split} split\n")
            print(metrics_table(metrics["splits"][split]))
            print()
    print("### Confusion matrix, test split, all sources\n")
    print(confusion_table(metrics["splits"]["test"]["all"]))
    bias = ", ".join(f"{k} {v:+.3f}" for k, v in metrics.get("class_bias", {}).items()) or "none"
    print(f"\nBest epoch {metrics['best_epoch'] + 1}, temperature {metrics['temperature']:.3f}, class bias {bias}.")
    if metrics.get("uncalibrated"):
        print("\n### Calibration effect (all sources)\n")
        print("| split | uncalibrated accuracy / macro-F1 | calibrated accuracy / macro-F1 |\n|---|---:|---:|")
        for split, raw in metrics["uncalibrated"].items():
            cal = metrics["splits"][split]["all"]
            print(f"| {split} | {raw['accuracy']:.3f} / {raw['macro_f1']:.3f} | {cal['accuracy']:.3f} / "
                  f"{cal['macro_f1']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
