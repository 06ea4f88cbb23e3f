"""A sweep's job configs, composed by Hydra once per combination of config-group choices.

Hydra composes every job of a multirun from scratch (`load_sweep_config`: the defaults list, every
config file read and merged): about 0.3 s a job on 2 CPU cores, so a 240-job study spends a minute
composing before anything runs, and a re-launched finished study is nothing but that minute. Jobs
that differ only in plain values (`seed=0,1,2`, `mode.ablation_layers=4`) share their defaults list:
values never change which config files are merged (Hydra's defaults may interpolate group choices,
never values). So `SweepComposer` asks Hydra to compose each combination of the overrides that shape
the defaults list once, then applies a job's value overrides to a copy exactly as Hydra applies them
after composing (`ConfigLoaderImpl._apply_overrides_to_config`), and sets the two job fields that
name all of a job's overrides (`hydra.overrides.task`, `hydra.job.override_dirname`). The result is
Hydra's own config for the job, field for field (tests/test_composition.py compares every job of a
sweep with `load_sweep_config`'s).

Used where a sweep is composed only to be looked at: the plan (`poolbench -m ... +plan=true`) and the
sweeper's check for finished jobs. A launched job is composed by its launcher, as Hydra does.
"""

from __future__ import annotations

import copy
from typing import Sequence

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, OmegaConf, open_dict


class SweepComposer:
    """`compose(overrides)`: the config Hydra's `load_sweep_config(master, overrides)` returns, composed
    once per combination of defaults-shaping overrides (config groups, packages, additions and deletions,
    Hydra's own settings) and copied for the jobs that differ only in values."""

    def __init__(self, config_loader: ConfigLoaderImpl, master: DictConfig) -> None:
        self.config_loader = config_loader
        self.master = master
        self.parser = OverridesParser.create(config_loader=config_loader)
        self.composed: dict[tuple[str, ...], DictConfig] = {}

    def shapes_defaults(self, override: Override) -> bool:
        """Whether an override may change which config files a job merges (else it sets a value)."""
        return (override.is_hydra_override() or override.package is not None or override.is_add()
                or override.is_delete() or override.is_force_add()
                or self.config_loader.repository.group_exists(override.key_or_group))

    def compose(self, overrides: Sequence[str]) -> DictConfig:
        parsed = self.parser.parse_overrides(list(overrides))
        shaping = tuple(override.input_line for override in parsed if self.shapes_defaults(override))
        if shaping not in self.composed:
            self.composed[shaping] = self.config_loader.load_sweep_config(self.master, list(shaping))
        config = copy.deepcopy(self.composed[shaping])
        ConfigLoaderImpl._apply_overrides_to_config([o for o in parsed if not self.shapes_defaults(o)], config)
        job_overrides = [override for override in parsed if not override.is_hydra_override()]
        naming = config.hydra.job.config.override_dirname
        with open_dict(config.hydra):
            config.hydra.overrides.task = [override.input_line for override in job_overrides]
            config.hydra.job.override_dirname = get_overrides_dirname(
                overrides=job_overrides, kv_sep=naming.kv_sep, item_sep=naming.item_sep,
                exclude_keys=naming.exclude_keys)
        OmegaConf.copy_cache(from_config=self.master, to_config=config)
        return config
