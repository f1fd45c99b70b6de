"""Events per second of the replay stream engine in each reporting mode (issue #3).

What is timed, on one canonical dataset (simulated with ``--size``/``--seed`` or given with
``--data``):

* ``engine``: :class:`liverank.stream.engine.StreamEngine` fed the merged stream
  (:func:`merge_stream`) in chunks of ``--chunk-rows`` rows, then flushed: labels only. The
  emitted rows are checked equal to the one-shot function below (a benchmark that measured a
  wrong engine would be worthless);
* ``one-shot``: ``emit_rows(reconstruct_visits(...))`` over the whole data at once (the
  vectorised upper bound, what ``build-samples --mode`` uses);
* ``features``: the point-in-time feature snapshots of every impression (the offline builder's
  feature pass, :func:`liverank.data.samples.build_samples`), plus the join of the emitted rows
  onto them; "features included" = engine + features + join.

Rates are stream rows (impressions + live events) per second of wall time, best of
``--repeats``; the process CPU time is recorded too. ``--threads 1`` pins Polars and PyTorch to
one thread (the issue's "one core" figure; set before Polars is imported). The top functions by
own time of one engine run (cProfile) say where the time goes.

Usage::

    python benchmarks/stream_throughput.py --size medium --threads 1
    python benchmarks/stream_throughput.py --data /path/to/dataset --chunk-rows 50000 200000

Writes ``benchmarks/results/stream_throughput_<dataset>.json`` (``--out``) and prints a table.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, help="canonical dataset directory (else simulate)")
    p.add_argument("--size", default="small", help="simulator preset when --data is not given")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--modes", nargs="+", default=["exit", "fast_slow", "moment"])
    p.add_argument("--chunk-rows", nargs="+", type=int, default=[50_000, 200_000])
    p.add_argument("--lateness-ms", type=int, default=30_000)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="Polars/torch threads (0 = default)")
    p.add_argument("--no-features", action="store_true", help="skip the feature pass")
    p.add_argument("--out", type=Path)
    return p.parse_args()


def main() -> int:
    args = _args()
    if args.threads:
        # must happen before polars is imported
        os.environ["POLARS_MAX_THREADS"] = str(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import logging

    import polars as pl
    from rich.console import Console
    from rich.table import Table

    from liverank.data.io import read_meta, read_table
    from liverank.data.samples import build_samples
    from liverank.data.visits import reconstruct_visits
    from liverank.features.ids import stable_id
    from liverank.stream.engine import StreamEngine, merge_stream
    from liverank.stream.reporting import emit_rows

    logging.basicConfig(level=logging.WARNING)
    console = Console()
    tmp = tempfile.TemporaryDirectory(prefix="stream-bench-")
    data = args.data
    if data is None:
        from liverank.data.sim import SimConfig, simulate

        data = Path(tmp.name) / "data"
        console.print(f"simulating '{args.size}' (seed {args.seed}) ...")
        simulate(SimConfig.preset(args.size, seed=args.seed), data, progress=False)
    meta = read_meta(data)
    imp, ev, rooms = (read_table(data, n) for n in ("live_impressions", "live_events", "rooms"))
    lv = meta.long_view_ms
    t0 = time.perf_counter()
    stream = merge_stream(imp, ev)
    merge_s = time.perf_counter() - t0
    n = len(stream)
    console.print(
        f"{meta.name}: {n:,} stream rows ({len(imp):,} impressions), merged in {merge_s:.2f} s"
    )

    def timed(fn):  # best wall time of `repeats` runs, its CPU time and result
        best = None
        for _ in range(args.repeats):
            w, c = time.perf_counter(), time.process_time()
            out = fn()
            w, c = time.perf_counter() - w, time.process_time() - c
            if best is None or w < best[0]:
                best = (w, c, out)
        return best

    def run_engine(mode: str, chunk: int) -> pl.DataFrame:
        eng = StreamEngine(rooms, lv, mode, allowed_lateness_ms=args.lateness_ms)
        parts = [eng.push(stream.slice(s, chunk)) for s in range(0, n, chunk)]
        parts.append(eng.flush())
        return pl.concat(parts)

    feat_s = feat_cpu = 0.0
    features = None
    if not args.no_features:
        fdir = Path(tmp.name) / "features"
        w, c = time.perf_counter(), time.process_time()
        build_samples(data, fdir, progress=False)
        feat_s, feat_cpu = time.perf_counter() - w, time.process_time() - c
        features = pl.read_parquet(fdir / "part-*.parquet").drop("day", "hour")
        console.print(f"feature snapshots of {len(features):,} impressions: {feat_s:.1f} s")

    results = []
    for mode in args.modes:
        one_w, one_c, want = timed(
            lambda m=mode: emit_rows(reconstruct_visits(imp, ev, rooms, lv), m)
        )
        want = want.sort("sample_id")
        join_s = 0.0
        if features is not None:
            key = stable_id(want["request_id"].to_numpy(), want["position"].to_numpy())
            keyed = want.select("sample_id", "emit_ts").with_columns(pl.Series("_key", key))
            w = time.perf_counter()
            feats = features.rename({"sample_id": "_key"}).select(
                "_key", *[c for c in features.columns if c.endswith("_seq_author")]
            )
            keyed.join(feats, on="_key", how="left")
            join_s = time.perf_counter() - w
        for chunk in args.chunk_rows:
            w, c, got = timed(lambda m=mode, k=chunk: run_engine(m, k))
            equal = got.sort("sample_id").equals(want)
            total = w + feat_s + join_s
            results.append(
                {
                    "mode": mode,
                    "chunk_rows": chunk,
                    "rows_emitted": len(got),
                    "equal_to_one_shot": equal,
                    "engine_s": round(w, 3),
                    "engine_cpu_s": round(c, 3),
                    "engine_events_per_s": round(n / w),
                    "one_shot_events_per_s": round(n / one_w),
                    "features_s": round(feat_s, 3),
                    "join_s": round(join_s, 3),
                    "with_features_events_per_s": round(n / total)
                    if features is not None
                    else None,
                }
            )
            if not equal:
                console.print(
                    f"[red]engine output differs from the one-shot rows ({mode}, {chunk})"
                )

    prof_mode = "moment" if "moment" in args.modes else args.modes[0]
    prof = cProfile.Profile()
    prof.enable()
    run_engine(prof_mode, max(args.chunk_rows))
    prof.disable()
    stats = pstats.Stats(prof)
    top = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:8]  # type: ignore[attr-defined]
    hot = [
        {"function": f"{Path(f).name}:{line}({fn})", "own_s": round(v[2], 3), "calls": v[1]}
        for (f, line, fn), v in top
    ]

    table = Table(title=f"stream engine, {meta.name}, {n:,} rows, lateness {args.lateness_ms} ms")
    for col in ("mode", "chunk", "engine ev/s", "one-shot ev/s", "with features ev/s", "equal"):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(
            r["mode"],
            f"{r['chunk_rows']:,}",
            f"{r['engine_events_per_s']:,}",
            f"{r['one_shot_events_per_s']:,}",
            f"{r['with_features_events_per_s']:,}" if r["with_features_events_per_s"] else "-",
            str(r["equal_to_one_shot"]),
        )
    console.print(table)
    console.print(f"where the time goes ({prof_mode}, own time):")
    for h in hot:
        console.print(f"  {h['own_s']:7.3f} s  {h['calls']:>6} calls  {h['function']}")

    record = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
        },
        "threads": args.threads or "default",
        "dataset": meta.name,
        "stream_rows": n,
        "impressions": len(imp),
        "lateness_ms": args.lateness_ms,
        "merge_s": round(merge_s, 3),
        "features_s": round(feat_s, 3),
        "features_cpu_s": round(feat_cpu, 3),
        "results": results,
        "engine_hot_functions": hot,
    }
    out = args.out or Path(__file__).parent / "results" / f"stream_throughput_{meta.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    console.print(f"wrote {out}")
    return 0 if all(r["equal_to_one_shot"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
