"""Terminal comparison tables and checkpoint evaluation for the CLI."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from rich.console import Console
from rich.table import Table

from liverank.eval.evaluate import evaluate
from liverank.eval.result import EvalResult

#: (task, metric) columns of the comparison table
SUMMARY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ctr", "auc"),
    ("ctr", "gauc"),
    ("ctr", "uauc"),
    ("ctr", "ndcg@3"),
    ("evtr", "gauc"),
    ("lvtr", "gauc"),
    ("ltr", "auc"),
    ("cmtr", "auc"),
    ("gtr", "auc"),
)


def comparison_table(results: Mapping[str, EvalResult], slice: str = "hour-avg") -> Table:
    """One row per (task, metric), one column per model; the best value of each row in bold."""
    table = Table(title=f"test metrics ({slice})")
    table.add_column("metric")
    for name in results:
        table.add_column(name, justify="right")
    for task, metric in SUMMARY_COLUMNS:
        values = [_get(r, task, metric, slice) for r in results.values()]
        if all(v is None for v in values):
            continue
        best = max(v for v in values if v is not None)
        cells = [
            "-"
            if v is None
            else (f"[bold]{v:.4f}[/]" if v == best and len(values) > 1 else f"{v:.4f}")
            for v in values
        ]
        table.add_row(f"{task} {metric}", *cells)
    return table


def _get(r: EvalResult, task: str, metric: str, slice: str) -> float | None:
    try:
        v = r.value(task, metric, slice)
    except KeyError:
        return None
    return None if v is None or math.isnan(v) else float(v)


def print_comparison(results: Mapping[str, EvalResult], console: Console | None = None) -> None:
    console = console or Console()
    console.print(comparison_table(results, "hour-avg"))
    console.print(comparison_table(results, "all"))


def evaluate_checkpoint(
    model_path: Path, samples: Path, test_days: int = 1, out: Path | None = None
) -> EvalResult:
    """Evaluate a saved Ranker (a file, or a registry version directory) on the last test days."""
    import torch

    from liverank.data.loader import SampleSet
    from liverank.models.ranker import Ranker
    from liverank.train.registry import MODEL_FILE
    from liverank.train.trainer import predict_frame

    path = model_path / MODEL_FILE if model_path.is_dir() else model_path
    model = Ranker.load(path)
    data = SampleSet.load(samples)
    model.attach_long_history(data.long_history, data.long_len)
    days = sorted(data.days())
    test = data.subset(data["day"] >= days[-test_days])
    torch.set_num_threads(2)
    pred = predict_frame(model, test)
    result = evaluate(pred, list(model.tasks))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        pred.write_parquet(out / "predictions.parquet")
        result.save(out / "metrics.json")
    return result
