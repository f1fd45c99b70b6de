"""Distance correlation's moments, forward + backward: autograd through the elementwise
formulation vs the hand-written backward of ``liverank.models.layers.dcor._DistanceMoments``.

One thread, ``n = 1,024`` rows (an eLiveRec batch), widths 16 and 32, 20 timed calls after 3
warm-up calls::

    PYTHONPATH=src python benchmarks/dcor_backward.py --out benchmarks/results/dcor_backward.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from liverank.models.layers.dcor import _DistanceMoments


def elementwise(x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """The three moments written elementwise (what autograd differentiated before)."""

    def centred(z: torch.Tensor) -> torch.Tensor:
        z = z - z.mean(0, keepdim=True)
        sq = (z * z).sum(-1)
        d2 = (sq.unsqueeze(0) + sq.unsqueeze(1) - 2.0 * (z @ z.t())).clamp_min(0.0)
        dist = d2 / torch.sqrt(d2 + eps)
        return dist - dist.mean(0, keepdim=True) - dist.mean(1, keepdim=True) + dist.mean()

    a, b = centred(x), centred(y)
    return torch.stack([(a * b).mean(), (a * a).mean(), (b * b).mean()])


def hand_written(x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.stack(_DistanceMoments.apply(x, y, eps))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=1024)
    p.add_argument("--widths", type=int, nargs="+", default=[16, 32])
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    torch.set_num_threads(1)
    weights = torch.tensor([0.7, -1.3, 0.4])
    rows = []
    for d in args.widths:
        x = torch.randn(args.rows, d, requires_grad=True)
        y = torch.randn(args.rows, d, requires_grad=True)
        for name, fn in (("autograd", elementwise), ("hand-written", hand_written)):
            for _ in range(3):
                (fn(x, y, 1e-9) * weights).sum().backward()
            start = time.perf_counter()
            for _ in range(args.calls):
                (fn(x, y, 1e-9) * weights).sum().backward()
            ms = (time.perf_counter() - start) / args.calls * 1e3
            rows.append(
                {"rows": args.rows, "width": d, "variant": name, "ms_fwd_bwd": round(ms, 1)}
            )
            print(f"n={args.rows} d={d} {name:13s} {ms:6.1f} ms forward + backward")
    if args.out:
        args.out.write_text(json.dumps({"threads": 1, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
