"""Classification metrics and the confusion-matrix plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: tuple[str, ...]) -> dict:
    """Accuracy, macro/micro precision/recall/F1, per-class P/R/F1 and the confusion matrix.

    Macro averages run over the labels present in ``y_true``: a subset with no Engaged face (one data
    source, say) is not penalised for the Engaged column it cannot score. Micro averages run over all
    labels (for single-label data micro-F1 equals accuracy).
    """
    k = list(range(len(labels)))
    present = sorted(set(np.asarray(y_true).tolist())) or k
    out: dict = {"n": int(len(y_true)), "accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else 0.0}
    for avg in ("macro", "micro"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=present if avg == "macro" else k,
                                                     average=avg, zero_division=0)
        out[f"{avg}_precision"], out[f"{avg}_recall"], out[f"{avg}_f1"] = float(p), float(r), float(f)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=k, average=None, zero_division=0)
    out["per_class"] = {
        label: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, label in enumerate(labels)
    }
    out["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=k).tolist()
    # what the model says, whatever the truth: a source whose faces all come out as one label shows here
    counts = np.bincount(np.asarray(y_pred, np.int64), minlength=len(labels))
    out["predicted_share"] = {label: float(counts[i] / max(len(y_pred), 1)) for i, label in enumerate(labels)}
    return out


def plot_confusion(matrix: list[list[int]], labels: tuple[str, ...], title: str, path: Path) -> None:
    """Save a row-normalised confusion matrix with raw counts in each cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(matrix)
    norm = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.3 * len(labels) + 2, 1.1 * len(labels) + 1.5), dpi=120)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{counts[i, j]}\n{norm[i, j]:.0%}", ha="center", va="center", fontsize=9,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
