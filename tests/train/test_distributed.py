"""Data-parallel training (DDP on gloo, 2 ranks on the CPU) against single-process references.

Tolerance. A data-parallel step differs from its single-process reference (the same two
per-rank batches, loss = their mean) only by float32 rounding: DDP sums the ranks' dense
gradients and divides by 2 where autograd forms 0.5 g0 + 0.5 g1, and the sparse rows are summed
in another order; each is one or two ulps (~1e-7 relative). Adam then divides by sqrt(v), which
keeps a relative error relative, so after K steps parameters drift by ~K x lr x 1e-7 and
gradients by ~1e-7 relative. Measured here (``ple``, 6 steps): parameters within 5.6e-8,
gradients within 1.5e-8 (largest gradient 0.48). We assert 1e-5 (parameters) and 1e-6
(gradients), ~100x the measured drift and far below what a real mistake moves; measured by
breaking the code on purpose: without the sparse synchronisation parameters differ by 0.12 and
gradients by 4e-3; summing the ranks' sparse gradients instead of averaging them, 0.06 and 0.04.
Gradients are compared as well as parameters because Adam is blind to a gradient's scale.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from liverank.config import DataConfig, ExperimentConfig, TrainConfig
from liverank.data.loader import SampleSet
from liverank.data.partition import user_rank, user_rank_expr
from liverank.data.samples import build_samples
from liverank.data.sim import SimConfig, simulate
from liverank.models.ranker import Ranker, RankerConfig
from liverank.models.zoo import get_config
from liverank.stream.samples import build_stream_samples
from liverank.train import distributed as ddp
from liverank.train.experiment import load_splits
from liverank.train.optim import build_optimizers
from liverank.train.trainer import Trainer

WORLD = 2
STEPS = 6
BATCH = 256  # global; 128 per rank


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    simulate(SimConfig.preset("tiny", seed=3, n_days=3), root / "dataset", progress=False)
    build_samples(root / "dataset", root / "samples", seq_len=20, progress=False)
    return root / "samples"


def _cfg(samples: Path, out: Path) -> ExperimentConfig:
    return ExperimentConfig(
        name="ple",
        data=DataConfig(samples=samples),
        model="ple",
        train=TrainConfig(
            epochs=1,
            batch_size=BATCH,
            seed=0,
            progress=False,
            threads=1,
            max_batches_per_epoch=STEPS,
        ),
        out=out,
    )


# ---------------------------------------------------------------------------- partition
def test_user_rank_is_the_same_in_numpy_and_polars_and_balanced() -> None:
    ids = np.concatenate([np.arange(0, 20_000, 2), np.arange(1_000_000, 1_010_000)])
    for world in (1, 2, 3, 8):
        ranks = user_rank(ids, world)
        via_polars = pl.DataFrame({"user_id": ids}).select(user_rank_expr(world))["user_id"]
        np.testing.assert_array_equal(ranks, via_polars.to_numpy())
        share = np.bincount(ranks, minlength=world) / len(ids)
        assert np.all(np.abs(share - 1 / world) < 0.02), share  # even ids too spread evenly
    with pytest.raises(ValueError, match="world size"):
        user_rank(ids, 0)


def test_partitioned_loads_cover_the_samples_once_by_user(samples: Path) -> None:
    whole = SampleSet.load(samples)
    parts = [SampleSet.load(samples, partition=(r, WORLD)) for r in range(WORLD)]
    ids = np.concatenate([p["sample_id"] for p in parts])
    assert len(ids) == len(whole) and len(np.unique(ids)) == len(whole)
    users = [set(p["user_id"].tolist()) for p in parts]
    assert not users[0] & users[1]  # a user's rows live on one rank
    for r, p in enumerate(parts):
        assert np.all(user_rank(p["user_id"], WORLD) == r)
    with pytest.raises(ValueError, match="outside"):
        SampleSet.load(samples, partition=(2, 2))


def test_rank_order_with_groups_keeps_requests_together() -> None:
    groups = np.repeat(np.arange(6), [3, 1, 2, 4, 1, 2])  # [13] request of each row
    order = ddp.rank_order(13, 13, seed=2, rank=1, groups=groups)
    assert sorted(order.tolist()) == list(range(13))
    changes = int((np.diff(groups[order]) != 0).sum())
    assert changes == 5  # six requests, each one contiguous run


def test_rank_order_pads_a_short_rank_to_the_longest() -> None:
    order = ddp.rank_order(5, 12, seed=1, rank=0)
    assert len(order) == 12 and set(order[:5].tolist()) == set(range(5))
    assert np.all((order >= 0) & (order < 5))
    with pytest.raises(ValueError, match="no training rows"):
        ddp.rank_order(0, 3, seed=1, rank=1)


# ---------------------------------------------------------------------------- 2-rank runs
def _init(rank: int, store: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)


def _sparse_worker(rank: int, store: str, out: str) -> None:
    _init(rank, store)
    try:
        torch.manual_seed(0)
        used = nn.Embedding(10, 3, padding_idx=0, sparse=True)
        unused_on_1 = nn.Embedding(6, 2, padding_idx=0, sparse=True)
        # rank 0 looks up real rows (one twice); rank 1 only the padding row of ``used`` and
        # nothing of ``unused_on_1``: an empty sparse gradient and a missing one
        ids = torch.tensor([1, 4, 4, 7]) if rank == 0 else torch.zeros(4, dtype=torch.int64)
        loss = (used(ids) * torch.arange(1.0, 4.0)).sum()
        if rank == 0:
            loss = loss + unused_on_1(torch.tensor([2, 5])).pow(2).sum()
        loss.backward()
        assert rank == 0 or used.weight.grad._nnz() == 0  # the case that breaks gloo's DDP
        ddp.sync_sparse_grads([used.weight, unused_on_1.weight])
        grads = [p.grad.to_dense() for p in (used.weight, unused_on_1.weight)]
        torch.save(grads, f"{out}/grads-{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_sparse_sync_averages_over_ranks_with_a_padding_only_rank(tmp_path: Path) -> None:
    mp.spawn(_sparse_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD)
    g0, g1 = (torch.load(tmp_path / f"grads-{r}.pt") for r in range(WORLD))
    for a, b in zip(g0, g1, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # every rank holds the same gradient
    expect_used = torch.zeros(10, 3)
    expect_used[[1, 4, 7]] = torch.tensor([1.0, 2.0, 1.0]).unsqueeze(1) * torch.arange(1.0, 4.0)
    torch.testing.assert_close(g0[0], expect_used / WORLD)  # rank 1 gave zero rows: a mean of 2
    assert torch.all(g0[1][[2, 5]] != 0) and g0[1][0].abs().sum() == 0


def _train_worker(rank: int, store: str, samples: str, out: str) -> None:
    _init(rank, store)
    try:
        cfg = _cfg(Path(samples), Path(out) / "run")
        fmap, train, _, _ = load_splits(cfg, (rank, WORLD))
        torch.manual_seed(cfg.train.seed)
        model = Ranker(fmap, get_config("ple"))
        trainer = Trainer(cfg, fmap, model, ddp.DistContext(rank, WORLD, "gloo"))
        trainer.train_epoch(train, epoch=1)
        # the last step's gradients stay on the parameters (zeroed at the next step's start)
        grads = {n: p.grad.to_dense() for n, p in model.named_parameters() if p.grad is not None}
        torch.save({"state": model.state_dict(), "grads": grads}, f"{out}/rank-{rank}.pt")
    finally:
        dist.destroy_process_group()


def _reference(samples: Path, tmp: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One process, each step on the two ranks' batches with loss = their mean."""
    cfg = _cfg(samples, tmp / "ref")
    trains = [load_splits(cfg, (r, WORLD))[1] for r in range(WORLD)]
    fmap = trains[0].feature_map
    torch.manual_seed(cfg.train.seed)
    torch.set_num_threads(1)
    model = Ranker(fmap, get_config("ple"))
    t = cfg.train
    optim = build_optimizers(model, lr_sparse=t.lr_sparse, lr_dense=t.lr_dense)
    n_rows, bs = max(len(d) for d in trains), BATCH // WORLD
    seed = t.seed * 1000 + 1  # epoch 1
    orders = [ddp.rank_order(len(d), n_rows, seed, r) for r, d in enumerate(trains)]
    model.train()
    for k in range(STEPS):
        optim.zero_grad()
        losses = []
        for d, order in zip(trains, orders, strict=True):
            batch = d.batch(np.sort(order[k * bs : (k + 1) * bs]))
            losses.append(model.loss(batch, model(batch))[0])
        (sum(losses) / WORLD).backward()
        optim.step()
    grads = {n: p.grad.to_dense() for n, p in model.named_parameters() if p.grad is not None}
    return model.state_dict(), grads


