"""The MMBee columns of a sample (``build-samples --segments N --graph-k K``).

MMBee (``papers/mmbee.txt``) reads two things besides the usual sparse features:

* **the room's real-time content** (section 4): the multi-modal vectors (visual, speech, text) of
  the room's last ``N`` 30 s segments at the time of the impression. A sample stores only
  ``seg_idx [N]``: 1 + the row of each segment in the samples directory's segment table
  ``segments.npy [S + 1, 3, D]`` (row 0 = padding), most recent first. A segment is visible
  from its start (its ``ts``, on the 30 s grid): the frame on screen when the user is shown the
  room is the current segment's, so ``seg_ts <= ts`` (the current segment included, the next one
  never). The loader turns ``seg_idx`` into the batch fields ``seg_visual / seg_speech /
  seg_text [B, N, D]`` and ``seg_mask [B, N]`` (:class:`SegmentTable.gather`), so the vectors
  are held once, not once per impression.
* **the graph-expanded behaviour** (section 5.3): the top-``K`` metapath neighbours of the
  user (``u2a2u``, ``u2a2u2a``, ``u2a2a``) and of the author (``a2a``, ``a2u2a``), columns
  ``gie_<metapath> [K]`` of raw user / author ids (0 = padding). **No leak:** the graph is
  rebuilt once a day (MMBee's offline GIE stage): the rows of day ``d`` read the neighbour
  store built from the gifts before day ``d``'s 00:00 (``OUT/graph/day=<d>``, kept beside the
  shards: the GraphCL pre-training reads them), never a gift of their own day.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from liverank.data.io import read_table, table_path
from liverank.data.schema import DatasetMeta
from liverank.errors import ConfigError, DataValidationError
from liverank.features import encoders as enc

if TYPE_CHECKING:
    from liverank.graph.store import NeighbourStore

log = logging.getLogger(__name__)

MODALITIES: tuple[str, ...] = ("visual", "speech", "text")
SEGMENT_FILE = "segments.npy"
SEGMENT_INDEX_COLUMN = "seg_idx"
USER_METAPATHS: tuple[str, ...] = ("u2a2u", "u2a2u2a", "u2a2a")
AUTHOR_METAPATHS: tuple[str, ...] = ("a2a", "a2u2a")
#: sample column -> the embedding table of the ids it holds
GIE_COLUMNS: dict[str, str] = {
    "gie_u2a2u": "user",
    **{f"gie_{m}": "author" for m in ("u2a2u2a", "u2a2a", *AUTHOR_METAPATHS)},
}
GRAPH_DIR = "graph"
#: the ``gie_*`` columns whose nodes are authors (they carry author attributes)
AUTHOR_NODE_COLUMNS: tuple[str, ...] = tuple(c for c, t in GIE_COLUMNS.items() if t == "author")


def graph_store_dir(samples_dir: str | Path, day: int) -> Path:
    """The neighbour store the rows of ``day`` read (gifts before that day's 00:00)."""
    return Path(samples_dir) / GRAPH_DIR / f"day={day:03d}"


@dataclass(frozen=True)
class SegmentTable:
    """Every segment of a dataset, sorted by ``(live_id, ts)``.

    ``vectors [S + 1, 3, D]`` float32 (row 0 = padding; modality order :data:`MODALITIES`).
    """

    live_id: np.ndarray  # [S] int64
    ts: np.ndarray  # [S] int64
    vectors: np.ndarray  # [S + 1, 3, D] float32

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[2])

    @classmethod
    def read(cls, dataset_dir: str | Path) -> SegmentTable:
        """The ``segments`` table of a canonical dataset (:class:`DataValidationError` when it is
        missing, has no rows, or its vectors differ in length)."""
        root = Path(dataset_dir)
        if not table_path(root, "segments").exists():
            raise DataValidationError(
                "MMBee's content features need the 'segments' table (30 s multi-modal vectors)",
                file=str(table_path(root, "segments")),
            )
        frame = read_table(root, "segments", ["live_id", "ts", *MODALITIES]).sort("live_id", "ts")
        if frame.height == 0:
            raise DataValidationError("the segments table has no rows", file=str(root))
        mats = []
        for m in MODALITIES:
            lengths = frame[m].list.len()
            if lengths.null_count() or lengths.min() != lengths.max():
                raise DataValidationError(
                    "segment vectors must all have one length (and no nulls)",
                    file=str(table_path(root, "segments")),
                    column=m,
                )
            mats.append(np.asarray(frame[m].list.to_array(int(lengths[0])).to_numpy(), np.float32))
        if len({a.shape[1] for a in mats}) != 1:
            raise DataValidationError(
                "the three modalities' vectors differ in length",
                file=str(table_path(root, "segments")),
            )
        body = np.stack(mats, axis=1)  # [S, 3, D]
        vectors = np.concatenate([np.zeros((1, *body.shape[1:]), np.float32), body])
        return cls(frame["live_id"].to_numpy(), frame["ts"].to_numpy(), vectors)

    @staticmethod
    def load_vectors(samples_dir: str | Path) -> np.ndarray:
        """The ``segments.npy`` vectors ``[S + 1, 3, D]`` of a samples directory."""
        path = Path(samples_dir) / SEGMENT_FILE
        if not path.exists():
            raise DataValidationError(
                "the samples have seg_idx but no segment table; rebuild with --segments",
                file=str(path),
            )
        return np.load(path)

    @cached_property
    def _index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
        """``(rooms [R], first row of each [R], key of each row [S], t0, span)``: one int64 key
        ``room_rank * span + (ts - t0)`` per segment, ascending. Built once per table: a
        service asks for it on every request (it took ~6 ms per request when rebuilt)."""
        rooms, first = np.unique(self.live_id, return_index=True)  # sorted
        t0 = int(self.ts.min())
        span = int(self.ts.max()) - t0 + 2  # offsets -1 .. span - 2 fit in one room's range
        room_rank = np.repeat(np.arange(rooms.size), np.diff(np.append(first, self.ts.size)))
        keys = room_rank * span + (self.ts - t0)  # [S] ascending
        return rooms, first, keys, t0, span

    def last_before(self, live_id: np.ndarray, ts: np.ndarray, n: int) -> np.ndarray:
        """``[Q, n]`` int32: 1 + the rows of the last ``n`` segments of room ``live_id[q]`` with
        ``seg_ts <= ts[q]``, most recent first; 0 where the room has fewer."""
        if n < 1:
            raise ConfigError(f"segments per sample must be >= 1, got {n}")
        rooms, first, keys, t0, span = self._index
        q_live, q_ts = np.asarray(live_id, np.int64), np.asarray(ts, np.int64)
        r = np.searchsorted(rooms, q_live)  # [Q]
        r_at = np.minimum(r, rooms.size - 1)
        known = rooms[r_at] == q_live  # [Q]
        # before the first segment -> -1 (nothing of the room), after the last -> span - 2
        offset = np.clip(q_ts - t0, -1, span - 2)
        pos = np.searchsorted(keys, r_at * span + offset, side="right") - 1  # [Q]
        start = first[r_at]  # [Q] first row of the room
        rows = pos[:, None] - np.arange(n)[None, :]  # [Q, n]
        valid = known[:, None] & (rows >= start[:, None])
        return np.where(valid, rows + 1, 0).astype(np.int32)

    @staticmethod
    def gather(vectors: np.ndarray, seg_idx: np.ndarray) -> dict[str, torch.Tensor]:
        """Batch fields ``seg_<modality> [B, n, D]`` float32 and ``seg_mask [B, n]`` of the
        rows ``seg_idx [B, n]``."""
        picked = torch.from_numpy(vectors[seg_idx])  # [B, n, 3, D]
        out = {f"seg_{m}": picked[:, :, i] for i, m in enumerate(MODALITIES)}
        out["seg_mask"] = torch.from_numpy((seg_idx > 0).astype(np.float32))  # [B, n]
        return out


