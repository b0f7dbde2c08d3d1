"""The architecture registry: shapes, and weight transfer from `fast` to its stride-2 siblings."""

from __future__ import annotations

import pytest
import torch

from train.models import ARCHS, build_model


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_every_arch_maps_its_input_size_to_logits(arch: str) -> None:
    size = ARCHS[arch].input_size
    model = build_model(arch, 4).eval()
    with torch.no_grad():
        logits = model(torch.randn(3, 1, size, size))
    assert logits.shape == (3, 4) and torch.isfinite(logits).all()


@pytest.mark.parametrize("arch", ["fast_s2", "fast_s2_48"])
def test_fast_weights_load_into_its_stride_2_siblings_unchanged(arch: str) -> None:
    """`fast_s2` (and `fast_s2_48`) differ only in stem stride (and input size): `fast` weights start them."""
    fast, s2 = build_model("fast", 7), build_model(arch, 7)
    s2.load_state_dict(fast.state_dict(), strict=True)
    for name, tensor in s2.state_dict().items():
        assert torch.equal(tensor, fast.state_dict()[name]), name
    stem = [m for m in s2.modules() if isinstance(m, torch.nn.Conv2d)][0]
    assert stem.stride == (2, 2)


def test_unknown_arch_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="fast_s2"):
        build_model("resnet", 4)
