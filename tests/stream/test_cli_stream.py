"""``liverank stream``: the CLI over the runner, including a stop and a resume."""

from __future__ import annotations

from pathlib import Path

import pytest

from liverank.cli import main
from liverank.data.io import read_meta, read_table
from liverank.data.visits import reconstruct_visits
from liverank.stream.reporting import emit_rows
from liverank.stream.sources import read_sink_dir


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from liverank.data.sim import SimConfig, simulate

    root = tmp_path_factory.mktemp("cli_stream_data")
    simulate(SimConfig.preset("tiny", seed=2), root, progress=False)
    return root


def _expected_ids(root: Path, mode: str) -> set[int]:
    imp, ev, rooms = (read_table(root, n) for n in ("live_impressions", "live_events", "rooms"))
    rows = emit_rows(reconstruct_visits(imp, ev, rooms, read_meta(root).long_view_ms), mode)
    return set(rows["sample_id"].to_list())


def test_stream_command_stops_and_resumes_to_the_full_sample_set(
    dataset: Path, tmp_path: Path
) -> None:
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    base = ["stream", "--data", str(dataset), "--mode", "moment", "--out", str(out)]
    ckpt_args = ["--checkpoint", str(ckpt), "--checkpoint-every-rows", "1000"]
    assert main([*base, *ckpt_args, "--chunk-rows", "500", "--max-rows", "2500"]) == 0
    partial = read_sink_dir(out / "samples")
    assert 0 < len(partial) < len(_expected_ids(dataset, "moment"))
    # a second run without --resume refuses to overwrite the checkpoints
    assert main([*base, *ckpt_args]) == 2
    assert main([*base, *ckpt_args, "--chunk-rows", "700", "--resume"]) == 0
    got = read_sink_dir(out / "samples")
    assert got["sample_id"].n_unique() == len(got)
    assert set(got["sample_id"].to_list()) == _expected_ids(dataset, "moment")


def test_stream_command_names_a_missing_dataset(tmp_path: Path) -> None:
    code = main(["stream", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert code == 2
    assert not (tmp_path / "o" / "samples").exists() or not any(
        (tmp_path / "o" / "samples").glob("*.parquet")
    )


def test_train_stream_command_runs_prequentially_and_writes_its_summary(
    dataset: Path, tmp_path: Path
) -> None:
    import json

    samples = tmp_path / "moment"
    assert (
        main(["build-samples", "--data", str(dataset), "--out", str(samples), "--mode", "moment"])
        == 0
    )
    out = tmp_path / "run"
    args = ["train-stream", "--samples", str(samples), "--model", "mlp", "--mode", "moment"]
    assert main([*args, "--out", str(out), "--warmup-hours", "0", "--batch-size", "256"]) == 0
    summaries = list(out.rglob("*.json"))
    assert summaries, "train-stream wrote no summary"
    text = " ".join(p.read_text() for p in summaries)
    assert '"mode": "moment"' in text
    summary = next(json.loads(p.read_text()) for p in summaries if "tasks" in p.read_text())
    assert 0.5 < summary["tasks"]["ctr"]["auc_pooled"] <= 1.0
