"""The feature cache: encoded once, equal to fresh pooling, never half-read, computed once under contention."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from poolbench import encoding, features
from poolbench.backbones import forward_hidden_states, load_backbone
from poolbench.jobs import run_job as run, typed_config
from poolbench.data import tokenize
from poolbench.encoding import encoding_plan
from poolbench.features import (KEYED_POOLINGS, FeatureSet, ensure_features, feature_identity, features_for,
                                features_root)
from poolbench.pooling import BASE_POOLINGS, POOLINGS, TOKEN_POOLINGS, pool, special_mask, special_token_ids
from poolbench.tasks import load_task

PROBE = ["mode=probe", "task=mcid", "logger=none", "mode.max_epochs=3"]


@pytest.fixture
def count_forwards(monkeypatch):
    """Counts the backbone forward passes of the feature encoder."""
    calls = []

    def counted(model, batch):
        calls.append(len(batch["input_ids"]))
        return forward_hidden_states(model, batch)

    monkeypatch.setattr(encoding, "forward_hidden_states", counted)
    return calls


@pytest.mark.parametrize("backbone", ["tiny-bert", "tiny-gpt2"])  # right- and left-padding tokenizers
def test_cached_vectors_equal_freshly_pooled_ones(make_cfg, features_of, tmp_path, backbone):
    cfg = make_cfg(*PROBE, f"backbone={backbone}", f"paths.cache_dir={tmp_path / 'cache'}")
    found, encode_s = features_of(cfg)
    assert encode_s > 0 and found.num_layers == 2
    # Fresh: one example at a time, so no padding at all, against the cache's padded batches.
    backbone_ = load_backbone(cfg.backbone, cfg.paths.cache_dir)
    task = load_task(cfg.task, Path(cfg.paths.cache_dir))
    split = tokenize(task, backbone_.tokenizer, cfg.backbone.max_length)["validation"]
    rows = [0, 7, len(split) - 1]
    assert found.poolings == list(TOKEN_POOLINGS)  # the tokenizer adds [CLS] and [SEP]: every stored pooling
    for pooling in POOLINGS:
        layers = range(1, found.num_layers + 1) if pooling == "first_last_avg" else range(found.num_layers + 1)
        cached = found.vectors("validation", pooling, layers, rows=rows)
        for i, row in enumerate(rows):
            example = split[row]
            batch = {k: torch.tensor([example[k]]) for k in ("input_ids", "attention_mask", "token_type_ids")
                     if k in example}
            with torch.inference_mode():
                states = forward_hidden_states(backbone_.model, batch)
            special = special_mask(special_token_ids(backbone_.tokenizer), batch["input_ids"], batch["attention_mask"])
            fresh = torch.stack([pool(states[layer], batch["attention_mask"], pooling, special=special,
                                      first_layer=states[1])[0] for layer in layers])
            torch.testing.assert_close(cached[:, i], fresh, atol=1e-5, rtol=1e-5)
    assert found.labels("validation").tolist() == split["label"] and found.ids("validation").tolist() == split["id"]


def test_another_pooling_layer_or_seed_never_calls_the_backbone(make_cfg, tmp_path, count_forwards):
    # A cache of its own: with the session's, another test may have encoded tiny-bert x mcid already.
    probe = [*PROBE, "backbone=tiny-bert", f"paths.cache_dir={tmp_path / 'cache'}"]
    first = run(make_cfg(*probe, "pooling=mean", "layer=all", "seed=0"), tmp_path / "a")
    assert len(first) == 3 and sum(count_forwards) == 1198 + 170 + 331  # every mcid example, once
    count_forwards.clear()
    for n, overrides in enumerate([("pooling=cls", "layer=1", "seed=1"), ("pooling=max", "layer=all", "seed=2"),
                                   ("pooling=last", "layer=-1", "seed=0")]):
        records = run(make_cfg(*probe, *overrides), tmp_path / str(n))
        assert records and all(r.status == "finished" for r in records)
    assert count_forwards == []
    assert {r.features for r in first} == {records[0].features}


@pytest.mark.integration
def test_a_packaged_backbone_with_cached_features_is_not_even_loaded(make_cfg, tmp_path, monkeypatch):
    overrides = [*PROBE, "backbone=minilm-l6", f"paths.cache_dir={tmp_path / 'cache'}"]
    run(make_cfg(*overrides, "pooling=mean", "layer=all"), tmp_path / "a")
    loads = []
    monkeypatch.setattr(features, "load_backbone", lambda *a, **k: loads.append(a) or load_backbone(*a, **k))
    [record] = run(make_cfg(*overrides, "pooling=cls", "seed=3"), tmp_path / "b")
    assert loads == [] and record.factors.layer == 6 and record.timings["encode_s"] == 0


def test_an_older_entry_gains_the_new_readouts_in_one_pass_and_keeps_its_key_and_arrays(make_cfg, tmp_path,
                                                                                           count_forwards):
    cache = tmp_path / "cache"
    config = typed_config(make_cfg(*PROBE, "backbone=tiny-bert", f"paths.cache_dir={cache}"))
    backbone, task = load_backbone(config.backbone, cache), load_task(config.task, cache)
    # An entry as written before these readouts existed: the four first poolings only.
    old, _ = ensure_features(backbone, task, config.backbone, 2048, cache, poolings=BASE_POOLINGS)
    assert feature_identity(config.backbone, backbone, task)["poolings"] == list(KEYED_POOLINGS) == list(BASE_POOLINGS)

    def fingerprints() -> dict[str, tuple]:
        return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
                for p in old.directory.iterdir() if p.name != features.MANIFEST and p.name.endswith((".npy", ".npz"))}

    before = fingerprints()
    count_forwards.clear()
    found, encode_s = features_for(config.backbone, config.task, cache, 2048, pooling="weighted_mean")
    assert found.directory == old.directory and found.key == old.key and encode_s > 0
    assert found.poolings == list(TOKEN_POOLINGS)  # every missing one, from the same pass
    assert sum(count_forwards) == 1198 + 170 + 331  # one pass: every mcid example once
    assert {name: v for name, v in fingerprints().items() if name in before} == before  # untouched
    assert not [p.name for p in found.directory.iterdir() if p.name.startswith(".")]  # no partial file left
    # The added vectors are those a new entry stores.
    new, _ = ensure_features(backbone, task, config.backbone, 2048, tmp_path / "fresh")
    for pooling in TOKEN_POOLINGS:
        for split in ("train", "test"):
            torch.testing.assert_close(found.vectors(split, pooling), new.vectors(split, pooling))
    count_forwards.clear()
    features_for(config.backbone, config.task, cache, 2048, pooling="max_nospecial")  # nothing left to add
    assert count_forwards == []


def test_the_encoding_plan_keeps_padding_below_five_percent():
    lengths = torch.randint(3, 60, (5000,)).numpy()
    plan = encoding_plan(lengths, max_tokens=4096)
    assert sorted(i for batch in plan for i in batch) == list(range(5000))
    computed = sum(max(lengths[b]) * len(b) for b in plan)
    assert lengths.sum() / computed >= 0.95
    assert all(max(lengths[b]) * len(b) <= 4096 for b in plan)


# A worker process: encode mcid with tiny-bert into CACHE, slowly (so that others overlap it),
# print how long it spent encoding. With STALL set, it stops forever after its first batch.
WORKER = """
import sys, time
from hydra import compose, initialize_config_dir
from poolbench import encoding, features
from poolbench.config import CONF_DIR, register
from poolbench.jobs import typed_config
register()

