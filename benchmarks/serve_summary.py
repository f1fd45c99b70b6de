"""The current serving figures at one client, as a table generated from result files.

Reads the ``benchmarks/serve_latency.py`` records named in :data:`SOURCES` (the latest run of
each model on a quiet machine, one request per program) and writes a markdown table of p50 / p99
and the model's share per model and runtime between the ``<!-- serve-summary:start -->`` and
``<!-- serve-summary:end -->`` markers of ``docs/serving.md``. A figure in that table is never
typed: rerun the benchmark, point :data:`SOURCES` at its file, rerun this.

    python benchmarks/serve_summary.py            # rewrites the table in docs/serving.md
    python benchmarks/serve_summary.py --check    # exits 1 if the table is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RESULTS = Path("benchmarks/results")
#: model -> the record file of its latest run (2026-12-07, one request per program)
SOURCES = {
    "ple": "serve_latency_request.json",
    "farm": "serve_latency_request.json",
    "moment_cross": "serve_latency_moment_cross_request.json",
    "liverank": "serve_latency_flagship_request_run2.json",
}
RUNTIMES = {"aoti": "AOTInductor", "torchscript": "TorchScript", "eager": "eager"}
START, END = "<!-- serve-summary:start -->", "<!-- serve-summary:end -->"


def table(results: Path = RESULTS) -> str:
    """The markdown table (with its heading line) from the files of :data:`SOURCES`."""
    lines = [
        "| model | runtime | p50 | p99 | model (server mean) | client | record |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, name in SOURCES.items():
        doc = json.loads((results / name).read_text())
        records = doc["results"]
        client = doc.get("client", "httpx")  # records before the --client option: httpx
        ones = [r for r in records if r["model"] == model and r.get("concurrency") == 1]
        if not ones:
            raise SystemExit(f"{name}: no one-client record of {model}")
        for runtime in RUNTIMES:
            for r in (r for r in ones if r.get("runtime") == runtime):
                lines.append(
                    f"| {model} | {RUNTIMES[runtime]} | {r['p50_ms']:.1f} ms | "
                    f"{r['p99_ms']:.1f} ms | {r['server_ms_mean']['model']:.1f} ms | {client} | "
                    f"`{name}` |"
                )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--doc", type=Path, default=Path("docs/serving.md"))
    p.add_argument("--check", action="store_true", help="only say whether it is up to date")
    args = p.parse_args()
    text = args.doc.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{args.doc}: no {START} ... {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{table()}\n{END}{tail}"
    if args.check:
        print("up to date" if new == text else "out of date")
        return 0 if new == text else 1
    args.doc.write_text(new)
    print(f"wrote the table into {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
