"""Train one model from a recipe: seeded, checkpointed, early-stopped on validation macro-F1.

Everything a run produces lands in one folder: ``config.json`` (the resolved config), ``manifest.json``
(counts per split/source/label and the file-list hash), ``last.pt`` (resumable), ``best.pt``,
``metrics.json`` and ``confusion_<split>.png``. Multi-GPU runs go through ``torchrun`` (DDP).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from edumood_live.crop import CropSpec
from train.data import SPLITS, Dataset, build_dataset
from train.engine import AuxTask, Objective, fit_calibration, fit_linear_probe, predict_logits, train_one_epoch
from train.framing import FramingEqualiser, equalised
from train.metrics import classification_metrics, plot_confusion
from train.models import ARCHS, Calibrated, build_model, count_parameters
from train.recipe import load_recipe

log = logging.getLogger(__name__)


BALANCES = ("class", "source", "within_source", "none")
HEAD_INITS = ("random", "probe")


@dataclass(frozen=True)
class TrainConfig:
    recipe: str
    arch: str = "fast"
    data_root: str = "../shared/datasets"
    out_dir: str = "runs/model"
    epochs: int = 40
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    patience: int = 8
    seed: int = 0
    init_from: str | None = None  # checkpoint whose weights (all but head.*) start this run
    # how the head starts: "random" (seeded), or "probe": a linear probe fitted on the frozen features of the
    # training images (no augmentation), so every seed of a fine-tuning starts from the same head (LP-FT)
    head_init: str = "random"
    exclude_heldout_of: str | None = None  # recipe whose val/test images must not be trained on
    source_weights: dict[str, float] = field(default_factory=dict)  # sampling weight per source
    # "class": every label sampled equally often; "source": that, and within a label every source equally
    # often (so no source can stand for a label); "within_source": every source's own labels equally often,
    # each source its share of the mass (equal, times --source-weight), so a source's look is spread evenly
    # over the labels it holds (with --partial-labels, a source holding only some labels then teaches
    # nothing about the others); "none": natural frequencies
    balance: str = "class"
    # a source holding only some labels is trained with a softmax over its own labels only (its images say
    # which of its labels a face shows, never that it is none of the others): engine.partial_label_cross_entropy
    partial_labels: bool = False
    max_train_images: int | None = None  # cap (tests, quick runs)
    split_file: str | None = None  # JSON {image path: train|val|test} replacing the recipe split (k-fold)
    weight_file: str | None = None  # JSON {image path: sampling weight multiplier} (bias mitigation)
    ema_decay: float = 0.995  # exponential moving average of the weights, evaluated and saved (0 = off)
    teacher: str | None = None  # best.pt of a trained run (same labels; any input size) to distil from
    distill_weight: float = 0.5  # share of the teacher's soft targets in the loss
    distill_temperature: float = 2.0
    # distil from the teacher's calibrated logits (``logits / T + bias`` of its best.pt, what its exported
    # model outputs) instead of its raw ones
    teacher_calibrated: bool = False
    # a second recipe trained beside this one through its own head on the shared features (its train split
    # only, never an image this recipe holds out), e.g. the 8 FER+ emotions while fine-tuning on 4 classes
    aux_recipe: str | None = None
    aux_weight: float = 0.5  # weight of the auxiliary loss (its head's cross-entropy, or the distillation)
    # the auxiliary recipe's images are a transfer set instead: their labels unused, they train the main head
    # towards the teacher's outputs (engine.AuxTask with head=None); needs ``teacher``
    aux_distill: bool = False
    backbone_lr_scale: float = 1.0  # learning rate of everything but the heads, as a share of lr
    device: str = "auto"
    threads: int = 2
    crop_margin: float = CropSpec().margin  # the crop every image is cut with; exported into the model
    # re-frame training crops (train/framing.py) so the share of padding has one distribution for every label,
    # and select / calibrate on validation faces re-framed the same way (one fixed draw)
    equalise_framing: bool = False

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch {self.arch!r} is not allowed; choose one of {', '.join(ARCHS)}")
        for name in ("epochs", "batch_size", "patience", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.balance not in BALANCES:
            raise ValueError(f"balance {self.balance!r} is not allowed; choose {', '.join(BALANCES)}")
        if not 0.0 <= self.distill_weight <= 1.0 or self.distill_temperature <= 0:
            raise ValueError(f"distill_weight must be in [0, 1] and distill_temperature > 0, got "
                             f"{self.distill_weight} and {self.distill_temperature}")
        if self.aux_weight < 0 or not 0 < self.backbone_lr_scale <= 1:
            raise ValueError(f"aux_weight must be >= 0 and backbone_lr_scale in (0, 1], got {self.aux_weight} "
                             f"and {self.backbone_lr_scale}")
        if self.head_init not in HEAD_INITS:
            raise ValueError(f"head_init {self.head_init!r} is not allowed; choose {', '.join(HEAD_INITS)}")
        if self.head_init == "probe" and not self.init_from:
            raise ValueError("head_init 'probe' needs init_from (a pretrained network to probe)")
        if self.teacher_calibrated and not self.teacher:
            raise ValueError("teacher_calibrated needs a teacher")
        if self.aux_distill and not (self.aux_recipe and self.teacher):
            raise ValueError("aux_distill needs an auxiliary recipe (the transfer images) and a teacher")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device {self.device!r} is not allowed; choose auto, cpu or cuda")


def _device(choice: str) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but torch sees no CUDA GPU")
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def _load_data(cfg: TrainConfig, size: tuple[int, int], channels: int, cache: Path) -> Dataset:
    recipe, crop = load_recipe(Path(cfg.recipe)), CropSpec(cfg.crop_margin)
    data = build_dataset(recipe, Path(cfg.data_root), size, channels, cache_dir=cache, crop=crop)
    if cfg.exclude_heldout_of:
        other = build_dataset(load_recipe(Path(cfg.exclude_heldout_of)), Path(cfg.data_root), size, channels,
                              cache_dir=cache, crop=crop)
        held_out = {h for h, s in zip(other.hashes, other.split, strict=True) if s != SPLITS.index("train")}
        keep = np.array([h not in held_out for h in data.hashes])
        reason = f"held out by {Path(cfg.exclude_heldout_of).name}"
        data.skipped = {**data.skipped, reason: int((~keep).sum())}
        data = data.subset(keep)
    return data


def _apply_split_file(data: Dataset, path: Path) -> Dataset:
    """Replace the recipe's split by the one in ``path``; images it does not list are dropped."""
    assigned = json.loads(path.read_text())
    keep = np.array([p in assigned for p in data.paths])
    data = data.subset(keep)
    data.split = np.array([SPLITS.index(assigned[p]) for p in data.paths], np.int64)
    return data


