"""How sure the report's numbers are: accuracy intervals and paired tests between runs.

The protocol, written down so a number can be reproduced from the report alone:
- Every accuracy gets a Wilson score interval at 95% (k right out of n test images; scipy's
  ``binomtest(k, n).proportion_ci(method="wilson")``). Wilson, not the normal approximation: it stays inside
  [0, 1] and keeps its coverage near 0% and 100% and on small test sets.
- Two runs scored on the same test images (same dataset fingerprint, same image paths) are compared paired with
  McNemar's exact test: under "equally accurate", the images exactly one of them gets right fall to either side
  as fair coin flips, so the two-sided p-value is the binomial test of one side's count among the discordant pairs
  (``binomtest(b, b + c, 0.5)``).
- The verdict tests the best run (selected on validation accuracy) against every other run of its dataset: m
  comparisons at once. Their p-values are Holm-adjusted (family-wise error 5%), so "worse than the best" is
  claimed only where it holds across the whole family; every run not shown worse is a tie ("within noise").
  Holm only ever adds ties: the verdict errs on the side of "cannot tell".
- Runs without per-image predictions (made before featpipe recorded them) or scored on other images are not
  tested: they keep their intervals and the report says why they are not in the paired comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

from featpipe.run_predictions import SplitPredictions

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
TEST_NAME = "mcnemar-exact"
TEST_DESCRIPTION = (f"McNemar's exact test on the test images both runs saw (two-sided binomial test of the "
                    f"discordant pairs), Holm-adjusted over the comparisons with the best run, at {CONFIDENCE:.0%}")
INTERVAL_DESCRIPTION = f"Wilson score interval at {CONFIDENCE:.0%} over the test images"


def wilson_interval(correct: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion `correct`/`n`; None when there is nothing to count."""
    if n <= 0:
        return None
    ci = binomtest(int(correct), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def accuracy_interval(accuracy: float | None, n: int | None) -> tuple[float, float] | None:
    """Wilson interval of a recorded accuracy over its n images (k = accuracy * n, rounded back to a count)."""
    if accuracy is None or not isinstance(n, int) or n <= 0:
        return None
    return wilson_interval(round(accuracy * n), n)


@dataclass(frozen=True)
class Paired:
    """McNemar's exact test of run A against run B on the same images."""

    n: int  # images both were scored on
    only_a: int  # images A gets right and B gets wrong
    only_b: int
    p_value: float

    def to_json(self) -> dict:
        return {"n": self.n, "only_best_right": self.only_a, "only_other_right": self.only_b, "p_value": self.p_value}


def mcnemar_exact(a_correct, b_correct) -> Paired:
    """McNemar's exact test from two boolean vectors over the same images, in the same order."""
    a, b = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired outcomes must be two vectors of one length, got {a.shape} and {b.shape}")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    discordant = only_a + only_b
    p_value = 1.0 if discordant == 0 else float(binomtest(only_a, discordant, 0.5).pvalue)
    return Paired(len(a), only_a, only_b, p_value)


def paired_outcomes(a: SplitPredictions, b: SplitPredictions) -> tuple[np.ndarray, np.ndarray] | None:
    """(a right?, b right?) per image, aligned by image path; None unless both saw exactly the same images
    with the same labels."""
    if len(a.paths) != len(b.paths) or set(a.paths) != set(b.paths):
        return None
    order_a, order_b = np.argsort(np.asarray(a.paths)), np.argsort(np.asarray(b.paths))
    if not np.array_equal(np.asarray(a.labels)[order_a], np.asarray(b.labels)[order_b]):
        return None
    return a.correct[order_a], b.correct[order_b]


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1), in the input order."""
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
