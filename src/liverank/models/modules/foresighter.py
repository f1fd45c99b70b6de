"""LiveForesighter in the ranker (``papers/liveforesighter.txt``, Eq. 2-5): the ``foresighter``
FeatureModule.

Reads the row's room statistic window ``room_stats [B, N = 12, T]`` and room product sequence
``room_products [B, L, 4]`` (``build-samples --room-stats T --room-products L``, as of the
impression; :mod:`liverank.data.room_sequences`) and gives the ranker stop-gradient features:

* **statistics** (Eq. 2-3). A :class:`StatisticTransformer` over ``T - k`` windows. Training
  (``joint``): it forecasts the window's last ``k`` windows from the ``T - k`` before them
  (Eq. 2, self-supervised inside the past: no future window is read) with an MSE taken in the
  input's RevIN units (each statistic of each row divided by the input's own standard
  deviation, at least 1: the twelve statistics' units differ, a row needs no global scale,
  and a room that just went on air has a window of zeros before it), the
  auxiliary loss ``foresighter.statistics``. Ranking (Eq. 3): it forecasts the ``k`` windows
  after ``T`` from the latest ``T - k``; the ranker reads ``stop(log1p(max(S_hat, 0)))``
  flattened (``[N k]``; the log is ours: raw counts and money would swamp the MLP) and the
  flattened token encodings ``stop(E^Stat) [N D]``.
* **products** (Eq. 4-5). A :class:`ProductTransformer` over ``L - 1`` products. Training: the
  finest category of the last product from the ``L - 1`` before it (Eq. 4; rows with at least
  two products), cross entropy as ``foresighter.products``. Ranking: the next category's
  distribution from the latest ``L - 1``, times a ranker-owned category embedding
  ``C~3 [C3, d]`` (trained by the ranker's loss: the distribution is stopped, the table is not),
  plus the flattened encodings ``stop(E^Prod) [(L - 1) D]``.

``mode="frozen"`` takes a statistic forecaster trained alone (``liverank foresight train``;
its ``window`` must be ``T - k`` and its ``horizon`` ``k``) and does not train it; the product
model is then still trained jointly. ``statistics`` / ``products`` switch either part off;
``families`` keeps only some of the four statistic families (``FAMILIES``: out-room, convert,
interaction, in-room; the paper's Table 7 adds one family at a time).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from liverank.data.room_sequences import PRODUCT_TABLES
from liverank.errors import ConfigError
from liverank.features.spec import FeatureMap
from liverank.models.base import Batch, FeatureModule, ModuleOutput
from liverank.models.layers.dedup import capturing_graph
from liverank.models.layers.embedding import EmbeddingCollection
from liverank.models.layers.forecast import ProductTransformer, StatisticTransformer
from liverank.models.registry import register_module
from liverank.stream.room_stats import FAMILIES, ROOM_STATS

#: the smallest scale of the statistic loss (one event, or one unit of money, per window)
STD_FLOOR = 1.0


@register_module
class Foresighter(FeatureModule):
    """LiveForesighter's stop-gradient room features (module doc).

    Args:
        feature_map: samples with ``room_stats`` (``--room-stats T``) and / or ``room_products``.
        emb: the shared embeddings (unused).
        statistics, products: which sequences to read.
        horizon: ``k`` windows forecast (3 as deployed).
        dim, layers, heads: of the statistic Transformer; product_dim, product_layers: of the
            product Transformer.
        categories: the product model's cat1 / cat2 / cat3 table sizes (the paper's 50 / 1,000 /
            5,000; each must cover the data's ids, checked); the product table is sized from
            the feature map; ranker_dim: ``d`` of ``C~3``.
        mode: ``joint`` (Eq. 2 / 4 as auxiliary losses) or ``frozen`` (a pre-trained statistic
            forecaster from ``forecaster``, a ``liverank foresight train`` directory).
        families: the statistic families read (names of :data:`FAMILIES`; all by default).
    """

    name = "foresighter"
    #: its eval forward (the stop-gradient forecast, encodings and next-category distribution)
    #: has no data-dependent Python; traced at one batch size it is exact at others, also for
    #: rooms with no product or no statistic yet (tests/serve/test_export.py)
    exportable = True

    @classmethod
    def unfed(cls, feature_map: FeatureMap, params: dict[str, Any]) -> str | None:
        stats = params.get("statistics", True) and feature_map.room_stats_window == 0
        products = params.get("products", True) and feature_map.room_products_len == 0
        if stats or products:
            return (
                "no room sequences in the samples (build-samples --room-stats T --room-products L)"
            )
        return None

    def __init__(
        self,
        feature_map: FeatureMap,
        emb: EmbeddingCollection,
        statistics: bool = True,
        products: bool = True,
        horizon: int = 3,
        dim: int = 32,
        layers: int = 2,
        heads: int = 2,
        product_dim: int = 32,
        product_layers: int = 1,
        categories: tuple[int, int, int] = (50, 1000, 5000),
        ranker_dim: int = 16,
        mode: str = "joint",
        forecaster: str | None = None,
        families: list[str] | None = None,
    ) -> None:
        super().__init__()
        if not (statistics or products):
            raise ConfigError("foresighter: switch on statistics, products or both")
        if mode not in ("joint", "frozen"):
            raise ConfigError(f"foresighter: mode must be 'joint' or 'frozen', got {mode!r}")
        window, length = feature_map.room_stats_window, feature_map.room_products_len
        if statistics and window <= horizon:
            raise ConfigError(
                f"foresighter reads room statistics: build the samples with --room-stats T, "
                f"T > horizon = {horizon} (got T = {window})"
            )
        if products and length < 2:
            raise ConfigError(
                "foresighter reads room products: build the samples with --room-products L, "
                f"L >= 2 (got L = {length})"
            )
        self.horizon, self.mode = horizon, mode
        self.stats: StatisticTransformer | None = None
        self.products: ProductTransformer | None = None
        fields: list[str] = []
        out_dim = 0
        self.stat_rows = self._stat_rows(families)
        n = len(self.stat_rows)
        if statistics:
            self.stats = StatisticTransformer(n, window - horizon, horizon, dim, layers, heads)
            if mode == "frozen":
                self._load_frozen(forecaster, window - horizon, horizon)
            fields.append("room_stats")
            out_dim += n * horizon + n * self.stats.dim
        elif mode == "frozen":
            raise ConfigError("foresighter: mode 'frozen' freezes the statistic forecaster")
        if mode == "frozen" and n != len(ROOM_STATS):
            raise ConfigError(
                "foresighter: a frozen forecaster reads all twelve statistics; drop 'families'"
            )
        if products:
            need = [feature_map.tables.get(t, 0) for t in PRODUCT_TABLES]  # product, cat1..3
            short = [
                f"cat{i + 1}: {have} < {want}"
                for i, (have, want) in enumerate(zip(categories, need[1:], strict=True))
                if have < want
            ]
            if short:
                raise ConfigError(f"foresighter: category tables too small for the data ({short})")
            sizes = (max(need[0], 1), *categories)
            self.products = ProductTransformer(sizes, length - 1, product_dim, product_layers)
            self.category_table = nn.Embedding(categories[2], ranker_dim)  # C~3, ranker-owned
            fields.append("room_products")
            out_dim += ranker_dim + (length - 1) * product_dim
        self.required_fields = tuple(fields)
        self.out_dim = out_dim

    @staticmethod
    def _stat_rows(families: list[str] | None) -> list[int]:
        """Rows of ``room_stats`` the module reads, in :data:`ROOM_STATS` order."""
        if families is None:
            return list(range(len(ROOM_STATS)))
        unknown = sorted(set(families) - set(FAMILIES))
        if unknown or not families:
            raise ConfigError(
                f"foresighter: families must be a non-empty subset of {sorted(FAMILIES)}, "
                f"got {families!r}"
            )
        keep = {s for f in families for s in FAMILIES[f]}
        return [i for i, s in enumerate(ROOM_STATS) if s in keep]

    def _load_frozen(self, path: str | None, window: int, horizon: int) -> None:
        from liverank.foresight.statistics import StatisticForecaster

        if path is None:
            raise ConfigError("foresighter mode 'frozen' needs forecaster: DIR (foresight train)")
        trained = StatisticForecaster.load(Path(path))
        cfg = trained.cfg
        if cfg.window != window or cfg.horizon != horizon:
            raise ConfigError(
                f"the forecaster in {path} reads {cfg.window} windows and forecasts "
                f"{cfg.horizon}; this foresighter needs {window} and {horizon} "
                "(samples' --room-stats = window + horizon)"
            )
        self.stats = trained.model
        for p in self.stats.parameters():
            p.requires_grad_(False)

    def forward(self, batch: Batch, emb: EmbeddingCollection) -> ModuleOutput:
        parts: list[torch.Tensor] = []
        aux: dict[str, torch.Tensor] = {}
        if self.stats is not None:
            x = batch["room_stats"].float()  # [B, 12, T]
            if len(self.stat_rows) < x.shape[1]:
                x = x[:, self.stat_rows]  # [B, N, T], the chosen families
            k = self.horizon
            if self.training and self.mode == "joint":
                past, future = x[:, :, :-k], x[:, :, -k:]  # Eq. 2: inside the observed window
                pred, _ = self.stats(past)  # [B, N, k]
                # the input's own scale, at least one unit: before a room goes on air its
                # windows are zeros, and dividing by their ~0 spread would explode the loss
                std = past.std(dim=-1, keepdim=True, unbiased=False).clamp(min=STD_FLOOR)
                aux["statistics"] = (((pred - future) / std) ** 2).mean()
            with torch.no_grad():
                forecast, enc = self.stats(x[:, :, k:])  # Eq. 3: [B, N, k], [B, N, D]
            parts += [torch.log1p(forecast.clamp(min=0)).flatten(1), enc.flatten(1)]
        if self.products is not None:
            seq = batch["room_products"].long()  # [B, L, 4]
            if self.training:
                # Eq. 4: the last product's category, on the rows with at least two products
                # (the model reads each row alone: the other rows' logits would be unused)
                has = (seq[:, -1, 0] > 0) & (seq[:, -2, 0] > 0)  # [B]
                if bool(has.any()):
                    logits, _ = self.products(seq[has, :-1])  # [H, C3]
                    aux["products"] = F.cross_entropy(logits, seq[has, -1, 3])
            parts += self._next_category(seq[:, 1:])
        return ModuleOutput(torch.cat(parts, dim=-1), aux_losses=aux)

    def _next_category(self, seq: torch.Tensor) -> list[torch.Tensor]:
        """Eq. 5 from the latest ``L - 1`` products ``seq [B, L - 1, 4]``: the predicted
        category distribution (stopped) times the ranker's category table ``[B, d]``, and the
        stopped encodings ``[B, (L - 1) D]``; both 0 for a room without products.

        A room without products gives exactly zeros, so the product model runs on the other
        rows only (most rows of a batch: rooms that sell nothing) and its ``[B, C3]``
        distribution is never built for them; a recorded graph (export) runs every row.
        """
        assert self.products is not None
        table = self.category_table.weight  # [C3, d], trained by the ranker's loss
        present = (seq[:, :, 0] > 0).any(dim=1)  # [B]
        if capturing_graph():
            with torch.no_grad():
                logits, enc = self.products(seq)  # [B, C3], [B, L - 1, D]
                dist = logits.softmax(-1) * present[:, None].to(logits.dtype)  # [B, C3]
            return [dist @ table, enc.flatten(1)]
        rows = present.nonzero().squeeze(1)  # [P]
        n, length = seq.shape[:2]
        with torch.no_grad():
            if rows.numel():
                logits, enc_p = self.products(seq.index_select(0, rows))  # [P, C3], [P, L-1, D]
                dist = logits.softmax(-1)  # [P, C3]
            else:  # no room of the batch sells anything (attention needs a row)
                dist = table.new_zeros(0, table.shape[0])
                enc_p = table.new_zeros(0, length, self.products.dim)
            enc = enc_p.new_zeros(n, *enc_p.shape[1:]).index_copy_(0, rows, enc_p)
        zeros = table.new_zeros(n, table.shape[1])  # [B, d]
        return [zeros.index_copy(0, rows, dist @ table), enc.flatten(1)]
