"""Sink or summary: the measures that tell an input-dependent h_0 from a near-constant attention sink.

Known answers: a constant readout (an encoder's layer-0 [CLS], a decoder's h_0 whose first token is
the same for every input) has variance share 0 and centered cosine 0 even with a massive dimension
added; adding a constant vector changes neither variance share's numerator nor CKA; CKA of a readout
with itself is 1 and equals the HSIC formula with centering matrices (computed independently here).
Unit of replication: the text (rows of a split); each test is one draw of texts.
"""

from __future__ import annotations

import numpy as np
import pytest

from poolbench.diagnose.dependence import centered_cosine, dependence_table, linear_cka, variance_share
from poolbench.jobs import run_job
from test_diagnose_mode import SMALL

RNG = np.random.default_rng(0)


def hsic_cka(x: np.ndarray, y: np.ndarray) -> float:
    """CKA as HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with linear kernels and H = I - 11^T/n."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = x @ x.T, y @ y.T

    def hsic(a, b):
        return np.trace(a @ h @ b @ h) / (n - 1) ** 2

    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


# --------------------------------------------------------------------------- input dependence


def test_a_constant_readout_has_no_input_dependence_even_with_a_massive_dimension():
    sink = np.full((50, 16), 0.1, dtype=np.float32)
    sink[:, 3] = 5000.0  # a massive activation: plain cosine between texts is 1 either way
    assert variance_share(sink) == 0 and centered_cosine(sink, n_pairs=200) == 0
    assert linear_cka(sink, RNG.normal(size=(50, 8))) == 0  # 0/0 defined as 0
    assert variance_share(np.zeros((5, 4))) == 0


def test_variance_share_is_the_varying_energy_and_ignores_where_the_cloud_sits():
    x = RNG.normal(size=(400, 8))
    x -= x.mean(0)
    assert variance_share(x) == pytest.approx(1.0)
    shifted = x + 10.0  # every dimension shifted by 10: mean energy 8 x 100 more
    expected = (x ** 2).sum(1).mean() / ((shifted ** 2).sum(1).mean())
    assert variance_share(shifted) == pytest.approx(expected)
    # the centered cosine sees only the cloud: the same pairs whatever the shift
    assert centered_cosine(shifted, 300, seed=1) == pytest.approx(centered_cosine(x, 300, seed=1), abs=1e-9)


def test_centered_cosine_tells_one_shared_direction_from_no_shared_direction():
    direction = RNG.normal(size=6)
    one_direction = 7.0 + np.outer(RNG.normal(size=100), direction)  # pairs are +1 or -1 after centering
    normed = (one_direction - one_direction.mean(0))
    normed /= np.linalg.norm(normed, axis=1, keepdims=True)
    assert np.allclose(np.abs(normed @ normed.T), 1)
    # isotropic variation has no shared direction: its centered cosine is ~ -1/(n-1), i.e. ~0
    assert abs(centered_cosine(7.0 + RNG.normal(size=(400, 64)), n_pairs=2000)) < 0.02


def test_linear_cka_matches_the_hsic_formula_and_is_one_for_a_readout_with_itself():
    x = RNG.normal(size=(60, 12))
    y = x @ RNG.normal(size=(12, 5)) + 0.5 * RNG.normal(size=(60, 5))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, y) == pytest.approx(hsic_cka(x, y), rel=1e-10)
    # invariant to a constant vector (a sink) added to either view, to rotation and to isotropic scale
    q, _ = np.linalg.qr(RNG.normal(size=(12, 12)))
    assert linear_cka(3 * x @ q + 1000.0, y - 50.0) == pytest.approx(hsic_cka(x, y), rel=1e-8)
    with pytest.raises(ValueError, match="same texts"):
        linear_cka(x, y[:-1])


def test_dependence_in_a_diagnose_job_on_real_backbones(make_cfg, tmp_path):
    """Layer-0 [CLS] of an encoder and h_0 of a decoder whose first token is always [CLS] are constant."""
    bert = run_job(make_cfg(*SMALL, "backbone=tiny-bert", "task.max_train_examples=64"), tmp_path / "bert")
    layer0, last = bert[0].metrics, bert[-1].metrics
    assert layer0["dependence/cls/variance_share"] == 0 and layer0["dependence/cls/centered_cosine"] == 0
    assert layer0["dependence/cka"] == 0
    assert 0 < last["dependence/cls/variance_share"] <= 1 and 0 < last["dependence/mean/variance_share"] <= 1
    assert 0 < last["dependence/cka"] <= 1
    assert "dependence/mean_nospecial/variance_share" in last
    gpt2 = run_job(make_cfg(*SMALL, "backbone=tiny-gpt2", "task.max_train_examples=64"), tmp_path / "gpt2")
    for record in gpt2:
        assert record.metrics["dependence/cls/variance_share"] == 0
        assert record.metrics["dependence/cls/centered_cosine"] == 0
        assert record.metrics["dependence/mean/variance_share"] > 1e-4