def test_two_rank_ddp_training_matches_the_single_process_reference(
    samples: Path, tmp_path: Path
) -> None:
    mp.spawn(
        _train_worker, args=(str(tmp_path / "store"), str(samples), str(tmp_path)), nprocs=WORLD
    )
    ranks = [torch.load(tmp_path / f"rank-{r}.pt") for r in range(WORLD)]
    state, grads = _reference(samples, tmp_path)
    for name, value in ranks[0]["state"].items():  # the replicas are identical
        torch.testing.assert_close(ranks[1]["state"][name], value, rtol=0, atol=0)
    for name, value in state.items():
        torch.testing.assert_close(ranks[0]["state"][name], value, rtol=0, atol=1e-5, msg=name)
    assert set(grads) == set(ranks[0]["grads"])
    for name, g in grads.items():
        torch.testing.assert_close(ranks[0]["grads"][name], g, rtol=0, atol=1e-6, msg=name)
    assert any(g.abs().max() > 1e-3 for g in grads.values())  # the comparison is not vacuous


@pytest.mark.parametrize("loader", ["memory", "stream"])
def test_cli_nproc_2_trains_with_torchrun_and_rank_0_writes_one_run(
    samples: Path, tmp_path: Path, loader: str
) -> None:
    """``liverank train --nproc 2`` (rows in memory, or streamed from Parquet): every test
    sample predicted once, a checkpoint that loads and evaluates to the run's own numbers in a
    single process."""
    from liverank.eval.result import EvalResult
    from liverank.eval.summary import evaluate_checkpoint

    config = tmp_path / "ple.yaml"
    config.write_text(
        f"name: ple\ndata: {{samples: {samples}, loader: {loader}, buffer_rows: 1000}}\n"
        "model: ple\n"
        f"train: {{epochs: 2, batch_size: 256, progress: false}}\nout: {tmp_path / 'run'}\n"
    )
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "liverank.cli", "train", "--config", str(config), "--nproc", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    history = (run / "history.json").read_text()
    assert '"world_size": 2' in history
    pred = pl.read_parquet(run / "predictions.parquet")
    _, _, _, test = load_splits(_cfg(samples, tmp_path / "x"))
    assert pred.height == len(test) and pred["sample_id"].n_unique() == len(test)
    model = Ranker.load(run / "checkpoints" / "best.pt")  # written once, by rank 0
    assert model.tasks
    again = evaluate_checkpoint(run / "checkpoints" / "best.pt", samples)
    saved = EvalResult.from_json((run / "metrics.json").read_text())
    assert again.value("ctr", "auc") == pytest.approx(saved.value("ctr", "auc"), abs=1e-6)


