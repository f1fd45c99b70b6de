"""Brute-force reference implementations (plain Python, one row at a time) for the tests.

Written from the rules in ``liverank.data.schema`` / ``liverank.data.visits`` and the sample
format in ``liverank.features.spec``, independently of the vectorised code under test.
"""

from __future__ import annotations

from collections import defaultdict

import polars as pl

from liverank.data.schema import (
    AUTHOR_TYPES,
    CLICK_WINDOW_MS,
    EFFECTIVE_VIEW_MS,
    LIVE_EVENTS,
    NOT_IN_LIVE_SEQUENCE,
    VIDEO_EVENTS,
)


def log2_bucket(units: int, vocab: int) -> int:
    """``1 + bit_length(units)`` clipped to ``vocab - 1``, with integer arithmetic."""
    return 1 + min(units.bit_length(), vocab - 2)


def gap_bucket(gap_ms: int, vocab: int = 24) -> int:
    return log2_bucket(gap_ms // 1000, vocab) if gap_ms > 0 else 0


def play_bucket(play_ms: int, vocab: int = 12) -> int:
    return log2_bucket(play_ms // 1000, vocab) if play_ms > 0 else 0


def room_age_bucket(age_ms: int, vocab: int = 16) -> int:
    return log2_bucket(age_ms // 60_000, vocab) if age_ms >= 0 else 0


def reference_visits(
    impressions: pl.DataFrame, live_events: pl.DataFrame, rooms: pl.DataFrame, long_view_ms: int
) -> list[dict]:
    """The visit rule applied to each impression with list scans."""
    room_end = dict(zip(rooms["live_id"], rooms["end_ts"], strict=True))
    times: dict[tuple[int, int, str], list[int]] = defaultdict(list)
    for e in live_events.iter_rows(named=True):
        times[(e["user_id"], e["live_id"], e["event"])].append(e["ts"])
    shown: dict[tuple[int, int], list[tuple[int, int, int]]] = defaultdict(list)
    for i in impressions.iter_rows(named=True):
        shown[(i["user_id"], i["live_id"])].append((i["ts"], i["request_id"], i["position"]))
    for v in shown.values():
        v.sort()

    out = []
    for i in impressions.iter_rows(named=True):
        u, r, t = i["user_id"], i["live_id"], i["ts"]
        order = shown[(u, r)]
        k = order.index((t, i["request_id"], i["position"]))
        win_end = t + CLICK_WINDOW_MS
        if k + 1 < len(order):
            win_end = min(win_end, order[k + 1][0])
        enters = [e for e in times[(u, r, "enter")] if t <= e < win_end]
        row = {"clicked": bool(enters), "enter_ts": None, "exit_ts": None, "stay_ms": 0}
        row |= {c: None for c in ("t_click", "t_evtr", "t_lvtr", "t_ltr", "t_cmtr", "t_gtr")}
        if enters:
            enter = min(enters)
            exits = [x for x in times[(u, r, "exit")] if x >= enter]
            leave = min(exits) if exits else room_end[r]
            stay = leave - enter
            row |= {"enter_ts": enter, "exit_ts": leave, "stay_ms": stay, "t_click": enter}
            if stay >= EFFECTIVE_VIEW_MS:
                row["t_evtr"] = enter + EFFECTIVE_VIEW_MS
            if stay >= long_view_ms:
                row["t_lvtr"] = enter + long_view_ms
            for task, event in (("ltr", "like"), ("cmtr", "comment"), ("gtr", "gift")):
                inside = [x for x in times[(u, r, event)] if enter <= x <= leave]
                row[f"t_{task}"] = min(inside) if inside else None
        for task, col in (("ctr", "t_click"), ("evtr", "t_evtr"), ("lvtr", "t_lvtr")):
            row[task] = int(row[col] is not None)
        for task in ("ltr", "cmtr", "gtr"):
            row[task] = int(row[f"t_{task}"] is not None)
        out.append(row)
    return out


def reference_sequences(
    tables: dict[str, pl.DataFrame], users: list[int], query_ts: list[int], seq_len: int
) -> list[dict[str, list[int]]]:
    """Per query: the live / video sequence columns (padded lists) and lengths."""
    category = dict(zip(tables["rooms"]["live_id"], tables["rooms"]["category"], strict=True))
    tag = dict(zip(tables["videos"]["photo_id"], tables["videos"]["tag"], strict=True))
    live = defaultdict(list)  # user -> [(ts, file row, features)]
    for n, e in enumerate(tables["live_events"].iter_rows(named=True)):
        if e["event"] not in NOT_IN_LIVE_SEQUENCE:
            feats = {
                "author": e["author_id"],
                "category": category[e["live_id"]],
                "action": 1 + LIVE_EVENTS.index(e["event"]),
            }
            live[e["user_id"]].append((e["ts"], n, feats))
    video = defaultdict(list)
    for n, e in enumerate(tables["video_events"].iter_rows(named=True)):
        if e["event"] != "impression":
            feats = {
                "author": e["author_id"],
                "tag": tag[e["photo_id"]],
                "action": 1 + VIDEO_EVENTS.index(e["event"]),
                "play": play_bucket(e["play_ms"]),
            }
            video[e["user_id"]].append((e["ts"], n, feats))

    out = []
    for u, t in zip(users, query_ts, strict=True):
        row: dict[str, list[int]] = {}
        for domain, hist, names in (
            ("live", live, ("author", "category", "action", "age")),
            ("video", video, ("author", "tag", "action", "play", "age")),
        ):
            before = sorted((h for h in hist[u] if h[0] < t), key=lambda h: (h[0], h[1]))
            last = before[::-1][:seq_len]
            for name in names:
                if name == "age":
                    vals = [gap_bucket(t - h[0]) for h in last]
                else:
                    vals = [h[2][name] for h in last]
                row[f"{domain}_seq_{name}"] = vals + [0] * (seq_len - len(vals))
            row[f"{domain}_seq_len"] = len(last)
        out.append(row)
    return out


def reference_side_features(
    tables: dict[str, pl.DataFrame], impression: dict, offset_ms: int
) -> dict:
    """Sparse features of one impression row."""
    user = tables["users"].filter(pl.col("user_id") == impression["user_id"]).row(0, named=True)
    author = (
        tables["authors"].filter(pl.col("author_id") == impression["author_id"]).row(0, named=True)
    )
    room = tables["rooms"].filter(pl.col("live_id") == impression["live_id"]).row(0, named=True)
    return {
        "user_age": user["age"],
        "user_gender": user["gender"],
        "user_device": user["device"],
        "user_activity": user["activity"],
        "author_type": 1 + AUTHOR_TYPES.index(author["author_type"]),
        "author_fans": author["fans"],
        "room_category": room["category"],
        "room_age_bucket": room_age_bucket(impression["ts"] - room["start_ts"]),
        "position": impression["position"] + 1,
        "hour_of_day": ((impression["ts"] + offset_ms) // 3_600_000) % 24 + 1,
    }
