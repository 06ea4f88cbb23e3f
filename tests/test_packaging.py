"""The configs travel with the package: a built wheel, installed outside the repository, composes
the same config as the checkout (known answer: `poolbench --cfg job` of the checkout)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from poolbench.config import CONF_DIR

REPO = CONF_DIR.resolve().parent


@pytest.mark.slow
def test_an_installed_wheel_holds_the_configs_and_composes_them(tmp_path):
    wheels, site, checkout = tmp_path / "wheels", tmp_path / "site", tmp_path / "checkout"
    # Built from a copy: setuptools writes build/ beside what it builds, and the source tree stays clean.
    checkout.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, checkout / name)
    for name in ("src", "conf", "experiments"):
        shutil.copytree(REPO / name, checkout / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                    str(checkout)], check=True, capture_output=True, timeout=600)
    [wheel] = wheels.glob("poolbench-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    def yamls(root: Path) -> list[Path]:  # conf/experiment is a link in the checkout: glob, not rglob
        return sorted(p.relative_to(root) for pattern in ("*.yaml", "*/*.yaml") for p in root.glob(pattern))

    shipped, in_checkout = yamls(site / "poolbench" / "conf"), yamls(CONF_DIR)
    assert shipped == in_checkout and Path("experiment/probe.yaml") in shipped

    def compose(pythonpath: str) -> str:
        # The installed copy first on the path, run from a directory outside the repository.
        code = "import sys, poolbench; print(poolbench.__file__, file=sys.stderr); from poolbench.cli import main; main()"
        result = subprocess.run([sys.executable, "-c", code, "--cfg", "job", "experiment=probe"], cwd=tmp_path,
                                env={**os.environ, "PYTHONPATH": pythonpath}, capture_output=True, text=True,
                                timeout=300, check=True)
        return result.stdout, result.stderr

    installed, where = compose(str(site))
    assert where.strip().startswith(str(site))
    checkout, _ = compose(str(REPO / "src"))
    assert installed == checkout and "study: probe" in installed
