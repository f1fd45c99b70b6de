"""The neighbour store: MMBee's "pre-requested expansion" (section 5.4).

Rather than walking the graph at request time, the metapath-guided neighbours of every user and
author are computed offline (:mod:`.metapath`) and stored, so the ranker only looks them up.

Layout of a store directory::

    meta.json        # dataset, as_of_ts, k, alpha, pairs, caps, counts, seconds per step
    u2a2u.parquet    # one per metapath: node_id, rank, neighbour_id, weight
    ...              # (rank 0 = heaviest; only real neighbours, no padding rows)
    author_attr.npy  # [A + 1, 3, D] float32: each author's multi-modal attribute (row = id)

A store built ``as of T`` holds only gifts with ``ts < T`` (:func:`.gifting.build_u2a`): use it
for samples at ``t >= T``.

**Author attributes.** MMBee's U2A graph gives every author node "the attribute of aggregated
multi-modal feature" (section 5.1), which ``Theta`` retrieves with the node embedding (Eq. 10-11).
Ours: the mean of the visual, speech and text vectors of the author's segments that started
before ``T`` (same cut as the gifts; 0 for an author without one). Written when the dataset has
a ``segments`` table (``meta.json``'s ``author_attr_dim`` is ``D``, else 0).

>>> store = NeighbourStore.load("runs/graph")  # doctest: +SKIP
>>> ids, weights = store.neighbours("u2a2a", np.array([3, 7]))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from liverank.data.io import has_table, read_meta, read_table
from liverank.errors import DataValidationError, UnknownIdError
from liverank.graph.gifting import build_u2a
from liverank.graph.metapath import METAPATHS, Transitions, neighbours
from liverank.graph.swing import PairMode, swing

log = logging.getLogger(__name__)

META_FILE = "meta.json"
AUTHOR_ATTR_FILE = "author_attr.npy"
FORMAT_VERSION = 1
COLUMNS = {"node_id": pl.Int64, "rank": pl.Int32, "neighbour_id": pl.Int64, "weight": pl.Float64}


def _frame(ids: np.ndarray, weights: np.ndarray) -> pl.DataFrame:
    """Long table of the real entries of ``ids / weights [R, k]`` (row index = node id)."""
    node, rank = np.nonzero(weights > 0)  # row-major: node ascending, then rank
    return pl.DataFrame(
        {
            "node_id": node,
            "rank": rank,
            "neighbour_id": ids[node, rank],
            "weight": weights[node, rank],
        },
        schema=COLUMNS,
    )


def author_attributes(dataset_dir: str | Path, as_of_ts: int) -> np.ndarray | None:
    """``[A + 1, 3, D]`` float32: the mean segment vector (per modality) of each author over
    the segments of their rooms with ``ts < as_of_ts`` (row = author id; 0 without segments);
    ``None`` when the dataset has no ``segments`` table."""
    from scipy import sparse

    from liverank.data.mmbee import SegmentTable

    if not has_table(dataset_dir, "segments"):
        return None
    table = SegmentTable.read(dataset_dir)
    rooms = read_table(dataset_dir, "rooms", ["live_id", "author_id"]).sort("live_id")
    room_ids, room_author = rooms["live_id"].to_numpy(), rooms["author_id"].to_numpy()
    n_authors = int(room_author.max(initial=0)) + 1
    before = np.flatnonzero(table.ts < as_of_ts)  # [S'] rows of the segments before the cut
    at = np.minimum(np.searchsorted(room_ids, table.live_id[before]), max(room_ids.size - 1, 0))
    if room_ids.size == 0:
        raise DataValidationError("the rooms table has no rows", file=str(dataset_dir))
    unknown = room_ids[at] != table.live_id[before]  # [S']
    if unknown.any():
        raise DataValidationError(
            f"{int(unknown.sum())} segments belong to rooms the rooms table does not have "
            f"(e.g. live_id {int(table.live_id[before][unknown][0])})",
            file=str(dataset_dir),
            column="live_id",
        )
    author = room_author[at]  # [S']
    onehot = sparse.csr_matrix(
        (np.ones(before.size), (author, np.arange(before.size))), shape=(n_authors, before.size)
    )  # [A + 1, S']
    width = int(np.prod(table.vectors.shape[1:]))
    body = table.vectors[before + 1].reshape(before.size, width)  # [S', 3 D] (row 0: padding)
    sums = np.asarray(onehot @ body)  # [A + 1, 3 D]
    counts = np.bincount(author, minlength=n_authors)[:, None]  # [A + 1, 1]
    mean = sums / np.maximum(counts, 1)
    return mean.astype(np.float32).reshape(n_authors, *table.vectors.shape[1:])


def build_neighbour_store(
    dataset_dir: str | Path,
    out_dir: str | Path,
    as_of_ts: int,
    k: int = 20,
    alpha: float = 1.0,
    *,
    pairs: PairMode = "all",
    max_users_per_author: int | None = None,
    fanout: int | None = None,
) -> dict[str, Any]:
    """Build U2A (gifts with ``ts < as_of_ts``) -> Swing -> the five metapaths, write the store
    to ``out_dir`` and return its ``meta.json`` content."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataValidationError(
            "the store path is an existing file; give a directory", file=str(out)
        )
    dataset = read_meta(dataset_dir)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    graph = build_u2a(dataset_dir, as_of_ts)
    seconds["u2a"] = time.perf_counter() - start
    log.info("U2A graph: %s gifts, %s edges", f"{graph.n_gifts:,}", f"{graph.n_edges:,}")
    start = time.perf_counter()
    S = swing(graph.weights, alpha, pairs=pairs, max_users_per_author=max_users_per_author)
    seconds["swing"] = time.perf_counter() - start
    log.info("A2A Swing graph: %s author pairs", f"{S.nnz // 2:,}")
    start = time.perf_counter()
    transitions = Transitions.build(graph.weights, S, fanout)
    seconds["transitions"] = time.perf_counter() - start
    tables: dict[str, pl.DataFrame] = {}
    for name in METAPATHS:
        start = time.perf_counter()
        tables[name] = _frame(*neighbours(transitions, name, k))
        seconds[name] = time.perf_counter() - start
        log.info("%s: %s neighbours in %.2f s", name, f"{tables[name].height:,}", seconds[name])
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        frame.write_parquet(out / f"{name}.parquet", compression="zstd")
    seconds["write"] = time.perf_counter() - start
    start = time.perf_counter()
    attr = author_attributes(dataset_dir, as_of_ts)
    if attr is not None:
        np.save(out / AUTHOR_ATTR_FILE, attr)
    elif (out / AUTHOR_ATTR_FILE).exists():  # a rebuild into the same directory
        (out / AUTHOR_ATTR_FILE).unlink()
    seconds["author_attr"] = time.perf_counter() - start
    W = graph.weights
    meta = {
        "format": FORMAT_VERSION,
        "dataset": dataset.name,
        "as_of_ts": int(as_of_ts),
        "k": k,
        "alpha": alpha,
        "pairs": pairs,
        "max_users_per_author": max_users_per_author,
        "fanout": fanout,
        "metapaths": {name: {"source": s, "neighbour": t} for name, (s, t) in METAPATHS.items()},
        "author_attr_dim": 0 if attr is None else int(attr.shape[2]),
        "counts": {
            "gifts": graph.n_gifts,
            "u2a_edges": graph.n_edges,
            "users": graph.n_users,
            "authors": graph.n_authors,
            "gifting_users": int((W.getnnz(axis=1) > 0).sum()),
            "gifted_authors": int((W.getnnz(axis=0) > 0).sum()),
            "swing_pairs": S.nnz // 2,
            **{f"{name}_rows": frame.height for name, frame in tables.items()},
        },
        "seconds": {step: round(s, 4) for step, s in seconds.items()},
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2))
    return meta


