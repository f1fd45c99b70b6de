"""The Cross module of Moment&Cross (``modules/moment_cross.py``), its search layers and eq. 4."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conformance import check_ranker, ctr_auc, train_pass
from hypothesis import given, settings
from hypothesis import strategies as st

from liverank.errors import ConfigError
from liverank.models.fusion import ranking_score
from liverank.models.layers.contrastive import info_nce
from liverank.models.layers.embedding import EmbeddingCollection
from liverank.models.layers.history import EagerWindow
from liverank.models.layers.search import (
    select_most_recent_by_age,
    select_recent,
    select_recent_matches,
    select_top_scores,
)
from liverank.models.modules.moment_cross import SEQUENCES, MomentCross
from liverank.models.ranker import Ranker
from liverank.models.synthetic import synthetic_batches, synthetic_feature_map
from liverank.models.zoo import get_config

K = 32


@pytest.fixture(scope="module")
def fm():
    return synthetic_feature_map(n_categories=6, long_len=K)


@pytest.fixture(scope="module")
def batch(fm):
    return synthetic_batches(fm, 1, 64, seed=3)[0]


def _module(fm, sequences=None, sparse=True, **params) -> tuple[MomentCross, EmbeddingCollection]:
    torch.manual_seed(0)
    emb = EmbeddingCollection(fm, 16, sparse=sparse)
    if sequences is not None:
        params["sequences"] = sequences
    return MomentCross(fm, emb, gsu_len=8, **params), emb


# ---------------------------------------------------------------------- GSU selection rules
def _rows(draw_len: int, data: st.DataObject) -> tuple[np.ndarray, np.ndarray]:
    scores = np.array(data.draw(st.lists(st.integers(-5, 5), min_size=draw_len, max_size=draw_len)))
    valid = np.array(data.draw(st.lists(st.booleans(), min_size=draw_len, max_size=draw_len)))
    return scores, valid


@settings(max_examples=80, deadline=None)
@given(length=st.integers(1, 12), k=st.integers(1, 15), data=st.data())
def test_hard_search_in_one_shared_window_equals_the_top_k_rule(
    length: int, k: int, data: st.DataObject
) -> None:
    """select_recent_matches (one window, many queries: the serving path) keeps the same
    positions in the same order as select_recent on the broadcast condition, whatever the
    padding layout, duplicate keys and queries that match nothing or only padding."""
    keys = torch.tensor(data.draw(st.lists(st.integers(0, 3), min_size=length, max_size=length)))
    valid = torch.tensor(data.draw(st.lists(st.booleans(), min_size=length, max_size=length)))
    query = torch.tensor(data.draw(st.lists(st.integers(-1, 4), min_size=1, max_size=6)))
    index, mask = select_recent_matches(keys, valid, query, k)
    want_index, want_mask = select_recent((keys[None, :] == query[:, None]) & valid, k)
    assert index.shape == want_index.shape and torch.equal(mask, want_mask)
    assert torch.equal(index[mask], want_index[want_mask])


@settings(max_examples=60, deadline=None)
@given(length=st.integers(1, 12), k=st.integers(1, 15), data=st.data())
def test_selection_rules_match_a_reference(length: int, k: int, data: st.DataObject) -> None:
    rows = [_rows(length, data) for _ in range(3)]
    scores = torch.tensor(np.stack([r[0] for r in rows]), dtype=torch.float32)  # [3, L]
    valid = torch.tensor(np.stack([r[1] for r in rows]))  # [3, L]
    kk = min(k, length)
    # Soft search: the selected valid slots are the top-k scores among valid positions.
    index, mask = select_top_scores(scores, valid, k)
    # Hard search: first k valid positions (history is most recent first).
    r_index, r_mask = select_recent(valid, k)
    # Recency across positions: smaller age first; here age = the score.
    a_index, a_mask = select_most_recent_by_age(scores, valid, k)
    for b, (s, v) in enumerate(rows):
        real = np.flatnonzero(v)
        assert index.shape == (3, kk) and int(mask[b].sum()) == min(kk, len(real))
        picked = index[b][mask[b]].numpy()
        assert set(picked) <= set(real), "a padding position was selected"
        assert sorted(s[picked], reverse=True) == sorted(s[real], reverse=True)[: len(picked)]
        assert list(r_index[b][r_mask[b]].numpy()) == list(real[:kk])
        aged = a_index[b][a_mask[b]].numpy()
        assert set(aged) <= set(real) and list(s[aged]) == sorted(s[real])[: len(aged)]


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_ties_are_broken_by_recency_whatever_the_width(data: st.DataObject) -> None:
    """Equal scores / ages: the most recent (lowest position, live before video when merged)
    first, so a window trimmed of its padding columns selects exactly what the full one does."""
    b, width, pad, k = 4, data.draw(st.integers(1, 10)), data.draw(st.integers(1, 6)), 4
    levels = st.lists(st.integers(-2, 2), min_size=b * width, max_size=b * width)
    scores = torch.tensor(data.draw(levels), dtype=torch.float32).view(b, width)  # many ties
    valid = torch.tensor(data.draw(st.lists(st.booleans(), min_size=b * width, max_size=b * width)))
    valid = valid.view(b, width)
    padded = torch.cat([scores, torch.full((b, pad), 7.0)], 1)  # padding holds anything
    padded_valid = torch.cat([valid, torch.zeros(b, pad, dtype=torch.bool)], 1)
    index, mask = select_top_scores(scores, valid, k)
    p_index, p_mask = select_top_scores(padded, padded_valid, k)
    kk = mask.shape[1]
    assert torch.equal(p_mask[:, :kk], mask) and not p_mask[:, kk:].any()
    assert torch.equal(p_index[:, :kk][mask], index[mask])
    for row in range(b):  # highest score first, then lowest position
        picked = index[row][mask[row]].tolist()
        assert picked == sorted(picked, key=lambda i: (-float(scores[row, i]), i))
    # merged windows: positions of the second one ranked after every position of the first
    rank = torch.cat([torch.arange(width), (1 << 30) + torch.arange(width)])
    age = torch.cat([scores, scores], 1)
    cond = torch.cat([valid, valid], 1)
    a_index, a_mask = select_most_recent_by_age(age, cond, k, rank)
    for row in range(b):
        picked = a_index[row][a_mask[row]].tolist()
        assert picked == sorted(picked, key=lambda i: (float(age[row, i]), int(rank[i])))


# ---------------------------------------------------------------------- module behaviour
def test_shapes_losses_and_diagnostics(fm, batch) -> None:
    module, emb = _module(fm)
    out = module(batch, emb)
    assert module.out_dim == 5 * 16
    assert out.representation.shape == (64, 5 * 16)
    assert torch.isfinite(out.representation).all()
    assert set(out.aux_losses) == {"cl_short", "cl_long", "cl_aidhard", "cl_livelong"}
    for value in out.aux_losses.values():
        assert value.dim() == 0 and torch.isfinite(value) and float(value.detach()) > 0
    assert {f"{s}_fill" for s in SEQUENCES} <= set(out.diagnostics)


def test_padding_is_never_selected_or_attended(fm, batch) -> None:
    """Garbage behind each row's length (the candidate's author, long views, tiny ages) changes
    nothing: masks come from ``long_<d>_len``, and hard/soft searches would love that garbage."""
    module, emb = _module(fm)
    module.eval()
    dirty = dict(batch)
    for d in ("live", "video"):
        pad = torch.arange(K).unsqueeze(0) >= batch[f"long_{d}_len"].unsqueeze(1)  # [B, K]
        assert pad.any()
        cand = batch["author_id"].unsqueeze(1).expand(-1, K)
        dirty[f"long_{d}_author"] = torch.where(pad, cand, batch[f"long_{d}_author"])
        dirty[f"long_{d}_lv"] = torch.where(pad, 1, batch[f"long_{d}_lv"])
        dirty[f"long_{d}_dt"] = torch.where(pad, 0.001, batch[f"long_{d}_dt"])
        dirty[f"long_{d}_age"] = torch.where(pad, 1, batch[f"long_{d}_age"])
    clean_out, dirty_out = module(batch, emb), module(dirty, emb)
    torch.testing.assert_close(clean_out.representation, dirty_out.representation)
    for name, value in clean_out.aux_losses.items():
        torch.testing.assert_close(value, dirty_out.aux_losses[name])


def test_rows_without_history_give_zero_sequence_outputs(fm, batch) -> None:
    module, emb = _module(fm, sequences=["aidhard", "mixed"])
    empty = dict(batch)
    for d in ("live", "video"):
        empty[f"long_{d}_len"] = torch.zeros_like(batch[f"long_{d}_len"])
    rep = module(empty, emb).representation
    assert float(rep.detach().abs().max()) == 0.0
    # A user whose video history never shows the candidate's author gets a zero aidhard output.
    rep = module(batch, emb).representation.detach()[:, :16]
    seen = (batch["long_video_author"] == batch["author_id"].unsqueeze(1)) & (
        torch.arange(K) < batch["long_video_len"].unsqueeze(1)
    )
    assert (~seen.any(1)).any() and seen.any(1).any()
    assert float(rep[~seen.any(1)].abs().max()) == 0.0
    assert bool((rep[seen.any(1)].abs().sum(1) > 0).all())


@pytest.mark.parametrize("dropped", SEQUENCES)
def test_ablation_drops_parameters_and_losses(fm, batch, dropped: str) -> None:
    full, emb = _module(fm)
    kept = [s for s in SEQUENCES if s != dropped]
    part, emb2 = _module(fm, sequences=kept)
    n_full = sum(p.numel() for p in full.parameters())
    n_part = sum(p.numel() for p in part.parameters())
    esu = sum(p.numel() for p in full.esu[dropped].parameters())
    extra = full.domain_vec.numel() if dropped == "mixed" else 0
    assert n_full - n_part == esu + extra
    assert dropped not in part.esu and part.out_dim == 4 * 16
    out = part(batch, emb2)
    assert out.representation.shape == (64, 4 * 16)
    expected = set() if dropped == "mixed" else {f"cl_{s}" for s in kept if s != "mixed"}
    assert set(out.aux_losses) == expected
    if dropped == "mixed":
        assert not any(f.endswith(("_lv", "_dt")) for f in part.required_fields)
    if dropped == "short":
        assert not any(f.startswith("video_seq_") for f in part.required_fields)


def test_gsu_scoring_gets_no_gradient(fm, batch) -> None:
    """Only the items a soft search *selected* receive gradient; the scores are detached."""
    module, emb = _module(fm, sequences=["long"], sparse=False)
    dom = module.long["video"]
    with torch.no_grad():
        query = emb.lookup_sum(
            module.gsu_query_tables, torch.stack([batch["author_id"], batch["room_category"]], -1)
        )
    window = EagerWindow(batch, "video", dom.suffixes)
    scores = dom.scores(window, emb, query)
    assert not scores.requires_grad
    index, mask = select_top_scores(scores, window.valid, 8)
    module(batch, emb).representation.pow(2).sum().backward()
    grad = emb.tables[emb._group["author"]].weight.grad  # fused rows
    rows = lambda ids: set(emb.rows_for("author", ids).reshape(-1).tolist()) - {0}  # noqa: E731
    selected = rows(torch.gather(batch["long_video_author"], 1, index)[mask])
    valid_ids = batch["long_video_author"][window.valid]
    unselected = rows(valid_ids) - selected - rows(batch["author_id"])
    assert unselected and selected
    assert all(float(grad[r].abs().sum()) == 0.0 for r in unselected)
    assert any(float(grad[r].abs().sum()) > 0.0 for r in selected)


@pytest.mark.parametrize("dim", [4, 16])
def test_gsu_scores_equal_the_dot_product_of_item_vectors(dim: int) -> None:
    """Both scoring paths (distinct ids x queries, or per-position item vectors; with D = 4 the
    2000 authors take the second) equal ``(e_author + e_tag) . query``."""
    fm = synthetic_feature_map(n_authors=2000, n_categories=6, long_len=K)
    batch = synthetic_batches(fm, 1, 64, seed=4)[0]
    emb = EmbeddingCollection(fm, dim)
    module = MomentCross(fm, emb, sequences=["long"])
    dom = module.long["video"]
    query = torch.randn(64, dim)
    ids = torch.stack([batch["long_video_author"], batch["long_video_tag"]], -1)  # [B, K, 2]
    want = (emb.lookup_sum(["author", "video_tag"], ids) * query.unsqueeze(1)).sum(-1)
    window = EagerWindow(batch, "video", dom.suffixes)
    torch.testing.assert_close(dom.scores(window, emb, query), want.detach())


def test_info_nce_matches_a_hand_computed_reference() -> None:
    torch.manual_seed(1)
    a, p = torch.randn(5, 3), torch.randn(5, 3)
    valid = torch.tensor([True, True, False, True, True])
    groups = torch.tensor([7, 8, 9, 7, 10])  # rows 0 and 3: one user, not each other's negative
    tau = 0.5
    got = info_nce(a, p, tau, valid, groups)

    def unit(v: torch.Tensor) -> list[float]:
        n = math.sqrt(sum(x * x for x in v.tolist()))
        return [x / n for x in v.tolist()]

    rows = [i for i in range(5) if valid[i]]
    total = 0.0
    for i in rows:
        sims = {
            j: sum(x * y for x, y in zip(unit(a[i]), unit(p[j]), strict=True)) / tau
            for j in rows
            if j == i or groups[j] != groups[i]
        }
        total += -sims[i] + math.log(sum(math.exp(s) for s in sims.values()))
    assert float(got) == pytest.approx(total / len(rows), rel=1e-5)
    # Fewer than two valid rows: no negative, loss exactly 0 (and still differentiable).
    one = info_nce(a.requires_grad_(), p, tau, torch.tensor([True, False, False, False, False]))
    assert float(one.detach()) == 0.0 and one.requires_grad


def test_config_errors_name_the_problem(fm) -> None:
    emb = EmbeddingCollection(fm, 16)
    with pytest.raises(ConfigError, match="sequences"):
        MomentCross(fm, emb, sequences=["short", "nope"])
    with pytest.raises(ConfigError, match="repeated"):
        MomentCross(fm, emb, sequences=["short", "short"])
    with pytest.raises(ConfigError, match="unknown contrastive terms"):
        MomentCross(fm, emb, contrastive_weight={"mixed": 1.0})
    with pytest.raises(ConfigError, match="temperature"):
        MomentCross(fm, emb, temperature=0.0)
    with pytest.raises(ConfigError, match="heads"):
        MomentCross(fm, emb, heads=3)
    short_map = synthetic_feature_map(n_categories=6)
    with pytest.raises(ConfigError, match="long_len = 0"):
        MomentCross(short_map, EmbeddingCollection(short_map, 16))
    # Only the recent short-video sequence needs no long history.
    only_short = MomentCross(short_map, EmbeddingCollection(short_map, 16), sequences=["short"])
    assert only_short.out_dim == 16


def test_contrastive_weights_per_term(fm, batch) -> None:
    module, emb = _module(fm, contrastive_weight={"short": 0.5, "long": 0.0})
    out = module(batch, emb)
    assert set(out.aux_losses) == {"cl_short"}  # missing / zero weights are skipped
    ref, emb2 = _module(fm, contrastive_weight=1.0)
    full = ref(batch, emb2).aux_losses["cl_short"]
    torch.testing.assert_close(out.aux_losses["cl_short"], 0.5 * full)


# ---------------------------------------------------------------------- as part of a Ranker
def test_moment_cross_conforms(fm, tmp_path: Path) -> None:
    cfg = get_config("moment_cross")
    cfg.modules[-1].params["gsu_len"] = 16
    check_ranker(cfg, fm, tmp_path=tmp_path, train_samples=16_384)


def test_learns_the_long_history_signal_better_than_ple() -> None:
    """Clicks depend on the candidate's author being in the long video history (synthetic.py):
    PLE without the module cannot see it, the same PLE with it must."""
    fm = synthetic_feature_map(n_authors=600, n_categories=6, long_len=64)
    train = synthetic_batches(fm, 100, 128, seed=1)
    test = synthetic_batches(fm, 8, 256, seed=2)
    aucs = {}
    for name in ("ple", "moment_cross"):
        cfg = get_config(name)
        if name == "moment_cross":
            cfg.modules[-1].params["gsu_len"] = 16
        torch.manual_seed(0)
        model = Ranker(fm, cfg)
        train_pass(model, train, lr_sparse=0.05, lr_dense=0.01)
        aucs[name] = ctr_auc(model, test)
    assert aucs["moment_cross"] > aucs["ple"] + 0.08, aucs


def test_synthetic_long_fields_follow_the_contract(fm, batch) -> None:
    for d in ("live", "video"):
        length = batch[f"long_{d}_len"]
        assert length.dtype == torch.int64 and int(length.max()) <= K
        pad = torch.arange(K).unsqueeze(0) >= length.unsqueeze(1)
        for col in fm.long_fields[d]:
            assert batch[col].shape == (64, K) and batch[col].dtype == torch.int64
            assert int(batch[col][pad].abs().sum()) == 0, f"{col} not 0-padded"
        assert int(batch[f"long_{d}_lv"][pad].sum()) == 0
        dt = batch[f"long_{d}_dt"]
        assert dt.dtype == torch.float32 and float(dt[pad].abs().sum()) == 0.0
        real_dt = torch.where(pad, torch.inf, dt)
        assert bool((real_dt[:, 1:] >= real_dt[:, :-1]).all()), "not most recent first"
    plain = synthetic_feature_map(n_categories=6)
    assert not any(k.startswith("long_") for k in synthetic_batches(plain, 1, 8)[0])


# ---------------------------------------------------------------------- eq. 4
def test_ranking_score_is_the_product_formula() -> None:
    probs = {"ctr": torch.tensor([0.1, 0.5, 0.9]), "lvtr": torch.tensor([0.2, 0.0, 1.0])}
    score = ranking_score(probs, {"ctr": 2.0, "lvtr": 0.5})
    want = [
        (1 + c) ** 2.0 * (1 + v) ** 0.5
        for c, v in zip([0.1, 0.5, 0.9], [0.2, 0.0, 1.0], strict=True)
    ]
    torch.testing.assert_close(score, torch.tensor(want))
    # Exponent 0 removes a task; tasks without an exponent are ignored.
    torch.testing.assert_close(
        ranking_score(probs, {"ctr": 1.0, "lvtr": 0.0}),
        ranking_score({"ctr": probs["ctr"]}, {"ctr": 1.0}),
    )


def test_ranking_score_validates_its_inputs() -> None:
    p = {"ctr": torch.tensor([0.5])}
    with pytest.raises(ConfigError, match="at least one"):
        ranking_score(p, {})
    with pytest.raises(ConfigError, match="lvtr"):
        ranking_score(p, {"lvtr": 1.0})
    with pytest.raises(ConfigError, match=">= 0"):
        ranking_score(p, {"ctr": -1.0})
    with pytest.raises(ValueError, match="outside"):
        ranking_score({"ctr": torch.tensor([1.5])}, {"ctr": 1.0})
    with pytest.raises(ValueError, match="shape"):
        ranking_score({"ctr": torch.ones(2) / 2, "ltr": torch.ones(3) / 2}, {"ctr": 1, "ltr": 1})


def test_contrastive_terms_only_in_training() -> None:
    """Scoring (eval mode) skips the InfoNCE terms; the representation is the same."""
    fm = synthetic_feature_map(long_len=16)
    torch.manual_seed(0)
    model = Ranker(fm, get_config("moment_cross"))
    batch = synthetic_batches(fm, 1, 32, seed=3)[0]
    (key,) = [k for k, m in model.feature_modules.items() if m.name == "moment_cross"]
    module = model.feature_modules[key]
    trained = module(batch, model.embeddings)
    assert trained.aux_losses
    module.eval()
    scored = module(batch, model.embeddings)
    assert scored.aux_losses == {}
    torch.testing.assert_close(scored.representation, trained.representation)
