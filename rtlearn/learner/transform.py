"""Optimizers as small transforms over explicit state, composed with `chain` (after optax).

A transform owns a dict of preallocated arrays (its state) and updates, in place and without
allocating, the direction `u` that will be subtracted from the parameters:
`chain(clip(10), adam(), memory(cfg))` reads "clip the gradient, take Adam's direction, scale
it by the rates the memory predicts". Unlike optax the arrays are mutated in place: the 1 kHz
loop must not allocate.

Which state entries mean what:
- `shared`: the learned rate state (the memory, the hypergradient rate): shared by every
  payload context and carried to the next task;
- `carry`: the part of `shared` a transfer to a new task keeps (the rest is reset);
- `history`: per-step history (previous key, previous direction), reset when the parameters
  jump (context switch, transfer), since consecutive gradients then belong to different models;
- `scratch`: work buffers, never saved.
Everything else belongs to the network (the base optimizer's moments).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..kernels.optim import apply_updates


@dataclass(frozen=True)
class Transform:
    name: str
    init: Callable[[int, np.ndarray, np.dtype], dict]  # (n_params, bounds, dtype)
    update: Callable[[np.ndarray, np.ndarray, np.ndarray, dict, np.ndarray], None]
    key: str | None = None          # state entry that indexes later transforms (else: u itself)
    shared: tuple = ()
    carry: tuple = ()
    history: tuple = ()
    scratch: tuple = ()
    hyper: dict = field(default_factory=dict)


class Optimizer:
    """A chain of transforms applied to flat parameters (float32 or float64) split into groups."""

    def __init__(self, *transforms: Transform):
        self.transforms = transforms

    def __repr__(self) -> str:
        return "chain(" + ", ".join(t.name for t in self.transforms) + ")"

    def init(self, n_params: int, bounds: np.ndarray, dtype=np.float64) -> "OptState":
        """Per-parameter state in `dtype` (the parameters'); per-group rates stay float64."""
        bounds = np.ascontiguousarray(bounds, dtype=np.int64)
        return OptState([t.init(n_params, bounds, dtype) for t in self.transforms], bounds,
                        np.zeros(n_params, dtype))

    def step(self, theta: np.ndarray, grad: np.ndarray, state: "OptState") -> np.ndarray:
        """theta <- theta - chain(grad); returns the applied update (a view of a state buffer)."""
        u = state.u
        u[:] = grad
        key = u
        for t, s in zip(self.transforms, state.states):
            t.update(grad, u, key, s, state.bounds)
            if t.key is not None:
                key = s[t.key]
        apply_updates(theta, u)
        return u

    # -- views on the state by role ---------------------------------------------------------
    def _select(self, state: "OptState", role: str, invert: bool = False) -> dict:
        out = {}
        for i, (t, s) in enumerate(zip(self.transforms, state.states)):
            excluded = set(t.scratch)
            names = set(getattr(t, role))
            for name, arr in s.items():
                if name in excluded:
                    continue
                if (name in names) != invert:
                    out[f"{i}.{t.name}.{name}"] = arr
        return out

    def shared_state(self, state) -> dict:
        return self._select(state, "shared")

    def network_state(self, state) -> dict:
        return self._select(state, "shared", invert=True)

    def all_state(self, state) -> dict:
        return {**self.network_state(state), **self.shared_state(state)}

    def load(self, state: "OptState", arrays: dict, reset_history: bool) -> None:
        """Copy `arrays` (from one of the views above) into `state`, in place."""
        for i, (t, s) in enumerate(zip(self.transforms, state.states)):
            for name in s:
                k = f"{i}.{t.name}.{name}"
                if k in arrays:
                    src = np.asarray(arrays[k])
                    if src.shape != s[name].shape:
                        raise ValueError(f"optimizer state {k}: shape {src.shape}, "
                                         f"expected {s[name].shape}")
                    s[name][...] = src
            if reset_history:
                for name in t.history:
                    s[name][...] = 0.0

    def transfer(self, state: "OptState", arrays: dict) -> None:
        """Start a new task with the carried part of another run's shared state (section 6)."""
        fresh = self.init(len(state.u), state.bounds, state.u.dtype)
        for i, (t, s) in enumerate(zip(self.transforms, state.states)):
            for name in t.shared:
                s[name][...] = fresh.states[i][name]
                k = f"{i}.{t.name}.{name}"
                if name in t.carry and k in arrays:
                    s[name][...] = arrays[k]
            for name in t.history:
                s[name][...] = 0.0


@dataclass
class OptState:
    states: list
    bounds: np.ndarray
    u: np.ndarray


def chain(*transforms: Transform) -> Optimizer:
    return Optimizer(*transforms)
