"""LiveForesighter's sample columns: a row's room statistics and products are the room store's
as of the impression (point in time), through the pointer columns and the shared tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from liverank.data.loader import SampleSet
from liverank.data.samples import build_samples
from liverank.features.store import RoomStatsStore


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from liverank.data.sim import SimConfig, simulate

    root = tmp_path_factory.mktemp("room_seq")
    simulate(SimConfig.preset("tiny", seed=2), root / "w", progress=False)
    build_samples(root / "w", root / "s", seq_len=5, progress=False, room_stats=12, room_products=4)
    return root / "w", root / "s"


def test_batch_fields_equal_the_store_as_of_the_impression(built: tuple[Path, Path]) -> None:
    world, samples = built
    data = SampleSet.load(samples)
    assert data.feature_map.room_stats_window == 12 and data.feature_map.room_products_len == 4
    rows = np.linspace(0, len(data) - 1, 300).astype(int)
    batch = data.batch(rows)
    store = RoomStatsStore.from_dataset(world)
    hist, known = store.history_batch(data["live_id"][rows], data["ts"][rows], 12)  # [B, 12, S]
    np.testing.assert_allclose(batch["room_stats"].numpy(), hist.transpose(0, 2, 1), rtol=1e-6)
    assert known.all() and batch["room_stats"].sum() > 0
    prods, _ = store.products_batch(data["live_id"][rows], data["ts"][rows], 4)  # [B, 4, 4]
    np.testing.assert_array_equal(batch["room_products"].numpy(), prods)
    shopping = (prods[:, -1, 0] > 0).sum()
    assert shopping > 0, "no row of a shopping room with an earlier product in the tiny world"


def test_stream_modes_refuse_the_room_sequences(tmp_path: Path) -> None:
    from liverank.cli import main

    code = main(["build-samples", "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--mode", "moment", "--room-stats", "5"])  # fmt: skip
    assert code == 2
