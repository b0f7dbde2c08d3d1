"""Stratified, grouped k-fold cross-validation of one architecture, beside the recipe's single split.

Folds are drawn over whole groups (a recording block of consecutive frames, or a single file where the
recipe has no grouping, or a folder = one person), stratified by (source, label) so every fold keeps the
data's mix; evaluation-only sources are left out (no fold may train on them). In fold i
the i-th part is the test set; a validation set for early stopping and temperature calibration is
taken from the rest the same grouped, stratified way. Every fold is a normal ``train.fit.run`` with a
split file (``<out>/fold_XX/split.json``), so any fold can be repeated alone with ``python -m train fit``.
Outputs: ``kfold.md`` / ``.csv`` / ``.json``, ``folds.png`` and ``confusion_pooled.png``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from train.data import SPLITS, Dataset, _frame_number
from train.fit import TrainConfig, load_run_data, run
from train.metrics import plot_confusion
from train.models import ARCHS
from train.recipe import Recipe, load_recipe
from train.runfolder import TrainingOptions, check_fit_options, console, markdown_table, save_config, write_csv

log = logging.getLogger(__name__)

METRICS = ("accuracy", "macro_precision", "macro_recall", "macro_f1", "micro_f1")
MANAGED = {"recipe", "arch", "data_root", "out_dir", "epochs", "batch_size", "lr", "patience", "seed",
           "max_train_images", "device", "threads", "split_file"}
HEADER = ("run", "n train", "n val", "n test", "accuracy", "macro P", "macro R", "macro F1", "micro F1")


@dataclass(frozen=True)
class KFoldConfig(TrainingOptions):
    recipe: str
    arch: str = "fast"
    folds: int = 10
    out_dir: str = "runs/kfold"
    single_split: bool = True  # also train on the recipe's own split, for the comparison
    # train only these parts ("3", "single") and stop, to spread one k-fold over several processes or
    # machines; a run without it into the same folder then resumes every finished part and writes the tables
    only: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch {self.arch!r} is not allowed; choose one of {', '.join(ARCHS)}")
        if not 2 <= self.folds <= 50:
            raise ValueError(f"folds must be in 2..50, got {self.folds}")
        parts = {str(i) for i in range(1, self.folds + 1)} | ({"single"} if self.single_split else set())
        unknown = [p for p in self.only if p not in parts]
        if unknown:
            raise ValueError(f"only: {', '.join(unknown)} is not a part of this run; choose from 1..{self.folds}"
                             + (" or single" if self.single_split else ""))
        check_fit_options(self.fit_options, MANAGED)

    def train_config(self, out_dir: Path, split_file: Path | None) -> TrainConfig:
        return self.fit_config(self.recipe, self.arch, out_dir,
                               split_file=None if split_file is None else str(split_file))


def foldable(data: Dataset) -> Dataset:
    """The images k-fold partitions: those of the recipe's training sources. An evaluation-only source
    (``role = "eval"``) is never trained on, in any fold; its cross-source score is ``export.evaluate``'s."""
    return data.subset(data.training_source_mask())


def recording_groups(data: Dataset, recipe: Recipe) -> np.ndarray:
    """Group id per image, as the recipe's split uses them: a file, a folder (one person), or a block of
    consecutive frames."""
    specs = {spec.name: spec for spec in recipe.sources}
    keys = []
    for path, s in zip(data.paths, data.source, strict=True):
        spec = specs[data.source_names[s]]
        block = spec.block_size
        keys.append(str(Path(path).parent) if spec.group == "folder" else path if block is None
                    else f"{Path(path).parent}/{_frame_number(Path(path)) // block}")
    return np.unique(keys, return_inverse=True)[1]


def fold_splits(data: Dataset, groups: np.ndarray, folds: int, val_fraction: float,
                seed: int) -> list[np.ndarray]:
    """Per fold, a split id per image (0 train, 1 val, 2 test); no group straddles two splits."""
    n_groups = len(np.unique(groups))
    if n_groups < folds:
        raise ValueError(f"folds={folds} needs at least {folds} groups; the recipe's data has {n_groups}")
    strata = data.source * len(data.labels) + data.targets
    x = np.zeros(len(groups))
    # a second grouped, stratified partition into about 1/val_fraction parts supplies the validation
    # images: fold i validates on part i (mod parts) minus its test images (two partitions in all,
    # instead of one per fold: StratifiedGroupKFold is slow on ~10k single-file groups)
    parts = max(2, round(1 / val_fraction))
    inner = StratifiedGroupKFold(n_splits=parts, shuffle=True, random_state=seed + 1)
    part = np.empty(len(groups), np.int64)
    for j, (_, idx) in enumerate(inner.split(x, strata, groups)):
        part[idx] = j
    outer = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    out = []
    for i, (_, test) in enumerate(outer.split(x, strata, groups)):
        split = np.where(part == i % parts, SPLITS.index("val"), SPLITS.index("train"))
        split[test] = SPLITS.index("test")
        out.append(split)
    return out


def _summary(values: list[dict]) -> dict[str, dict[str, float]]:
    table = {}
    for key in METRICS:
        v = np.array([m[key] for m in values])
        table[key] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
    return table


