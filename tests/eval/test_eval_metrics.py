"""AUC, UAUC / GAUC, logloss and MSE against scikit-learn and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import log_loss, roc_auc_score

from liverank.errors import DataValidationError
from liverank.eval.metrics import auc, grouped_auc, logloss, mse, per_group_auc
from liverank.eval.ranks import stable_argsort_int

# Scores from a small grid so that ties are frequent.
tied_scores = st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.5, 0.75, 1.0])


@st.composite
def labelled(draw: st.DrawFn, min_size: int = 2, max_size: int = 60):
    n = draw(st.integers(min_size, max_size))
    labels = draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=n, max_size=n))
    scores = draw(st.lists(tied_scores, min_size=n, max_size=n))
    groups = draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))
    return np.array(labels), np.array(scores), np.array(groups, dtype=np.int64)


def reference_grouped_auc(y: np.ndarray, s: np.ndarray, g: np.ndarray):
    """Per-group loop with scikit-learn: the definition, written the slow way."""
    aucs, weights = [], []
    for key in np.unique(g):
        sel = g == key
        if 0 < y[sel].sum() < sel.sum():
            aucs.append(roc_auc_score(y[sel], s[sel]))
            weights.append(sel.sum())
    if not aucs:
        return math.nan, math.nan, 0
    return float(np.mean(aucs)), float(np.average(aucs, weights=weights)), len(aucs)


# -- AUC ---------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(labelled())
def test_auc_matches_sklearn_with_ties(data) -> None:
    y, s, _ = data
    if 0 < y.sum() < len(y):
        assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    else:
        assert math.isnan(auc(y, s))


def test_auc_hand_computed_tie_counts_half() -> None:
    # pairs (pos, neg): (0.8, 0.1) win, (0.8, 0.8) tie, (0.9, 0.1) win, (0.9, 0.8) win -> 3.5 / 4
    assert auc([0, 1, 0, 1], [0.1, 0.8, 0.8, 0.9]) == pytest.approx(0.875)
    assert auc([0, 1], [0.3, 0.3]) == pytest.approx(0.5)
    assert auc([1, 0, 1, 0], [1.0, 0.0, 1.0, 0.0]) == pytest.approx(1.0)
    assert auc([1, 0], [0.0, 1.0]) == pytest.approx(0.0)


def test_auc_undefined_cases_are_nan() -> None:
    assert math.isnan(auc([1, 1, 1], [0.1, 0.2, 0.3]))
    assert math.isnan(auc([], []))
    assert math.isnan(auc([0, 1], [0.1, 0.9], mask=[0, 0]))


@settings(max_examples=60, deadline=None)
@given(labelled(), st.randoms(use_true_random=False))
def test_mask_equals_dropping_rows_and_order_does_not_matter(data, rnd) -> None:
    y, s, g = data
    m = np.array([rnd.random() < 0.7 for _ in y], dtype=float)
    expected = auc(y[m > 0], s[m > 0])
    perm = np.array(rnd.sample(range(len(y)), len(y)))
    got = auc(y[perm], s[perm], mask=m[perm])
    assert got == pytest.approx(expected, nan_ok=True)
    assert grouped_auc(y[perm], s[perm], g[perm], mask=m[perm]) == pytest.approx(
        grouped_auc(y[m > 0], s[m > 0], g[m > 0]), nan_ok=True
    )


# -- UAUC / GAUC -------------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(labelled(max_size=80))
def test_grouped_auc_matches_per_group_sklearn(data) -> None:
    y, s, g = data
    uauc, gauc, n_used = grouped_auc(y, s, g)
    ref_u, ref_g, ref_n = reference_grouped_auc(y, s, g)
    assert n_used == ref_n
    assert uauc == pytest.approx(ref_u, abs=1e-12, nan_ok=True)
    assert gauc == pytest.approx(ref_g, abs=1e-12, nan_ok=True)


def test_grouped_auc_hand_computed_and_one_class_users_excluded() -> None:
    # user 1: 4 rows, AUC 0.75 ; user 2: 2 rows, AUC 0 ; user 3: only positives -> excluded ;
    # user 4: only negatives -> excluded
    y = [1, 0, 1, 0, 1, 0, 1, 1, 0]
    s = [0.9, 0.8, 0.3, 0.1, 0.2, 0.7, 0.5, 0.6, 0.4]
    g = [1, 1, 1, 1, 2, 2, 3, 3, 4]
    uauc, gauc, n_used = grouped_auc(y, s, g)
    assert n_used == 2
    assert uauc == pytest.approx((0.75 + 0.0) / 2)
    assert gauc == pytest.approx((4 * 0.75 + 2 * 0.0) / 6)
    keys, aucs, sizes = per_group_auc(y, s, g)
    assert keys.tolist() == [1, 2, 3, 4]
    assert sizes.tolist() == [4, 2, 2, 1]
    assert aucs[0] == pytest.approx(0.75) and aucs[1] == 0.0
    assert np.isnan(aucs[2:]).all()


def test_grouped_auc_weights_count_only_observed_rows() -> None:
    # the masked rows of user 1 must neither change its AUC nor its weight
    y = [1, 0, 0, 0, 1, 0, 0]
    s = [0.9, 0.1, 0.95, 0.99, 0.2, 0.3, 0.1]
    g = [1, 1, 1, 1, 2, 2, 2]
    m = [1, 1, 0, 0, 1, 1, 1]
    uauc, gauc, n_used = grouped_auc(y, s, g, mask=m)
    # user 1: AUC 1 over 2 rows ; user 2: pos 0.2 vs negs 0.3, 0.1 -> 0.5 over 3 rows
    assert n_used == 2
    assert uauc == pytest.approx(0.75)
    assert gauc == pytest.approx((2 * 1.0 + 3 * 0.5) / 5)


def test_grouped_auc_no_usable_group() -> None:
    assert grouped_auc([1, 1, 0], [0.1, 0.2, 0.3], [1, 1, 2])[2] == 0
    u, g, n = grouped_auc([1, 0], [0.1, 0.2], [1, 1], mask=[0, 0])
    assert math.isnan(u) and math.isnan(g) and n == 0


def test_grouped_auc_on_many_sparse_large_group_ids() -> None:
    """The vectorised path on a million rows with sparse, large ids (its speed goal is in
    ``benchmarks/grouped_auc_speed.py``, not here); on the rows of 300 of those groups, UAUC
    and GAUC equal a plain per-group loop over the groups that have both labels."""
    rng = np.random.default_rng(0)
    n, users = 1_000_000, 100_000
    g = rng.integers(0, users, n) * 7919  # sparse, large ids
    s = rng.random(n)
    y = (rng.random(n) < 0.3 * s).astype(np.float64)
    uauc, gauc, n_used = grouped_auc(y, s, g)
    assert n_used > 50_000 and 0.6 < gauc < 0.8 and 0.6 < uauc < 0.8
    # A sample of groups checked one by one against the plain AUC.
    sub = np.isin(g, np.unique(g)[:300])
    ys, ss, gs = y[sub], s[sub], g[sub]
    rows = [gs == k for k in np.unique(gs)]
    per_group = [(auc(ys[r], ss[r]), int(r.sum())) for r in rows if 0 < ys[r].sum() < r.sum()]
    u_sub, g_sub, n_sub = grouped_auc(ys, ss, gs)
    assert n_sub == len(per_group)
    assert u_sub == pytest.approx(np.mean([a for a, _ in per_group]), abs=1e-9)
    assert g_sub == pytest.approx(
        sum(a * w for a, w in per_group) / sum(w for _, w in per_group), abs=1e-9
    )


# -- logloss / MSE -----------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([0.0, 1.0]), st.floats(0.001, 0.999)), min_size=2, max_size=40
    )
)
def test_logloss_matches_sklearn(rows) -> None:
    y = np.array([r[0] for r in rows])
    p = np.array([r[1] for r in rows])
    assert logloss(y, p) == pytest.approx(log_loss(y, p, labels=[0, 1]), rel=1e-9)


def test_logloss_clips_and_masks() -> None:
    assert logloss([1, 0], [0.0, 1.0], eps=1e-7) == pytest.approx(-math.log(1e-7))
    assert logloss([1, 0, 1], [0.5, 0.5, 0.0], mask=[1, 1, 0]) == pytest.approx(math.log(2))
    assert math.isnan(logloss([1], [0.5], mask=[0]))


def test_mse() -> None:
    assert mse([1.0, 2.0, 3.0], [1.0, 4.0, 0.0]) == pytest.approx((0 + 4 + 9) / 3)
    assert mse([1.0, 2.0], [1.0, 4.0], mask=[1, 0]) == 0.0
    assert math.isnan(mse([1.0], [1.0], mask=[0]))


# -- bad input ---------------------------------------------------------------------------------


def test_bad_inputs_name_the_problem() -> None:
    with pytest.raises(DataValidationError, match="labels.*0 or 1.*rows: 1"):
        auc([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(DataValidationError, match="scores.*finite"):
        auc([0, 1], [0.1, float("nan")])
    with pytest.raises(DataValidationError, match="3 rows, expected 2"):
        auc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(DataValidationError, match=r"probs.*\[0, 1\]"):
        logloss([0, 1], [0.1, 1.5])
    # a NaN label on a masked row is fine
    assert auc([0, 1, float("nan")], [0.1, 0.2, 0.3], mask=[1, 1, 0]) == 1.0


@pytest.mark.parametrize("span", [3, 2**16 - 1, 2**16 + 5, 2**31, 2**40])
def test_radix_group_sort_is_a_stable_argsort(span: int) -> None:
    rng = np.random.default_rng(span % 1000)
    keys = rng.integers(-span // 2, span - span // 2, 5000, dtype=np.int64)
    keys[:50] = keys[50:100]  # duplicates, to check stability
    assert (stable_argsort_int(keys) == np.argsort(keys, kind="stable")).all()


def test_grouped_auc_with_sparse_large_ids_matches_reference() -> None:
    rng = np.random.default_rng(5)
    n = 3000
    g = rng.integers(0, 40, n) * 123_456_789 - 10**12  # span > 2**32, negative ids
    s = np.round(rng.random(n), 2)
    y = (rng.random(n) < s).astype(float)
    for groups in (g, g % 2**20):
        got = grouped_auc(y, s, groups)
        ref = reference_grouped_auc(y, s, groups)
        assert got == pytest.approx(ref)
