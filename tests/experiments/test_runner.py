"""``liverank experiment run`` end to end on a tiny grid: records, caches and resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from liverank.errors import ConfigError
from liverank.experiments.runner import RESULTS, read_results, run_grid
from liverank.experiments.spec import ExperimentSpec

ROOT = Path(__file__).resolve().parents[2]
QUICK = {"train.epochs": 1, "train.max_batches_per_epoch": 5, "train.batch_size": 256}


def _spec(tmp_path: Path, modes=("offline", "offline")) -> ExperimentSpec:
    raw = {
        "name": "tiny_grid",
        "claim": "smoke test of the runner",
        "baseline": "mlp",
        "headline": "din",
        "configs": {
            "mlp": {"config": str(ROOT / "configs/mlp.yaml"), "overrides": QUICK, "mode": modes[0]},
            "din": {"config": str(ROOT / "configs/din.yaml"), "overrides": QUICK, "mode": modes[1]},
        },
        "grid": {
            "model_seeds": [0],
            "world": {"preset": "tiny", "seeds": [3]},
            "variants": {"base": {"n_days": 3}},
        },
        "underpowered_ok": True,
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return ExperimentSpec.load(path)


@pytest.mark.slow
def test_tiny_grid_records_every_run_and_resumes_after_a_kill(tmp_path):
    spec, out = _spec(tmp_path), tmp_path / "out"
    assert run_grid(spec, out, progress=False) == 2
    records = read_results(out)
    assert [r["config"] for r in records] == ["mlp", "din"]
    assert {r["hash"] for r in records} == {k.hash(spec) for k in spec.runs()}
    for r in records:
        auc = r["metrics"]["all"]["ctr"]["auc"]
        assert 0.0 < auc < 1.0 and r["epochs_run"] == 1 and r["code"]
        # the eq. 4 fusion scored by NDCG of the fused relevance, beside ranking by p_ctr
        ranking = r["metrics"]["ranking"]
        assert 0.0 < ranking["p_ctr"]["ndcg@3"] <= 1.0 and 0.0 < ranking["fused"]["ndcg@3"] <= 1.0
        assert ranking["fused_minus_p_ctr"]["ndcg@3"] == pytest.approx(
            ranking["fused"]["ndcg@3"] - ranking["p_ctr"]["ndcg@3"]
        )
        assert [h["epoch"] for h in r["history"]] == [1]
        # the epoch's mean loss parts: the total is the mean training loss
        parts = r["history"][0]["parts"]
        assert parts["total"] == pytest.approx(r["history"][0]["loss"], rel=1e-6)
        assert 0.0 < parts["task/ctr"] < parts["total"]
    # one world and one sample set, shared by both runs
    assert len(list((tmp_path / "cache" / "worlds").iterdir())) == 1
    assert len(list((tmp_path / "cache" / "samples").iterdir())) == 1
    assert run_grid(spec, out, progress=False) == 0  # nothing left to run
    # a kill in the middle of writing the last record: that run is repeated, nothing else
    lines = (out / RESULTS).read_text().splitlines()
    (out / RESULTS).write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])
    assert run_grid(spec, out, progress=False) == 1
    again = [json.loads(line) for line in (out / RESULTS).read_text().splitlines()[-1:]]
    assert again[0]["config"] == "din"


@pytest.mark.slow
def test_stream_arms_train_prequentially_and_parallel_runs_write_every_record(tmp_path):
    spec, out = _spec(tmp_path, modes=("exit", "moment")), tmp_path / "out"
    assert run_grid(spec, out, progress=False, jobs=2, cpu_budget=2) == 2
    records = {r["stream_mode"]: r for r in read_results(out)}
    assert set(records) == {"exit", "moment"}
    for r in records.values():
        assert r["train_steps"] > 0 and r["threads"] == 1
        assert 0.0 < r["metrics"]["all"]["ctr"]["auc"] < 1.0
        assert "hour-avg" in r["metrics"]
        # the label latency of the stream the arm trained on
        assert r["label_latency"]["ctr"]["positives"] > 0
    # exit reports a click when the visit ends, moment within its 30 s window
    lat = {m: records[m]["label_latency"]["ctr"]["p90_s"] for m in records}
    assert lat["moment"] <= 30.0 < lat["exit"]
    # the scored (exit) rows are the same impressions in both arms
    n = {m: records[m]["metrics"]["all"]["ctr"]["count"] for m in records}
    assert n["exit"] == n["moment"]


def test_an_unknown_device_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        run_grid(_spec(tmp_path), tmp_path / "out", progress=False, device="tpu")


@pytest.mark.slow
def test_a_grid_split_by_configs_fills_one_results_file(tmp_path):
    """Two runners (``--configs``) on one results directory: each appends whole records and
    the second skips nothing of the first's and repeats none of it."""
    spec, out = _spec(tmp_path), tmp_path / "out"
    assert run_grid(spec, out, progress=False, configs=["din"], threads=1) == 1
    assert run_grid(spec, out, progress=False, configs=["mlp"], threads=1) == 1
    records = read_results(out)
    assert sorted(r["config"] for r in records) == ["din", "mlp"]
    assert all(r["threads"] == 1 for r in records)
    assert run_grid(spec, out, progress=False) == 0


