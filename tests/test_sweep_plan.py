"""`poolbench -m ... +plan=true`: the plan of a sweep, through the installed script, after a real
sweep finished part of it. The unit is one Hydra job; counts are known answers from the sweeps'
shapes (a probe job of tiny-bert has 3 runs, layers 0-2; pooler is refused on tiny-bert)."""

import re

from poolbench.plan import Plan, duration, plan_lines

SMALL = ["mode=probe", "layer=all", "backbone=tiny-bert", "task=mcid", "mode.max_epochs=2", "logger=none", "study=plantest"]


def test_the_plan_counts_finished_refused_and_to_run_jobs_and_runs_nothing(poolbench_cli, tmp_path):
    poolbench_cli("-m", "pooling=cls,mean", "seed=0", *SMALL)
    sweeps = set((tmp_path / "outputs" / "plantest").iterdir())
    plan = poolbench_cli("-m", "pooling=cls,mean,max,pooler", "seed=0,1", *SMALL, "+plan=true")
    lines = plan.stdout
    # 8 jobs: cls and mean at seed 0 finished (3 runs each); pooler x 2 seeds refused; 4 to run.
    assert "jobs: 8 total, 2 finished (their records are reused), 2 refused" in lines and ", 4 to run" in lines
    assert "runs: 18 named, 6 finished" in lines
    # All four jobs to run are in the cell the finished jobs timed: an estimate, no unknown cell.
    assert re.search(r"estimated time of the 4 jobs to run with past timings: \d+ s", lines)
    assert "no finished job yet" not in lines
    assert set((tmp_path / "outputs" / "plantest").iterdir()) == sweeps  # nothing was launched

    other = poolbench_cli("-m", "pooling=cls", "task=trec", *SMALL[:3], *SMALL[4:], "+plan=true").stdout
    assert "jobs: 1 total, 0 finished" in other and "no finished job yet to time 1 job(s) of backbone=tiny-bert task=trec" in other


def test_a_sweep_that_does_not_compose_gets_a_one_line_reason_and_status_2(poolbench_cli):
    result = poolbench_cli("-m", "pooling=cls,avg", *SMALL, "+plan=true", check=False)
    assert result.returncode == 2 and "cannot plan this sweep" in result.stderr and "Traceback" not in result.stderr


def test_durations_read_as_seconds_minutes_or_hours():
    assert [duration(s) for s in (0, 42, 600, 3 * 3600 + 7 * 60)] == ["0 s", "42 s", "10 min", "3 h 07 min"]
    assert "0 to run" in plan_lines(Plan(jobs=1, finished=1), "out")[0]
