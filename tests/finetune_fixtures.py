"""Helpers for the fine-tuning tests: a tiny tuner and a callback that records (and can interrupt) training."""

from __future__ import annotations

import keras

from featpipe.backbones import load_backbone
from featpipe.finetune import FineTuner


def tiny_tuner(model_file: str, **params) -> FineTuner:
    """A FineTuner on a fresh random-initialised copy of the tiny 32x32 base, a small head and one epoch per phase."""
    backbone = load_backbone(model_file, weights="none", seed=0)
    return FineTuner(backbone, **{"epochs": 1, "fine_tune_epochs": 1, "batch_size": 8, "dense_units": 8, **params})


class EpochLog(keras.callbacks.Callback):
    """Records which epochs start, the trainable variables at each fit's start, and the head's kernel;
    raises KeyboardInterrupt after epoch `interrupt_after` (a preempted job)."""

    def __init__(self, interrupt_after: int | None = None):
        super().__init__()
        self.interrupt_after = interrupt_after
        self.begun: list[int] = []
        self.trainable: list[list[str]] = []
        self.kernels: dict[str, list] = {"begin": [], "end": []}

    def _kernel(self):
        return self.model.get_layer("dense").kernel.numpy().copy()

    def on_train_begin(self, logs=None):
        self.trainable.append([w.path for w in self.model.trainable_weights])

    def on_epoch_begin(self, epoch, logs=None):
        self.begun.append(epoch)
        self.kernels["begin"].append(self._kernel())

    def on_epoch_end(self, epoch, logs=None):
        self.kernels["end"].append(self._kernel())
        if epoch == self.interrupt_after:
            raise KeyboardInterrupt
