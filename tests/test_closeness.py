"""poolbench.closeness: how close two precisions' vectors of the same texts are, and the probe job that records it.

Known answers:
- linear CKA equals the HSIC form of Kornblith et al. (2019) computed independently here from n x n Gram
  matrices and the centring matrix H (tr(KHLH) / sqrt(tr(KHKH) tr(LHLH))), on a small random case; it is 1
  for a matrix against itself, against an orthogonal transform of itself, an isotropic scaling and a shift,
  and below 1 against an anisotropic scaling; undefined (NaN) for a readout constant over the texts.
- a readout compared with itself (one feature entry against itself): cosine 1 for every text, CKA 1.
- the packaged MiniLM-L6's last-layer mean vectors in float32 and bfloat16 agree to cosine > 0.99 on
  every one of a few sentences (the unit: one sentence).
- a probe job given mode.reference_dtype records, per layer, exactly the closeness of its own entry to
  the reference precision's (recomputed here from the two entries with numpy), and a job in the reference
  precision records none and keeps the run id it has without the setting.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import ortho_group

from poolbench import jobs
from poolbench.backbones import PACKAGED, forward_hidden_states, load_backbone
from poolbench.closeness import closeness, linear_cka
from poolbench.config import ConfigError
from poolbench.pooling import pool
from test_backbones import config as backbone_config  # conf/backbone/<name>.yaml as Hydra composes it

RNG = np.random.default_rng(0)
SENTENCES = ["I would like to cancel my card.", "What is the exchange rate for euros?",
             "The film was a delight from start to finish.", "Who wrote the declaration of independence?",
             "My transfer has not arrived yet, can you check?"]


def hsic_cka(x: np.ndarray, y: np.ndarray) -> float:
    """CKA in its kernel form: linear Gram matrices, centred by H = I - 11'/n."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = x @ x.T, y @ y.T

    def hsic(a, b):
        return np.trace(a @ h @ b @ h)

    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def test_linear_cka_is_the_hsic_form_on_a_small_random_case():
    x, y = RNG.normal(size=(12, 5)), RNG.normal(size=(12, 7))
    assert linear_cka(x, y) == pytest.approx(hsic_cka(x, y), rel=1e-10)
    related = x @ RNG.normal(size=(5, 7)) + 0.1 * y
    assert linear_cka(x, related) == pytest.approx(hsic_cka(x, related), rel=1e-10)
    assert linear_cka(x, related) > linear_cka(x, y)


def test_linear_cka_is_one_under_rotation_isotropic_scaling_and_shift_and_less_under_anisotropic_scaling():
    x = RNG.normal(size=(50, 6))
    rotation = ortho_group.rvs(6, random_state=1)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, 3.5 * x @ rotation + 7.0) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, x * np.array([1, 1, 1, 1, 1, 20.0])) < 0.9


def test_linear_cka_of_a_constant_readout_is_undefined():
    constant = np.ones((10, 4))
    assert np.isnan(linear_cka(constant, RNG.normal(size=(10, 4))))
    with pytest.raises(ValueError, match="same rows"):
        linear_cka(np.ones((3, 2)), np.ones((4, 2)))


def test_a_readout_compared_with_itself_has_cosine_one_and_cka_one(make_cfg, features_of):
    features, _ = features_of(make_cfg("mode=probe", "backbone=tiny-bert", "task=mcid"))
    layers = list(range(features.num_layers + 1))
    close = closeness(features, features, "mean", layers)
    for layer in layers:
        assert close[layer]["precision/cosine"] == pytest.approx(1.0, abs=1e-12)
        assert close[layer]["precision/cosine_min"] == pytest.approx(1.0, abs=1e-12)
        assert close[layer]["precision/cka"] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.skipif(not PACKAGED["minilm-l6"].installed(), reason=PACKAGED["minilm-l6"].pip_line)
def test_minilm_l6_last_layer_mean_vectors_agree_in_float32_and_bfloat16(cache_dir):
    vectors = {}
    for dtype in ("float32", "bfloat16"):
        backbone = load_backbone(backbone_config("minilm-l6", dtype=dtype), cache_dir)
        batch = backbone.tokenizer(SENTENCES, padding=True, return_tensors="pt")
        with torch.inference_mode():
            states = forward_hidden_states(backbone.model, batch)
        assert states[-1].dtype == getattr(torch, dtype)
        vectors[dtype] = pool(states[-1].float(), batch["attention_mask"], "mean")
    cosines = torch.nn.functional.cosine_similarity(vectors["float32"], vectors["bfloat16"], dim=-1)
    assert (cosines > 0.99).all(), cosines
    assert not torch.equal(vectors["float32"], vectors["bfloat16"])  # two precisions did run


PROBE = ["mode=probe", "backbone=tiny-bert", "task=mcid", "pooling=mean", "layer=all", "mode.max_epochs=2"]


def test_a_probe_job_records_its_closeness_to_the_reference_precision(make_cfg, features_of, tmp_path):
    compared = make_cfg(*PROBE, "backbone.dtype=bfloat16", "mode.reference_dtype=float32")
    records = jobs.run_job(compared, tmp_path / "bf16")
    ours, _ = features_of(compared)
    reference, _ = features_of(make_cfg(*PROBE, "backbone.dtype=float32"))
    assert ours.key != reference.key
    for record in records:
        layer = record.factors.layer
        a = ours.vectors("test", "mean", [layer])[0].double().numpy()
        b = reference.vectors("test", "mean", [layer])[0].double().numpy()
        cosines = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert record.metrics["precision/cosine"] == pytest.approx(cosines.mean(), abs=1e-9)
        assert record.metrics["precision/cosine_min"] == pytest.approx(cosines.min(), abs=1e-9)
        assert record.metrics["precision/cka"] == pytest.approx(hsic_cka(a, b), rel=1e-6)
        assert record.config["mode"]["reference_dtype"] == "float32"
        assert record.config["backbone"]["dtype"] == "bfloat16"
    # The reference precision's own job compares nothing, and its run id is the one it has without the setting.
    plain = make_cfg(*PROBE, "backbone.dtype=float32")
    same = make_cfg(*PROBE, "backbone.dtype=float32", "mode.reference_dtype=float32")
    assert jobs.plan_job(plain).run_ids == jobs.plan_job(same).run_ids
    assert jobs.plan_job(compared).run_ids != jobs.plan_job(make_cfg(*PROBE, "backbone.dtype=bfloat16")).run_ids
    assert not any(key.startswith("precision/") for key in jobs.run_job(same, tmp_path / "fp32")[0].metrics)


def test_reference_dtype_auto_is_refused_naming_the_key(make_cfg):
    with pytest.raises(ConfigError, match="mode.reference_dtype=auto"):
        make_cfg(*PROBE, "mode.reference_dtype=auto")
