import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from liverank.errors import ConfigError, DataValidationError
from liverank.models.ranker import Ranker
from liverank.models.synthetic import synthetic_batches, synthetic_feature_map
from liverank.models.zoo import get_config
from liverank.train.losses import (
    PU_LOGIT_CAP,
    fast_slow_loss,
    masked_bce,
    moment_loss,
    stream_loss,
)


def _bce(z: float, y: float) -> float:
    p = 1 / (1 + math.exp(-z))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_masked_bce_hand_computed() -> None:
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0], [-3.0, 0.5]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    masks = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    out = masked_bce(logits, labels, masks)
    assert out[0].item() == pytest.approx((math.log(2) + _bce(1.0, 0.0)) / 2, rel=1e-6)
    assert out[1].item() == 0.0  # no labelled row
    assert torch.equal(moment_loss(logits, labels, masks), out)


def test_fast_slow_pu_term_is_minus_logit() -> None:
    # rows: fast (negative), fast (positive), slow (missed positive of task 0 only)
    logits = torch.tensor([[0.5, 1.0], [2.0, -1.0], [0.5, 3.0]])
    labels = torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    masks = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    slow = torch.tensor([0, 0, 1])
    out = fast_slow_loss(logits, labels, masks, slow, pu_cap=None)  # the paper's eq. 3
    expected0 = (_bce(0.5, 0.0) + _bce(2.0, 1.0) + (-0.5)) / 3
    expected1 = (_bce(1.0, 0.0) + _bce(-1.0, 1.0)) / 2
    assert out[0].item() == pytest.approx(expected0, rel=1e-6)
    assert out[1].item() == pytest.approx(expected1, rel=1e-6)


def test_pu_cancels_false_negative_gradient() -> None:
    """Fast negative + slow PU on the same logit = the gradient of a positive (eq. 3).

    Holds below the cap (here z = -0.7 < PU_LOGIT_CAP), where rare-task logits live."""
    z = torch.tensor([[-0.7], [-0.7]], requires_grad=True)
    out = fast_slow_loss(
        z, torch.tensor([[0.0], [1.0]]), torch.ones(2, 1), torch.tensor([0, 1])
    ).sum()
    out.backward()
    p = torch.sigmoid(torch.tensor(-0.7)).item()
    # d/dz: (p - 0) / 2 from the fast negative, -1 / 2 from the PU term -> (p - 1) / 2
    assert z.grad is not None
    assert z.grad.sum().item() == pytest.approx((p - 1) / 2, rel=1e-6)


def test_pu_term_is_capped_so_the_loss_is_bounded_below() -> None:
    """Above the cap a slow row no longer pushes its logit up (uncapped: gradient -1 forever)."""
    z = torch.tensor([[-2.0], [5.0], [50.0]], requires_grad=True)
    out = fast_slow_loss(z, torch.ones(3, 1), torch.ones(3, 1), torch.ones(3)).sum()
    out.backward()
    assert z.grad is not None
    assert z.grad[:, 0].tolist() == pytest.approx([-1 / 3, 0.0, 0.0])
    assert out.item() == pytest.approx((2.0 - PU_LOGIT_CAP - PU_LOGIT_CAP) / 3)
    uncapped = fast_slow_loss(z, torch.ones(3, 1), torch.ones(3, 1), torch.ones(3), pu_cap=None)
    assert uncapped.item() == pytest.approx((2.0 - 5.0 - 50.0) / 3)


def test_slow_negative_is_rejected() -> None:
    with pytest.raises(DataValidationError, match="slow rows may only carry"):
        fast_slow_loss(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1))


def test_shape_mismatch_is_named() -> None:
    with pytest.raises(DataValidationError, match=r"\[B, T\]"):
        masked_bce(torch.zeros(2, 2), torch.zeros(2, 3), torch.zeros(2, 2))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 20), st.integers(1, 4), st.integers(0, 10_000))
def test_fast_slow_without_slow_rows_is_masked_bce(b: int, t: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, t, generator=g) * 3
    labels = (torch.rand(b, t, generator=g) < 0.5).float()
    masks = (torch.rand(b, t, generator=g) < 0.7).float()
    out = fast_slow_loss(logits, labels, masks, torch.zeros(b))
    torch.testing.assert_close(out, masked_bce(logits, labels, masks))


def test_stream_bce_matches_ranker_loss() -> None:
    torch.manual_seed(0)
    fm = synthetic_feature_map()
    model = Ranker(fm, get_config("mlp"))
    batch = synthetic_batches(fm, 1, 64, mask_rate=0.4)[0]
    out = model(batch)
    ours, parts = stream_loss(model, batch, out, "bce")
    ref, ref_parts = model.loss(batch, out)
    torch.testing.assert_close(ours, ref)
    assert parts.keys() == ref_parts.keys()
    with pytest.raises(ConfigError, match="unknown loss kind"):
        stream_loss(model, batch, out, "pu")
