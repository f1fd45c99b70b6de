"""The summary of ``farm_eval.py``: rich tables, ``farm_eval.md`` and the plots in ``farm_eval/``.

Everything here is computed from the JSON record alone (``summarize`` can be rerun on a saved
file: ``python benchmarks/farm_eval_report.py benchmarks/results/farm_eval.json``; several files
from sweeps run in parallel: ``... a.json b.json --out merged.json``). Deltas are
in AUC points x 100 (as FARM Tables 1, 2 and 4 print them), paired by (data seed, model seed).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

TASKS = ("ctr", "evtr", "lvtr", "ltr", "cmtr", "gtr")
METRICS = ("auc", "uauc", "gauc")
MAIN = "hour-avg"
GROUPS = ("low", "mid", "high")


def _value(row: dict, task: str, metric: str, sl: str = MAIN) -> float | None:
    return row["metrics"].get(sl, {}).get(task, {}).get(metric)


def _ms(values: Sequence[float | None], digits: int = 4, signed: bool = False) -> str:
    """'mean ± std' (population std over seeds; no spread for one value; '-' for none)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    spread = f" ± {statistics.pstdev(vals):.{digits}f}" if len(vals) > 1 else ""
    return f"{statistics.mean(vals):{'+' if signed else ''}.{digits}f}{spread}"


def _pairs(rows: list[dict], variant: str, config: str, baseline: str) -> list[tuple[dict, dict]]:
    """(config row, baseline row) with the same variant, data seed and model seed."""
    base = {
        (r["data_seed"], r["seed"]): r
        for r in rows
        if r["variant"] == variant and r["config"] == baseline
    }
    return [
        (r, base[(r["data_seed"], r["seed"])])
        for r in rows
        if r["variant"] == variant and r["config"] == config and (r["data_seed"], r["seed"]) in base
    ]


def _deltas(pairs: list[tuple[dict, dict]], task: str, metric: str, sl: str) -> list[float]:
    out = []
    for a, b in pairs:
        va, vb = _value(a, task, metric, sl), _value(b, task, metric, sl)
        if va is not None and vb is not None:
            out.append(100 * (va - vb))
    return out


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows] + [""]


def summarize(record: dict[str, Any], out: Path, baseline: str, candidate: str) -> dict[str, Any]:
    """Print the tables, write ``<out>.md`` and ``<out stem>/*.png``; return summary numbers."""
    rows = record["rows"]
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    configs = list(dict.fromkeys(r["config"] for r in rows))
    others = [c for c in configs if c != baseline]
    plot_dir = out.parent / out.stem
    md = [
        f"# FARM evaluation: simulated '{record['size']}'",
        "",
        *(f"Command: `{c}`" for c in record.get("commands", [record.get("command")])),
        "",
    ]
    md += [f"Date {record['date']}, torch {record['torch']}, {record['machine']['cpus']} CPUs. "
           "Metrics on the test day, averaged over test hours (FARM sec. 4.1); mean ± std over "
           "model seeds; deltas in points (x100), paired by seed.", ""]  # fmt: skip
    versions = dict.fromkeys(r.get("code", "not recorded") for r in rows)
    md += [f"Code (`git describe` of each run): {', '.join(f'`{v}`' for v in versions)}.", ""]
    md += _md_table(
        ["variant", "what", "samples", "simulate s", "build s", "like/click", "gift/click",
         "cross-domain gap"],
        [[n, record["variants"].get(n.split("/")[0], {}).get("doc", ""), f"{d['samples']:,}",
          str(d["simulate_s"]), str(d["build_samples_s"]),
          f"{d['calibration']['ltr_given_click']:.4f}", f"{d['calibration']['gtr_given_click']:.4f}",
          f"{d['calibration']['cross_domain_gap']:.3f}"] for n, d in record["datasets"].items()],
    )  # fmt: skip
    summary: dict[str, Any] = {"baseline": baseline, "candidate": candidate, "variants": {}}
    console = Console(width=200)
    for variant in variants:
        vs: dict[str, Any] = {"configs": {}}
        summary["variants"][variant] = vs
        md += [f"## Variant `{variant}`", ""]
        header = ["config", "seeds", *(f"{t} {m.upper()}" for t in TASKS for m in METRICS)]
        table_rows = []
        for c in configs:
            mine = [r for r in rows if r["variant"] == variant and r["config"] == c]
            if not mine:
                continue
            cells = [_ms([_value(r, t, m) for r in mine]) for t in TASKS for m in METRICS]
            table_rows.append([c, str(len(mine)), *cells])
        md += ["### Metrics (hour-avg)", "", *_md_table(header, table_rows)]
        _print(
            console, f"{variant}: test metrics, hour-avg, mean ± std over seeds", header, table_rows
        )

        header = [
            "config vs " + baseline,
            "pairs",
            *(f"{t} {m.upper()}" for t in TASKS for m in METRICS),
            "mean GAUC",
        ]
        delta_rows = []
        for c in others:
            pairs = _pairs(rows, variant, c, baseline)
            if not pairs:
                continue
            d = {(t, m): _deltas(pairs, t, m, MAIN) for t in TASKS for m in METRICS}
            mean_gauc = [
                statistics.mean(x) for x in zip(*(d[(t, "gauc")] for t in TASKS), strict=True)
            ]
            vs["configs"][c] = {
                "pairs": len(pairs),
                "delta": {f"{t}_{m}": _stat(v) for (t, m), v in d.items()},
                "delta_mean_gauc": _stat(mean_gauc),
                "groups": _group_deltas(pairs),
                "throughput_ratio": _stat(
                    [a["train_samples_per_s"] / b["train_samples_per_s"] for a, b in pairs]
                ),
            }
            delta_rows.append(
                [c, str(len(pairs)), *(_ms(d[k], 2, True) for k in d), _ms(mean_gauc, 2, True)]
            )
        if delta_rows:
            md += [
                f"### Delta vs {baseline} (points, paired by seed)",
                "",
                *_md_table(header, delta_rows),
            ]
            _print(console, f"{variant}: delta vs {baseline} (points x100)", header, delta_rows)
        md += _group_section(vs, baseline)
        md += _throughput_section(rows, variant, configs, vs, baseline)
        md += _diagnostics_section(rows, variant, plot_dir, summary)
    md += _gains_section(summary, candidate, baseline)
    out.with_suffix(".md").write_text("\n".join(md))
    console.print(f"wrote {out.with_suffix('.md')} and {out}")
    return summary


