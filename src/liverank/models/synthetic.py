"""Tiny synthetic batches in the sample format, with a planted signal a model must learn.

For model tests and throughput benchmarks, without building a dataset. The *world* (which
category each author streams in, each user's favourite category, ...) is fixed by
``world_seed``, so train and test batches drawn with different ``seed`` share it.

Planted signal (``planted=True``). Each user has a hidden favourite category; ~70 % of the live
sequence and ~60 % of the video sequence come from it. A candidate room is clicked with
probability ``sigmoid(-1.8 + q + 2.5 match + seen + 0.5 top3 + 0.3 (activity - 2))`` where
``q ~ N(0, 1)`` is the author's hidden quality (learnable from the author id alone),
``match`` = the room's category is the user's favourite (only inferable from the sequences),
``seen`` = the room's author is in the user's live sequence (a target-attention signal) and
``top3`` = the position is 1-3. Deeper labels (evtr, lvtr, ltr, cmtr, gtr) are
thinned from clicks, rarer for deeper behaviours, and also depend on ``match`` / ``seen``.
With ``planted=False`` every label is drawn independently of the features at similar rates.

Long histories (feature maps with ``long_len > 0``, the fields of the long-history batch
contract: ``long_<d>_<x>``, ``long_<d>_lv``, ``long_<d>_dt``, ``long_<d>_len``): the click logit
also gets ``+2 long_seen``, where ``long_seen`` = the candidate's author is among the user's
long video history (planted for half the samples), which the 20-item sequences do not show.
They are drawn from their own random stream, so batches of maps without them are unchanged.

Shopping fields (``synthetic_feature_map(shopping=True)``, the columns of ``--shopping`` samples,
:mod:`liverank.data.shopping`): a product sequence (products of the user's favourite category
with probability 0.6: the cross-domain consistent intention), the room's current product (half
of the rooms sell one of their category) and the labels ``btr`` / ``pctr``, thinned from clicks
and more likely when the room sells in the user's favourite category. Also from their own
random stream.
"""

from __future__ import annotations

import numpy as np
import torch

from liverank.data.shopping import PRODUCT_SEQ_FEATURES, ROOM_PRODUCT_FIELDS, SHOP_TASKS
from liverank.errors import ConfigError
from liverank.features.spec import SPARSE_FIELDS, TASKS, FeatureMap, seq_fields

_HOURS = 24
_POSITIONS = 10
_TIME_GAPS = 20
_LIVE_ACTIONS = 8
_VIDEO_ACTIONS = 6
_PLAY_BUCKETS = 8
#: click-logit effect of "the candidate's author is in the long video history" (long_len > 0)
_LONG_SEEN_EFFECT = 2.0
#: MMBee fields of ``synthetic_feature_map(mmbee=True)``: segments, vector length, neighbours
_SEGMENTS, _SEGMENT_DIM, _GRAPH_K = 5, 16, 6
#: products per category of the shopping fields
_PRODUCTS_PER_CAT = 6
#: LiveForesighter fields of ``synthetic_feature_map(foresight=True)``: statistic windows T,
#: room products L
_ROOM_STATS_T, _ROOM_PRODUCTS_L = 13, 6


