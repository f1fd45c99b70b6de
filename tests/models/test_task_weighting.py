"""Adaptive auxiliary-task weighting: it learns to down-weight a conflicting task and keep a
helping one on a toy problem, recomputes cosines only every k calls, keeps the caller's graph."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from liverank.errors import ConfigError
from liverank.models.layers.task_weighting import (
    AdaptiveTaskWeighting,
    FixedTaskWeights,
    gradient_cosines,
)


class _Toy(nn.Module):
    """A shared linear layer and a shared scalar readout; primary y = <a, x>."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Linear(8, 16)
        self.head = nn.Linear(16, 1)

    def losses(
        self, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        pred = self.head(torch.relu(self.shared(x))).squeeze(-1)  # [B]
        noise = 0.5 * torch.randn_like(y)
        primary = (pred - y).pow(2).mean()
        aux = {
            "helps": (2 * pred - 2 * y - noise).pow(2).mean(),  # same target, scaled, noisy
            "conflicts": (pred + y).pow(2).mean(),  # the negated target on the same output
        }
        return primary, aux


def _train(
    weighting: nn.Module, steps: int, seed: int = 0
) -> tuple[list[dict[str, float]], float, float]:
    torch.manual_seed(seed)
    model = _Toy()
    a = torch.randn(8)
    opt = torch.optim.SGD(model.parameters(), lr=0.02)
    history = []
    first = last = 0.0
    for step in range(steps):
        x = torch.randn(64, 8)
        primary, aux = model.losses(x, x @ a)
        weights, diag = weighting(primary, aux, list(model.shared.parameters()))
        loss = primary + sum(weights[t] * aux[t] for t in aux)
        opt.zero_grad()
        loss.backward()  # the caller's graph survived the cosine computation
        opt.step()
        history.append(diag)
        first = primary.item() if step == 0 else first
        last = primary.item()
    return history, first, last


def test_conflicting_task_is_down_weighted_and_helping_task_is_not() -> None:
    weighting = AdaptiveTaskWeighting(["helps", "conflicts"])  # default lr 1e-3
    history, first, last = _train(weighting, steps=300)
    start, end = history[0], history[-1]
    assert start["cos/conflicts"] < -0.9 and start["cos/helps"] > 0.9
    assert sum(d["cos/conflicts"] for d in history[-50:]) / 50 < -0.3  # it keeps conflicting
    assert end["w/conflicts"] < 0.2 < start["w/conflicts"]
    assert end["w/helps"] > 0.5
    assert end["w/helps"] >= start["w/helps"]
    assert last < 0.5 * first  # the primary task still learns
    # With the conflicting task at its starting weight, the primary task is fitted worse.
    _, _, fixed_last = _train(
        FixedTaskWeights({"helps": start["w/helps"], "conflicts": start["w/conflicts"]}), 300
    )
    assert last < fixed_last


def test_cosines_are_recomputed_only_every_k_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real_grad = torch.autograd.grad

    def counting_grad(*args, **kwargs):
        calls["n"] += 1
        return real_grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    weighting = AdaptiveTaskWeighting(["helps", "conflicts"], every=3)
    history, _, _ = _train(weighting, steps=9)
    assert weighting.cosine_updates == 3 and weighting.calls == 9
    assert calls["n"] == 3 * (1 + 2)  # primary + one per auxiliary task, on calls 0, 3, 6
    assert history[1]["cos/helps"] == history[0]["cos/helps"]  # reused in between


def test_eval_mode_and_no_grad_neither_recompute_nor_train() -> None:
    weighting = AdaptiveTaskWeighting(["helps", "conflicts"])
    model = _Toy()
    x = torch.randn(16, 8)
    primary, aux = model.losses(x, x.sum(1))
    before = [p.detach().clone() for p in weighting.parameters()]
    weighting.eval()
    weights, _ = weighting(primary, aux, list(model.shared.parameters()))
    with torch.no_grad():
        weighting.train()
        weighting(primary, aux, list(model.shared.parameters()))
    assert weighting.cosine_updates == 0
    for p, q in zip(before, weighting.parameters(), strict=True):
        assert torch.equal(p, q) and q.grad is None
    assert all(0 < w.item() < 1 and not w.requires_grad for w in weights.values())


def test_gradient_cosines_of_known_gradients() -> None:
    p = nn.Parameter(torch.tensor([1.0, 2.0]))
    unused = nn.Parameter(torch.zeros(3))
    primary = (p * torch.tensor([1.0, 0.0])).sum()  # grad (1, 0)
    aux = [(p * torch.tensor([3.0, 0.0])).sum(), -(p[0]), p[1] * 5, p.sum() * 0]
    cos = gradient_cosines(primary, aux, [p, unused])
    torch.testing.assert_close(cos, torch.tensor([1.0, -1.0, 0.0, 0.0]))
    primary.backward()  # graph retained
    assert p.grad is not None


def test_fixed_weights_and_bad_arguments() -> None:
    fixed = FixedTaskWeights({"stay": 0.3, "bag": 0.3, "item": 0.1})
    losses = {"stay": torch.tensor(2.0), "bag": torch.tensor(0.5), "item": torch.tensor(0.7)}
    weights, diag = fixed(torch.tensor(1.0), losses, [])
    assert {t: w.item() for t, w in weights.items()} == pytest.approx(
        {"stay": 0.3, "bag": 0.3, "item": 0.1}
    )
    assert diag == {"w/stay": 0.3, "w/bag": 0.3, "w/item": 0.1}
    with pytest.raises(ConfigError, match="task names"):
        fixed(torch.tensor(1.0), {"stay": torch.tensor(1.0)}, [])
    with pytest.raises(ConfigError, match=">= 0"):
        FixedTaskWeights({"stay": -0.1})
    with pytest.raises(ConfigError, match="every"):
        AdaptiveTaskWeighting(["a"], every=0)
    with pytest.raises(ConfigError, match="unique"):
        AdaptiveTaskWeighting(["a", "a"])
    with pytest.raises(ConfigError, match="unique"):
        AdaptiveTaskWeighting([])
    weighting = AdaptiveTaskWeighting(["helps", "conflicts"])
    with pytest.raises(ConfigError, match="task names"):
        weighting(torch.tensor(1.0), {"helps": torch.tensor(1.0), "other": torch.tensor(1.0)}, [])
