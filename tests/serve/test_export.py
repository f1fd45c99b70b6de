"""TorchScript export of Rankers: parity with eager PyTorch, batch-size independence, errors."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from liverank.errors import ConfigError, DataValidationError
from liverank.features.spec import FeatureMap
from liverank.models.ranker import Ranker, RankerConfig
from liverank.models.synthetic import synthetic_batches, synthetic_feature_map
from liverank.models.zoo import get_config
from liverank.serve.export import (
    META_NAME,
    ExportedModel,
    ExportedRanker,
    export_blockers,
    export_torchscript,
    load_exported,
    quiet_torchscript,
    required_fields,
)
from liverank.train.optim import build_optimizers

SIZES = (1, 7, 200)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _trained(config: RankerConfig, fm: FeatureMap, steps: int = 3) -> Ranker:
    """A model a few optimiser steps away from its initialisation (sparse rows touched)."""
    torch.manual_seed(0)
    model = Ranker(fm, config)
    optimizers = build_optimizers(model, lr_sparse=0.05, lr_dense=0.01)
    for batch in synthetic_batches(fm, steps, 64, seed=3):
        optimizers.zero_grad()
        loss, _ = model.loss(batch, model(batch))
        loss.backward()
        optimizers.step()
    return model.eval()


def _eager(model: Ranker, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    proba = model.predict_proba(batch)
    return torch.stack([proba[t] for t in model.tasks], dim=1)  # [B, T]


def _assert_parity(model: Ranker, exported: ExportedModel, fm: FeatureMap) -> None:
    assert exported.tasks == model.tasks
    for i, n in enumerate(SIZES):
        batch = synthetic_batches(fm, 1, n, seed=100 + i)[0]
        got = exported(batch)
        assert got.shape == (n, len(model.tasks))
        torch.testing.assert_close(got, _eager(model, batch), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["mlp", "din", "mmoe", "ple", "farm"])
def test_zoo_parity(name: str, tmp_path: Path) -> None:
    fm = synthetic_feature_map()
    model = _trained(get_config(name), fm)
    example = synthetic_batches(fm, 1, 5, seed=9)[0]  # traced at batch 5: no size is baked in
    path = export_torchscript(model, example, tmp_path / f"{name}.ts")
    assert not model.training
    _assert_parity(model, load_exported(path), fm)
    _assert_parity(model, load_exported(path, freeze=False), fm)


def test_variants_parity(tmp_path: Path) -> None:
    """Hashed tables and the unfused (one table per field) layout trace too."""
    fm = synthetic_feature_map(hash_buckets={"user": 97})
    config = get_config("din")
    config.fused_embeddings = False
    config.sparse_embeddings = False
    config.hash_buckets = {"author": 31}
    model = _trained(config, fm)
    path = export_torchscript(model, synthetic_batches(fm, 1, 4)[0], tmp_path / "m.ts")
    exported = load_exported(path)
    _assert_parity(model, exported, fm)
    # Ids never seen in training (cold users) are hashed / mapped to padding as in eager.
    batch = synthetic_batches(fm, 1, 7, seed=1)[0]
    batch["user_id"] = batch["user_id"] + 10_000_000
    batch["author_id"] = batch["author_id"] * 0 + 5_000
    torch.testing.assert_close(exported(batch), _eager(model, batch), atol=1e-5, rtol=0)


def test_metadata_and_helpers(tmp_path: Path) -> None:
    fm = synthetic_feature_map(tasks=["ctr", "lvtr", "ltr"])
    config = get_config("ple")
    config.score_exponents = {"ctr": 1.0, "lvtr": 0.5}
    model = _trained(config, fm, steps=1)
    path = export_torchscript(model, synthetic_batches(fm, 1, 3)[0], tmp_path / "ple.ts")
    sidecar = json.loads(path.with_name("ple.ts.json").read_text())
    exported = load_exported(path)
    assert sidecar == exported.meta
    assert sidecar["tasks"] == ["ctr", "lvtr", "ltr"]
    assert sorted(sidecar["fields"]) == required_fields(model)
    assert sidecar["fields"]["live_seq_author"] == {"dtype": "torch.int64", "shape": ["B", 20]}
    assert FeatureMap.model_validate(sidecar["feature_map"]) == model.feature_map
    assert RankerConfig.model_validate(sidecar["config"]) == model.config

    batch = synthetic_batches(fm, 1, 11, seed=4)[0]
    by_task = exported.predict_proba(batch)
    eager = model.predict_proba(batch)
    for t in model.tasks:
        torch.testing.assert_close(by_task[t], eager[t], atol=1e-5, rtol=0)
    torch.testing.assert_close(
        exported.ranking_score(batch), model.ranking_score(batch), atol=1e-5, rtol=0
    )
    # The archive alone carries the metadata (the sidecar is for people and registries).
    path.with_name("ple.ts.json").unlink()
    assert load_exported(path).tasks == ["ctr", "lvtr", "ltr"]


@pytest.fixture(scope="module")
def exported_din(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExportedRanker, FeatureMap]:
    fm = synthetic_feature_map()
    torch.manual_seed(0)
    model = Ranker(fm, get_config("din"))
    path = tmp_path_factory.mktemp("din") / "din.ts"
    return load_exported(export_torchscript(model, synthetic_batches(fm, 1, 4)[0], path)), fm


def test_missing_field(exported_din: tuple[ExportedRanker, FeatureMap]) -> None:
    exported, fm = exported_din
    batch = synthetic_batches(fm, 1, 6)[0]
    del batch["live_seq_category"]
    with pytest.raises(DataValidationError, match="live_seq_category"):
        exported(batch)
    # The archive itself checks too (for consumers that bypass the Python wrapper).
    with pytest.raises(torch.jit.Error, match="no field 'live_seq_category'"):
        exported.program(batch)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("user_id", lambda t: t.to(torch.int32), "torch.int64"),
        ("user_id", lambda t: t.unsqueeze(1), r"shape \['B'\]"),
        ("author_id", lambda t: t[:-1], "5 rows"),
        ("video_seq_tag", lambda t: t.tolist(), "torch.Tensor"),
    ],
)
def test_wrong_field(
    exported_din: tuple[ExportedRanker, FeatureMap],
    field: str,
    value: Callable[[torch.Tensor], object],
    message: str,
) -> None:
    exported, fm = exported_din
    batch: dict = synthetic_batches(fm, 1, 6)[0]
    batch[field] = value(batch[field])
    with pytest.raises(DataValidationError, match=message) as info:
        exported(batch)
    assert info.value.column == field


def test_archive_rejects_wrong_dtype(exported_din: tuple[ExportedRanker, FeatureMap]) -> None:
    exported, fm = exported_din
    batch = synthetic_batches(fm, 1, 6)[0]
    batch["position"] = batch["position"].float()
    with pytest.raises(torch.jit.Error, match="'position' must be torch.int64"):
        exported.program(batch)


def test_extra_fields_ignored(exported_din: tuple[ExportedRanker, FeatureMap]) -> None:
    exported, fm = exported_din
    batch = synthetic_batches(fm, 1, 6)[0]
    reference = exported(batch)
    batch["something_else"] = torch.ones(3, 2)
    torch.testing.assert_close(exported(batch), reference)


def test_farm_trace_is_exact_for_sequences_longer_than_the_example(tmp_path: Path) -> None:
    """FARM's eager attentions run over the batch's longest real sequence; a trace must not
    freeze that length: traced on an example whose sequences hold 2 items, the export gives the
    eager outputs on batches with full-length sequences (and on empty ones)."""
    fm = synthetic_feature_map()
    model = _trained(get_config("farm"), fm)
    assert export_blockers(model) == {}
    example = synthetic_batches(fm, 1, 5, seed=9)[0]
    for c in [c for c in example if "_seq_" in c and not c.endswith("_len")]:
        example[c][:, 2:] = 0  # padding after 2 items
    exported = load_exported(export_torchscript(model, example, tmp_path / "farm.ts"))
    for n in (1, 9, 64):
        batch = synthetic_batches(fm, 1, n, seed=200 + n)[0]
        torch.testing.assert_close(exported(batch), _eager(model, batch), atol=1e-5, rtol=0)
        for c in [c for c in batch if "_seq_" in c and not c.endswith("_len")]:
            batch[c][: n // 2] = 0  # half the rows with no history at all
        torch.testing.assert_close(exported(batch), _eager(model, batch), atol=1e-5, rtol=0)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such exported model"):
        load_exported(tmp_path / "missing.ts")
    junk = tmp_path / "junk.ts"
    junk.write_bytes(b"not an archive")
    with pytest.raises(ConfigError, match="not a readable TorchScript archive"):
        load_exported(junk)
    other = tmp_path / "other.ts"
    with quiet_torchscript():  # archives that are not liverank exports, made on purpose
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 1)), str(other))
    with pytest.raises(ConfigError, match="not a liverank ranker export"):
        load_exported(other)
    bad_version = tmp_path / "v0.ts"
    with quiet_torchscript():
        torch.jit.save(
            torch.jit.script(torch.nn.Linear(2, 1)),
            str(bad_version),
            _extra_files={
                META_NAME: json.dumps({"format": "liverank.export.torchscript", "version": 0})
            },
        )
    with pytest.raises(ConfigError, match="export version 0"):
        load_exported(bad_version)


def test_torchscript_paths_show_no_deprecation_warning(tmp_path: Path) -> None:
    """Export, load (frozen) and the service's in-memory runner call torch.jit, deprecated in
    torch 2.13: none of its warnings reaches the user (issue #12 item 11)."""
    from liverank.serve.runtime import make_runner

    fm = synthetic_feature_map()
    model = _trained(get_config("mlp"), fm, steps=1)
    example = synthetic_batches(fm, 1, 5, seed=9)[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_exported(export_torchscript(model, example, tmp_path / "m.ts"))
        assert make_runner(model, "torchscript", example).runtime == "torchscript"
    assert [str(w.message) for w in caught if "torch.jit" in str(w.message)] == []
    with pytest.warns(DeprecationWarning, match="torch.jit"):  # the filter is that narrow
        torch.jit.script(torch.nn.Linear(2, 1))


@pytest.mark.parametrize("name", ["eliverec", "bst_dual"])
def test_shopping_models_parity(name: str, tmp_path: Path) -> None:
    """eLiveRec and its dual-sequence baseline trace, also for users without any product
    history (the encoders' all-padding rows) and at batch sizes other than the traced one."""
    fm = synthetic_feature_map(shopping=True)
    model = _trained(get_config(name), fm)
    path = export_torchscript(model, synthetic_batches(fm, 1, 5, seed=9)[0], tmp_path / "m.ts")
    exported = load_exported(path)
    assert exported.tasks == model.tasks
    for n in (1, 7, 64):
        batch = synthetic_batches(fm, 1, n, seed=100 + n)[0]
        for c in [c for c in batch if c.startswith("product_seq_")]:
            batch[c][: n // 2] = 0
        torch.testing.assert_close(exported(batch), _eager(model, batch), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("foresighter", {"foresight": True}), ("mmbee", {"mmbee": True})],
    ids=["foresighter", "mmbee"],
)
def test_room_sequence_and_mmbee_models_parity(name: str, kwargs: dict, tmp_path: Path) -> None:
    """LiveForesighter's and MMBee's modules trace exactly at other batch sizes, also for rooms
    with no statistics, products or segments yet and for users / authors without neighbours."""
    fm = synthetic_feature_map(**kwargs)
    model = _trained(get_config(name), fm)
    path = export_torchscript(model, synthetic_batches(fm, 1, 5, seed=9)[0], tmp_path / "m.ts")
    exported = load_exported(path)
    for n in (1, 7, 64):
        batch = synthetic_batches(fm, 1, n, seed=100 + n)[0]
        for c in ("room_stats", "room_products", "seg_mask"):
            if c in batch:
                batch[c][: n // 2] = 0  # nothing known about these rooms yet
        for c in [c for c in batch if c.startswith("gie_")]:
            batch[c][n // 3 :] = 0  # no neighbours
        torch.testing.assert_close(exported(batch), _eager(model, batch), atol=1e-5, rtol=0)
