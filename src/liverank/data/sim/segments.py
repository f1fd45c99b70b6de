"""Multi-modal content (phenomenon 6): visual / speech / text vectors of every 30 s segment.

The latent state of room ``r`` at tick ``k`` is

    s = [ onehot(author type) (4) | T_category (K) | e_k (1) | w_cat3(product on stage) (K) ]

(the product block is 0 outside shopping rooms). Each modality ``m`` sees the blocks with its own
weights ``omega_m`` and its own random projection ``W_m`` (``[4 + 2K + 1, segment_dim]``):

    x_m = (omega_m * s) W_m / sqrt(dim s) + sigma_m * eps,     eps ~ N(0, I)

with ``omega`` (type, category, excitement, product) = visual (1, 0.5, 3, 0.3), speech
(0.5, 1, 1.5, 1), text (0.3, 1.5, 0.5, 1.5) and ``sigma`` = ``multimodal_noise`` x (0.3, 0.6,
1.0): the modalities are differently noisy views of the same state (MMBee). ``multimodal_noise``
(default 4) makes the views noisy enough that a linear probe recovers excitement from the visual
vector with R^2 of about 0.6 (0.96 at 1, the World v1 value), so a fusion model has something
to earn. With ``multimodal`` off ``x_m`` is pure noise of the same overall scale.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from liverank.data.schema import AUTHOR_TYPES
from liverank.data.sim.clock import TICK_MS
from liverank.data.sim.config import SimConfig
from liverank.data.sim.population import World
from liverank.data.sim.products import Catalog
from liverank.data.sim.rng import stream
from liverank.data.sim.rooms import Rooms

MODALITIES = ("visual", "speech", "text")
_WEIGHTS = {  # type, category, excitement, product
    "visual": (1.0, 0.5, 3.0, 0.3),
    "speech": (0.5, 1.0, 1.5, 1.0),
    "text": (0.3, 1.5, 0.5, 1.5),
}
_NOISE = {"visual": 0.3, "speech": 0.6, "text": 1.0}


class SegmentEncoder:
    """Fixed random projections of the latent state, one per modality."""

    def __init__(self, cfg: SimConfig, world: World, catalog: Catalog) -> None:
        self.cfg, self.world, self.catalog = cfg, world, catalog
        k = cfg.latent_dim
        self.state_dim = len(AUTHOR_TYPES) + 2 * k + 1
        rng = stream(cfg.seed, "segment-projections")
        self.proj = {m: rng.standard_normal((self.state_dim, cfg.segment_dim)) for m in MODALITIES}
        sizes = (len(AUTHOR_TYPES), k, 1, k)
        self.weights = {m: np.repeat(_WEIGHTS[m], sizes) for m in MODALITIES}

    def state(self, rooms: Rooms, room: np.ndarray, tick: np.ndarray) -> np.ndarray:
        """Latent state ``[N, state_dim]`` of flat ticks ``tick`` of rooms ``room``."""
        onehot = np.eye(len(AUTHOR_TYPES))[rooms.type_idx[room]]
        category = self.world.centres[rooms.category[room] - 1]
        product = rooms.product[tick]
        cat3 = self.catalog.cat3_vec[self.catalog.cat3_of_product[np.maximum(product, 0)]]
        cat3 = np.where((product >= 0)[:, None], cat3, 0.0)
        exc = rooms.excitement[tick][:, None].astype(np.float64)
        return np.hstack([onehot, category, exc, cat3])

    def encode(self, rooms: Rooms, t0: int, t1: int, day: int) -> pl.DataFrame:
        """``segments`` rows of the ticks that start in ``[t0, t1)``, sorted by (ts, live_id)."""
        rng = stream(self.cfg.seed, "segments", day)
        scale = self.cfg.multimodal_noise
        live = rooms.on_air_during(t0, t1)
        first = np.maximum(-(-(t0 - rooms.start[live]) // TICK_MS), 0)  # first tick >= t0
        last = np.minimum(-(-(t1 - rooms.start[live]) // TICK_MS), rooms.n_ticks[live])
        count = np.maximum(last - first, 0)
        room = np.repeat(live, count)
        k = (
            np.arange(int(count.sum()))
            - np.repeat(np.cumsum(count) - count, count)
            + np.repeat(first, count)
        )
        ts = rooms.start[room] + k * TICK_MS
        order = np.lexsort((room, ts))
        room, k, ts = room[order], k[order], ts[order]
        tick = rooms.offset[room] + k
        s = self.state(rooms, room, tick)  # [N, state_dim]
        cols: dict[str, object] = {"live_id": rooms.live_id[room], "ts": ts}
        for m in MODALITIES:
            noise = rng.standard_normal((len(room), self.cfg.segment_dim))
            if self.cfg.multimodal:
                signal = (s * self.weights[m]) @ self.proj[m] / np.sqrt(self.state_dim)
                x = signal + scale * _NOISE[m] * noise
            else:  # pure noise with the scale the vectors would have
                x = np.sqrt((scale * _NOISE[m]) ** 2 + self._signal_var(m)) * noise
            cols[m] = x.astype(np.float32)
        return pl.DataFrame(cols)

    def _signal_var(self, m: str) -> float:
        """Typical per-element variance of the signal part (for the noise-only switch)."""
        w = self.weights[m]
        return float((w**2).mean() * 0.15)
