"""The sink-or-summary verdict and the report's section: the verdict follows the issue's definition at each
threshold's boundary (thresholds from the command line and the sweep callback, checked before work); the
section from real diagnose and probe jobs cites its figures by file name and sets the sink-free mean beside
the plain mean, paired by seed; the NSP comparison's paired interval, computed by hand (scipy's t). Unit of
replication: the seed for the probes' accuracy, the pretraining seed for the arms; each test is one draw.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from scipy import stats

from poolbench.config import CONF_DIR
from poolbench.jobs import run_job
from poolbench.report.sink import SinkThresholds, nsp_lines, verdict
from poolbench.report.write import MultirunReport, build_report, main
from test_diagnose_mode import SMALL


# --------------------------------------------------------------------------- verdict and report


def measured(**values) -> dict:
    """One backbone x layer's evidence: by default a summary without an ablation measured at its layer."""
    row = {"variance_share_cls": 0.3, "massive_first": 0.0, "raw": 0.4, "value": 0.4, "decodable": 0.2}
    return row | values


SINK = dict(variance_share_cls=0.0, massive_first=1.0, decodable=0.0)  # SmolLM2's middle layers, by the issue
HURTS = dict(ablation_mean_others=-0.05, ablation_mean_others_high=-0.01)
HARMLESS = dict(ablation_mean_others=-0.01, ablation_mean_others_high=0.01)


def test_the_verdict_follows_the_definition():
    """summary = varying, decodable, mean-ablation hurts; sink = near-constant, massive or discounted, NOT
    decodable, mean-ablation harmless; mixed otherwise. An unmeasured ablation vetoes neither."""
    assert verdict(measured()) == "summary" and verdict(measured(**HURTS)) == "summary"
    assert verdict(measured(**HARMLESS)) == "mixed"  # decodable and varying, but nothing downstream reads it
    assert verdict(measured(**SINK)) == "sink" and verdict(measured(**SINK, **HARMLESS)) == "sink"
    assert verdict(measured(**SINK, **HURTS)) == "mixed"  # something reads its input-specific part
    assert verdict(measured(variance_share_cls=0.01, raw=0.5, value=0.1, decodable=0.0)) == "sink"  # parked
    # MiniLM-L6's layers 1-5 (the issue's measurement): near-constant and discounted, yet h_0 is decodable
    minilm = measured(variance_share_cls=0.001, raw=0.45, value=0.11, decodable=0.6, ablation_mean_others=-0.016,
                      ablation_mean_others_high=0.0)
    assert verdict(minilm) == "mixed"
    assert verdict(minilm, SinkThresholds(min_decodable=0.7)) == "sink"  # a stricter "decodable", from config
    # the cls probe's own loss is no evidence: a decoder's final h_0 is position 0's by construction
    assert verdict(measured(**SINK, ablation_mean_cls=-0.3)) == "sink"
    # a constant embedding-layer [CLS]: nothing attends yet (no attention measured), not massive
    assert verdict(measured(variance_share_cls=0.0, raw=np.nan, value=np.nan, decodable=0.0)) == "mixed"
    assert verdict(measured(decodable=0.0)) == "mixed"  # varies, but nothing a k-NN or probe can use
    assert verdict(measured(decodable=np.nan)) == "mixed"  # unmeasured counts as absent
    assert verdict({"variance_share_cls": 0.0, "massive_first": 1.0}) == "sink"  # missing keys count as absent


@pytest.mark.parametrize(("name", "key", "row", "verdicts"), [
    # (threshold, the evidence it reads, the rest of the row, (verdict exactly at it, verdict just below it))
    ("min_variance_share", "variance_share_cls", dict(massive_first=1.0, decodable=0.2), ("summary", "mixed")),
    ("min_variance_share", "variance_share_cls", dict(massive_first=1.0, decodable=0.0), ("mixed", "sink")),
    ("min_decodable", "decodable", dict(variance_share_cls=0.0, massive_first=1.0), ("mixed", "sink")),
    ("min_decodable", "decodable", dict(), ("summary", "mixed")),
    ("massive_share", "massive_first", dict(variance_share_cls=0.0, decodable=0.0), ("sink", "mixed")),
])
def test_each_threshold_holds_at_its_value_and_not_just_below(name, key, row, verdicts):
    thresholds = SinkThresholds()
    value = getattr(thresholds, name)
    assert verdict(measured(**row, **{key: value}), thresholds) == verdicts[0]
    assert verdict(measured(**row, **{key: np.nextafter(value, 0)}), thresholds) == verdicts[1]


