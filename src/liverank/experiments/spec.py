"""The experiment file (issue #14): one YAML per paper claim, validated before anything runs.

An experiment names its **baseline** and its **headline** configuration *before* any run, the
comparisons to report (each against the baseline, with the verdict margin of
:func:`liverank.experiments.intervals.paired_delta`), and the grid: model configs x model seeds x
worlds (preset, seeds, switch / knob variants) x stream modes. A configuration added after
results were seen is allowed but must say so (``added_after_results: true``); it is reported as a
labelled variant and can never be the headline.

Example (``experiments/farm.yaml``)::

    name: farm
    claim: "FARM beats PLE on GAUC (FARM Table 2)"
    paper_figure: "FARM Table 2: +0.6 % GAUC over the best baseline"
    baseline: ple
    headline: farm
    configs:
      ple: {config: configs/ple.yaml}
      farm: {config: configs/farm.yaml}
      farm_din: {config: configs/farm_din.yaml, added_after_results: true}
    metric: {name: gauc, task: ctr, slice: hour-avg, margin: 0.002}
    grid:
      model_seeds: [0, 1, 2, 3, 4]
      world: {preset: evidence, seeds: [0, 1]}
      variants: {base: {}, periodic_off: {periodic_interests: false}}

:meth:`ExperimentSpec.runs` expands the grid into :class:`RunKey` s, each with a content hash
(:meth:`RunKey.hash`) that names its result record, so a resumed grid skips what is done.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from liverank.config import read_yaml_mapping, validate_as
from liverank.data.sim.config import PRESETS, SimConfig

#: the minimum design of a claim (issue #14 / project rules): model seeds x worlds
MIN_MODEL_SEEDS, MIN_WORLDS = 5, 2
STREAM_MODES = ("offline", "exit", "fast_slow", "moment", "forecast")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelEntry(_Strict):
    """One model configuration of the grid."""

    config: Path  # an experiment YAML of `liverank train` (configs/*.yaml)
    #: True for a configuration added after results were seen: reported as a labelled variant
    added_after_results: bool = False
    #: dotted overrides of the config (e.g. {"train.epochs": 5})
    overrides: dict[str, Any] = Field(default_factory=dict)
    #: how the arm trains: ``offline`` (epochs over the training days, early stopping on the
    #: validation day, test on the last day) or a stream mode (one prequential pass over the
    #: rows that mode emits, every impression scored before its labels are trained on), or
    #: ``forecast``: a room-statistics forecaster arm (``config`` is a forecaster YAML,
    #: :mod:`liverank.foresight.statistics`; no ranker)
    mode: str = "offline"

    @model_validator(mode="after")
    def _known_mode(self) -> ModelEntry:
        if self.mode not in STREAM_MODES:
            raise ValueError(f"unknown mode '{self.mode}'; choose from {STREAM_MODES}")
        return self


class MetricSpec(_Strict):
    """The metric a verdict is read from, and the smallest difference that matters."""

    name: str = "gauc"
    task: str = "ctr"
    slice: str = "hour-avg"
    margin: float = Field(0.002, ge=0)
    confidence: float = Field(0.95, gt=0, lt=1)


class StreamSpec(_Strict):
    """Settings of the stream-mode arms (``mode`` other than ``offline``)."""

    #: event-time slice of the interleaved prequential protocol (Moment: 30 s)
    slice_ms: int = Field(30_000, ge=1_000)
    #: hours excluded from the metrics at the start of the stream (the model is cold)
    warmup_hours: int = Field(24, ge=0)


class WorldSpec(_Strict):
    preset: str = "evidence"
    seeds: list[int] = Field(default_factory=lambda: [0, 1], min_length=1)


class GridSpec(_Strict):
    model_seeds: list[int] = Field(default_factory=lambda: list(range(5)), min_length=1)
    world: WorldSpec = Field(default_factory=WorldSpec)
    #: name -> simulator overrides (switches / knobs); {} is the preset as is. The first
    #: variant is the base world the other variants are compared with.
    variants: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"base": {}}, min_length=1)


class ExperimentSpec(_Strict):
    """A validated experiment file (module doc)."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    claim: str = Field(min_length=1)
    paper_figure: str = ""
    #: free text shown at the top of the report (the design, why these arms)
    description: str = ""
    baseline: str
    headline: str
    configs: dict[str, ModelEntry] = Field(min_length=2)
    metric: MetricSpec = Field(default_factory=MetricSpec)
    #: more metrics reported the same way (deltas, intervals), the verdict is ``metric``'s
    secondary: list[MetricSpec] = Field(default_factory=list)
    #: variants where the phenomenon behind the claim is switched off: the headline's effect
    #: should vanish there (the report pairs the effect on the base world with the effect there)
    off_variants: list[str] = Field(default_factory=list)
    grid: GridSpec = Field(default_factory=GridSpec)
    stream: StreamSpec = Field(default_factory=StreamSpec)
    #: allow fewer than MIN_MODEL_SEEDS x MIN_WORLDS (smoke tests); reports say so
    underpowered_ok: bool = False
    #: more pre-registered pairs ``[candidate, reference]`` reported with paired deltas on the
    #: verdict metric in every variant (e.g. Moment's ``[moment, fast_slow]``: the ordering
    #: of two arms neither of which is the baseline)
    comparisons: list[tuple[str, str]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> ExperimentSpec:
        for role in ("baseline", "headline"):
            name = getattr(self, role)
            if name not in self.configs:
                raise ValueError(f"{role} '{name}' is not one of configs {sorted(self.configs)}")
        if self.baseline == self.headline:
            raise ValueError("baseline and headline must differ")
        for role in ("baseline", "headline"):
            if self.configs[getattr(self, role)].added_after_results:
                raise ValueError(
                    f"the {role} '{getattr(self, role)}' is marked added_after_results: a "
                    "configuration chosen after seeing results cannot be the headline or baseline"
                )
        if self.grid.world.preset not in PRESETS:
            raise ValueError(f"world preset '{self.grid.world.preset}' is not in {list(PRESETS)}")
        bad = [p for p in self.comparisons if p[0] not in self.configs or p[1] not in self.configs]
        if bad or any(a == b for a, b in self.comparisons):
            raise ValueError(
                f"comparisons must pair two different configs of {sorted(self.configs)}, got "
                f"{bad or self.comparisons}"
            )
        missing = [v for v in self.off_variants if v not in self.grid.variants]
        if missing:
            raise ValueError(f"off_variants {missing} are not variants {list(self.grid.variants)}")
        if self.off_variants and next(iter(self.grid.variants)) in self.off_variants:
            raise ValueError("the first variant is the base world; it cannot be an off variant")
        unknown = sorted(
            {k for v in self.grid.variants.values() for k in v} - set(SimConfig.model_fields)
        )
        if unknown:
            raise ValueError(f"variants name unknown simulator options {unknown}")
        seeds, worlds = len(self.grid.model_seeds), len(self.grid.world.seeds)
        if not self.underpowered_ok and (seeds < MIN_MODEL_SEEDS or worlds < MIN_WORLDS):
            raise ValueError(
                f"a claim needs >= {MIN_MODEL_SEEDS} model seeds x {MIN_WORLDS} worlds, got "
                f"{seeds} x {worlds} (set underpowered_ok: true for a smoke test)"
            )
        return self

    @classmethod
    def load(cls, path: str | Path) -> ExperimentSpec:
        """Read and validate an experiment YAML; errors name the file and the field."""
        return validate_as(cls, read_yaml_mapping(path, "experiment file"), str(path))

    def runs(self) -> list[RunKey]:
        """Every run of the grid, in the order a partial run is most useful: the baseline and
        the headline first (every variant, world and seed, the two arms of a pair side by
        side), then the other configs; within each, variants in file order, then model seeds,
        then worlds (both worlds of a seed before the next seed). A grid cut short (a deadline, ``--limit``) still has complete pairs of
        the claim's comparison."""
        g = self.grid
        names = list(self.configs)
        main = [self.baseline, self.headline]
        rest = [c for c in names if c not in main]
        order = [
            (cfgs, variant, world, seed, cfg)
            for cfgs in (main, rest)
            for variant in g.variants
            for seed in g.model_seeds
            for world in g.world.seeds
            for cfg in cfgs
        ]
        return [
            RunKey(self.name, cfg, seed, g.world.preset, world, variant, self.configs[cfg].mode)
            for _, variant, world, seed, cfg in order
        ]


@dataclass(frozen=True)
class RunKey:
    """One cell of an experiment grid."""

    experiment: str
    config: str  # a key of ExperimentSpec.configs
    model_seed: int
    preset: str
    world_seed: int
    variant: str  # a key of GridSpec.variants
    stream_mode: str

    def hash(self, spec: ExperimentSpec) -> str:
        """Content hash of everything that determines this run's result (12 hex digits): the
        model entry (with its config file's text), the world (preset, seed, overrides), the
        stream mode and the model seed. Renaming the experiment does not change it."""
        entry = spec.configs[self.config]
        text = entry.config.read_text() if entry.config.is_file() else str(entry.config)
        payload = {
            "config": text,
            "overrides": entry.overrides,
            "model_seed": self.model_seed,
            "preset": self.preset,
            "world_seed": self.world_seed,
            "world": spec.grid.variants[self.variant],
            "stream_mode": self.stream_mode,
        }
        if self.stream_mode != "offline":  # the stream settings only matter to stream arms
            payload["stream"] = spec.stream.model_dump()
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]