def load_run_data(cfg: TrainConfig) -> Dataset:
    """The data a run with ``cfg`` trains and tests on: recipe split (or split file), exclusions applied."""
    size = (ARCHS[cfg.arch].input_size,) * 2
    data = _load_data(cfg, size, 1, Path("runs/cache"))
    data = _apply_split_file(data, Path(cfg.split_file)) if cfg.split_file else data
    return equalised(data, ("val",)) if cfg.equalise_framing else data


def _probe_head(model: nn.Module, data: Dataset, train_idx: np.ndarray, size: tuple[int, int],
                device: torch.device) -> None:
    """Set ``model.head`` to a linear probe of its (pretrained) features on the training images."""
    features = predict_logits(model, torch.from_numpy(data.images[train_idx]), size, device, fn=model.embed)
    targets = torch.from_numpy(data.targets[train_idx]).long()
    weight, bias = fit_linear_probe(features, targets, len(data.labels))
    model.head.weight.data.copy_(weight)
    model.head.bias.data.copy_(bias)
    accuracy = float(((features @ weight.T + bias).argmax(1) == targets).float().mean())
    log.info("head initialised by a linear probe on %d training images (training accuracy %.3f)",
             len(targets), accuracy)


def _aux_train_data(cfg: TrainConfig, size: tuple[int, int]) -> Dataset:
    """The auxiliary recipe's training split, without any image the main recipe holds out."""
    data = _load_data(replace(cfg, recipe=cfg.aux_recipe, exclude_heldout_of=cfg.recipe), size, 1,
                      Path("runs/cache"))
    return data.subset(data.split_mask("train"))


