"""Entry points: `poolbench` (the Hydra app: one job, or a sweep with -m) and `poolbench-catalog`.
(`poolbench-report` is `poolbench.report.main`.)

`poolbench -m <sweep> +plan=true` prints the sweep's plan (poolbench.plan) and runs nothing. Hydra's
multirun always launches its jobs, so the entry point takes the plan flag off the command line
before Hydra sees it, and composes the sweep as Hydra's basic sweeper does (its parser, its
`split_arguments`; poolbench.composition in place of the config loader's `load_sweep_config`).

This module holds the error policy only; jobs.py owns what a job does.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from poolbench import backbones, tasks
from poolbench.assets import Unavailable
from poolbench.config import CONF_DIR, ConfigError, PathsConfig, register
from poolbench.jobs import run_job
from poolbench.records import git_commit

log = logging.getLogger("poolbench")
# Errors whose message says what to change (a value, a package, a network): no traceback for them.
USER_ERRORS = (ConfigError, Unavailable)
register()


PLAN_FLAGS = ("+plan=true", "plan=true")


def main() -> None:
    """`poolbench`: the Hydra app, or with `+plan=true` the plan of the sweep its arguments describe."""
    if any(flag in sys.argv[1:] for flag in PLAN_FLAGS):
        raise SystemExit(plan([arg for arg in sys.argv[1:] if arg not in (*PLAN_FLAGS, "-m", "--multirun")]))
    run()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def run(cfg: DictConfig) -> None:
    os.environ.setdefault("WANDB_MODE", "offline")
    git_commit()  # pin the commit of the code this process imported, before a long sweep sees new commits
    hydra_cfg = HydraConfig.get()
    try:
        run_job(cfg, Path(hydra_cfg.runtime.output_dir))
    except USER_ERRORS as error:
        what = "invalid config" if isinstance(error, ConfigError) else "unavailable"
        if hydra_cfg.mode == RunMode.MULTIRUN and isinstance(error, ConfigError):
            # A sweep may cross settings that do not combine (pooling=pooler on an arm without a sentence
            # head): refused by design, its record says why and the report counts it. Not an error.
            log.warning("%s: job %s refused, the sweep goes on: %s", what, hydra_cfg.job.num, error)
            return
        log.error("%s: %s", what, error)
        if hydra_cfg.mode != RunMode.MULTIRUN:
            raise SystemExit(2) from None
    except Exception:
        if hydra_cfg.mode != RunMode.MULTIRUN:
            raise
        # One failed job must not stop a sweep: its failed record is counted by the report.
        log.exception("job %s failed; its record says why. The sweep goes on.", hydra_cfg.job.num)


def sweep_configs(overrides: list[str]) -> list[DictConfig]:
    """Every job config of the sweep `overrides` describes (with the experiment's hydra.sweeper.params),
    in Hydra's job order (composed as poolbench.composition does: once per combination of config groups)."""
    from hydra import initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from poolbench.composition import SweepComposer

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="poolbench"):
        hydra_app = GlobalHydra.instance().hydra
        base = hydra_app.compose_config("config", overrides, run_mode=RunMode.MULTIRUN, with_log_configuration=False)
        params = [f"{key}={value}" for key, value in (base.hydra.sweeper.params or {}).items()]
        parsed = OverridesParser.create(config_loader=hydra_app.config_loader).parse_overrides(params + overrides)
        composer = SweepComposer(hydra_app.config_loader, base)
        return [composer.compose(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def plan(overrides: list[str]) -> int:
    """Print the plan of a sweep (poolbench.plan); exit status 0, or 2 for a config that does not compose."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from poolbench.jobs import plan_job
    from poolbench.plan import make_plan, plan_lines

    try:
        configs = sweep_configs(overrides)
        output_root = Path(configs[0].paths.output_root)
        lines = plan_lines(make_plan(map(plan_job, configs), output_root), output_root)
    except (HydraException, OmegaConfBaseException, *USER_ERRORS) as error:
        print(f"poolbench: cannot plan this sweep: {error}", file=sys.stderr)
        return 2
    print("\n".join(["plan (nothing is run):", *lines]))
    return 0


def _table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, justify="right" if column in ("params", "layers", "hidden", "train", "validation",
                                                               "test", "labels") else "left")
    for row in rows:
        table.add_row(*("" if row.get(c) is None else f"{row[c]:,}" if isinstance(row.get(c), int)
                        and not isinstance(row.get(c), bool) else str(row[c]) for c in columns))
    return table


def option_rows(group: str) -> list[dict[str, str]]:
    """Every option of a config group (conf/<group>/*.yaml), named with the first sentence of the comment
    that opens its file: what it is, in the words its config gives it."""
    rows = []
    for path in sorted((CONF_DIR / group).glob("*.yaml")):
        comment = []
        for line in path.read_text().splitlines():
            if not line.startswith("#"):
                break
            comment.append(line.lstrip("# ").strip())
        # The first sentence: up to a full stop before a capital ("et al. 2023" and "q . h" go on).
        sentence = re.split(r"\.\s+(?=[A-Z])", " ".join(comment), maxsplit=1)[0].rstrip(".")
        # Escaped: "[h_0 ; mean]" is text, not rich markup.
        rows.append({"name": path.stem, "note": escape(sentence + ".") if sentence else ""})
    return rows


def catalog(argv: list[str] | None = None) -> None:
    """`poolbench-catalog`: every backbone and task option, whether it is installed here, its size; every
    mode and readout."""
    parser = argparse.ArgumentParser(prog="poolbench-catalog", description=catalog.__doc__)
    parser.add_argument("--cache-dir", default=os.environ.get("POOLBENCH_CACHE", PathsConfig.cache_dir),
                        help="where prepared tasks and converted backbones are cached (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="do not prepare tasks to count their examples")
    args = parser.parse_args(argv)
    cache_dir = Path(args.cache_dir).expanduser()
    console = Console(width=160)
    backbone_rows = [{**row, "installed": "yes" if row["installed"] else "no", "hidden": row["hidden_size"],
                      "note": row["install"]} for row in backbones.catalog_rows(cache_dir)]
    console.print(_table("Backbones (backbone=<name>)", backbone_rows,
                         ["name", "family", "source", "installed", "params", "layers", "hidden", "note"]))
    task_rows = [{**row, "installed": "yes" if row["installed"] else "no",
                  "pair": {True: "yes", False: "no"}.get(row["pair"])}
                 for row in tasks.catalog_rows(None if args.quick else cache_dir)]
    console.print(_table("Tasks (task=<name>)", task_rows,
                         ["name", "source", "installed", "train", "validation", "test", "labels", "pair", "note"]))
    console.print(_table("Modes (mode=<name>)", option_rows("mode"), ["name", "note"]))
    console.print(_table("Readouts (pooling=<name>)", option_rows("pooling"), ["name", "note"]))
