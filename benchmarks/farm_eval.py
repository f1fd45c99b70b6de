"""FARM vs PLE, the four FARM ablations, and the same comparison on weakened simulated data.

The evidence of issue #5 in one command. For every data variant (``base``: the simulator's
defaults; ``sparse_weak``: valuable behaviours several times less sparse; ``no_crossdomain``:
no shared interest across the short-video and live domains), simulate a platform, build samples,
then for every model seed and config train with early stopping on the validation day and
evaluate on the test day: AUC / UAUC / GAUC of the six tasks, hour-averaged (as FARM sec. 4.1
reports), pooled, and per user-activity group (FARM Table 4); training samples/s from the
trainer's own timing (FARM / PLE ratio in the same run). For ``farm`` and ``farm_no_cpa``
(``--diagnostics``) it also records the FARM module's diagnostics on the test day (per-user
cosine(h_video, h_live) of FARM Figure 3 and the gates alpha..delta of eq. 10, by activity
group).

Size ``tiny`` has one day, too few for a train / validation / test split: use ``small`` or more.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/farm_eval.py --size medium --resume

Configs (default): ``configs/ple.yaml``, ``configs/farm.yaml`` and the four
``configs/ablations/farm_no_{vfa,lfa,cpa,cpf}.yaml``; configs under ``configs/ablations/`` run
only on ``--ablation-variants`` (default ``base``). Writes ``benchmarks/results/farm_eval.json``
after every run (``--resume`` skips the runs already in it), then the markdown summary
``farm_eval.md`` and the plots in ``farm_eval/`` beside it (see ``farm_eval_report.py``).
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench_data import ensure_samples  # noqa: E402
from farm_eval_report import summarize  # noqa: E402
from liverank.config import ExperimentConfig, load_config  # noqa: E402
from liverank.data.loader import SampleSet  # noqa: E402
from liverank.data.sim import SimConfig  # noqa: E402
from liverank.errors import ConfigError  # noqa: E402
from liverank.eval.result import HOUR_AVG, EvalResult  # noqa: E402
from liverank.models.base import FeatureModule  # noqa: E402
from liverank.models.ranker import Ranker  # noqa: E402
from liverank.train.experiment import load_splits, run_experiment  # noqa: E402

log = logging.getLogger("farm_eval")
ROOT = Path(__file__).resolve().parent.parent
ABLATION_NAMES = ("vfa", "lfa", "cpa", "cpf")
DEFAULT_CONFIGS = [
    ROOT / "configs" / "ple.yaml",
    ROOT / "configs" / "farm.yaml",
    *(ROOT / "configs" / "ablations" / f"farm_no_{a}.yaml" for a in ABLATION_NAMES),
]
#: data variants: simulator overrides on top of the size preset, and what they switch off
VARIANTS: dict[str, dict[str, Any]] = {
    "base": {"overrides": {}, "doc": "simulator defaults"},
    "sparse_weak": {
        # ARCHITECTURE sec. 3 item 2 weakened: 4x the like / comment / gift intensities and more
        # gifters; on 'small' seed 0 this moves like/click 0.039 -> 0.13, comment/click
        # 0.030 -> 0.10, gift/click 0.013 -> 0.054 (the calibration report of each dataset is
        # copied into the JSON, so the shift is measured on the data actually used).
        "overrides": {
            "like_rate": 0.048,
            "comment_rate": 0.036,
            "gift_rate": 1.2,
            "gifter_share": (0.2, 0.45, 0.8),
        },
        "doc": "valuable behaviours ~3-4x less sparse (4x like/comment/gift rates, more gifters)",
    },
    "no_crossdomain": {
        "overrides": {"cross_domain_interest": False},
        "doc": "no consistent interest across short-video and live (cross_domain_interest off)",
    },
}
METRICS = ("auc", "uauc", "gauc")
SLICES = (HOUR_AVG, "all", "activity=low", "activity=mid", "activity=high")
#: histogram bins of the per-user cosine (FARM Figure 3) and of the gates
COS_BINS = np.linspace(-1.0, 1.0, 41)
GATE_BINS = np.linspace(0.0, 1.0, 21)
ACTIVITY = {1: "low", 2: "mid", 3: "high"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="medium")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="model seeds")
    ap.add_argument("--data-seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--configs", type=Path, nargs="+", default=DEFAULT_CONFIGS)
    ap.add_argument("--ablation-variants", nargs="+", default=["base"])
    ap.add_argument("--baseline", default="ple", help="config stem the deltas are taken against")
    ap.add_argument("--candidate", default="farm", help="config stem of the model under test")
    ap.add_argument("--diagnostics", nargs="*", default=["farm", "farm_no_cpa"],
                    help="config stems whose FARM diagnostics are recorded")  # fmt: skip
    ap.add_argument("--epochs", type=int, default=None, help="default: each config's own")
    ap.add_argument("--max-batches", type=int, default=0,
                    help="train.max_batches_per_epoch (0: full epochs); for timing runs only")  # fmt: skip
    ap.add_argument("--work", type=Path, default=Path("/tmp/liverank-farm"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/farm_eval.json")
    ap.add_argument("--resume", action="store_true", help="keep and skip runs already in --out")
    ap.add_argument("--max-minutes", type=float, default=None, help="start no run after this")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    n_days = SimConfig.preset(args.size).n_days
    if n_days < 3:
        raise SystemExit(f"size '{args.size}' simulates {n_days} day(s); train / validation / "
                         "test days need 3: use --size small or larger")  # fmt: skip
    missing = [str(p) for p in args.configs if not p.exists()]
    if missing:
        raise SystemExit(f"config file(s) not found: {missing}")
    record = _load_record(args) if args.resume and args.out.exists() else _new_record(args)
    done = {r["key"] for r in record["rows"]}
    plan = _plan(args)
    todo = [p for p in plan if _key(*p) not in done]
    log.info("%d runs planned, %d already in %s, %d to do", len(plan), len(plan) - len(todo),
             args.out, len(todo))  # fmt: skip

    started, spent = time.perf_counter(), 0.0
    splits_cache: dict[tuple[str, int, int, int], Any] = {}
    for i, (variant, data_seed, seed, path) in enumerate(todo):
        elapsed = time.perf_counter() - started
        if args.max_minutes is not None and elapsed > 60 * args.max_minutes:
            log.warning("--max-minutes %.0f reached; %d runs left (rerun with --resume)",
                        args.max_minutes, len(todo) - i)  # fmt: skip
            break
        eta = f"{(spent / i) * (len(todo) - i) / 60:.0f} min" if i else "?"
        log.info("run %d/%d %s (elapsed %.1f min, ETA %s)", i + 1, len(todo),
                 _key(variant, data_seed, seed, path), elapsed / 60, eta)  # fmt: skip
        samples = _dataset(args, record, variant, data_seed)
        t0 = time.perf_counter()
        row = run_one(args, variant, data_seed, seed, path, samples, splits_cache)
        spent += time.perf_counter() - t0
        record["rows"].append(row)
        _write(args.out, record)
        log.info("%s: %.0f s, %.0f samples/s, ctr GAUC %s", row["key"], row["wall_s"],
                 row["train_samples_per_s"], row["metrics"][HOUR_AVG]["ctr"]["gauc"])  # fmt: skip

    record["summary"] = summarize(record, args.out, args.baseline, args.candidate)
    _write(args.out, record)


def _plan(args: argparse.Namespace) -> list[tuple[str, int, int, Path]]:
    """Every (variant, data seed, model seed, config) to run, datasets grouped together."""
    plan = []
    for variant in args.variants:
        for data_seed in args.data_seeds:
            for seed in args.seeds:
                for path in args.configs:
                    if path.parent.name == "ablations" and variant not in args.ablation_variants:
                        continue
                    plan.append((variant, data_seed, seed, path))
    return plan


def _key(variant: str, data_seed: int, seed: int, path: Path) -> str:
    return f"{variant}/data{data_seed}/seed{seed}/{path.stem}"


def _dataset(args: argparse.Namespace, record: dict, variant: str, data_seed: int) -> Path:
    """The samples directory of one variant and data seed (simulated / built when missing)."""
    root = args.work / f"{args.size}-{variant}-data{data_seed}"
    samples = root / "samples"
    name = f"{variant}/data{data_seed}"
    if name not in record["datasets"] or not (samples / "feature_map.json").exists():
        sim = SimConfig.preset(args.size, seed=data_seed, **VARIANTS[variant]["overrides"])
        record["datasets"][name] = {
            "dir": str(root),
            **ensure_samples(sim, root / "dataset", samples),
        }
        _write(args.out, record)
    return samples


def _splits(cfg: ExperimentConfig, cache: dict[tuple[str, int, int, int], Any]) -> Any:
    """Load each samples directory once per process (the last one only: memory)."""
    key = (str(cfg.data.samples), cfg.data.long_len, cfg.data.val_days, cfg.data.test_days)
    if key not in cache:
        cache.clear()
        cache[key] = load_splits(cfg)
    return cache[key]


def run_one(
    args: argparse.Namespace,
    variant: str,
    data_seed: int,
    seed: int,
    path: Path,
    samples: Path,
    cache: dict[tuple[str, int, int, int], Any],
) -> dict[str, Any]:
    """Train one config on one dataset with one model seed; metrics, throughput, diagnostics."""
    key = _key(variant, data_seed, seed, path)
    overrides: dict[str, Any] = {
        "data.samples": str(samples),
        "out": str(samples.parent / "runs" / f"{path.stem}-seed{seed}"),
        "registry": None,
        "train.seed": seed,
        "train.progress": False,
    }
    if args.epochs is not None:
        overrides["train.epochs"] = args.epochs
    if args.max_batches:
        overrides["train.max_batches_per_epoch"] = args.max_batches
    cfg = load_config(path, overrides)
    splits = _splits(cfg, cache)
    start, cpu = time.perf_counter(), time.process_time()
    res = run_experiment(cfg, splits)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert res.fit is not None
    history = res.fit.history
    row: dict[str, Any] = {
        "key": key,
        "variant": variant,
        "data_seed": data_seed,
        "seed": seed,
        "config": path.stem,
        "ablation": path.parent.name == "ablations",
        "max_epochs": cfg.train.epochs,
        "max_batches_per_epoch": cfg.train.max_batches_per_epoch,
        "epochs_run": len(history),
        "best_epoch": res.fit.best_epoch,
        # the trainer's own timing: samples / second of the training passes (no validation)
        "train_samples_per_s": float(np.mean([h.samples_per_s for h in history])),
        "epoch_seconds": [round(h.seconds, 1) for h in history],
        "wall_s": round(wall, 1),
        # CPU seconds of this process (training + validation + test): less sensitive than
        # samples/s to other jobs sharing the machine
        "cpu_s": round(cpu, 1),
        "metrics": _metrics(res.test),
        "diagnostics": None,
        "code": CODE_VERSION,
    }
    if path.stem in args.diagnostics:
        model = Ranker.load(res.fit.checkpoint)
        found = _farm_module(model)
        if found is None:
            log.warning("%s has no 'farm' module with diagnostics(); none recorded", path.stem)
        else:
            start = time.perf_counter()
            test = splits[3]
            row["diagnostics"] = farm_diagnostics(model, found, test, cfg.train.eval_batch_size)
            row["diagnostics_s"] = round(time.perf_counter() - start, 1)
    return row


def _metrics(result: EvalResult) -> dict[str, dict[str, dict[str, float | None]]]:
    """``{slice: {task: {metric: value}}}`` for the slices and metrics of this benchmark."""
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for sl in SLICES:
        if sl not in result.slices:
            continue
        out[sl] = {}
        for task in result.tasks:
            values = result.slices[sl].get(task, {})
            out[sl][task] = {m: _finite(values.get(m)) for m in (*METRICS, "count")}
    return out


def _finite(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _farm_module(model: Ranker) -> FeatureModule | None:
    """The Ranker's FARM module (registered name or class name 'farm'), if it has one."""
    for spec in model.config.modules:
        module = model.feature_modules[spec.module_key]
        if spec.name == "farm" or type(module).__name__.lower().startswith("farm"):
            if not hasattr(module, "diagnostics"):
                log.warning("module '%s' has no diagnostics(); skipped", spec.module_key)
                return None
            return module  # type: ignore[return-value]
    return None


