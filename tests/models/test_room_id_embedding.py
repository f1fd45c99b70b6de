"""RankerConfig.room_id_embedding: the room's own vector, opt-in, sparse, saved, OOV-safe."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from liverank.errors import ConfigError
from liverank.features.spec import FeatureMap
from liverank.models.ranker import ModuleSpec, Ranker, RankerConfig
from liverank.models.synthetic import synthetic_batches, synthetic_feature_map
from liverank.models.zoo import get_config
from liverank.train.optim import build_optimizers

N_ROOMS = 200_000  # synthetic live ids are author_id * 1000 + 0..4


@pytest.fixture(scope="module")
def fm() -> FeatureMap:
    base = synthetic_feature_map(n_users=200, n_authors=40, seq_len=8)
    return base.model_copy(update={"tables": {**base.tables, "room": N_ROOMS}})


@pytest.fixture(scope="module")
def batch(fm: FeatureMap) -> dict[str, torch.Tensor]:
    return synthetic_batches(fm, 1, 64, seed=0)[0]


def _model(fm: FeatureMap, name: str = "mlp", on: bool = True, seed: int = 0) -> Ranker:
    torch.manual_seed(seed)
    cfg = get_config(name)
    cfg.room_id_embedding = on
    return Ranker(fm, cfg)


def _with_live_id(batch: dict[str, torch.Tensor], live_id: torch.Tensor) -> dict:
    return {**batch, "live_id": live_id}


def test_off_by_default_and_live_id_is_then_ignored(fm: FeatureMap, batch) -> None:  # type: ignore[no-untyped-def]
    assert RankerConfig.parse(get_config("mlp").model_dump()).room_id_embedding is False
    model = _model(fm, on=False)
    assert all("live_id" not in f for f in model.required_fields.values())
    other = _with_live_id(batch, batch["live_id"] + 1)
    torch.testing.assert_close(model.predict_proba(batch), model.predict_proba(other))
    # the default needs no room table: old hand-made maps keep working
    no_room = fm.model_copy(update={"tables": {k: v for k, v in fm.tables.items() if k != "room"}})
    Ranker(no_room, get_config("mlp"))


@pytest.mark.parametrize("name", ["mlp", "ple"])
def test_on_the_room_vector_is_a_sparse_field(fm: FeatureMap, batch, name: str) -> None:  # type: ignore[no-untyped-def]
    model = _model(fm, name)
    sparse = model.feature_modules["sparse_features"]
    assert sparse.fields[-1] == "live_id" and sparse.tables[-1] == "room"
    assert (
        sparse.out_dim == _model(fm, name, on=False).feature_modules["sparse_features"].out_dim + 16
    )
    other = _with_live_id(batch, batch["live_id"] + 1)
    assert not torch.allclose(model.predict_proba(batch)["ctr"], model.predict_proba(other)["ctr"])
    with pytest.raises(ConfigError, match="'live_id'"):
        model({k: v for k, v in batch.items() if k != "live_id"})


def test_one_step_moves_only_the_rows_of_the_rooms_in_the_batch(fm: FeatureMap, batch) -> None:  # type: ignore[no-untyped-def]
    """The room rows are trained by the sparse optimiser (SparseAdam at lr_sparse)."""
    model = _model(fm)
    opt = build_optimizers(model, lr_sparse=0.05, lr_dense=0.001)
    sparse_ids = {id(p) for g in opt.sparse.param_groups for p in g["params"]}
    assert {id(p) for p in model.embeddings.parameters()} <= sparse_ids
    before = model.embeddings.table_weight("room").detach().clone()  # [N_ROOMS, 16]
    loss, _ = model.loss(batch, model(batch))
    opt.zero_grad()
    loss.backward()
    opt.step()
    after = model.embeddings.table_weight("room").detach()
    moved = torch.nonzero((after != before).any(1)).flatten()
    assert set(moved.tolist()) == set(batch["live_id"].unique().tolist())
    assert opt.lrs["sparse"] == 0.05


def test_out_of_range_live_id_is_the_padding_row(fm: FeatureMap, batch) -> None:  # type: ignore[no-untyped-def]
    """A room newer than the model (serving) or a bad id scores like live_id 0, never crashes."""
    model = _model(fm)
    model.embeddings.oov_counts(reset=True)
    n = batch["live_id"].shape[0]
    unknown = torch.tensor([N_ROOMS, N_ROOMS + 7, -3, 10**12] * (n // 4))  # [B]
    zero = torch.zeros(n, dtype=torch.int64)
    got = model.predict_proba(_with_live_id(batch, unknown))
    want = model.predict_proba(_with_live_id(batch, zero))
    torch.testing.assert_close(got, want)
    assert model.embeddings.oov_counts()["room"] == n


def test_missing_room_table_is_a_clear_error_only_when_asked(fm: FeatureMap) -> None:
    no_room = fm.model_copy(update={"tables": {k: v for k, v in fm.tables.items() if k != "room"}})
    with pytest.raises(ConfigError, match="room_id_embedding needs a 'room' embedding table"):
        _model(no_room)
    hashed = no_room.model_copy(update={"hash_buckets": {"room": 1024}})
    assert _model(hashed).embeddings.num_rows("room") == 1024


def test_explicit_fields_get_live_id_and_a_config_without_sparse_features_is_refused(
    fm: FeatureMap,
) -> None:
    cfg = get_config("mlp")
    cfg.room_id_embedding = True
    cfg.modules[0] = ModuleSpec(name="sparse_features", params={"fields": ["user_id", "author_id"]})
    model = Ranker(fm, cfg)
    assert model.feature_modules["sparse_features"].fields == ["user_id", "author_id", "live_id"]
    assert cfg.modules[0].params == {"fields": ["user_id", "author_id"]}  # config not mutated
    cfg.modules = [ModuleSpec(name="seq_pool")]
    with pytest.raises(ConfigError, match="through the 'sparse_features' module"):
        Ranker(fm, cfg)


def test_save_load_round_trip(fm: FeatureMap, batch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model = _model(fm, "ple")
    opt = build_optimizers(model)
    loss, _ = model.loss(batch, model(batch))
    loss.backward()
    opt.step()
    model.save(tmp_path / "m.pt")
    loaded = Ranker.load(tmp_path / "m.pt", feature_map=fm)
    assert loaded.config.room_id_embedding is True
    assert loaded.feature_map == fm  # the saved map is the samples' own, unchanged
    torch.testing.assert_close(loaded.predict_proba(batch), model.predict_proba(batch))
    # the embedding storage does not depend on the option (the room table is always allocated)
    off = _model(fm, "ple", on=False).embeddings.state_dict()
    assert {k: v.shape for k, v in loaded.embeddings.state_dict().items()} == {
        k: v.shape for k, v in off.items()
    }
