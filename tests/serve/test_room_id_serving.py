"""Serving a model with a room-id embedding: a request's candidate rooms carry their live_id, and
a room the model has never seen (newer than its feature map) is scored with the padding row
instead of crashing, in eager PyTorch and in the TorchScript export."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from liverank.data.sim import SimConfig, simulate
from liverank.features.spec import FeatureMap
from liverank.features.vocab import feature_map_for_dataset
from liverank.models.ranker import Ranker
from liverank.models.zoo import get_config
from liverank.serve.export import export_torchscript, load_exported
from liverank.serve.online_features import MemoryFeatureStore, assemble_request

SEQ_LEN = 10


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[MemoryFeatureStore, FeatureMap]:
    data = tmp_path_factory.mktemp("room_id") / "data"
    simulate(SimConfig.preset("tiny", seed=0), data, progress=False)
    return MemoryFeatureStore.from_dataset(data, SEQ_LEN), feature_map_for_dataset(data, SEQ_LEN)


def test_unknown_room_scores_with_the_padding_row(
    world: tuple[MemoryFeatureStore, FeatureMap], tmp_path: Path
) -> None:
    store, fm = world
    torch.manual_seed(0)
    cfg = get_config("mlp")
    cfg.room_id_embedding = True
    model = Ranker(fm, cfg).eval()
    ts = int(store.last_on_air_ts(store.meta.start_ts + 12 * 3_600_000) or store.meta.start_ts)
    on_air = store.rooms_on_air(ts)[:4]  # [4]
    new_room = fm.tables["room"] + 5  # beyond the model's room table
    live_ids = np.r_[on_air, new_room]
    batch, info = assemble_request(store, fm, user_id=3, live_ids=live_ids, ts=ts)
    assert batch["live_id"].tolist() == live_ids.tolist()  # the key is kept for lookups
    assert info.unknown_rooms == [new_room]

    model.embeddings.oov_counts(reset=True)
    proba = model.predict_proba(batch)["ctr"]  # [5]
    assert torch.isfinite(proba).all()
    assert model.embeddings.oov_counts() == {"room": 1}
    as_padding = model.predict_proba({**batch, "live_id": torch.zeros_like(batch["live_id"])})
    torch.testing.assert_close(proba[-1], as_padding["ctr"][-1])
    assert not torch.allclose(proba[:-1], as_padding["ctr"][:-1])  # known rooms use their row

    exported = load_exported(export_torchscript(model, batch, tmp_path / "ranker.ts"))
    torch.testing.assert_close(exported.predict_proba(batch)["ctr"], proba, atol=1e-6, rtol=1e-5)
