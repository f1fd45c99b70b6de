"""Render the measured tables of ``docs/scaling.md`` from the benchmark result files.

Every table sits between ``<!-- table:NAME -->`` and ``<!-- /table -->`` in the documents
(``docs/scaling.md``; the README carries the peer table, ``docs/results.md`` the diagnostic of
``cross_signal.py``) and is rewritten from
``benchmarks/results/NAME.json`` (a missing file leaves its table alone, with a
note). Nothing in those tables is typed by hand.

Usage::

    python benchmarks/scaling_tables.py                    # rewrites the documents in place
    python benchmarks/scaling_tables.py --check            # exit 1 if a document is stale
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

RESULTS = Path("benchmarks/results")
DOCS = (Path("docs/scaling.md"), Path("README.md"), Path("docs/results.md"))


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def ddp_throughput(d: dict) -> list[str]:
    threads = d["threads"]
    best = {int(k): v for k, v in d["best_samples_per_s"].items()}
    base = best[min(best)]
    rows = ["| ranks x threads | samples/s (epoch) | speed-up | wall s (whole command) |"]
    rows.append("|---|---|---|---|")
    for n in sorted(best):
        wall = min(r["wall_seconds"] for r in d["records"] if r["nproc"] == n)
        rows.append(
            f"| {n} x {max(1, threads // n)} | {best[n]:,.0f} | {best[n] / base:.2f} | {wall:.1f} |"
        )
    return rows


def larger_than_memory(d: dict) -> list[str]:
    rows = ["| loader | cap | result | peak RSS | training samples/s | prediction rows/s |"]
    rows.append("|---|---|---|---|---|---|")
    for r in d["records"]:
        cap = (
            f"{r['cap_mb']} MB" + (" (enforced)" if r["enforced"] else "")
            if r["cap_mb"]
            else "none"
        )
        ok = r["status"] == "ok"
        status = "ok" if ok else "killed (out of memory)" if "-9" in r["status"] else r["status"]
        rows.append(
            f"| {r['loader']} | {cap} | {status} | "
            + (f"{r['peak_rss_mb']:,.0f} MB | " if ok else "- | ")
            + (f"{r['train_samples_per_s']:,.0f} | " if ok else "- | ")
            + (f"{r['predict_rows_per_s']:,.0f} |" if ok else "- |")
        )
    return rows


def hashed_ids(d: dict) -> list[str]:
    rows = ["| arm | rows of the id tables | CTR AUC | CTR GAUC | GAUC - full [95% CI] |"]
    rows.append("|---|---|---|---|---|")
    for s in d["summary"]:
        diff = s["gauc_diff"]
        cell = (
            "-"
            if s["arm"] == "full"
            else (f"{diff['mean']:+.4f} [{diff['lo']:+.4f}, {diff['hi']:+.4f}]")
        )
        rows.append(
            f"| {s['arm']} | {s['rows']:,} | {s['ctr_auc']:.4f} | {s['ctr_gauc']:.4f} | {cell} |"
        )
    return rows


def peer_throughput(d: dict) -> list[str]:
    rows = ["| scale | arm | samples/s (best) | vs torch-rechub | CTR AUC |"]
    rows.append("|---|---|---|---|---|")
    for r in d["results"]:
        rows.append(
            f"| {r['scale']} | {r['arm']} | {r['samples_per_s_best']:,.0f} | "
            f"{r['ratio_vs_peer']:.2f}x | {r['ctr_auc']:.4f} |"
        )
    return rows


def train_profile(d: dict) -> list[str]:
    before = {r["config"]: r for r in d["before"]["results"] if r["embeddings"] == "fused"}
    after = {r["config"]: r for r in d["after"]["results"] if r["embeddings"] == "fused"}
    rows = [
        "| model | before: cpu ms/step | after: cpu ms/step | speed-up | after: samples/s | vs ple |"
    ]
    rows.append("|---|---|---|---|---|---|")
    ple = after["ple"]["samples_per_s"]
    for name, a in after.items():
        b = before[name]
        rows.append(
            f"| {name} | {b['cpu_ms_per_step']:.1f} | {a['cpu_ms_per_step']:.1f} | "
            f"{b['cpu_ms_per_step'] / a['cpu_ms_per_step']:.2f}x | {a['samples_per_s']:,.0f} | "
            f"{a['samples_per_s'] / ple:.2f}x |"
        )
    return rows


def request_batches(d: dict) -> list[str]:
    """The speed table (when the file has one) and the quality table (when it has one)."""
    speed = d["speed"]
    ple = {r["batch_order"]: r["samples_per_s"] for r in speed if r["config"] == "ple"}
    rows: list[str] = []
    if speed:
        rows += [
            "| model | batch order | request dedup | ms/step | samples/s | vs ple, rows "
            "| vs ple, same order | distinct rows per batch (dedup modules) |",
            "|---|---|---|---|---|---|---|---|",
        ]
    for r in speed:
        frac = r["distinct_rows_frac"]
        rows.append(
            f"| {r['config']} | {r['batch_order']} | {'on' if r['dedup'] else 'off'} | "
            f"{r['ms_per_step']:.1f} | {r['samples_per_s']:,.0f} | "
            f"{r['samples_per_s'] / ple['rows']:.2f}x | "
            f"{r['samples_per_s'] / ple[r['batch_order']]:.2f}x | "
            f"{'-' if frac is None else f'{frac:.2f}'} |"
        )
    summary = d.get("quality_summary") or {}
    if summary:
        n = next(iter(summary.values()))["n"]
        rows += [
            *([""] if rows else []),
            f"Test quality of `{d['quality_model']}` by batch order ({n} model seeds, "
            f"{d['epochs']} epochs, paired by seed):",
            "",
            "| metric | rows | requests | requests - rows [95% CI] |",
            "|---|---|---|---|",
        ]
        for metric, q in summary.items():
            rows.append(
                f"| {metric} | {q['rows']:.4f} | {q['requests']:.4f} | "
                f"{q['mean']:+.4f} [{q['lo']:+.4f}, {q['hi']:+.4f}] |"
            )
        wall = {
            order: sum(r["seconds"] for r in d["quality"] if r["batch_order"] == order)
            / max(1, sum(r["batch_order"] == order for r in d["quality"]))
            for order in ("rows", "requests")
        }
        rows.append(
            f"| wall s per run (train, validate, test) | {wall['rows']:.0f} | "
            f"{wall['requests']:.0f} | {wall['rows'] / wall['requests']:.2f}x faster |"
        )
    return rows


def _ci(v: dict) -> str:
    return f"{v['delta']:+.4f} [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}]"


def cross_signal(d: dict) -> list[str]:
    """``benchmarks/cross_signal.py``: what a user's video items older than the last 50 say."""
    rows = [
        "| world | candidate's author in the last 50 / only older / neither: share (CTR) "
        "| author-count scorer GAUC, last 50 -> 1,000 "
        "| linear on DIN's inputs: + older items | ... + pair memory: + older items |",
        "|---|---|---|---|---|",
    ]
    for w in d["worlds"]:
        rec = w["author_recall"]
        shares = " / ".join(f"{v['share']:.2f} ({v['ctr']:.3f})" for v in rec.values())
        sc = w["scorer_gauc"]
        rows.append(
            f"| {w.get('label', w['dataset'])} | {shares} | {sc['author count, last 50']:.4f} -> "
            f"{sc['author count, whole window']:.4f} | {_ci(w['linear']['din_inputs/all'])} | "
            f"{_ci(w['linear']['din_inputs+pair_memory/all'])} |"
        )
    return [*rows, "", *cross_signal_stacks(d)]


