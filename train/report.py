"""Data report for a recipe: class distribution per split and source, sample faces, intensity histograms.

The report shows the data exactly as the trainer sees it (decoded, face-cropped, deduplicated, split,
resized to the model input and converted to grey), so confounds between sources and labels, e.g. one
source supplying most of a class with darker or smaller images, or one label's crops padded more than the
others' (``padding_stats``), are visible before any training.
Outputs: ``distribution.png``, ``samples.png``, ``intensity.png``, ``summary.json``, ``report.md``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from train.data import SPLITS, Dataset, build_dataset
from train.recipe import load_recipe
from train.runfolder import markdown_table, save_config

log = logging.getLogger(__name__)

SPLIT_COLOURS = {"train": "#4C72B0", "val": "#DD8452", "test": "#55A868"}


@dataclass(frozen=True)
class ReportConfig:
    recipe: str
    data_root: str = "../shared/datasets"
    out_dir: str = "runs/report"
    size: int = 64  # model input side in pixels (64: the `fast` arch; 48: original/variants)
    samples_per_class: int = 8
    seed: int = 0
    cache_dir: str = "runs/cache"

    def __post_init__(self) -> None:
        if not 16 <= self.size <= 256:
            raise ValueError(f"size must be in 16..256 pixels, got {self.size}")
        if not 1 <= self.samples_per_class <= 32:
            raise ValueError(f"samples_per_class must be in 1..32, got {self.samples_per_class}")


def class_counts(data: Dataset) -> dict[str, dict[str, int]]:
    """{split: {label: count}} over all sources."""
    return {split: {label: int(np.sum(data.split_mask(split) & (data.targets == k)))
                    for k, label in enumerate(data.labels)} for split in SPLITS}


def source_counts(data: Dataset) -> dict[str, dict[str, int]]:
    """{source: {label: count}} over all splits."""
    return {name: {label: int(np.sum((data.source == s) & (data.targets == k)))
                   for k, label in enumerate(data.labels)} for s, name in enumerate(data.source_names)}


def intensity_stats(data: Dataset) -> dict[str, dict[str, float]]:
    """Per label: mean/std of per-image mean brightness and per-image contrast (pixel std), 0..255."""
    flat = data.images.reshape(len(data.images), -1).astype(np.float32)
    means, stds = flat.mean(1), flat.std(1)
    out = {}
    for k, label in enumerate(data.labels):
        m = data.targets == k
        out[label] = {"n": int(m.sum()),
                      "brightness_mean": float(means[m].mean()) if m.any() else float("nan"),
                      "brightness_std": float(means[m].std()) if m.any() else float("nan"),
                      "contrast_mean": float(stds[m].mean()) if m.any() else float("nan")}
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_distribution(data: Dataset, title: str, path: Path) -> None:
    """Left: images per label and split. Right: images per label and source (all splits)."""
    plt = _pyplot()
    labels, counts, by_source = data.labels, class_counts(data), source_counts(data)
    x = np.arange(len(labels))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=110)
    width = 0.8 / len(SPLITS)
    for i, split in enumerate(SPLITS):
        values = [counts[split][label] for label in labels]
        bars = ax1.bar(x + (i - 1) * width, values, width, label=split, color=SPLIT_COLOURS[split])
        ax1.bar_label(bars, fontsize=7, padding=1)
    ax1.margins(y=0.1)
    ax1.set_xticks(x, labels, rotation=20, ha="right")
    ax1.set_xlabel("label")
    ax1.set_ylabel("images")
    ax1.set_title("per split")
    ax1.legend(title="split")
    bottom = np.zeros(len(labels))
    for name, per_label in by_source.items():
        values = np.array([per_label[label] for label in labels])
        if values.sum():
            ax2.bar(x, values, 0.6, bottom=bottom, label=name)
            bottom += values
    for xi, total in zip(x, bottom, strict=True):
        ax2.text(xi, total, f"{int(total)}", ha="center", va="bottom", fontsize=8)
    ax2.set_ylim(0, max(bottom.max(), 1) * 1.1)
    ax2.set_xticks(x, labels, rotation=20, ha="right")
    ax2.set_xlabel("label")
    ax2.set_ylabel("images (all splits)")
    ax2.set_title("per source")
    ax2.legend(title="source")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_samples(data: Dataset, per_class: int, seed: int, title: str, path: Path) -> None:
    """A grid: one row per label, ``per_class`` random faces (source under each) and the mean face."""
    plt = _pyplot()
    rng = np.random.default_rng(seed)
    rows, cols = len(data.labels), per_class + 1
    fig, axes = plt.subplots(rows, cols, figsize=(1.25 * cols + 0.6, 1.45 * rows + 0.6), dpi=110,
                             squeeze=False)
    for k, label in enumerate(data.labels):
        idx = np.flatnonzero(data.targets == k)
        chosen = rng.choice(idx, size=min(per_class, len(idx)), replace=False) if len(idx) else []
        for j in range(cols):
            ax = axes[k, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(chosen):
                i = chosen[j]
                ax.imshow(data.images[i, 0], cmap="gray", vmin=0, vmax=255)
                ax.set_xlabel(data.source_names[data.source[i]], fontsize=6)
            elif j == cols - 1 and len(idx):
                ax.imshow(data.images[idx, 0].mean(0), cmap="gray", vmin=0, vmax=255)
                ax.set_xlabel(f"mean of {len(idx)}", fontsize=6)
            else:
                ax.axis("off")
        axes[k, 0].set_ylabel(label, fontsize=10, rotation=0, ha="right", va="center")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_intensity(data: Dataset, title: str, path: Path) -> None:
    """Per label: pooled pixel histogram, per-image mean brightness, per-image contrast (std)."""
    plt = _pyplot()
    flat = data.images.reshape(len(data.images), -1)
    means, stds = flat.mean(1), flat.std(1)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), dpi=110)
    bins = np.linspace(0, 255, 52)
    for k, label in enumerate(data.labels):
        m = data.targets == k
        if not m.any():
            continue
        hist = np.bincount(flat[m].ravel(), minlength=256).astype(np.float64)
        axes[0].plot(np.arange(256), hist / hist.sum(), label=f"{label} (n={int(m.sum())})")
        axes[1].hist(means[m], bins=bins, density=True, histtype="step", linewidth=1.5, label=label)
        axes[2].hist(stds[m], bins=np.linspace(0, 128, 52), density=True, histtype="step", linewidth=1.5,
                     label=label)
    for ax, name, xlabel in zip(axes, ("pixel intensity (all pixels)", "per-image mean brightness",
                                       "per-image contrast"),
                                ("pixel value (0-255)", "mean pixel value (0-255)", "pixel std (0-255)"),
                                strict=True):
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("density")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def padding_stats(data: Dataset) -> dict:
    """How much of each crop is padding (edge replication where the crop leaves the image), per source and
    label, and per label of the training sources how well one threshold on that share alone, fitted on the
    train split, tells the label from the rest on the test split: a framing shortcut shows as a high score."""
    share = {name: {label: round(float(data.padding[(data.source == s) & (data.targets == k)].mean()), 3)
                    for k, label in enumerate(data.labels) if ((data.source == s) & (data.targets == k)).any()}
             for s, name in enumerate(data.source_names)}
    trains = data.training_source_mask()
    train, test = trains & data.split_mask("train"), trains & data.split_mask("test")
    thresholds = np.quantile(data.padding[train], np.linspace(0, 1, 101)) if train.any() else []
    shortcut = {}
    for k, label in enumerate(data.labels):
        if not (train & (data.targets == k)).any():
            continue
        # (train accuracy, threshold, whether the label is the side below it); "label" where (share < t) == below
        fits = [(float(np.mean(((data.padding[train] < t) == below) == (data.targets[train] == k))), float(t), below)
                for t in thresholds for below in (True, False)]
        accuracy, threshold, below = max(fits)
        said = (data.padding[test] < threshold) == below
        is_label = data.targets[test] == k
        shortcut[label] = {"threshold": round(threshold, 3), "label_below": below,
                           "train_accuracy": round(accuracy, 3),
                           "test_accuracy": round(float(np.mean(said == is_label)), 3),
                           "test_recall": round(float(np.mean(said[is_label])), 3) if is_label.any() else None}
    return {"mean_share": share, "threshold_alone": shortcut}


def _markdown(cfg: ReportConfig, name: str, data: Dataset, summary: dict) -> str:
    labels = list(data.labels)
    counts = summary["counts_per_split"]
    split_rows = [[label, *(counts[s][label] for s in SPLITS), sum(counts[s][label] for s in SPLITS)]
                  for label in labels]
    split_rows.append(["**total**", *(sum(counts[s].values()) for s in SPLITS), len(data.targets)])
    by_source = summary["counts_per_source"]
    source_rows = [[src, *(c[label] for label in labels), sum(c.values())] for src, c in by_source.items()]
    stats = summary["intensity"]
    stat_rows = [[label, s["n"], s["brightness_mean"], s["brightness_std"], s["contrast_mean"]]
                 for label, s in stats.items()]
    padding = summary["padding"]
    padding_rows = [[src, *(shares.get(label, "–") for label in labels)]
                    for src, shares in padding["mean_share"].items()]
    shortcut_rows = [[label, f"{'<' if r['label_below'] else '≥'} {r['threshold']}", r["train_accuracy"],
                      r["test_accuracy"], r["test_recall"]] for label, r in padding["threshold_alone"].items()]
    train = [counts["train"][label] for label in labels]
    skipped = "\n".join(f"- {k}: {v}" for k, v in sorted(data.skipped.items())) or "- nothing"
    return f"""# Data report: {name}

