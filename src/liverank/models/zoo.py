"""Named model configurations: the baselines (and, later, the paper models).

============  =======================================  ==================================
name          modules                                  backbone
============  =======================================  ==================================
mlp           sparse_features + seq_pool               shared-bottom MLP [128, 64]
din           sparse_features + din                    shared-bottom MLP [128, 64]
mmoe          sparse_features + din                    MMoE, 4 experts [128, 64]
ple           sparse_features + din                    PLE, 2 CGC levels, 1 specific +
                                                       2 shared experts [64] per level
cgc           sparse_features + din                    one CGC level of ``ple`` (= PLE
                                                       with ``levels: 1``)
moment_cross  sparse_features + din + moment_cross     as ``ple``
              (Moment&Cross section 4; needs samples
              built with ``long_len > 0``)
moment_cross  as ``moment_cross``                      as ``cgc`` (the paper's
_cgc                                                   "CGC(Moment&Cross)")
farm          sparse_features + farm (FARM section 3;  as ``ple``; the six live tasks
              its attention over both sequences
              replaces ``din``)
mmbee         sparse_features + din + mmbee_mfq +      as ``mmoe``
              mmbee_gie (MMBee; ``--segments`` and
              ``--graph-k`` samples); ``mmbee_mfq`` /
              ``mmbee_gie`` keep one of the two
sim           sparse_features + din + moment_cross      as ``mmoe``
              with the ``livelong`` search only (a
              SIM-style GSU + ESU; ``long_len > 0``)
sim_mmbee     ``sim`` + mmbee_mfq + mmbee_gie (MMBee's  as ``mmoe``
              "SIM+Ours"); ``sim_mmbee_mfq`` /
              ``sim_mmbee_gie`` keep one of the two
foresighter   sparse_features + din + foresighter      as ``mmoe``
              (LiveForesighter; ``--room-stats`` /
              ``--room-products`` samples)
============  =======================================  ==================================

Sizes are CPU-friendly defaults (embedding dim 16). ``get_config`` returns a fresh copy, so a
caller may modify it; a YAML file may instead give a full :class:`RankerConfig` mapping.
"""

from __future__ import annotations

from collections.abc import Callable

from liverank.data.shopping import SHOP_TASKS
from liverank.errors import ConfigError
from liverank.features.spec import TASKS
from liverank.models.backbones import (
    IntraInterBackboneConfig,
    MLPBackboneConfig,
    MMoEBackboneConfig,
    PLEBackboneConfig,
)
from liverank.models.modules.eliverec import DYNAMIC_FIELDS, STATIC_FIELDS, TARGET_FIELDS
from liverank.models.ranker import ModuleSpec, RankerConfig, TaskWeightingConfig


def _mlp() -> RankerConfig:
    return RankerConfig(
        name="mlp",
        modules=[ModuleSpec(name="sparse_features"), ModuleSpec(name="seq_pool")],
        backbone=MLPBackboneConfig(hidden=[128, 64]),
    )


def _din() -> RankerConfig:
    return RankerConfig(
        name="din",
        modules=[ModuleSpec(name="sparse_features"), ModuleSpec(name="din")],
        backbone=MLPBackboneConfig(hidden=[128, 64]),
    )


def _mmoe() -> RankerConfig:
    return RankerConfig(
        name="mmoe",
        modules=[ModuleSpec(name="sparse_features"), ModuleSpec(name="din")],
        backbone=MMoEBackboneConfig(n_experts=4, expert_hidden=[128, 64]),
    )


def _ple() -> RankerConfig:
    return RankerConfig(
        name="ple",
        modules=[ModuleSpec(name="sparse_features"), ModuleSpec(name="din")],
        backbone=PLEBackboneConfig(levels=2, n_specific=1, n_shared=2, expert_hidden=[64]),
    )


def _cgc() -> RankerConfig:
    """``ple`` with one extraction level: a single CGC (Tang et al., RecSys 2020).

    PLE stacks CGC levels and feeds all but the last a shared gate; with ``levels: 1`` the one
    level has task gates only, which is CGC. Same experts per level as ``ple``.
    """
    cfg = _ple()
    cfg.name = "cgc"
    cfg.backbone = PLEBackboneConfig(levels=1, n_specific=1, n_shared=2, expert_hidden=[64])
    return cfg


