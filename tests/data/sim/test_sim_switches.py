"""Each phenomenon switch changes what it should, measured on the written tables."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from liverank.data import io
from liverank.data.sim import measures


def _table(out, name: str) -> pl.DataFrame:
    return io.read_table(out, name)


def _truth(out, name: str) -> pl.DataFrame:
    return pl.read_parquet(out / "sim_truth" / f"{name}.parquet")


def _forecast(out) -> dict[str, float]:
    enters = _table(out, "live_events").filter(pl.col("event") == "enter")
    return measures.forecastability(_table(out, "rooms"), enters)


def test_highlights_make_room_statistics_forecastable(variant):
    on, off = variant(), variant(highlights=False)
    ticks = _truth(off, "room_ticks").group_by("live_id").agg(pl.col("excitement").std())
    assert ticks["excitement"].fill_null(0).max() == 0  # constant within every room
    assert _truth(on, "room_ticks")["excitement"].std() > 0.2
    f_on, f_off = _forecast(on), _forecast(off)
    assert f_on["enters_per_tick"] > 0.2  # dense enough to compare
    assert f_on["ratio"] < 0.99, f_on  # the last value beats the train-half mean
    assert f_off["ratio"] > 1.0, f_off  # ... and no longer does without highlights
    assert f_on["ratio"] < f_off["ratio"] - 0.08


SHOP = {"author_type_shares": {"shopping": 0.7, "talent_show": 0.1, "chat": 0.1, "game": 0.1}}


def _next_category(out) -> dict[str, float]:
    meta = io.read_meta(out)
    split = meta.start_ts + int(0.6 * (meta.end_ts - meta.start_ts))
    return measures.next_category(_table(out, "room_products"), _table(out, "products"), split)


def test_consistent_style_makes_the_next_category_predictable(variant):
    on, off = (
        _next_category(variant(**SHOP)),
        _next_category(variant(**SHOP, consistent_style=False)),
    )
    assert on["transitions"] > 300 and off["transitions"] > 300, (on, off)
    assert on["gap"] > 0.25, on
    assert abs(off["gap"]) < 0.06, off


GIFTY = {"gifter_share": (0.3, 0.5, 0.8), "gift_rate": 1.0}


def test_gifting_communities_concentrate_gifts(variant):
    on, off = variant(**GIFTY), variant(**GIFTY, gifting_communities=False)
    conc = {}
    for name, out in (("on", on), ("off", off)):
        gifts = _table(out, "live_events").filter(pl.col("event") == "gift")
        assert gifts.height > 200
        community = _truth(out, "users").select("user_id", "community")
        conc[name] = measures.community_concentration(gifts, community)
    assert conc["on"] > 0.5 and conc["on"] > conc["off"] + 0.2, conc
    # on: members of a community share one favourite set; off: every user has an own set
    for out, shared in ((on, True), (off, False)):
        fav = _truth(out, "favourites").join(
            _truth(out, "users").select("user_id", "community"), on="user_id"
        )
        sets = fav.group_by("community", "user_id").agg(pl.col("author_id").sort())
        distinct = sets.group_by("community").agg(pl.col("author_id").n_unique())
        assert (distinct["author_id"].max() == 1) is shared


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def test_logging_policy_slates_versus_uniform_slates(variant):
    stats = {}
    for name, out in (("on", variant()), ("off", variant(logging_policy_slates=False))):
        imp = _table(out, "live_impressions")
        sk = measures.slate_skew(imp, _table(out, "rooms"))
        with_fans = imp.join(_table(out, "authors").select("author_id", "fans"), on="author_id")
        # within a slate, do popular authors get the first positions?
        rel = with_fans.with_columns(
            (pl.col("fans") - pl.col("fans").mean().over("request_id")).alias("fans_c")
        )
        stats[name] = (sk, _spearman(rel["position"].to_numpy(), rel["fans_c"].to_numpy()))
    (sk_on, rho_on), (sk_off, rho_off) = stats["on"], stats["off"]
    assert sk_on["tv"] > 0.1 and sk_on["tv"] > 4 * sk_on["noise_tv"], sk_on
    assert sk_off["tv"] < 2 * sk_off["noise_tv"] + 0.01, sk_off
    assert rho_on < -0.1 and abs(rho_off) < 0.03, (rho_on, rho_off)


def _r2(out, modality: str) -> float:
    seg = _table(out, "segments").join(_truth(out, "room_ticks"), on=["live_id", "ts"])
    dim = io.read_meta(out).segment_dim
    x = seg[modality].cast(pl.Array(pl.Float32, dim)).to_numpy().astype(np.float64)
    return measures.modality_r2(x, seg["excitement"].to_numpy().astype(np.float64))


def test_multimodal_segments_reflect_the_room_state(variant):
    # World v1 noise: on 8-dimensional segments the default noise (multimodal_noise 4) leaves a
    # visual R^2 of ~0.14, too little to compare the modalities (the knob has its own test)
    on, off = variant(multimodal_noise=1.0), variant(multimodal_noise=1.0, multimodal=False)
    assert _r2(on, "visual") > 0.5
    assert _r2(on, "visual") > _r2(on, "text")  # differently noisy views
    for m in ("visual", "speech", "text"):
        assert _r2(off, m) < 0.05
    # same scale either way, so a model cannot tell the switch from the norms alone
    norms = [
        np.linalg.norm(np.stack(_table(o, "segments")["visual"].to_numpy()), axis=1).mean()
        for o in (on, off)
    ]
    assert 0.5 < norms[0] / norms[1] < 2.0


def _cross_domain(out) -> dict[str, float]:
    rooms = _table(out, "rooms").select("live_id", "category")
    enters = _table(out, "live_events").filter(pl.col("event") == "enter").join(rooms, on="live_id")
    plays = (
        _table(out, "video_events").filter(pl.col("event") == "play")
        .join(_table(out, "videos").select("photo_id", pl.col("tag").alias("category")), on="photo_id")
    )  # fmt: skip
    return measures.cross_domain(enters, plays, int(enters["category"].max()) + 20)


def test_cross_domain_interest(variant):
    on, off = variant(), variant(cross_domain_interest=False)
    for out, lo, hi in ((on, 0.3, 1.0), (off, -0.05, 0.05)):
        users = _truth(out, "users")
        live = np.stack(users["live_interest"].to_numpy())
        video = np.stack(users["video_interest"].to_numpy())
        same = np.einsum("uk,uk->u", live, video).mean()
        shuffled = np.einsum("uk,uk->u", live, np.roll(video, 1, axis=0)).mean()
        assert lo < same - shuffled < hi
    assert _cross_domain(on)["gap"] > 0.1
    assert abs(_cross_domain(off)["gap"]) < 0.03


def test_on_air_schedule_off_puts_every_author_on_air_all_the_time(variant, dense):
    out = variant(on_air_schedule=False)
    rooms, meta = _table(out, "rooms"), io.read_meta(out)
    assert rooms.height == dense["n_authors"] == rooms["author_id"].n_unique()
    assert (rooms["start_ts"] == meta.start_ts).all() and (
        rooms["end_ts"] == meta.end_ts - 1000
    ).all()
    per_req = _table(out, "live_impressions").group_by("request_id").len()
    assert per_req["len"].min() >= 4  # every slate is full: all authors are candidates
    on = _table(variant(), "rooms")
    assert on.height > dense["n_authors"] and (on["end_ts"] - on["start_ts"]).max() < 9 * 3_600_000


def test_activity_groups(variant):
    on, off = variant(), variant(activity_groups=False)
    disp = {}
    for name, out in (("on", on), ("off", off)):
        users = _table(out, "users")
        per_user = users.join(
            _table(out, "live_impressions").group_by("user_id").len(), on="user_id", how="left"
        ).fill_null(0)
        counts = per_user["len"].to_numpy().astype(float)
        disp[name] = counts.var() / counts.mean()
        if name == "on":
            means = per_user.group_by("activity").agg(pl.col("len").mean()).sort("activity")["len"]
            assert set(users["activity"].unique()) == {1, 2, 3}
            assert means[2] > 3 * means[0]
        else:
            assert (users["activity"] == 2).all()
    assert disp["on"] > 3 * disp["off"], disp


@pytest.mark.parametrize("switch", ["highlights", "consistent_style", "multimodal"])
def test_switches_leave_unrelated_tables_alone(variant, switch):
    """Common random numbers: a content switch does not change who the users are."""
    on, off = variant(), variant(**{switch: False})
    assert _table(on, "users").equals(_table(off, "users"))
    assert _table(on, "rooms").equals(_table(off, "rooms"))
