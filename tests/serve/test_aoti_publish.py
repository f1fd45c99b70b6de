"""Compile at publish: ``liverank train --registry R --compile-aoti`` puts the version's
AOTInductor package in ``R/.aoti`` before the version is published, under the key the service
computes from its own request batches, so ``serve --runtime aoti`` loads it instead of
compiling on its serving cores. The compiler is replaced by a recorder here (the compilation
itself is tested in test_export_aoti.py): what is checked is the order and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from liverank.cli import main
from liverank.config import DataConfig, ExperimentConfig, TrainConfig
from liverank.data.samples import build_samples
from liverank.features.spec import FeatureMap
from liverank.models.ranker import Ranker
from liverank.serve import export_aoti as aoti
from liverank.serve.service import example_request, open_feature_store
from liverank.train.experiment import run_experiment
from liverank.train.registry import AOTI_CACHE, ModelRegistry


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from liverank.data.sim import SimConfig, simulate

    root = tmp_path_factory.mktemp("aoti_publish")
    simulate(SimConfig.preset("tiny", seed=0, n_days=3), root / "data", progress=False)
    build_samples(root / "data", root / "samples", seq_len=10, progress=False)
    return root / "data", root / "samples"


@pytest.mark.parametrize("model", ["mlp", "ple"])
def test_the_package_is_compiled_before_publishing_under_the_services_key(
    world: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str
) -> None:
    data, samples = world
    registry = tmp_path / "reg"
    calls: list[tuple[Path, list[str], bool]] = []

    def record(m: Ranker, example, path: str | Path, one_request: bool = False) -> Path:
        path = Path(path)
        calls.append((path, ModelRegistry(registry).versions(model), one_request))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"package")
        path.with_name(path.name + ".json").write_text("{}")
        return path

    monkeypatch.setattr(aoti, "export_aoti", record)
    cfg = ExperimentConfig(
        name=model,
        model=model,
        data=DataConfig(samples=samples),
        train=TrainConfig(epochs=1, max_batches_per_epoch=3, batch_size=256),
        out=tmp_path / "run",
        registry=registry,
        registry_aoti=True,
    )
    run_experiment(cfg)
    (path, versions_then, one_request), *more = calls
    assert not more and versions_then == []  # compiled before the version was visible
    assert one_request  # as the service runs it: one request per batch
    assert path.parent == registry / AOTI_CACHE and path.exists()
    # the service: the published version, loaded as the model holder loads it, and a request
    # batch assembled from the online feature store
    version = ModelRegistry(registry).get(model)
    served = Ranker.load(version.model_path, feature_map=FeatureMap.load(samples)).eval()
    store = open_feature_store("memory", data, served.feature_map.seq_len + 5)
    example = example_request(store, served)
    assert aoti.package_path(served, example, registry / AOTI_CACHE, one_request=True) == path
    # a second publish of the same weights finds the package and compiles nothing
    aoti.precompile(served, registry / AOTI_CACHE)
    assert len(calls) == 1


def test_compile_aoti_needs_a_registry(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("name: mlp\nmodel: mlp\n")
    assert main(["train", "--config", str(config), "--compile-aoti"]) == 2
    assert "--compile-aoti needs a registry" in capsys.readouterr().err
    # the same in the file itself: refused, not silently left uncompiled
    config.write_text("name: mlp\nmodel: mlp\nregistry_aoti: true\n")
    assert main(["train", "--config", str(config)]) == 2
    assert "--compile-aoti needs a registry" in capsys.readouterr().err
