"""Train and test several architectures on one recipe and compare them side by side.

Every architecture is trained by ``train.fit.run`` with the same data, seed and schedule into
``<out>/<arch>/`` (a normal, resumable fit run folder), then timed on CPU. The comparison lands in
``comparison.md`` / ``.csv`` / ``.json``, ``confusion_matrices.png`` (test split, one panel per
architecture) and ``tradeoff.png`` (macro-F1 against CPU time per face).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.table import Table

from train.fit import TrainConfig, run
from train.models import ARCHS, build_model, count_parameters
from train.runfolder import TrainingOptions, check_fit_options, console, fmt, markdown_table, save_config, write_csv

log = logging.getLogger(__name__)

DEFAULT_ARCHS = ("original", "variant1", "variant2", "fast", "fast_small")
METRIC_KEYS = ("accuracy", "macro_precision", "macro_recall", "macro_f1", "micro_precision", "micro_recall",
               "micro_f1")
MANAGED = {"recipe", "arch", "data_root", "out_dir", "epochs", "batch_size", "lr", "patience", "seed",
           "init_from", "max_train_images", "device", "threads"}
HEADER = ("arch", "params", "ms/face", "accuracy", "macro P", "macro R", "macro F1", "micro P", "micro R",
          "micro F1", "n test", "best epoch")


@dataclass(frozen=True)
class CompareConfig(TrainingOptions):
    recipe: str
    archs: tuple[str, ...] = DEFAULT_ARCHS
    out_dir: str = "runs/compare"
    init_from: str | None = None  # only sensible when every arch shares the checkpoint's layout
    timing_threads: int = 1  # the runtime classifies with one onnxruntime thread
    timing_repeats: int = 50

    def __post_init__(self) -> None:
        if not self.archs:
            raise ValueError("archs must name at least one architecture")
        unknown = [a for a in self.archs if a not in ARCHS]
        if unknown:
            raise ValueError(f"archs {unknown} are not registered; choose from {', '.join(ARCHS)}")
        if len(set(self.archs)) != len(self.archs):
            raise ValueError(f"archs must be distinct, got {list(self.archs)}")
        if self.timing_repeats < 1 or self.timing_threads < 1:
            raise ValueError("timing_repeats and timing_threads must be >= 1")
        check_fit_options(self.fit_options, MANAGED)

    def train_config(self, arch: str) -> TrainConfig:
        return self.fit_config(self.recipe, arch, Path(self.out_dir) / arch, init_from=self.init_from)


def ms_per_face(checkpoint: Path, threads: int, repeats: int, batch: int = 1) -> float:
    """Median CPU milliseconds per face of a trained checkpoint (PyTorch eager, ``batch`` faces a call)."""
    best = torch.load(checkpoint, map_location="cpu", weights_only=False)
    meta = best["meta"]
    model = build_model(meta["arch"], len(meta["labels"]))
    model.load_state_dict(best["model"])
    model.eval()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, meta.get("channels", 1), *meta["input_size"], generator=generator)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for _ in range(3):
                model(x)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(previous)
    return float(np.median(times)) * 1000 / batch


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_grid(matrices: dict[str, list[list[int]]], labels: tuple[str, ...], title: str,
                        path: Path) -> None:
    """One row-normalised confusion matrix (counts and row %) per named model, side by side."""
    plt = _pyplot()
    n, k = len(matrices), len(labels)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * (1.1 * k + 1.8), rows * (1.0 * k + 1.6)), dpi=110,
                             squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, (name, matrix) in zip(axes.flat, matrices.items(), strict=False):
        counts = np.asarray(matrix)
        norm = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{counts[i, j]}\n{norm[i, j]:.0%}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
        ax.set_xticks(range(k), labels, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(k), labels, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{name} (n={int(counts.sum())})", fontsize=10)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_tradeoff(rows: list[dict], title: str, path: Path) -> None:
    """Macro-F1 (y) against CPU ms per face (x, log scale); marker area grows with parameter count."""
    plt = _pyplot()
    from matplotlib.ticker import NullLocator

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    params = np.array([r["params"] for r in rows], float)
    sizes = 40 + 400 * params / params.max()
    ax.scatter([r["ms_per_face"] for r in rows], [r["macro_f1"] for r in rows], s=sizes, alpha=0.6)
    for r in rows:
        ax.annotate(f"{r['arch']}\n{r['params'] / 1e3:.0f}k params", (r["ms_per_face"], r["macro_f1"]),
                    textcoords="offset points", xytext=(8, 4), fontsize=8)
    ax.set_xscale("log")
    ax.margins(x=0.3, y=0.15)
    times = [r["ms_per_face"] for r in rows]
    ticks = [t for t in (0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500)
             if min(times) / 2 <= t <= max(times) * 2]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("CPU time per face (ms, log scale)")
    ax.set_ylabel("test macro-F1")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def render(rows: list[dict]) -> Table:
    """The comparison's main columns as a rich table for the console (comparison.md has them all)."""
    table = Table(title=f"architecture comparison ({rows[0]['split']} split)")
    for column in ("arch", "params", "ms/face", "accuracy", "macro F1", "n"):
        table.add_column(column, justify="left" if column == "arch" else "right")
    for r in rows:
        table.add_row(r["arch"], f"{r['params']:,}", fmt(r["ms_per_face"], 2), fmt(r["accuracy"]),
                      fmt(r["macro_f1"]), str(r["n"]))
    return table


