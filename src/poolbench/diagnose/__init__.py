"""Diagnose: measures of what h_0 (the first real token's final state) reads, beside the other readouts.

  attention.py  where each readout position attends, per layer and head (one eager forward pass)
  erasure.py    how much each readout moves when one content token is masked, by relative position
  geometry.py   from cached pooled vectors only: cos(cls, mean), anisotropy, training-free accuracy
  stats.py      means over texts with a t-interval (the text is the unit of independence)

Pure functions returning numpy arrays or tidy pandas frames; the mode, config and report that
run them live elsewhere.
"""
