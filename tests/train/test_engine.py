"""Calibration fitted on validation logits: temperature plus a class-balanced bias per label."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from train.engine import Calibration, fit_calibration


def _logits(n_per_class: list[int], over_called: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy logits favouring the true label, plus a constant push towards label ``over_called``."""
    g = torch.Generator().manual_seed(seed)
    targets = torch.cat([torch.full((n,), k) for k, n in enumerate(n_per_class)])
    logits = torch.randn(len(targets), len(n_per_class), generator=g)
    logits += 2.0 * F.one_hot(targets, len(n_per_class)).float()
    logits[:, over_called] += 1.5
    return logits, targets


def test_bias_corrects_a_label_the_network_over_calls() -> None:
    logits, targets = _logits([300, 300, 300], over_called=2)
    cal = fit_calibration(logits, targets)
    assert cal.bias[2] < min(cal.bias[0], cal.bias[1]) - 1.0
    raw_recall_0 = (logits.argmax(1)[targets == 0] == 0).float().mean()
    cal_recall_0 = (cal.apply(logits).argmax(1)[targets == 0] == 0).float().mean()
    assert cal_recall_0 > raw_recall_0 + 0.1


def test_rare_label_is_not_suppressed_by_its_frequency() -> None:
    # Label 2 is rare in validation but the network is unbiased: class-balanced weighting must not learn
    # the validation frequencies (plain NLL would push label 2 down by about log(1000/50)).
    logits, targets = _logits([1000, 1000, 50], over_called=0)
    logits[:, 0] -= 1.5  # undo the push: an unbiased network
    cal = fit_calibration(logits, targets)
    assert max(cal.bias) - min(cal.bias) < 0.5
    assert abs(sum(cal.bias)) < 1e-4  # centred


def test_label_absent_from_validation_keeps_a_finite_bias_and_temperature_is_positive() -> None:
    logits, targets = _logits([200, 200, 0], over_called=1)
    cal = fit_calibration(logits, targets)
    assert all(abs(b) < 50 for b in cal.bias) and cal.temperature > 0


def test_apply_is_identity_by_default() -> None:
    x = torch.randn(4, 3)
    assert torch.equal(Calibration().apply(x), x)
    assert torch.allclose(Calibration(2.0, (1.0, 0.0, -1.0)).apply(x), x / 2 + torch.tensor([1.0, 0.0, -1.0]))
