"""ONNX export of Rankers: parity with eager PyTorch at several batch sizes, metadata, errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

onnx = pytest.importorskip("onnx", reason="ONNX export needs the 'serve' extra (onnx)")
pytest.importorskip("onnxruntime", reason="ONNX export needs the 'serve' extra (onnxruntime)")
pytest.importorskip("onnxscript", reason="ONNX export needs the 'serve' extra (onnxscript)")

# The training / eager helpers of the TorchScript tests (same models, same protocol).
from test_export import SIZES, _eager, _one_thread, _trained  # noqa: E402, F401

from liverank.errors import ConfigError, DataValidationError  # noqa: E402
from liverank.features.spec import FeatureMap  # noqa: E402
from liverank.models.ranker import Ranker, RankerConfig  # noqa: E402
from liverank.models.synthetic import synthetic_batches, synthetic_feature_map  # noqa: E402
from liverank.models.zoo import get_config  # noqa: E402
from liverank.serve.export import META_NAME, required_fields  # noqa: E402
from liverank.serve.export_onnx import (  # noqa: E402
    ONNX_FORMAT,
    OnnxRanker,
    _embedding_bag_as_scatter,
    export_onnx,
    load_onnx,
)

Exported = tuple[Ranker, Path, FeatureMap]
#: ple gets three tasks and fusion exponents so that its export also serves the metadata test
_TASKS = {"ple": ["ctr", "lvtr", "ltr"]}


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Exported]:
    """``get(name)``: a trained zoo model and its ONNX file, exported once per module."""
    cache: dict[str, Exported] = {}

    def get(name: str) -> Exported:
        if name not in cache:
            torch.set_num_threads(1)
            fm = synthetic_feature_map(tasks=_TASKS.get(name))
            config = get_config(name)
            if name == "ple":
                config.score_exponents = {"ctr": 1.0, "lvtr": 0.5}
            model = _trained(config, fm)
            example = synthetic_batches(fm, 1, 5, seed=9)[0]  # batch 5: no size baked in
            path = export_onnx(model, example, tmp_path_factory.mktemp(name) / f"{name}.onnx")
            assert not model.training
            cache[name] = (model, path, fm)
        return cache[name]

    return get


@pytest.fixture(params=["mlp", "din", "mmoe", "ple", "farm"])
def exported(request: pytest.FixtureRequest, exports: Callable[[str], Exported]) -> Exported:
    return exports(request.param)


def _assert_parity(model: Ranker, ranker: OnnxRanker, fm: FeatureMap) -> None:
    assert ranker.tasks == model.tasks
    for i, n in enumerate(SIZES):
        batch = synthetic_batches(fm, 1, n, seed=100 + i)[0]
        got = ranker(batch)
        assert got.shape == (n, len(model.tasks))
        torch.testing.assert_close(got, _eager(model, batch), atol=1e-5, rtol=0)


def test_zoo_parity(exported: Exported) -> None:
    model, path, fm = exported
    _assert_parity(model, load_onnx(path), fm)
    _assert_parity(model, load_onnx(path, threads=2), fm)


def test_threads_above_one_fall_back_to_one_and_stay_deterministic(exported: Exported) -> None:
    """onnxruntime's multi-threaded ScatterND(add) races on duplicate indices (we saw outputs
    off by 1.8e-4 at 2 threads): graphs with one run on a single thread, bit-identically."""
    model, path, fm = exported
    ranker = load_onnx(path, threads=2)
    scatter = any(n.op_type == "ScatterND" for n in onnx.load(str(path)).graph.node)
    # farm reads its sequences without a pooled lookup: no ScatterND, nothing to fall back from
    assert scatter or model.config.name == "farm"
    assert ranker.session.get_session_options().intra_op_num_threads == (1 if scatter else 2)
    batch = synthetic_batches(fm, 1, 200, seed=5)[0]
    first = ranker(batch)
    for _ in range(100):
        assert torch.equal(ranker(batch), first)


def test_graph_signature(exported: Exported) -> None:
    """Inputs named after the required fields with a symbolic batch axis; one [B, T] output."""
    model, path, _ = exported
    graph = onnx.load(str(path)).graph
    assert sorted(i.name for i in graph.input) == required_fields(model)
    for value in [*graph.input, *graph.output]:
        assert value.type.tensor_type.shape.dim[0].dim_param  # dynamic, not a fixed size
    assert [o.name for o in graph.output] == ["proba"]
    assert graph.output[0].type.tensor_type.shape.dim[1].dim_value == len(model.tasks)
    # The vectorised embedding_bag (no ONNX Loop, which onnxruntime runs bag by bag).
    assert "Loop" not in {node.op_type for node in graph.node}


def test_metadata_round_trip(exports: Callable[[str], Exported]) -> None:
    model, path, fm = exports("ple")
    sidecar = json.loads(path.with_name("ple.onnx.json").read_text())
    ranker = load_onnx(path)
    assert sidecar == ranker.meta
    assert sidecar["format"] == ONNX_FORMAT
    assert sidecar["tasks"] == ["ctr", "lvtr", "ltr"]
    assert sorted(sidecar["fields"]) == required_fields(model)
    assert sidecar["fields"]["live_seq_author"] == {"dtype": "torch.int64", "shape": ["B", 20]}
    assert sidecar["score_exponents"] == {"ctr": 1.0, "lvtr": 0.5}
    assert FeatureMap.model_validate(sidecar["feature_map"]) == model.feature_map
    assert RankerConfig.model_validate(sidecar["config"]) == model.config
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(props[META_NAME]) == sidecar

    batch = synthetic_batches(fm, 1, 11, seed=4)[0]
    by_task = ranker.predict_proba(batch)
    eager = model.predict_proba(batch)
    for t in model.tasks:
        torch.testing.assert_close(by_task[t], eager[t], atol=1e-5, rtol=0)
    torch.testing.assert_close(
        ranker.ranking_score(batch), model.ranking_score(batch), atol=1e-5, rtol=0
    )
    # The file alone carries the metadata (the sidecar is for people and registries).
    path.with_name("ple.onnx.json").unlink()
    assert load_onnx(path).tasks == ["ctr", "lvtr", "ltr"]


@pytest.fixture
def mlp_ranker(exports: Callable[[str], Exported]) -> tuple[OnnxRanker, FeatureMap]:
    """The mlp export (it reads every field, sequences included) for the validation tests."""
    _, path, fm = exports("mlp")
    return load_onnx(path), fm


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("live_seq_category", None, "needs batch field 'live_seq_category'"),
        ("user_id", lambda t: t.to(torch.int32), "torch.int64"),
        ("position", lambda t: t.float(), "torch.int64"),
        ("user_id", lambda t: t.unsqueeze(1), r"shape \['B'\]"),
        ("author_id", lambda t: t[:-1], "5 rows"),
        ("video_seq_tag", lambda t: t.tolist(), "torch.Tensor"),
    ],
)
def test_bad_batch(
    mlp_ranker: tuple[OnnxRanker, FeatureMap],
    field: str,
    value: Callable[[torch.Tensor], object] | None,
    message: str,
) -> None:
    ranker, fm = mlp_ranker
    batch: dict = synthetic_batches(fm, 1, 6)[0]
    if value is None:
        del batch[field]
    else:
        batch[field] = value(batch[field])
    with pytest.raises(DataValidationError, match=message) as info:
        ranker(batch)
    assert info.value.column == field


def test_extra_fields_ignored(mlp_ranker: tuple[OnnxRanker, FeatureMap]) -> None:
    ranker, fm = mlp_ranker
    batch = synthetic_batches(fm, 1, 6)[0]
    reference = ranker(batch)
    batch["something_else"] = torch.ones(3, 2)
    torch.testing.assert_close(ranker(batch), reference)


def test_moment_cross_is_refused_by_the_onnx_exporter_saying_why(tmp_path: Path) -> None:
    """moment_cross exports to TorchScript and AOTInductor, not to ONNX (frexp)."""
    fm = synthetic_feature_map(long_len=16)
    model = Ranker(fm, get_config("moment_cross"))
    with pytest.raises(ConfigError, match="cannot be exported to ONNX.*frexp.*torchscript or aoti"):
        export_onnx(model, synthetic_batches(fm, 1, 4)[0], tmp_path / "mc.onnx")
    assert not (tmp_path / "mc.onnx").exists()


def _identity_model(meta: dict | None) -> onnx.ModelProto:
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
    model.ir_version = 8
    if meta is not None:
        model.metadata_props.add(key=META_NAME, value=json.dumps(meta))
    return model


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing.onnx: no such exported model"):
        load_onnx(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not an onnx model")
    with pytest.raises(ConfigError, match="junk.onnx: not a readable ONNX model"):
        load_onnx(junk)
    other = tmp_path / "other.onnx"
    onnx.save_model(_identity_model(None), str(other))
    with pytest.raises(ConfigError, match="other.onnx: an ONNX model, but not a liverank"):
        load_onnx(other)
    old = tmp_path / "v0.onnx"
    onnx.save_model(_identity_model({"format": ONNX_FORMAT, "version": 0}), str(old))
    with pytest.raises(ConfigError, match="export version 0"):
        load_onnx(old)


@pytest.mark.parametrize("mode", [0, 1])
@pytest.mark.parametrize("include_last_offset", [False, True])
def test_embedding_bag_decomposition(mode: int, include_last_offset: bool) -> None:
    """The vectorised embedding_bag equals torch's, with empty bags, padding and weights."""
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(30, 4, generator=gen)
    indices = torch.randint(0, 30, (40,), generator=gen)
    indices[::5] = 0  # padding rows
    offsets = torch.tensor([0, 3, 3, 10, 17, 17, 17, 30, 39])  # empty bags in the middle
    if include_last_offset:
        offsets = torch.cat([offsets, torch.tensor([40])])
    weights = torch.rand(40, generator=gen) if mode == 0 else None
    ref = F.embedding_bag(
        indices,
        weight,
        offsets,
        mode=("sum", "mean")[mode],
        per_sample_weights=weights,
        include_last_offset=include_last_offset,
        padding_idx=0,
    )
    got = _embedding_bag_as_scatter(
        weight, indices, offsets, False, mode, False, weights, include_last_offset, 0
    )[0]
    torch.testing.assert_close(got, ref)