Recipe `{cfg.recipe}`, data root `{cfg.data_root}`; {len(data.targets)} images as the trainer sees them
({cfg.size}x{cfg.size} grey, after face cropping, de-duplication and the group split).
File-list SHA-256 `{summary['file_list_sha256'][:16]}…`.
Train imbalance (largest / smallest class): {max(train) / max(min(train), 1):.2f}.

## Images per label and split

{markdown_table(["label", *SPLITS, "all"], split_rows)}

## Images per source and label (all splits)

{markdown_table(["source", *labels, "all"], source_rows)}

## Brightness and contrast per label (0-255)

{markdown_table(["label", "n", "mean brightness", "sd of brightness", "mean contrast"], stat_rows)}

## Share of each crop that is padding, per source and label

Padding is edge replication where the runtime's crop leaves the image (tight-crop datasets; a face at a frame's
edge). If one label's crops are padded more than another's, "how much is padding" is a label a network can learn.

{markdown_table(["source", *labels], padding_rows)}

Can the padding share alone tell a label from the rest? One threshold fitted on the training sources' train split,
scored on their test split:

{markdown_table(["label", "rule", "train accuracy", "test accuracy", "test recall"], shortcut_rows)}

## Skipped while building

{skipped}

## Plots

![class distribution](distribution.png)

