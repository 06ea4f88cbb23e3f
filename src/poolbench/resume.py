"""Resuming a killed fine-tuning run from its last epoch, with the numbers of an uninterrupted run.

A run trains in a directory named by its run id under the output root (`jobs.py` passes it as
`Job.checkpoint_dir`), so the same command re-launched (a new sweep dir, after `kill -9`, a
preemption or a wall-time limit) finds it. Every epoch ends with `last.ckpt`: weights, optimizer,
scheduler, loop counters, the best-epoch callback's state and, added here, the global random
states, which Lightning does not store and dropout draws from. The data order needs nothing:
`data.BucketBatchSampler` draws each epoch's order from (seed, epoch). Resumption is at epoch
boundaries: a run killed mid-epoch repeats that epoch from its start.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

log = logging.getLogger("poolbench")

LAST = "last"  # the file name (without .ckpt) of the checkpoint a run resumes from


class RandomStates(Callback):
    """The global random states (torch, CUDA, numpy, Python) in every full checkpoint, restored on
    resume (before the first batch), so the resumed epochs draw the dropout masks they would have."""

    def state_dict(self) -> dict[str, Any]:
        return _collect_rng_states(include_cuda=torch.cuda.is_available())

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        _set_rng_states(state_dict)


def last_epoch_checkpoint(directory: Path) -> ModelCheckpoint:
    """A full checkpoint at the end of every epoch, overwritten: `<directory>/last.ckpt`. Put it after the
    best-epoch callback, so that the state it stores names the best epoch as of this one."""
    return ModelCheckpoint(dirpath=directory, filename=LAST, save_top_k=1, every_n_epochs=1)


def resume_point(directory: Path) -> Path | None:
    """The checkpoint a run in `directory` resumes from, or None (start from the beginning). A run killed
    between saving a new best epoch (which deletes the previous best) and `last.ckpt` leaves a
    `last.ckpt` naming a deleted best checkpoint: then the directory is cleared and the run starts over."""
    last = Path(directory) / f"{LAST}.ckpt"
    if not last.exists():
        return None
    checkpoint = torch.load(last, map_location="cpu", weights_only=False)  # our own file
    named = [Path(state["best_model_path"]) for key, state in checkpoint.get("callbacks", {}).items()
             if key.startswith("ModelCheckpoint") and state.get("best_model_path")]
    if missing := [path for path in named if not path.exists()]:
        log.warning("%s names %s, which is gone (killed while saving): training from the beginning", last,
                    ", ".join(map(str, missing)))
        shutil.rmtree(directory)
        return None
    log.info("resuming from %s: %d epoch(s) done, global step %d", last, checkpoint["epoch"] + 1,
             checkpoint["global_step"])
    return last
