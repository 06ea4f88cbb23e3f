"""The learned attention readout (`pooling=attention`): one query vector q scores every real token and
softmax(q . h) weighs them, trained with the head in both modes.

  readout.py       the pooling itself: a pure function (masks and padding as in pooling.py) and the
                   nn.Module fine-tuning trains with the backbone and the head
  token_states.py  probe mode's cache of per-token states (the pooled feature cache cannot serve a
                   readout whose weights are learned): ragged, float16, only the layers jobs ask for
  probe.py         probe mode: q and the softmax head trained jointly per (layer, weight decay), with
                   the epochs, patience, weight-decay grid and selection rules of poolbench.probe
"""