@dataclass(frozen=True)
class _Lists:
    """One metapath's lists in CSR form: the neighbours of ``nodes[n]`` are
    ``neighbour[ptr[n] : ptr[n + 1]]`` (rank order)."""

    nodes: np.ndarray  # [N] sorted node ids with at least one neighbour
    ptr: np.ndarray  # [N + 1]
    neighbour: np.ndarray  # [E]
    weight: np.ndarray  # [E]


@dataclass(frozen=True)
class NeighbourStore:
    """A loaded neighbour store; :meth:`neighbours` is a vectorised lookup."""

    meta: dict[str, Any]
    lists: dict[str, _Lists]
    #: ``[A + 1, 3, D]`` author attributes (module doc), ``None`` when the store has none
    author_attr: np.ndarray | None = None

    @property
    def k(self) -> int:
        return int(self.meta["k"])

    @classmethod
    def load(cls, out_dir: str | Path) -> NeighbourStore:
        root = Path(out_dir)
        meta_path = root / META_FILE
        if not meta_path.exists():
            raise DataValidationError(
                "not a neighbour store (no meta.json); build one with `liverank graph build`",
                file=str(meta_path),
            )
        try:
            meta = json.loads(meta_path.read_text())
            names = list(meta["metapaths"])
            int(meta["k"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise DataValidationError(
                f"malformed store meta.json: {exc!r}", file=str(meta_path)
            ) from exc
        lists = {}
        for name in names:
            path = root / f"{name}.parquet"
            try:
                frame = pl.read_parquet(path, columns=list(COLUMNS)).sort("node_id", "rank")
            except (OSError, pl.exceptions.PolarsError) as exc:
                raise DataValidationError(
                    f"cannot read the store table: {exc}", file=str(path)
                ) from exc
            node = frame["node_id"].to_numpy()  # [E]
            nodes, counts = np.unique(node, return_counts=True)
            lists[name] = _Lists(
                nodes=nodes,
                ptr=np.r_[0, np.cumsum(counts)].astype(np.int64),
                neighbour=frame["neighbour_id"].to_numpy(),
                weight=frame["weight"].to_numpy(),
            )
        attr = None
        if int(meta.get("author_attr_dim", 0)):
            path = root / AUTHOR_ATTR_FILE
            try:
                attr = np.load(path)
            except (OSError, ValueError) as exc:
                raise DataValidationError(
                    f"cannot read the author attributes: {exc}", file=str(path)
                ) from exc
            if attr.ndim != 3 or attr.shape[2] != int(meta["author_attr_dim"]):
                raise DataValidationError(
                    f"author attributes of shape {attr.shape}, meta.json says dimension "
                    f"{meta['author_attr_dim']}",
                    file=str(path),
                )
        return cls(meta=meta, lists=lists, author_attr=attr)

    def attributes(self, author_ids: np.ndarray) -> np.ndarray:
        """``[..., 3 D]`` float32 attributes of ``author_ids [...]`` (0 for padding and ids the
        store has no row for). Raises :class:`DataValidationError` when the store has none."""
        if self.author_attr is None:
            raise DataValidationError(
                "this neighbour store has no author attributes (built from a dataset without "
                "a segments table)"
            )
        return gather_attributes(self.author_attr, author_ids)

    def neighbours(self, metapath: str, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(ids [B, k] int64, weights [B, k] float64)`` of the nodes ``ids [B]``, rank order,
        0-padded; an id without neighbours (unknown, or no gifts before ``as_of_ts``) gets a row
        of padding."""
        if metapath not in self.lists:
            raise UnknownIdError(f"unknown metapath {metapath!r}; stored: {', '.join(self.lists)}")
        table = self.lists[metapath]
        query = np.asarray(ids, dtype=np.int64).reshape(-1)  # [B]
        pos = np.searchsorted(table.nodes, query)  # [B]
        at = np.minimum(pos, max(table.nodes.size - 1, 0))
        found = (
            (pos < table.nodes.size) & (table.nodes[at] == query) if table.nodes.size else pos < 0
        )
        start = table.ptr[at]  # [B]
        count = np.where(found, table.ptr[np.minimum(at + 1, table.nodes.size)] - start, 0)  # [B]
        rank = np.arange(self.k)  # [k]
        live = rank[None, :] < count[:, None]  # [B, k]
        index = np.where(live, start[:, None] + rank[None, :], 0)  # [B, k]
        if not table.neighbour.size:
            return np.zeros(live.shape, dtype=np.int64), np.zeros(live.shape)
        out_ids = np.where(live, table.neighbour[index], 0)
        out_weights = np.where(live, table.weight[index], 0.0)
        return out_ids, out_weights


def gather_attributes(table: np.ndarray, author_ids: np.ndarray) -> np.ndarray:
    """``[..., 3 D]`` rows of ``table [A + 1, 3, D]`` for ``author_ids [...]`` (0 outside)."""
    ids = np.asarray(author_ids, dtype=np.int64)
    inside = (ids > 0) & (ids < table.shape[0])
    flat = table.reshape(table.shape[0], -1)  # [A + 1, 3 D]
    return np.where(inside[..., None], flat[np.where(inside, ids, 0)], np.float32(0))
