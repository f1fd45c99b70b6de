"""How much does a user's long short-video history say about the next click beyond its last 50 items?

Cross (Moment&Cross section 4) searches 1,000-item histories; the PLE baseline's DIN already
reads the last 50 short-video items. Whatever Cross can add must be in items 51..1,000. This
script measures, on the test day of a samples directory built with long histories
(``--long-len 1000``), what those items carry in the simulated world, with no model in between:

1. **author recall**: for each test impression, how often the candidate's author appears among
   the user's last 50 video items (``n50``) and among the older items of the 1,000-item window
   (``n_older``); the share of impressions in each case and their CTR. The world's click logit
   rises with familiarity, to which every completed play of the author adds (only with
   ``cross_domain_interest`` on), so an author seen only in older items is where a long-history
   search could win clicks that DIN cannot see.
2. **simple scorers**: CTR GAUC (per user, as the evaluator) of the author count and of the
   share of the room's category among the video tags, over the last 50 items vs the whole window.
3. **what a linear model gains**: logistic regressions fit on the last training day with DIN's
   inputs (author count and category share of the last 50 video items and of the live history)
   vs those plus the older items' features, scored by test CTR GAUC (overall and per activity
   group), the paired difference bootstrapped over users; and the same on top of the (user,
   author) pair's clicks and impressions of the 3 days before: what a model with id embeddings
   can memorise from its training rows, which the older items may only repeat.

Usage::

    python benchmarks/cross_signal.py --samples "world 0=<cache>/samples/evidence-s0-...-K1000" \
        "world 1=<cache>/samples/evidence-s1-...-K1000" \
        --stack 0:ple=<a ple run>/predictions.parquet 0:moment_cross=<...> ... \
        --out benchmarks/results/cross_signal.json

Samples come from ``liverank experiment run experiments/cross.yaml`` (its cache) or from
``liverank build-samples --long-len 1000``. Writes the JSON and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table
from sklearn.linear_model import LogisticRegression

from liverank.eval.metrics import grouped_auc, per_group_auc

SHORT = 50  # the DIN sequence length of the baseline (features.seq_len)
MEMORY_DAYS = 3  # days of a pair's earlier impressions (the number of training days)
ACTIVITY = {1: "low", 2: "mid", 3: "high"}
SAMPLE_COLS = [
    "sample_id", "user_id", "author_id", "room_category", "user_activity", "day", "ctr", "mask_ctr",
    "long_video_start", "long_video_end", "long_live_start", "long_live_end",
]  # fmt: skip


class WindowCounter:
    """Counts of a key (author or tag) of one user inside row ranges of the video history file.

    The history file is sorted by (user, ts), so a sample's window ``[lo, end)`` lies inside its
    user's rows, and the count of ``key`` there is ``C(key, end) - C(key, lo)`` with ``C`` the
    number of rows of ``(user, key)`` before a row index: one sorted array, two searchsorted.
    """

    def __init__(self, user: np.ndarray, key: np.ndarray) -> None:
        self.n = len(user)
        self.width = int(key.max()) + 1
        pair = user.astype(np.int64) * self.width + key  # [N]
        self.sorted = np.sort(pair * self.n + np.arange(self.n, dtype=np.int64))  # [N]

    def count(
        self, user: np.ndarray, key: np.ndarray, lo: np.ndarray, hi: np.ndarray
    ) -> np.ndarray:
        inside = (key >= 0) & (key < self.width)
        pair = user.astype(np.int64) * self.width + np.where(inside, key, 0)
        base = pair * self.n
        out = np.searchsorted(self.sorted, base + hi) - np.searchsorted(self.sorted, base + lo)
        return np.where(inside, out, 0)


def features(samples: Path, long_len: int) -> pl.DataFrame:
    """One row per impression: last-50 and older-item features of the video window (the last
    ``long_len`` items, as the model reads it) and the live history's (which DIN reads whole:
    users have ~15 live rows)."""
    frame = pl.read_parquet(sorted(samples.glob("part-*.parquet")), columns=SAMPLE_COLS)
    frame = frame.filter(pl.col("mask_ctr") > 0)
    video = pl.read_parquet(
        samples / "long_history" / "video.parquet", columns=["user_id", "author", "tag"]
    )
    vu = video["user_id"].to_numpy()
    end = frame["long_video_end"].to_numpy().astype(np.int64)
    start = np.maximum(frame["long_video_start"].to_numpy().astype(np.int64), end - long_len)
    user = frame["user_id"].to_numpy()
    # the windows index the history file's rows of the sample's own user
    some = np.flatnonzero(end > start)[:: max(1, len(end) // 10_000)]
    if len(some) and not (
        np.all(vu[start[some]] == user[some]) and np.all(vu[end[some] - 1] == user[some])
    ):
        raise SystemExit(
            f"{samples}: long_video_start/end do not index the user's rows of video.parquet"
        )
    mid = np.maximum(start, end - SHORT)  # [B] the last-50 window is [mid, end)
    authors = WindowCounter(vu, video["author"].to_numpy())
    tags = WindowCounter(vu, video["tag"].to_numpy())
    a, c = frame["author_id"].to_numpy(), frame["room_category"].to_numpy()
    n50, n_all = authors.count(user, a, mid, end), authors.count(user, a, start, end)
    t50, t_all = tags.count(user, c, mid, end), tags.count(user, c, start, end)
    live = pl.read_parquet(samples / "long_history" / "live.parquet")
    lu = live["user_id"].to_numpy()
    l_lo = frame["long_live_start"].to_numpy().astype(np.int64)
    l_hi = frame["long_live_end"].to_numpy().astype(np.int64)
    l_lo = np.maximum(l_lo, l_hi - SHORT)  # DIN's live sequence: the last 50
    live_author = WindowCounter(lu, live["author"].to_numpy()).count(user, a, l_lo, l_hi)
    live_cat = WindowCounter(lu, live["category"].fill_null(0).to_numpy()).count(
        user, c, l_lo, l_hi
    )
    return frame.select("sample_id", "user_id", "author_id", "user_activity", "day", "ctr").with_columns(
        live_n=pl.Series(live_author), live_t=pl.Series(live_cat), live_len=pl.Series(l_hi - l_lo),
        n50=pl.Series(n50), n_older=pl.Series(n_all - n50),
        len50=pl.Series(end - mid), len_older=pl.Series(mid - start),
        t50=pl.Series(t50), t_older=pl.Series(t_all - t50),
    )  # fmt: skip


def _design(f: pl.DataFrame, older: bool, memory: bool) -> np.ndarray:
    """Features of a linear model: DIN's inputs (last 50 video items, the live history), plus
    the older video items (``older``), plus the pair's earlier impressions (``memory``)."""
    n50, no = f["n50"].to_numpy(), f["n_older"].to_numpy()
    l50, lo = np.maximum(f["len50"].to_numpy(), 1), np.maximum(f["len_older"].to_numpy(), 1)
    live_len = np.maximum(f["live_len"].to_numpy(), 1)
    cols = [np.log1p(n50), f["t50"].to_numpy() / l50, (f["len50"].to_numpy() == 0).astype(float),
            np.log1p(f["live_n"].to_numpy()), f["live_t"].to_numpy() / live_len]  # fmt: skip
    if older:
        cols += [np.log1p(no), f["t_older"].to_numpy() / lo, (no > 0) & (n50 == 0)]
    if memory:
        cols += [np.log1p(f["pair_clicks"].to_numpy()), np.log1p(f["pair_shown"].to_numpy())]
    return np.column_stack(cols).astype(np.float64)


