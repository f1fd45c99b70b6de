"""Training speed and quality against a peer library: liverank vs torch-rechub, side by side.

torch-rechub (``pip install -e .[peer]``, pinned in ``pyproject.toml``) is the open-source
multi-task ranking library a liverank user would otherwise pick. Both train the same
architectures on the same synthetic batches (``liverank.models.synthetic``: a planted signal),
with the same id inputs, embedding dimension, expert and tower sizes, tasks, batch size and
threads, in one process, interleaved:

===================  ==========================================================================
arm                  model
===================  ==========================================================================
``rechub mmoe``      ``torch_rechub.models.multi_task.MMOE`` over every sparse id field
``liverank mmoe``    ``sparse_features`` + MMoE backbone (4 experts [128, 64], towers [32])
``rechub ple``       ``torch_rechub.models.multi_task.PLE`` over every sparse id field
``liverank ple``     ``sparse_features`` + PLE backbone (2 levels, 1 specific + 2 shared
                     experts [64], towers [32])
``liverank ple+din`` the zoo's full ``ple``: the same plus DIN target attention over the live
                     and video sequences (``--seq-len`` items each); the peer has no such input
===================  ==========================================================================

Each library trains with its own optimiser: liverank SparseAdam (embedding rows a batch touches,
lr 0.02) + fused AdamW (dense, lr 0.002); torch-rechub its trainer's default, Adam over every
parameter (lr 0.002), which reads and writes every embedding row at every step.

Two phases per vocabulary scale (``small``: 50k users, 5k authors, 20k rooms, ~75k ids;
``large``: 1M users, 100k authors, 500k rooms):

1. quality: every arm trains from scratch on the same ``--budget`` batches, then CTR AUC on
   ``--eval-batches`` held-out batches (same world, other seed);
2. speed: ``--repeats`` interleaved rounds of ``--steps`` timed steps per arm (after warm-up);
   the best round is the headline (shared machines are noisy), the median is recorded.

Usage::

    pip install -e .[peer]
    python benchmarks/peer_throughput.py                       # both scales
    python benchmarks/peer_throughput.py --scales small --steps 10 --budget 20

Writes ``benchmarks/results/peer_throughput.json`` (``--out``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from liverank.eval.metrics import auc
from liverank.features.spec import FeatureMap
from liverank.models.backbones import MMoEBackboneConfig, PLEBackboneConfig
from liverank.models.ranker import ModuleSpec, Ranker, RankerConfig
from liverank.models.synthetic import synthetic_batches, synthetic_feature_map
from liverank.models.zoo import get_config
from liverank.train.optim import build_optimizers

SCALES = {
    "small": {"n_users": 50_000, "n_authors": 5_000, "n_rooms": 20_000},
    "large": {"n_users": 1_000_000, "n_authors": 100_000, "n_rooms": 500_000},
}
DIM = 16
LR_DENSE = 0.002
LR_SPARSE = 0.02

Batch = dict[str, torch.Tensor]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scales", nargs="+", default=list(SCALES), choices=list(SCALES))
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--seq-len", type=int, default=50)
    p.add_argument("--steps", type=int, default=20, help="timed steps per arm and round")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--budget", type=int, default=150, help="training batches before the AUC")
    p.add_argument("--eval-batches", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/peer_throughput.json"))
    return p.parse_args()


# ---------------------------------------------------------------------------- data
def feature_map(scale: str, seq_len: int) -> FeatureMap:
    s = SCALES[scale]
    fm = synthetic_feature_map(n_users=s["n_users"], n_authors=s["n_authors"], seq_len=seq_len)
    return fm.model_copy(update={"tables": {**fm.tables, "room": s["n_rooms"] + 1}})


def batches(fm: FeatureMap, n: int, batch_size: int, seed: int) -> list[Batch]:
    """Synthetic batches (planted signal) whose ``live_id`` is a room id of the ``room`` table:
    each author has a few rooms."""
    rooms = fm.tables["room"] - 1
    out = synthetic_batches(fm, n, batch_size, seed=seed)
    for b in out:
        r = b["live_id"] % 1_000  # 0..4: which of the author's rooms
        b["live_id"] = (b["author_id"] * 5 + r) % rooms + 1
    return out


# ---------------------------------------------------------------------------- arms
class Arm:
    """One model and its training step."""

    def __init__(self, name: str, model: torch.nn.Module, step: Callable[[Batch], float]) -> None:
        self.name, self.model, self.step = name, model, step

    def predict_ctr(self, batch: Batch) -> np.ndarray:
        raise NotImplementedError


class LiverankArm(Arm):
    def __init__(self, name: str, fm: FeatureMap, cfg: RankerConfig) -> None:
        model = Ranker(fm, cfg)
        opt = build_optimizers(model, lr_sparse=LR_SPARSE, lr_dense=LR_DENSE)

        def step(batch: Batch) -> float:
            opt.zero_grad()
            loss, _ = model.loss(batch, model(batch))
            loss.backward()
            opt.step()
            return float(loss.item())

        super().__init__(name, model, step)

    @torch.no_grad()
    def predict_ctr(self, batch: Batch) -> np.ndarray:
        self.model.eval()
        p = self.model.predict_proba(batch)["ctr"].numpy()
        self.model.train()
        return p


class RechubArm(Arm):
    def __init__(self, name: str, fm: FeatureMap, kind: str) -> None:
        from torch_rechub.basic.features import SparseFeature
        from torch_rechub.models.multi_task import MMOE, PLE

        fields = {**fm.sparse_fields, "live_id": "room"}
        self.fields = list(fields)
        self.tasks = list(fm.tasks)
        features = [
            SparseFeature(f, vocab_size=fm.tables[t], embed_dim=DIM) for f, t in fields.items()
        ]
        types = ["classification"] * len(self.tasks)
        towers = [{"dims": [32]} for _ in self.tasks]
        if kind == "mmoe":
            model = MMOE(features, types, 4, {"dims": [128, 64]}, towers)
        else:
            model = PLE(features, types, 2, 1, 2, {"dims": [64]}, towers)
        opt = torch.optim.Adam(model.parameters(), lr=LR_DENSE)  # the peer trainer's default
        bce = torch.nn.BCELoss()

        def step(batch: Batch) -> float:
            opt.zero_grad()
            y = model({f: batch[f] for f in self.fields})  # [B, T] probabilities
            loss = sum(bce(y[:, i], batch[t]) for i, t in enumerate(self.tasks))
            loss.backward()
            opt.step()
            return float(loss.item())

        super().__init__(name, model, step)

    @torch.no_grad()
    def predict_ctr(self, batch: Batch) -> np.ndarray:
        self.model.eval()
        y = self.model({f: batch[f] for f in self.fields})
        self.model.train()
        return y[:, self.tasks.index("ctr")].numpy()


def liverank_ids(name: str, backbone: MMoEBackboneConfig | PLEBackboneConfig) -> RankerConfig:
    """liverank with the peer's inputs: every sparse id field plus the room id, no sequences."""
    return RankerConfig(
        name=name,
        modules=[ModuleSpec(name="sparse_features")],
        backbone=backbone,
        embedding_dim=DIM,
        room_id_embedding=True,
    )


