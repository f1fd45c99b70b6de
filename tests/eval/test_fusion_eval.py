"""The eq. 4 fusion scored by NDCG@K of a fused relevance (``eval/fusion_eval.py``): a
hand-computed slate, scikit-learn's graded ``ndcg_score``, masks and input errors."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import ndcg_score

from liverank.errors import ConfigError, DataValidationError
from liverank.eval.fusion_eval import (
    A_PRIORI_EXPONENTS,
    RELEVANCE_WEIGHTS,
    fused_log_score,
    fused_relevance,
    fusion_ranking_metrics,
    graded_ndcg_per_request,
)
from liverank.models.fusion import ranking_score

LABELS = ("ctr", "lvtr", "ltr", "cmtr", "gtr")


def _frame(rows: list[tuple[int, tuple[int, ...], float, float]]) -> pl.DataFrame:
    """Rows of ``(request_id, labels in LABELS order, p_ctr, p_lvtr)``; other p_ are 0."""
    data: dict[str, list] = {"request_id": [r[0] for r in rows]}
    for i, task in enumerate(LABELS):
        data[task] = [float(r[1][i]) for r in rows]
        data[f"mask_{task}"] = [1.0] * len(rows)
        data[f"p_{task}"] = [0.0] * len(rows)
    data["p_ctr"] = [r[2] for r in rows]
    data["p_lvtr"] = [r[3] for r in rows]
    return pl.DataFrame(data)


# request 5: a (click + long view, rel 2), b (click, rel 1), c (nothing, rel 0)
# request 9: nothing relevant -> excluded; request 7: d (rel 3) and e (rel 0) tied on every score
SLATE = [
    (5, (1, 1, 0, 0, 0), 0.3, 0.25),
    (5, (1, 0, 0, 0, 0), 0.5, 0.05),
    (5, (0, 0, 0, 0, 0), 0.2, 0.0),
    (9, (0, 0, 0, 0, 0), 0.4, 0.1),
    (9, (0, 0, 0, 0, 0), 0.1, 0.3),
    (7, (1, 1, 0, 0, 1), 0.1, 0.1),
    (7, (0, 0, 0, 0, 0), 0.1, 0.1),
]


def test_a_hand_computed_slate() -> None:
    got = fusion_ranking_metrics(_frame(SLATE), {"ctr": 1.0, "lvtr": 1.0}, ks=(1, 3))
    log3 = math.log2(3)
    # request 5 by p_ctr: b (1), a (2), c (0); fused log scores a 0.486 > b 0.454 > c 0.182
    ndcg5_ctr_at3 = (1 + 2 / log3) / (2 + 1 / log3)
    # request 7: d and e tie, so each position holds half of d's gain 3
    ndcg7_at1 = 1.5 / 3
    ndcg7_at3 = 1.5 * (1 + 1 / log3) / 3
    want = {
        "ndcg@1_ctr": (1 / 2 + ndcg7_at1) / 2,
        "ndcg@1_fused": (1.0 + ndcg7_at1) / 2,
        "ndcg@3_ctr": (ndcg5_ctr_at3 + ndcg7_at3) / 2,
        "ndcg@3_fused": (1.0 + ndcg7_at3) / 2,
    }
    for name, value in want.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name
    assert got["ndcg@1_delta"] == pytest.approx(0.25, abs=1e-12)
    assert got["ndcg@3_delta"] == pytest.approx(want["ndcg@3_fused"] - want["ndcg@3_ctr"])
    assert got["n_requests"] == 2 and got["n_rows"] == 7 and got["n_rows_unobserved"] == 0


def test_relevance_and_a_priori_exponents() -> None:
    frame = _frame(SLATE)
    np.testing.assert_array_equal(fused_relevance(frame), [2, 1, 0, 0, 0, 3, 0])
    assert A_PRIORI_EXPONENTS == RELEVANCE_WEIGHTS  # alpha_t = w_t, fixed before any result
    # exponents=None uses them; here p_ltr = p_cmtr = p_gtr = 0, so only ctr and lvtr count
    default = fusion_ranking_metrics(frame, None, ks=(3,))
    explicit = fusion_ranking_metrics(frame, {"ctr": 1.0, "lvtr": 1.0}, ks=(3,))
    assert default == explicit


def test_fused_log_score_orders_rows_as_ranking_score() -> None:
    rng = np.random.default_rng(0)
    probs = {t: rng.uniform(0, 1, 200) for t in ("ctr", "lvtr", "gtr")}
    frame = pl.DataFrame({f"p_{t}": v for t, v in probs.items()})
    exponents = {"ctr": 1.0, "lvtr": 0.5, "gtr": 2.0}
    log_score = fused_log_score(frame, exponents)
    torch_score = ranking_score({t: torch.tensor(v) for t, v in probs.items()}, exponents)
    np.testing.assert_allclose(np.exp(log_score), torch_score.numpy(), rtol=1e-12)
    np.testing.assert_array_equal(np.argsort(-log_score), np.argsort(-torch_score.numpy()))


@st.composite
def graded_slates(draw: st.DrawFn):
    rel, scores, groups = [], [], []
    for req in range(draw(st.integers(1, 5))):
        n = draw(st.integers(2, 7))  # sklearn needs more than one document per request
        rel += draw(st.lists(st.sampled_from([0.0, 0.0, 1.0, 2.0, 5.0]), min_size=n, max_size=n))
        scores += draw(st.lists(st.sampled_from([0.1, 0.3, 0.3, 0.7]), min_size=n, max_size=n))
        groups += [3 * req + 11] * n
    perm = draw(st.permutations(range(len(rel))))
    return np.array(rel)[perm], np.array(scores)[perm], np.array(groups, dtype=np.int64)[perm]


@settings(max_examples=120, deadline=None)
@given(graded_slates(), st.integers(1, 8))
def test_graded_ndcg_equals_sklearn(data, k: int) -> None:
    rel, scores, groups = data
    keys, ndcg = graded_ndcg_per_request(rel, scores, groups, k)
    assert list(keys) == sorted(set(groups.tolist()))
    for key, value in zip(keys, ndcg, strict=True):
        rows = groups == key
        if rel[rows].sum() == 0:
            assert math.isnan(value)
        else:
            want = ndcg_score([rel[rows]], [scores[rows]], k=k, ignore_ties=False)
            assert value == pytest.approx(want, abs=1e-12)


def test_masks_drop_unobserved_rows() -> None:
    frame = _frame(SLATE).with_columns(
        pl.when(pl.col("request_id") == 7).then(0.0).otherwise(1.0).alias("mask_gtr")
    )
    got = fusion_ranking_metrics(frame, {"ctr": 1.0, "lvtr": 1.0}, ks=(1,))
    assert got["n_rows_unobserved"] == 2 and got["n_rows"] == 5 and got["n_requests"] == 1
    assert got["ndcg@1_ctr"] == pytest.approx(0.5) and got["ndcg@1_fused"] == pytest.approx(1.0)


def test_no_relevant_request_gives_nan() -> None:
    got = fusion_ranking_metrics(_frame(SLATE[3:5]), ks=(2,))
    assert math.isnan(got["ndcg@2_ctr"]) and math.isnan(got["ndcg@2_delta"])
    assert got["n_requests"] == 0


def test_input_errors_name_the_problem() -> None:
    frame = _frame(SLATE)
    with pytest.raises(DataValidationError, match="p_evtr"):
        fusion_ranking_metrics(frame, {"evtr": 1.0})
    with pytest.raises(DataValidationError, match="label columns.*'gtr'"):
        fusion_ranking_metrics(frame.drop("gtr"))
    with pytest.raises(ConfigError, match="finite and >= 0"):
        fusion_ranking_metrics(frame, {"ctr": -1.0})
    with pytest.raises(ConfigError, match="at least one"):
        fusion_ranking_metrics(frame, {})
    with pytest.raises(ConfigError, match="positive integer"):
        fusion_ranking_metrics(frame, ks=(0,))
    with pytest.raises(DataValidationError, match="request_id"):
        fusion_ranking_metrics(frame.drop("request_id"))
    with pytest.raises(DataValidationError, match="probabilities"):
        fusion_ranking_metrics(frame.with_columns(pl.lit(1.5).alias("p_lvtr")))
    with pytest.raises(DataValidationError, match="0 or 1"):
        fusion_ranking_metrics(frame.with_columns(pl.lit(2.0).alias("ltr")))
