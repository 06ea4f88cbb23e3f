"""Probe protocols: few-shot subsamples (seeded, stratified, train only, MTEB's rule), the online
code against a hand-computed case, control labels (a function of the first content word with the
task's label distribution), and one small job per protocol on the tiny backbone and mcid."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from poolbench.config import ConfigError, Job, Protocol
from poolbench.jobs import probe_identity, run_job as run, typed_config
from poolbench.protocols.control import control_function, control_labels, first_content_word
from poolbench.protocols.curve import curve_subsets
from poolbench.protocols.few_shot import few_shot, subsamples
from poolbench.protocols.mdl import block_ends, online_codelength
from poolbench.protocols.sampling import per_label_rows
from poolbench.records import run_identity
from poolbench.tasks import load_task
from poolbench.validation import validate

PROBE = ["mode=probe", "task=mcid", "logger=none", "backbone=tiny-bert", "mode.max_epochs=5", "layer=all"]


def mteb_undersample(labels: np.ndarray, samples_per_label: int, shuffled: np.ndarray) -> list[int]:
    """MTEB's AbsTaskClassification._undersample_data, given its shuffled positions: a reference."""
    kept, counter = [], defaultdict(int)
    for i in shuffled:
        if counter[labels[i]] < samples_per_label:
            kept.append(i)
            counter[labels[i]] += 1
    return sorted(kept)


# ---------------------------------------------------------------------------------------------
# Few-shot subsamples. Unit: one subsample of a label array.

def test_per_label_rows_is_mtebs_undersampling_seeded_and_stratified():
    labels = np.random.default_rng(0).choice(5, size=300, p=[0.4, 0.3, 0.2, 0.08, 0.02])
    rows = per_label_rows(labels, 8, np.random.default_rng(7))
    assert rows.tolist() == mteb_undersample(labels, 8, np.random.default_rng(7).permutation(len(labels)))
    counts = Counter(labels[rows].tolist())
    assert counts == {c: min(8, n) for c, n in Counter(labels.tolist()).items()}  # a rare label gives all it has
    assert per_label_rows(labels, 8, np.random.default_rng(7)).tolist() == rows.tolist()
    assert per_label_rows(labels, 8, np.random.default_rng(8)).tolist() != rows.tolist()


def test_few_shot_repeats_differ_and_every_seed_draws_its_own():
    labels = np.repeat(np.arange(4), 50)
    draws = subsamples(labels, 8, 10, seed=0)
    assert len({tuple(d) for d in draws}) == 10 and all(len(d) == 32 for d in draws)
    assert [d.tolist() for d in subsamples(labels, 8, 10, seed=0)] == [d.tolist() for d in draws]
    assert subsamples(labels, 8, 10, seed=1)[0].tolist() != draws[0].tolist()


def test_learning_curve_sizes_are_nested_and_stratified():
    labels = np.random.default_rng(1).choice(4, size=400, p=[0.4, 0.3, 0.2, 0.1])
    subsets = curve_subsets(labels, [8, 16], [0.1, 1.0], seed=3)
    assert set(subsets["per_label_8"]) < set(subsets["per_label_16"]) and set(subsets["fraction_0.1"]) < set(
        subsets["fraction_1"])
    assert subsets["fraction_1"].tolist() == list(range(400))
    assert Counter(labels[subsets["per_label_16"]].tolist()) == dict.fromkeys(range(4), 16)
    tenth = Counter(labels[subsets["fraction_0.1"]].tolist())
    assert sum(tenth.values()) == 40 and all(abs(tenth[c] - n / 10) < 1 for c, n in Counter(labels.tolist()).items())


def test_few_shot_never_reads_test_to_choose(make_cfg, features_of, monkeypatch):
    # Unit: one few-shot job (3 layers x 3 subsamples). Test labels shuffled: same fits (same
    # validation scores), other test scores.
    cfg = make_cfg(*PROBE, "mode.protocol=few_shot", "mode.few_shot.repeats=3")
    found, _ = features_of(cfg)
    job = _job(cfg)
    first = few_shot(found, job)
    real_labels = found.labels
    monkeypatch.setattr(found, "labels", lambda split: real_labels(split)[torch.randperm(
        found.size(split), generator=torch.Generator().manual_seed(0))] if split == "test" else real_labels(split))
    second = few_shot(found, job)
    assert [r.metrics["val/acc"] for r in first] == [r.metrics["val/acc"] for r in second]
    assert [r.metrics["test/acc"] for r in first] != [r.metrics["test/acc"] for r in second]


