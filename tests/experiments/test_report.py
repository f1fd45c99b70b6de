"""``liverank experiment report`` on a synthetic ``results.jsonl`` with planted effects.

The records are made here, not trained: the headline beats the baseline by a planted ``EFFECT``
on the base world and by nothing where the phenomenon is off; a no-effect config differs only by
tiny noise; a labelled variant (added after results) beats the baseline by more. The report must
find those verdicts, its deltas and intervals must equal a direct computation, missing runs must
be flagged, and the page must render in a real headless Chromium.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from scipy import stats

from liverank.cli import main
from liverank.errors import ConfigError
from liverank.experiments.report import (
    HEADLINE,
    LABELLED,
    analyse,
    load_analysis,
    metric_label,
    splice_summary,
    write_report,
)
from liverank.experiments.runner import RESULTS
from liverank.experiments.spec import ExperimentSpec

EFFECT = 0.01  # planted headline effect on the base world (GAUC)
LATE_EFFECT = 0.02  # the labelled variant's effect
HOURS = [96, 97, 98, 99]
GROUPS = ["low", "mid", "high"]
SEEDS, WORLDS = [0, 1, 2, 3, 4], [0, 1]


def _spec_file(tmp_path: Path, **changes: Any) -> Path:
    raw: dict[str, Any] = {
        "name": "synthetic",
        "claim": "head beats base on GAUC",
        "paper_figure": "Table 0",
        "description": "A planted effect that vanishes when the phenomenon is off.",
        "baseline": "base",
        "headline": "head",
        "configs": {
            "base": {"config": "configs/base.yaml"},
            "head": {"config": "configs/head.yaml"},
            "same": {"config": "configs/same.yaml"},
            "late": {"config": "configs/late.yaml", "added_after_results": True, "mode": "moment"},
        },
        "metric": {"name": "gauc", "task": "ctr", "slice": "hour-avg", "margin": 0.002},
        "secondary": [{"name": "auc", "task": "ctr", "slice": "all", "margin": 0.002}],
        "off_variants": ["off"],
        "grid": {
            "model_seeds": SEEDS,
            "world": {"preset": "tiny", "seeds": WORLDS},
            "variants": {"on": {}, "off": {"periodic_interests": False}},
        },
    }
    raw.update(changes)
    path = tmp_path / "synthetic.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _gauc(config: str, variant: str, world: int, seed: int, hour: int, rng) -> float:
    """The planted GAUC of one run in one hour."""
    base = 0.70 + 0.01 * world + 0.003 * seed + 0.002 * (hour - HOURS[0])
    effect = {
        "base": 0.0,
        "head": EFFECT if variant == "on" else 0.0,
        "same": 0.0,
        "late": LATE_EFFECT,
    }[config]
    noise = {"base": 0.0, "head": 0.001, "same": 0.0002, "late": 0.001}[config]
    return base + effect + rng.normal(0.0, noise)


def _records(spec: ExperimentSpec) -> list[dict[str, Any]]:
    rng = np.random.default_rng(7)
    records = []
    for key in spec.runs():
        hourly = [
            _gauc(key.config, key.variant, key.world_seed, key.model_seed, h, rng) for h in HOURS
        ]
        metrics: dict[str, Any] = {
            f"hour={h}": {"ctr": {"gauc": v, "auc": v, "count": 100.0}}
            for h, v in zip(HOURS, hourly, strict=True)
        }
        avg = float(np.mean(hourly))
        metrics["hour-avg"] = {"ctr": {"gauc": avg, "auc": avg, "uauc": None}}
        metrics["all"] = {"ctr": {"auc": avg + 0.005, "gauc": avg, "logloss": 0.3}}
        for i, g in enumerate(GROUPS):
            metrics[f"activity={g}"] = {"ctr": {"gauc": avg + 0.01 * i}}
        record = {
            "hash": key.hash(spec),
            "experiment": key.experiment,
            "config": key.config,
            "stream_mode": key.stream_mode,
            "model_seed": key.model_seed,
            "preset": key.preset,
            "world_seed": key.world_seed,
            "variant": key.variant,
            "code": "abc1234",
            "metrics": metrics,
            "epochs_run": 2,
            "best_epoch": 2,
            "train_samples_per_s": 9000.0,
            "seconds": 250.0,
            "peak_rss_gb": 2.1,
            "device": "cpu",
        }
        if key.stream_mode != "offline":  # stream arms record when labels reach training
            record["history"] = []
            record["label_latency"] = {
                "ctr": {"positives": 500, "median_s": 15.0 + key.world_seed, "p90_s": 40.0},
            }
        elif key.model_seed != 4:  # older records: no history
            record["history"] = [
                {"epoch": e, "loss": 0.3, "val_metric": avg - 0.01 / e} for e in (1, 2)
            ]
        if key.config == "head":  # a FARM arm: its mechanism diagnostics
            counts = [0] * 40
            counts[30 + key.model_seed % 2] = 100  # cosine ~0.5-0.6
            record["diagnostics"] = {
                "farm": {
                    "rows": 100,
                    "cos_bins": [round(-1 + 0.05 * i, 2) for i in range(41)],
                    "cos_counts": counts,
                    "cos_mean": 0.55,
                    "gates": {"alpha": 0.4, "beta": 0.6},
                }
            }
        records.append(record)
    return records


def _write(out: Path, records: list[dict[str, Any]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULTS).write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture()
def setup(tmp_path: Path) -> tuple[ExperimentSpec, Path, Path, list[dict[str, Any]]]:
    path = _spec_file(tmp_path)
    spec = ExperimentSpec.load(path)
    records = _records(spec)
    out = tmp_path / "out"
    _write(out, records)
    return spec, path, out, records


def _values(records, config, variant, slice="hour-avg", metric="gauc") -> np.ndarray:
    """The metric of every (world, seed) unit, in the report's unit order. [U]"""
    by = {(r["config"], r["variant"], r["world_seed"], r["model_seed"]): r for r in records}
    return np.array(
        [
            by[(config, variant, w, s)]["metrics"][slice]["ctr"][metric]
            if (config, variant, w, s) in by
            else math.nan
            for w in WORLDS
            for s in SEEDS
        ]
    )