def _cells(r: dict) -> list:
    return [r["arch"], r["params"], r["ms_per_face"], *(r[k] for k in METRIC_KEYS), r["n"], r["best_epoch"]]


def run_compare(cfg: CompareConfig) -> list[dict]:
    """Train, test and time every architecture; write the comparison table and plots."""
    out = Path(cfg.out_dir)
    save_config(out, "compare", cfg)
    rows, matrices, labels = [], {}, ()
    for i, arch in enumerate(cfg.archs, 1):
        console.rule(f"[{i}/{len(cfg.archs)}] {arch}: {ARCHS[arch].description}")
        results = run(cfg.train_config(arch))
        split = "test" if "test" in results["splits"] else "val"
        metrics = results["splits"][split]["training_sources"]
        labels = tuple(metrics["per_class"])
        run_dir = out / arch
        row = {"arch": arch, "split": split, "n": metrics["n"], "best_epoch": results["best_epoch"] + 1,
               "params": count_parameters(build_model(arch, len(labels))),
               "ms_per_face": ms_per_face(run_dir / "best.pt", cfg.timing_threads, cfg.timing_repeats),
               "run_dir": str(run_dir), **{k: metrics[k] for k in METRIC_KEYS}}
        rows.append(row)
        matrices[arch] = metrics["confusion_matrix"]
        log.info("%s: accuracy %.3f macro-F1 %.3f, %.2f ms/face", arch, row["accuracy"], row["macro_f1"],
                 row["ms_per_face"])
    (out / "comparison.json").write_text(json.dumps(rows, indent=2))
    write_csv(out / "comparison.csv", [*HEADER, "split", "run_dir"], [[*_cells(r), r["split"], r["run_dir"]]
                                                                     for r in rows])
    plot_confusion_grid(matrices, labels, f"Confusion matrices, {rows[0]['split']} split", out /
                        "confusion_matrices.png")
    plot_tradeoff(rows, f"Accuracy vs speed ({cfg.epochs} epochs max)", out / "tradeoff.png")
    timing = f"CPU, PyTorch eager, {cfg.timing_threads} thread(s), batch 1, median of {cfg.timing_repeats}"
    cap = "" if cfg.max_train_images is None else f", at most {cfg.max_train_images} training images"
    (out / "comparison.md").write_text(f"""# Architecture comparison

Recipe `{cfg.recipe}`, up to {cfg.epochs} epochs (early stopping on validation macro-F1, patience
{cfg.patience}), seed {cfg.seed}{cap}. Metrics on the {rows[0]['split']} split of the sources each model
trains on, with the best epoch's weights; evaluation-only (cross-source) rows are in each run folder
(`python -m export.card --run <arch run folder>`). ms/face: {timing}. Micro P/R/F1 equal accuracy for
single-label classification.

{markdown_table(HEADER, [_cells(r) for r in rows])}

![confusion matrices](confusion_matrices.png)

![accuracy vs speed](tradeoff.png)

Each architecture's own run folder (`<arch>/`) holds its config, manifest, checkpoints and metrics.
""", encoding="utf-8")
    console.print(render(rows))
    return rows
