"""A uniform weight soup: the mean of the weights of several fine-tunings of one checkpoint on one recipe.

Runs that start from the same pretrained network and differ only in their seed (sampling, augmentation,
the new head's initialisation) end in one basin of the loss; the mean of their weights is one network,
as fast as each of them, and usually better than the average ingredient (Wortsman et al. 2022, "Model
soups"). Averaging instead of picking the best seed also keeps validation from choosing a lucky seed.
The soup is a run folder like ``fit``'s: calibrated on validation and tested by ``fit.finalize``, so
``python -m export --run`` and ``python -m export.card`` take it as they take any run.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import torch

from train.fit import TrainConfig, _device, finalize, load_run_data

# config fields that may differ between ingredients: everything else (recipe, split, architecture, the
# checkpoint they start from, crop, schedule) must be the same, or the mean is not of one recipe's runs
MAY_DIFFER = ("seed", "out_dir", "threads", "device")


def _ingredients(runs: list[Path]) -> tuple[list[TrainConfig], list[dict]]:
    if len(runs) < 2:
        raise ValueError("a soup needs at least two runs")
    configs, checkpoints = [], []
    for run in runs:
        for name in ("config.json", "manifest.json", "best.pt"):
            if not (run / name).is_file():
                raise FileNotFoundError(f"{run} has no {name}: not a finished fit run")
        configs.append(TrainConfig(**json.loads((run / "config.json").read_text())))
        checkpoints.append(torch.load(run / "best.pt", map_location="cpu", weights_only=False))
    first = asdict(configs[0])
    for run, cfg in zip(runs[1:], configs[1:], strict=True):
        differ = sorted(k for k, v in asdict(cfg).items() if k not in MAY_DIFFER and v != first[k])
        if differ:
            raise ValueError(f"{run} is not a run of {runs[0]}'s recipe: {', '.join(differ)} differ")
    hashes = {json.loads((run / "manifest.json").read_text())["file_list_sha256"] for run in runs}
    if len(hashes) != 1:
        raise ValueError("the runs were trained on different files (manifest file_list_sha256 differs)")
    return configs, checkpoints


def average_weights(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The elementwise mean of floating-point tensors (batch-norm statistics included); counters such as
    ``num_batches_tracked`` are taken from the first state."""
    keys = list(states[0])
    if any(list(s) != keys for s in states[1:]):
        raise ValueError("the runs' networks have different layers")
    return {k: torch.stack([s[k].float() for s in states]).mean(0).to(states[0][k].dtype)
            if states[0][k].is_floating_point() else states[0][k].clone() for k in keys}


def make_soup(runs: list[Path], out: Path) -> dict:
    """Average ``runs``' best weights into ``out`` (a run folder), calibrate and test; returns the metrics."""
    runs = [Path(r) for r in runs]
    configs, checkpoints = _ingredients(runs)
    out.mkdir(parents=True, exist_ok=True)
    cfg = replace(configs[0], out_dir=str(out))
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    (out / "manifest.json").write_text((runs[0] / "manifest.json").read_text())
    ingredients = [{"run": str(run), "seed": c.seed, "best_epoch": ck["epoch"],
                    "val_macro_f1": ck["meta"].get("metrics", {}).get("val", {}).get("all", {}).get("macro_f1")}
                   for run, c, ck in zip(runs, configs, checkpoints, strict=True)]
    (out / "soup.json").write_text(json.dumps({"ingredients": ingredients}, indent=2))
    meta = {k: v for k, v in checkpoints[0]["meta"].items() if k not in ("temperature", "class_bias", "metrics")}
    meta["soup_of"] = [str(run) for run in runs]
    # "epoch" is the last of the ingredients' best epochs (fit.finalize reports it as the best epoch)
    torch.save({"model": average_weights([ck["model"] for ck in checkpoints]), "meta": meta,
                "epoch": max(ck["epoch"] for ck in checkpoints)}, out / "best.pt")
    return finalize(out, load_run_data(cfg), _device(cfg.device), history=[])