#: diagnostics values summarised per user -> the row-validity flag that selects their rows
DIAG_VALUES: dict[str, tuple[str, ...]] = {
    "cos_video_live": ("video_nonempty", "live_nonempty"),
    "alpha": ("video_nonempty",),
    "beta": ("video_nonempty",),
    "gamma": ("live_nonempty",),
    "delta": ("live_nonempty",),
}


@torch.no_grad()
def farm_diagnostics(
    model: Ranker, module: FeatureModule, test: SampleSet, batch_size: int
) -> dict[str, Any] | None:
    """Per-user means over the test day of FARM's gates alpha, beta, gamma, delta (eq. 10) and
    cosine(h_video, h_live) (eq. 13, Figure 3): histograms and per-activity-group summaries.

    A row counts for a value only where the module flags the sequences it needs as non-empty
    (``video_nonempty`` / ``live_nonempty``, when the module returns them); users with no such
    row are left out of that value.
    """
    model.eval()
    call = module.diagnostics  # type: ignore[attr-defined]
    wants_embeddings = len(inspect.signature(call).parameters) >= 2
    cols: dict[str, list[np.ndarray]] = {}
    for batch in test.iter_batches(batch_size, shuffle=False, seed=0):
        out = call(batch, model.embeddings) if wants_embeddings else call(batch)
        for name, value in out.items():
            value = torch.as_tensor(value).float()
            # [B, D] for the per-dimension gates ("<gate>_by_dim"), [B] for the rest
            value = value.reshape(len(value), -1) if name.endswith("_by_dim") else value.reshape(-1)
            cols.setdefault(name, []).append(value.numpy())
    arrays = {k: np.concatenate(v) for k, v in cols.items()}  # [N] or [N, D]
    if not set(DIAG_VALUES) & set(arrays):
        log.warning("farm diagnostics returned none of %s", list(DIAG_VALUES))
        return None
    users, inverse = np.unique(test["user_id"], return_inverse=True)  # [U], [N]
    activity = np.zeros(len(users), dtype=np.int64)  # [U]
    activity[inverse] = test["user_activity"]  # one code per user (any of its rows)
    result: dict[str, Any] = {"n_users": int(len(users)), "n_rows": int(len(inverse))}
    for name, flags in DIAG_VALUES.items():
        if name not in arrays:
            continue
        valid = np.ones(len(inverse), dtype=bool)  # [N]
        for f in flags:
            valid &= arrays[f] > 0 if f in arrays else True
        n = np.bincount(inverse[valid], minlength=len(users)).astype(np.float64)  # [U]
        total = np.bincount(inverse[valid], weights=arrays[name][valid], minlength=len(users))
        has = n > 0
        per_user = total[has] / n[has]  # [U'] mean over the user's valid rows
        bins = COS_BINS if name == "cos_video_live" else GATE_BINS
        stats = _describe(per_user, bins)
        stats["row_share"] = float(valid.mean())
        stats["by_activity"] = {
            group: _describe(per_user[activity[has] == code], bins)
            for code, group in ACTIVITY.items()
        }
        by_dim = arrays.get(f"{name}_by_dim")
        if by_dim is not None:
            stats["by_dim"] = _by_dim(by_dim[valid], activity[inverse[valid]])
        result[name] = stats
    return result


