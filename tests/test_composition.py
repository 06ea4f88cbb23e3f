"""poolbench.composition against the reference, Hydra's own `load_sweep_config`: every job of a sweep
that crosses config groups, plain values, a nested value and an experiment's sweep params gets the same
config, field for field, with the same flags. The unit is one Hydra job."""

from hydra import initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import OmegaConf

from poolbench.composition import SweepComposer
from poolbench.config import CONF_DIR

SWEEP = ["experiment=sink", "backbone=minilm-l6,tiny-bert", "pooling=cls,mean", "seed=0,1",
         "task.max_train_examples=500", "backbone.max_length=32", "hydra.job.chdir=false"]


def test_every_job_is_the_config_hydra_composes_and_groups_are_composed_once():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="poolbench"):
        hydra_app = GlobalHydra.instance().hydra
        loader = hydra_app.config_loader
        master = hydra_app.compose_config("config", SWEEP, run_mode=RunMode.MULTIRUN, with_log_configuration=False)
        params = [f"{key}={value}" for key, value in master.hydra.sweeper.params.items()]
        parsed = OverridesParser.create(config_loader=loader).parse_overrides(params + SWEEP)
        jobs = [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
        composer = SweepComposer(loader, master)
        ours = [composer.compose(job) for job in jobs]  # all first: a shared copy would show below
        hydras = [loader.load_sweep_config(master, job) for job in jobs]
    # 2 backbones x 2 study parts x 2 poolings x 2 seeds; seeds and values share a composition.
    assert len(jobs) == 16 and len(composer.composed) == 8
    seeds = set()
    for job, our, hydra in zip(jobs, ours, hydras):
        assert OmegaConf.to_yaml(our) == OmegaConf.to_yaml(hydra), job
        assert OmegaConf.is_struct(our) and not OmegaConf.is_readonly(our.hydra)
        assert our.backbone.max_length == 32 and our.task.max_train_examples == 500
        seeds.add((our.hydra.job.override_dirname, our.seed))
    assert len(seeds) == 16
