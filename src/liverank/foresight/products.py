"""Forecasting the next product's category (LiveForesighter section 2.3, Eq. 4-5).

Examples. Every product a room introduces (``room_products``: ``live_id``, ``ts``,
``product_id``) is one example: the input is the room's previous ``L`` products (strictly
before ``ts``, from :meth:`~liverank.features.store.RoomStatsStore.products_batch`, each
``[product, cat1, cat2, cat3]``, most recent last) and the target the introduced product's
finest category ``cat3``. A room's first product has no history: it is left out (the
baselines have nothing to say about it either), and counted. Days split as for the statistic
forecaster (by the introduction's day).

Model: :class:`~liverank.models.layers.forecast.ProductTransformer` with a softmax over the
finest categories, trained with cross entropy (Eq. 4), early stopping on the validation loss.
Baselines (Table 6): the room's most frequent finest category so far (ties: the most recent)
and the latest one. Metric: hit rate at 1 and at 5 (the model's top 5; a baseline's top 5 is
its ranking of the room's past categories: by frequency, or by recency).

A trained model is a :class:`ProductForecaster` (``liverank foresight train --config
configs/foresight/products.yaml --out DIR``: :func:`train_and_save`); :func:`next_categories`
reads a room's products from a :class:`~liverank.features.store.RoomStatsSource` as of a time
and gives the most likely next finest categories (the service's ``GET /rooms/{id}/forecast``
and ``liverank foresight show``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from liverank.data.io import has_table, read_meta, read_table
from liverank.errors import ConfigError, DataValidationError
from liverank.features.encoders import MS_PER_DAY
from liverank.features.store import RoomStatsSource, RoomStatsStore
from liverank.foresight.statistics import Examples, TrainSplit
from liverank.models.layers.forecast import ProductTransformer

log = logging.getLogger(__name__)
HITS_AT = (1, 5)
MODEL_FILE = "product_forecaster.pt"
CONFIG_FILE = "product_forecaster.json"


class ProductConfig(TrainSplit):
    """Settings of the next-category model (validated)."""

    target: Literal["products"] = "products"
    length: int = Field(20, ge=1, description="L: previous products read")
    #: embedding table sizes of cat1 / cat2 / cat3 (the paper's 50 / 1,000 / 5,000); the
    #: product table is sized from the data
    categories: tuple[int, int, int] = (50, 1000, 5000)
    dim: int = Field(32, ge=1)
    layers: int = Field(1, ge=1)
    heads: int = Field(2, ge=1)
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(128, ge=1)
    patience: int = Field(3, ge=1)
    method: Literal["foresighter", "most_frequent", "latest"] = "foresighter"


@dataclass(frozen=True)
class ProductExamples(Examples):
    """``seq [M, L, 4]`` int64 histories and ``target [M]`` finest categories; ``ts`` is the
    introduction time."""

    seq: np.ndarray
    target: np.ndarray


def build_examples(data: str | Path, cfg: ProductConfig) -> tuple[ProductExamples, int]:
    """The examples of a dataset (module doc) and the number of first products left out."""
    if not (has_table(data, "room_products") and has_table(data, "products")):
        raise DataValidationError(
            "next-product forecasting needs the room_products and products tables",
            file=str(data),
        )
    meta = read_meta(data)
    store = RoomStatsStore.from_dataset(data)
    intro = read_table(data, "room_products").sort("live_id", "ts")
    catalog = read_table(data, "products")
    cat3 = dict(zip(catalog["product_id"].to_list(), catalog["cat3"].to_list(), strict=True))
    live = intro["live_id"].to_numpy()
    ts = intro["ts"].to_numpy()
    products = intro["product_id"].to_numpy()
    unknown = [p for p in np.unique(products).tolist() if p not in cat3]
    if unknown:
        raise DataValidationError(
            f"room_products names {len(unknown)} products the products table does not have "
            f"(e.g. {unknown[0]})",
            file=str(data),
            column="product_id",
        )
    seq, _ = store.products_batch(live, ts, cfg.length)  # [M, L, 4]
    has_history = seq[:, -1, 0] > 0
    target = np.array([cat3[p] for p in products.tolist()], dtype=np.int64)
    keep = np.flatnonzero(has_history)
    examples = ProductExamples(
        seq=seq[keep],
        target=target[keep],
        live_id=live[keep],
        ts=ts[keep],
        day=(ts[keep] - meta.start_ts) // MS_PER_DAY,
    )
    return examples, int((~has_history).sum())


def baseline_ranking(seq: np.ndarray, method: str, top: int) -> np.ndarray:
    """``[M, top]`` finest categories ranked by the room's history (``seq [M, L, 4]``): by
    frequency (ties: the most recent first) or by recency; 0 pads a shorter history."""
    out = np.zeros((len(seq), top), dtype=np.int64)
    cats = seq[..., 3]  # [M, L] most recent last, 0 = padding
    for i in range(len(seq)):  # M is a few thousand; L is small
        row = cats[i][cats[i] > 0][::-1]  # most recent first
        seen, order = np.unique(row, return_index=True)  # first (most recent) position of each
        if method == "latest":
            ranked = seen[np.argsort(order)]
        else:  # most_frequent
            counts = np.array([(row == c).sum() for c in seen])
            ranked = seen[np.lexsort((order, -counts))]
        ranked = ranked[:top]
        out[i, : ranked.size] = ranked
    return out


def hit_rates(ranked: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """``{hit@k}``: the share of examples whose target is among the first ``k`` of ``ranked``."""
    return {
        f"hit@{k}": float((ranked[:, :k] == target[:, None]).any(axis=1).mean())
        if len(target)
        else math.nan
        for k in HITS_AT
    }


def _sizes(cfg: ProductConfig, examples: ProductExamples, n_products: int) -> tuple[int, ...]:
    sizes = (n_products, *cfg.categories)
    highest = [int(examples.seq[..., i].max(initial=0)) for i in range(4)]
    highest[3] = max(highest[3], int(examples.target.max(initial=0)))
    for name, size, top in zip(("product", "cat1", "cat2", "cat3"), sizes, highest, strict=True):
        if top >= size:
            raise ConfigError(f"{name} ids reach {top} but its table has {size} rows; raise it")
    return sizes


def fit(
    train: ProductExamples, val: ProductExamples, cfg: ProductConfig, n_products: int
) -> tuple[ProductTransformer, list[dict[str, float]]]:
    """Cross-entropy training (Eq. 4) with early stopping on the validation loss."""
    if len(train) == 0 or len(val) == 0:
        raise DataValidationError("no training or validation product examples")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = ProductTransformer(
        _sizes(cfg, train, n_products), cfg.length, cfg.dim, cfg.layers, cfg.heads
    )
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    history: list[dict[str, float]] = []
    best, best_state, since = math.inf, None, 0
    val_seq, val_y = torch.from_numpy(val.seq), torch.from_numpy(val.target)
    for epoch in range(cfg.epochs):
        start = time.perf_counter()
        model.train()
        order = rng.permutation(len(train))
        total = 0.0
        for s in range(0, len(order), cfg.batch_size):
            rows = order[s : s + cfg.batch_size]
            logits, _ = model(torch.from_numpy(train.seq[rows]))
            loss = F.cross_entropy(logits, torch.from_numpy(train.target[rows]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(rows)
        model.eval()
        with torch.no_grad():
            val_loss = float(F.cross_entropy(model(val_seq)[0], val_y))
        history.append(
            {
                "epoch": epoch,
                "train_ce": total / len(train),
                "val_ce": val_loss,
                "seconds": time.perf_counter() - start,
            }
        )
        if val_loss < best:
            best, since = val_loss, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            since += 1
            if since >= cfg.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model, history


def run_arm(world: str | Path, cfg: ProductConfig) -> dict[str, Any]:
    """One experiment arm: hit rates of ``cfg.method`` on the test days' introductions."""
    examples, firsts = build_examples(world, cfg)
    train, val, test = examples.split(cfg.val_days, cfg.test_days)
    top = max(HITS_AT)
    history: list[dict[str, float]] = []
    if cfg.method == "foresighter":
        n_products = int(read_table(world, "products")["product_id"].max()) + 1
        model, history = fit(train, val, cfg, n_products)
        with torch.no_grad():
            logits, _ = model(torch.from_numpy(test.seq))
        ranked = torch.topk(logits, top, dim=1).indices.numpy()
    else:
        ranked = baseline_ranking(test.seq, cfg.method, top)
    metrics = hit_rates(ranked, test.target) | {"count": float(len(test))}
    trained = sum(h["seconds"] for h in history)
    return {
        "metrics": {"all": {"next_category": metrics}},
        "history": history,
        "epochs_run": len(history) or None,
        "best_epoch": int(np.argmin([h["val_ce"] for h in history])) if history else None,
        "train_samples_per_s": len(train) * len(history) / trained if trained else None,
        "examples": {
            "train": len(train),
            "val": len(val),
            "test": len(test),
            "first_products_left_out": firsts,
        },
    }