def _mmbee(mfq: bool, gie: bool) -> RankerConfig:
    """MMBee (``papers/mmbee.txt``) on ``mmoe``: ``mmbee_mfq`` (the room's last segments,
    needs ``--segments`` samples) and / or ``mmbee_gie`` (metapath neighbours with GraphCL
    pre-training, needs ``--graph-k`` samples) added to ``mmoe``'s modules."""
    cfg = _mmoe()
    cfg.name = "mmbee" if mfq and gie else ("mmbee_mfq" if mfq else "mmbee_gie")
    if mfq:
        cfg.modules.append(ModuleSpec(name="mmbee_mfq", params={"dim": 64, "queries": 4}))
    if gie:
        cfg.modules.append(ModuleSpec(name="mmbee_gie", params={"dim": 32}))
    return cfg


def _foresighter() -> RankerConfig:
    """LiveForesighter (``papers/liveforesighter.txt``) on ``mmoe``: the ``foresighter``
    module's stop-gradient room features (needs ``--room-stats T --room-products L`` samples)."""
    cfg = _mmoe()
    cfg.name = "foresighter"
    cfg.modules.append(ModuleSpec(name="foresighter", params={}))
    return cfg


def _sim() -> RankerConfig:
    """A SIM-style baseline (Pi et al., CIKM 2020; MMBee's foundational model): ``mmoe`` plus
    one search over the user's long-term live history - a soft-search GSU keeps the
    ``gsu_len`` rooms closest to the candidate, an ESU target attention pools them. Built from
    Cross's ``livelong`` sequence alone with no contrastive term (needs ``long_len > 0``
    samples)."""
    cfg = _mmoe()
    cfg.name = "sim"
    cfg.modules.append(
        ModuleSpec(
            name="moment_cross",
            params={
                "gsu_len": 50,
                "heads": 2,
                "sequences": ["livelong"],
                "contrastive_weight": 0.0,
            },
        )
    )
    return cfg


def _sim_mmbee(mfq: bool, gie: bool) -> RankerConfig:
    """MMBee as the paper deploys it (Table 1 "SIM+Ours"): ``sim`` with ``mmbee_mfq`` and / or
    ``mmbee_gie``."""
    cfg = _sim()
    extra = _mmbee(mfq, gie)
    cfg.name = "sim_" + extra.name
    cfg.modules.extend(m for m in extra.modules if m.name.startswith("mmbee_"))
    return cfg


def _moment_cross() -> RankerConfig:
    """``ple`` plus the Cross module (five GSU sequences, ESU, contrastive alignment)."""
    cfg = _ple()
    cfg.name = "moment_cross"
    cfg.modules.append(ModuleSpec(name="moment_cross", params={"gsu_len": 50, "heads": 2}))
    # eq. 4 exponents: hand-set here (the paper's are unpublished and nothing was tuned on them)
    cfg.score_exponents = {"ctr": 1.0, "lvtr": 1.0, "ltr": 0.5, "gtr": 0.5}
    return cfg


def _moment_cross_cgc() -> RankerConfig:
    """``moment_cross`` on ``cgc``'s backbone (Moment&Cross 6.1: "CGC(Moment&Cross)")."""
    cfg = _moment_cross()
    cfg.name = "moment_cross_cgc"
    cfg.backbone = _cgc().backbone
    return cfg


def _farm() -> RankerConfig:
    """FARM on ``ple``'s backbone: ``sparse_features`` + ``farm`` on the six live tasks.

    FARM's own target attentions over both sequences (Eq. 11) take the place of ``din``, so
    ``farm`` vs ``ple`` compares the two ways of reading the sequences on one backbone.
    """
    return RankerConfig(
        name="farm",
        modules=[ModuleSpec(name="sparse_features"), ModuleSpec(name="farm")],
        backbone=_ple().backbone,
        tasks=list(TASKS),  # ctr, evtr, lvtr, ltr, cmtr, gtr (FARM section 2.2)
    )