def _image_weights(data: Dataset, path: str | None) -> np.ndarray:
    """Per-image sampling weight multipliers from a JSON file (images it does not list: 1)."""
    if path is None:
        return np.ones(len(data.paths))
    given = json.loads(Path(path).read_text())
    return np.array([float(given.get(p, 1.0)) for p in data.paths])


def _sampling_weights(data: Dataset, idx: np.ndarray, source_weights: dict[str, float],
                      balance: str, image_weights: np.ndarray | None = None) -> np.ndarray:
    """Sampling probabilities: per source weight times per image weight; with ``balance='class'`` equal
    mass per label, with ``balance='source'`` also equal mass per source within each label, with
    ``balance='within_source'`` each source its weight's share of the mass, split equally over its labels."""
    image_w = np.ones(len(idx)) if image_weights is None else image_weights[idx]
    w = np.array([source_weights.get(data.source_names[s], 1.0) for s in data.source[idx]]) * image_w
    if balance == "none":
        return w / w.sum()
    targets, sources = data.targets[idx], data.source[idx]
    cells: list[tuple[np.ndarray, float]] = []  # (images, the mass they share)
    if balance == "within_source":
        for s in np.unique(sources):
            share = source_weights.get(data.source_names[s], 1.0)
            labels = np.unique(targets[sources == s])
            cells += [((sources == s) & (targets == k), share / len(labels)) for k in labels]
    else:
        for k in np.unique(targets):
            in_class = targets == k
            parts = [in_class & (sources == s) for s in np.unique(sources[in_class])] if balance == "source" \
                else [in_class]
            cells += [(part, 1 / len(parts)) for part in parts]
    weights = np.zeros(len(idx))
    for cell, mass in cells:
        weights[cell] = w[cell] / w[cell].sum() * mass
    return weights / weights.sum()


def source_label_masks(data: Dataset, train_idx: np.ndarray) -> np.ndarray:
    """(N, K) bool: per image, the labels its source holds among the training images (all K for a source
    with every label; a source absent from training keeps all K)."""
    masks = np.ones((len(data.targets), len(data.labels)), bool)
    for s in np.unique(data.source[train_idx]):
        held = np.zeros(len(data.labels), bool)
        held[np.unique(data.targets[train_idx][data.source[train_idx] == s])] = True
        masks[data.source == s] = held
    return masks


