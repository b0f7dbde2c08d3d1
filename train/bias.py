"""Bias analysis: metrics per subgroup (age group, gender, …), their disparity, and a mitigation run.

Subgroups come from a CSV (``path`` = image path relative to the data root as in the run manifest, one
column per attribute; see ``train/prelabel.py`` for model pre-labels to correct by hand). A model (a
given checkpoint, or one trained here) is tested on a split; accuracy and macro-F1 are reported per
group of every attribute and of their combination, with counts, and the disparity between groups:
``gap`` = max − min and ``ratio`` = min / max over groups with at least ``min_group_size`` images.
Mitigation (``mitigate``) trains the same configuration again with a sampler that gives every subgroup
equal mass inside each label, and reports before/after side by side.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from train.data import Dataset
from train.engine import Calibration, predict_logits
from train.fit import TrainConfig, load_run_data, run
from train.metrics import classification_metrics
from train.models import ARCHS, build_model
from train.runfolder import TrainingOptions, check_fit_options, console, markdown_table, save_config, write_csv

log = logging.getLogger(__name__)

UNKNOWN = "unknown"
AGE_GROUPS = (("young", 0, 30), ("mid", 30, 60), ("senior", 60, 200))  # [low, high) years
MANAGED = {"recipe", "arch", "data_root", "out_dir", "epochs", "batch_size", "lr", "patience", "seed",
           "max_train_images", "device", "threads", "weight_file"}
GROUP_METRICS = ("accuracy", "macro_f1", "macro_precision", "macro_recall")


def age_group(age: float) -> str:
    """young (< 30), mid (30-59) or senior (60+)."""
    return next(name for name, low, high in AGE_GROUPS if low <= age < high)


@dataclass(frozen=True)
class BiasConfig(TrainingOptions):
    recipe: str
    subgroups: str  # CSV: path,<attribute>,... (blank or missing values count as 'unknown')
    attributes: tuple[str, ...] = ("age_group", "gender")
    out_dir: str = "runs/bias"
    checkpoint: str | None = None  # evaluate this model (best.pt of a fit run) instead of training one
    model: str | None = None  # or this exported ONNX model (file or shipped name), run as the runtime runs it
    split: str = "test"
    mitigate: bool = False
    min_group_size: int = 10  # smaller groups are reported but left out of the disparity
    max_weight: float = 5.0  # mitigation weights are clipped to [1/max_weight, max_weight]
    arch: str = "fast"

    def __post_init__(self) -> None:
        check_fit_options(self.fit_options, MANAGED)
        if not self.attributes:
            raise ValueError("attributes must name at least one CSV column")
        if self.split not in ("val", "test"):
            raise ValueError(f"split {self.split!r} is not allowed; choose val or test")
        if self.arch not in ARCHS:
            raise ValueError(f"arch {self.arch!r} is not allowed; choose one of {', '.join(ARCHS)}")
        if self.max_weight < 1:
            raise ValueError(f"max_weight must be >= 1, got {self.max_weight}")
        if self.model is not None and (self.checkpoint is not None or self.mitigate):
            raise ValueError("model evaluates an exported file: it has no training config to add a checkpoint "
                             "or to retrain with mitigation (give --checkpoint of its run instead)")

    def train_config(self, out_dir: Path) -> TrainConfig:
        """The baseline's training config: from the checkpoint's run folder, or from this config."""
        if self.checkpoint is not None:
            saved = Path(self.checkpoint).parent / "config.json"
            if not saved.is_file():
                raise FileNotFoundError(f"mitigation retrains the checkpoint's config; {saved} is missing")
            return replace(TrainConfig(**json.loads(saved.read_text())), out_dir=str(out_dir))
        return self.fit_config(self.recipe, self.arch, out_dir)


def load_subgroups(path: Path, attributes: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """{image path: {attribute: value}} from the CSV; a missing column is an error naming the columns."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"subgroup file {path} does not exist")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [c for c in ("path", *attributes) if c not in columns]
        if missing:
            raise ValueError(f"{path.name}: missing column(s) {missing}; it has {columns}")
        return {row["path"]: {a: (row[a] or "").strip() or UNKNOWN for a in attributes} for row in reader}