def _eliverec() -> RankerConfig:
    """eLiveRec (``papers/eliverec.txt``): the ``eliverec`` module on the ``intra_inter``
    backbone, channel click (``ctr``) as the primary task, stay time, goods-bag and product
    clicks as auxiliary tasks weighted adaptively (eqs. 14-15). Needs ``--shopping`` samples."""
    return RankerConfig(
        name="eliverec",
        modules=[ModuleSpec(name="eliverec")],
        backbone=IntraInterBackboneConfig(primary=["ctr"]),
        tasks=["ctr", *SHOP_TASKS],
        regression_targets=["stay_ms"],
        task_weighting=TaskWeightingConfig(type="adaptive", primary="ctr"),
    )


#: the sparse fields eLiveRec reads (static context, target channel, real-time context): the
#: baselines of its experiment read exactly these, so only the way of reading them differs
ELIVEREC_FIELDS = [*STATIC_FIELDS, *TARGET_FIELDS, *DYNAMIC_FIELDS]


def _shop_baseline(name: str, sequences: ModuleSpec) -> RankerConfig:
    """A single-task CTR baseline of eLiveRec's Table II on ``--shopping`` samples."""
    return RankerConfig(
        name=name,
        modules=[ModuleSpec(name="sparse_features", params={"fields": ELIVEREC_FIELDS}), sequences],
        backbone=MLPBackboneConfig(hidden=[128, 64, 32]),
        tasks=["ctr"],
    )


def _din_live() -> RankerConfig:
    """Single CTR model: DIN over the watched-room (live) sequence only."""
    return _shop_baseline("din_live", ModuleSpec(name="din", params={"domains": ["live"]}))


def _bst_dual() -> RankerConfig:
    """Dual CTR model: a Transformer + target attention over each of the watched-room and
    product sequences (``modules/bst.py``; Table II's BST / ETA dual)."""
    spec = ModuleSpec(name="bst", params={"domains": ["live", "product"]})
    return _shop_baseline("bst_dual", spec)


def _bst_dual_static() -> RankerConfig:
    """``bst_dual`` without the channel's real-time context ``e_d`` (``DYNAMIC_FIELDS``):
    the fields eLiveRec's primary task reads (eq. 11 reads ``e_c``, ``e_vt`` and the
    intentions; ``e_d`` reaches only the auxiliary tasks, eq. 13). A diagnostic added
    2026-12-08 after eLiveRec trailed ``bst_dual`` (``experiments/eliverec_parity.yaml``)."""
    cfg = _bst_dual()
    cfg.name = "bst_dual_static"
    cfg.modules[0].params = {"fields": [*STATIC_FIELDS, *TARGET_FIELDS]}
    return cfg


def _bst_dual_mtl(kind: str) -> RankerConfig:
    """``bst_dual`` with eLiveRec's auxiliary tasks on an MMoE, fixed (``vanilla``) or
    adaptively weighted (``adaptive``): Table IV's "adaptive MTL on other backbones"."""
    cfg = _bst_dual()
    cfg.name = f"bst_dual_{kind}"
    cfg.backbone = MMoEBackboneConfig(n_experts=4, expert_hidden=[64, 32])
    cfg.tasks, cfg.regression_targets = ["ctr", *SHOP_TASKS], ["stay_ms"]
    if kind == "adaptive":
        cfg.task_weighting = TaskWeightingConfig(type="adaptive", shared_module="bst")
    else:
        weights = {"stay_ms": 0.3, "btr": 0.3, "pctr": 0.1}
        cfg.task_weighting = TaskWeightingConfig(type="fixed", weights=weights)
    return cfg


def _eliverec_single() -> RankerConfig:
    """eLiveRec without multi-task learning (Table II's 'wo.M'): the channel click alone."""
    cfg = _eliverec()
    cfg.name = "eliverec_single"
    cfg.tasks, cfg.regression_targets, cfg.task_weighting = ["ctr"], [], None
    return cfg


