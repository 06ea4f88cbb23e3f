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

from poolbench import records
from poolbench.report import main
from poolbench.report.equivalence import flips, minimum_detectable_difference, sign_flip_test, stratified_mean, tost
from poolbench.report.statistics import (ALPHA, across_cells, compare_to_cls, example_differences, flip_table, holm,
                                         mcnemar_exact, wilcoxon_over_cells)
from poolbench.report.verdict import verdict_lines
from test_report import write_run  # the synthetic records of test_report.py: 200 test examples, cls right on 100

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


# In memory, the tests across cells and the verdict: two cells (tasks) of 2000 test examples, two
# seeds that agree. mean is right on 160 examples cls gets wrong and wrong on 60 it gets right
# (+5 points); max is cls example for example; last trades 200 examples each way (0 points, but
# 20% of the examples disagree).
N = 2000
FLIPS = {"cls": (0, 0), "mean": (160, 60), "max": (0, 0), "last": (200, 200)}  # (newly right, newly wrong)


def in_memory_study() -> tuple[pd.DataFrame, dict[str, pd.Series]]:
    cls_right = np.arange(N) % 10 < 7  # 70% right
    rows, correct = [], {}
    for task in ("t0", "t1"):
        for pooling, (gained, lost) in FLIPS.items():
            right = cls_right.copy()
            right[np.flatnonzero(~cls_right)[:gained]] = True
            right[np.flatnonzero(cls_right)[:lost]] = False
            for seed in (0, 1):
                run_dir = f"{task}-{pooling}-{seed}"
                correct[run_dir] = pd.Series(right, index=np.arange(N))
                rows.append({"backbone": "enc", "family": "encoder_mlm", "init": "pretrained", "task": task,
                             "mode": "probe", "layer": 4, "num_layers": 4, "max_train_examples": "all",
                             "backbone_seed": np.nan, "pooling": pooling, "seed": seed, "dir": run_dir,
                             "test/acc": right.mean()})
    return pd.DataFrame(rows), correct


def verdict_of(margin: float) -> tuple[pd.DataFrame, dict[str, str]]:
    runs, correct = in_memory_study()
    comparisons = compare_to_cls(runs, correct, margin)
    across = across_cells(comparisons, example_differences(runs, correct), margin)
    lines = verdict_lines(across, margin)
    return across.set_index("pooling"), {pooling: line for pooling, line in zip(across["pooling"], lines)}


