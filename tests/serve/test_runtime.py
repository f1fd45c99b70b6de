"""Serving runtimes: the in-memory TorchScript trace matches eager, the parity gate rejects a
bad trace, and a runner that cannot be built rejects the version (the old one keeps serving).

The service's batches are each one request (one user), and the compiled runners are recorded for
that (``one_request``: the user's sequences encoded once): every batch here is made one request
with :func:`as_request`, and a batch of several users is refused with the field named."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from liverank.errors import ConfigError, DataValidationError
from liverank.models.ranker import Ranker, RankerConfig
from liverank.models.synthetic import as_request, synthetic_batches, synthetic_feature_map
from liverank.models.zoo import get_config
from liverank.serve import runtime as rt
from liverank.serve.model_holder import ModelHolder
from liverank.serve.runtime import EagerRunner, TorchScriptRunner, make_runner
from liverank.train.registry import ModelRegistry

FM = synthetic_feature_map()


def _model(name: str, seed: int = 0, fm=FM) -> Ranker:
    torch.manual_seed(seed)
    return Ranker(fm, get_config(name)).eval()


@pytest.mark.parametrize("name", ["mlp", "ple"])
def test_auto_traces_and_matches_eager_on_other_batches(name: str) -> None:
    model = _model(name)
    example, *others = map(as_request, synthetic_batches(FM, 3, 8, seed=1))
    runner = make_runner(model, "auto", example)
    assert isinstance(runner, TorchScriptRunner) and runner.runtime == "torchscript"
    eager = EagerRunner(model)
    sizes = [as_request(synthetic_batches(FM, 1, n, seed=n)[0]) for n in (1, 7, 200)]
    for batch in [*others, *sizes, example]:
        got, want = runner.predict_proba(batch), eager.predict_proba(batch)
        assert list(got) == list(model.tasks)
        assert rt.max_abs_diff(got, want) < 1e-5
        torch.testing.assert_close(
            runner.score_from_proba(got), eager.score_from_proba(want), atol=1e-5, rtol=1e-5
        )


def test_eager_is_eager_and_unknown_runtime_is_an_error() -> None:
    model = _model("mlp")
    assert isinstance(make_runner(model, "eager", None), EagerRunner)
    with pytest.raises(ConfigError, match="unknown runtime 'onnx'"):
        make_runner(model, "onnx", None)


def test_untraceable_model_runs_eagerly_on_auto_and_is_refused_on_torchscript(
    unchecked_config: RankerConfig,
) -> None:
    torch.manual_seed(0)
    model = Ranker(FM, unchecked_config).eval()
    example = synthetic_batches(FM, 1, 4)[0]
    assert isinstance(make_runner(model, "auto", example), EagerRunner)
    with pytest.raises(ConfigError, match="cannot run on TorchScript.*unchecked_pool"):
        make_runner(model, "torchscript", example)
    with pytest.raises(ConfigError, match="no example batch"):
        make_runner(_model("mlp"), "torchscript", None)


def test_parity_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    """A trace that disagrees with eager is never served: auto falls back, torchscript raises."""
    model = _model("mlp")
    example = as_request(synthetic_batches(FM, 1, 8)[0])
    real = TorchScriptRunner.predict_proba

    def off_by_a_bit(self, batch):
        return {t: p + 1e-3 for t, p in real(self, batch).items()}

    monkeypatch.setattr(TorchScriptRunner, "predict_proba", off_by_a_bit)
    assert isinstance(make_runner(model, "auto", example), EagerRunner)
    with pytest.raises(ConfigError, match="differs from eager by 1.0"):
        make_runner(model, "torchscript", example)


def test_holder_builds_runners_and_rejects_a_version_whose_runner_fails(
    tmp_path: Path, unchecked_config: RankerConfig
) -> None:
    reg = ModelRegistry(tmp_path / "reg")
    _model("mlp", 0).save(tmp_path / "a.pt")
    reg.publish("m", tmp_path / "a.pt")
    holder = ModelHolder(reg.root, "m", FM)
    holder.refresh()
    assert holder.current().runtime == "eager"  # no runner factory yet
    example = as_request(synthetic_batches(FM, 1, 8)[0])
    holder.prepare(None, lambda m: make_runner(m, "torchscript", example))
    assert holder.current().runtime == "torchscript" and holder.version == "v0001"
    # a new version whose runner cannot be built is rejected like a corrupt file
    torch.manual_seed(1)
    Ranker(FM, unchecked_config).eval().save(tmp_path / "b.pt")
    reg.publish("m", tmp_path / "b.pt")
    holder.feature_map = None  # let it load; the runner is what fails
    assert not holder.refresh()
    assert holder.version == "v0001" and "cannot run on TorchScript" in holder.rejected["v0002"]
    assert holder.current().runtime == "torchscript"


def test_farm_is_traced_on_auto_for_one_request_and_matches_eager() -> None:
    """FARM's one-request trace encodes the user's sequences once (as its eager dedup does), so
    auto serves it traced; its scores match eager on another request."""
    fm = synthetic_feature_map()
    model = Ranker(fm, get_config("farm")).eval()
    example = as_request(synthetic_batches(fm, 1, 6, seed=1)[0])
    assert isinstance(make_runner(model, "auto", example), TorchScriptRunner)
    traced = make_runner(model, "torchscript", example)
    assert isinstance(traced, TorchScriptRunner)
    batch = as_request(synthetic_batches(fm, 1, 9, seed=2)[0])
    got, want = traced.predict_proba(batch), make_runner(model, "eager", None).predict_proba(batch)
    for task in model.tasks:
        torch.testing.assert_close(got[task], want[task], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["ple", "farm"])
def test_compiled_runner_refuses_a_batch_of_several_users(name: str) -> None:
    """Recorded for one request, the program would score every row with row 0's sequences: a
    batch whose user sequences differ is refused, naming the field, instead of scored wrong."""
    model = _model(name)
    runner = make_runner(model, "torchscript", as_request(synthetic_batches(FM, 1, 8, seed=1)[0]))
    mixed = synthetic_batches(FM, 1, 8, seed=2)[0]
    with pytest.raises(
        DataValidationError,
        match=r"column .(live|video)_seq_\w+.: differs between the rows.*one request",
    ):
        runner.predict_proba(mixed)
    single = {k: v[:1] for k, v in mixed.items()}  # one row is always one request
    got, want = runner.predict_proba(single), EagerRunner(model).predict_proba(single)
    assert rt.max_abs_diff(got, want) < 1e-5
