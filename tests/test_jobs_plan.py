"""A job's plan (jobs.derive_plan): one derivation for the sweep's plan (plan_job) and the job (run_job).

Known answers by counting the real derivation's calls: a job derives its plan once from what is on
disk, and once more (with loading allowed) only where that plan was unknown; the plan names exactly
the runs the job writes. The unit is one job. Also the one reader of a backbone's recorded facts.
"""

from __future__ import annotations

import json

from omegaconf import OmegaConf

from poolbench import jobs
from poolbench.backbones import BackboneFacts, backbone_facts, core, known_facts, load_backbone
from test_backbones import config

PROBE = ["mode=probe", "backbone=tiny-bert", "task=mcid", "layer=all", "mode.max_epochs=1", "logger=none"]


def test_a_job_acts_on_the_plan_it_derived_and_the_plan_names_its_runs(make_cfg, tmp_path, count_calls):
    """In a fresh cache tiny-bert's tokenizer was never loaded, so a mean_nospecial job's plan from disk is
    unknown: the job derives it again after looking at the backbone (2 calls), and then plan_job names
    the runs the job wrote (layers 0-2). Re-launched, the finished job derives its plan once and reuses
    every record; a job of another seed, whose backbone is now known, derives it once and runs."""
    calls = count_calls(jobs, "derive_plan")
    cfg = make_cfg(*PROBE, "pooling=mean_nospecial", f"paths.cache_dir={tmp_path / 'cache'}")
    assert jobs.plan_job(cfg).unknown == "backbone tiny-bert's tokenizer was never loaded here" and len(calls) == 1
    records = jobs.run_job(cfg, tmp_path / "first")
    assert len(calls) == 3 and [(r.status, r.factors.layer) for r in records] == [("finished", 0), ("finished", 1),
                                                                                    ("finished", 2)]
    plan = jobs.plan_job(cfg)
    assert plan.layers == (0, 1, 2) and plan.run_ids == tuple(r.run_id for r in records) and len(calls) == 4
    again = jobs.run_job(cfg, tmp_path / "again")
    assert len(calls) == 5 and [r.run_id for r in again] == list(plan.run_ids)
    other = jobs.run_job(make_cfg(*PROBE, "pooling=mean_nospecial", "seed=1", f"paths.cache_dir={tmp_path / 'cache'}"),
                         tmp_path / "other")
    assert len(calls) == 6 and len(other) == 3 and not {r.run_id for r in other} & set(plan.run_ids)


def test_the_facts_of_a_load_are_read_back_and_completed_by_one_load_where_an_older_release_lacks_one(
        tmp_path, count_calls):
    """Known answer: tiny-bert's tokenizer (MiniLM's WordPiece) adds [CLS] and [SEP]; its facts are read back
    as recorded. Facts written before `adds_special_tokens` was recorded read as None, and backbone_facts
    completes them with one load (then none)."""
    cfg = OmegaConf.to_object(config("tiny-bert"))
    loaded = load_backbone(cfg, tmp_path)
    expected = BackboneFacts(params=sum(p.numel() for p in loaded.model.parameters()), layers=2, hidden_size=32,
                             adds_special_tokens=True)
    assert known_facts(cfg, tmp_path) == expected
    path = core._facts_path("tiny", "bert", tmp_path)
    older = {key: value for key, value in json.loads(path.read_text()).items() if key != "adds_special_tokens"}
    path.write_text(json.dumps(older))
    loads = count_calls(core, "_load")
    assert known_facts(cfg, tmp_path).adds_special_tokens is None
    assert backbone_facts(cfg, tmp_path) == expected and len(loads) == 1
    assert backbone_facts(cfg, tmp_path) == expected and len(loads) == 1