def _row(rows, variant: str, label: str):
    return next(r for r in rows if r.variant == variant and r.label == label)


def _direct_interval(d: np.ndarray) -> tuple[float, float, float]:
    """Mean and Student-t 95 % interval of paired differences, computed here."""
    d = d[np.isfinite(d)]
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def test_verdicts_find_the_planted_effects(setup) -> None:
    spec, _, _, records = setup
    a = analyse(spec, records)
    rows = a.main[metric_label(spec.metric)]
    assert [(r.variant, r.label) for r in rows] == [
        (v, c) for v in ("on", "off") for c in ("head", "same", "late")
    ]
    head_on = _row(rows, "on", "head")
    assert (head_on.delta.verdict, head_on.delta.direction) == ("effect", "+")
    assert HEADLINE in head_on.notes and LABELLED not in head_on.notes
    assert _row(rows, "on", "same").delta.verdict == "no effect"
    assert _row(rows, "off", "head").delta.verdict == "no effect"
    late = _row(rows, "on", "late")
    assert late.delta.verdict == "effect" and late.notes == (LABELLED,)
    # the secondary metric is reported the same way
    assert _row(a.main[metric_label(spec.secondary[0])], "on", "head").delta.verdict == "effect"


def test_deltas_and_intervals_equal_a_direct_computation(setup) -> None:
    spec, _, _, records = setup
    a = analyse(spec, records)
    head, base = _values(records, "head", "on"), _values(records, "base", "on")
    r = _row(a.main[metric_label(spec.metric)], "on", "head")
    mean, low, high = _direct_interval(head - base)
    assert r.delta.n == len(WORLDS) * len(SEEDS) and r.delta.n_missing == 0
    assert r.delta.mean == pytest.approx(mean) and r.delta.mean == pytest.approx(EFFECT, abs=1e-3)
    assert (r.delta.ci_low, r.delta.ci_high) == (pytest.approx(low), pytest.approx(high))
    assert r.candidate_mean == pytest.approx(head.mean())
    assert r.reference_mean == pytest.approx(base.mean())
    # phenomenon off: (head - base on off) - (head - base on on), paired by unit
    off = a.off[0]
    effect_off = _values(records, "head", "off") - _values(records, "base", "off")
    mean, low, high = _direct_interval(effect_off - (head - base))
    assert off.label == "off" and off.delta.verdict == "effect" and off.delta.direction == "-"
    assert off.delta.mean == pytest.approx(mean)
    assert (off.delta.ci_low, off.delta.ci_high) == (pytest.approx(low), pytest.approx(high))
    assert off.reference_mean == pytest.approx((head - base).mean())
    # per activity group, in activity order
    assert [r.label for r in a.activity] == GROUPS
    for g, row in zip(GROUPS, a.activity, strict=True):
        s = f"activity={g}"
        d = _values(records, "head", "on", s) - _values(records, "base", "on", s)
        assert row.delta.mean == pytest.approx(d.mean())
    # per hour, and pooled over (world, seed, hour) units
    assert a.hours == HOURS and [r.label for r in a.hourly] == [str(h) for h in HOURS]
    pooled = np.concatenate(
        [
            _values(records, "head", "on", f"hour={h}")
            - _values(records, "base", "on", f"hour={h}")
            for h in HOURS
        ]
    )
    mean, low, high = _direct_interval(pooled)
    assert a.hour_pooled is not None and a.hour_pooled.delta.n == len(pooled)
    assert a.hour_pooled.delta.mean == pytest.approx(mean)
    assert a.hour_pooled.delta.ci_low == pytest.approx(low)
    assert a.hourly_means["head"][0] == pytest.approx(
        _values(records, "head", "on", f"hour={HOURS[0]}").mean()
    )
    # learning curves: runs without a history are left out, stream arms have none
    epochs, values = a.curves["base"]
    with_history = [r for r in records if r["config"] == "base" and r["variant"] == "on"]
    last = [r["history"][-1]["val_metric"] for r in with_history if "history" in r]
    assert epochs == [1, 2] and values[-1] == pytest.approx(np.mean(last))
    assert "late" not in a.curves
    # label latency: stream arms only, mean over the base variant's units
    assert list(a.latency) == [("late", "ctr")]
    assert a.latency[("late", "ctr")]["median_s"] == pytest.approx(15.0 + np.mean(WORLDS))