# ---------------------------------------------------------------------------------------------
# The online code

def test_block_ends_follow_the_papers_percentages():
    assert block_ends(2000, [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.25, 12.5, 25, 50, 100]) == [
        2, 4, 8, 16, 32, 64, 125, 250, 500, 1000, 2000]
    assert block_ends(100, [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.25, 12.5, 25, 50, 100]) == [1, 2, 3, 6, 12, 25, 50, 100]


def test_online_codelength_against_a_hand_computed_case():
    # 10 rows, K = 4, blocks end at 2, 5, 10. By hand: first block 2 x log2 4 = 4 bits; rows 2-4
    # coded with p = 1/2, 1/4, 1 -> 1 + 2 + 0 = 3 bits; rows 5-9 with p = 1/2 each -> 5 bits.
    # Online 12 bits, uniform 10 x 2 = 20 bits, compression 20 / 12.
    p = torch.tensor([0.0, 0.0, 0.5, 0.25, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5])
    code = online_codelength([2, 5, 10], 4, lambda start, end: torch.log2(p[start:end]))
    assert code["mdl/first_block_bits"] == 4
    assert code["mdl/online_bits"] == pytest.approx(12)
    assert code["mdl/uniform_bits"] == 20
    assert code["mdl/compression"] == pytest.approx(20 / 12)


# ---------------------------------------------------------------------------------------------
# Control labels

def test_first_content_word():
    assert first_content_word("What is the COVID-19 vaccine?") == "covid"
    assert first_content_word("Is it the one?") == "is"  # all stop words: the first word
    assert first_content_word("??? 42") == ""
    assert first_content_word("Don't panic") == "don't"


def test_control_labels_keep_the_label_distribution_and_follow_the_first_word(make_cfg, features_of):
    # Unit: the control task of mcid (1,699 texts, every split), two control seeds.
    cfg = make_cfg(*PROBE, "mode.protocol=control")
    found, _ = features_of(cfg)
    job = _job(cfg)
    control, n_types = control_labels(found, job)
    task = torch.cat([found.labels(split) for split in ("train", "validation", "test")])
    mapped = torch.cat([control[split] for split in ("train", "validation", "test")])
    texts = load_task(job.task, job.cache_dir).splits
    words = [first_content_word(texts[split]["text"][i]) for split in ("train", "validation", "test")
             for i in found.ids(split).tolist()]
    largest_type = max(Counter(words).values())
    assert n_types == len(set(words)) > 50
    task_counts, control_counts = torch.bincount(task, minlength=16), torch.bincount(mapped, minlength=16)
    assert (task_counts - control_counts).abs().max() <= largest_type  # the contract
    assert torch.equal(task_counts, control_counts)  # mcid's 504 first words are small enough to fill labels exactly
    by_word = defaultdict(set)
    for word, label in zip(words, mapped.tolist()):
        by_word[word].add(label)
    assert all(len(labels) == 1 for labels in by_word.values())  # a function of the first word
    other = control_function(words, task.numpy(), 16, seed=1)
    assert sum(other[w] != by_word[w].copy().pop() for w in by_word) > len(by_word) / 2  # another seed, another task


def test_control_function_exact_when_types_fit():
    # Types of sizes that can fill the labels exactly: the control counts equal the task's.
    words = ["a"] * 6 + ["b"] * 4 + ["c"] * 3 + ["d"] * 2 + ["e"]
    labels = np.array([0] * 10 + [1] * 6)
    for seed in range(5):
        mapping = control_function(words, labels, 2, seed)
        assert Counter(mapping[w] for w in words) == {0: 10, 1: 6}


# ---------------------------------------------------------------------------------------------
# Config and identity

