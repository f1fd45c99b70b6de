"""Paired intervals against scipy's paired t-test, and the verdict rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from liverank.errors import ConfigError
from liverank.experiments.intervals import paired_delta

pairs = st.lists(
    st.tuples(st.floats(0.4, 0.9), st.floats(0.4, 0.9)), min_size=2, max_size=40
).filter(lambda xs: np.std([a - b for a, b in xs]) > 1e-6)


@settings(max_examples=60, deadline=None)
@given(pairs, st.sampled_from([0.9, 0.95, 0.99]))
def test_interval_equals_scipy_paired_t(xs, confidence):
    cand, base = (np.array(v) for v in zip(*xs, strict=True))
    got = paired_delta(cand, base, margin=0.001, confidence=confidence)
    ref = stats.ttest_rel(cand, base).confidence_interval(confidence)
    assert got.n == len(xs)
    assert got.ci_low == pytest.approx(ref.low, abs=1e-12)
    assert got.ci_high == pytest.approx(ref.high, abs=1e-12)
    # swapping the sides negates the interval and keeps the verdict
    back = paired_delta(base, cand, margin=0.001, confidence=confidence)
    assert back.ci_low == pytest.approx(-got.ci_high) and back.verdict == got.verdict


def test_verdicts():
    base = np.array([0.70, 0.71, 0.69, 0.70, 0.72])
    up = paired_delta(base + [0.010, 0.012, 0.009, 0.011, 0.010], base, margin=0.002)
    assert (up.verdict, up.direction) == ("effect", "+") and up.ci_low > 0
    down = paired_delta(base - 0.01 + [0, 0.001, -0.001, 0, 0], base, margin=0.002)
    assert (down.verdict, down.direction) == ("effect", "-")
    same = paired_delta(base + [0.0002, -0.0001, 0.0001, -0.0002, 0.0], base, margin=0.002)
    assert same.verdict == "no effect" and -0.002 <= same.ci_low <= same.ci_high <= 0.002
    noisy = paired_delta(base + [0.02, -0.015, 0.01, -0.02, 0.004], base, margin=0.002)
    assert noisy.verdict == "inconclusive" and noisy.ci_low < 0 < noisy.ci_high


def test_missing_pairs_are_counted_and_too_few_pairs_are_inconclusive():
    d = paired_delta([0.7, math.nan, 0.72, 0.71], [0.69, 0.7, math.nan, 0.70], margin=0.01)
    assert (d.n, d.n_missing) == (2, 2)
    one = paired_delta([0.7], [0.6], margin=0.01)
    assert (
        one.verdict == "inconclusive" and math.isnan(one.ci_low) and one.mean == pytest.approx(0.1)
    )


def test_bad_input_names_the_problem():
    with pytest.raises(ConfigError, match="equal length"):
        paired_delta([0.1, 0.2], [0.1], margin=0.0)
    with pytest.raises(ConfigError, match="margin"):
        paired_delta([0.1, 0.2], [0.1, 0.3], margin=-1)
    with pytest.raises(ConfigError, match="confidence"):
        paired_delta([0.1, 0.2], [0.1, 0.3], margin=0.0, confidence=1.5)


def test_module_example_holds():
    import doctest

    from liverank.experiments import intervals

    assert doctest.testmod(intervals).failed == 0


def test_an_effect_inside_the_margin_is_marked_as_such():
    """Rule unchanged (the interval excludes 0: effect), but the report says when the whole
    interval is also inside ±margin, i.e. smaller than what was registered as mattering."""
    from liverank.experiments.report_page import _verdict

    base = np.array([0.70, 0.71, 0.69, 0.70, 0.72])
    tiny = paired_delta(base + [0.0008, 0.0009, 0.0007, 0.0008, 0.0008], base, margin=0.002)
    assert (tiny.verdict, tiny.direction) == ("effect", "+")
    assert _verdict(tiny) == "effect (+, inside ±0.002)"
    big = paired_delta(base + [0.010, 0.012, 0.009, 0.011, 0.010], base, margin=0.002)
    assert _verdict(big) == "effect (+)"
    same = paired_delta(base + [0.0002, -0.0001, 0.0001, -0.0002, 0.0], base, margin=0.002)
    assert _verdict(same) == "no effect"
