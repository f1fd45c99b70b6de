"""Ranker: config validation, loss against a reference, aux losses, persistence errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from liverank.errors import ConfigError, DataValidationError
from liverank.features.spec import FeatureMap
from liverank.models.base import Batch, FeatureModule, ModuleOutput
from liverank.models.layers.embedding import EmbeddingCollection
from liverank.models.ranker import Ranker, RankerConfig
from liverank.models.registry import list_modules, register_module
from liverank.models.synthetic import synthetic_batches, synthetic_feature_map
from liverank.models.zoo import get_config


@register_module
class _UserBias(FeatureModule):
    """Test module: the user embedding plus an auxiliary L2 loss and a diagnostic."""

    name = "test_user_bias"

    def __init__(self, feature_map: FeatureMap, emb: EmbeddingCollection, weight: float = 1.0):
        super().__init__()
        self.weight = weight
        self.required_fields = ("user_id",)
        self.out_dim = emb.dim("user")

    def forward(self, batch: Batch, emb: EmbeddingCollection) -> ModuleOutput:
        vec = emb.lookup("user", batch["user_id"])
        return ModuleOutput(vec, {"l2": self.weight * vec.pow(2).mean()}, {"norm": vec.norm()})


@pytest.fixture(scope="module")
def fm() -> FeatureMap:
    return synthetic_feature_map(n_users=200, n_authors=40, seq_len=8)


@pytest.fixture(scope="module")
def batch(fm: FeatureMap) -> dict[str, torch.Tensor]:
    return synthetic_batches(fm, 1, 64, seed=0, mask_rate=0.3)[0]


def _bce(logit: np.ndarray, y: np.ndarray) -> np.ndarray:
    p = 1 / (1 + np.exp(-logit))
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def test_loss_matches_a_numpy_reference(fm: FeatureMap, batch) -> None:  # type: ignore[no-untyped-def]
    cfg = get_config("mlp")
    cfg.task_weights = {"ctr": 2.0, "gtr": 0.5}
    model = Ranker(fm, cfg)
    out = model(batch)
    total, parts = model.loss(batch, out)
    expected = 0.0
    for t in model.tasks:
        logit = out.logits[t].detach().double().numpy()
        m = batch[f"mask_{t}"].numpy()
        task = (_bce(logit, batch[t].numpy()) * m).sum() / max(m.sum(), 1.0)
        assert float(parts[f"task/{t}"]) == pytest.approx(task, rel=1e-5)
        expected += cfg.task_weights.get(t, 1.0) * task
    assert float(total.detach()) == pytest.approx(expected, rel=1e-5)
    assert float(parts["total"]) == pytest.approx(expected, rel=1e-5)


def test_batch_without_masks_counts_every_label(fm: FeatureMap, batch) -> None:  # type: ignore[no-untyped-def]
    model = Ranker(fm, get_config("mlp"))
    unmasked = {k: v for k, v in batch.items() if not k.startswith("mask_")}
    ones = {**unmasked, **{f"mask_{t}": torch.ones(64) for t in model.tasks}}
    model.eval()
    a, _ = model.loss(unmasked, model(unmasked))
    b, _ = model.loss(ones, model(ones))
    torch.testing.assert_close(a, b)


def test_missing_label_is_a_data_error(fm: FeatureMap, batch) -> None:  # type: ignore[no-untyped-def]
    model = Ranker(fm, get_config("mlp"))
    no_gtr = {k: v for k, v in batch.items() if k != "gtr"}
    with pytest.raises(DataValidationError, match="task 'gtr'"):
        model.loss(no_gtr, model(no_gtr))


def test_aux_losses_and_diagnostics_are_collected(fm: FeatureMap, batch) -> None:  # type: ignore[no-untyped-def]
    raw = {
        "modules": [
            {"name": "sparse_features"},
            {"name": "test_user_bias", "params": {"weight": 2.0}, "key": "bias"},
        ],
        "tasks": ["ctr"],
        "aux_loss_weights": {"bias.l2": 3.0},
    }
    model = Ranker(fm, RankerConfig.parse(raw))
    out = model(batch)
    assert set(out.aux_losses) == {"bias.l2"} and "bias/norm" in out.diagnostics
    total, parts = model.loss(batch, out)
    torch.testing.assert_close(parts["aux/bias.l2"], 3.0 * out.aux_losses["bias.l2"].detach())
    torch.testing.assert_close(total.detach(), parts["task/ctr"] + parts["aux/bias.l2"])


def test_config_errors_name_the_problem(fm: FeatureMap) -> None:
    with pytest.raises(ConfigError, match="unknown feature module 'dien'.*din.*seq_pool"):
        Ranker(fm, RankerConfig.parse({"modules": [{"name": "dien"}]}))
    with pytest.raises(ConfigError, match="'din' has no parameter.*'head'.*accepts: domains"):
        Ranker(fm, RankerConfig.parse({"modules": [{"name": "din", "params": {"head": 2}}]}))
    with pytest.raises(ConfigError, match="field 'backbone"):
        RankerConfig.parse({"modules": [{"name": "din"}], "backbone": {"type": "dcn"}})
    with pytest.raises(ConfigError, match="unique"):
        RankerConfig.parse({"modules": [{"name": "din"}, {"name": "din"}]})
    with pytest.raises(ConfigError, match="task_weights names tasks"):
        Ranker(fm, RankerConfig.parse({"modules": [{"name": "din"}], "task_weights": {"cvr": 1}}))
    with pytest.raises(ConfigError, match=r"config tasks \['cvr'\] are not tasks"):
        Ranker(fm, RankerConfig.parse({"modules": [{"name": "din"}], "tasks": ["ctr", "cvr"]}))
    with pytest.raises(ConfigError, match="field 'embeding_dim'"):
        RankerConfig.parse({"modules": [{"name": "din"}], "embeding_dim": 8})


def test_registry_lists_the_baseline_modules() -> None:
    assert {"sparse_features", "seq_pool", "din"} <= set(list_modules())


def test_config_round_trips_through_plain_data() -> None:
    for name in ("mlp", "din", "mmoe", "ple"):
        cfg = get_config(name)
        assert RankerConfig.model_validate(cfg.model_dump(mode="json")) == cfg


def test_parameter_groups_partition_the_parameters(fm: FeatureMap) -> None:
    model = Ranker(fm, get_config("ple"))
    sparse, dense = model.parameter_groups()
    ids = [id(p) for p in sparse + dense]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert all(p.dim() == 2 for p in sparse) and len(sparse) == 1  # one fused table of dim 16


def test_config_hashing_and_per_table_dims(fm: FeatureMap, batch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    raw = {
        "modules": [
            {"name": "sparse_features"},
            {"name": "seq_pool", "params": {"combine": "concat"}},
        ],
        "hash_buckets": {"user": 16},
        "embedding_dims": {"user": 4, "live_action": 8},
    }
    model = Ranker(fm, RankerConfig.parse(raw))
    assert model.embeddings.num_rows("user") == 16
    big_ids = dict(batch)
    big_ids["user_id"] = batch["user_id"] * 1_000_003
    out = model(big_ids)
    assert torch.isfinite(out.logits["ctr"]).all()
    assert model.embeddings.oov_counts() == {}
    assert model.feature_modules["sparse_features"].out_dim == 4 + 11 * 16
    # The user table is hashed, so a feature map with more users is still compatible.
    path = tmp_path / "hashed.pt"
    model.save(path)
    more_users = fm.model_copy(update={"tables": {**fm.tables, "user": 10_000}})
    loaded = Ranker.load(path, feature_map=more_users)
    model.eval()
    torch.testing.assert_close(loaded(big_ids).logits["ctr"], model(big_ids).logits["ctr"])


def test_inference_mode_and_empty_sequences(fm: FeatureMap, batch) -> None:  # type: ignore[no-untyped-def]
    model = Ranker(fm, get_config("din"))
    empty = dict(batch)
    for cols in fm.seq_fields.values():
        for col in cols:
            empty[col] = torch.zeros_like(batch[col])
    with torch.inference_mode():
        out = model(empty)
    assert all(torch.isfinite(v).all() for v in out.logits.values())


def test_load_rejects_bad_files_and_mismatched_feature_maps(fm: FeatureMap, tmp_path: Path) -> None:
    model = Ranker(fm, get_config("mlp"))
    path = tmp_path / "model.pt"
    model.save(path)
    with pytest.raises(ConfigError, match="no such model checkpoint"):
        Ranker.load(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(ConfigError, match="not a readable liverank checkpoint"):
        Ranker.load(junk)
    torch.save({"format": "something"}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="not a liverank Ranker checkpoint"):
        Ranker.load(tmp_path / "other.pt")
    bigger = fm.model_copy(update={"tables": {**fm.tables, "author": fm.tables["author"] + 5}})
    with pytest.raises(ConfigError, match="table 'author' has 41 rows in the model but 46"):
        Ranker.load(path, feature_map=bigger)
    fewer_tasks = fm.model_copy(update={"tasks": ["ctr"]})
    with pytest.raises(ConfigError, match="tasks"):
        Ranker.load(path, feature_map=fewer_tasks)
    payload = torch.load(path, weights_only=True)
    payload["config"]["embedding_dim"] = 8
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(ConfigError, match="state dict does not match.*dim8"):
        Ranker.load(tmp_path / "edited.pt")
    payload["config"]["embedding_dim"] = 16
    payload["config"]["head_hidden"] = [16]
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(ConfigError, match="'heads.ctr.0.net.0.weight' has shape"):
        Ranker.load(tmp_path / "edited.pt")