def _stat(values: Sequence[float]) -> dict[str, float | int | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"n": 0, "mean": None, "std": None}
    return {"n": len(vals), "mean": statistics.mean(vals), "std": statistics.pstdev(vals)}


def _group_deltas(pairs: list[tuple[dict, dict]]) -> dict[str, dict[str, Any]]:
    """Per activity group (FARM Table 4): AUC and GAUC deltas of every task, pooled rows."""
    return {
        g: {
            f"{t}_{m}": _stat(_deltas(pairs, t, m, f"activity={g}"))
            for t in TASKS
            for m in ("auc", "gauc")
        }
        for g in GROUPS
    }


def _group_section(vs: dict[str, Any], baseline: str) -> list[str]:
    md: list[str] = []
    for c, s in vs["configs"].items():
        header = ["group", *(f"{t} AUC" for t in TASKS), *(f"{t} GAUC" for t in TASKS)]
        body = [
            [
                g,
                *(_fmt(s["groups"][g][f"{t}_auc"]) for t in TASKS),
                *(_fmt(s["groups"][g][f"{t}_gauc"]) for t in TASKS),
            ]
            for g in GROUPS
        ]
        md += [f"### {c} vs {baseline} by activity group (points, all test rows of the group)", ""]
        md += _md_table(header, body)
    return md


def _fmt(s: dict[str, Any], digits: int = 2) -> str:
    if not s.get("n"):
        return "-"
    return f"{s['mean']:+.{digits}f}" + (f" ± {s['std']:.{digits}f}" if s["n"] > 1 else "")


def _throughput_section(
    rows: list[dict], variant: str, configs: list[str], vs: dict, baseline: str
) -> list[str]:
    body = []
    for c in configs:
        mine = [r for r in rows if r["variant"] == variant and r["config"] == c]
        if not mine:
            continue
        ratio = vs["configs"].get(c, {}).get("throughput_ratio")
        body.append([c, _ms([r["train_samples_per_s"] for r in mine], digits=0),
                     _ms([statistics.mean(r["epoch_seconds"]) for r in mine], digits=1),
                     _ms([r["epochs_run"] for r in mine], digits=1),
                     _ms([r["wall_s"] for r in mine], digits=0),
                     _ms([r.get("cpu_s") for r in mine], digits=0),
                     _fmt(ratio, 3).lstrip("+") if ratio else "1 (baseline)" if c == baseline else "-"])  # fmt: skip
    header = [
        "config",
        "train samples/s",
        "s / epoch",
        "epochs",
        "wall s",
        "CPU s",
        f"ratio vs {baseline}",
    ]
    return [
        "### Training throughput (trainer's own timing, same run)",
        "",
        *_md_table(header, body),
    ]