def test_missing_runs_are_flagged_and_left_out_of_the_pairs(setup, tmp_path: Path) -> None:
    spec, _, out, records = setup
    gone = {("head", "on", 1, 3), ("base", "on", 0, 0)}
    kept = [
        r
        for r in records
        if (r["config"], r["variant"], r["world_seed"], r["model_seed"]) not in gone
    ]
    _write(out, kept)
    a = load_analysis(spec, out)
    assert len(a.index.missing) == 2 and len(a.index.runs) == len(records) - 2
    r = _row(a.main[metric_label(spec.metric)], "on", "head")
    assert r.delta.n == len(WORLDS) * len(SEEDS) - 2 and r.delta.n_missing == 2
    summary, page = write_report(a, out)
    text = summary.read_text()
    assert "MISSING RUNS: 2 of" in text and "head/on world 1 seed 3" in text
    assert "8 (2 without a value)" in text
    assert "MISSING RUNS" in page.read_text()


def test_underpowered_changed_and_errors(tmp_path: Path) -> None:
    path = _spec_file(tmp_path, underpowered_ok=True)
    raw = yaml.safe_load(path.read_text())
    raw["grid"]["model_seeds"] = [0, 1]
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    spec = ExperimentSpec.load(path)
    records = _records(spec)
    records[0]["hash"] = "0" * 12  # as if its config changed after the run
    a = analyse(spec, records)
    from liverank.experiments.report_page import render_markdown

    text = render_markdown(a)
    assert "UNDERPOWERED: 2 model seeds × 2 worlds" in text
    assert "CHANGED: 1 runs" in text and "MISSING" not in text
    with pytest.raises(ConfigError, match="no results file"):
        load_analysis(spec, tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / RESULTS).write_text("")
    with pytest.raises(ConfigError, match="holds no runs"):
        load_analysis(spec, tmp_path / "empty")
    with pytest.raises(ConfigError, match="no run of the baseline 'base'"):
        analyse(spec, [r for r in records if r["config"] != "base"])


