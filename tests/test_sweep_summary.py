"""The end of a sweep: a summary of its runs and an exit status that says whether one failed, through
the installed `poolbench` script (a real Hydra multirun). The unit is one run (a record): a probe job
of tiny-bert has 3 runs (layers 0-2); a refused or failed job leaves one record."""

from poolbench.records import find_records

SMALL = ["mode=probe", "layer=all", "backbone=tiny-bert", "mode.max_epochs=2", "logger=none", "study=summarytest"]


def test_a_sweep_with_a_failed_job_says_so_and_exits_1_and_a_refused_job_is_no_failure(poolbench_cli, tmp_path):
    # task=file without task.location fails (before any work); pooling=pooler on tiny-bert is refused.
    sweep = ["-m", "task=mcid,file", "pooling=cls,pooler", *SMALL]
    first = poolbench_cli(*sweep, check=False)
    assert first.returncode == 1, first.stderr[-3000:]
    assert "sweep summary: 3 runs finished (3 computed, 0 reused), 1 failed, 2 refused" in first.stdout
    assert "task=file needs task.location" in first.stdout  # the failed run's reason, one line
    [sweep_dir] = (tmp_path / "outputs" / "summarytest").iterdir()
    assert f"records: {sweep_dir}" in first.stdout
    assert sorted(r.status for r in find_records(sweep_dir)) == ["failed"] + ["finished"] * 3 + ["refused"] * 2

    relaunch = poolbench_cli(*sweep, check=False)
    assert relaunch.returncode == 1
    assert "sweep summary: 3 runs finished (0 computed, 3 reused), 1 failed, 2 refused" in relaunch.stdout
    # The finished job was reused without being launched; the others were launched in one call,
    # numbered first: the job numbers stay 0-3, each job dir keeps its overrides.
    assert "1 of 4 jobs finished before: reused without launching them" in relaunch.stdout
    [again] = set((tmp_path / "outputs" / "summarytest").iterdir()) - {sweep_dir}

    def jobs(directory):
        names = [path.name for path in directory.iterdir() if path.is_dir() and path.name != "report"]
        return sorted(int(name.split("_")[0]) for name in names), {name.split("_", 1)[1] for name in names}

    assert jobs(again) == jobs(sweep_dir) and jobs(again)[0] == [0, 1, 2, 3]
    [reused_dir] = [path for path in again.iterdir() if path.name.endswith("pooling=cls,task=mcid")]
    assert reused_dir.name.startswith("3_")  # reused jobs are numbered after the launched ones

    refused_only = poolbench_cli("-m", "task=mcid", "pooling=cls,pooler", *SMALL, check=False)
    assert refused_only.returncode == 0, refused_only.stderr[-3000:]
    assert "sweep summary: 3 runs finished (0 computed, 3 reused), 0 failed, 1 refused" in refused_only.stdout
