"""The sweeper of `poolbench -m` (conf/config.yaml: hydra.sweeper): Hydra's basic sweeper, except
that a job whose every run is finished (poolbench.jobs.reuse_finished_job) is not launched: the
sweeper copies its records into its job dir itself, with the job number and dir Hydra would give it,
and launches only the other jobs (in runs of consecutive job numbers, so every launcher numbers them
as without the skip). Each job is composed once here, as the basic sweeper composes it to check it;
a launched job is composed once more by its launcher. So a re-launched finished study costs imports
and one composition per job, whatever the launcher (its workers are never started). The records are
those the job itself would have reused; the end-of-sweep summary counts them as reused.

Hydra loads sweepers from the `hydra_plugins` package only, hence this module's place.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, List, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf, open_dict

log = logging.getLogger("poolbench")


class ReusingSweeper(BasicSweeper):
    def sweep(self, arguments: List[str]) -> Any:
        from poolbench.jobs import reuse_finished_job

        params = self._parse_config() + list(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        self.overrides = self.split_arguments(parser.parse_overrides(params), self.max_batch_size)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        returns: list[Sequence[JobReturn]] = []
        first = 0
        while not self.is_done():
            batch = self.get_job_batch()
            to_launch: list[tuple[int, Sequence[str]]] = []
            for number, overrides in enumerate(batch, start=first):
                job = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
                with open_dict(job):
                    job.hydra.job.id = job.hydra.job.num = number
                HydraConfig.instance().set_config(job)  # the job dir interpolates hydra:job.num
                job_dir = Path(job.hydra.sweep.dir) / str(job.hydra.sweep.subdir)
                reused = reuse_finished_job(job, job_dir)
                if reused is None:
                    to_launch.append((number, overrides))
                else:
                    returns.append([JobReturn(overrides=list(overrides), cfg=job, working_dir=os.fspath(job_dir),
                                              task_name=job.hydra.job.name, status=JobStatus.COMPLETED,
                                              _return_value=reused)])
            HydraConfig.instance().set_config(self.config)
            log.info("%d of %d jobs finished before: reused without launching them", len(batch) - len(to_launch),
                     len(batch))
            for start, overrides in _consecutive(to_launch):
                returns.append(self.launcher.launch(overrides, initial_job_idx=start))
            first += len(batch)
        return returns


def _consecutive(numbered: list[tuple[int, Sequence[str]]]) -> list[tuple[int, list[Sequence[str]]]]:
    """[(first job number, the overrides of jobs first, first + 1, ...)] for the numbered jobs."""
    runs: list[tuple[int, list[Sequence[str]]]] = []
    for number, overrides in numbered:
        if runs and runs[-1][0] + len(runs[-1][1]) == number:
            runs[-1][1].append(overrides)
        else:
            runs.append((number, [overrides]))
    return runs
