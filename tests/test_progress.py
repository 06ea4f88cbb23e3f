"""Progress while a job runs: a tqdm bar on a terminal, log lines in a log file (a cluster's)."""

import logging

from poolbench import progress
from poolbench.jobs import run_job
from poolbench.progress import Progress


def test_without_a_terminal_progress_is_log_lines_with_counts_and_a_final_line(caplog, monkeypatch):
    monkeypatch.setattr(progress, "on_terminal", lambda: False)
    with caplog.at_level(logging.INFO, logger="poolbench"):
        with Progress(8, "encoding mcid/test", "texts", every_s=0) as bar:
            for n in (2, 4, 2):
                bar.update(n)
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(", ")[0] for line in lines] == [
        "encoding mcid/test: 2/8 texts (25%)", "encoding mcid/test: 6/8 texts (75%)",
        "encoding mcid/test: 8/8 texts (100%)", "encoding mcid/test: 8/8 texts (100%)"]  # the last: at close
    assert lines[-1].endswith("~0 s left")


def test_a_short_task_without_a_terminal_logs_nothing(caplog, monkeypatch):
    monkeypatch.setattr(progress, "on_terminal", lambda: False)
    with caplog.at_level(logging.INFO, logger="poolbench"), Progress(8, "heads", "epochs") as bar:
        bar.update(8)
    assert not caplog.records  # under EVERY_S: the job's own summary line says enough


def test_on_a_terminal_progress_is_a_bar(capsys, monkeypatch):
    monkeypatch.setattr(progress, "on_terminal", lambda: True)
    with Progress(8, "encoding mcid/test", "texts") as bar:
        bar.update(8)
    err = capsys.readouterr().err
    assert "encoding mcid/test" in err and "0/8" in err  # the bar as first drawn


def test_fine_tuning_without_a_terminal_logs_one_line_per_epoch(make_cfg, tmp_path, caplog):
    cfg = make_cfg("backbone=tiny-bert", "task=mcid", "trainer=smoke", "trainer.max_epochs=2",
                   "task.max_train_examples=64")
    with caplog.at_level(logging.INFO, logger="poolbench"):
        [record] = run_job(cfg, tmp_path / "run")
    epochs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["epoch 1/2", "epoch 2/2"]
    assert record.config["trainer"]["enable_progress_bar"] is None  # the default: a bar only on a terminal
