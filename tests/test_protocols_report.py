"""The report's Protocols section: protocol records stay out of the main tables and tests, each
protocol gets its table / CSV / figure, and a report without them is unchanged. Unit: one report
of a small study (tiny backbone, mcid, cls, one seed, every protocol)."""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import compose_config
from poolbench.jobs import run_job as run
from poolbench.report import build_report

PROBE = ["mode=probe", "task=mcid", "logger=none", "backbone=tiny-bert", "mode.max_epochs=3", "layer=all",
         "mode.few_shot.repeats=2", "mode.learning_curve.per_label=[8]", "mode.learning_curve.fractions=[1.0]"]
PROTOCOLS = ("few_shot", "learning_curve", "mdl", "control")


@pytest.fixture(scope="module")
def study(tmp_path_factory, request):
    """Records of the full probe and of every protocol for cls, in one study dir."""
    root = tmp_path_factory.mktemp("study")
    make_cfg = request.getfixturevalue("make_cfg_module")
    run(make_cfg(*PROBE, "pooling=cls"), root / "full")
    for protocol in PROTOCOLS:
        run(make_cfg(*PROBE, "pooling=cls", f"mode.protocol={protocol}"), root / protocol)
    return root


@pytest.fixture(scope="module")
def make_cfg_module(tmp_path_factory, cache_dir):
    """conftest's make_cfg for a module-scoped study: its records are shared by the tests below."""
    output_root = tmp_path_factory.mktemp("outputs")
    return lambda *overrides: compose_config(output_root, cache_dir, *overrides)


def test_protocol_records_stay_out_of_the_main_tables(study, tmp_path):
    report = build_report([study], tmp_path / "report").read_text()
    runs = pd.read_csv(tmp_path / "report" / "runs.csv")
    assert len(runs) == 3  # the full probe's records only: one per layer
    assert "| probe protocol runs (section Protocols only) | 12 |" in report
    few = pd.read_csv(tmp_path / "report" / "few_shot.csv")
    summary = pd.read_csv(tmp_path / "report" / "summary.csv")
    merged = few.merge(summary, on=["pooling", "layer"])
    assert len(few) == 3 and (merged["full_acc_mean"] == merged["acc_mean"]).all()  # beside the full probe's own
    curve = pd.read_csv(tmp_path / "report" / "learning_curve.csv")
    assert sorted(curve["size"].unique()) == ["fraction_1", "per_label_8"] and len(curve) == 6
    mdl = pd.read_csv(tmp_path / "report" / "mdl.csv")
    selectivity = pd.read_csv(tmp_path / "report" / "selectivity.csv")
    assert len(mdl) == len(selectivity) == 3
    assert (selectivity["selectivity_mean"] - (selectivity["test/acc_mean"] - selectivity["control/test/acc_mean"])
            ).abs().max() < 1e-9
    for section in ("### Few-shot", "### Minimum description length", "### Selectivity", "learning_curves.png",
                    "mdl.png", "selectivity.png"):
        assert section in report
    assert all((tmp_path / "report" / name).exists() for name in ("learning_curves.png", "mdl.png", "selectivity.png"))


def test_a_report_without_protocol_records_has_no_protocols_section(study, tmp_path):
    report = build_report([study / "full"], tmp_path / "report").read_text()
    assert "Protocols" not in report and "protocol runs" not in report
    assert not (tmp_path / "report" / "few_shot.csv").exists()


def test_a_study_of_protocols_alone_gets_their_section(study, tmp_path):
    report = build_report([study / "mdl", study / "control"], tmp_path / "report").read_text()
    assert "### Minimum description length" in report and "### Selectivity" in report
    assert "| analysed (finished) | 0 |" in report
