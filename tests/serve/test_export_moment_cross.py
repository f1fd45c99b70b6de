"""moment_cross exported (issue #20): recorded on the ``[B, K]`` window fields, its TorchScript and
``torch.export`` programs give the eager outputs, for any batch and recorded for one request per
batch (the service's case); what cannot be exported says why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from liverank.errors import ConfigError, DataValidationError
from liverank.features import long_history as lh
from liverank.models.layers import search
from liverank.models.ranker import Ranker
from liverank.models.synthetic import as_request, synthetic_batches, synthetic_feature_map
from liverank.models.zoo import get_config
from liverank.serve.export import (
    export_blockers,
    export_torchscript,
    load_exported,
    quiet_torchscript,
    required_fields,
)
from liverank.serve.export_aoti import capture
from liverank.serve.runtime import TorchScriptRunner, make_runner

K = 48
FM = synthetic_feature_map(long_len=K)


def _model(**params) -> Ranker:
    torch.manual_seed(0)
    config = get_config("moment_cross")
    if params:
        modules = [
            m.model_copy(update={"params": {**m.params, **params}})
            if m.name == "moment_cross"
            else m
            for m in config.modules
        ]
        config = config.model_copy(update={"modules": modules})
    return Ranker(FM, config).eval()


def _eager(model: Ranker, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        out = model(batch)
    return torch.sigmoid(torch.stack([out.logits[t] for t in model.tasks], dim=1))


def _requests() -> list[dict[str, torch.Tensor]]:
    """One-request batches of 1, 7 and 64 rows (different users, windows and lengths)."""
    return [
        as_request(synthetic_batches(FM, 1, n, seed=s)[0]) for n, s in ((1, 3), (7, 4), (64, 5))
    ]


PARAMS = [
    {},
    {"sequences": ["short", "long", "aidhard"]},  # no mixed: no merge of the two windows
    {"search": "mean", "sequences": ["short", "long", "livelong", "mixed"]},  # the control
]


@pytest.mark.parametrize("params", PARAMS, ids=str)
@pytest.mark.parametrize("one_request", [False, True], ids=["any_batch", "one_request"])
def test_torchscript_program_gives_the_eager_outputs(
    tmp_path: Path, params: dict, one_request: bool
) -> None:
    model = _model(**params)
    example = as_request(synthetic_batches(FM, 1, 5, seed=1)[0])
    path = export_torchscript(model, example, tmp_path / "mc.ts", one_request=one_request)
    program = load_exported(path)
    for batch in _requests():
        torch.testing.assert_close(program(batch), _eager(model, batch), atol=1e-5, rtol=0)
    mixed = synthetic_batches(FM, 1, 24, seed=9)[0]  # 24 rows of different users
    if one_request:
        with pytest.raises(DataValidationError, match="differs between the rows.*one request"):
            program(mixed)
    else:
        torch.testing.assert_close(program(mixed), _eager(model, mixed), atol=1e-5, rtol=0)


def test_torch_export_program_for_one_request_gives_the_eager_outputs() -> None:
    """The ``torch.export`` capture AOTInductor compiles: a dynamic batch axis, one request."""
    model = _model()
    fields = required_fields(model)
    example = as_request(synthetic_batches(FM, 1, 5, seed=1)[0])
    program = capture(model, {f: example[f] for f in fields}, one_request=True).module()
    for batch in _requests():
        with torch.no_grad():
            got = program({f: batch[f] for f in fields})
        torch.testing.assert_close(got, _eager(model, batch), atol=1e-5, rtol=0)


def test_auto_serves_it_traced_on_window_fields_broadcast_from_one_row() -> None:
    """The service's batches: window fields are views of one row (stride 0). The eager forward
    then encodes the windows once (dedup) and the trace agrees with it."""
    model = _model()
    base = as_request(synthetic_batches(FM, 1, 30, seed=2)[0])
    batch = {k: (v[:1].expand_as(v) if k.startswith("long_") else v) for k, v in base.items()}
    assert batch["long_video_author"].stride(0) == 0
    runner = make_runner(model, "auto", batch)
    assert isinstance(runner, TorchScriptRunner)
    for task, p in runner.predict_proba(batch).items():
        torch.testing.assert_close(p, _eager(model, base)[:, model.tasks.index(task)])


def _store() -> lh.LongHistory:
    rng = np.random.default_rng(0)
    frames = {}
    for domain, cols in lh.DOMAIN_COLUMNS.items():
        n = 20
        data = {"user_id": np.repeat([1, 2], n // 2), "ts": np.arange(n) * 1000}
        frames[domain] = pl.DataFrame(data | {c: rng.integers(0, 2, n) for c in cols})
    return lh.LongHistory.from_frames(frames)


def test_an_attached_store_blocks_the_export_and_says_how_to_lift_it() -> None:
    model = _model()
    model.attach_long_history(_store(), K)
    assert "attach_long_history(None, 0)" in export_blockers(model)["moment_cross"]
    with pytest.raises(ConfigError, match="cannot run on TorchScript.*attached store"):
        make_runner(model, "torchscript", synthetic_batches(FM, 1, 4)[0])
    model.attach_long_history(None, 0)
    assert export_blockers(model) == {}


def test_float_order_traced_equals_the_bit_pattern() -> None:
    """The GSU's ties are broken on the scores' float32 bit order; a TorchScript trace computes
    it by frexp (it cannot record a dtype view), eager code and torch.export by the bit view:
    the same integers for every kind of float."""
    rng = np.random.default_rng(1)
    normal = rng.standard_normal(5000) * 10.0 ** rng.integers(-37, 38, 5000)
    special = [0.0, -0.0, np.inf, -np.inf, 1e-45, -1e-45, 1.1754944e-38, -1.1754944e-38, 3.4e38]
    x = torch.tensor(np.concatenate([normal, special]), dtype=torch.float32)
    bits = search.float_order(x)
    torch.testing.assert_close(search.float_order_arithmetic(x), bits, atol=0, rtol=0)
    with quiet_torchscript():  # deprecated upstream, silenced where liverank uses it
        traced = torch.jit.trace(search.float_order, (x,))  # records the arithmetic
    torch.testing.assert_close(traced(x), bits, atol=0, rtol=0)
    exported = torch.export.export(_FloatOrder(), (x,)).module()  # records the bit view
    assert any("view" in str(n.target) for n in exported.graph.nodes)
    torch.testing.assert_close(exported(x), bits, atol=0, rtol=0)
    order = torch.argsort(bits)
    assert bool((x[order][1:] >= x[order][:-1]).all())  # monotone in the value


class _FloatOrder(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return search.float_order(x)