@pytest.mark.slow
def test_an_offline_arm_on_shopping_samples_gets_its_own_cached_sample_set(tmp_path):
    """data.shopping arms (eLiveRec) build --shopping samples beside the plain ones and their
    records carry the shopping tasks, Prec@10 / NDCG@10 and the stay-time MSE."""
    raw = {
        "name": "tiny_shop",
        "claim": "smoke test of a shopping arm",
        "baseline": "din",
        "headline": "eliverec",
        "configs": {
            "din": {"config": str(ROOT / "configs/din.yaml"), "overrides": QUICK},
            "eliverec": {"config": str(ROOT / "configs/eliverec.yaml"), "overrides": QUICK},
        },
        "grid": {
            "model_seeds": [0],
            "world": {"preset": "tiny", "seeds": [3]},
            "variants": {"base": {"n_days": 3}},
        },
        "underpowered_ok": True,
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    spec, out = ExperimentSpec.load(path), tmp_path / "out"
    assert run_grid(spec, out, progress=False, threads=1) == 2
    names = sorted(p.name for p in (tmp_path / "cache" / "samples").iterdir())
    assert len(names) == 2 and names[1].endswith("-shop")
    rec = {r["config"]: r for r in read_results(out)}
    metrics = rec["eliverec"]["metrics"]["all"]
    assert {"ctr", "btr", "pctr", "log_stay_s"} <= set(metrics)
    assert 0.0 <= metrics["ctr"]["ndcg@10"] <= 1.0 and metrics["log_stay_s"]["mse"] > 0
    # what eLiveRec's loss is made of, per epoch: tasks, adaptive weights, regularisers, gates
    parts = rec["eliverec"]["history"][0]["parts"]
    assert {"task/ctr", "task/stay_ms", "weight/btr", "aux/eliverec.cor", "total"} <= set(parts)
    assert -1.0 <= parts["weight_cos/stay_ms"] <= 1.0
    assert 0.0 < parts["diag/eliverec/gate/static"] < 1.0


@pytest.mark.slow
def test_a_run_made_by_another_experiment_is_reused_not_repeated(tmp_path):
    """Same config file, overrides, world and seed = same content hash: a second experiment
    in a sibling directory copies the records under its own names instead of training."""
    first = _spec(tmp_path)
    assert run_grid(first, tmp_path / "results" / "first", progress=False) == 2
    raw = yaml.safe_load((tmp_path / "exp.yaml").read_text())
    raw["name"] = "second"
    raw["configs"] = {"base_mlp": raw["configs"]["mlp"], "din": raw["configs"]["din"]}
    raw["baseline"] = "base_mlp"
    (tmp_path / "second.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    second = ExperimentSpec.load(tmp_path / "second.yaml")
    out = tmp_path / "results" / "second"
    assert run_grid(second, out, progress=False) == 0  # nothing trained
    records = {r["config"]: r for r in read_results(out)}
    assert set(records) == {"base_mlp", "din"}
    assert {r["reused_from"] for r in records.values()} == {"first"}
    assert all(r["experiment"] == "second" for r in records.values())
    assert run_grid(second, out, progress=False) == 0 and len(read_results(out)) == 2


def test_peak_rss_is_the_runs_own_not_the_process_lifetime():
    """A runner process makes many runs: each record's peak RSS starts from a reset counter."""
    import numpy as np

    from liverank.experiments.runner import _peak_rss_gb, _reset_peak_rss

    big = np.ones(40_000_000)  # ~0.3 GB, then freed
    big[:] = 2.0
    before = _peak_rss_gb(False)
    del big
    if not _reset_peak_rss():
        pytest.skip("no /proc/self/clear_refs on this system (the lifetime peak is recorded)")
    assert _peak_rss_gb(True) < before - 0.2


@pytest.mark.slow
def test_mmbee_arms_train_offline_on_the_moment_streams_segment_rows(tmp_path):
    """data.rows moment (MMBee's segment-level first-only samples): the runner builds the
    moment stream's rows with segments, graph neighbours and long histories once, and the
    SIM-style baseline and SIM+MMBee both train on them (GraphCL pre-training included)."""
    raw = {
        "name": "tiny_mmbee",
        "claim": "smoke test of MMBee's arms",
        "baseline": "sim",
        "headline": "sim_mmbee",
        "configs": {
            "sim": {"config": str(ROOT / "configs/sim.yaml"), "overrides": QUICK},
            "sim_mmbee": {"config": str(ROOT / "configs/sim_mmbee.yaml"), "overrides": QUICK},
        },
        "metric": {"name": "auc", "task": "gtr", "slice": "all"},
        "grid": {
            "model_seeds": [0],
            "world": {"preset": "tiny", "seeds": [3]},
            "variants": {"base": {"n_days": 3}},
        },
        "underpowered_ok": True,
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    spec, out = ExperimentSpec.load(path), tmp_path / "out"
    assert run_grid(spec, out, progress=False, threads=1) == 2
    names = [p.name for p in (tmp_path / "cache" / "samples").iterdir()]
    assert len(names) == 1 and "-moment-L50-K1000-S5-G10" in names[0]
    rec = {r["config"]: r for r in read_results(out)}
    for config in ("sim", "sim_mmbee"):  # the tiny world's test day has too few gifts for AUC
        assert 0.0 <= rec[config]["metrics"]["all"]["ctr"]["auc"] <= 1.0
        assert "gtr" in rec[config]["metrics"]["all"]