def _with_memory(f: pl.DataFrame, day: int, days: int) -> pl.DataFrame:
    """Rows of ``day`` with the (user, author) pair's clicks and impressions over the ``days``
    days before it: what a model with user and author ids can memorise from its training rows."""
    past = (
        f.filter(pl.col("day").is_between(day - days, day - 1))
        .group_by("user_id", "author_id")
        .agg(pair_clicks=pl.col("ctr").sum(), pair_shown=pl.len())
    )
    return (
        f.filter(pl.col("day") == day)
        .join(past, on=["user_id", "author_id"], how="left")
        .with_columns(pl.col("pair_clicks", "pair_shown").fill_null(0))
    )


def _paired_gauc(
    y, s_short, s_long, users, n_boot: int, seed: int
) -> tuple[float, float, tuple[float, float]]:
    """``(GAUC(short), GAUC(long), 95 % interval of their difference)``, users resampled (the
    unit the GAUC averages). A user's AUC is defined for both scores or for neither (it needs
    both labels), so both GAUCs average the same users, as ``grouped_auc`` does."""
    _, auc_s, n = per_group_auc(y, s_short, users)
    _, auc_l, _ = per_group_auc(y, s_long, users)
    ok = ~np.isnan(auc_s) & ~np.isnan(auc_l)
    a_s, a_l, w = auc_s[ok], auc_l[ok], n[ok].astype(np.float64)
    d = a_l - a_s
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(d), size=(n_boot, len(d)))
    boot = (d[draws] * w[draws]).sum(1) / w[draws].sum(1)
    interval = (float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975)))
    return float((a_s * w).sum() / w.sum()), float((a_l * w).sum() / w.sum()), interval