def _diagnostics_section(
    rows: list[dict], variant: str, plot_dir: Path, summary: dict
) -> list[str]:
    diag = [r for r in rows if r["variant"] == variant and r.get("diagnostics")]
    if not diag:
        return []
    by_config: dict[str, list[dict]] = {}
    for r in diag:
        by_config.setdefault(r["config"], []).append(r["diagnostics"])
    plot_dir.mkdir(parents=True, exist_ok=True)
    md = ["### FARM diagnostics (per-user means over the test day)", ""]
    body = []
    for c, ds in by_config.items():
        cells = [c]
        for name in ("cos_video_live", "beta", "delta"):
            cells.append(_ms([d[name]["mean"] for d in ds if name in d], digits=3))
            for g in GROUPS:
                cells.append(
                    _ms([d[name]["by_activity"][g].get("mean") for d in ds if name in d], digits=3)
                )
        # the low-pass gates, to compare with the high-pass ones (FARM Table 3: "higher weights
        # to high-frequency information" means beta > alpha, delta > gamma)
        cells += [_ms([d[n]["mean"] for d in ds if n in d], digits=3) for n in ("alpha", "gamma")]
        body.append(cells)
    cols = [f"{n} {g}" for n in ("cos", "beta", "delta") for g in ("all", *GROUPS)]
    md += _md_table(["config", *cols, "alpha all", "gamma all"], body)
    md += _gate_dims_section(by_config)
    cos_png = plot_dir / f"cosine_{variant}.png"
    if _cos_plot(by_config, cos_png, variant):
        md += [f"![cosine]({plot_dir.name}/{cos_png.name})", ""]
    gate_png = plot_dir / f"gates_{variant}.png"
    if _gate_plot(by_config, gate_png, variant):
        md += [f"![gates]({plot_dir.name}/{gate_png.name})", ""]
    summary["variants"][variant]["diagnostics"] = {
        c: {
            n: _stat([d[n]["mean"] for d in ds if n in d])
            for n in ("cos_video_live", "alpha", "beta", "gamma", "delta")
        }
        for c, ds in by_config.items()
    }
    return md


def _gate_dims_section(by_config: dict[str, list[dict]]) -> list[str]:
    """Per-dimension gates: their range over dimensions and the largest low-high gap."""
    body = []
    for c, ds in by_config.items():
        for gate in ("beta", "delta"):
            dims = [d[gate]["by_dim"] for d in ds if "by_dim" in d.get(gate, {})]
            if not dims:
                continue
            lo = [min(x["mean"]) for x in dims]
            hi = [max(x["mean"]) for x in dims]
            gaps = [x["largest_low_high_gap"]["gap"] for x in dims if "largest_low_high_gap" in x]
            body.append([c, gate, str(len(dims)), _ms(lo, digits=3), _ms(hi, digits=3),
                         _ms(gaps, digits=3, signed=True)])  # fmt: skip
    if not body:
        return []
    return [
        "",
        "Gates per dimension (mean over test rows): the smallest and largest dimension, and the "
        "dimension where low- and high-activity users differ most (low - high).",
        "",
        *_md_table(
            ["config", "gate", "seeds", "min over dims", "max over dims", "largest low - high gap"],
            body,
        ),  # fmt: skip
    ]


