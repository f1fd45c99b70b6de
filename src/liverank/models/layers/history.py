"""Reading a long-history window inside a model: from the batch (eager) or a history service.

The Cross GSUs (``modules/moment_cross.py``; Moment&Cross, Cao et al. 2024, section 4.1; SIM,
Pi et al. 2020) search the last ``K`` behaviours of a user but keep only ``gsu_len`` of them.
Gathering every feature of all ``K`` items in the loader would make a batch ~16x slower at
K = 1000, so a window is read through one of two interchangeable views:

* :class:`EagerWindow`: the ``[B, K]`` ``long_<d>_*`` fields are already in the batch (synthetic
  batches, ``SampleSet.load(..., long_fields="eager")``; the reference implementation).
* :class:`ServiceWindow`: the batch only carries each sample's row range ``long_<d>_start /
  _end`` and its ``ts``; the rows are read from the store's tensors
  (:meth:`liverank.features.long_history.LongHistory.tensors`, CPU, shared, never copied). :meth:`ServiceWindow.full`
  gathers one feature over the whole window (only the GSU keys need that), :meth:`ServiceWindow.at`
  gathers a feature at the ``[B, G]`` selected positions only. In serving, the online feature
  store plays the store's role.

Both give bit-identical values at valid positions (and identical padding for ``full``), so every
selection and every output is the same whichever view a batch uses. :class:`LongDomain` turns a
window into GSU scores and item vectors.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from liverank.errors import ConfigError
from liverank.features.encoders import MS_PER_SECOND, TIME_GAP_VOCAB
from liverank.features.long_history import DomainTensors, index_columns
from liverank.features.spec import FeatureMap
from liverank.models.base import Batch
from liverank.models.layers.dedup import capturing_graph
from liverank.models.layers.embedding import EmbeddingCollection
from liverank.models.layers.gather import unique_rows
from liverank.models.layers.search import gather_positions, length_mask


def time_gap_bucket(gap_ms: torch.Tensor) -> torch.Tensor:
    """Torch twin of :func:`liverank.features.encoders.time_gap_bucket` (int64 in and out).

    ``1 + bit_length(gap_ms // 1000)`` clipped to ``[1, TIME_GAP_VOCAB - 1]``; ``gap_ms <= 0``
    gives 0. The seconds are clipped to ``2**(V-1)`` first, so float32 ``frexp`` is exact.
    """
    seconds = gap_ms.clamp(min=0) // MS_PER_SECOND
    clipped = seconds.clamp(max=1 << (TIME_GAP_VOCAB - 1)).to(torch.float32)
    _, bit_length = torch.frexp(clipped)
    code = 1 + bit_length.to(torch.int64).clamp(max=TIME_GAP_VOCAB - 2)
    return torch.where(gap_ms > 0, code, torch.zeros_like(code))


class EagerWindow:
    """A window whose ``[B, K]`` fields ``long_<d>_*`` are batch fields."""

    def __init__(self, batch: Batch, domain: str, suffixes: list[str]) -> None:
        self.prefix = f"long_{domain}_"
        missing = [self.prefix + s for s in suffixes if self.prefix + s not in batch]
        if missing:
            raise ConfigError(f"moment_cross: the batch lacks the long-history fields {missing}")
        self.batch = batch
        self.width = batch[self.prefix + "author"].shape[1]  # K
        self.valid = length_mask(batch[self.prefix + "len"], self.width)  # [B, K]

    def full(self, suffix: str) -> torch.Tensor:
        """``[B, K]`` feature ``long_<d>_<suffix>`` over the whole window."""
        return self.batch[self.prefix + suffix]

    def dt(self) -> torch.Tensor:
        """``[B, K]`` float32 seconds from each row to the sample (0 at padding)."""
        return self.batch[self.prefix + "dt"]

    def at(self, suffix: str, index: torch.Tensor) -> torch.Tensor:
        """``[B, G]`` feature at the window positions ``index [B, G]``."""
        return gather_positions(self.batch[self.prefix + suffix], index)


class ServiceWindow:
    """A window read from the history service: the last ``k`` rows of ``[start, end)``.

    Row positions ``[B, W]`` are ``end - 1, end - 2, ...`` (most recent first); slots beyond the
    window's length point at the store's zero sentinel row, exactly like
    :meth:`liverank.features.long_history.HistoryTable.window`. Every read is cached per window.

    ``W`` is ``k``, or with ``trim`` the longest window of the batch (at least 1): the columns
    beyond it are padding in every row, which no selection picks and no pooling counts, so the
    GSUs give the same outputs (up to float summation order) for less work. It matters for
    sparse domains: at ``K = 1000`` a batch's live windows end after ~200 positions (users have
    ~12 live rows on average on the evidence world).
    """

    def __init__(
        self, batch: Batch, domain: str, store: DomainTensors, k: int, trim: bool = False
    ) -> None:
        c_start, c_end = index_columns(domain)
        missing = [c for c in ("ts", c_start, c_end) if c not in batch]
        if missing:
            raise ConfigError(
                f"moment_cross: reading the long {domain} history needs the batch fields "
                f"{missing} (the samples' long-history index); load the samples with long_len > 0"
            )
        self.store, self.device = store, batch[c_end].device
        # The store lives in CPU memory; its index arithmetic runs on zero-copy numpy views of
        # the torch tensors (2-5x faster than torch's elementwise kernels on these [B, K] int
        # arrays on a shared CPU), results come back with torch.from_numpy.
        start = batch[c_start].cpu().numpy()  # [B]
        end = batch[c_end].cpu().numpy()  # [B]
        self.query_ms = batch["ts"].cpu().numpy()  # [B]
        if end.size and int(end.max()) > store.size:
            raise ConfigError(
                f"moment_cross: the batch's {c_end} reaches row {int(end.max())}, but the "
                f"attached {domain} history has {store.size} rows; attach the store of the "
                f"samples directory these batches come from"
            )
        lengths = np.minimum(np.maximum(end - start, 0), k)  # [B]
        if trim:
            k = max(1, int(lengths.max(initial=0)))
        self.width = k  # W
        steps = np.arange(1, k + 1, dtype=np.int64)  # [W]
        self._padded = steps[None, :] > lengths[:, None]  # [B, W]
        self.rows = np.subtract(end[:, None], steps[None, :])  # [B, W]
        np.copyto(self.rows, store.size, where=self._padded)
        self.valid = torch.from_numpy(~self._padded).to(self.device)  # [B, W]
        self._ts = store.ts_ms.numpy()  # [H + 1], a view
        self._full: dict[str, torch.Tensor] = {}

    def _column(self, suffix: str) -> np.ndarray:
        column = self.store.columns.get(suffix)
        if column is None:
            raise ConfigError(
                f"moment_cross: the long-history store has no column '{suffix}' "
                f"(has {sorted(self.store.columns)})"
            )
        return column.numpy()  # [H + 1] int32, a view

    def _read(
        self, suffix: str, rows: np.ndarray, query_ms: np.ndarray | None = None
    ) -> torch.Tensor:
        """Feature ``suffix`` at store rows ``rows [B', *]``; ``query_ms [B']`` (default: this
        window's sample times) is what the ``age`` of a row is measured from."""
        if suffix == "age":
            query = self.query_ms if query_ms is None else query_ms
            gap = query[:, None] - self._ts.take(rows)  # [B', *] ms
            return time_gap_bucket(torch.from_numpy(gap)).to(self.device)
        values = self._column(suffix).take(rows).astype(np.int64)  # [B, *]
        return torch.from_numpy(values).to(self.device)

    def full(self, suffix: str) -> torch.Tensor:
        """``[B, W]`` int64 feature over the whole window (0 at padding)."""
        if suffix not in self._full:
            self._full[suffix] = self._read(suffix, self.rows)
        return self._full[suffix]

    def dt(self) -> torch.Tensor:
        """``[B, W]`` float32 seconds from each row to the sample, 0 at padding.

        Computed as the loader does (float64 ``ts / 1000`` differences, then float32), so the
        merge of the mixed sequence sees the same values and breaks ties the same way.
        """
        if "dt" not in self._full:
            gap = self._ts.take(self.rows) / 1000.0  # [B, W] float64 row seconds
            np.subtract((self.query_ms / 1000.0)[:, None], gap, out=gap)
            dt = gap.astype(np.float32)
            np.copyto(dt, np.float32(0.0), where=self._padded)
            self._full["dt"] = torch.from_numpy(dt).to(self.device)
        return self._full["dt"]

    def at(self, suffix: str, index: torch.Tensor) -> torch.Tensor:
        """``[B, G]`` int64 feature at the positions ``index [B, G]``: reads ``B x G`` rows."""
        rows = np.take_along_axis(self.rows, index.cpu().numpy(), axis=1)  # [B, G]
        return self._read(suffix, rows)


class ExpandedWindow:
    """A window read for the *distinct* rows of a batch, seen per batch row.

    The rows of one request share the user, the time and so the window (``layers/dedup.py``);
    the candidate-dependent GSUs still need a window per row. This view reads the window once
    per distinct row (``inner``, ``[U, W]``: a :class:`ServiceWindow`, or an :class:`EagerWindow`
    of the distinct rows' fields, which is what a program recorded for one request reads) and
    indexes the results back with ``inverse [B]``: every read equals the whole batch's window
    (tested). With one distinct row (a request) the ``[B, W]`` reads are broadcast views.
    """

    def __init__(self, inner: ServiceWindow | EagerWindow, inverse: torch.Tensor) -> None:
        self.inner, self.inverse = inner, inverse  # [U, W] window, [B] distinct row per row
        self.width = inner.width
        #: one request: every row is row 0 (the reads are broadcast views)
        self.single_row = inner.valid.shape[0] == 1
        self.valid = self._rows(inner.valid)  # [B, W]
        # the store's reads index NumPy rows: the inverse as NumPy once (none for eager windows,
        # which a recorded graph reads with torch indexing)
        self._inverse_np = inverse.cpu().numpy() if isinstance(inner, ServiceWindow) else None
        self._full: dict[str, torch.Tensor] = {}

    def _rows(self, per_distinct: torch.Tensor) -> torch.Tensor:
        """``[U, W]`` -> ``[B, W]``: a broadcast view for one distinct row, else a gather."""
        if self.single_row:
            return per_distinct.expand(self.inverse.shape[0], -1)
        return per_distinct.index_select(0, self.inverse)

    def full(self, suffix: str) -> torch.Tensor:
        """``[B, W]`` int64 feature over the whole window (0 at padding)."""
        if suffix not in self._full:
            self._full[suffix] = self._rows(self.inner.full(suffix))
        return self._full[suffix]

    def dt(self) -> torch.Tensor:
        """``[B, W]`` float32 seconds from each row to the sample, 0 at padding."""
        if "dt" not in self._full:
            self._full["dt"] = self._rows(self.inner.dt())
        return self._full["dt"]

    def at(self, suffix: str, index: torch.Tensor) -> torch.Tensor:
        """``[B, G]`` int64 feature at the positions ``index [B, G]``: reads ``B x G`` rows."""
        inner = self.inner
        if isinstance(inner, EagerWindow):  # torch indexing: also inside a recorded graph
            return inner.full(suffix)[self.inverse.unsqueeze(1), index]  # [B, G]
        rows_of = self._inverse_np  # [B]
        assert rows_of is not None
        rows = inner.rows[rows_of[:, None], index.cpu().numpy()]  # [B, G]
        return inner._read(suffix, rows, inner.query_ms[rows_of])


Window = EagerWindow | ServiceWindow | ExpandedWindow


def distinct_full(window: Window, suffix: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(values [U, W], inverse [B])`` of feature ``suffix`` on an :class:`ExpandedWindow`
    (``values[inverse]`` is :meth:`full`), else ``(full [B, W], None)``."""
    if isinstance(window, ExpandedWindow):
        return window.inner.full(suffix), window.inverse
    return window.full(suffix), None


#: long-history columns (suffix after ``long_<domain>_``) that describe *what* an item is
_CONTENT = {"live": ("author", "category"), "video": ("author", "tag")}


class LongDomain(nn.Module):
    """Columns of one long history (``long_<domain>_*``) and its item vectors."""

    def __init__(self, feature_map: FeatureMap, emb: EmbeddingCollection, domain: str) -> None:
        super().__init__()
        fields = feature_map.long_fields.get(domain)
        prefix = f"long_{domain}_"
        content = [prefix + s for s in _CONTENT[domain]]
        if not fields or any(c not in fields for c in content):
            raise ConfigError(
                f"moment_cross: the feature map's long_fields['{domain}'] must list {content}, "
                f"got {sorted(fields or {})}"
            )
        self.domain = domain
        self.columns = list(fields)  # item side features -> tables
        self.suffixes = [c.removeprefix(prefix) for c in self.columns]
        self.tables = [fields[c] for c in self.columns]
        self.content = list(_CONTENT[domain])  # suffixes of the GSU key columns
        self.content_tables = [fields[c] for c in content]
        dims = {emb.dim(t) for t in self.tables}
        if len(dims) != 1:
            raise ConfigError(f"moment_cross: long {domain} tables need one width, got {dims}")
        self.dim = dims.pop()

    @torch.no_grad()
    def scores(self, window: Window, emb: EmbeddingCollection, query: torch.Tensor) -> torch.Tensor:
        """GSU relevance ``[B, K]`` of every item to ``query [B, D]``; no gradient.

        ``sum_c query . e_c(item)`` over the content columns ``c``. A batch's histories repeat
        few distinct ids, so per column the distinct ids ``U`` are looked up once and scored
        against every query (``[B, U]``), then gathered to positions; when ``U`` is so large
        that ``[B, U]`` would outgrow the ``[B, K, D]`` item vectors, those are built instead.
        """
        total = torch.zeros(window.valid.shape, dtype=query.dtype, device=query.device)
        for suffix, table in zip(self.content, self.content_tables, strict=True):
            # [R, W] with R = B, or the batch's distinct rows (then expanded by ``inverse``)
            ids, inverse = distinct_full(window, suffix)
            ids = ids.clamp(min=0)  # negative ids are unknown anyway
            if capturing_graph():  # no data-dependent distinct ids in a recorded graph
                if inverse is not None and ids.shape[0] == 1:  # one request's window
                    total += query @ emb.lookup(table, ids[0]).t()  # [B, W]
                else:
                    items = emb.lookup(table, window.full(suffix).clamp(min=0))  # [B, W, D]
                    total += torch.bmm(items, query.unsqueeze(-1)).squeeze(-1)
                continue
            uniq, position = unique_rows(ids, int(ids.max()) + 1)  # [U], [R, W]
            if inverse is not None:
                position = position.index_select(0, inverse)  # [B, W]
            if uniq.numel() <= ids.shape[1] * query.shape[1]:
                per_id = query @ emb.lookup(table, uniq).t()  # [B, U]
                total += torch.gather(per_id, 1, position)
            else:
                items = emb.lookup(table, window.full(suffix).clamp(min=0))  # [B, W, D]
                total += torch.bmm(items, query.unsqueeze(-1)).squeeze(-1)
        return total  # [B, K]

    def items(
        self, window: Window, emb: EmbeddingCollection, index: torch.Tensor, keep: torch.Tensor
    ) -> torch.Tensor:
        """Item vectors ``[B, G, D]`` at ``index [B, G]``; slots where ``keep`` is false are 0.

        Only the ``B x G`` selected rows are read (:meth:`Window.at`). For one request (an
        :class:`ExpandedWindow` of one row, what a serving program reads) every position of the
        one window is looked up once (``W x F`` ids instead of ``B x G x F``: 1,000 x 5 against
        200 x 50 x 5 per GSU at 200 candidates) and the selections gather those vectors: the
        same sums, and gradients only at the selected positions.
        """
        if isinstance(window, ExpandedWindow) and window.single_row:
            ids = torch.stack([window.inner.full(s)[0] for s in self.suffixes], -1)  # [W, F]
            vectors = emb.lookup_sum(self.tables, ids)  # [W, D]
            return vectors[index] * keep.unsqueeze(-1).to(vectors.dtype)  # [B, G, D]
        ids = torch.stack([window.at(s, index) for s in self.suffixes], -1)  # [B, G, F]
        ids = ids * keep.unsqueeze(-1)  # dropped slots look up the zero padding row
        return emb.lookup_sum(self.tables, ids)  # [B, G, D]