def stack(test: pl.DataFrame, predictions: Path, n_boot: int, seed: int) -> dict:
    """Does a trained ranker leave the older items' signal unused?

    The ranker's test-day ``p_ctr`` (its ``predictions.parquet``) is stacked with DIN's inputs
    and the pair memory (model A; also without the memory) and with those plus the older
    items' features (model B) in a logistic regression cross-fitted over users (fit on users of one parity, score the other, and back: the few
    coefficients are never fit on the rows they score). ``GAUC(A)`` is the ranker's own GAUC up
    to what the features add; ``GAUC(B) - GAUC(A)`` is what the older items still add.
    """
    pred = pl.read_parquet(predictions, columns=["sample_id", "p_ctr"])
    f = test.join(pred, on="sample_id", how="inner")
    if f.height < 0.99 * test.height:
        raise SystemExit(
            f"{predictions}: only {f.height} of {test.height} test rows have a prediction"
        )
    p = np.clip(f["p_ctr"].to_numpy().astype(np.float64), 1e-6, 1 - 1e-6)
    logit = np.log(p / (1 - p))[:, None]
    y, users = f["ctr"].to_numpy(), f["user_id"].to_numpy()
    fold = users % 2
    scores = {}
    for memory, older in ((False, False), (True, False), (True, True)):
        x = np.hstack([logit, _design(f, older, memory)])
        out = np.zeros(len(y))
        for k in (0, 1):
            model = LogisticRegression(max_iter=1000).fit(x[fold != k], y[fold != k])
            out[fold == k] = model.decision_function(x[fold == k])
        scores[memory, older] = out
    own = grouped_auc(y, p, users)[1]
    g_din = grouped_auc(y, scores[False, False], users)[1]
    g_a, g_b, (lo, hi) = _paired_gauc(
        y, scores[True, False], scores[True, True], users, n_boot, seed
    )
    return {"predictions": str(predictions), "gauc_model": own, "gauc_stacked_din": g_din,
            "gauc_stacked": g_a, "gauc_stacked_plus_older": g_b, "delta": g_b - g_a,
            "ci95": [lo, hi]}  # fmt: skip


