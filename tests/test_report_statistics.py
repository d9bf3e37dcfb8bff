"""Intervals and paired tests against hand-computed values and scipy's own."""

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from featpipe.report.statistics import (accuracy_interval, holm, mcnemar_exact, paired_outcomes,
                                        wilson_interval)
from featpipe.run_predictions import SplitPredictions


def _wilson_by_hand(k, n, z=1.959963984540054):
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("k, n", [(344, 360), (0, 10), (10, 10), (1, 1), (1910, 2000), (17, 40)])
def test_wilson_interval_matches_the_formula(k, n):
    assert wilson_interval(k, n) == pytest.approx(_wilson_by_hand(k, n), abs=1e-9)


def test_wilson_interval_known_width_and_edges():
    # 95.5% of 2,000 test images: about ±0.9 points (the "95.5% [94.5, 96.3]"-sized interval).
    low, high = wilson_interval(1910, 2000)
    assert (round(low, 4), round(high, 4)) == (0.9450, 0.9632)
    low, high = wilson_interval(0, 10)
    assert low == pytest.approx(0, abs=1e-12) and high == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(5, 0) is None
    assert accuracy_interval(0.9138888888888889, 360) == wilson_interval(329, 360)
    assert accuracy_interval(None, 360) is None and accuracy_interval(0.9, None) is None


def test_mcnemar_exact_is_the_binomial_test_of_the_discordant_pairs():
    a = np.array([1] * 50 + [1] * 10 + [0] * 2 + [0] * 38, dtype=bool)
    b = np.array([1] * 50 + [0] * 10 + [1] * 2 + [0] * 38, dtype=bool)
    result = mcnemar_exact(a, b)
    assert (result.n, result.only_a, result.only_b) == (100, 10, 2)
    # By hand: 2 * P(X <= 2), X ~ Binomial(12, 1/2) = 2 * (1 + 12 + 66) / 4096
    assert result.p_value == pytest.approx(2 * 79 / 4096)
    assert result.p_value == pytest.approx(binomtest(10, 12, 0.5).pvalue)
    assert mcnemar_exact(b, a).p_value == pytest.approx(result.p_value)  # symmetric
    assert mcnemar_exact(a, a).p_value == 1.0  # no discordant pair: nothing to tell apart
    with pytest.raises(ValueError):
        mcnemar_exact(a, b[:5])


def test_holm_adjustment_by_hand():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def _rows(paths, labels, predicted):
    proba = np.eye(2)[predicted] * 0.8 + 0.1
    return SplitPredictions(tuple(paths), np.asarray(labels), proba)


def test_paired_outcomes_align_by_path_and_refuse_other_images():
    a = _rows(["x", "y", "z"], [0, 1, 1], [0, 1, 0])
    b = _rows(["z", "x", "y"], [1, 0, 1], [1, 1, 1])  # same images, another order
    right_a, right_b = paired_outcomes(a, b)
    assert right_a.tolist() == [True, True, False] and right_b.tolist() == [False, True, True]
    assert paired_outcomes(a, _rows(["x", "y", "w"], [0, 1, 1], [0, 1, 1])) is None
    assert paired_outcomes(a, _rows(["x", "y"], [0, 1], [0, 1])) is None
    assert paired_outcomes(a, _rows(["x", "y", "z"], [1, 1, 1], [0, 1, 0])) is None  # other labels