def build_graph_stores(
    dataset_dir: Path, out: Path, meta: DatasetMeta, days: np.ndarray, k: int
) -> dict[int, NeighbourStore]:
    """One neighbour store per day of ``days`` (as of its 00:00), loaded."""
    from liverank.graph.store import NeighbourStore, build_neighbour_store

    stores: dict[int, NeighbourStore] = {}
    for day in np.unique(days).tolist():
        path = graph_store_dir(out, day)
        as_of = meta.start_ts + day * enc.MS_PER_DAY
        built = build_neighbour_store(dataset_dir, path, as_of, k=k)
        log.info("graph of day %d: %s gifts before it", day, f"{built['counts']['gifts']:,}")
        stores[day] = NeighbourStore.load(path)
    return stores


def gie_columns(
    stores: dict[int, NeighbourStore],
    day: np.ndarray,
    user_id: np.ndarray,
    author_id: np.ndarray,
) -> dict[str, np.ndarray]:
    """``gie_<metapath> [Q, k]`` neighbour ids of each row from the store of its day."""
    k = next(iter(stores.values())).k
    out = {c: np.zeros((len(day), k), np.int64) for c in GIE_COLUMNS}
    for d in np.unique(day).tolist():
        rows = np.flatnonzero(day == d)
        store = stores[d]
        for m in USER_METAPATHS:
            out[f"gie_{m}"][rows] = store.neighbours(m, user_id[rows])[0]
        for m in AUTHOR_METAPATHS:
            out[f"gie_{m}"][rows] = store.neighbours(m, author_id[rows])[0]
    return out


