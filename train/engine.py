"""Batch augmentation, one training epoch, evaluation and calibration (temperature + class bias).

Data lives in memory as uint8 tensors; augmentation runs on whole batches (one affine grid per batch)
so a 2-core CPU spends its time in the network, not in Python image code.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from train.framing import FramingEqualiser

MEAN, STD = 0.5, 0.5  # global normalisation written into the ONNX metadata


def to_input(batch_u8: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (N, C, h, w) -> normalised float32 (N, C, H, W) as the runtime prepares it."""
    x = batch_u8.float().div_(255.0)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return (x - MEAN) / STD


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random flip, scale, rotation, shift, brightness/contrast and erasing, per sample."""
    n = x.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(n, generator=generator, device="cpu").mul_(hi - lo).add_(lo).to(x.device)

    angle = uniform(-15, 15) * math.pi / 180
    scale = uniform(0.88, 1.15)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0).to(x.device)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, uniform(-0.08, 0.08)], 1),
                         torch.stack([sin * flip, cos, uniform(-0.08, 0.08)], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    contrast = uniform(0.7, 1.3).view(n, 1, 1, 1)
    brightness = uniform(-0.3, 0.3).view(n, 1, 1, 1)
    x = x * contrast + brightness
    # random erasing of one rectangle in half the images (occlusion by hands, hair, glasses)
    h, w = x.shape[-2:]
    erase = torch.rand(n, generator=generator) < 0.5
    for i in torch.nonzero(erase).flatten().tolist():
        eh, ew = int(h * (0.15 + 0.25 * torch.rand(1, generator=generator))), int(
            w * (0.15 + 0.25 * torch.rand(1, generator=generator)))
        top = int(torch.randint(0, h - eh + 1, (1,), generator=generator))
        left = int(torch.randint(0, w - ew + 1, (1,), generator=generator))
        x[i, :, top:top + eh, left:left + ew] = float(torch.randn(1, generator=generator))
    return x


LOW_RES_SIDES = (12, 16, 24, 32)  # a classroom face is often this small before it is enlarged to the input


def degrade(x: torch.Tensor, generator: torch.Generator, share: float = 0.5) -> torch.Tensor:
    """Resolution loss on ``share`` of the batch: shrunk to 12-32 px (which also blurs) and enlarged back.

    Sources differ in resolution (48 px FER-2013, 96 px AffectNet, far-away webcam faces); without this a
    network can learn "small and soft means this dataset's labels" instead of the expression.
    """
    n, size = x.shape[0], tuple(x.shape[-2:])
    pick = torch.randint(0, len(LOW_RES_SIDES), (n,), generator=generator)
    chosen = torch.rand(n, generator=generator) < share
    for i, side in enumerate(LOW_RES_SIDES):
        rows = torch.nonzero(chosen & (pick == i)).flatten().to(x.device)
        if len(rows) and side < size[0]:
            small = F.interpolate(x[rows], size=(side, side), mode="bilinear", antialias=True, align_corners=False)
            x[rows] = F.interpolate(small, size=size, mode="bilinear", align_corners=False)
    return x


def jpeg(batch_u8: torch.Tensor, generator: torch.Generator, share: float = 0.3) -> torch.Tensor:
    """JPEG artefacts (quality 15-75) on ``share`` of a uint8 (N, C, H, W) batch, as video streams have."""
    chosen = torch.nonzero(torch.rand(len(batch_u8), generator=generator) < share).flatten().tolist()
    if not chosen:
        return batch_u8
    out = batch_u8.clone()
    for i in chosen:
        quality = int(torch.randint(15, 76, (1,), generator=generator))
        image = out[i].permute(1, 2, 0).numpy()
        ok, data = cv2.imencode(".jpg", np.ascontiguousarray(image), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
            out[i] = torch.from_numpy(decoded.reshape(image.shape)).permute(2, 0, 1)
    return out


def partial_label_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, label_mask: torch.Tensor,
                                label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy over each sample's own label set: a softmax over the labels ``label_mask`` allows.

    A source that holds only some labels (FER-2013: Angry and Neutral) can then say which of *its* labels
    a face shows, but never that the face is none of the others: its look (grey, 48 px) cannot become a
    label. With every label allowed this is ``F.cross_entropy(..., label_smoothing=...)``; smoothing mass
    goes to the allowed labels only. ``targets`` are class indices (N,) or distributions (N, K).
    """
    allowed = label_mask.to(torch.bool)
    if targets.ndim == 1:
        targets = F.one_hot(targets, logits.shape[1]).to(logits.dtype)
    uniform = allowed.to(logits.dtype) / allowed.sum(1, keepdim=True)
    smoothed = (1.0 - label_smoothing) * targets + label_smoothing * uniform
    log_p = F.log_softmax(logits.float().masked_fill(~allowed, float("-inf")), dim=1)
    return -(smoothed * log_p.masked_fill(~allowed, 0.0)).sum(1).mean()


