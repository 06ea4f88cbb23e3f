"""Backbones: the transformers whose hidden states the poolings read."""

from poolbench.backbones.core import (DTYPES, MODEL_INPUTS, PACKAGED, Backbone, PackagedBackbone, catalog_rows,
                                      forward_hidden_states, known_facts, load_backbone)

__all__ = ["DTYPES", "MODEL_INPUTS", "PACKAGED", "Backbone", "PackagedBackbone", "catalog_rows", "forward_hidden_states",
           "known_facts", "load_backbone"]
