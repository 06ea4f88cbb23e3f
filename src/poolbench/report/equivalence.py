"""What a null result is worth: equivalence, power, a test across few cells, and the examples that
flip. Pure functions of arrays, on the units statistics.py tests: per cell, each test example's
difference in correctness between two readouts, averaged over the matched seeds.

  stratified_mean                the mean over cells of each cell's mean difference, its standard
                                 error and degrees of freedom (one cell: the paired t-test's)
  tost                           two one-sided tests: does the difference lie within ±margin?
  minimum_detectable_difference  the difference the design detects with 80% power
  sign_flip_test                 a permutation test over examples, stratified by cell: it runs with
                                 any number of cells, where the Wilcoxon over cells needs six
  flips                          the examples one readout gets right and the other wrong

statistics.py applies them per cell (compare_to_cls) and per verdict group (across_cells).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

MARGIN = 0.01  # the default equivalence margin: one accuracy point
POWER = 0.8  # the power at which the minimum detectable difference is stated
PERMUTATIONS = 10_000  # sign flips per permutation test; p has a Monte Carlo error below 0.003 at 0.05
PERMUTATION_SEED = 0  # one seed for every test: see sign_flip_test
FLIP_EXAMPLES = 10  # example ids listed per kind of flip


def equivalence_variance(differences: np.ndarray, margin: float) -> float:
    """The sample variance of the per-example differences, but not below margin * (1 - margin): the
    variance of a difference of exactly `margin` carried by a share `margin` of the examples, right
    under one readout and wrong under the other on every seed. That is the difference hardest to
    see, and readouts that almost never disagree show a sample variance near zero: a t-test on that
    alone would call 200 examples without a single disagreement equivalent within one point with
    p = 0, while a true one-point difference carried that way leaves all 200 alike 13% of the time
    (0.99^200); with the floor, p = 0.08. Readouts that disagree on more than about a share
    `margin` of the examples, as cls and another readout do on real tasks, have a sample variance
    above the floor, and the tests are the plain t-tests. (With several seeds, an example that flips
    on only some of them counts for less: many such examples can leave the sample variance under
    the floor, and the floor then makes the tests conservative.)"""
    return max(float(np.var(differences, ddof=1)), margin * (1 - margin))


def stratified_mean(cells: Sequence[np.ndarray], margin: float) -> tuple[float, float, float]:
    """The mean over cells of each cell's mean per-example difference, its standard error and
    Welch-Satterthwaite degrees of freedom; each cell needs two examples or more. One cell: the
    paired t-test's mean, standard error and n - 1.

    Each cell weighs the same whatever its number of test examples: a cell is one task x backbone,
    and a large test set must not decide a verdict alone. Cells hold different examples, so their
    squared standard errors add. Variances as equivalence_variance, so the minimum detectable
    difference and the equivalence test rest on the same spread.

    Analytic rather than a bootstrap: resampling the examples within each cell gives a
    distribution of this mean that tends to the same normal one (each cell mean averages hundreds
    of examples; tests/test_equivalence.py compares the two), adds Monte Carlo error, and, like the
    sample variance, cannot show spread the data do not: readouts that agree on every example give
    a bootstrap interval of width zero, which the variance floor does not."""
    means = np.array([np.mean(cell) for cell in cells])
    sizes = np.array([len(cell) for cell in cells])
    squared_errors = np.array([equivalence_variance(cell, margin) for cell in cells]) / sizes
    df = squared_errors.sum() ** 2 / (squared_errors**2 / (sizes - 1)).sum()
    return float(means.mean()), float(np.sqrt(squared_errors.sum()) / len(cells)), float(df)


def tost(estimate: float, se: float, df: float, margin: float) -> float:
    """Two one-sided t-tests (TOST) of 'the difference is -margin or less' and 'it is +margin or
    more'; rejecting both says it lies within ±margin. The p-value is the larger of the two, with
    no correction between them: the claim needs both (an intersection-union test). On one cell this
    is statsmodels' ttost_paired of the seed-averaged correctness of the two readouts, floor apart."""
    below = stats.t.sf((estimate + margin) / se, df)
    above = stats.t.cdf((estimate - margin) / se, df)
    return float(max(below, above))