def test_cli_report_writes_summary_page_and_plots(setup, capsys) -> None:
    spec, path, out, records = setup
    assert main(["experiment", "report", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "head (headline)" in printed and "effect (+)" in printed
    summary = (out / "summary.md").read_text()
    head = _values(records, "head", "on") - _values(records, "base", "on")
    assert f"{head.mean():+.4f}" in summary  # the number, read from the records
    assert "paired over (world seed, model seed) units" in summary
    assert "'no effect' when it lies inside ±margin (0.002" in summary
    assert LABELLED in summary and "Phenomenon off" in summary and "nan" not in summary
    assert "### Per activity group" in summary and "### Per test hour" in summary
    assert "### Label latency (ctr)" in summary and "| late | ctr | 500 | 15.5 | 40 |" in summary
    assert (
        "### FARM's mechanism" in summary
        and "| on | head | 10 | 0.5500 | 0.4000 | 0.6000 |" in summary
    )
    names = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert "mechanism.png" in names and "curves.png" in names and "hourly-delta.png" in names
    assert "farm-cosine_on.png" in names and "farm-cosine_off.png" in names
    assert sum(n.startswith("forest") for n in names) == 2  # the verdict and secondary metric
    page = (out / "report.html").read_text()
    assert page.count("<img") == len(names) and "data:image/png;base64," in page


def test_report_pastes_its_summary_between_the_markers_of_a_doc(setup, tmp_path: Path) -> None:
    spec, path, out, _ = setup
    doc = tmp_path / "results.md"
    name = spec.name
    doc.write_text(
        f"# Results\n<!-- experiment:{name}:start -->\nold\n<!-- experiment:{name}:end -->\nkept\n"
    )
    assert main(["experiment", "report", str(path), "--out", str(out), "--into", str(doc)]) == 0
    text = doc.read_text()
    summary = (out / "summary.md").read_text().strip()
    assert summary in text and "old" not in text and text.endswith("kept\n")
    assert main(["experiment", "report", str(path), "--out", str(out), "--into", str(doc)]) == 0
    assert doc.read_text() == text  # pasting again changes nothing
    doc.write_text("# no markers\n")
    with pytest.raises(ConfigError, match=f"experiment:{name}:start"):
        splice_summary(doc, name, summary)
    # the README's one row per claim: the headline's interval and verdict, and the off variant's
    readme = tmp_path / "README.md"
    readme.write_text(f"| claim |\n<!-- claim:{name}:start -->\n<!-- claim:{name}:end -->\n")
    args = ["experiment", "report", str(path), "--out", str(out), "--claim-into", str(readme)]
    assert main(args) == 0
    row = [line for line in readme.read_text().splitlines() if line.startswith("| `")]
    assert len(row) == 1 and "**effect (+)**" in row[0] and "n=10" in row[0]
    assert "off:" in row[0] and f"of {len(spec.runs())}" in row[0]


def test_report_renders_in_headless_chromium(setup, tmp_path: Path, headless_chromium) -> None:
    spec, _, out, records = setup
    _, page = write_report(load_analysis(spec, out), out)
    dom, png = headless_chromium(page.resolve().as_uri(), tmp_path)
    assert "Experiment synthetic" in dom and "head beats base on GAUC" in dom
    assert len(re.findall(r"<table", dom)) >= 5  # verdict, secondary, off, activity, hour, runs
    assert len(re.findall(r"<img ", dom)) >= 5
    head = _values(records, "head", "on") - _values(records, "base", "on")
    assert f"{head.mean():+.4f}" in dom and "effect (+)" in dom and "no effect" in dom
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000


def test_pre_registered_pairs_are_paired_deltas_between_two_non_baseline_arms(
    tmp_path: Path,
) -> None:
    """``comparisons: [[late, head]]``: late − head paired by unit in each variant, the same
    numbers as a direct computation; a pair naming an unknown config is refused."""
    spec = ExperimentSpec.load(_spec_file(tmp_path, comparisons=[["late", "head"]]))
    records = _records(spec)
    a = analyse(spec, records)
    from liverank.experiments.report_page import render_markdown

    for variant in ("on", "off"):
        row = _row(a.pairs, variant, "late − head")
        d = _values(records, "late", variant) - _values(records, "head", variant)
        mean, lo, hi = _direct_interval(d)
        assert row.delta.mean == pytest.approx(mean) and row.delta.ci_low == pytest.approx(lo)
        assert row.delta.ci_high == pytest.approx(hi)
    # late beats head by LATE_EFFECT - EFFECT on the base world, by LATE_EFFECT where off
    assert _row(a.pairs, "on", "late − head").delta.mean == pytest.approx(0.01, abs=0.002)
    assert "### Pre-registered pairs" in render_markdown(a)
    with pytest.raises(ConfigError, match="comparisons must pair"):
        ExperimentSpec.load(_spec_file(tmp_path, comparisons=[["late", "nope"]]))
