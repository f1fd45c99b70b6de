"""The shared conformance check every Ranker configuration must pass.

``check_ranker(config, feature_map)`` builds the model on synthetic batches with a planted
signal (``liverank.models.synthetic``) and asserts, in order:

1. output shapes: one ``[B]`` finite logit per task, probabilities in (0, 1), scalar aux losses;
2. the loss is finite, and masked labels do not contribute (flipping them changes nothing; a task
   with no observed label contributes exactly 0 and sends no gradient to its head);
3. a batch without a field a module needs raises ``ConfigError`` naming the field and module;
4. it learns: ctr AUC on held-out synthetic data > ``min_auc`` after one pass over
   ``train_samples`` samples (a few seconds on one CPU thread);
5. ``save`` / ``Ranker.load`` gives identical predictions;
6. two models built and trained with the same seed give identical predictions.

A new model gets its conformance test by calling this function with its config (see
``test_zoo.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from liverank.errors import ConfigError
from liverank.features.spec import FeatureMap
from liverank.models.ranker import Ranker, RankerConfig
from liverank.models.synthetic import synthetic_batches, synthetic_feature_map
from liverank.train.optim import build_optimizers

Batch = dict[str, torch.Tensor]


@dataclass
class ConformanceReport:
    auc: float
    train_seconds: float
    n_parameters: int


def _build(config: RankerConfig, feature_map: FeatureMap, seed: int) -> Ranker:
    torch.manual_seed(seed)
    return Ranker(feature_map, config.model_copy(deep=True))


def check_outputs(model: Ranker, batch: Batch) -> None:
    out = model(batch)
    b = batch["user_id"].shape[0]
    assert list(out.logits) == model.tasks
    for task, logit in out.logits.items():
        assert logit.shape == (b,), f"{task}: logits {tuple(logit.shape)}, want ({b},)"
        assert torch.isfinite(logit).all(), f"{task}: non-finite logits"
    for name, value in out.aux_losses.items():
        assert value.dim() == 0 and torch.isfinite(value), f"aux loss {name} is not a finite scalar"
    proba = model.predict_proba(batch)
    for task, p in proba.items():
        assert ((p > 0) & (p < 1)).all(), f"{task}: probabilities outside (0, 1)"
    assert model.training, "predict_proba must restore training mode"


def check_loss_masking(model: Ranker, batch: Batch) -> None:
    task = model.tasks[-1]
    model.eval()  # no dropout, so that two forwards agree
    try:
        loss, parts = model.loss(batch, model(batch))
        assert torch.isfinite(loss), f"loss is {loss}"
        assert all(torch.isfinite(v) for v in parts.values())

        # Flipping the labels of masked samples changes nothing.
        half = dict(batch)
        mask = torch.zeros_like(batch[f"mask_{task}"])
        mask[::2] = 1.0
        half[f"mask_{task}"] = mask
        flipped = dict(half)
        flipped[task] = torch.where(mask > 0, batch[task], 1.0 - batch[task])
        a, _ = model.loss(half, model(half))
        b, _ = model.loss(flipped, model(flipped))
        torch.testing.assert_close(a, b, msg="masked labels changed the loss")

        # A task with no observed label contributes 0 and no gradient to its head.
        none = dict(batch)
        none[f"mask_{task}"] = torch.zeros_like(mask)
        model.zero_grad(set_to_none=True)
        loss, parts = model.loss(none, model(none))
        assert float(parts[f"task/{task}"]) == 0.0 and torch.isfinite(loss)
        loss.backward()
        for name, p in model.heads[task].named_parameters():
            assert p.grad is None or float(p.grad.abs().max()) == 0.0, (
                f"head {task}.{name} got grad"
            )
        model.zero_grad(set_to_none=True)
    finally:
        model.train()


def check_missing_fields(model: Ranker, batch: Batch) -> None:
    for key, fields in model.required_fields.items():
        assert fields, f"module '{key}' declares no required_fields"
        missing = fields[-1]
        partial = {k: v for k, v in batch.items() if k != missing}
        # the error names a module that reads the field (another module may read it first)
        readers = "|".join(k for k, f in model.required_fields.items() if missing in f)
        with pytest.raises(ConfigError, match=f"'({readers})'.*'{missing}'"):
            model(partial)


def train_pass(model: Ranker, batches: list[Batch], lr_sparse: float, lr_dense: float) -> None:
    opt = build_optimizers(model, lr_sparse=lr_sparse, lr_dense=lr_dense)
    for batch in batches:
        loss, _ = model.loss(batch, model(batch))
        opt.zero_grad()
        loss.backward()
        opt.step()


def ctr_auc(model: Ranker, batches: list[Batch]) -> float:
    p = torch.cat([model.predict_proba(b)["ctr"] for b in batches]).numpy()
    y = torch.cat([b["ctr"] for b in batches]).numpy()
    return float(roc_auc_score(y, p))


def _predictions(model: Ranker, batches: list[Batch]) -> dict[str, torch.Tensor]:
    preds = [model.predict_proba(b) for b in batches]
    return {t: torch.cat([p[t] for p in preds]) for t in model.tasks}


def check_save_load(model: Ranker, batches: list[Batch], path: Path) -> None:
    model.save(path)
    loaded = Ranker.load(path, feature_map=model.feature_map)
    before, after = _predictions(model, batches), _predictions(loaded, batches)
    for t in model.tasks:
        assert torch.equal(before[t], after[t]), f"{t}: predictions changed after save/load"


def check_ranker(
    config: RankerConfig,
    feature_map: FeatureMap | None = None,
    *,
    tmp_path: Path,
    seed: int = 0,
    train_samples: int = 49_152,
    batch_size: int = 128,
    min_auc: float = 0.75,
    lr_sparse: float = 0.05,
    lr_dense: float = 0.01,
) -> ConformanceReport:
    """Run every conformance check on ``config`` (see the module docstring)."""
    fm = feature_map or synthetic_feature_map(n_categories=6)
    train = synthetic_batches(fm, train_samples // batch_size, batch_size, seed=seed + 1)
    test = synthetic_batches(fm, 8, 256, seed=seed + 2)

    model = _build(config, fm, seed)
    check_outputs(model, train[0])
    check_loss_masking(model, train[0])
    check_missing_fields(model, train[0])

    start = time.perf_counter()
    train_pass(model, train, lr_sparse, lr_dense)
    seconds = time.perf_counter() - start
    auc = ctr_auc(model, test)
    assert auc > min_auc, f"{config.name}: held-out ctr AUC {auc:.3f} <= {min_auc}"

    check_save_load(model, test[:2], tmp_path / f"{config.name}.pt")

    # Determinism: same seed, same batches -> same predictions (a few steps suffice).
    twins = [_build(config, fm, seed) for _ in range(2)]
    for twin in twins:
        train_pass(twin, train[:5], lr_sparse, lr_dense)
    a, b = (_predictions(t, test[:1]) for t in twins)
    for t in model.tasks:
        assert np.array_equal(a[t].numpy(), b[t].numpy()), f"{t}: not deterministic for a seed"
    n_params = sum(p.numel() for p in model.parameters())
    return ConformanceReport(auc=auc, train_seconds=seconds, n_parameters=n_params)
