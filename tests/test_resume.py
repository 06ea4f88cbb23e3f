"""A fine-tuning run killed with SIGKILL after its first epoch's checkpoint, re-launched with the same
command, resumes from that checkpoint and ends with the record of an uninterrupted run.

The killed and the resumed runs are real processes of the installed `poolbench` script (the
uninterrupted one runs in this process, like a basic launcher's job); a tiny random BERT on 256 mcid
examples, 3 epochs. The tolerance: on one CPU thread in Lightning's deterministic mode the resumed
run repeats the same float operations on the same restored tensors, random states and batch order,
so it is exact; 1e-6 on the test probabilities leaves room only for a library reordering a reduction
between processes. Resuming without the random states (dropout masks drawn afresh) moved them by up
to 7.9e-4 (511 of 512 probabilities beyond 1e-6; measured once with RandomStates.load_state_dict
disabled), with the same accuracy: the probabilities, not the accuracy, are what tell.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import wandb
from hydra import compose, initialize_config_dir

from poolbench.config import CONF_DIR
from poolbench.jobs import WANDB_RUN_ID, checkpoint_dir, make_logger, run_job, typed_config
from poolbench.records import find_records, read_predictions

RUN = ["backbone=tiny-bert", "task=mcid", "pooling=cls", "task.max_train_examples=256",
       "mode.batch_size=8", "trainer.max_epochs=3", "trainer.limit_val_batches=4", "trainer.limit_test_batches=4"]


def launch(root: Path, cache_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "POOLBENCH_CACHE": str(cache_dir),
           "POOLBENCH_OUTPUT": str(root / "outputs")}
    script = Path(sys.executable).with_name("poolbench")
    with open(root / f"log-{time.monotonic_ns()}.txt", "w") as log:  # the child keeps its own descriptor
        return subprocess.Popen([str(script), *RUN, "logger=none"], cwd=root, env=env, stdout=log,
                                stderr=subprocess.STDOUT)


def test_a_run_killed_after_its_first_epoch_resumes_from_its_checkpoint_and_ends_as_an_uninterrupted_run(
        make_cfg, tmp_path, cache_dir):
    [expected] = run_job(make_cfg(*RUN), tmp_path / "uninterrupted")  # in this process: one thread too
    killed_root = tmp_path / "killed"
    killed_root.mkdir()
    victim = launch(killed_root, cache_dir)
    checkpoints = killed_root / "outputs" / "checkpoints"
    while not list(checkpoints.glob("*/last.ckpt")) and victim.poll() is None:
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL, "the run ended before the kill: make its epochs longer"
    assert not list(find_records(killed_root / "outputs")), "killed before writing any record"
    [checkpoint] = checkpoints.glob("*/last.ckpt")
    assert checkpoint.parent.name == expected.run_id  # named by the run id: a re-launch finds it

    relaunch = launch(killed_root, cache_dir)
    assert relaunch.wait(timeout=300) == 0
    output = "\n".join(path.read_text() for path in sorted(killed_root.glob("log-*.txt")))
    assert f"resuming from {checkpoint}: 1 epoch(s) done" in output
    [resumed] = [r for r in find_records(killed_root / "outputs" / "runs") if r.status == "finished"]
    assert resumed.run_id == expected.run_id and resumed.selection == expected.selection
    assert resumed.metrics == pytest.approx(expected.metrics, abs=1e-6)
    got, want = read_predictions(resumed), read_predictions(expected)
    assert got["id"].tolist() == want["id"].tolist() and got["prediction"].tolist() == want["prediction"].tolist()
    np.testing.assert_allclose(np.stack(got["probs"]), np.stack(want["probs"]), atol=1e-6, rtol=0)
    assert not checkpoint.parent.exists()  # removed once the run was tested


def test_a_resumed_run_continues_its_wandb_run_and_a_new_run_starts_its_own(tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["logger=wandb", f"logger.save_dir={tmp_path}", "backbone=tiny-bert",
                                           "task=mcid", f"paths.output_root={tmp_path}",
                                           f"paths.cache_dir={cache_dir}"])
    config = typed_config(cfg)
    resumable = checkpoint_dir(tmp_path, "0123456789abcdef")
    ids = []
    for directory in (resumable, resumable, None):  # launched, re-launched, launched without resumption
        logger = make_logger(cfg, config, ["0123456789abcdef"], directory)
        ids.append(logger.experiment.id)
        wandb.finish()
    assert ids[0] == ids[1] != ids[2]
    assert (resumable / WANDB_RUN_ID).read_text() == ids[0]
