"""Calibration fitted on validation logits: temperature plus a class-balanced bias per label."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from train.engine import (
    AuxTask,
    Calibration,
    Objective,
    fit_calibration,
    fit_linear_probe,
    partial_label_cross_entropy,
    to_input,
    train_one_epoch,
)


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


# ---------------------------------------------------------------- the training objective


def test_objective_without_teacher_is_label_smoothed_cross_entropy() -> None:
    logits, targets = _logits([5, 5, 5], over_called=0)
    expected = F.cross_entropy(logits, targets, label_smoothing=0.1)
    assert torch.allclose(Objective(0.1)(logits, targets, torch.zeros(15, 1)), expected)


@pytest.mark.parametrize("soft", [False, True])
def test_partial_labels_with_every_label_allowed_is_label_smoothed_cross_entropy(soft: bool) -> None:
    logits, targets = _logits([4, 4, 4], over_called=1)
    if soft:
        targets = torch.softmax(torch.randn(12, 3, generator=torch.Generator().manual_seed(1)), 1)
    expected = F.cross_entropy(logits, targets, label_smoothing=0.1)
    every = torch.ones(12, 3, dtype=torch.bool)
    assert torch.allclose(partial_label_cross_entropy(logits, targets, every, 0.1), expected)
    assert torch.allclose(Objective(0.1)(logits, targets, torch.zeros(12, 1), every), expected)


def test_partial_labels_never_push_a_face_away_from_labels_its_source_lacks() -> None:
    """A source holding labels 0 and 1 only: its loss cannot move label 2's logit, whatever its value."""
    logits = torch.randn(8, 3, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    targets = torch.tensor([0, 1] * 4)
    mask = torch.tensor([[True, True, False]] * 8)
    loss = partial_label_cross_entropy(logits, targets, mask, 0.1)
    loss.backward()
    assert torch.all(logits.grad[:, 2] == 0) and torch.all(logits.grad[:, :2] != 0)
    shifted = logits.detach().clone()
    shifted[:, 2] += 50.0  # the network calling every one of these faces label 2 costs nothing here
    assert torch.allclose(partial_label_cross_entropy(shifted, targets, mask, 0.1), loss.detach())
    # the same faces under a full softmax are pushed away from label 2
    full = torch.ones_like(mask)
    assert float(partial_label_cross_entropy(shifted, targets, full, 0.1)) > float(loss.detach()) + 10


def test_distillation_pulls_the_student_towards_the_teacher() -> None:
    torch.manual_seed(0)
    teacher = torch.nn.Linear(6, 3)
    x, targets = torch.randn(64, 6), torch.randint(0, 3, (64,))
    objective = Objective(0.0, teacher, weight=1.0, temperature=2.0)
    with torch.no_grad():
        assert float(objective(teacher(x), targets, x)) == pytest.approx(0.0, abs=1e-6)  # agreeing: no loss
    student = torch.nn.Linear(6, 3)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.5)
    losses = []
    for _ in range(50):
        loss = objective(student(x), targets, x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[-1] < 0.1 * losses[0]
    assert all(p.grad is None for p in teacher.parameters())  # the teacher is never trained


def test_a_teacher_of_another_input_size_sees_the_batch_resized_to_its_own() -> None:
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8 * 8, 3))  # only takes 8x8 inputs
    x, targets = torch.rand(4, 1, 6, 6), torch.randint(0, 3, (4,))
    student_logits = torch.randn(4, 3)
    objective = Objective(0.0, teacher, weight=1.0, temperature=1.0, teacher_size=(8, 8))
    resized = F.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False)
    expected = Objective(0.0, teacher, weight=1.0, temperature=1.0)(student_logits, targets, resized)
    assert torch.allclose(objective(student_logits, targets, x), expected)
    with pytest.raises(RuntimeError):  # without the size the teacher cannot take the student's batch
        Objective(0.0, teacher, weight=1.0)(student_logits, targets, x)


class _Tiny(torch.nn.Module):
    """A network with the ``embed``/``head`` split the trainer uses, small enough to train in a test."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16 * 16, 16), torch.nn.ReLU())
        self.head = torch.nn.Linear(16, 3)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def test_a_transfer_set_teaches_the_main_head_to_follow_the_teacher_without_its_labels() -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    teacher, student = _Tiny(), _Tiny()
    with torch.no_grad():
        teacher.head.weight.mul_(20.0)  # a decided teacher: far from the untrained student
    images = torch.randint(0, 256, (32, 1, 16, 16), dtype=torch.uint8, generator=g)
    targets = torch.randint(0, 3, (32,), generator=g)
    transfer = torch.randint(0, 256, (256, 1, 16, 16), dtype=torch.uint8, generator=g)
    unlabelled = torch.full((256, 3), float("nan"))  # a transfer set's labels must never reach the loss
    objective = Objective(0.0, teacher, weight=0.0, temperature=1.0)  # the labelled batch: plain CE only
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)

    def gap() -> float:
        x = to_input(transfer, (16, 16))
        with torch.no_grad():
            return float(objective.distillation(student(x), x))

    before = gap()
    for epoch in range(60):  # without the transfer set the gap grows (measured: 0.60 -> 1.40)
        order = np.random.default_rng(epoch).integers(0, 32, size=64)
        aux = AuxTask(transfer, unlabelled, None, 5.0, np.random.default_rng(100 + epoch).integers(0, 256, size=64))
        loss = train_one_epoch(student, images, targets, order, optimizer, scheduler, objective, (16, 16), 32,
                               torch.device("cpu"), g, None, aux=aux)
        assert np.isfinite(loss)
    assert gap() < 0.5 * before
    assert all(p.grad is None for p in teacher.parameters())


def test_the_teacher_stays_in_eval_mode() -> None:
    teacher = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    objective = Objective(0.0, teacher).train()
    assert not teacher.training and objective.teacher is teacher


def test_weight_average_follows_early_training_then_smooths() -> None:
    from torch.optim.swa_utils import AveragedModel

    from train.fit import ema_with_warmup

    model = torch.nn.Linear(1, 1, bias=False)
    averaged = AveragedModel(model, avg_fn=ema_with_warmup(0.995), use_buffers=True)
    for step in range(1, 1001):
        with torch.no_grad():
            model.weight.fill_(float(step))
        averaged.update_parameters(model)
        if step == 20:  # a fixed 0.995 would still sit near the first weights (about 1.9)
            assert float(averaged.module.weight) > 10
    # later it smooths: at step 1000 the decay is 0.991, a lag of about 1 / (1 - 0.991) = 110 steps
    assert 850 < float(averaged.module.weight) < 950


def test_a_linear_probe_separates_separable_features_with_every_label_recalled() -> None:
    # label 2 is rare (30 of 630): an unweighted fit could give it up; the class-balanced one must not
    g = torch.Generator().manual_seed(0)
    targets = torch.cat([torch.full((300,), 0), torch.full((300,), 1), torch.full((30,), 2)])
    centres = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]])
    features = centres[targets] + 0.5 * torch.randn(len(targets), 3, generator=g)
    weight, bias = fit_linear_probe(features, targets, 3)
    predicted = (features @ weight.T + bias).argmax(1)
    for k in range(3):
        assert (predicted[targets == k] == k).float().mean() > 0.9
    again = fit_linear_probe(features, targets, 3)
    assert torch.equal(weight, again[0]) and torch.equal(bias, again[1])  # no seed: deterministic