def test_the_value_discount_and_the_harmful_ablation_at_their_boundaries():
    near_constant = dict(variance_share_cls=0.0, decodable=0.0, raw=0.4)  # 0.5 x 0.4 = 0.2 exactly
    assert verdict(measured(**near_constant, value=0.2)) == "mixed"  # not under half: not discounted
    assert verdict(measured(**near_constant, value=np.nextafter(0.2, 0))) == "sink"
    # a loss of exactly harmful_ablation with an interval below 0 hurts; an interval reaching 0 does not
    assert verdict(measured(**SINK, ablation_mean_others=-0.02, ablation_mean_others_high=-1e-9)) == "mixed"
    assert verdict(measured(**SINK, ablation_mean_others=-0.02, ablation_mean_others_high=0.0)) == "sink"
    assert verdict(measured(**SINK, ablation_mean_others=np.nextafter(-0.02, 0),
                            ablation_mean_others_high=-0.01)) == "sink"
    assert verdict(measured(ablation_mean_others=-0.02, ablation_mean_others_high=-1e-9)) == "summary"


def test_thresholds_are_fractions_named_as_the_command_line_and_the_callback_set_them():
    with pytest.raises(ValueError, match=r"min_decodable=1.5 \(--sink-min-decodable, or "
                                         r"hydra.callbacks.report.sink.min_decodable\) is out of range"):
        SinkThresholds(min_decodable=1.5)
    with pytest.raises(ValueError, match=r"unknown sink thresholds \['min_decodeable'\]: use min_variance_share"):
        SinkThresholds.of({"min_decodeable": 0.1})
    assert SinkThresholds.of(None) == SinkThresholds() and SinkThresholds.of({"min_decodable": 0.1}).min_decodable == 0.1


def test_the_sweep_callback_reads_its_sink_thresholds_from_the_hydra_config():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["+hydra.callbacks.report.sink.min_decodable=0.25"],
                      return_hydra_config=True)
    assert instantiate(cfg.hydra.callbacks.report).sink == SinkThresholds(min_decodable=0.25)
    with pytest.raises(ValueError, match="unknown sink thresholds"):
        MultirunReport(sink={"decodable": 0.25})


def diagnose_dirs(make_cfg, tmp_path) -> list:
    dirs = []
    for name in ("tiny-bert", "tiny-gpt2"):
        records = run_job(make_cfg(*SMALL, f"backbone={name}", "task.max_train_examples=64"), tmp_path / name)
        dirs.append(tmp_path / name)
        assert records
    return dirs


def test_the_sink_section_from_real_diagnose_and_probe_jobs(make_cfg, tmp_path):
    dirs = diagnose_dirs(make_cfg, tmp_path)
    for pooling in ("cls", "mean", "mean_nosink", "last"):  # the probes beside them, two seeds
        for seed in (0, 1):
            run_job(make_cfg("mode=probe", "task=mcid", "layer=all", "mode.max_epochs=2", "task.max_train_examples=64",
                             "backbone=tiny-gpt2", f"pooling={pooling}", f"seed={seed}"), tmp_path / f"p-{pooling}-{seed}")
            dirs.append(tmp_path / f"p-{pooling}-{seed}")
    report = build_report(dirs, tmp_path / "report")
    text = report.read_text()
    assert "## Sink or summary" in text and "mean-abl. Δothers" in text
    for figure in ("sink-tiny-bert-random-mcid.png", "sink-tiny-gpt2-random-mcid.png"):  # by file name (random init)
        assert f"![{figure}]({figure})" in text and f"`{figure}`:" in text and (tmp_path / "report" / figure).exists()
    table = pd.read_csv(tmp_path / "report" / "sink.csv")
    assert len(table) == 2 * 3 and set(table["verdict"]) <= {"summary", "sink", "mixed"}
    bert0 = table[(table["backbone"] == "tiny-bert") & (table["layer"] == 0)].iloc[0]
    assert bert0["variance_share_cls"] == 0 and bert0["verdict"] == "mixed"  # constant, but no sink
    gpt2 = table[table["backbone"] == "tiny-gpt2"]
    assert (gpt2["variance_share_cls"] == 0).all() and gpt2["raw"].isna().all()  # GPT-2: values not measured
    assert gpt2["probe_above_floor"].notna().all() and table[table["backbone"] == "tiny-bert"]["probe_above_floor"].isna().all()
    assert (gpt2["decodable"] == np.fmax(gpt2["knn_above_floor"], gpt2["probe_above_floor"])).all()
    ablated = table[table["ablation_mean_cls"].notna()]
    assert sorted(ablated["layer"]) == [1, 1]  # the only layer below the last of 2, for both backbones
    gpt2_ablated = ablated[ablated["backbone"] == "tiny-gpt2"]
    assert (gpt2_ablated[["ablation_mean_cls", "ablation_mean_others"]] == 0).all(axis=None)  # a constant h_0
    # the sink-free mean beside the plain mean, paired by seed, from the probe records
    runs = pd.read_csv(tmp_path / "report" / "runs.csv")
    final = runs[(runs["mode"] == "probe") & (runs["layer"] == 2)].pivot(index="seed", columns="pooling", values="test/acc")
    difference = 100 * (final["mean_nosink"] - final["mean"]).mean()
    assert "### The sink-free mean" in text and f"{difference:+.1f} points" in text and "paired over 2 seeds" in text
    # thresholds from the command line: nothing is 100 points above the floor, so nothing is a summary
    strict = tmp_path / "strict"
    assert main([*map(str, dirs), "--out", str(strict), "--sink-min-decodable", "1"]) == 0
    assert "summary" not in set(pd.read_csv(strict / "sink.csv")["verdict"])
    assert "linear probe is 100 accuracy points above the majority floor" in (strict / "REPORT.md").read_text()