def synthetic_feature_map(
    n_users: int = 500,
    n_authors: int = 120,
    n_categories: int = 8,
    seq_len: int = 20,
    tasks: list[str] | None = None,
    hash_buckets: dict[str, int] | None = None,
    long_len: int = 0,
    shopping: bool = False,
    mmbee: bool = False,
    foresight: bool = False,
) -> FeatureMap:
    """A feature map with the standard sparse and sequence fields of ``features/spec.py``.

    With ``long_len > 0``, :func:`synthetic_batches` also fills the long-history fields of
    ``FeatureMap.long_fields`` (``[B, long_len]``, see :func:`_long_history`); with
    ``shopping``, the product sequence, room product fields and shopping tasks (module doc);
    with ``mmbee``, MMBee's segment and metapath-neighbour fields (:func:`_mmbee`); with
    ``foresight``, LiveForesighter's room statistics and room products (:func:`_foresight`).
    """
    if n_authors < n_categories:
        raise ConfigError(f"need at least one author per category ({n_authors} < {n_categories})")
    tables = {
        "user": n_users + 1,
        "user_age": 8,
        "user_gender": 3,
        "user_device": 5,
        "user_activity": 4,
        "author": n_authors + 1,
        "author_type": 5,
        "author_fans": 8,
        "category": n_categories + 1,
        "room_age_bucket": 8,
        "position": _POSITIONS + 1,
        "hour_of_day": _HOURS + 1,
        "live_action": _LIVE_ACTIONS + 1,
        "time_gap": _TIME_GAPS,
        "video_tag": 2 * n_categories + 1,
        "video_action": _VIDEO_ACTIONS + 1,
        "play_bucket": _PLAY_BUCKETS,
    }
    extra: dict = {}
    if shopping:
        tables |= {
            "product": n_categories * _PRODUCTS_PER_CAT + 1,
            "product_cat": n_categories + 1,
            "product_action": 4,
        }
        extra = {
            "seq_fields": {
                "live": seq_fields("live"),
                "video": seq_fields("video"),
                "product": {f"product_seq_{k}": v for k, v in PRODUCT_SEQ_FEATURES.items()},
            },
            "sparse_fields": {
                **SPARSE_FIELDS,
                **ROOM_PRODUCT_FIELDS,
            },
        }
    if foresight:
        tables.setdefault("product", n_categories * _PRODUCTS_PER_CAT + 1)
        tables |= {"product_cat1": 3, "product_cat2": n_categories + 1}
        tables.setdefault("product_cat", n_categories + 1)
    default_tasks = [*TASKS, *SHOP_TASKS] if shopping else list(TASKS)
    return FeatureMap(
        seq_len=seq_len,
        tasks=list(tasks or default_tasks),
        tables=tables,
        hash_buckets=dict(hash_buckets or {}),
        dataset="synthetic",
        long_len=long_len,
        segments=_SEGMENTS if mmbee else 0,
        segment_dim=_SEGMENT_DIM if mmbee else 0,
        graph_k=_GRAPH_K if mmbee else 0,
        author_attr_dim=_SEGMENT_DIM if mmbee else 0,
        room_stats_window=_ROOM_STATS_T if foresight else 0,
        room_products_len=_ROOM_PRODUCTS_L if foresight else 0,
        **extra,
    )