def group_columns(paths: list[str], table: dict[str, dict[str, str]],
                  attributes: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Per attribute (and their combination 'a×b'), the group of each image; unannotated -> 'unknown'."""
    cols = {a: np.array([table.get(p, {}).get(a, UNKNOWN) for p in paths], dtype=object) for a in attributes}
    if len(attributes) > 1:
        joint = ["×".join(parts) if UNKNOWN not in parts else UNKNOWN
                 for parts in zip(*cols.values(), strict=True)]
        cols["×".join(attributes)] = np.array(joint, dtype=object)
    return cols


def disparity(per_group: dict[str, dict], min_count: int) -> dict:
    """max − min and min / max of accuracy and macro-F1 over known groups with enough images."""
    compared = {g: m for g, m in per_group.items() if g != UNKNOWN and m["n"] >= min_count}
    out: dict = {"groups_compared": sorted(compared)}
    for key in ("accuracy", "macro_f1"):
        values = [m[key] for m in compared.values()]
        if len(values) < 2:
            out[f"{key}_gap"], out[f"{key}_ratio"] = float("nan"), float("nan")
            continue
        out[f"{key}_gap"] = float(max(values) - min(values))
        out[f"{key}_ratio"] = float(min(values) / max(values)) if max(values) > 0 else float("nan")
    return out


def group_scores(y_true: np.ndarray, y_pred: np.ndarray, labels: tuple[str, ...]) -> dict:
    """n, accuracy and macro P/R/F1 of one group.

    ``classification_metrics`` averages over the labels present in ``y_true``, so a subgroup that lacks
    a label (few senior Angry faces) is not scored 0 on it and made to look worse than it is.
    """
    full = classification_metrics(y_true, y_pred, labels)
    return {k: full[k] for k in ("n", *GROUP_METRICS)}


def _order(group: str) -> tuple:
    """Age groups young -> senior first, then alphabetical, 'unknown' last (also inside combinations)."""
    ages = [name for name, _, _ in AGE_GROUPS]
    return tuple((part == UNKNOWN, ages.index(part) if part in ages else len(ages), part)
                 for part in group.split("×"))


def subgroup_metrics(y_true: np.ndarray, y_pred: np.ndarray, columns: dict[str, np.ndarray],
                     labels: tuple[str, ...], min_count: int) -> dict:
    """{attribute: {"groups": {group: scores}, "disparity": {...}}} plus the overall scores."""
    out: dict = {"overall": group_scores(y_true, y_pred, labels), "attributes": {}}
    for attribute, groups in columns.items():
        per_group = {group: group_scores(y_true[groups == group], y_pred[groups == group], labels)
                     for group in sorted(set(groups.tolist()), key=_order)}
        out["attributes"][attribute] = {"groups": per_group, "disparity": disparity(per_group, min_count)}
    return out


def mitigation_weights(targets: np.ndarray, groups: np.ndarray, max_weight: float) -> np.ndarray:
    """Sampling multipliers giving every known subgroup equal mass inside each label.

    Inside label k with annotated images n_k in G_k groups, an image of group g (n_kg images) gets
    n_k / (G_k · n_kg): annotated mass per label is unchanged, unannotated images keep weight 1.
    """
    weights = np.ones(len(targets))
    for k in np.unique(targets):
        known = (targets == k) & (groups != UNKNOWN)
        if not known.any():
            continue
        names, inverse, counts = np.unique(groups[known], return_inverse=True, return_counts=True)
        weights[known] = known.sum() / (len(names) * counts[inverse])
    return np.clip(weights, 1 / max_weight, max_weight)


def predict(checkpoint: Path, data: Dataset, mask: np.ndarray) -> np.ndarray:
    """Predicted label ids of a trained checkpoint on ``data[mask]`` (CPU or GPU as available), with the
    checkpoint's calibration (temperature and class bias) applied, as in the exported model."""
    best = torch.load(checkpoint, map_location="cpu", weights_only=False)
    meta = best["meta"]
    if tuple(meta["labels"]) != tuple(data.labels):
        raise ValueError(f"checkpoint labels {meta['labels']} differ from the recipe's {list(data.labels)}")
    model = build_model(meta["arch"], len(meta["labels"]))
    model.load_state_dict(best["model"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    logits = predict_logits(model.to(device), torch.from_numpy(data.images[mask]), tuple(meta["input_size"]),
                            device)
    calibration = Calibration(meta.get("temperature", 1.0), tuple(meta.get("class_bias", ())))
    return calibration.apply(logits).argmax(1).numpy()


def _table_rows(results: dict[str, dict]) -> list[list]:
    """Long table: model, attribute, group, n, metrics."""
    rows = []
    for model, res in results.items():
        for attribute, block in res["attributes"].items():
            for group, m in block["groups"].items():
                rows.append([model, attribute, group, m["n"], *(m[k] for k in GROUP_METRICS)])
    return rows


def plot_subgroups(results: dict[str, dict], min_count: int, title: str, path: Path) -> None:
    """One panel per attribute: accuracy and macro-F1 per group (n under each), per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = next(iter(results.values()))["attributes"]
    attributes = list(blocks)
    widths = [max(3.0, 0.85 * len(blocks[a]["groups"]) + 1.0) for a in attributes]
    fig, axes = plt.subplots(1, len(attributes), figsize=(sum(widths) + 1, 5.2), dpi=110, squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    models = list(results)
    width = 0.8 / (2 * len(models))
    for ax, attribute in zip(axes[0], attributes, strict=True):
        groups = list(results[models[0]]["attributes"][attribute]["groups"])
        x = np.arange(len(groups))
        for mi, model in enumerate(models):
            per = results[model]["attributes"][attribute]["groups"]
            for ki, (key, colour) in enumerate((("accuracy", "#4C72B0"), ("macro_f1", "#DD8452"))):
                offset = (2 * mi + ki - len(models) + 0.5) * width
                ax.bar(x + offset, [per[g][key] if g in per else 0 for g in groups], width, color=colour,
                       alpha=1.0 if mi == 0 else 0.55, hatch="" if mi == 0 else "//",
                       label=f"{key.replace('_', '-')} ({model})")
        n = results[models[0]]["attributes"][attribute]["groups"]
        ax.set_xticks(x, [g.replace("×", "\n") + f"\nn={n[g]['n']}" + ("*" if n[g]["n"] < min_count else "")
                          for g in groups], fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_xlabel(attribute)
        ax.set_ylabel("score")
        ax.set_title(f"by {attribute}")
        ax.grid(True, axis="y", alpha=0.3)
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=2 * len(models), fontsize=8, frameon=False)
    fig.suptitle(f"{title} (* fewer than {min_count} images: not in the disparity)")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path)
    plt.close(fig)


def _markdown(cfg: BiasConfig, recipe: str, results: dict[str, dict], annotated: int, total: int) -> str:
    header = ("model", "attribute", "group", "n", "accuracy", "macro F1", "macro P", "macro R")
    rows = _table_rows(results)
    disp_rows = [[model, attribute, ", ".join(d["groups_compared"]) or "—", d["accuracy_gap"],
                  d["accuracy_ratio"], d["macro_f1_gap"], d["macro_f1_ratio"]]
                 for model, res in results.items() for attribute, b in res["attributes"].items()
                 for d in [b["disparity"]]]
    overall = [[model, res["overall"]["n"], res["overall"]["accuracy"], res["overall"]["macro_f1"]]
               for model, res in results.items()]
    return f"""# Subgroup analysis

Recipe `{recipe}`, subgroups `{cfg.subgroups}`, {cfg.split} split: {annotated} of {total} images
have a subgroup annotation (the rest count as `unknown`). Disparity over groups with at least
{cfg.min_group_size} images, `unknown` excluded: gap = max − min, ratio = min / max. Macro
scores average over the labels present in each group.
{'Mitigation: the same training config, sampling every subgroup equally often inside each label.'
 if cfg.mitigate else ''}

## Overall

{markdown_table(("model", "n", "accuracy", "macro F1"), overall)}

## Disparity

{markdown_table(("model", "attribute", "groups compared", "accuracy gap", "accuracy ratio", "macro-F1 gap",
                 "macro-F1 ratio"), disp_rows)}

## Per group

{markdown_table(header, rows)}

![per-subgroup scores](subgroups.png)
"""


def _evaluate_trained(cfg: BiasConfig, table: dict[str, dict[str, str]],
                      out: Path) -> tuple[dict, list[str], str]:
    """Per-subgroup scores of the checkpoint (or of a baseline trained here) and, with ``mitigate``, of the
    same config retrained with subgroup-balanced sampling; the images scored and the recipe used."""
    base_cfg = cfg.train_config(out / "baseline")
    if Path(base_cfg.recipe).resolve() != Path(cfg.recipe).resolve():
        log.warning("the checkpoint was trained on %s; its data and split are used, not %s", base_cfg.recipe,
                    cfg.recipe)
    checkpoints = {"baseline": Path(cfg.checkpoint) if cfg.checkpoint else out / "baseline" / "best.pt"}
    if cfg.checkpoint is None:
        console.rule("baseline: training without subgroup reweighting")
        run(base_cfg)
    data = load_run_data(base_cfg)
    if cfg.mitigate:
        train = data.split_mask("train")
        train_paths = [p for p, t in zip(data.paths, train, strict=True) if t]
        joint = list(group_columns(train_paths, table, cfg.attributes).values())[-1]
        weights = mitigation_weights(data.targets[train], joint, cfg.max_weight)
        weight_file = out / "weights.json"
        weight_file.write_text(json.dumps(dict(zip(train_paths, weights.tolist(), strict=True))))
        console.rule("mitigation: training with subgroup-balanced sampling")
        run(replace(base_cfg, out_dir=str(out / "reweighted"), weight_file=str(weight_file)))
        checkpoints["reweighted"] = out / "reweighted" / "best.pt"
    # the held-out images of the sources it trains on: an evaluation-only source is another dataset (its
    # cross-source score is export.evaluate's), and would only pad the overall row and the 'unknown' group
    mask = data.split_mask(cfg.split) & data.training_source_mask()
    paths = [p for p, m in zip(data.paths, mask, strict=True) if m]
    columns = group_columns(paths, table, cfg.attributes)
    y_true = data.targets[mask]
    return {name: subgroup_metrics(y_true, predict(ckpt, data, mask), columns, data.labels, cfg.min_group_size)
            for name, ckpt in checkpoints.items()}, paths, base_cfg.recipe


def _evaluate_exported(cfg: BiasConfig, table: dict[str, dict[str, str]]) -> tuple[dict, list[str], str]:
    """Per-subgroup scores of an exported model, each face cut with the model's crop and classified by the
    runtime's classifier (``export.evaluate``), on the held-out images of the recipe's training sources."""
    from export.evaluate import predict_split

    data, predicted, classifier = predict_split(cfg.model or "", Path(cfg.recipe), Path(cfg.data_root), cfg.split)
    mask = data.training_source_mask()
    paths = [p for p, m in zip(data.paths, mask, strict=True) if m]
    columns = group_columns(paths, table, cfg.attributes)
    name = f"{classifier.meta.model_name} {classifier.meta.version}"
    return {name: subgroup_metrics(data.targets[mask], predicted[mask], columns, data.labels,
                                   cfg.min_group_size)}, paths, cfg.recipe


def run_bias(cfg: BiasConfig) -> dict:
    """Test a model per subgroup, optionally retrain with subgroup reweighting, and write the tables."""
    out = Path(cfg.out_dir)
    save_config(out, "bias", cfg)
    table = load_subgroups(Path(cfg.subgroups), cfg.attributes)
    if cfg.model is not None:
        results, paths, recipe = _evaluate_exported(cfg, table)
    else:
        results, paths, recipe = _evaluate_trained(cfg, table, out)
    annotated = sum(p in table for p in paths)
    summary = {"annotated": annotated, "images": len(paths), "results": results}
    (out / "bias.json").write_text(json.dumps(summary, indent=2))
    write_csv(out / "bias.csv", ("model", "attribute", "group", "n", *GROUP_METRICS), _table_rows(results))
    plot_subgroups(results, cfg.min_group_size, f"Per-subgroup scores, {cfg.split} split",
                   out / "subgroups.png")
    text = _markdown(cfg, recipe, results, annotated, len(paths))
    (out / "bias.md").write_text(text, encoding="utf-8")
    if annotated == 0:
        log.warning("no %s image is listed in %s: check the CSV's paths", cfg.split, cfg.subgroups)
    return results