def cross_signal_stacks(d: dict) -> list[str]:
    """The rankers' part of ``cross_signal.py``: what the older items add to each one's score."""
    rows = [
        "| world | ranker (run) | its CTR GAUC | stacked with DIN's inputs | ... + pair memory "
        "| ... + older items: delta [95 %] |",
        "|---|---|---|---|---|---|",
    ]
    for w in d["worlds"]:
        for name, v in w.get("stacked", {}).items():
            run = Path(v["predictions"]).parent.name
            rows.append(
                f"| {w.get('label', w['dataset'])} | {name} ({run}) | {v['gauc_model']:.4f} | "
                f"{v['gauc_stacked_din']:.4f} | {v['gauc_stacked']:.4f} | {_ci(v)} |"
            )
    return rows


TABLES: dict[str, Callable[[dict], list[str]]] = {
    "cross_signal": cross_signal,
    "cross_signal_history": cross_signal_stacks,
    "request_batches": request_batches,
    "request_batches_ple": request_batches,
    "request_batches_moment_cross": request_batches,
    "ddp_throughput": ddp_throughput,
    "larger_than_memory": larger_than_memory,
    "hashed_ids": hashed_ids,
    "peer_throughput": peer_throughput,
    "train_profile": train_profile,
}


def render(text: str) -> str:
    def replace(m: re.Match[str]) -> str:
        name = m.group(1)
        data = _load(name)
        body = (
            TABLES[name](data)
            if data is not None
            else [f"(no `benchmarks/results/{name}.json` yet: not measured)"]
        )
        return f"<!-- table:{name} -->\n" + "\n".join(body) + "\n<!-- /table -->"

    return re.sub(r"<!-- table:(\w+) -->.*?<!-- /table -->", replace, text, flags=re.S)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--doc", type=Path, nargs="+", default=list(DOCS))
    p.add_argument("--check", action="store_true")
    args = p.parse_args()
    stale = []
    for doc in args.doc:
        text = doc.read_text()
        new = render(text)
        if new != text:
            stale.append(doc)
            if not args.check:
                doc.write_text(new)
    if args.check:
        for doc in stale:
            print(f"stale: {doc}")
        sys.exit(1 if stale else 0)


if __name__ == "__main__":
    main()