def analyse(
    samples: Path, n_boot: int, train_rows: int, seed: int, stacks: dict[str, Path]
) -> dict:
    t0 = time.perf_counter()
    stats = json.loads((samples / "stats.json").read_text())
    f = features(samples, int(stats["long_len"]))
    test_day = int(f["day"].max())
    fit_day = test_day - 1
    days = max(1, min(MEMORY_DAYS, fit_day - int(f["day"].min())))
    test, train = _with_memory(f, test_day, days), _with_memory(f, fit_day, days)
    if train.height > train_rows:
        train = train.sample(train_rows, seed=seed)
    y, users = test["ctr"].to_numpy(), test["user_id"].to_numpy()
    n50, no = test["n50"].to_numpy(), test["n_older"].to_numpy()
    cases = {
        "author in last 50": n50 > 0,
        "author only in older items": (n50 == 0) & (no > 0),
        "author in neither": (n50 == 0) & (no == 0),
    }
    recall = {
        name: {"share": float(m.mean()), "ctr": float(y[m].mean()) if m.any() else float("nan")}
        for name, m in cases.items()
    }
    l50 = np.maximum(test["len50"].to_numpy(), 1)
    lall = np.maximum(test["len50"].to_numpy() + test["len_older"].to_numpy(), 1)
    t50, tall = test["t50"].to_numpy(), test["t50"].to_numpy() + test["t_older"].to_numpy()
    scorers = {
        "author count, live history (DIN's)": test["live_n"].to_numpy(),
        "author count, last 50": n50,
        "author count, whole window": n50 + no,
        "category share, last 50": t50 / l50,
        "category share, whole window": tall / lall,
    }
    gauc = {name: grouped_auc(y, s, users)[1] for name, s in scorers.items()}
    fits = {}
    for older in (False, True):
        for memory in (False, True):
            model = LogisticRegression(max_iter=500)
            model.fit(_design(train, older, memory), train["ctr"].to_numpy())
            fits[older, memory] = model.decision_function(_design(test, older, memory))
    activity = test["user_activity"].to_numpy()
    linear = {}
    groups = {"all": np.ones(len(y), bool), **{v: activity == k for k, v in ACTIVITY.items()}}
    for memory in (False, True):
        base = "din_inputs" + ("+pair_memory" if memory else "")
        for name, m in groups.items():
            short, long = fits[False, memory][m], fits[True, memory][m]
            g_short, g_long, (lo, hi) = _paired_gauc(y[m], short, long, users[m], n_boot, seed)
            linear[f"{base}/{name}"] = {"gauc_base": g_short, "gauc_plus_older": g_long,
                                        "delta": g_long - g_short, "ci95": [lo, hi],
                                        "rows": int(m.sum())}  # fmt: skip
    stacked = {name: stack(test, path, n_boot, seed) for name, path in stacks.items()}
    return {
        "samples": str(samples),
        "dataset": stats.get("dataset"),
        "long_len": stats.get("long_len"),
        "test_day": test_day,
        "test_rows": test.height,
        "fit_day": fit_day,
        "memory_days": days,
        "fit_rows": train.height,
        "mean_window": {
            "last50": float(test["len50"].mean()),
            "older": float(test["len_older"].mean()),
        },
        "author_recall": recall,
        "scorer_gauc": gauc,
        "linear": linear,
        "stacked": stacked,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _print(results: list[dict]) -> None:
    console = Console()
    for r in results:
        t = Table(title=f"{r['label']}: test day {r['test_day']}, {r['test_rows']:,} impressions; "
                  f"window: last 50 = {r['mean_window']['last50']:.0f}, older = {r['mean_window']['older']:.0f} items")  # fmt: skip
        t.add_column("candidate's author")
        t.add_column("share", justify="right")
        t.add_column("CTR", justify="right")
        for name, v in r["author_recall"].items():
            t.add_row(name, f"{v['share']:.3f}", f"{v['ctr']:.4f}")
        console.print(t)
        s = Table(title="CTR GAUC of history scorers / linear models")
        s.add_column("scorer")
        s.add_column("GAUC", justify="right")
        for name, v in r["scorer_gauc"].items():
            s.add_row(name, f"{v:.4f}")
        for name, v in r["linear"].items():
            s.add_row(f"linear {name}: + older",
                      f"{v['gauc_base']:.4f} -> {v['gauc_plus_older']:.4f} "
                      f"({v['delta']:+.4f} [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}])")  # fmt: skip
        for name, v in r["stacked"].items():
            s.add_row(
                f"{name} p_ctr: GAUC {v['gauc_model']:.4f}, + DIN inputs {v['gauc_stacked_din']:.4f}",
                "",
            )
            s.add_row(f"{name} p_ctr + DIN inputs + memory: + older",
                      f"{v['gauc_stacked']:.4f} -> {v['gauc_stacked_plus_older']:.4f} "
                      f"({v['delta']:+.4f} [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}])")  # fmt: skip
        console.print(s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", nargs="+", required=True, metavar="[LABEL=]DIR",
                    help="samples directories with long histories; LABEL names the world in the "
                    "tables (e.g. 'world 0, cross_domain_interest off')")  # fmt: skip
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/cross_signal.json"))
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--train-rows", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stack", nargs="*", default=[], metavar="I:NAME=PREDICTIONS",
                    help="a trained ranker's predictions.parquet on the I-th --samples "
                    "directory's test day, e.g. 0:ple=results/cross/runs/HASH/predictions.parquet")  # fmt: skip
    args = ap.parse_args()
    labels = [item.split("=", 1)[0] if "=" in item else None for item in args.samples]
    args.samples = [Path(item.split("=", 1)[-1]) for item in args.samples]
    stacks: list[dict[str, Path]] = [{} for _ in args.samples]
    for item in args.stack:
        try:
            where, rest = item.split(":", 1)
            name, path = rest.split("=", 1)
            stacks[int(where)][name] = Path(path)
        except (ValueError, IndexError):
            raise SystemExit(
                f"--stack {item!r}: expected I:NAME=PATH with I < {len(args.samples)}"
            ) from None
    for s in args.samples:
        if not (s / "long_history" / "video.parquet").exists():
            raise SystemExit(f"{s}: no long_history/video.parquet (build samples with --long-len)")
    results = [
        {"label": labels[i], **analyse(s, args.bootstrap, args.train_rows, args.seed, stacks[i])}
        for i, s in enumerate(args.samples)
    ]
    for r in results:
        r["label"] = r["label"] or r["dataset"]
    _print(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"created": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.node()}
    args.out.write_text(json.dumps({"meta": meta, "worlds": results}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