def minimum_detectable_difference(se: float, df: float, alpha: float, power: float = POWER) -> float:
    """The smallest true difference a two-sided test at level `alpha` detects with probability
    `power`: (t_{1 - alpha/2} + t_{power}) * se, the normal formula with t quantiles. It states what
    a nonsignificant difference is worth: with this design, a difference this large would probably
    have been found. statsmodels' TTestPower solves the same with the noncentral t; the two agree
    within 0.2% from 10 examples on. It is the power of a t-test of the mean difference: the exact
    McNemar (sign) test of statistics.py, which drops the sizes of seed-averaged differences and is
    discrete, detects it somewhat less often. The level is the nominal one: after Holm over many
    comparisons, a test needs more than this."""
    return float((stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * se)


def sign_flip_test(cells: Sequence[np.ndarray], permutations: int = PERMUTATIONS,
                   seed: int = PERMUTATION_SEED) -> float:
    """Two-sided stratified permutation test of 'the readout makes no difference', over examples.

    The statistic is the mean over cells of each cell's mean per-example difference (each cell
    weighs the same, as in stratified_mean). Under the null the two readouts are exchangeable on
    every example, so each example's seed-averaged difference is as likely to be d as -d: its sign
    is flipped at random, independently per example, within its cell. p is the share of flipped
    statistics at least as far from 0 as the observed one, the observed counted among them, so it
    is never 0 and is valid with any number of permutations. Seeded per call, so a test's p does not
    depend on which tests ran before it.

    Flipping the signs of m examples whose differences have the same size a adds a * (2K - m),
    K ~ Binomial(m, 1/2): one draw per cell and size has the same distribution as flipping every
    example, in a few numbers per permutation (a difference of 0 contributes nothing).

    Not a mixed-effects logistic model of correctness (random effects for example and cell): that
    takes minutes where this takes milliseconds, fails to converge when a readout sits near 0% or
    100% on a task, and its p-value is asymptotic in the number of cells, which is small here. This
    test is exact under its null for any number of cells, one or two included. What it does not
    do: it holds the cells fixed, so it says whether the readouts differ on average over these
    tasks and backbones, not on tasks like them; the Wilcoxon over cells asks that."""
    weights, sizes, observed = [], [], 0.0
    for cell in cells:
        differences = np.asarray(cell, dtype=float)
        nonzero = differences[differences != 0]
        magnitudes, group = np.unique(np.abs(nonzero), return_inverse=True)
        count = np.bincount(group, minlength=len(magnitudes))
        positive = np.bincount(group, weights=nonzero > 0, minlength=len(magnitudes))
        weight = magnitudes / (len(cells) * len(differences))
        observed += float(weight @ (2 * positive - count))
        weights.append(weight)
        sizes.append(count)
    weights, sizes = np.concatenate(weights), np.concatenate(sizes)
    heads = np.random.default_rng(seed).binomial(sizes, 0.5, size=(permutations, len(sizes)))
    flipped = (2 * heads - sizes) @ weights
    hits = int((np.abs(flipped) >= abs(observed) - 1e-12).sum())  # the tolerance keeps ties ties
    return (1 + hits) / (1 + permutations)


def flips(differences: pd.Series, examples: int = FLIP_EXAMPLES) -> dict:
    """The examples readout A gets right and B wrong, and the converse. `differences`: per example
    id, A's correctness minus B's, averaged over the matched seeds; with several seeds its sign
    decides, as it does in the McNemar test of statistics.py. Counts, and up to `examples` ids of
    each kind, the clearest first (right under A and wrong under B on the most seeds), ties in the
    order given. Ids only: the records hold no texts, the caller maps ids to them."""
    a_only = differences[differences > 0].sort_values(ascending=False, kind="stable")
    b_only = differences[differences < 0].sort_values(kind="stable")
    return {"n_a_right_b_wrong": len(a_only), "n_b_right_a_wrong": len(b_only),
            "ids_a_right_b_wrong": list(a_only.index[:examples]), "ids_b_right_a_wrong": list(b_only.index[:examples])}