def test_a_protocol_enters_the_identity_only_when_not_full(make_cfg):
    full = typed_config(make_cfg(*PROBE))
    assert "protocol" not in probe_identity(full, 2)["probe"]
    assert run_identity(probe_identity(full, 2)) == run_identity(
        probe_identity(typed_config(make_cfg(*PROBE, "mode.few_shot.per_label=4", "mode.mdl.blocks=[50,100]")), 2))
    few = typed_config(make_cfg(*PROBE, "mode.protocol=few_shot"))
    fewer = typed_config(make_cfg(*PROBE, "mode.protocol=few_shot", "mode.few_shot.per_label=4"))
    ids = {run_identity(probe_identity(c, 2)) for c in (full, few, fewer)}
    assert len(ids) == 3
    # few_shot trains no AdamW head: the head settings are not its identity.
    assert run_identity(probe_identity(few, 2)) == run_identity(
        probe_identity(typed_config(make_cfg(*PROBE, "mode.protocol=few_shot", "mode.lr=0.5")), 2))


@pytest.mark.parametrize("override, key", [
    ("mode.few_shot.per_label=0", "mode.few_shot.per_label"),
    ("mode.few_shot.repeats=0", "mode.few_shot.repeats"),
    ("mode.learning_curve.fractions=[0.1,1.5]", "mode.learning_curve.fractions"),
    ("mode.learning_curve.per_label=[0]", "mode.learning_curve.per_label"),
    ("mode.mdl.blocks=[10,5,100]", "mode.mdl.blocks"),
    ("mode.mdl.blocks=[10,50]", "mode.mdl.blocks"),
    ("mode.control.seed=-1", "mode.control.seed"),
])
def test_out_of_range_protocol_settings_name_the_key(make_cfg, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        make_cfg(*PROBE, "mode.protocol=mdl", override)


# ---------------------------------------------------------------------------------------------
# One job per protocol, end to end (tiny backbone, mcid, 3 layers). Unit: one job.

def test_each_protocol_job_writes_one_record_per_layer(make_cfg, tmp_path):
    full = run(make_cfg(*PROBE, "pooling=cls"), tmp_path / "full")
    records = {protocol: run(make_cfg(*PROBE, "pooling=cls", f"mode.protocol={protocol.value}", "mode.few_shot.repeats=3"),
                             tmp_path / protocol.value)
               for protocol in Protocol if protocol != Protocol.full}
    for protocol, layers in records.items():
        assert [r.factors.layer for r in layers] == [0, 1, 2] and all(r.finished for r in layers)
        assert {r.run_id for r in layers}.isdisjoint(r.run_id for r in full)
        assert all(r.config["mode"]["protocol"] == protocol.value for r in layers)
    for i, reference in enumerate(full):
        # Learning curve at 100%, MDL's all-rows head and the control's task head are the full probe.
        for protocol in (Protocol.learning_curve, Protocol.mdl, Protocol.control):
            assert records[protocol][i].metrics["test/acc"] == reference.metrics["test/acc"]
        mdl = records[Protocol.mdl][i].metrics
        assert mdl["mdl/uniform_bits"] == pytest.approx(1198 * math.log2(16))
        assert mdl["mdl/compression"] == pytest.approx(mdl["mdl/uniform_bits"] / mdl["mdl/online_bits"])
        control = records[Protocol.control][i].metrics
        assert control["selectivity"] == pytest.approx(control["test/acc"] - control["control/test/acc"])
        few = records[Protocol.few_shot][i].metrics
        assert few["n_train"] == 16 * 8 and 0 <= few["test/acc"] <= 1
        curve = records[Protocol.learning_curve][i].metrics
        assert [curve[f"curve/per_label_{n}/n_train"] for n in (8, 16, 32, 64)] == [128, 256, 512, 1024]
    # The first layer's h_0 of the tiny BERT is one vector for every text: no first word can be read.
    assert records[Protocol.control][0].metrics["control/test/acc"] <= records[Protocol.control][0].metrics[
        "control/test_majority"] + 1e-9


def _job(cfg) -> Job:
    config = typed_config(cfg)
    validate(config)
    return Job(backbone=config.backbone, task=config.task, pooling=config.pooling.name.value, mode=config.mode,
               trainer=config.trainer, seed=config.seed, layers=(0, 1, 2), cache_dir=Path(config.paths.cache_dir),
               output_dir=Path("."))
