"""Shared fixtures: a composed config like the CLI's, and caches that persist for the session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from poolbench.config import CONF_DIR, register
from poolbench.features import features_for
from poolbench.jobs import typed_config
from poolbench.tasks import SPLITS
from poolbench.validation import validate

REPO = CONF_DIR.parent
register()  # the config schema, as the `poolbench` entry point registers it


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """Prepared tasks and features shared by all tests of a session (POOLBENCH_CACHE reuses a warm one)."""
    return Path(os.environ.get("POOLBENCH_TEST_CACHE") or tmp_path_factory.mktemp("cache"))


def compose_config(output_root: Path, cache_dir: Path, *overrides: str) -> DictConfig:
    """The app's config with overrides, composed as `poolbench` would, then validated."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["logger=none", f"paths.output_root={output_root}",
                                           f"paths.cache_dir={cache_dir}", *overrides])
    validate(typed_config(cfg))
    return cfg


@pytest.fixture
def make_cfg(tmp_path, cache_dir):
    """Compose the app's config with overrides, as `poolbench` would, then validate it."""
    return lambda *overrides: compose_config(tmp_path / "outputs", cache_dir, *overrides)


@pytest.fixture
def count_calls(monkeypatch):
    """Wrap a real function so its calls are counted (it still runs): count_calls(module, name, *also),
    `also` = other modules that imported the same name. Returns the list of the calls' arguments."""

    def wrap(module, name: str, *also) -> list:
        calls, real = [], getattr(module, name)

        def counted(*args, **kwargs):
            calls.append(args)
            return real(*args, **kwargs)

        for place in (module, *also):
            monkeypatch.setattr(place, name, counted)
        return calls

    return wrap


@pytest.fixture
def features_of():
    """The cached features of a composed config's (backbone, task), as a probe job reads them."""

    def features(cfg: DictConfig):
        config = typed_config(cfg)
        return features_for(config.backbone, config.task, config.paths.cache_dir, config.mode.encode_batch_tokens)

    return features


@pytest.fixture
def poolbench_cli(tmp_path, cache_dir):
    """Run the installed console script in a fresh process, in tmp_path, offline."""

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "POOLBENCH_CACHE": str(cache_dir),
               "POOLBENCH_OUTPUT": str(tmp_path / "outputs")}
        script = Path(sys.executable).with_name("poolbench")
        result = subprocess.run([str(script), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=900)
        if check and result.returncode != 0:
            raise AssertionError(f"poolbench {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
        return result

    return run


@pytest.fixture
def located_documents() -> dict[str, pd.DataFrame]:
    """30 synthetic documents per split of 2-5 sentences "d<doc> s<pos> some filler words.": each
    sentence says where it came from (document 100 x split index + d), for the sentence-pair tasks."""

    def document(doc: int, n: int) -> str:
        return " ".join(f"d{doc} s{pos} some filler words." for pos in range(n))

    return {split: pd.DataFrame({"text": [document(100 * k + d, 2 + d % 4) for d in range(30)]})
            for k, split in enumerate(SPLITS)}