class Objective(nn.Module):
    """The training loss: cross-entropy on the labels, optionally distilled from a trained teacher.

    With a teacher, ``(1 - w) * CE(student, labels) + w * T^2 * KL(teacher_T || student_T)`` where ``_T``
    are the softmaxes at temperature ``T`` (Hinton et al. 2015); the teacher sees the same augmented batch,
    resized (bilinear) to ``teacher_size`` when that is given and differs from the student's input size.
    """

    def __init__(self, label_smoothing: float, teacher: nn.Module | None = None, weight: float = 0.5,
                 temperature: float = 2.0, teacher_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.label_smoothing, self.weight, self.temperature = label_smoothing, weight, temperature
        self.teacher = teacher.eval().requires_grad_(False) if teacher is not None else None
        self.teacher_size = tuple(teacher_size) if teacher_size is not None else None

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor,
                label_mask: torch.Tensor | None = None) -> torch.Tensor:
        hard = (nn.functional.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)
                if label_mask is None else partial_label_cross_entropy(logits, targets, label_mask,
                                                                       self.label_smoothing))
        if self.teacher is None:
            return hard
        return (1.0 - self.weight) * hard + self.weight * self.distillation(logits, inputs)

    def distillation(self, logits: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """``T^2 * KL(teacher_T || student_T)`` of the teacher's view of ``inputs``."""
        if self.teacher is None:
            raise ValueError("distillation needs a teacher")
        with torch.no_grad():
            if self.teacher_size is not None and tuple(inputs.shape[-2:]) != self.teacher_size:
                inputs = F.interpolate(inputs, size=self.teacher_size, mode="bilinear", align_corners=False)
            taught = self.teacher(inputs).float()
        t = self.temperature
        soft = nn.functional.kl_div(nn.functional.log_softmax(logits.float() / t, dim=1),
                                    nn.functional.log_softmax(taught / t, dim=1), log_target=True,
                                    reduction="batchmean")
        return t * t * soft

    def train(self, mode: bool = True) -> Objective:  # the teacher stays in eval mode (BN statistics frozen)
        return self


@dataclass
class AuxTask:
    """A second labelled set trained beside the main one, through its own head on the shared features.

    Fine-tuning on a few thousand 4-class images forgets what pretraining on 8 emotions taught; training
    the 8-class head on its own data in the same steps keeps those features, while the 4-class head never
    sees the auxiliary images (so their look cannot become a 4-class label). ``order`` holds as many
    sample indices as the main epoch's order; each step pairs one main batch with one auxiliary batch.
    With ``head=None`` the auxiliary images are a transfer set: unlabelled (``targets`` unused), they go
    through the main head and their loss is the distillation from the objective's teacher, so a small
    student follows its teacher on many more faces than the labelled ones.
    """

    images: torch.Tensor  # uint8 (M, C, h, w)
    targets: torch.Tensor  # (M, K') target distributions
    head: nn.Module | None
    weight: float
    order: np.ndarray


def _augmented(images_u8: torch.Tensor, size: tuple[int, int], device: torch.device,
               generator: torch.Generator) -> torch.Tensor:
    return degrade(augment(to_input(jpeg(images_u8, generator).to(device, non_blocking=True), size),
                           generator), generator)


def train_one_epoch(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, order: np.ndarray,
                    optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                    loss_fn: Objective, size: tuple[int, int], batch_size: int, device: torch.device,
                    generator: torch.Generator, scaler: torch.amp.GradScaler | None,
                    on_batch: Callable[[int], None] | None = None,
                    on_step: Callable[[], None] | None = None, aux: AuxTask | None = None,
                    label_mask: torch.Tensor | None = None, framing: FramingEqualiser | None = None) -> float:
    """One pass over ``order`` (sample indices); returns the mean training loss.

    ``targets`` are class indices (N,) or target distributions (N, K) (crowd votes, one-hot labels). With
    ``aux``, main and auxiliary batch go through the network as one batch (batch norm sees both) and the
    loss adds ``aux.weight`` times the auxiliary head's cross-entropy. ``label_mask`` (N, K) bool: the
    labels each sample's loss is taken over (``partial_label_cross_entropy``); None: all of them.
    ``framing``: re-frame each main batch first, so that no label can be read off how much is padding.
    """
    model.train()
    total, seen = 0.0, 0
    autocast = torch.autocast("cuda", dtype=torch.float16) if scaler is not None else nullcontext()
    framing_rng = (None if framing is None  # drawn only when used: other runs keep their random stream
                   else np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=generator))))
    for start in range(0, len(order), batch_size):
        idx = torch.from_numpy(order[start:start + batch_size])
        if len(idx) < 2:
            continue  # batch norm needs two samples
        batch = images[idx] if framing_rng is None else framing.apply(images[idx], idx.numpy(), framing_rng)
        x = _augmented(batch, size, device, generator)
        y = targets[idx].to(device, non_blocking=True)
        mask = None if label_mask is None else label_mask[idx].to(device, non_blocking=True)
        with autocast:
            if aux is None:
                loss = loss_fn(model(x), y, x, mask)
            else:
                aux_idx = torch.from_numpy(aux.order[start:start + batch_size])
                aux_x = _augmented(aux.images[aux_idx], size, device, generator)
                features = model.embed(torch.cat([x, aux_x]))
                aux_loss = (loss_fn.distillation(model.head(features[len(idx):]), aux_x) if aux.head is None
                            else F.cross_entropy(aux.head(features[len(idx):]),
                                                 aux.targets[aux_idx].to(device, non_blocking=True)))
                loss = loss_fn(model.head(features[:len(idx)]), y, x, mask) + aux.weight * aux_loss
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        scheduler.step()
        if on_step is not None:
            on_step()
        total += float(loss.detach()) * len(idx)
        seen += len(idx)
        if on_batch is not None:
            on_batch(len(idx))
    return total / max(seen, 1)


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, size: tuple[int, int], device: torch.device,
                   batch_size: int = 512, tta_flip: bool = False,
                   fn: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Logits for every image (no augmentation; optional horizontal-flip averaging); ``fn`` replaces
    ``model``'s forward (e.g. ``model.embed`` for its features) with the model still in eval mode."""
    model.eval()
    forward = fn or model
    out = []
    for start in range(0, len(images), batch_size):
        x = to_input(images[start:start + batch_size].to(device), size)
        logits = forward(x)
        if tta_flip:
            logits = (logits + forward(torch.flip(x, dims=[3]))) / 2
        out.append(logits.float().cpu())
    return torch.cat(out) if out else torch.zeros((0, 0))