![sample faces per label](samples.png)

![intensity histograms per label](intensity.png)
"""


def run_report(cfg: ReportConfig) -> dict:
    """Build the recipe's dataset and write the report's plots and summary into ``cfg.out_dir``."""
    out = Path(cfg.out_dir)
    save_config(out, "report", cfg)
    recipe = load_recipe(Path(cfg.recipe))
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns) as progress:
        task = progress.add_task(f"building dataset '{recipe.name}' (cached after the first run)", total=5)
        data = build_dataset(recipe, Path(cfg.data_root), (cfg.size, cfg.size), 1,
                             cache_dir=Path(cfg.cache_dir))
        summary = {"recipe": recipe.name, "images": int(len(data.targets)), "size": cfg.size,
                   "counts_per_split": class_counts(data), "counts_per_source": source_counts(data),
                   "intensity": intensity_stats(data), "padding": padding_stats(data), "skipped": data.skipped,
                   "file_list_sha256": data.manifest()["file_list_sha256"]}
        steps = [
            ("class distribution", lambda: plot_distribution(
                data, f"Class distribution — {recipe.name} ({len(data.targets)} images)",
                out / "distribution.png")),
            ("sample grid", lambda: plot_samples(
                data, cfg.samples_per_class, cfg.seed,
                f"Random faces per label — {recipe.name} ({cfg.size}x{cfg.size} grey, as trained)",
                out / "samples.png")),
            ("intensity histograms", lambda: plot_intensity(
                data, f"Intensity per label — {recipe.name}", out / "intensity.png")),
            ("summary", lambda: (out / "summary.json").write_text(json.dumps(summary, indent=2))),
        ]
        for description, step in steps:
            progress.update(task, advance=1, description=description)
            step()
        (out / "report.md").write_text(_markdown(cfg, recipe.name, data, summary), encoding="utf-8")
        progress.update(task, advance=1, description="done")
    log.info("data report written to %s", out / "report.md")
    return summary