cache, marker, stall = sys.argv[1], sys.argv[2], sys.argv[3] == "stall"
forward = encoding.forward_hidden_states
def slow(model, batch):
    open(marker, "a").close()
    if stall:
        time.sleep(600)
    time.sleep(0.05)
    return forward(model, batch)
encoding.forward_hidden_states = slow
with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
    cfg = compose("config", overrides=["mode=probe", "task=mcid", "backbone=tiny-bert", f"paths.cache_dir={cache}"])
config = typed_config(cfg)
found, encode_s = features.features_for(config.backbone, config.task, cache, config.mode.encode_batch_tokens)
print(found.key, encode_s)
"""


def _worker(cache: Path, marker: Path, stall: bool = False) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WORKER, str(cache), str(marker), "stall" if stall else "go"],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def _wait_for(path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def test_a_killed_writer_leaves_no_readable_entry(make_cfg, tmp_path):
    cache = tmp_path / "cache"
    writer = _worker(cache, tmp_path / "started", stall=True)
    _wait_for(tmp_path / "started")
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    directories = [p.name for p in features_root(cache).iterdir() if p.is_dir()]
    assert len(directories) == 1 and ".tmp-" in directories[0]  # what it left is never read: no entry
    # The next job encodes afresh and publishes a whole entry.
    config = typed_config(make_cfg(*PROBE, "backbone=tiny-bert", f"paths.cache_dir={cache}"))
    backbone = load_backbone(config.backbone, cache)
    found, encode_s = ensure_features(backbone, load_task(config.task, cache), config.backbone, 16384, cache)
    assert encode_s > 0 and FeatureSet.open(found.directory).size("test") == 331


def test_two_processes_asking_for_the_same_features_compute_them_once(tmp_path):
    cache = tmp_path / "cache"
    first = _worker(cache, tmp_path / "first")
    _wait_for(tmp_path / "first")  # the first is encoding now; the second arrives while it does
    second = _worker(cache, tmp_path / "second")
    outputs = [p.communicate(timeout=300)[0].split() for p in (first, second)]
    assert first.returncode == second.returncode == 0
    assert outputs[0][0] == outputs[1][0]  # the same entry
    assert float(outputs[0][1]) > 0 and float(outputs[1][1]) == 0  # computed by the first only
    assert not (tmp_path / "second").exists()  # the second never ran the backbone
