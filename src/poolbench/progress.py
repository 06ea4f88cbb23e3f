"""Progress a researcher can read while a job runs: a bar on a terminal, plain log lines elsewhere.

On a terminal (stderr is a TTY) a tqdm bar; in a cluster's log file a bar's carriage returns are
noise, so there a log line every `every_s` seconds (and one at the end) says how far it got, how long
it took and roughly how long is left. Used for encoding a split (features.py), the probe's heads
(probe.py) and fine-tuning epochs (`EpochLines`; on a terminal Lightning's own bar, finetune.py).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import lightning as L
from tqdm import tqdm

log = logging.getLogger("poolbench")

EVERY_S = 30.0  # between two log lines when no terminal is attached


def on_terminal() -> bool:
    return sys.stderr.isatty()


class Progress:
    """Counts `total` units of `description` (`update(n)`); a context manager."""

    def __init__(self, total: int, description: str, unit: str, every_s: float = EVERY_S):
        self.total, self.description, self.unit, self.every_s = total, description, unit, every_s
        self.done = 0
        self.started = self.logged = time.monotonic()
        self.bar = tqdm(total=total, desc=description, unit=unit, leave=False) if on_terminal() else None

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif time.monotonic() - self.logged >= self.every_s:
            self.logged = time.monotonic()
            log.info("%s", self.line())

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        left = elapsed * (self.total - self.done) / self.done if self.done else float("nan")
        return (f"{self.description}: {self.done:,}/{self.total:,} {self.unit} "
                f"({100 * self.done / max(self.total, 1):.0f}%), {elapsed:.0f} s, ~{left:.0f} s left")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.done and self.logged != self.started:  # a long task's last line; a short one says nothing
            log.info("%s", self.line())

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class EpochLines(L.Callback):
    """Fine-tuning without a terminal: one log line per validated epoch (its number, the validation
    accuracy, the time so far)."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.monotonic()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning validates inside the training epoch: its metrics are there by now.
        accuracy = trainer.callback_metrics.get("val/acc")
        log.info("epoch %d/%d: val/acc %s, %.0f s", trainer.current_epoch + 1, trainer.max_epochs,
                 "n/a" if accuracy is None else f"{float(accuracy):.4f}", time.monotonic() - self.started)
