"""Real Hydra multiruns through the installed `poolbench` script, and a real W&B offline run."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from poolbench.records import find_records

TINY = ["backbone=tiny-bert", "task=mcid", "trainer=smoke", "task.max_train_examples=64"]


def test_a_multirun_of_the_four_poolings_leaves_four_records_and_a_report(poolbench_cli, tmp_path):
    poolbench_cli("-m", "pooling=cls,mean,max,last", "logger=csv", "study=sweeptest", *TINY)
    [sweep_dir] = (tmp_path / "outputs" / "sweeptest").iterdir()
    records = list(find_records(sweep_dir))
    assert sorted(r.factors.pooling for r in records) == ["cls", "last", "max", "mean"]
    assert len({r.run_id for r in records}) == 4 and all(r.status == "finished" for r in records)
    report = (sweep_dir / "report" / "REPORT.md").read_text()
    assert "tiny-bert" in report and "mcid" in report
    summary = pd.read_csv(sweep_dir / "report" / "summary.csv")
    assert sorted(summary["pooling"]) == ["cls", "last", "max", "mean"]

    # Re-launching the same sweep recomputes nothing: every job reuses its finished record.
    relaunch = poolbench_cli("-m", "pooling=cls,mean,max,last", "logger=csv", "study=sweeptest", *TINY)
    assert relaunch.stdout.count("already finished") == 4, relaunch.stdout[-2000:]


def wandb_records(path: Path) -> list:
    """The protobuf records of an offline run's .wandb file. wandb >= 0.19 writes config and summary
    only there (a LevelDB-style log: a 7-byte header, 32 KiB blocks, chunks of
    crc32 | length | type | payload) and no longer ships a Python reader, so the test reads it."""
    from wandb.proto import wandb_internal_pb2

    data, block, position, records, pending = path.read_bytes(), 32768, 7, [], b""
    assert data[:4] == b":W&B"
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a chunk header is padding
            position += block - position % block
            continue
        length, kind = int.from_bytes(data[position + 4:position + 6], "little"), data[position + 6]
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk: a record is complete
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def test_a_wandb_offline_run_holds_the_resolved_config_and_summary_metrics(poolbench_cli, tmp_path):
    poolbench_cli("pooling=max", "study=wandbtest", *TINY)
    [run_dir] = (tmp_path / "outputs" / "runs").iterdir()
    [wandb_file] = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    records = wandb_records(wandb_file)
    [run] = [r.run for r in records if r.HasField("run")]
    updates = [run.config.update] + [r.config.update for r in records if r.HasField("config")]
    config = {item.key: json.loads(item.value_json) for update in updates for item in update}
    # Summary updates name their metric by `nested_key`; later updates overwrite earlier ones.
    summary = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
               for r in records if r.HasField("summary") for item in r.summary.update}

    assert config["pooling"] == "max" and config["task"] == "mcid"  # factors: top level, plain strings
    assert config["config"]["pooling"] == {"name": "max", "template": None}  # the resolved config, enums as strings
    assert config["config"]["backbone"]["family"] == "encoder_nsp"
    assert run.run_group == "wandbtest" and "pooling=max" in run.tags
    record = json.loads((run_dir / "records" / "max-L2-s0" / "record.json").read_text())
    assert summary["test/acc"] == pytest.approx(record["metrics"]["test/acc"])
    assert summary["val/acc"] == {"max": pytest.approx(record["metrics"]["val/acc"])}  # define_metric(summary="max")
    assert "train/loss" in summary


def test_a_probe_sweep_shares_one_encoding_and_writes_a_record_per_pooling_layer_and_seed(poolbench_cli, tmp_path):
    sweep = ["-m", "mode=probe", "pooling=cls,mean", "layer=all", "seed=0,1", "logger=none", "study=probetest",
             "backbone=tiny-bert", "task=mcid", "mode.max_epochs=3", f"paths.cache_dir={tmp_path / 'cache'}"]
    first = poolbench_cli(*sweep)
    assert first.stdout.count("encoded in") == 1  # one encoding for the four jobs
    [sweep_dir] = (tmp_path / "outputs" / "probetest").iterdir()
    records = list(find_records(sweep_dir))
    keys = sorted((r.factors.pooling, r.factors.layer, r.factors.seed) for r in records)
    assert keys == sorted((p, layer, s) for p in ("cls", "mean") for layer in (0, 1, 2) for s in (0, 1))
    assert len({r.run_id for r in records}) == 12
    assert (sweep_dir / "report" / "layers.png").exists()
    comparisons = pd.read_csv(sweep_dir / "report" / "comparisons.csv")
    assert set(comparisons["layer"]) == {0, 1, 2}

    relaunch = poolbench_cli(*sweep)
    assert relaunch.stdout.count("reusing finished record") == 12 and "encoded in" not in relaunch.stdout


def test_the_catalog_lists_backbones_and_tasks_with_what_is_installed(tmp_path):
    script = Path(sys.executable).with_name("poolbench-catalog")
    result = subprocess.run([str(script), "--quick", "--cache-dir", str(tmp_path)], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    for name in ("minilm-l6", "smollm2-135m", "bert-base-uncased", "banking77", "nsp_bbc", "sst2"):
        assert name in result.stdout
    assert "encoder_nsp" in result.stdout and "decoder" in result.stdout
    # Every mode and readout a job can run, each with what its config says it is.
    for name in ("diagnose", "probe", "finetune", "attention", "mean_nosink", "prompt_last", "label_words",
                 "weighted_mean", "cls_mean", "first_last_avg", "pooler"):
        assert name in result.stdout
    assert "h_0: the final state of the first real token" in result.stdout


def test_an_out_of_range_value_stops_before_any_work_with_a_one_line_reason(poolbench_cli, tmp_path):
    result = poolbench_cli("mode.lr=-1", "logger=none", *TINY, check=False)
    assert result.returncode == 2
    assert "invalid config: mode.lr=-1.0 is out of range: it must be > 0." in result.stdout + result.stderr
    # Nothing ran: the one record says the config was refused, and why (a sweep's report counts it).
    [record] = find_records(tmp_path / "outputs")
    assert "Traceback" not in result.stderr and record.status == "refused" and "mode.lr=-1.0" in record.error


def test_a_job_refused_in_a_sweep_is_a_warning_and_the_sweep_goes_on(poolbench_cli, tmp_path):
    """Settings that do not combine are refused by design: a warning and a record, not an error line."""
    result = poolbench_cli("-m", "mode.lr=-1,0.001", "logger=none", *TINY, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0  # only a failed job ends the sweep with status 1
    assert "invalid config: job 0 refused, the sweep goes on: mode.lr=-1.0 is out of range" in output
    assert "[ERROR]" not in output
    assert sorted(record.status for record in find_records(tmp_path / "outputs")) == ["finished", "refused"]


@pytest.mark.slow
def test_the_ablation_sweep_pretrains_each_arm_once_probes_it_refuses_what_does_not_combine_and_reports_arms(
        poolbench_cli, tmp_path, cache_dir):
    """`experiment=nsp_ablation`, shrunk to seconds (3 pretraining steps, 2 arms x 2 pretraining seeds,
    one probe part, cls and pooler): each recipe is built once by the first job that needs it and
    named in the records; mlm_pairs' pooler jobs are refused with a record; the report holds the
    between-arm section, whose unit of replication is the pretraining seed (n = 2 here). A re-launch
    reuses every record and builds nothing."""
    sweep = ["-m", "experiment=nsp_ablation", "backbone.pretrain.arm=mlm_nsp,mlm_pairs", "backbone.pretrain.seed=0,1",
             "backbone.pretrain.steps=3", "backbone.pretrain.batch_size=8", "study_part=probe-mcid", "pooling=cls,pooler",
             "mode.max_epochs=2", f"hydra.callbacks.report.out={tmp_path / 'results'}"]
    pretrained = cache_dir / "pretrained"
    earlier = set(pretrained.iterdir()) if pretrained.exists() else set()  # the cache is the session's
    poolbench_cli(*sweep)
    built = sorted(p.name for p in set(pretrained.iterdir()) - earlier if p.is_dir())
    assert len(built) == 4 and not any(name.endswith(".work") for name in built), built
    [sweep_dir] = (tmp_path / "outputs" / "nsp_ablation").iterdir()
    records = list(find_records(sweep_dir))
    finished = [r for r in records if r.status == "finished"]
    refused = [r for r in records if r.status == "refused"]
    # mlm_nsp: cls at layers 0-2 and the pooler; mlm_pairs: cls at layers 0-2; per pretraining seed.
    assert len(finished) == 2 * (4 + 3) and len(refused) == 2
    assert all(r.factors.backbone == "mlm_pairs-tiny" and "arm mlm_pairs trains no sentence head" in r.error
               for r in refused)
    for record in finished:
        location = record.config["backbone"]["location"]
        assert location in built and location.startswith(record.factors.backbone)
        assert record.factors.backbone_seed == record.config["backbone"]["pretrain"]["seed"]
        assert 0 <= record.metrics["pretrain/mlm_acc"] <= 1 and record.metrics["pretrain/steps"] == 3
    assert len({r.config["backbone"]["location"] for r in finished}) == 4  # each arm x seed its own backbone
    report = (tmp_path / "results" / "REPORT.md").read_text()
    assert "## Pretraining arms" in report and "refused configs (nothing ran) | 2" in report
    contrasts = pd.read_csv(tmp_path / "results" / "arm_contrasts.csv")
    loss_effect = contrasts[(contrasts["task"] == "all tasks") & (contrasts["pooling"] == "cls")
                            & (contrasts["arm"] == "mlm_nsp") & (contrasts["baseline"] == "mlm_pairs")]
    assert list(loss_effect["n"]) == [2]

    mtimes = {name: (cache_dir / "pretrained" / name / "model.safetensors").stat().st_mtime for name in built}
    relaunch = poolbench_cli(*sweep)
    assert relaunch.stdout.count("already finished") == 14, relaunch.stdout[-2000:]
    assert mtimes == {name: (cache_dir / "pretrained" / name / "model.safetensors").stat().st_mtime for name in built}


def test_a_sweep_through_submitit_local_writes_the_records_of_the_basic_launcher(poolbench_cli, tmp_path):
    """launcher=submitit_local: jobs pickled into submitit's folder and run in their own processes (the
    code path of launcher=slurm) give the run ids and metrics of the same sweep in one process."""
    sweep = ["-m", "pooling=cls,mean", "logger=none", "skip_finished=false", *TINY]
    poolbench_cli(*sweep, "study=basic")
    submitted = poolbench_cli(*sweep, "study=submitit", "launcher=submitit_local")
    [basic_dir] = (tmp_path / "outputs" / "basic").iterdir()
    [submitit_dir] = (tmp_path / "outputs" / "submitit").iterdir()
    assert list((submitit_dir / ".submitit").glob("*/*_result.pkl")), "the jobs did not go through submitit"
    assert "sweep summary: 2 runs finished (2 computed, 0 reused), 0 failed" in submitted.stdout
    basic = {r.factors.pooling: r for r in find_records(basic_dir)}
    submitit = {r.factors.pooling: r for r in find_records(submitit_dir)}
    assert sorted(submitit) == sorted(basic) == ["cls", "mean"]
    for pooling, record in submitit.items():
        assert record.status == "finished" and record.reused_from is None
        assert record.run_id == basic[pooling].run_id
        assert record.metrics == pytest.approx(basic[pooling].metrics, abs=1e-6)


@pytest.mark.slow
def test_a_two_process_pretraining_build_through_poolbench_runs_the_job_once(poolbench_cli, tmp_path, cache_dir):
    """`backbone.pretrain.devices=2` (Lightning DDP on 2 CPU processes, gloo) through the installed
    script, in a multirun: both ranks train the build (Lightning's "MEMBER: 2/2"), an mlm arm's (whose
    pooler and sentence head no loss reaches), and the job runs once: 1 finished record in the output
    root, in the one sweep dir. Lightning starts rank 1 by running the current program again: run as the
    job itself, rank 1 ran the sweep again and wrote its own records, so the job owner builds in a
    program of its own (pretrain.build.build_in_own_program). Slow: 133 s on 2 CPU cores shared with a
    running study (niced), with the corpus, its tokenizer and statistics cached (minutes more without)."""
    sweep = ["-m", "backbone=pretrained", "backbone.pretrain.arm=mlm", "backbone.pretrain.size=tiny",
             "backbone.pretrain.steps=2", "backbone.pretrain.batch_size=4", "backbone.pretrain.devices=2",
             "backbone.pretrain.accelerator=cpu", "mode=probe", "task=mcid", "task.max_train_examples=64",
             "pooling=mean", "mode.max_epochs=1", "logger=none", "study=ddptest",
             "hydra.sweep.subdir=${hydra:job.num}"]  # job dirs named by number: these overrides are too long a name
    from poolbench.config import PretrainConfig
    from poolbench.pretrain.build import recipe_of
    from poolbench.pretrain.recipe import pretrained_dir

    recipe = recipe_of(PretrainConfig(arm="mlm", size="tiny", steps=2, batch_size=4), cache_dir)
    built = pretrained_dir(recipe, cache_dir)
    shutil.rmtree(built, ignore_errors=True)  # built by an earlier session of a warm cache: build it again
    result = poolbench_cli(*sweep)
    assert (result.stdout + result.stderr).count("MEMBER: 2/2") == 1, result.stderr[-3000:]
    [record] = find_records(tmp_path / "outputs")
    [sweep_dir] = (tmp_path / "outputs" / "ddptest").iterdir()
    assert record.status == "finished" and sweep_dir in Path(record.dir).parents
    assert record.metrics["pretrain/steps"] == 2 and record.config["backbone"]["location"] == built.name