def _pooled_hist(
    ds: list[dict], name: str, group: str | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    parts = [d[name] if group is None else d[name]["by_activity"][group] for d in ds if name in d]
    parts = [p for p in parts if p.get("n")]
    if not parts:
        return None
    counts = np.sum([p["hist"]["counts"] for p in parts], axis=0).astype(float)
    return np.asarray(parts[0]["hist"]["edges"]), counts / max(counts.sum(), 1.0)


def _cos_plot(by_config: dict[str, list[dict]], path: Path, variant: str) -> bool:
    """FARM Figure 3: per-user cosine(h_video, h_live), FARM vs w/o C-PA, overlaid."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    drawn = False
    for c, ds in by_config.items():
        h = _pooled_hist(ds, "cos_video_live")
        if h is not None:
            edges, share = h
            ax.stairs(share, edges, label=c, fill=False, linewidth=1.5)
            drawn = True
    ax.set(xlabel="cosine(h_video, h_live), per-user mean", ylabel="share of users",
           title=f"Cross-domain alignment ({variant})")  # fmt: skip
    ax.legend()
    fig.tight_layout()
    if drawn:
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def _gate_plot(by_config: dict[str, list[dict]], path: Path, variant: str) -> bool:
    """Mean per-user high-frequency gates beta (video) and delta (live) by activity group."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.5), sharey=True)
    drawn = False
    width = 0.8 / max(len(by_config), 1)
    for ax, name in zip(axes, ("beta", "delta"), strict=True):
        for i, (c, ds) in enumerate(by_config.items()):
            means = [
                [d[name]["by_activity"][g].get("mean") for d in ds if name in d] for g in GROUPS
            ]
            if not any(means):
                continue
            y = [
                statistics.mean([v for v in m if v is not None])
                if any(v is not None for v in m)
                else np.nan
                for m in means
            ]
            err = [
                statistics.mean(
                    [d[name]["by_activity"][g].get("std", 0.0) for d in ds if name in d]
                )
                for g in GROUPS
            ]
            ax.bar(np.arange(3) + i * width, y, width, yerr=err, label=c, capsize=3)
            drawn = True
        ax.set(
            xticks=np.arange(3) + 0.4 - width / 2, xticklabels=GROUPS, title=f"{name} ({variant})"
        )
    axes[0].set_ylabel("gate value (mean over users; bar: std)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    if drawn:
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def _gains_section(summary: dict, candidate: str, baseline: str) -> list[str]:
    """How the gains over the baseline move between data variants: every config run on more
    than one variant (the candidate alone when no config is)."""
    runs: dict[str, int] = {}
    for vs in summary["variants"].values():
        for c in vs["configs"]:
            runs[c] = runs.get(c, 0) + 1
    shown = {c for c, n in runs.items() if n > 1} or {candidate}
    body = []
    for variant, vs in summary["variants"].items():
        for c, s in vs["configs"].items():
            if c not in shown:
                continue
            cells = [variant, c]
            cells += [_fmt(s["delta"][f"{t}_gauc"]) for t in TASKS]
            cells += [_fmt(s["delta_mean_gauc"]), _fmt(s["throughput_ratio"], 3).lstrip("+")]
            body.append(cells)
    header = ["variant", "config", *(f"{t} GAUC" for t in TASKS), "mean GAUC", "samples/s ratio"]
    if body:
        _print(Console(width=200), f"gain over {baseline} by data variant (points)", header, body)
    return [f"## Gain over {baseline} by data variant (GAUC points)", "", *_md_table(header, body)]


def _print(
    console: Console, title: str, header: Sequence[str], body: Sequence[Sequence[str]]
) -> None:
    """A rich table of the GAUC columns only (the markdown file has every metric)."""
    keep = [i for i, h in enumerate(header) if i < 2 or "GAUC" in h or "ratio" in h]
    table = Table(title=title + " (GAUC; all metrics in the .md)")
    for i in keep:
        table.add_column(header[i], justify="left" if i == 0 else "right", no_wrap=i == 0)
    for r in body:
        table.add_row(*(r[i] for i in keep))
    console.print(table)


def merge_records(records: Sequence[dict]) -> dict:
    """One record from several ``farm_eval.py`` runs on the same size (e.g. sweeps run in
    parallel, one per core): rows are joined (a key seen twice keeps the first), datasets and
    variants united, and every command kept in ``commands``."""
    sizes = {r["size"] for r in records}
    if len(sizes) != 1:
        raise SystemExit(f"cannot merge records of different sizes: {sorted(sizes)}")
    out = {k: v for k, v in records[0].items() if k not in ("rows", "summary", "command")}
    out["commands"] = [c for r in records for c in r.get("commands", [r.get("command")]) if c]
    out["variants"] = {k: v for r in records for k, v in r["variants"].items()}
    out["datasets"] = {k: v for r in records for k, v in r["datasets"].items()}
    seen: set[str] = set()
    out["rows"] = []
    for r in records:
        for row in r["rows"]:
            if row["key"] not in seen:
                seen.add(row["key"])
                out["rows"].append(row)
    return out


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("records", type=Path, nargs="+", help="farm_eval.py JSON file(s)")
    ap.add_argument("--baseline", default="ple")
    ap.add_argument("--candidate", default="farm")
    ap.add_argument("--out", type=Path, help="merged record (default: the one input, rewritten)")
    args = ap.parse_args()
    recs = [json.loads(p.read_text()) for p in args.records]
    if len(recs) > 1 and args.out is None:
        raise SystemExit("several records: say where the merged one goes with --out")
    rec = merge_records(recs) if len(recs) > 1 else recs[0]
    out = args.out or args.records[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    rec["summary"] = summarize(rec, out, args.baseline, args.candidate)
    out.write_text(json.dumps(rec, indent=1))


if __name__ == "__main__":
    main()