class _World:
    """Hidden structure shared by every batch drawn from one feature map and world seed."""

    def __init__(self, fm: FeatureMap, world_seed: int) -> None:
        missing = [t for t in ("user", "author", "category") if t not in fm.tables]
        if missing:
            raise ConfigError(
                f"synthetic batches need tables {missing}; build the map with synthetic_feature_map"
            )
        rng = np.random.default_rng(world_seed)
        self.n_users = fm.tables["user"] - 1
        self.n_authors = fm.tables["author"] - 1
        self.n_cats = fm.tables["category"] - 1
        # Authors 1..A; every category has at least one author.
        cats = np.concatenate(
            [
                np.arange(1, self.n_cats + 1),
                rng.integers(1, self.n_cats + 1, self.n_authors - self.n_cats),
            ]
        )
        self.author_cat = np.concatenate([[0], rng.permutation(cats)])  # [A+1]
        self.author_type = np.concatenate([[0], (self.author_cat[1:] - 1) % 4 + 1])
        self.author_fans = np.concatenate([[0], rng.integers(1, 8, self.n_authors)])
        self.author_quality = np.concatenate([[0.0], rng.normal(0.0, 1.0, self.n_authors)])
        order = np.argsort(self.author_cat[1:], kind="stable") + 1
        counts = np.bincount(self.author_cat[1:], minlength=self.n_cats + 1)
        self.authors_by_cat = order  # authors sorted by category
        self.cat_start = np.concatenate([[0], np.cumsum(counts)[:-1]])  # [C+1]
        self.cat_count = counts
        self.user_fav = np.concatenate([[0], rng.integers(1, self.n_cats + 1, self.n_users)])
        self.user_side = {
            "user_age": np.concatenate([[0], rng.integers(1, 8, self.n_users)]),
            "user_gender": np.concatenate([[0], rng.integers(1, 3, self.n_users)]),
            "user_device": np.concatenate([[0], rng.integers(1, 5, self.n_users)]),
            "user_activity": np.concatenate([[0], rng.integers(1, 4, self.n_users)]),
        }

    def author_in(self, cats: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A uniformly random author of each category in ``cats`` (any shape)."""
        pick = (rng.random(cats.shape) * self.cat_count[cats]).astype(np.int64)
        return self.authors_by_cat[self.cat_start[cats] + pick]


def _sequence(
    world: _World, rng: np.random.Generator, fav: np.ndarray, n: int, length: int, p_fav: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lengths ``[N]``, categories ``[N, L]`` and a validity mask ``[N, L]`` of a sequence."""
    lens = rng.integers(0, length + 1, n)
    lens[rng.random(n) < 0.1] = 0  # some users have no history
    valid = np.arange(length)[None, :] < lens[:, None]  # [N, L]
    cats = np.where(
        rng.random((n, length)) < p_fav,
        fav[:, None],
        rng.integers(1, world.n_cats + 1, (n, length)),
    )
    return lens, np.where(valid, cats, 0), valid


def _long_history(
    world: _World, rng: np.random.Generator, fav: np.ndarray, author: np.ndarray, fm: FeatureMap
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Long histories of both domains (most recent first, 0-padded) and ``long_seen`` ``[N]``.

    Half of the video items come from the user's favourite category, half from any author; with
    probability 1/2 the candidate's author is planted at 1-3 random real positions of the video
    history. ``long_seen`` = the candidate's author is in the long video history; with
    ``planted=True`` it raises the click logit by ``_LONG_SEEN_EFFECT`` (a signal that only a
    model reading the long history can learn). About 20 % of the items are long views (``lv``).
    """
    n, k = author.shape[0], fm.long_len
    cols: dict[str, np.ndarray] = {}
    seen = np.zeros(n)
    for domain in ("live", "video"):
        lens = rng.integers(k // 4, k + 1, n)
        lens[rng.random(n) < 0.1] = 0
        valid = np.arange(k)[None, :] < lens[:, None]  # [N, K]
        any_cat = rng.integers(1, world.n_cats + 1, (n, k))
        cats = np.where(
            rng.random((n, k)) < (0.7 if domain == "live" else 0.5), fav[:, None], any_cat
        )
        authors = world.author_in(cats, rng)  # [N, K]
        if domain == "video":
            plant = (rng.random(n) < 0.5) & (lens > 0)
            pos = (rng.random((n, 3)) * lens[:, None]).astype(np.int64)  # [N, 3]
            rows = np.repeat(np.arange(n), 3)
            hit = np.repeat(plant, 3) & (rng.random(3 * n) < 0.67)
            hit[::3] = plant  # at least one planted position
            authors[rows[hit], pos.reshape(-1)[hit]] = np.repeat(author, 3)[hit]
            seen = ((authors == author[:, None]) & valid).any(1).astype(np.float64)
        cats = world.author_cat[authors]
        lv = valid & (rng.random((n, k)) < 0.2)
        dt_s = np.cumsum(rng.exponential(3_600.0, (n, k)), axis=1)  # [N, K] seconds, increasing
        gap = np.minimum(2 + np.floor(np.log2(np.maximum(dt_s, 1.0))), _TIME_GAPS - 1)
        p = f"long_{domain}_"
        cols[p + "author"] = np.where(valid, authors, 0)
        if domain == "live":
            cols[p + "category"] = np.where(valid, cats, 0)
            action = np.where(lv, _LIVE_ACTIONS, rng.integers(1, _LIVE_ACTIONS, (n, k)))
        else:
            cols[p + "tag"] = np.where(valid, 2 * (cats - 1) + 1 + rng.integers(0, 2, (n, k)), 0)
            action = rng.integers(1, _VIDEO_ACTIONS + 1, (n, k))
            cols[p + "play"] = np.where(valid, rng.integers(1, _PLAY_BUCKETS, (n, k)), 0)
        cols[p + "action"] = np.where(valid, action, 0)
        cols[p + "age"] = np.where(valid, gap, 0).astype(np.int64)
        cols[p + "lv"] = lv.astype(np.int64)
        cols[p + "dt"] = np.where(valid, dt_s, 0.0).astype(np.float32)
        cols[p + "len"] = lens
    return cols, seen


def _draw(fm: FeatureMap, world: _World, n: int, seed: int, planted: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    length = fm.seq_len
    user = rng.integers(1, world.n_users + 1, n)
    fav = world.user_fav[user]
    cand_cat = np.where(rng.random(n) < 0.35, fav, rng.integers(1, world.n_cats + 1, n))
    author = world.author_in(cand_cat, rng)
    cols: dict[str, np.ndarray] = {"user_id": user, "author_id": author}
    cols.update({k: v[user] for k, v in world.user_side.items()})
    cols["author_type"] = world.author_type[author]
    cols["author_fans"] = world.author_fans[author]
    cols["room_category"] = world.author_cat[author]
    cols["room_age_bucket"] = rng.integers(1, 8, n)
    cols["position"] = rng.integers(1, _POSITIONS + 1, n)
    cols["hour_of_day"] = rng.integers(1, _HOURS + 1, n)

    def gaps(valid: np.ndarray) -> np.ndarray:  # most recent first: non-decreasing gaps
        g = np.sort(rng.integers(1, _TIME_GAPS, valid.shape), axis=1)
        return np.where(valid, g, 0)

    live_len, live_cat, live_valid = _sequence(world, rng, fav, n, length, 0.8)
    live_author = np.where(live_valid, world.author_in(live_cat, rng), 0)
    cols |= {
        "live_seq_author": live_author,
        "live_seq_category": live_cat,
        "live_seq_action": np.where(
            live_valid, rng.integers(1, _LIVE_ACTIONS + 1, live_cat.shape), 0
        ),
        "live_seq_age": gaps(live_valid),
        "live_seq_len": live_len,
    }
    video_len, video_cat, video_valid = _sequence(world, rng, fav, n, length, 0.6)
    tag = 2 * (video_cat - 1) + 1 + rng.integers(0, 2, video_cat.shape)
    cols |= {
        "video_seq_author": np.where(video_valid, world.author_in(video_cat, rng), 0),
        "video_seq_tag": np.where(video_valid, tag, 0),
        "video_seq_action": np.where(
            video_valid, rng.integers(1, _VIDEO_ACTIONS + 1, video_cat.shape), 0
        ),
        "video_seq_play": np.where(video_valid, rng.integers(1, _PLAY_BUCKETS, video_cat.shape), 0),
        "video_seq_age": gaps(video_valid),
        "video_seq_len": video_len,
    }

    long_seen = np.zeros(n)
    if fm.long_len > 0:
        long_cols, long_seen = _long_history(
            world, np.random.default_rng([seed, 7]), fav, author, fm
        )
        cols |= long_cols
    match = (cols["room_category"] == fav).astype(np.float64)
    seen = (live_author == author[:, None]).any(1).astype(np.float64)
    if planted:
        top3 = (cols["position"] <= 3).astype(np.float64)
        quality = world.author_quality[author]
        activity = cols["user_activity"] - 2
        logit = -2.0 + 1.0 * quality + 3.0 * match + 1.0 * seen + 0.5 * top3 + 0.3 * activity
        logit = logit + _LONG_SEEN_EFFECT * long_seen
        p_click = 1 / (1 + np.exp(-logit))
    else:
        p_click = np.full(n, 0.3)
        match = np.full(n, match.mean())
        seen = np.full(n, seen.mean())
    ctr = rng.random(n) < p_click
    evtr = ctr & (rng.random(n) < 0.55 + 0.3 * match)
    deeper = {
        "lvtr": 0.25 + 0.3 * match,
        "ltr": 0.15 + 0.2 * seen,
        "cmtr": 0.1 + 0.1 * seen,
        "gtr": 0.03 + 0.1 * seen * match,
    }
    labels = {"ctr": ctr, "evtr": evtr}
    labels |= {k: evtr & (rng.random(n) < p) for k, p in deeper.items()}
    cols |= {k: v.astype(np.float32) for k, v in labels.items()}
    cols["stay_ms"] = (ctr * rng.exponential(30_000.0, n) * (1 + match)).astype(np.float32)
    if "product" in fm.seq_fields:
        cols |= _shopping(world, np.random.default_rng([seed, 11]), fav, cols, length, ctr)
    if fm.segments or fm.graph_k:
        cols |= _mmbee(fm, world, np.random.default_rng([seed, 13]), fav, cols, planted)
    if fm.room_stats_window or fm.room_products_len:
        cols |= _foresight(fm, np.random.default_rng([seed, 17]), n)
    return cols


def _foresight(fm: FeatureMap, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """``room_stats [n, 12, T]`` (Poisson counts around a per-row level, zeros before a random
    start) and ``room_products [n, L, 4]`` (a random number of products, left-padded; cat1 /
    cat2 / cat3 consistent per category). No planted signal: the fields only need to flow."""
    out: dict[str, np.ndarray] = {}
    if fm.room_stats_window:
        t = fm.room_stats_window
        level = rng.gamma(2.0, 3.0, (n, 12, 1))  # [n, 12, 1]
        stats = rng.poisson(level, (n, 12, t)).astype(np.float32)
        start = rng.integers(0, t, n)  # windows before the room went on air are zeros
        stats *= (np.arange(t)[None, None, :] >= start[:, None, None]).astype(np.float32)
        out["room_stats"] = stats
    if fm.room_products_len:
        length, n_cat = fm.room_products_len, fm.tables["product_cat"] - 1
        cat3 = rng.integers(1, n_cat + 1, (n, length))
        per_cat = max((fm.tables["product"] - 1) // max(n_cat, 1), 1)
        product = (cat3 - 1) * per_cat + rng.integers(1, per_cat + 1, (n, length))
        seq = np.stack([product, (cat3 - 1) % 2 + 1, cat3, cat3], axis=-1)  # [n, L, 4]
        count = rng.integers(0, length + 1, n)
        seq[np.arange(length)[None, :] < (length - count)[:, None]] = 0
        out["room_products"] = seq.astype(np.int64)
    return out


def _mmbee(
    fm: FeatureMap,
    world: _World,
    rng: np.random.Generator,
    fav: np.ndarray,
    cols: dict[str, np.ndarray],
    planted: bool,
) -> dict[str, np.ndarray]:
    """MMBee's fields, with two planted gift signals (``planted``): the room's *current*
    excitement (a latent read by the visual vector of the most recent segment, noisily by the
    others) multiplies the gift rate by up to 4 for authors with ``author_quality > 0``
    (author-specific: what per-author queries capture), and a user whose graph neighbours
    (``u2a2a``) include the target author gifts 3 times as often."""
    n = len(fav)
    author = cols["author_id"]
    out: dict[str, np.ndarray] = {}
    if fm.segments:
        s, d = fm.segments, fm.segment_dim
        excite = rng.random((n, s))  # [n, S] latent excitement per segment, most recent first
        present = np.arange(s)[None, :] < rng.integers(1, s + 1, n)[:, None]  # [n, S]
        direction = np.random.default_rng(99).standard_normal((3, d))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        for i, (m, noise) in enumerate((("visual", 0.3), ("speech", 1.0), ("text", 2.0))):
            vec = excite[..., None] * 3 * direction[i] + noise * rng.standard_normal((n, s, d))
            out[f"seg_{m}"] = np.where(present[..., None], vec, 0).astype(np.float32)
        out["seg_mask"] = present.astype(np.float32)
        if planted:
            boost = 1 + 3 * excite[:, 0] * (world.author_quality[author] > 0)
            cols["gtr"] = cols["evtr"] * (rng.random(n) < np.minimum(0.04 * boost, 1))
    if fm.graph_k:
        k = fm.graph_k
        same = world.author_in(np.repeat(fav, k), rng).reshape(n, k)  # authors of u's taste
        has = rng.random(n) < 0.7  # users with gifts before the day
        u2a2a = np.where(has[:, None], same, 0)
        out["gie_u2a2a"] = u2a2a
        out["gie_u2a2u2a"] = np.where(has[:, None], np.roll(same, 1, axis=1), 0)
        out["gie_u2a2u"] = np.where(has[:, None], rng.integers(1, world.n_users + 1, (n, k)), 0)
        cat = world.author_cat[author]
        out["gie_a2a"] = world.author_in(np.repeat(cat, k), rng).reshape(n, k)
        out["gie_a2u2a"] = world.author_in(np.repeat(cat, k), rng).reshape(n, k)
        if fm.author_attr_dim:  # a fixed content vector per author (its category's, noisy)
            d3 = 3 * fm.author_attr_dim
            table = np.random.default_rng(77).standard_normal((world.author_cat.size, d3))
            table += (
                2
                * np.random.default_rng(78).standard_normal((int(world.author_cat.max()) + 1, d3))[
                    world.author_cat
                ]
            )
            table[0] = 0
            for c in ("gie_u2a2u2a", "gie_u2a2a", "gie_a2a", "gie_a2u2a"):
                ids = out[c]
                out[c.replace("gie_", "gie_attr_", 1)] = np.where(
                    (ids > 0)[..., None], table[ids], 0
                ).astype(np.float32)
        if planted:
            linked = (u2a2a == author[:, None]).any(1)
            extra = cols["evtr"].astype(bool) & linked & (rng.random(n) < 0.1)
            cols["gtr"] = np.maximum(cols["gtr"], extra.astype(np.float32))
    return out


def _shopping(
    world: _World,
    rng: np.random.Generator,
    fav: np.ndarray,
    cols: dict[str, np.ndarray],
    length: int,
    ctr: np.ndarray,
) -> dict[str, np.ndarray]:
    """The shopping columns (module doc); ``ctr`` [N] bool, the clicks to thin from."""
    n = fav.shape[0]
    lens, cats, valid = _sequence(world, rng, fav, n, length, 0.6)
    products = np.where(
        valid, (cats - 1) * _PRODUCTS_PER_CAT + 1 + rng.integers(0, 6, cats.shape), 0
    )
    gaps = np.where(valid, np.sort(rng.integers(1, _TIME_GAPS, valid.shape), axis=1), 0)
    sells = rng.random(n) < 0.5  # the room is selling something now
    room_cat = np.where(sells, cols["room_category"], 0)
    room_product = np.where(
        sells, (room_cat - 1) * _PRODUCTS_PER_CAT + 1 + rng.integers(0, 6, n), 0
    )
    # buying intent: the room sells the user's favourite category, or something she clicked
    bought_here = (products == room_product[:, None]).any(1) & sells
    p_bag = 0.1 + 0.4 * (sells & (room_cat == fav)) + 0.3 * bought_here
    btr = ctr & (rng.random(n) < p_bag)
    pctr = btr & (rng.random(n) < 0.5)
    return {
        "product_seq_item": products,
        "product_seq_cat": cats,
        "product_seq_action": np.where(valid, rng.integers(1, 4, cats.shape), 0),
        "product_seq_age": gaps,
        "product_seq_len": lens,
        "room_product": room_product,
        "room_product_cat": room_cat,
        "btr": btr.astype(np.float32),
        "pctr": pctr.astype(np.float32),
    }


def synthetic_batches(
    feature_map: FeatureMap,
    n_batches: int,
    batch_size: int,
    seed: int = 0,
    planted: bool = True,
    world_seed: int = 0,
    mask_rate: float = 0.0,
) -> list[dict[str, torch.Tensor]]:
    """``n_batches`` batches of ``batch_size`` samples in the format of ``features/spec.py``.

    Ids and sequences are int64 (sequences ``[B, seq_len]``, 0 = padding), labels and
    ``mask_<task>`` float32. ``mask_rate`` masks that fraction of labels per task at random.
    Deterministic for (feature map, seed, world_seed).
    """
    known = (*TASKS, *SHOP_TASKS)
    unknown = [t for t in feature_map.tasks if t not in known]
    if unknown:
        raise ConfigError(f"synthetic batches only know the tasks {known}, not {unknown}")
    world = _World(feature_map, world_seed)
    n = n_batches * batch_size
    cols = _draw(feature_map, world, n, seed, planted)
    rng = np.random.default_rng([seed, 1])
    for t in feature_map.tasks:
        cols[f"mask_{t}"] = (rng.random(n) >= mask_rate).astype(np.float32)
    ids = np.arange(n, dtype=np.int64) + seed * 10_000_000
    cols |= {
        "sample_id": ids,
        "request_id": ids // 8,
        "ts": 1_700_000_000_000 + np.arange(n, dtype=np.int64) * 1_000,
        "day": np.zeros(n, dtype=np.int64),
        "hour": (np.arange(n, dtype=np.int64) * 1_000) // 3_600_000,
        "live_id": cols["author_id"] * 1_000 + rng.integers(0, 5, n),
    }
    tensors = {
        k: torch.from_numpy(
            np.ascontiguousarray(v if v.dtype == np.float32 else v.astype(np.int64))
        )
        for k, v in cols.items()
    }
    return [
        {k: v[i * batch_size : (i + 1) * batch_size] for k, v in tensors.items()}
        for i in range(n_batches)
    ]


#: fields that describe the user and the moment of a request, not the candidate room
REQUEST_PREFIXES = ("user_", "video_seq_", "live_seq_", "long_", "product_seq_")
REQUEST_FIELDS = ("ts", "day", "hour", "hour_of_day", "request_id")


def as_request(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``batch`` made one ranking request: every user- and time-side field (the user's
    features and behaviour sequences, ``ts``, ``request_id``) takes row 0's value in every row,
    the candidate's fields are kept. What a service's batch looks like, and what a program
    exported for one request (``one_request=True``) accepts."""

    def shared(name: str) -> bool:
        return name.startswith(REQUEST_PREFIXES) or name in REQUEST_FIELDS

    return {k: (v[:1].expand_as(v).contiguous() if shared(k) else v) for k, v in batch.items()}
