"""Build time of MMBee's graph part (U2A -> Swing -> five metapaths) on a synthetic gift log.

The log is heavy-tailed like the simulator's gifting communities (``liverank.data.sim.gifting``):
users form communities of ~50 that favour 3-8 authors drawn by Zipf popularity (so a few authors
get most gifts), 90% of a user's gifts go to its community's favourites, user activity is
log-normal (sigma 1.5) and prices follow the simulator's list with p ~ price^-0.9.

For each size it times every step of two variants, prints a table and writes JSON (with, where
both are computed, the share of the exact top-k lists that the capped ones keep):

* ``exact``: Swing as in Eq. 8 (no cap) and exact metapaths;
* ``capped``: Swing on each author's ``--cap`` heaviest gifters, metapath ``--fanout``.

Exact metapaths cost ``sum_a |U_a|^2`` (every pair of a star author's gifters are neighbours),
so ``--exact-metapaths-max`` skips them above that many gift events. The scaling exponent between
the two largest sizes and the extrapolation to ``--target`` events are written as such:
extrapolations, not measurements.

    python benchmarks/graph_build.py [--sizes 250000 1000000] [--out benchmarks/results/graph_build.json]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from liverank.graph.gifting import u2a_from_arrays
from liverank.graph.metapath import METAPATHS, Transitions, neighbours
from liverank.graph.swing import binary_u2a, swing

PRICES = np.array([1.0, 2.0, 5.0, 10.0, 20.0, 52.0, 66.0, 99.0, 199.0, 520.0, 1314.0])


def gift_log(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """``n`` gift events ``(user_ids [n], author_ids [n], values [n], n_users, n_authors)``."""
    rng = np.random.default_rng(seed)
    n_users, n_authors = max(n // 3, 10), max(n // 50, 10)
    n_comm = max(n_users // 50, 1)
    popularity = 1.0 / np.arange(1, n_authors + 1)  # Zipf(1)
    popularity /= popularity.sum()
    n_fav = rng.integers(3, 9, n_comm)  # [n_comm]
    fav = np.concatenate([rng.choice(n_authors, f, replace=False, p=popularity) for f in n_fav])
    fav_ptr = np.r_[0, np.cumsum(n_fav)]
    activity = rng.lognormal(0.0, 1.5, n_users)
    users = rng.choice(n_users, n, p=activity / activity.sum())  # [n]
    comm = users % n_comm
    pick = fav[fav_ptr[comm] + (rng.random(n) * n_fav[comm]).astype(np.int64)]
    authors = np.where(rng.random(n) < 0.9, pick, rng.choice(n_authors, n, p=popularity))
    p = PRICES**-0.9
    values = rng.choice(PRICES, n, p=p / p.sum())
    return users + 1, authors + 1, values, n_users, n_authors


def recall(exact: np.ndarray, approx: np.ndarray) -> float:
    """Share of the exact lists' neighbours ``[R, k]`` (id > 0) that the approximate lists hold."""
    rows = np.arange(exact.shape[0])[:, None]
    width = int(max(exact.max(initial=0), approx.max(initial=0))) + 1
    want = (rows * width + exact)[exact > 0]
    return float(np.isin(want, (rows * width + approx)[approx > 0]).mean()) if want.size else 1.0


