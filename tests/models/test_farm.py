"""The FARM module (``modules/farm.py``): conformance, Eq. 14, ablations, diagnostics, gradients."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conformance import check_ranker

from liverank.config import load_config
from liverank.errors import ConfigError
from liverank.models.layers.contrastive import info_nce
from liverank.models.layers.embedding import EmbeddingCollection
from liverank.models.modules.farm import Farm, MultiHeadAttention
from liverank.models.ranker import Ranker
from liverank.models.registry import build_module
from liverank.models.synthetic import synthetic_batches, synthetic_feature_map
from liverank.models.zoo import get_config
from liverank.train.experiment import ranker_config

ROOT = Path(__file__).resolve().parents[2]
#: ablation config suffix -> the switch it turns off
ABLATIONS = {"vfa": "use_video_fa", "lfa": "use_live_fa", "cpa": "use_align", "cpf": "use_fuse"}


@pytest.fixture(scope="module")
def fm():
    return synthetic_feature_map(n_categories=6)


@pytest.fixture(scope="module")
def batch(fm):
    return synthetic_batches(fm, 1, 64, seed=3)[0]


def _module(
    fm, sparse: bool = True, fused: bool = True, **params
) -> tuple[Farm, EmbeddingCollection]:
    torch.manual_seed(0)
    emb = EmbeddingCollection(fm, 16, sparse=sparse, fused=fused)
    return Farm(fm, emb, **params), emb


# ---------------------------------------------------------------------- Eq. 14
def test_dot_product_info_nce_matches_a_hand_computed_3x3_case() -> None:
    """Eq. 14: live anchors, video positives, sim = dot product, tau = 0.07."""
    live = torch.tensor([[0.1, 0.0], [0.0, 0.2], [0.1, 0.1]])
    video = torch.tensor([[0.2, 0.0], [0.1, 0.1], [0.0, 0.3]])
    tau = 0.07
    # s_ij = live_i . video_j:  row 0: .02 .01 .00 | row 1: .00 .02 .06 | row 2: .02 .02 .03
    e = math.exp
    l0 = -0.02 / tau + math.log(e(0.02 / tau) + e(0.01 / tau) + e(0.0))
    l1 = -0.02 / tau + math.log(e(0.0) + e(0.02 / tau) + e(0.06 / tau))
    l2 = -0.03 / tau + math.log(e(0.02 / tau) + e(0.02 / tau) + e(0.03 / tau))
    got = info_nce(live, video, tau, similarity="dot")
    assert float(got) == pytest.approx((l0 + l1 + l2) / 3, rel=1e-6)
    # One direction only: swapping the roles gives another value.
    assert float(info_nce(video, live, tau, similarity="dot")) != pytest.approx(float(got))
    # Rows 0 and 2 are one user: not each other's negative.
    users = torch.tensor([5, 6, 5])
    g0 = -0.02 / tau + math.log(e(0.02 / tau) + e(0.01 / tau))
    g2 = -0.03 / tau + math.log(e(0.02 / tau) + e(0.03 / tau))
    got = info_nce(live, video, tau, groups=users, similarity="dot")
    assert float(got) == pytest.approx((g0 + l1 + g2) / 3, rel=1e-6)
    with pytest.raises(ValueError, match="similarity"):
        info_nce(live, video, tau, similarity="l2")  # type: ignore[arg-type]


def test_module_loss_is_lambda_times_eq_14_with_live_as_anchor(fm, batch) -> None:
    module, emb = _module(fm, contrastive_weight=0.3)
    module.train()
    torch.manual_seed(1)
    loss = module(batch, emb).aux_losses["cl"]
    seqs = module._encode(batch, emb, need_self=True)
    h = {d: module._preference(d, seqs[d]["v_hat"], seqs[d]["mask"]).detach() for d in seqs}
    rows = [
        i
        for i in range(64)
        if bool(seqs["video"]["mask"][i].any()) and bool(seqs["live"]["mask"][i].any())
    ]
    users = batch["user_id"].tolist()
    total = 0.0
    for i in rows:
        sims = {
            j: float(h["live"][i] @ h["video"][j]) / 0.07
            for j in rows
            if j == i or users[j] != users[i]
        }
        total += -sims[i] + math.log(sum(math.exp(s) for s in sims.values()))
    assert float(loss.detach()) == pytest.approx(0.3 * total / len(rows), rel=1e-4)


# ---------------------------------------------------------------------- module behaviour
def test_shapes_aux_only_in_training_and_padding_is_ignored(fm, batch) -> None:
    module, emb = _module(fm)
    module.train()
    out = module(batch, emb)
    assert module.out_dim == 3 * 16 and out.representation.shape == (64, 48)
    assert set(out.aux_losses) == {"cl"} and float(out.aux_losses["cl"].detach()) > 0
    assert {"beta", "delta", "cos_video_live"} <= set(out.diagnostics)
    module.eval()
    clean = module(batch, emb)
    assert clean.aux_losses == {}
    # Garbage behind each row's length changes nothing (masks come from <domain>_seq_len).
    dirty = dict(batch)
    for d in ("live", "video"):
        length = batch[f"{d}_seq_len"]
        pad = torch.arange(batch[f"{d}_seq_author"].shape[1])[None, :] >= length[:, None]
        assert pad.any()
        for col in fm.seq_fields[d]:
            dirty[col] = torch.where(pad, 1, batch[col])
    torch.testing.assert_close(clean.representation, module(dirty, emb).representation)


def _reference_attention(
    mha: MultiHeadAttention, query, keys, query_mask, key_mask
) -> torch.Tensor:
    """The attention written out: two matmuls and a softmax, -inf at masked keys."""
    b, lq, d = query.shape
    h, dh = mha.heads, mha.head_dim
    q = mha.q_proj(query * dh**-0.5).view(b, lq, h, dh).transpose(1, 2)
    k, v = mha.kv_proj(keys).view(b, keys.shape[1], 2, h, dh).permute(2, 0, 3, 1, 4)
    scores = (q @ k.transpose(-1, -2)).masked_fill(~key_mask[:, None, None, :], float("-inf"))
    mixed = torch.softmax(scores, dim=-1) @ v  # NaN on rows without keys
    out = mha.out_proj(mixed.transpose(1, 2).reshape(b, lq, d))
    keep = query_mask & key_mask.any(1, keepdim=True)
    return torch.where(keep.unsqueeze(-1), out, torch.zeros_like(out))


def test_multi_head_attention_matches_the_written_out_formula() -> None:
    torch.manual_seed(1)
    mha = MultiHeadAttention(16, 2)
    query, keys = torch.randn(5, 4, 16), torch.randn(5, 7, 16, requires_grad=True)
    key_len, query_len = torch.tensor([7, 3, 1, 0, 5]), torch.tensor([4, 2, 1, 3, 0])
    key_mask = torch.arange(7)[None] < key_len[:, None]
    query_mask = torch.arange(4)[None] < query_len[:, None]
    got = mha(query, keys, query_mask, key_mask)
    torch.testing.assert_close(got, _reference_attention(mha, query, keys, query_mask, key_mask))
    assert float(got[3].detach().abs().max()) == 0.0 and float(got[4].detach().abs().max()) == 0.0
    got.sum().backward()  # a row without keys must not poison the gradient
    assert keys.grad is not None and torch.isfinite(keys.grad).all()
    assert float(keys.grad[:, 7:].abs().sum()) == 0.0


def test_rows_do_not_depend_on_the_longest_sequence_in_the_batch(fm, batch) -> None:
    """The L x L attentions run over the batch's longest real sequence only (``_encode``):
    adding a row with full-length sequences must not change the other rows' outputs."""
    module, emb = _module(fm)
    module.eval()
    width = batch["live_seq_author"].shape[1]
    short = {k: v[batch["live_seq_len"] < width // 2] for k, v in batch.items()}
    assert len(short["live_seq_len"]) > 10  # the test needs rows that the extra row outspans
    extra = {k: v[:1].clone() for k, v in batch.items()}
    extra["live_seq_len"][:] = width
    extra["video_seq_len"][:] = width
    both = {k: torch.cat([short[k], extra[k]]) for k in batch}
    alone = module(short, emb).representation
    torch.testing.assert_close(module(both, emb).representation[:-1], alone)


def test_rows_without_history_give_zeros(fm, batch) -> None:
    module, emb = _module(fm)
    empty = dict(batch)
    for d in ("live", "video"):
        empty[f"{d}_seq_len"] = torch.zeros_like(batch[f"{d}_seq_len"])
    out = module(empty, emb)
    assert float(out.representation.detach().abs().max()) == 0.0
    assert float(out.aux_losses["cl"].detach()) == 0.0  # no valid row, no negative
    # Only the video sequence empty: the fuse output (live attending to video) is zero too.
    no_video = dict(batch, video_seq_len=torch.zeros_like(batch["video_seq_len"]))
    rep = module(no_video, emb).representation.detach()
    assert torch.isfinite(rep).all() and float(rep[:, 32:].abs().max()) == 0.0


@pytest.mark.parametrize("switch", list(ABLATIONS.values()))
def test_each_ablation_builds_runs_and_drops_its_part(fm, batch, switch: str) -> None:
    full, _ = _module(fm)
    part, emb = _module(fm, **{switch: False})
    part.train()
    out = part(batch, emb)
    width = 2 * 16 if switch == "use_fuse" else 3 * 16
    assert part.out_dim == width and out.representation.shape == (64, width)
    assert torch.isfinite(out.representation).all()
    assert set(out.aux_losses) == (set() if switch == "use_align" else {"cl"})
    n_full = sum(p.numel() for p in full.parameters())
    n_part = sum(p.numel() for p in part.parameters())
    dropped = {
        "use_video_fa": full.filters["video"],
        "use_live_fa": full.filters["live"],
        "use_fuse": torch.nn.ModuleList([full.cross_attn, full.cross_target]),
    }.get(switch)
    assert n_full - n_part == (sum(p.numel() for p in dropped.parameters()) if dropped else 0)
    if switch == "use_align":
        assert "user_id" not in part.required_fields


@pytest.mark.parametrize("suffix", list(ABLATIONS))
def test_ablation_configs_turn_off_one_switch(fm, batch, suffix: str) -> None:
    cfg = load_config(ROOT / "configs" / "ablations" / f"farm_no_{suffix}.yaml")
    assert cfg.name == f"farm_no_{suffix}"
    model = Ranker(fm, ranker_config(cfg))
    farm = model.feature_modules["farm"]
    off = [s for s in ABLATIONS.values() if not getattr(farm.cfg, s)]
    assert off == [ABLATIONS[suffix]]
    # Same backbone and tasks as the full model.
    full = ranker_config(load_config(ROOT / "configs" / "farm.yaml"))
    assert model.config.backbone == full.backbone and model.tasks == full.tasks
    assert set(model(batch).logits) == {"ctr", "evtr", "lvtr", "ltr", "cmtr", "gtr"}


def test_farm_din_config_adds_farm_to_the_ple_baseline(fm, batch) -> None:
    """configs/farm_din.yaml = ple's modules (sparse_features + din) plus farm, same backbone."""
    cfg = ranker_config(load_config(ROOT / "configs" / "farm_din.yaml"))
    full = ranker_config(load_config(ROOT / "configs" / "farm.yaml"))
    model = Ranker(fm, cfg)
    assert list(model.feature_modules) == ["sparse_features", "din", "farm"]
    assert model.config.backbone == full.backbone and model.tasks == full.tasks
    assert set(model(batch).logits) == set(full.tasks)


def test_gradient_reaches_both_sequences(fm, batch) -> None:
    module, emb = _module(fm, sparse=False, fused=False)
    module.train()
    out = module(batch, emb)
    only_video, only_live = ("video_tag", "play_bucket"), ("live_action",)

    def grads() -> dict[str, float]:
        return {
            t: float(emb.tables[t].weight.grad.abs().sum())
            if emb.tables[t].weight.grad is not None
            else 0.0
            for t in only_video + only_live
        }

    out.representation.pow(2).sum().backward(retain_graph=True)
    assert all(g > 0 for g in grads().values()), grads()
    emb.zero_grad(set_to_none=True)
    out.aux_losses["cl"].backward()  # the alignment loss alone moves both domains
    assert all(g > 0 for g in grads().values()), grads()


def test_diagnostics_per_row(fm, batch) -> None:
    module, emb = _module(fm)
    module.train()
    diag = module.diagnostics(batch, emb)
    assert module.training, "diagnostics must restore the training mode"
    gates = ("alpha", "beta", "gamma", "delta")
    by_dim = {f"{g}_by_dim" for g in gates}
    assert set(diag) == {*gates, *by_dim, "cos_video_live", "video_nonempty", "live_nonempty"}
    for name, value in diag.items():
        shape = (64, module.dim) if name in by_dim else (64,)
        assert value.shape == shape and not value.requires_grad, name
    for gate in gates:
        assert bool(((diag[gate] > 0) & (diag[gate] < 1)).all()), gate
        torch.testing.assert_close(diag[f"{gate}_by_dim"].mean(-1), diag[gate])
    cos = diag["cos_video_live"]
    assert bool(((cos >= -1) & (cos <= 1)).all())
    both = diag["video_nonempty"] & diag["live_nonempty"]
    assert both.any() and (~both).any()
    assert float(cos[~both].abs().max()) == 0.0 and float(cos[both].abs().min()) > 0
    # w/o C-PA keeps the cosine (the paper's Figure 3); w/o V-FA has no video gates.
    no_align, emb2 = _module(fm, use_align=False, use_video_fa=False)
    diag = no_align.diagnostics(batch, emb2)
    assert "cos_video_live" in diag and "beta" not in diag and "delta" in diag


def test_config_errors_name_the_problem(fm) -> None:
    emb = EmbeddingCollection(fm, 16)
    for params, match in [
        ({"heads": 3}, "heads"),
        ({"cutoff": 0}, "cutoff"),
        ({"temperature": 0.0}, "temperature"),
        ({"contrastive_weight": -1.0}, "contrastive_weight"),
        ({"similarity": "l2"}, "similarity"),
        ({"query_fields": ["nope"]}, "nope"),
        ({"combine": "sum", "dim": 8}, "combine='sum'"),
    ]:
        with pytest.raises(ConfigError, match=match):
            Farm(fm, emb, **params)
    with pytest.raises(ConfigError, match="no parameter.*cut_off"):
        build_module("farm", fm, emb, {"cut_off": 3})
    assert Farm(fm, emb, dim=32).out_dim == 96  # concat + projection: any width


# ---------------------------------------------------------------------- as part of a Ranker
def test_farm_conforms(fm, tmp_path: Path) -> None:
    cfg = get_config("farm")
    assert [m.name for m in cfg.modules] == ["sparse_features", "farm"]
    assert cfg.backbone == get_config("ple").backbone
    assert cfg.tasks == ["ctr", "evtr", "lvtr", "ltr", "cmtr", "gtr"]
    check_ranker(cfg, fm, tmp_path=tmp_path, train_samples=16_384)


def test_farm_experiment_config_mirrors_ple() -> None:
    farm, ple = (load_config(ROOT / "configs" / f"{n}.yaml") for n in ("farm", "ple"))
    assert farm.model == "farm" and farm.train == ple.train and farm.data == ple.data
