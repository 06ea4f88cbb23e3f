"""equivalence.py, and the three-way verdict built on it, on data whose answers are known:
statsmodels' TOST and power solver on the same numbers, exact enumeration of sign flips, and
seeded simulations with a known effect (a few hundred each, small, so the file runs in seconds).
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.power import TTestPower
from statsmodels.stats.weightstats import DescrStatsW, ttost_paired

from poolbench.report.equivalence import flips, minimum_detectable_difference, sign_flip_test, stratified_mean, tost
from poolbench.report.statistics import ALPHA, mcnemar_exact, wilcoxon_over_cells

SIZES = np.array([-1, -0.5, 0, 0.5, 1])  # the seed-averaged difference of one example, with two seeds


def three_sd(p: float, n: int) -> float:
    """Three Monte Carlo standard errors of a rejection rate p estimated from n simulations."""
    return 3 * np.sqrt(p * (1 - p) / n)


def test_tost_on_one_cell_is_statsmodels_paired_tost():
    rng = np.random.default_rng(0)
    cls = (rng.random((300, 3)) < 0.70).mean(axis=1)  # per example, correct on how many of 3 seeds
    other = (rng.random((300, 3)) < 0.72).mean(axis=1)
    for margin in (0.02, 0.05, 0.1):
        assert np.var(other - cls, ddof=1) > margin * (1 - margin)  # the variance floor does not bind
        p = tost(*stratified_mean([other - cls], margin), margin)
        assert p == pytest.approx(ttost_paired(other, cls, -margin, margin)[0], rel=1e-9)
        assert p == pytest.approx(DescrStatsW(other - cls).ttost_mean(-margin, margin)[0], rel=1e-9)
    assert tost(*stratified_mean([other - cls], 0.1), 0.1) < ALPHA < tost(*stratified_mean([other - cls], 0.02), 0.02)


def test_readouts_that_never_disagree_are_equivalent_only_with_enough_examples():
    # No example differs: the variance floor 0.01 * 0.99 stands in for the sample variance of 0.
    assert stratified_mean([np.zeros(200)], 0.01) == pytest.approx((0.0, np.sqrt(0.0099 / 200), 199))
    assert tost(*stratified_mean([np.zeros(200)], 0.01), 0.01) == pytest.approx(0.078, abs=0.001)
    assert tost(*stratified_mean([np.zeros(1600)], 0.01), 0.01) < 0.001
    # The same agreement over 8 cells of 200 weighs as 1600 examples.
    assert tost(*stratified_mean([np.zeros(200)] * 8, 0.01), 0.01) == pytest.approx(
        tost(*stratified_mean([np.zeros(1600)], 0.01), 0.01), rel=0.01)


def test_a_difference_beyond_the_margin_is_not_equivalent():
    differences = np.r_[np.ones(60), np.zeros(140)]  # 30 points
    assert tost(*stratified_mean([differences], 0.01), 0.01) > 0.99


def test_the_stratified_standard_error_is_that_of_a_stratified_bootstrap():
    rng = np.random.default_rng(1)
    cells = [rng.choice(SIZES, n, p=p) for n, p in [(200, [0.1, 0.1, 0.5, 0.1, 0.2]), (400, [0.2, 0, 0.6, 0, 0.2]),
                                                    (800, [0.05, 0.1, 0.7, 0.1, 0.05])]]
    estimate, se, _ = stratified_mean(cells, 0.01)
    assert estimate == pytest.approx(np.mean([cell.mean() for cell in cells]))  # each cell weighs the same
    resampled = np.mean([rng.choice(cell, (4000, len(cell))).mean(axis=1) for cell in cells], axis=0)
    assert se == pytest.approx(resampled.std(), rel=0.05)
    one = cells[0]
    assert stratified_mean([one], 0.01) == pytest.approx((one.mean(), one.std(ddof=1) / np.sqrt(200), 199))


@pytest.mark.parametrize("n", [10, 30, 200, 2000])
def test_the_minimum_detectable_difference_is_statsmodels_power_solution(n):
    sd = 0.4
    effect_size = TTestPower().solve_power(nobs=n, alpha=0.05, power=0.8, alternative="two-sided")
    assert minimum_detectable_difference(sd / np.sqrt(n), n - 1, 0.05) == pytest.approx(effect_size * sd, rel=2e-3)


def test_at_the_minimum_detectable_difference_four_in_five_simulated_cells_reject():
    """200 examples, one seed, 20% of them discordant; the true difference is the MDD of that
    design: solving d = c * sqrt((0.2 - d^2) / n) gives d = c * sqrt(0.2 / (n + c^2))."""
    n, discordant, simulations = 200, 0.2, 400
    c = stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.8, n - 1)
    difference = c * np.sqrt(discordant / (n + c**2))
    rng = np.random.default_rng(2)
    t_rejects, mcnemar_rejects, mdds = 0, 0, []
    for _ in range(simulations):
        draw = rng.random(n)
        cell = np.select([draw < (discordant + difference) / 2, draw < discordant], [1.0, -1.0], 0.0)
        _, se, df = stratified_mean([cell], 0.01)
        mdds.append(minimum_detectable_difference(se, df, 0.05))
        t_rejects += stats.ttest_1samp(cell, 0).pvalue < 0.05
        mcnemar_rejects += mcnemar_exact(pd.Series(cell)) < 0.05
    assert np.mean(mdds) == pytest.approx(difference, rel=0.02)  # the MDD estimated from each cell
    assert abs(t_rejects / simulations - 0.8) < three_sd(0.8, simulations)  # measured: 0.795
    # The exact sign test, discrete, is a little less powerful than the t-test the MDD describes.
    assert 0.65 < mcnemar_rejects / simulations < t_rejects / simulations  # measured: 0.765


def test_without_an_effect_the_sign_flip_test_rejects_one_time_in_twenty():
    rng = np.random.default_rng(3)
    symmetric = [0.1, 0.15, 0.5, 0.15, 0.1]
    simulations = 400
    rejections = sum(sign_flip_test([rng.choice(SIZES, n, p=symmetric) for n in (80, 120, 200)],
                                    permutations=999, seed=seed) < 0.05 for seed in range(simulations))
    assert abs(rejections / simulations - 0.05) < three_sd(0.05, simulations)  # measured: 0.058


def test_the_sign_flip_test_finds_a_clear_effect_on_two_cells_where_the_wilcoxon_cannot_run():
    rng = np.random.default_rng(4)
    favouring = [0.05, 0.1, 0.5, 0.15, 0.2]  # mean difference 0.15
    cells = [rng.choice(SIZES, 150, p=favouring) for _ in range(2)]
    assert sign_flip_test(cells) == pytest.approx(1 / 10_001)  # no flipped statistic as large
    assert np.isnan(wilcoxon_over_cells(pd.Series([cell.mean() for cell in cells])))
    simulations = 200  # and its power at a third of that effect
    weaker = [0.07, 0.13, 0.5, 0.17, 0.13]  # mean difference 0.08
    rejections = sum(sign_flip_test([rng.choice(SIZES, 150, p=weaker) for _ in range(2)], permutations=999,
                                    seed=seed) < 0.05 for seed in range(simulations))
    assert rejections / simulations > 0.5  # measured: 0.715


def test_drawing_binomial_flips_is_flipping_every_example():
    cells = [np.array([1, -1, 0.5, 1, 0, 1]), np.array([1, 1, -0.5, 0.5, 0, 0, 1, -1, 0.5])]
    nonzero = [cell[cell != 0] for cell in cells]

    def statistic(signed: list[np.ndarray]) -> float:
        return np.mean([part.sum() / len(cell) for part, cell in zip(signed, cells)])

    observed = abs(statistic(nonzero))
    flat = np.concatenate(nonzero)
    exact = np.mean([abs(statistic(np.split(flat * signs, [len(nonzero[0])]))) >= observed - 1e-12
                     for signs in itertools.product([-1, 1], repeat=len(flat))])
    p = sign_flip_test(cells, permutations=100_000)
    assert p == pytest.approx(exact, abs=3 * np.sqrt(exact * (1 - exact) / 100_000))


def test_each_cell_weighs_the_same_in_the_sign_flip_test():
    large = np.r_[np.ones(100), np.zeros(900)]  # +10 points on 1000 examples
    small = np.r_[-np.ones(10), np.zeros(90)]  # -10 points on 100 examples
    assert sign_flip_test([large, small]) == 1.0
    assert sign_flip_test([np.r_[large, small]]) < 0.001  # pooling the examples would let the large cell decide
    assert sign_flip_test([np.zeros(50)]) == 1.0


def test_flips_count_by_the_sign_of_the_seed_averaged_difference_and_list_the_clearest_ids():
    differences = pd.Series([0.5, 1, 0, -0.5, 1, -1, 0.5, 0], index=[7, 3, 9, 4, 8, 2, 5, 6])
    found = flips(differences, examples=3)
    assert found == {"n_a_right_b_wrong": 4, "n_b_right_a_wrong": 2, "ids_a_right_b_wrong": [3, 8, 7],
                     "ids_b_right_a_wrong": [2, 4]}