def test_two_cells_give_a_three_way_verdict_where_the_wilcoxon_cannot_run():
    across, lines = verdict_of(0.01)
    assert across["p"].isna().all()  # two cells: no Wilcoxon
    assert across["outcome3"].to_dict() == {"mean": "different", "max": "equivalent", "last": "inconclusive"}
    assert across.loc["mean", "perm_p"] == pytest.approx(1 / 10_001)
    assert across.loc["last", "perm_p"] == 1.0 and across.loc["max", "perm_p"] == 1.0
    # last: 0 points, variance 0.2 * N / (N - 1) in each cell of N: se = sqrt(2 * variance / N) / 2 = 0.0071.
    se = np.sqrt(2 * 0.2 / (N - 1)) / 2
    assert across.loc["last", "tost_p"] == pytest.approx(stats.t.sf(0.01 / se, 2 * (N - 1)))
    assert across.loc["last", "mdd"] == pytest.approx((stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * se, rel=1e-3)
    assert across["tost_p_holm"].to_dict() == pytest.approx(holm(across["tost_p"]).to_dict())
    assert "Wilcoxon over cells not run: 2 cells, it needs 6" in lines["mean"]
    assert lines["mean"].endswith("→ mean beats cls across cells.")
    assert lines["max"].endswith("→ max and cls equivalent within ±1.0 points.")
    assert lines["last"].endswith("→ inconclusive (could not detect less than 2.0 points).")
    assert "sign-flip test p=1.000, Holm p=1.000; TOST within ±1.0 points p=0.079" in lines["last"]


def test_a_wider_margin_makes_the_null_result_an_equivalence():
    across, lines = verdict_of(0.05)
    assert across["outcome3"].to_dict() == {"mean": "different", "max": "equivalent", "last": "equivalent"}
    assert lines["last"].endswith("→ last and cls equivalent within ±5.0 points.")
    # +5 points, significantly: mean is different, and not within ±5 points.
    assert lines["mean"].endswith("→ mean beats cls across cells.")
    across, lines = verdict_of(0.1)
    assert lines["mean"].endswith("→ mean beats cls across cells, by less than 10.0 points.")


def test_each_comparison_has_its_equivalence_test_and_detectable_difference():
    runs, correct = in_memory_study()
    comparisons = compare_to_cls(runs, correct, 0.01).set_index(["task", "pooling"])
    last = comparisons.loc[("t0", "last")]
    assert last["tost_p"] == pytest.approx(stats.t.sf(0.01 / np.sqrt(0.2 * N / (N - 1) / N), N - 1))
    assert comparisons["tost_p_holm"].tolist() == pytest.approx(holm(comparisons["tost_p"]).tolist())
    assert comparisons["outcome3"].to_dict() == {
        (task, pooling): outcome for task in ("t0", "t1")
        for pooling, outcome in [("mean", "different"), ("max", "equivalent"), ("last", "inconclusive")]}
    assert (comparisons["outcome"].loc[:, "last"] == "tie").all()  # the columns that were there stay as they were


def test_flip_table_pairs_every_two_readouts_and_averages_seeds_first():
    runs, correct = in_memory_study()
    flipped = flip_table(runs, correct).set_index(["task", "readout_a", "readout_b"])
    assert len(flipped) == 2 * 6  # two cells, every pair of four readouts
    cls_mean = flipped.loc[("t0", "cls", "mean")]
    assert (cls_mean["n_a_right_b_wrong"], cls_mean["n_b_right_a_wrong"]) == (60, 160)
    wrong_under_cls = np.flatnonzero(np.arange(N) % 10 >= 7)
    assert cls_mean["ids_b_right_a_wrong"] == ",".join(map(str, wrong_under_cls[:10]))
    # Examples 7 and 8: mean right and max wrong on both seeds. Now on seed 1, example 7 goes the other way
    # (differences +1 and -1: averaged, 0, no flip, where counting per seed would find one each way), and
    # mean is wrong on example 8 (+1 and 0: averaged +0.5, still a flip, listed after the clearer ones).
    for run_dir, example, right in [("t0-mean-1", 7, False), ("t0-max-1", 7, True), ("t0-mean-1", 8, False)]:
        correct[run_dir] = correct[run_dir].copy()
        correct[run_dir][example] = right
    mean_max = flip_table(runs, correct).set_index(["task", "readout_a", "readout_b"]).loc[("t0", "mean", "max")]
    assert (mean_max["n_a_right_b_wrong"], mean_max["n_b_right_a_wrong"]) == (159, 60)
    assert mean_max["ids_a_right_b_wrong"] == "9,17,18,19,27,28,29,37,38,39"


def test_the_margin_reaches_the_report_from_the_command_line(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "git_commit", lambda: "abc1234")
    for pooling in ("cls", "max"):
        for seed in (0, 1):
            write_run(tmp_path / "runs" / f"{pooling}-{seed}", "enc-a", "t0", pooling, seed)
    for margin, conclusion in [([], "inconclusive (could not detect less than 2.0 points)"),
                               (["--margin", "0.05"], "max and cls equivalent within ±5.0 points")]:
        assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), *margin]) == 0
        assert f"→ {conclusion}." in (tmp_path / "out" / "REPORT.md").read_text()
    across = pd.read_csv(tmp_path / "out" / "across_cells.csv")
    assert list(across.columns[-6:]) == ["perm_p", "perm_p_holm", "tost_p", "tost_p_holm", "mdd", "outcome3"]
    assert (tmp_path / "out" / "flips.csv").exists()
    with pytest.raises(SystemExit):
        main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--margin", "1"])
