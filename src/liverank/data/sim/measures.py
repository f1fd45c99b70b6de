"""Calibration measures computed on the written tables (polars frames in, numbers out).

Each function states exactly what it compares; :mod:`calibration` puts them next to targets.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from liverank.data.sim.clock import TICK_MS


# ---------------------------------------------------------------------------------- highlights
def forecastability(
    rooms: pl.DataFrame, enters: pl.DataFrame, min_ticks: int = 20
) -> dict[str, float]:
    """Naive last-value forecast vs the room's train-half mean, on 30 s enter counts.

    For every room with at least ``min_ticks`` ticks: ``x_k`` = number of ``enter`` events in
    tick ``k`` (30 s from ``start_ts``, zeros included). The first half of the room's ticks is
    its train period; on each tick ``k`` of the second half we compare the forecasts
    ``x_{k-1}`` (last value) and the train-half mean. Returns both MAEs pooled over all test
    ticks of all rooms and ``ratio = mae_last / mae_mean`` (< 1: the last value wins).
    """
    rooms = rooms.sort("live_id")
    live_id = rooms["live_id"].to_numpy()
    start, end = rooms["start_ts"].to_numpy(), rooms["end_ts"].to_numpy()
    n = -(-(end - start) // TICK_MS)  # [R] ticks per room
    offset = np.cumsum(n) - n
    r = np.searchsorted(live_id, enters["live_id"].to_numpy())
    k = np.clip((enters["ts"].to_numpy() - start[r]) // TICK_MS, 0, n[r] - 1)
    x = np.bincount(offset[r] + k, minlength=int(n.sum())).astype(np.float64)  # [T]
    cum = np.concatenate([[0.0], np.cumsum(x)])
    rooms_ok = np.flatnonzero(n >= min_ticks)
    half = n[rooms_ok] // 2
    train_mean = (cum[offset[rooms_ok] + half] - cum[offset[rooms_ok]]) / half  # [R']
    test_len = n[rooms_ok] - half
    room_of = np.repeat(np.arange(len(rooms_ok)), test_len)
    tick = np.repeat(offset[rooms_ok] + half, test_len) + (
        np.arange(int(test_len.sum())) - np.repeat(np.cumsum(test_len) - test_len, test_len)
    )
    mae_last = float(np.abs(x[tick] - x[tick - 1]).mean()) if len(tick) else float("nan")
    mae_mean = float(np.abs(x[tick] - train_mean[room_of]).mean()) if len(tick) else float("nan")
    return {
        "mae_last": mae_last,
        "mae_mean": mae_mean,
        "ratio": mae_last / mae_mean if mae_mean > 0 else float("nan"),
        "rooms": float(len(rooms_ok)),
        "enters_per_tick": float(x.mean()) if len(x) else 0.0,
    }


# ---------------------------------------------------------------------------- consistent style
def next_category(
    room_products: pl.DataFrame, products: pl.DataFrame, split_ts: int
) -> dict[str, float]:
    """Accuracy of a first-order Markov predictor of the next cat3 vs the most frequent cat3.

    Transitions are consecutive product introductions of one room (ordered by ts). Transitions
    before ``split_ts`` fit both predictors; the later ones are predicted. Markov: the most
    frequent next cat3 after the previous one (ties: smallest code; unseen previous cat3: the
    baseline). Baseline: the most frequent cat3 of the vertical (cat1) of the previous product.
    """
    seq = (
        room_products.join(products.select("product_id", "cat1", "cat3"), on="product_id")
        .sort("live_id", "ts", maintain_order=True)
        .with_columns(
            pl.col("cat3").shift(1).over("live_id").alias("prev"),
            pl.col("cat1").shift(1).over("live_id").alias("prev_cat1"),
        )
        .drop_nulls("prev")
    )
    fit = seq.filter(pl.col("ts") < split_ts)
    test = seq.filter(pl.col("ts") >= split_ts)
    if fit.height == 0 or test.height == 0:
        nan = float("nan")
        return {"markov": nan, "baseline": nan, "gap": nan, "transitions": float(test.height)}

    def most_frequent(df: pl.DataFrame, by: str, name: str) -> pl.DataFrame:
        return (
            df.group_by(by, "cat3").len()
            .sort(by, "len", "cat3", descending=[False, True, False])
            .group_by(by, maintain_order=True).first()
            .select(by, pl.col("cat3").alias(name))
        )  # fmt: skip

    base = most_frequent(fit.select(pl.col("cat1").alias("prev_cat1"), "cat3"), "prev_cat1", "base")
    markov = most_frequent(fit, "prev", "markov")
    pred = (
        test.join(base, on="prev_cat1", how="left")
        .join(markov, on="prev", how="left")
        .with_columns(pl.coalesce("markov", "base").alias("markov"))
    )
    acc_m = float((pred["markov"] == pred["cat3"]).mean())
    acc_b = float((pred["base"] == pred["cat3"]).mean())
    return {
        "markov": acc_m,
        "baseline": acc_b,
        "gap": acc_m - acc_b,
        "transitions": float(test.height),
    }


# ------------------------------------------------------------------------------- gifting graph
def gift_graph(gifts: pl.DataFrame, authors: pl.DataFrame, alpha: float = 1.0) -> dict[str, float]:
    """Degrees of the user-author gift graph and Swing-neighbour statistics.

    Swing (Yang et al. 2020): ``sim(i, j) = sum over user pairs u != v that both gifted i and j
    of 1 / (alpha + |I_u ∩ I_v|)``. Reports the mean / median number of authors per gifting
    user, the share of gifted authors with at least one Swing neighbour, the mean number of
    Swing neighbours per gifted author, and the share of top-1 Swing neighbours that have the
    author's category.
    """
    edges = gifts.select("user_id", "author_id").unique()
    if edges.height == 0:
        nan = float("nan")
        keys = ("authors_per_gifter_mean", "authors_per_gifter_median", "swing_authors_share",
                "swing_neighbours_mean", "swing_top1_same_category")  # fmt: skip
        return dict.fromkeys(keys, nan) | {"gifters": 0.0}
    degree = edges.group_by("user_id").len()["len"]
    pairs = edges.join(edges, on="user_id", suffix="_j").filter(
        pl.col("author_id") < pl.col("author_id_j")
    )
    overlap = (
        edges.join(edges, on="author_id", suffix="_v")
        .filter(pl.col("user_id") < pl.col("user_id_v"))
        .group_by("user_id", "user_id_v").len("overlap")
    )  # fmt: skip
    swing = (
        pairs.join(pairs, on=["author_id", "author_id_j"], suffix="_v")
        .filter(pl.col("user_id") < pl.col("user_id_v"))
        .join(overlap, on=["user_id", "user_id_v"])
        .group_by("author_id", "author_id_j")
        .agg((1.0 / (alpha + pl.col("overlap"))).sum().alias("sim"))
    )
    both = pl.concat([swing, swing.select(
        pl.col("author_id_j").alias("author_id"), pl.col("author_id").alias("author_id_j"), "sim")])  # fmt: skip
    gifted = edges["author_id"].n_unique()
    per_author = both.group_by("author_id").len()
    cat = authors.select("author_id", "category")
    top1 = (
        both.sort("sim", "author_id_j", descending=[True, False])
        .group_by("author_id", maintain_order=True).first()
        .join(cat, on="author_id")
        .join(cat.rename({"author_id": "author_id_j", "category": "category_j"}), on="author_id_j")
    )  # fmt: skip
    same = float((top1["category"] == top1["category_j"]).mean()) if top1.height else float("nan")
    return {
        "gifters": float(degree.len()),
        "authors_per_gifter_mean": float(degree.mean()),
        "authors_per_gifter_median": float(degree.median()),
        "swing_authors_share": per_author.height / gifted,
        "swing_neighbours_mean": float(per_author["len"].sum()) / gifted,
        "swing_top1_same_category": same,
    }


def community_concentration(gifts: pl.DataFrame, community: pl.DataFrame) -> float:
    """Share of gift events whose author is also gifted by *another* member of the giver's
    community (``community``: user_id -> community from ``sim_truth``)."""
    g = gifts.select("user_id", "author_id").join(community, on="user_id")
    if g.height == 0:
        return float("nan")
    givers = g.unique().group_by("community", "author_id").len("givers")
    g = g.join(givers, on=["community", "author_id"])
    return float((g["givers"] >= 2).mean())


# ------------------------------------------------------------------------------- cross-domain
def cross_domain(
    enters: pl.DataFrame, plays: pl.DataFrame, n_categories: int, seed: int = 0, min_enters: int = 3
) -> dict[str, float]:
    """Cosine between a user's live and short-video category profiles, vs shuffled users.

    ``enters``: (user_id, category) of live enters; ``plays``: (user_id, category) of video
    plays. Users with at least ``min_enters`` enters. ``gap`` = mean cosine of the same user
    minus the mean cosine after a seeded random permutation of the video profiles.
    """

    def profile(df: pl.DataFrame, users: np.ndarray) -> np.ndarray:
        counts = df.group_by("user_id", "category").len()
        u = np.searchsorted(users, counts["user_id"].to_numpy())
        ok = (u < len(users)) & (
            users[np.minimum(u, len(users) - 1)] == counts["user_id"].to_numpy()
        )
        m = np.zeros((len(users), n_categories + 1))
        np.add.at(m, (u[ok], counts["category"].to_numpy()[ok]), counts["len"].to_numpy()[ok])
        return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)

    per_user = enters.group_by("user_id").len()
    users = np.sort(per_user.filter(pl.col("len") >= min_enters)["user_id"].to_numpy())
    if len(users) < 2:
        return {"same_user": float("nan"), "shuffled": float("nan"), "gap": float("nan")}
    live, video = profile(enters, users), profile(plays, users)
    same = float(np.einsum("uc,uc->u", live, video).mean())
    perm = np.random.default_rng(seed).permutation(len(users))
    shuffled = float(np.einsum("uc,uc->u", live, video[perm]).mean())
    return {
        "same_user": same,
        "shuffled": shuffled,
        "gap": same - shuffled,
        "users": float(len(users)),
    }


# ---------------------------------------------------------------------------------- multimodal
def modality_r2(vectors: np.ndarray, target: np.ndarray) -> float:
    """Out-of-sample R^2 of a least-squares fit of ``target [N]`` on ``vectors [N, d]``
    (fit on even rows, scored on odd rows)."""
    if len(target) < 10 or np.var(target[1::2]) == 0:
        return float("nan")
    x = np.hstack([vectors, np.ones((len(vectors), 1))])
    coef, *_ = np.linalg.lstsq(x[0::2], target[0::2], rcond=None)
    resid = target[1::2] - x[1::2] @ coef
    return float(1.0 - resid.var() / target[1::2].var())


# --------------------------------------------------------------------------------------- slates
def slate_skew(impressions: pl.DataFrame, rooms: pl.DataFrame) -> dict[str, float]:
    """How far the impressions are from uniform slates over the rooms on air.

    Under uniform slates a room on air at request ``q`` is shown with probability
    ``k_q / n_q`` (``k_q`` impressions of the request, ``n_q`` rooms on air), so its expected
    impressions are ``E_r = sum of k_q / n_q`` over requests while it is on air. Returns the
    total-variation distance between the observed and the expected room distribution
    (0 = uniform up to sampling noise) and, for scale, its value under sampling noise alone
    (``noise_tv``: the expected TV of a multinomial draw from ``E``).
    """
    req = (
        impressions.group_by("request_id").agg(pl.col("ts").first(), pl.len().alias("k")).sort("ts")
    )
    ts = req["ts"].to_numpy()
    starts = np.sort(rooms["start_ts"].to_numpy())
    ends = np.sort(rooms["end_ts"].to_numpy())
    n_on = np.searchsorted(starts, ts, side="right") - np.searchsorted(ends, ts, side="right")
    w = np.concatenate([[0.0], np.cumsum(req["k"].to_numpy() / np.maximum(n_on, 1))])
    r = rooms.sort("live_id")
    expected = (
        w[np.searchsorted(ts, r["end_ts"].to_numpy())]
        - w[np.searchsorted(ts, r["start_ts"].to_numpy())]
    )
    observed = (
        r.select("live_id").join(impressions.group_by("live_id").len(), on="live_id", how="left")
        .fill_null(0)["len"].to_numpy().astype(np.float64)
    )  # fmt: skip
    total = observed.sum()
    p_exp = expected / max(expected.sum(), 1e-12)
    tv = 0.5 * float(np.abs(observed / max(total, 1) - p_exp).sum())
    draw = np.random.default_rng(0).multinomial(int(total), p_exp) if total else observed
    noise = 0.5 * float(np.abs(draw / max(total, 1) - p_exp).sum())
    return {
        "tv": tv,
        "noise_tv": noise,
        "rooms_on_air_mean": float(n_on.mean()) if len(n_on) else 0.0,
    }