def _balanced_weight(targets: torch.Tensor, k: int) -> torch.Tensor:
    """Per-label loss weights 1 / count (normalised), 0 for labels absent from ``targets``."""
    counts = torch.bincount(targets, minlength=k).float()
    return torch.where(counts > 0, counts.sum() / counts.clamp(min=1) / int((counts > 0).sum()), 0.0)


def fit_linear_probe(features: torch.Tensor, targets: torch.Tensor, k: int,
                     l2: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """A linear head (weight (k, D), bias (k,)) fitted on frozen features: class-balanced multinomial
    logistic regression, L2 on the weights, full-batch L-BFGS from zero (deterministic)."""
    weight = torch.zeros(k, features.shape[1], requires_grad=True)
    bias = torch.zeros(k, requires_grad=True)
    class_weight = _balanced_weight(targets, k)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(features @ weight.T + bias, targets, weight=class_weight) + l2 * weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach(), bias.detach()


@dataclass(frozen=True)
class Calibration:
    """``logits / temperature + bias``: what the exported model applies after the network."""

    temperature: float = 1.0
    bias: tuple[float, ...] = ()

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        out = logits / self.temperature
        return out + torch.tensor(self.bias, dtype=out.dtype) if self.bias else out


def fit_calibration(logits: torch.Tensor, targets: torch.Tensor, l2: float = 1e-3) -> Calibration:
    """Bias-corrected temperature scaling (Alexandari et al. 2020) fitted on class-balanced validation NLL.

    One temperature and one bias per label minimise the validation cross-entropy with every label weighted
    by 1 / its count, so each label weighs the same whatever its frequency. The biases therefore correct
    the network's systematic over- or under-calling of a label without adopting the validation set's
    class frequencies: those reflect the mix of training sources, and a classroom's are unknown.
    Labels absent from validation get weight 0; a small L2 penalty keeps their bias finite.
    """
    k = logits.shape[1]
    weight = _balanced_weight(targets, k)
    log_t = torch.zeros(1, requires_grad=True)
    bias = torch.zeros(k, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t, bias], lr=0.1, max_iter=200)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp() + bias, targets, weight=weight) + l2 * bias.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    centred = bias.detach() - bias.detach().mean()  # softmax ignores a common shift
    return Calibration(float(log_t.detach().exp().clamp(0.05, 20.0)), tuple(round(float(b), 6) for b in centred))