def plot_folds(per_fold: list[dict], summary: dict, single: dict | None, title: str, path: Path) -> None:
    """Accuracy and macro-F1 per fold (bars), their mean ± std (line, band), the single split (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(per_fold)
    x = np.arange(1, k + 1)
    fig, ax = plt.subplots(figsize=(max(7, 0.7 * k + 3), 5.2), dpi=110)
    for offset, key, colour in ((-0.2, "accuracy", "#4C72B0"), (0.2, "macro_f1", "#DD8452")):
        name = key.replace("_", "-")
        values = [m[key] for m in per_fold]
        ax.bar(x + offset, values, 0.4, color=colour, alpha=0.8, label=f"{name} per fold")
        mean, std = summary[key]["mean"], summary[key]["std"]
        ax.axhline(mean, color=colour, linewidth=1.5, label=f"{name} mean {mean:.3f} ± {std:.3f}")
        ax.axhspan(mean - std, mean + std, color=colour, alpha=0.12)
        if single is not None:
            ax.axhline(single[key], color=colour, linestyle="--", linewidth=1.5,
                       label=f"{name} single split {single[key]:.3f}")
    ax.set_xticks(x, [str(i) for i in x])
    ax.set_xlabel("fold (its test part)")
    ax.set_ylabel("score on the fold's test part")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, frameon=False)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _row(name: str, m: dict, sizes: tuple[int, int, int]) -> list:
    return [name, *sizes, *(m[k] for k in METRICS)]


def _train_part(cfg: KFoldConfig, data: Dataset, out: Path, split: np.ndarray, title: str) -> dict:
    """Train (or resume) one part on ``split`` (a split id per image, saved as its split file); test metrics."""
    out.mkdir(parents=True, exist_ok=True)
    split_file = out / "split.json"
    split_file.write_text(json.dumps({p: SPLITS[s] for p, s in zip(data.paths, split, strict=True)}))
    sizes = tuple(int(np.sum(split == s)) for s in range(3))
    console.rule(f"{title}: train {sizes[0]}, val {sizes[1]}, test {sizes[2]} images")
    metrics = run(cfg.train_config(out, split_file))["splits"]["test"]["all"]
    return {**metrics, "sizes": sizes}


def run_kfold(cfg: KFoldConfig) -> dict:
    """Cross-validate ``cfg.arch`` on the recipe; write per-fold metrics, mean ± std and plots."""
    out = Path(cfg.out_dir)
    save_config(out, "kfold", cfg)
    recipe = load_recipe(Path(cfg.recipe))
    data = foldable(load_run_data(cfg.train_config(out / "single_split", None)))
    groups = recording_groups(data, recipe)
    splits = fold_splits(data, groups, cfg.folds, recipe.val_fraction or 0.15, cfg.seed)
    parts = {str(i): (out / f"fold_{i:02d}", split, f"fold {i}/{cfg.folds}") for i, split in enumerate(splits, 1)}
    if cfg.single_split:  # the recipe's own split of the same (foldable) images
        parts["single"] = (out / "single_split", data.split, "single split: the recipe's own train/val/test")
    if cfg.only:
        for name in cfg.only:
            _train_part(cfg, data, *parts[name])
        return {}
    results = {name: _train_part(cfg, data, *part) for name, part in parts.items()}
    single = results.pop("single", None)
    per_fold = list(results.values())
    rows = [_row(f"fold {i}", m, m["sizes"]) for i, m in enumerate(per_fold, 1)]
    pooled = np.sum([np.asarray(m["confusion_matrix"]) for m in per_fold], axis=0)
    summary = _summary(per_fold)
    mean_row = ["**mean ± std**", "", "", "", *(f"{summary[k]['mean']:.3f} ± {summary[k]['std']:.3f}"
                                               for k in METRICS)]
    table_rows = [*rows, mean_row] + ([_row("single split", single, single["sizes"])] if single else [])
    report = {"folds": cfg.folds, "groups": int(groups.max() + 1), "per_fold": [
        {k: m[k] for k in (*METRICS, "n")} for m in per_fold], "summary": summary,
        "single_split": None if single is None else {k: single[k] for k in (*METRICS, "n")},
        "pooled_confusion": pooled.tolist()}
    (out / "kfold.json").write_text(json.dumps(report, indent=2))
    write_csv(out / "kfold.csv", HEADER, table_rows)
    plot_folds(per_fold, summary, single, f"{cfg.folds}-fold CV of {cfg.arch} on {recipe.name}",
               out / "folds.png")
    plot_confusion(pooled.tolist(), data.labels,
                   f"{cfg.arch}, all {cfg.folds} test folds pooled (n={pooled.sum()})",
                   out / "confusion_pooled.png")
    gap = ""
    if single is not None:
        diff, std = single["macro_f1"] - summary["macro_f1"]["mean"], summary["macro_f1"]["std"]
        gap = (f"The single split's macro-F1 ({single['macro_f1']:.3f}) differs from the cross-validated "
               f"mean by {diff:+.3f}") + (f" ({diff / std:+.1f} fold standard deviations)." if std else ".")
    (out / "kfold.md").write_text(f"""# {cfg.folds}-fold cross-validation: {cfg.arch} on {recipe.name}

{len(data.targets)} images in {report['groups']} groups (recording blocks or single files), folds
stratified by source and label, seed {cfg.seed}, up to {cfg.epochs} epochs per fold{
'' if cfg.max_train_images is None else f', at most {cfg.max_train_images} training images'}.
Every image is in exactly one test fold. {gap}

{markdown_table(HEADER, table_rows)}

![per-fold scores](folds.png)

![pooled confusion matrix](confusion_pooled.png)
""", encoding="utf-8")
    log.info("k-fold macro-F1 %.3f ± %.3f", summary["macro_f1"]["mean"], summary["macro_f1"]["std"])
    return report