def test_cli_nproc_reports_a_failing_rank_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(f"name: ple\ndata: {{samples: {tmp_path / 'none'}}}\nmodel: ple\n")
    cmd = [sys.executable, "-m", "liverank.cli", "train", "--config", str(config), "--nproc", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "failed with exit code 2" in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------- streaming
@pytest.fixture(scope="module")
def moment_stream(samples: Path) -> Path:
    out = samples.parent / "moment"
    build_stream_samples(samples.parent / "dataset", out, "moment", progress=False)
    return out


def _stream_worker(rank: int, port: int, stream: str, out: str) -> None:
    from liverank.train.stream_run import run_stream_training

    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_WORLD_SIZE=str(WORLD),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    try:
        run = run_stream_training(
            stream, _policy_ple(), "moment", f"{out}/run" if rank == 0 else None, **STREAM_ARGS
        )
        torch.save(
            {"state": run.model.state_dict(), "summary": run.summary}, f"{out}/rank-{rank}.pt"
        )
    finally:
        ddp.shutdown()


#: 10-minute slices: fewer all-reduces than the default minute on this 3-day world
STREAM_ARGS = {"slice_ms": 600_000, "batch_size": 512, "warmup_ms": 0, "threads": 2}


def _policy_ple() -> RankerConfig:
    """``ple`` with a frequency filter and a 6-hour time to live on user and room ids: the
    ranks must also agree on which ids they admit and evict."""
    policy = {"min_count": 2, "ttl_ms": 6 * 3_600_000}
    spec = {**get_config("ple").model_dump(), "id_policies": {"user": policy, "author": policy}}
    return RankerConfig.model_validate(spec)


def test_two_rank_stream_training_partitions_users_and_keeps_replicas_equal(
    moment_stream: Path, tmp_path: Path
) -> None:
    """Test-then-train on 2 ranks: every impression is scored once (by its user's rank), the
    replicas end identical (weights, and the id policies' counts: admission and eviction are
    agreed at every slice), and the model is as good as the single-process one.

    The quality bound: the ranks' steps see the same rows per slice as one process, split in
    two half-batches whose gradients are weighted by their share of the rows (exactly the
    single-process gradient for a per-row mean loss; the masked per-task means of the moment
    loss make it approximate). Measured: pooled CTR AUC 0.8189 on 2 ranks and 0.8189 in one
    process (0.8243 vs 0.8239 without the id policies); we allow 0.01 (an untrained model
    scores 0.539 on this world)."""
    import socket

    from liverank.train.stream_run import run_stream_training

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_stream_worker, args=(port, str(moment_stream), str(tmp_path)), nprocs=WORLD)
    ranks = [torch.load(tmp_path / f"rank-{r}.pt", weights_only=False) for r in range(WORLD)]
    for name, value in ranks[0]["state"].items():
        torch.testing.assert_close(ranks[1]["state"][name], value, rtol=0, atol=0, msg=name)
    single = run_stream_training(moment_stream, _policy_ple(), "moment", None, **STREAM_ARGS)
    assert single.summary["evicted_rows"]  # the policies acted
    pred = pl.read_parquet(tmp_path / "run" / "predictions.parquet")
    assert pred.height == single.result.predictions.height
    assert pred["sample_id"].n_unique() == pred.height
    both = ranks[0]["summary"]
    assert both["world_size"] == WORLD and both["train_rows"] == single.summary["train_rows"]
    got, want = both["tasks"]["ctr"]["auc_pooled"], single.summary["tasks"]["ctr"]["auc_pooled"]
    print(f"pooled ctr auc: 2 ranks {got:.4f}, one process {want:.4f}")
    assert abs(got - want) < 0.01, (got, want)
