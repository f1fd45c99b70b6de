"""eLiveRec: conformance, the intra / inter routing, the ablations, the task weighting and the
stay-time regression (``models/modules/eliverec.py``, ``backbones.IntraInterBackbone``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conformance import check_ranker

from liverank.errors import ConfigError
from liverank.models.ranker import Ranker, RankerConfig
from liverank.models.synthetic import synthetic_batches, synthetic_feature_map
from liverank.models.zoo import get_config

FM = synthetic_feature_map(n_categories=6, shopping=True)


def _model(**module_params) -> Ranker:
    cfg = get_config("eliverec")
    cfg.modules[0].params = dict(module_params)
    torch.manual_seed(0)
    return Ranker(FM, cfg)


@pytest.mark.slow
def test_eliverec_conforms(tmp_path: Path) -> None:
    check_ranker(get_config("eliverec"), FM, tmp_path=tmp_path, train_samples=16_384)


def test_vanilla_mtl_has_the_papers_fixed_weights() -> None:
    cfg = get_config("eliverec_vanilla")
    assert cfg.task_weighting is not None and cfg.task_weighting.type == "fixed"
    model = Ranker(FM, cfg)
    batch = synthetic_batches(FM, 1, 64)[0]
    _, parts = model.loss(batch, model(batch))
    assert {k: round(float(v), 3) for k, v in parts.items() if k.startswith("weight/")} == {
        "weight/stay_ms": 0.3,
        "weight/btr": 0.3,
        "weight/pctr": 0.1,
    }


def test_the_primary_task_reads_only_the_intra_channel_embedding() -> None:
    """The room's real-time context (e_d) enters the inter part only: changing the room's
    current product moves the goods-bag logit, never the channel-click logit."""
    model = _model()
    model.eval()
    batch = synthetic_batches(FM, 1, 128)[0]
    other = dict(batch)
    other["room_product"] = (batch["room_product"] % 30) + 1
    other["room_product_cat"] = (batch["room_product_cat"] % 6) + 1
    a, b = model(batch), model(other)
    torch.testing.assert_close(a.logits["ctr"], b.logits["ctr"])
    assert not torch.allclose(a.logits["btr"], b.logits["btr"])


@pytest.mark.parametrize(
    ("params", "aux"),
    [
        ({}, {"cor", "nce"}),
        ({"prototypes": "learnable"}, {"cor", "nce"}),
        ({"dcor": False}, {"nce"}),
        ({"regularizer": "none"}, {"cor"}),
        ({"regularizer": "cosine"}, {"cor", "nce"}),
        ({"regularizer": "euclidean"}, {"cor", "nce"}),
        ({"disentangle": False}, set()),
        ({"gate": False}, {"cor", "nce"}),
    ],
)
def test_every_ablation_of_table_iii_trains(params: dict, aux: set[str]) -> None:
    model = _model(**params)
    batch = synthetic_batches(FM, 1, 96, seed=3)[0]
    out = model(batch)
    assert {k.split(".", 1)[1] for k in out.aux_losses} == aux
    loss, parts = model.loss(batch, out)
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.feature_modules["eliverec"].encoders.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_users_without_any_history_get_finite_outputs() -> None:
    model = _model()
    batch = dict(synthetic_batches(FM, 1, 32, seed=4)[0])
    for c in [c for c in batch if c.startswith(("live_seq_", "product_seq_"))]:
        batch[c] = torch.zeros_like(batch[c])
    out = model(batch)
    loss, _ = model.loss(batch, out)
    loss.backward()
    assert all(torch.isfinite(v).all() for v in out.logits.values()) and torch.isfinite(loss)


def test_stay_time_is_regressed_on_log_seconds() -> None:
    model = _model()
    batch = synthetic_batches(FM, 1, 64, seed=5)[0]
    out = model(batch)
    _, parts = model.loss(batch, out)
    want = F.mse_loss(out.regression["stay_ms"], torch.log1p(batch["stay_ms"] / 1000.0))
    torch.testing.assert_close(parts["task/stay_ms"], want.detach())
    assert "stay_ms" not in model.predict_proba(batch)  # not a probability


def test_bad_configurations_are_refused_by_name() -> None:
    base = get_config("eliverec").model_dump()
    with pytest.raises(ConfigError, match="every auxiliary task"):
        raw = {**base, "task_weighting": {"type": "fixed", "weights": {"btr": 0.3}}}
        Ranker(FM, RankerConfig.parse(raw))
    with pytest.raises(ConfigError, match="shared_module 'nope'"):
        raw = {**base, "task_weighting": {"type": "adaptive", "shared_module": "nope"}}
        Ranker(FM, RankerConfig.parse(raw))
    with pytest.raises(ConfigError, match="primary 'gtr'"):
        raw = {**base, "task_weighting": {"type": "adaptive", "primary": "gtr"}}
        Ranker(FM, RankerConfig.parse(raw))
    plain = synthetic_feature_map(n_categories=6)
    with pytest.raises(ConfigError, match="--shopping"):
        cfg = get_config("eliverec")
        cfg.tasks = ["ctr"]
        cfg.task_weighting = None
        cfg.regression_targets = []
        Ranker(plain, cfg)


@pytest.mark.slow
def test_the_dual_sequence_baseline_conforms(tmp_path: Path) -> None:
    check_ranker(get_config("bst_dual"), FM, tmp_path=tmp_path, train_samples=16_384)


def test_the_baselines_read_the_same_sparse_fields_as_eliverec() -> None:
    from liverank.models.modules.eliverec import DYNAMIC_FIELDS, STATIC_FIELDS, TARGET_FIELDS

    want = {*STATIC_FIELDS, *TARGET_FIELDS, *DYNAMIC_FIELDS}
    for name, domains in (("din_live", ["live"]), ("bst_dual", ["live", "product"])):
        cfg = get_config(name)
        assert set(cfg.modules[0].params["fields"]) == want and cfg.tasks == ["ctr"]
        assert cfg.modules[1].params["domains"] == domains
    single = get_config("eliverec_single")
    assert single.tasks == ["ctr"] and single.task_weighting is None


def test_the_prediction_frame_carries_the_stay_time_in_log_seconds() -> None:
    import numpy as np

    from liverank.data.loader import SampleSet
    from liverank.train.trainer import predict_frame

    batch = synthetic_batches(FM, 1, 256, seed=6)[0]
    data = SampleSet({k: v.numpy() for k, v in batch.items()}, FM)
    model = _model()
    frame = predict_frame(model, data, batch_size=100)
    np.testing.assert_allclose(
        frame["log_stay_s"].to_numpy(), np.log1p(batch["stay_ms"].numpy() / 1000.0), rtol=1e-6
    )
    model.eval()
    want = model(batch).regression["stay_ms"].detach().numpy()
    np.testing.assert_allclose(frame["p_log_stay_s"].to_numpy(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("config", "module_name", "seed"), [("eliverec", "eliverec", 3), ("bst_dual", "bst", 4)]
)
def test_sequence_encoders_run_once_per_request_with_the_per_row_results(
    config: str, module_name: str, seed: int
) -> None:
    """Batches of whole requests: the Transformers of eLiveRec and of its dual-sequence baseline
    encode each request's sequences once (``dedup_rows``: the two compare at equal cost per
    request), and the outputs, the loss and every gradient equal the per-row reference."""
    from liverank.models.synthetic import as_request

    parts = [as_request(b) for b in synthetic_batches(FM, 4, 8, seed=seed)]  # 4 requests x 8 rows
    batch = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    results = {}
    for flag in (False, True):
        cfg = get_config(config)
        spec = next(m for m in cfg.modules if m.name == module_name)
        spec.params = {**spec.params, "dedup_rows": flag}
        torch.manual_seed(0)
        model = Ranker(FM, cfg)
        model.train()
        calls: list[int] = []
        hook = (
            model.feature_modules[module_name]
            .encoders[0]
            .register_forward_hook(lambda m, i, o, calls=calls: calls.append(len(o)))
        )
        out = model(batch)
        loss, _ = model.loss(batch, out)
        loss.backward()
        hook.remove()
        grads = {
            n: p.grad.to_dense().clone() for n, p in model.named_parameters() if p.grad is not None
        }
        results[flag] = (out, loss, grads, calls)
    (want, loss_w, g_w, calls_w), (got, loss_g, g_g, calls_g) = results[False], results[True]
    assert calls_w == [32] and calls_g == [4]  # rows the first domain's encoder saw
    for task in want.logits:
        torch.testing.assert_close(got.logits[task], want.logits[task], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss_g, loss_w, rtol=1e-5, atol=1e-6)
    assert g_g.keys() == g_w.keys()
    for name, g in g_w.items():
        torch.testing.assert_close(g_g[name], g, rtol=1e-4, atol=1e-6, msg=name)
