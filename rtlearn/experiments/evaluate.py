"""Prequential (test-then-train) evaluation, after river's `progressive_validation`.

Every experiment measures its learner through `prequential`: each batch is first scored by
the current model, then learned from, and the score is the loss *before* the update. The
learner is anything with `learn_many(X, Y) -> per-output loss before the update`
(`rtlearn.learner.OnlineLearner` and the experiments' small problem adapters).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np

from . import progress


@dataclass
class Checkpoint:
    step: int              # batches learned so far (1-based: this checkpoint's batch included)
    n_samples: int         # samples seen so far
    loss: np.ndarray       # per-output loss of this batch, measured before learning from it
    mean_loss: np.ndarray  # running mean of `loss` over all batches so far


def prequential(learner, batches: Iterable[tuple[np.ndarray, np.ndarray]], every: int = 1,
                max_steps: int | None = None,
                stop: Callable[[np.ndarray], bool] | None = None) -> Iterator[Checkpoint]:
    """Test-then-train over `batches`; yields a Checkpoint every `every` batches (and after
    the last one). `stop(loss)` ends the run at the first batch whose pre-update loss
    satisfies it (e.g. a convergence tolerance); that batch is reported as the last checkpoint,
    so `step - 1` updates were needed to get there."""
    total = None
    n_samples = 0
    step = 0
    last = None
    for X, Y in batches:
        if max_steps is not None and step >= max_steps:
            break
        loss = np.array(learner.learn_many(X, Y), dtype=np.float64, copy=True)
        step += 1
        n_samples += 0 if X is None else len(X)
        progress.tick(0 if X is None else len(X))
        total = loss.copy() if total is None else total + loss
        last = Checkpoint(step, n_samples, loss, total / step)
        if stop is not None and stop(loss):
            yield last
            return
        if step % every == 0:
            yield last
    if last is not None and step % every != 0:
        yield last


def batched(X: np.ndarray, Y: np.ndarray, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Consecutive batches of `size` samples, each sample used once; a short tail is dropped."""
    for i in range(0, len(X) - size + 1, size):
        yield X[i:i + size], Y[i:i + size]