def ema_with_warmup(decay: float) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """EMA update whose decay grows as ``(1 + n) / (10 + n)`` up to ``decay`` (n = updates so far).

    A fixed decay of 0.995 keeps 19 % of the starting weights after 330 updates: measured here, the
    averaged 8-class network still predicted one class after two FER+ epochs while the raw one scored
    0.58. The warm-up lets the average follow early training and still smooth it later.
    """

    def update(averaged: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        return averaged * d + current * (1.0 - d)

    return update


def _evaluate(model: nn.Module, data: Dataset, mask: np.ndarray, size: tuple[int, int], device: torch.device
              ) -> tuple[dict, torch.Tensor]:
    images = torch.from_numpy(data.images[mask])
    logits = predict_logits(model, images, size, device)
    y_true = data.targets[mask]
    metrics = classification_metrics(y_true, logits.argmax(1).numpy(), data.labels) if len(y_true) else {}
    return metrics, logits


def run(cfg: TrainConfig) -> dict:
    """Train, calibrate and test; returns the final metrics dict (also written to metrics.json)."""
    distributed = "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
    device = _device(cfg.device)
    if distributed:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        torch.cuda.set_device(device) if device.type == "cuda" else None
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    torch.manual_seed(cfg.seed + rank)
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    size = (ARCHS[cfg.arch].input_size,) * 2
    data = load_run_data(cfg)
    train_idx = np.flatnonzero(data.split_mask("train"))
    if cfg.max_train_images is not None:
        train_idx = np.random.default_rng(cfg.seed).permutation(train_idx)[: cfg.max_train_images]
    manifest = {**data.manifest(), "train_images_used": int(len(train_idx))}
    if rank == 0:
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2))

    model = build_model(cfg.arch, len(data.labels)).to(device)
    aux_data = _aux_train_data(cfg, size) if cfg.aux_recipe else None
    if aux_data is not None and distributed:
        raise ValueError("--aux-recipe trains in one process only (no torchrun)")
    aux_head = (nn.Linear(model.head.in_features, len(aux_data.labels)).to(device)
                if aux_data is not None and not cfg.aux_distill else None)
    if cfg.init_from:
        state = torch.load(cfg.init_from, map_location="cpu", weights_only=False)["model"]
        missing = model.load_state_dict({k: v for k, v in state.items() if not k.startswith("head.")},
                                        strict=False)
        log.info("initialised from %s (not loaded: %s)", cfg.init_from, missing.missing_keys)
        if aux_head is not None and state["head.weight"].shape == aux_head.weight.shape:
            aux_head.load_state_dict({"weight": state["head.weight"], "bias": state["head.bias"]})
            log.info("auxiliary head initialised from %s's head", cfg.init_from)
    last = out / "last.pt"
    if cfg.head_init == "probe" and not last.exists():
        _probe_head(model, data, train_idx, size, device)
    net: nn.Module = nn.parallel.DistributedDataParallel(model) if distributed else model
    # The averaged weights (BN statistics included) are what is validated and saved: the raw weights
    # of a small net on small data swing from epoch to epoch.
    ema = (torch.optim.swa_utils.AveragedModel(model, avg_fn=ema_with_warmup(cfg.ema_decay), use_buffers=True)
           if cfg.ema_decay > 0 else None)

    steps_per_epoch = max(1, len(train_idx) // world // cfg.batch_size)
    heads = list(model.head.parameters()) + ([] if aux_head is None else list(aux_head.parameters()))
    in_heads = {id(p) for p in heads}
    groups = [{"params": [p for p in model.parameters() if id(p) not in in_heads],
               "lr": cfg.lr * cfg.backbone_lr_scale}, {"params": heads, "lr": cfg.lr}]
    optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in groups],
                                                    total_steps=cfg.epochs * (steps_per_epoch + 1), pct_start=0.15)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" else None
    teacher, teacher_size = (_load_teacher(cfg.teacher, data.labels, device, cfg.teacher_calibrated)
                             if cfg.teacher else (None, None))
    loss_fn = Objective(cfg.label_smoothing, teacher, cfg.distill_weight, cfg.distill_temperature, teacher_size)
    start_epoch, best_f1, best_epoch, history = 0, -1.0, -1, []
    if last.exists():  # resume
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["model"])
        if ema is not None and "ema" in ckpt:
            ema.load_state_dict(ckpt["ema"])
        if aux_head is not None:
            aux_head.load_state_dict(ckpt["aux_head"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, best_f1, best_epoch, history = (ckpt["epoch"] + 1, ckpt["best_f1"], ckpt["best_epoch"],
                                                     ckpt["history"])
        log.info("resuming %s at epoch %d", last, start_epoch)

    images = torch.from_numpy(data.images)
    targets = torch.from_numpy(data.soft)  # (N, K) distributions: crowd votes, or one-hot labels
    weights = _sampling_weights(data, train_idx, cfg.source_weights, cfg.balance,
                                _image_weights(data, cfg.weight_file))
    label_mask = torch.from_numpy(source_label_masks(data, train_idx)) if cfg.partial_labels else None
    framing = (FramingEqualiser(data.images, data.targets, data.source, np.flatnonzero(data.split_mask("train")))
               if cfg.equalise_framing else None)
    if label_mask is not None:
        for s in np.unique(data.source[train_idx]):
            held = [data.labels[k] for k in np.flatnonzero(label_mask[np.flatnonzero(data.source == s)[0]])]
            log.info("partial labels: source %s trains over %s", data.source_names[s], ", ".join(held))
    val_mask = data.split_mask("val")
    meta = {"labels": list(data.labels), "arch": cfg.arch, "input_size": list(size), "channels": 1,
            "recipe": load_recipe(Path(cfg.recipe)).name, "params": count_parameters(model),
            "crop": json.loads(data.crop.to_json())}
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeRemainingColumn(), TextColumn("{task.fields[info]}"), disable=rank != 0)
    with progress:
        task = progress.add_task("epoch", total=steps_per_epoch * cfg.batch_size, info="")
        for epoch in range(start_epoch, cfg.epochs):
            if distributed:  # only rank 0 validates: every rank must take the same early-stopping decision
                best_epoch = _from_rank0(best_epoch, device)
            if epoch - best_epoch > cfg.patience and best_epoch >= 0:
                log.info("early stop: no val macro-F1 gain for %d epochs", cfg.patience)
                break
            rng = np.random.default_rng(cfg.seed * 1000 + epoch)
            order = rng.choice(train_idx, size=steps_per_epoch * cfg.batch_size * world, p=weights)
            order = order[rank::world]
            generator = torch.Generator().manual_seed(cfg.seed * 1000 + epoch + rank)
            aux = None if aux_data is None else AuxTask(
                torch.from_numpy(aux_data.images), torch.from_numpy(aux_data.soft), aux_head, cfg.aux_weight,
                rng.integers(0, len(aux_data.targets), size=len(order)))
            progress.reset(task, description=f"epoch {epoch + 1}/{cfg.epochs}")
            t0 = time.perf_counter()
            loss = train_one_epoch(net, images, targets, order, optimizer, scheduler, loss_fn, size,
                                   cfg.batch_size, device, generator, scaler,
                                   on_batch=lambda n: progress.advance(task, n),
                                   on_step=None if ema is None else lambda: ema.update_parameters(model),
                                   aux=aux, label_mask=label_mask, framing=framing)
            if rank != 0:
                continue
            evaluated = model if ema is None else ema.module
            val, _ = _evaluate(evaluated, data, val_mask, size, device)
            history.append({"epoch": epoch, "loss": loss, "val_macro_f1": val["macro_f1"],
                            "val_accuracy": val["accuracy"], "seconds": time.perf_counter() - t0})
            progress.update(task, info=f"loss {loss:.3f} val macro-F1 {val['macro_f1']:.3f}")
            log.info("epoch %d loss %.4f val acc %.4f macro-F1 %.4f (%.0f s)", epoch + 1, loss,
                     val["accuracy"], val["macro_f1"], history[-1]["seconds"])
            if val["macro_f1"] > best_f1:
                best_f1, best_epoch = val["macro_f1"], epoch
                torch.save({"model": evaluated.state_dict(), "meta": meta, "epoch": epoch}, out / "best.pt")
            torch.save({"model": model.state_dict(), "ema": None if ema is None else ema.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "aux_head": None if aux_head is None else aux_head.state_dict(),
                        "scheduler": scheduler.state_dict(), "epoch": epoch, "best_f1": best_f1,
                        "best_epoch": best_epoch, "history": history, "meta": meta}, last)
    results = finalize(out, data, device, history) if rank == 0 else {}
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return results


def _load_teacher(path: str, labels: tuple[str, ...], device: torch.device,
                  calibrated: bool = False) -> tuple[nn.Module, tuple[int, int]]:
    """The network of a trained run's ``best.pt`` (with its calibration if ``calibrated``) and its input size;
    its labels must be this run's."""
    if not Path(path).is_file():
        raise ValueError(f"teacher checkpoint {path} does not exist")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    meta = ckpt["meta"]
    if list(meta["labels"]) != list(labels):
        raise ValueError(f"teacher {path} has labels {meta['labels']}; this run needs {list(labels)}")
    teacher = build_model(meta["arch"], len(meta["labels"]), meta["channels"])
    teacher.load_state_dict(ckpt["model"])
    if calibrated:
        if "temperature" not in meta:
            raise ValueError(f"teacher {path} has no calibration (its run did not finish)")
        teacher = Calibrated(teacher, float(meta["temperature"]), meta.get("class_bias", []), len(labels))
    log.info("distilling from %s (%s at %s%s)", path, meta["arch"], meta["input_size"],
             ", calibrated" if calibrated else "")
    return teacher.to(device), (int(meta["input_size"][0]), int(meta["input_size"][1]))


def _from_rank0(value: int, device: torch.device) -> int:
    """``value`` as rank 0 has it, on every rank."""
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.broadcast(t, src=0)
    return int(t.item())


def finalize(out: Path, data: Dataset, device: torch.device, history: list[dict]) -> dict:
    """Load the best epoch, calibrate it on validation, test, write metrics and plots.

    ``metrics.json`` keeps the uncalibrated network's overall scores too, so the calibration's effect is
    visible; the per-source breakdown and the confusion plots are of the calibrated model (the one exported).
    """
    best = torch.load(out / "best.pt", map_location="cpu", weights_only=False)
    meta = best["meta"]
    model = build_model(meta["arch"], len(data.labels)).to(device)
    model.load_state_dict(best["model"])
    size = tuple(meta["input_size"])
    splits = [split for split in ("val", "test") if data.split_mask(split).any()]
    raw = {split: predict_logits(model, torch.from_numpy(data.images[data.split_mask(split)]), size, device)
           for split in splits}  # the network runs once per split; metrics are taken from these logits
    calibration = fit_calibration(raw["val"], torch.from_numpy(data.targets[data.split_mask("val")]))
    results: dict = {"best_epoch": best["epoch"], "temperature": calibration.temperature,
                     "class_bias": dict(zip(data.labels, calibration.bias, strict=True)), "history": history,
                     "splits": {}, "uncalibrated": {}}
    for split in splits:
        mask = data.split_mask(split)
        y_true, source = data.targets[mask], data.source[mask]
        results["uncalibrated"][split] = classification_metrics(y_true, raw[split].argmax(1).numpy(), data.labels)
        y_pred = calibration.apply(raw[split]).argmax(1).numpy()
        overall = classification_metrics(y_true, y_pred, data.labels)
        per_source = {name: classification_metrics(y_true[source == i], y_pred[source == i], data.labels)
                      for i, name in enumerate(data.source_names) if (source == i).any()}
        trained = data.training_source_mask()[mask]
        results["splits"][split] = {"all": overall, "by_source": per_source,
                                    # the held-out images of the sources it trains on: no cross-source rows
                                    "training_sources": classification_metrics(y_true[trained], y_pred[trained],
                                                                               data.labels)}
        plot_confusion(overall["confusion_matrix"], data.labels,
                       f"{meta['arch']} — {split} split (n={overall['n']})", out / f"confusion_{split}.png")
    best["meta"] = {**meta, "temperature": calibration.temperature, "class_bias": list(calibration.bias),
                    "metrics": results["splits"]}
    torch.save(best, out / "best.pt")
    (out / "metrics.json").write_text(json.dumps(results, indent=2))
    return results


def evaluate_run(out_dir: Path) -> dict:
    """Re-run calibration and testing of a finished run from its saved config (same data, same split)."""
    out = Path(out_dir)
    cfg = TrainConfig(**json.loads((out / "config.json").read_text()))
    history = json.loads((out / "metrics.json").read_text())["history"] if (out / "metrics.json").exists() else []
    return finalize(out, load_run_data(cfg), _device(cfg.device), history)
