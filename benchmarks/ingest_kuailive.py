"""Time and peak memory of ``liverank ingest kuailive`` on a synthetic KuaiLive-shaped directory.

The real dataset is not on our machines, so this writes CSV files with KuaiLive's columns and
row counts scaled by ``--scale`` (1.0 = the official counts: 23,772 users, 452,621 streamers,
11,613,708 rooms, 4,909,515 clicks, 196,526 comments, 179,311 likes, 72,646 gifts; the
negatives are not counted in the documentation: ``--negatives-per-click``, default 10). The
events fall inside their rooms' air time (a few percent are made unusable on purpose, so the
set-aside path runs too). The ingest runs in a child process (``liverank ingest``) so its
peak RSS is its own.

    python benchmarks/ingest_kuailive.py --scale 0.1

Writes ``benchmarks/results/ingest_kuailive.json`` (one record per run, appended).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

OFFICIAL = {
    "users": 23_772,
    "streamers": 452_621,
    "rooms": 11_613_708,
    "click": 4_909_515,
    "comment": 196_526,
    "like": 179_311,
    "gift": 72_646,
}
T0 = 1_746_374_400_000
DAY = 86_400_000
OUT = Path(__file__).parent / "results" / "ingest_kuailive.json"


def write_source(root: Path, scale: float, negatives_per_click: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    n = {k: max(int(v * scale), 10) for k, v in OFFICIAL.items()}
    n["negative"] = int(n["click"] * negatives_per_click)
    users = np.arange(1, n["users"] + 1)
    pl.DataFrame(
        {
            "user_id": users,
            "age": rng.choice(["18-23", "24-30", "31-40", ""], n["users"]),
            "gender": rng.choice(["M", "F"], n["users"]),
            "device_price": rng.choice(["0", "1000-2000", "5000+"], n["users"]),
            "is_live_streamer": rng.integers(0, 2, n["users"]),
            "is_photo_author": rng.integers(0, 2, n["users"]),
        }
    ).write_csv(root / "user.csv")
    pl.DataFrame(
        {
            "streamer_id": np.arange(1, n["streamers"] + 1),
            "live_operation_tag": rng.choice(["Shopping", "Relationship", "Game"], n["streamers"]),
            "fans_user_num": rng.choice(["0-10", "10-100", "10000-100000"], n["streamers"]),
        }
    ).write_csv(root / "streamer.csv")
    start = T0 + rng.integers(0, 21 * DAY, n["rooms"])
    dur = rng.integers(10 * 60_000, 4 * 3_600_000, n["rooms"])
    streamer = rng.integers(1, n["streamers"] + 1, n["rooms"])
    pl.DataFrame(
        {
            "p_date": np.full(n["rooms"], 20250505),
            "live_id": np.arange(1, n["rooms"] + 1),
            "streamer_id": streamer,
            "live_type": np.ones(n["rooms"], np.int64),
            "start_timestamp": start,
            "end_timestamp": start + dur,
            "live_content_category": rng.choice(["shop", "talent", "game", "chat"], n["rooms"]),
            "live_name_id": rng.integers(0, 1000, n["rooms"]),
        }
    ).write_csv(root / "room.csv")
    np.save(root / "title_embeddings.npy", rng.normal(size=(1000, 128)).astype(np.float32))
    for name in ("click", "negative", "comment", "like", "gift"):
        m = n[name]
        room = rng.integers(1, n["rooms"] + 1, m)
        ts = start[room - 1] + (rng.random(m) * dur[room - 1]).astype(np.int64)
        ts[rng.random(m) < 0.02] += 5 * DAY  # off air: set aside
        cols = {
            "user_id": rng.integers(1, n["users"] + 1, m),
            "live_id": room,
            "streamer_id": streamer[room - 1],
            "timestamp": ts,
        }
        if name == "click":
            cols["watch_live_time"] = rng.integers(1_000, 3_600_000, m)
        if name == "gift":
            cols["gift_price"] = rng.integers(1, 500, m)
        pl.DataFrame(cols).write_csv(root / f"{name}.csv")
    return n


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=0.1)
    p.add_argument("--negatives-per-click", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "src", Path(tmp) / "out"
        src.mkdir()
        t = time.perf_counter()
        counts = write_source(src, args.scale, args.negatives_per_click, args.seed)
        written_s = time.perf_counter() - t
        size = sum(f.stat().st_size for f in src.iterdir())
        cli = Path(sys.executable).parent / "liverank"
        t = time.perf_counter()
        subprocess.run([str(cli), "ingest", "kuailive", str(src), "--out", str(out)], check=True)
        seconds = time.perf_counter() - t
        peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
        report = json.loads((out / "ingest_report.json").read_text())
    code = subprocess.run(
        ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, check=False
    ).stdout.strip()
    record = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "code": code or "unknown",
        "scale": args.scale,
        "negatives_per_click": args.negatives_per_click,
        "rows": counts,
        "source_mb": round(size / 1e6, 1),
        "source_write_s": round(written_s, 1),
        "ingest_s": round(seconds, 1),
        "peak_rss_gb": round(peak_gb, 2),
        "tables": report["tables"],
        "cpus": os.cpu_count(),
    }
    print(json.dumps(record, indent=2))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(OUT.read_text()) if OUT.exists() else []
    OUT.write_text(json.dumps([*old, record], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
