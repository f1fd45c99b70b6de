"""AOTInductor runtime: torch.export + ahead-of-time compiled kernels match eager on any batch
size, packages are cached by content, and bad files or batches get errors that name them.

One compilation of the mlp (tens of seconds) is shared by the module's tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from liverank.errors import ConfigError, DataValidationError
from liverank.models.ranker import Ranker, RankerConfig
from liverank.models.synthetic import as_request, synthetic_batches, synthetic_feature_map
from liverank.models.zoo import get_config
from liverank.serve import export_aoti as aoti
from liverank.serve import runtime as rt
from liverank.serve.runtime import AotiRunner, EagerRunner, make_runner

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="AOTInductor needs g++")

FM = synthetic_feature_map()


def _model(seed: int = 0) -> Ranker:
    torch.manual_seed(seed)
    return Ranker(FM, get_config("mlp")).eval()


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Ranker, AotiRunner, Path]:
    cache = tmp_path_factory.mktemp("aoti")
    model = _model()
    runner = make_runner(model, "aoti", synthetic_batches(FM, 1, 8, seed=1)[0], aoti_cache=cache)
    assert isinstance(runner, AotiRunner) and runner.runtime == "aoti"
    return model, runner, cache


def test_matches_eager_on_every_batch_size(compiled) -> None:
    model, runner, _ = compiled
    eager = EagerRunner(model)
    for rows in (1, 7, 200):
        batch = synthetic_batches(FM, 1, rows, seed=rows)[0]
        got, want = runner.predict_proba(batch), eager.predict_proba(batch)
        assert list(got) == list(model.tasks) and got["ctr"].shape == (rows,)
        assert rt.max_abs_diff(got, want) < 1e-5
        torch.testing.assert_close(runner.score_from_proba(got), eager.score_from_proba(want))


def test_package_is_cached_by_content(compiled, monkeypatch: pytest.MonkeyPatch) -> None:
    model, _, cache = compiled
    (package,) = cache.glob("*.pt2")
    example = synthetic_batches(FM, 1, 8, seed=1)[0]
    fields = {f: example[f] for f in aoti.required_fields(model)}
    # the service compiles for one request per batch (the same program for the mlp, which
    # has no user sequences: the same key; DIN's differ, in the test below)
    assert package.name == f"mlp-{aoti.package_key(model, fields, one_request=True)}.pt2"
    assert aoti.package_key(model, fields) == aoti.package_key(model, fields, one_request=True)

    def no_compile(*args, **kwargs):
        raise AssertionError("compiled again although the package is cached")

    monkeypatch.setattr(aoti, "export_aoti", no_compile)
    again = make_runner(model, "aoti", example, aoti_cache=cache)  # same weights: the cache
    assert isinstance(again, AotiRunner)
    other = _model(seed=1)  # other weights: another key, so a stale package is never served
    assert aoti.package_key(other, fields) != aoti.package_key(model, fields)


def test_loaded_package_checks_batches_and_files(compiled, tmp_path: Path) -> None:
    _, _, cache = compiled
    (package,) = cache.glob("*.pt2")
    ranker = aoti.load_aoti(package)
    assert ranker.meta["format"] == aoti.AOTI_FORMAT
    batch = synthetic_batches(FM, 1, 5)[0]
    assert ranker(batch).shape == (5, len(ranker.tasks))
    missing = next(iter(ranker.fields))
    with pytest.raises(DataValidationError, match=missing):
        ranker({k: v for k, v in batch.items() if k != missing})
    with pytest.raises(ConfigError, match="no such exported model"):
        aoti.load_aoti(tmp_path / "nothing.pt2")
    lonely = tmp_path / "copy.pt2"
    shutil.copy(package, lonely)  # a package without its metadata
    with pytest.raises(ConfigError, match="metadata copy.pt2.json is missing"):
        aoti.load_aoti(lonely)
    with pytest.raises(ConfigError, match=r"named \*\.pt2"):
        aoti.export_aoti(_model(), batch, tmp_path / "ranker.bin")


def test_unexportable_model_is_refused(unchecked_config: RankerConfig) -> None:
    fm = synthetic_feature_map()
    torch.manual_seed(0)
    model = Ranker(fm, unchecked_config).eval()
    example = synthetic_batches(fm, 1, 4)[0]
    with pytest.raises(ConfigError, match="cannot run on AOTInductor.*unchecked_pool"):
        make_runner(model, "aoti", example)


def test_din_compiled_for_one_request_matches_eager_and_refuses_mixed_users(
    tmp_path: Path,
) -> None:
    """DIN's sequences are the user's: compiled for one request they are encoded once per batch
    (``one_request_fields`` in the metadata), the scores equal eager's on request batches of
    any size, and a batch of several users is refused with the field named."""
    torch.manual_seed(0)
    model = Ranker(FM, get_config("din")).eval()
    example = as_request(synthetic_batches(FM, 1, 8, seed=1)[0])
    runner = make_runner(model, "aoti", example, aoti_cache=tmp_path)
    assert isinstance(runner, AotiRunner)
    shared = runner.program.one_request_fields
    assert shared and all(f.startswith(("video_seq_", "live_seq_")) for f in shared)
    fields = {f: example[f] for f in aoti.required_fields(model)}
    assert aoti.package_key(model, fields) != aoti.package_key(model, fields, one_request=True)
    eager = EagerRunner(model)
    for rows in (1, 7, 200):
        batch = as_request(synthetic_batches(FM, 1, rows, seed=rows)[0])
        assert rt.max_abs_diff(runner.predict_proba(batch), eager.predict_proba(batch)) < 1e-5
    with pytest.raises(DataValidationError, match="differs between the rows.*one request"):
        runner.predict_proba(synthetic_batches(FM, 1, 8, seed=3)[0])