def run(
    n: int, cap: int | None, fanout: int | None, metapaths: bool, k: int
) -> tuple[dict, dict[str, np.ndarray]]:
    users, authors, values, n_users, n_authors = gift_log(n)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    W = u2a_from_arrays(users, authors, values, n_users, n_authors)
    seconds["u2a"] = time.perf_counter() - start
    B = binary_u2a(W, cap)
    degree, audience = np.diff(B.indptr), np.diff(B.tocsc().indptr)
    shared = sp.triu(B.T @ B, k=1).data  # [author pairs] |U_i ∩ U_j|
    start = time.perf_counter()
    S = swing(W, 1.0, max_users_per_author=cap, max_quadruples=None)
    seconds["swing"] = time.perf_counter() - start
    lists = {}
    if metapaths:
        start = time.perf_counter()
        transitions = Transitions.build(W, S, fanout)
        seconds["transitions"] = time.perf_counter() - start
        for name in METAPATHS:
            start = time.perf_counter()
            lists[name] = neighbours(transitions, name, k)[0]
            seconds[name] = time.perf_counter() - start
    return {
        "gift_events": n,
        "u2a_edges": int(W.nnz),
        "users": n_users,
        "authors": n_authors,
        "max_author_audience": int(audience.max()),
        "sum_audience_squared": float((audience.astype(np.float64) ** 2).sum()),
        "swing_triples": int((degree * (degree - 1) // 2).sum()),
        "swing_quadruples": int((shared * (shared - 1) // 2).sum()),
        "swing_pairs": int(S.nnz // 2),
        "seconds": {step: round(s, 3) for step, s in seconds.items()},
        "total_s": round(sum(seconds.values()), 3),
    }, lists


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[250_000, 1_000_000])
    ap.add_argument("--cap", type=int, default=1000, help="capped: max_users_per_author")
    ap.add_argument("--fanout", type=int, default=100, help="capped: metapath fanout")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--exact-metapaths-max", type=int, default=250_000)
    ap.add_argument("--target", type=int, default=10_000_000)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/graph_build.json"))
    args = ap.parse_args()
    results = []
    for n in sorted(args.sizes):
        exact: dict[str, np.ndarray] = {}
        for variant, cap, fanout in (("exact", None, None), ("capped", args.cap, args.fanout)):
            do_paths = variant == "capped" or n <= args.exact_metapaths_max
            r, lists = run(n, cap, fanout, do_paths, args.k)
            r.update(variant=variant, cap=cap, fanout=fanout, metapaths_timed=do_paths)
            results.append(r)
            steps = "  ".join(f"{s} {t:.2f}" for s, t in r["seconds"].items())
            print(f"{variant:>6} {n:>10,} events {r['u2a_edges']:>10,} edges: "
                  f"{r['total_s']:7.2f} s  ({steps})", flush=True)  # fmt: skip
            if variant == "exact":
                exact = lists
            elif exact:  # how much of the exact top-k the capped lists keep
                r["recall_vs_exact"] = {m: round(recall(exact[m], lists[m]), 4) for m in lists}
                print(f"{'':>6} recall of the exact top-{args.k}: {r['recall_vs_exact']}")
    scaling = {}
    lo, hi = sorted(args.sizes)[-2:] if len(args.sizes) > 1 else (None, None)
    for variant in ("exact", "capped"):
        pair = [r for r in results if r["variant"] == variant and r["gift_events"] in (lo, hi)]
        if len(pair) != 2 or not all(r["metapaths_timed"] for r in pair):
            pair = [{**r, "total_s": r["seconds"]["swing"]} for r in pair]  # Swing alone
        if len(pair) == 2:
            a, b = pair
            exponent = math.log(b["total_s"] / a["total_s"]) / math.log(hi / lo)
            scaling[variant] = {
                "measured_at": [lo, hi],
                "steps": "all" if "u2a2u" in b["seconds"] else "swing only",
                "exponent": round(exponent, 3),
                "step_exponents": {
                    step: round(
                        math.log(b["seconds"][step] / a["seconds"][step]) / math.log(hi / lo), 2
                    )
                    for step in b["seconds"]
                    if a["seconds"].get(step, 0) > 0.05 and b["seconds"][step] > 0
                },
                "extrapolated_to": args.target,
                "extrapolated_s": round(b["total_s"] * (args.target / hi) ** exponent, 1),
            }
            # Swing's work is its quadruples: extrapolate their count, at 1M's cost per term
            q_exp = math.log(b["swing_quadruples"] / a["swing_quadruples"]) / math.log(hi / lo)
            q_target = b["swing_quadruples"] * (args.target / hi) ** q_exp
            scaling[variant]["swing_quadruples_exponent"] = round(q_exp, 3)
            scaling[variant]["swing_quadruples_extrapolated"] = float(f"{q_target:.3g}")
            scaling[variant]["swing_s_extrapolated_by_quadruples"] = round(
                b["seconds"]["swing"] * q_target / max(b["swing_quadruples"], 1), 1
            )
    for variant, s in scaling.items():
        print(f"{variant}: time ~ events^{s['exponent']} ({s['steps']}); EXTRAPOLATED to "
              f"{s['extrapolated_to']:,} events: ~{s['extrapolated_s']:,.0f} s; Swing quadruples "
              f"~ events^{s['swing_quadruples_exponent']} -> Swing ~"
              f"{s['swing_s_extrapolated_by_quadruples']:,.0f} s (EXTRAPOLATED)")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "graph_build",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.platform(),
        "meta": {
            "note": "run on a 2-core machine shared with two long experiment processes; sizes "
            "up to 1M gift events only; the 10M figures are extrapolations from the two largest "
            "sizes, not measurements",
            "sizes": sorted(args.sizes), "k": args.k, "cap": args.cap, "fanout": args.fanout,
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        },
        "results": results,
        "scaling_extrapolation": scaling,
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