def make_arms(fm: FeatureMap) -> list[Arm]:
    ple_full = get_config("ple").model_copy(
        update={"embedding_dim": DIM, "room_id_embedding": True}
    )
    ple_full = RankerConfig.model_validate(ple_full.model_dump())
    return [
        RechubArm("rechub mmoe", fm, "mmoe"),
        LiverankArm(
            "liverank mmoe",
            fm,
            liverank_ids("mmoe_ids", MMoEBackboneConfig(n_experts=4, expert_hidden=[128, 64])),
        ),
        RechubArm("rechub ple", fm, "ple"),
        LiverankArm(
            "liverank ple",
            fm,
            liverank_ids(
                "ple_ids", PLEBackboneConfig(levels=2, n_specific=1, n_shared=2, expert_hidden=[64])
            ),
        ),
        LiverankArm("liverank ple+din", fm, ple_full),
    ]


# ---------------------------------------------------------------------------- phases
def quality(arm: Arm, train: list[Batch], held: list[Batch]) -> dict[str, float]:
    start = time.perf_counter()
    losses = [arm.step(b) for b in train]
    seconds = time.perf_counter() - start
    y = np.concatenate([b["ctr"].numpy() for b in held])
    p = np.concatenate([arm.predict_ctr(b) for b in held])
    return {
        "ctr_auc": float(auc(y, p)),
        "final_loss": float(np.mean(losses[-10:])),
        "budget_samples_per_s": len(train) * len(train[0]["ctr"]) / seconds,
    }


