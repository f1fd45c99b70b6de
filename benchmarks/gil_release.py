"""Does a compiled serving program let other Python threads run during its forward pass?

The service answers requests on several threads; while one runs the model, the others assemble
features and build responses. A runtime that holds the GIL during the forward serialises all of
that. This calls one program (PLE, a synthetic 200-candidate request, recorded for one request,
one torch thread) ``--calls`` times from one thread, then ``--calls`` times from each of two
threads: a speedup near 2x means the forward releases the GIL (on a machine with 2 free cores),
near 1x or below that it holds it. Run it with the machine otherwise idle.

    python benchmarks/gil_release.py --out benchmarks/results/gil_release.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import torch

from liverank.models.ranker import Ranker
from liverank.models.synthetic import as_request, synthetic_batches, synthetic_feature_map
from liverank.models.zoo import get_config
from liverank.serve.export import export_torchscript, load_exported
from liverank.serve.export_aoti import export_aoti, load_aoti


def _timed(call: Callable[[], object], calls: int, threads: int) -> float:
    def work() -> None:
        with torch.no_grad():
            for _ in range(calls):
                call()

    pool = [threading.Thread(target=work) for _ in range(threads)]
    start = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="ple")
    p.add_argument("--calls", type=int, default=150)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/gil_release.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    fm = synthetic_feature_map()
    model = Ranker(fm, get_config(args.model)).eval()
    batch = as_request(synthetic_batches(fm, 1, 200, seed=1)[0])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        programs = {
            "torchscript": load_exported(
                export_torchscript(model, batch, Path(tmp) / "m.ts", one_request=True)
            ),
            "aoti": load_aoti(export_aoti(model, batch, Path(tmp) / "m.pt2", one_request=True)),
        }
        for name, program in programs.items():

            def call(p: Callable[[dict], torch.Tensor] = program) -> torch.Tensor:
                return p(batch)

            _timed(call, 20, 1)  # warm-up
            one = _timed(call, args.calls, 1)
            two = _timed(call, args.calls, 2)
            row = {
                "runtime": name,
                "calls_per_thread": args.calls,
                "one_thread_s": round(one, 3),
                "two_threads_s": round(two, 3),
                "speedup": round(2 * one / two, 2),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "gil_release",
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "model": args.model,
                "torch": torch.__version__,
                "cpus": os.cpu_count(),
                "results": rows,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