def test_a_threshold_out_of_range_is_refused_by_the_command_line_naming_its_option(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--out", str(tmp_path / "out"), "--sink-harmful-ablation", "2"])
    assert "harmful_ablation=2.0 (--sink-harmful-ablation, or hydra.callbacks.report.sink.harmful_ablation) is " \
           "out of range: a fraction in [0, 1]" in capsys.readouterr().err


def arm_rows(verdicts: dict[str, list[str]], shares: dict[str, list[float]], decodable: dict[str, list[float]]):
    """Final-layer (2 of 2) rows of two arms over pretraining seeds 0..n-1, as sink_table gives them."""
    return pd.DataFrame([{"arm": arm, "backbone_seed": float(seed), "task": "mcid", "layer": 2, "num_layers": 2,
                          "verdict": verdict_, "variance_share_cls": shares[arm][seed],
                          "decodable": decodable[arm][seed]}
                         for arm, column in verdicts.items() for seed, verdict_ in enumerate(column)])


def test_the_nsp_question_is_answered_paired_by_pretraining_seed_and_as_a_null_result_when_it_is_one():
    null = nsp_lines(arm_rows({"mlm_pairs": ["mixed", "summary", "mixed"], "mlm_nsp": ["mixed", "mixed", "summary"]},
                              {"mlm_pairs": [0.10, 0.20, 0.30], "mlm_nsp": [0.12, 0.17, 0.33]},
                              {"mlm_pairs": [0.1, 0.2, 0.1], "mlm_nsp": [0.2, 0.1, 0.1]}))
    text = " ".join(null)
    differences = np.array([0.02, -0.03, 0.03])  # mlm_nsp − mlm_pairs per pretraining seed, by hand
    half = stats.t.ppf(0.975, 2) * differences.std(ddof=1) / np.sqrt(3)
    assert f"variance share by {100 * differences.mean():+.1f} points ([{100 * (differences.mean() - half):+.1f}, " \
           f"{100 * (differences.mean() + half):+.1f}])" in text
    assert "p0: mixed → mixed; p1: summary → mixed; p2: mixed → summary" in text
    assert "**null result**: there is no sink to turn" in text and "n = 3 pretraining seeds" in text
    turned = nsp_lines(arm_rows({"mlm_pairs": ["sink"] * 3, "mlm_nsp": ["summary"] * 3},
                                {"mlm_pairs": [0.01, 0.0, 0.02], "mlm_nsp": [0.3, 0.35, 0.4]},
                                {"mlm_pairs": [0.0, 0.01, 0.0], "mlm_nsp": [0.3, 0.2, 0.25]}))
    assert "yes: h_0 turns from sink to summary in every pretraining seed" in " ".join(turned)
    assert nsp_lines(arm_rows({"mlm_pairs": ["sink"]}, {"mlm_pairs": [0.0]}, {"mlm_pairs": [0.0]})) == []  # one arm