def _by_dim(values: np.ndarray, activity: np.ndarray) -> dict[str, Any]:
    """A gate per dimension (``values [N, D]`` over valid rows, ``activity [N]`` codes): the mean
    of each dimension per activity group, and the dimension where low- and high-activity users
    differ most (a mean over dimensions can hide gates that move in opposite directions)."""
    means = {
        group: values[activity == code].mean(0).tolist()
        for code, group in ACTIVITY.items()
        if (activity == code).any()
    }  # group -> [D]
    out: dict[str, Any] = {"mean": values.mean(0).tolist(), "by_activity": means}
    if "low" in means and "high" in means:
        gap = np.asarray(means["low"]) - np.asarray(means["high"])  # [D]
        k = int(np.abs(gap).argmax())
        out["largest_low_high_gap"] = {"dim": k, "low": means["low"][k],
                                       "high": means["high"][k], "gap": float(gap[k])}  # fmt: skip
    return out


def _describe(x: np.ndarray, bins: np.ndarray) -> dict[str, Any]:
    if x.size == 0:
        return {"n": 0}
    q = np.quantile(x, [0.1, 0.25, 0.5, 0.75, 0.9])
    return {
        "n": int(x.size),
        "mean": float(x.mean()),
        "std": float(x.std()),
        "quantiles": {"p10": q[0], "p25": q[1], "p50": q[2], "p75": q[3], "p90": q[4]},
        "hist": {"edges": bins.tolist(), "counts": np.histogram(x, bins)[0].tolist()},
    }