def _eliverec_vanilla() -> RankerConfig:
    """eLiveRec with the paper's vanilla MTL: fixed weights 0.3 (stay), 0.3 (goods bag), 0.1
    (product click); the paper lists the three numbers and the three tasks, we read them in the
    same order."""
    cfg = _eliverec()
    cfg.name = "eliverec_vanilla"
    cfg.task_weighting = TaskWeightingConfig(
        type="fixed", primary="ctr", weights={"stay_ms": 0.3, "btr": 0.3, "pctr": 0.1}
    )
    return cfg


def _liverank() -> RankerConfig:
    """The flagship: every paper module the samples can feed, on ``ple``'s backbone.

    ``sparse_features`` and ``din`` always; then, each ``optional`` (switched off, and logged,
    when the samples cannot feed it: ``FeatureModule.unfed``): FARM's frequency filters and
    cross-domain alignment (``farm``: both domains), Cross's searches over long histories
    (``moment_cross``: ``--long-len``), eLiveRec's disentangled encoder (``eliverec``:
    ``--shopping``), MMBee's segment fusion and graph neighbours (``mmbee_mfq`` /
    ``mmbee_gie``: ``--segments`` / ``--graph-k``), LiveForesighter's room sequences
    (``foresighter``: ``--room-stats`` / ``--room-products``). Moment's mechanism is the
    room-id embedding (fast room updates when trained on the first-only stream,
    ``train-stream --mode moment``) and Moment&Cross's eq. 4 ranks the slate. DIN and FARM
    both read the short sequences: the benchmark says whether they add to each other."""
    mmbee = _mmbee(True, True).modules
    cfg = RankerConfig(
        name="liverank",
        modules=[
            ModuleSpec(name="sparse_features"),
            ModuleSpec(name="din"),
            ModuleSpec(name="farm", optional=True),
            ModuleSpec(name="moment_cross", params={"gsu_len": 50, "heads": 2}, optional=True),
            ModuleSpec(name="eliverec", optional=True),
            *(m.model_copy(update={"optional": True}) for m in mmbee[2:]),
            ModuleSpec(name="foresighter", optional=True),
        ],
        backbone=_ple().backbone,
        room_id_embedding=True,
    )
    cfg.score_exponents = dict(_moment_cross().score_exponents)
    return cfg


_CONFIGS: dict[str, Callable[[], RankerConfig]] = {
    "mlp": _mlp,
    "din": _din,
    "mmoe": _mmoe,
    "ple": _ple,
    "moment_cross": _moment_cross,
    "farm": _farm,
    "cgc": _cgc,
    "moment_cross_cgc": _moment_cross_cgc,
    "foresighter": _foresighter,
    "mmbee": lambda: _mmbee(True, True),
    "mmbee_mfq": lambda: _mmbee(True, False),
    "mmbee_gie": lambda: _mmbee(False, True),
    "sim": _sim,
    "sim_mmbee": lambda: _sim_mmbee(True, True),
    "sim_mmbee_mfq": lambda: _sim_mmbee(True, False),
    "sim_mmbee_gie": lambda: _sim_mmbee(False, True),
    "eliverec": _eliverec,
    "eliverec_vanilla": _eliverec_vanilla,
    "eliverec_single": _eliverec_single,
    "din_live": _din_live,
    "bst_dual": _bst_dual,
    "bst_dual_static": _bst_dual_static,
    "bst_dual_vanilla": lambda: _bst_dual_mtl("vanilla"),
    "bst_dual_adaptive": lambda: _bst_dual_mtl("adaptive"),
    "liverank": _liverank,
}


def list_configs() -> list[str]:
    """Names accepted by :func:`get_config`."""
    return list(_CONFIGS)


def get_config(name: str) -> RankerConfig:
    """A fresh :class:`RankerConfig` for a named model; ConfigError lists the known names."""
    try:
        factory = _CONFIGS[name]
    except KeyError:
        raise ConfigError(f"unknown model '{name}'; known models: {', '.join(_CONFIGS)}") from None
    return factory()