def load_author_attributes(samples_dir: str | Path) -> np.ndarray:
    """``[days, A + 1, 3, D]`` float32: the author attributes of each day's store under
    ``graph/`` (index = day; a day without a store is all 0)."""
    from liverank.graph.store import AUTHOR_ATTR_FILE

    paths = sorted(Path(samples_dir, GRAPH_DIR).glob(f"day=*/{AUTHOR_ATTR_FILE}"))
    if not paths:
        raise DataValidationError(
            "the feature map says the samples have author attributes but no graph store has "
            f"{AUTHOR_ATTR_FILE}; rebuild the samples with --graph-k",
            file=str(Path(samples_dir, GRAPH_DIR)),
        )
    by_day = {int(p.parent.name.split("=")[1]): np.load(p) for p in paths}
    shapes = {a.shape for a in by_day.values()}
    if len(shapes) != 1:
        raise DataValidationError(
            f"the daily stores' author attributes differ in shape: {sorted(shapes)}",
            file=str(Path(samples_dir, GRAPH_DIR)),
        )
    out = np.zeros((max(by_day) + 1, *shapes.pop()), np.float32)
    for day, attr in by_day.items():
        out[day] = attr
    return out


def gather_author_attributes(
    table: np.ndarray, day: np.ndarray, arrays: dict[str, np.ndarray]
) -> dict[str, torch.Tensor]:
    """``gie_attr_<metapath> [B, K, 3 D]`` for the author-node ``gie_*`` columns in ``arrays``:
    row ``b`` reads the table of its ``day[b]`` (``table [days, A + 1, 3, D]``)."""
    n_days, n_authors = table.shape[:2]
    flat = table.reshape(n_days * n_authors, -1)  # [days (A + 1), 3 D]
    d = np.clip(np.asarray(day, np.int64), 0, n_days - 1)[:, None]  # [B, 1]
    out = {}
    for column in AUTHOR_NODE_COLUMNS:
        if column in arrays:
            ids = np.asarray(arrays[column], np.int64)  # [B, K]
            inside = (ids > 0) & (ids < n_authors)
            picked = flat[np.where(inside, d * n_authors + ids, 0)]  # [B, K, 3 D]
            picked[~inside] = 0.0
            out[column.replace("gie_", "gie_attr_", 1)] = torch.from_numpy(picked)
    return out


def check_mmbee_inputs(segments: int, graph_k: int) -> None:
    if segments < 0 or graph_k < 0:
        raise ConfigError(f"segments and graph_k must be >= 0, got {segments}, {graph_k}")