def _code_version() -> str:
    """``git describe --always --dirty`` of the checkout this process runs (its code was
    imported at start-up, so later edits do not change what it runs); ``unknown`` outside git."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


#: the code this sweep runs, recorded in every row (sweeps are resumed across commits)
CODE_VERSION = _code_version()


def _new_record(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "benchmark": "farm_eval",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "size": args.size,
        "epochs": args.epochs,
        "command": "python benchmarks/farm_eval.py " + " ".join(sys.argv[1:]),
        "variants": {k: VARIANTS[k] for k in args.variants},
        "datasets": {},
        "rows": [],
    }


def _load_record(args: argparse.Namespace) -> dict[str, Any]:
    record = json.loads(args.out.read_text())
    if record.get("size") != args.size:
        raise SystemExit(f"{args.out} holds size '{record.get('size')}', not '{args.size}'")
    for k in args.variants:
        record["variants"].setdefault(k, VARIANTS[k])
    record.setdefault("resumed_with", []).append(" ".join(sys.argv[1:]))
    return record


def _write(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1, default=_json_default))
    tmp.replace(path)  # atomic: a killed sweep never leaves half a file


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, tuple):
        return list(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


if __name__ == "__main__":
    try:
        main()
    except ConfigError as exc:  # e.g. size 'tiny' has one day: no train / validation / test split
        raise SystemExit(f"farm_eval: {exc}") from None
