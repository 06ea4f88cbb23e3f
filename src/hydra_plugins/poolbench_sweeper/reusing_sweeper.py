"""The sweeper of `poolbench -m` (conf/config.yaml: hydra.sweeper): Hydra's basic sweeper, except
that a job whose every run is finished (poolbench.jobs.finished_job) is not launched: the
sweeper copies its records into its job dir itself and launches the other jobs of the batch in one
call (so a launcher's parallelism, a SLURM array say, is kept). Launched jobs are numbered first, in
sweep order, reused ones after them: job numbers stay unique, and a job dir keeps its overrides in
its name (`<number>_<overrides>`). Jobs are composed here to check them (poolbench.composition: Hydra's
config, composed once per combination of config-group choices); a launched job is composed once more by
its launcher. So a re-launched finished study costs imports and one composition per combination of
config groups, whatever the launcher (its workers are never started). The records are
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
        from poolbench.composition import SweepComposer
        from poolbench.jobs import finished_job, reuse_job

        params = self._parse_config() + list(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        self.overrides = self.split_arguments(parser.parse_overrides(params), self.max_batch_size)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        returns: list[Sequence[JobReturn]] = []
        composer = SweepComposer(self.hydra_context.config_loader, self.config)
        first = 0
        while not self.is_done():
            batch = self.get_job_batch()
            jobs = [composer.compose(overrides) for overrides in batch]
            finished = [finished_job(job) for job in jobs]
            to_launch = [overrides for overrides, records in zip(batch, finished) if records is None]
            number = first + len(to_launch)
            for overrides, job, records in zip(batch, jobs, finished):
                if records is None:
                    continue
                with open_dict(job):
                    job.hydra.job.id = job.hydra.job.num = number
                HydraConfig.instance().set_config(job)  # the job dir interpolates hydra:job.num
                job_dir = Path(job.hydra.sweep.dir) / str(job.hydra.sweep.subdir)
                reused = reuse_job(records, job_dir)
                returns.append([JobReturn(overrides=list(overrides), cfg=job, working_dir=os.fspath(job_dir),
                                          task_name=job.hydra.job.name, status=JobStatus.COMPLETED,
                                          _return_value=reused)])
                number += 1
            HydraConfig.instance().set_config(self.config)
            log.info("%d of %d jobs finished before: reused without launching them", len(batch) - len(to_launch),
                     len(batch))
            if to_launch:
                returns.append(self.launcher.launch(to_launch, initial_job_idx=first))
            first += len(batch)
        return returns