def speed(arms: list[Arm], data: list[Batch], steps: int, repeats: int) -> dict[str, list[float]]:
    rounds: dict[str, list[float]] = {a.name: [] for a in arms}
    for a in arms:  # warm-up (allocator, lazily built optimiser state)
        for b in data[:3]:
            a.step(b)
    for _ in range(repeats):
        for a in arms:
            start = time.perf_counter()
            for i in range(steps):
                a.step(data[i % len(data)])
            rounds[a.name].append(steps * len(data[0]["ctr"]) / (time.perf_counter() - start))
    return rounds


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    console = Console()
    results = []
    for scale in args.scales:
        fm = feature_map(scale, args.seq_len)
        train = batches(fm, args.budget, args.batch_size, seed=1)
        held = batches(fm, args.eval_batches, args.batch_size, seed=2)
        torch.manual_seed(0)
        arms = make_arms(fm)
        for a in arms:
            q = quality(a, train, held)
            results.append({"scale": scale, "arm": a.name, **q})
            console.print(f"{scale} {a.name}: CTR AUC {q['ctr_auc']:.4f}")
        rounds = speed(arms, train, args.steps, args.repeats)
        for a in arms:
            rec = next(r for r in results if r["scale"] == scale and r["arm"] == a.name)
            rec["samples_per_s_best"] = max(rounds[a.name])
            rec["samples_per_s_median"] = statistics.median(rounds[a.name])
            rec["rounds"] = rounds[a.name]
        del arms
    for scale in args.scales:
        rows = [r for r in results if r["scale"] == scale]
        by = {r["arm"]: r for r in rows}
        s = SCALES[scale]
        table = Table(
            title=f"{scale}: {s['n_users']:,} users, {s['n_authors']:,} authors, "
            f"{s['n_rooms']:,} rooms; batch {args.batch_size}, {args.threads} thread(s)"
        )
        for col in ("arm", "samples/s (best)", "vs peer", "CTR AUC"):
            table.add_column(col, justify="right")
        for r in rows:
            peer = "rechub mmoe" if "mmoe" in r["arm"] else "rechub ple"
            ratio = r["samples_per_s_best"] / by[peer]["samples_per_s_best"]
            r["ratio_vs_peer"] = ratio
            table.add_row(
                r["arm"], f"{r['samples_per_s_best']:,.0f}", f"{ratio:.2f}x", f"{r['ctr_auc']:.4f}"
            )
        console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    import torch_rechub

    args.out.write_text(
        json.dumps(
            {
                "benchmark": "peer_throughput",
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                "torch": torch.__version__,
                "torch_rechub": getattr(torch_rechub, "__version__", "0.9.0"),
                "batch_size": args.batch_size,
                "seq_len": args.seq_len,
                "threads": args.threads,
                "steps": args.steps,
                "repeats": args.repeats,
                "budget_batches": args.budget,
                "eval_batches": args.eval_batches,
                "scales": {k: SCALES[k] for k in args.scales},
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