class ProductForecaster:
    """A trained :class:`ProductTransformer` with its config and table sizes; save / load."""

    def __init__(self, model: ProductTransformer, cfg: ProductConfig, sizes: tuple[int, ...]):
        self.model, self.cfg, self.sizes = model, cfg, tuple(int(x) for x in sizes)

    @torch.no_grad()
    def probabilities(self, seq: np.ndarray) -> np.ndarray:
        """``seq [M, L, 4]`` (most recent last, 0 = padding) -> ``[M, C3]`` next-category
        probabilities (eval mode). Ids beyond the trained tables read as padding (an unseen
        product or category has no embedding)."""
        self.model.eval()
        x = np.asarray(seq, dtype=np.int64).copy()  # [M, L, 4]
        for i, size in enumerate(self.sizes):
            x[..., i] = np.where(x[..., i] < size, x[..., i], 0)
        logits, _ = self.model(torch.from_numpy(x))
        return logits.softmax(-1).numpy()

    def save(self, out: str | Path) -> None:
        root = Path(out)
        root.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), root / MODEL_FILE)
        meta = {"config": self.cfg.model_dump(), "sizes": list(self.sizes)}
        (root / CONFIG_FILE).write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, out: str | Path) -> ProductForecaster:
        root = Path(out)
        try:
            meta = json.loads((root / CONFIG_FILE).read_text())
            cfg = ProductConfig(**meta["config"])
            sizes = tuple(int(x) for x in meta["sizes"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise DataValidationError(
                f"not a next-product forecaster directory ({exc!r}); train one with "
                "`liverank foresight train --config configs/foresight/products.yaml`",
                file=str(root / CONFIG_FILE),
            ) from exc
        model = ProductTransformer(sizes, cfg.length, cfg.dim, cfg.layers, cfg.heads)
        try:
            model.load_state_dict(torch.load(root / MODEL_FILE, weights_only=True))
        except (OSError, RuntimeError, ValueError) as exc:
            raise DataValidationError(
                f"cannot load the next-product weights: {exc}", file=str(root / MODEL_FILE)
            ) from exc
        return cls(model, cfg, sizes)


def train_and_save(data: str | Path, out: str | Path | None, cfg: ProductConfig) -> dict[str, Any]:
    """Train on ``data``'s introductions, compare with the two baselines on the test days
    (hit@1 / hit@5), write the forecaster and ``report.json`` to ``out``."""
    if cfg.method != "foresighter":
        raise ConfigError(f"method '{cfg.method}' is a baseline; nothing to train")
    examples, firsts = build_examples(data, cfg)
    train, val, test = examples.split(cfg.val_days, cfg.test_days)
    n_products = int(read_table(data, "products")["product_id"].max()) + 1
    model, history = fit(train, val, cfg, n_products)
    forecaster = ProductForecaster(model, cfg, _sizes(cfg, train, n_products))
    top = max(HITS_AT)
    ranked = np.argsort(-forecaster.probabilities(test.seq), axis=1)[:, :top]
    report = {
        "data": str(data),
        "config": cfg.model_dump(),
        "examples": {
            "train": len(train),
            "val": len(val),
            "test": len(test),
            "first_products_left_out": firsts,
        },
        "test_days": sorted(int(d) for d in np.unique(test.day)),
        "history": history,
        "test": {
            "foresighter": hit_rates(ranked, test.target),
            **{
                m: hit_rates(baseline_ranking(test.seq, m, top), test.target)
                for m in ("most_frequent", "latest")
            },
        },
    }
    if out is not None:
        forecaster.save(out)
        (Path(out) / "report.json").write_text(json.dumps(report, indent=2))
    return report


def next_categories(
    forecaster: ProductForecaster,
    store: RoomStatsSource,
    live_id: int,
    as_of_ts: int,
    top: int = 5,
) -> dict[str, Any]:
    """A room's products before ``as_of_ts`` (point in time) and its ``top`` most likely next
    finest categories: ``{recent: [[product, cat1, cat2, cat3], ...] (most recent last),
    next: [{cat3, probability}], known}``. A room that has shown no product yet has nothing
    to go on: ``next`` is empty (as the ranker's module gives it a zero distribution)."""
    seq, known = store.products_batch(
        np.array([live_id]), np.array([as_of_ts]), forecaster.cfg.length
    )  # [1, L, 4]
    recent = [row for row in seq[0].tolist() if row[0] > 0]
    if not recent:
        return {"recent": [], "next": [], "known": bool(known[0])}
    prob = forecaster.probabilities(seq)[0]  # [C3]
    best = np.argsort(-prob, kind="stable")[:top]
    return {
        "recent": recent,
        "next": [{"cat3": int(c), "probability": float(prob[c])} for c in best],
        "known": bool(known[0]),
    }
