"""Base directions, rate rules without memory, and the registry of named optimizers.

Every optimizer is `chain(clip(C), <direction>, <rate rule>)`:
direction: identity (GD) or `adam()`; rate rule: `constant(lr)`, `hypergradient(lr, beta)`
or `memory(MemoryConfig)` (rtlearn.learner.memory).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..kernels import optim as K
from .memory import MemoryConfig, memory
from .transform import Optimizer, Transform, chain


def clip(c: float = 10.0) -> Transform:
    """Eq. O1: clip every coordinate of the gradient to [-c, c]."""
    return Transform("clip", lambda n, b, dtype=None: {},
                     lambda g, u, key, s, b: K.clip_by_value(u, c),
                     hyper={"clip": c})


def adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> Transform:
    """Eq. O2: Adam's direction. Its first moment m becomes the key of later rate rules."""

    def init(n, bounds, dtype=np.float64):
        return {"m": np.zeros(n, dtype), "v": np.zeros(n, dtype), "count": np.zeros(1)}

    def update(g, u, key, s, bounds):
        K.adam_direction(u, s["m"], s["v"], s["count"], b1, b2, eps)

    return Transform("adam", init, update, key="m", hyper={"b1": b1, "b2": b2, "eps": eps})


def constant(lr: float) -> Transform:
    """Eq. O3: one fixed rate. `lr` lives in the state so it can be changed live."""

    def init(n, bounds, dtype=np.float64):
        return {"lr": np.array([lr])}

    def update(g, u, key, s, bounds):
        K.scale(u, s["lr"][0])

    return Transform("constant", init, update, hyper={"lr": lr})


def hypergradient(lr: float, beta: float, per_group: bool = False) -> Transform:
    """Eq. O4: hypergradient descent on one rate (or one per group with per_group=True)."""

    def init(n, bounds, dtype=np.float64):
        own = bounds if per_group else np.array([0, n], dtype=np.int64)
        return {"alpha": np.full(len(own) - 1, lr), "u_prev": np.zeros(n, dtype),
                "bounds": own.copy()}

    def update(g, u, key, s, bounds):
        K.hypergradient(g, u, s["u_prev"], s["alpha"], beta, s["bounds"])

    return Transform("hypergradient", init, update, shared=("alpha",), carry=("alpha",),
                     history=("u_prev",), scratch=("bounds",),
                     hyper={"lr": lr, "beta": beta, "per_group": per_group})


def scale_key(decay: float = 0.99) -> Transform:
    """Eq. O5: the key of later rate rules in units of its own running RMS per group, so the
    memory sees the same key range whatever the gradient's scale."""

    def init(n, bounds, dtype=np.float64):
        return {"key": np.zeros(n, dtype), "ms": np.zeros(len(bounds) - 1), "count": np.zeros(1)}

    def update(g, u, key, s, bounds):
        K.scale_key(key, s["key"], s["ms"], s["count"], decay, bounds)

    return Transform("scale_key", init, update, key="key", history=("ms", "count"),
                     scratch=("key",), hyper={"decay": decay})


OPTIMIZERS = ("gd", "adam", "sgd-hd", "adam-hd", "metagd", "metagd-memadam",
              "adam-metagd", "adam-memadam")


def make_optimizer(name: str, lr: float, grad_clip: float = 10.0,
                   mem: MemoryConfig | None = None, hd_beta: float | None = None,
                   hd_per_group: bool = False) -> Optimizer:
    """The named optimizers every experiment compares (docs/algorithm.md section 7).

    metagd / adam-metagd train the memory by gradient ascent (mem.meta "log" or "gd"),
    metagd-memadam / adam-memadam by Adam; the memory starts at the base rate lr.
    """
    mem = mem or MemoryConfig()
    base = [clip(grad_clip)]
    if name.startswith("adam"):
        base.append(adam())
    if name in ("metagd", "adam-metagd", "metagd-memadam", "adam-memadam"):
        if name.endswith("memadam"):
            mem = replace(mem, meta="adam")
        elif mem.meta == "adam":
            raise ValueError(f"optimizer {name!r} trains the memory by gradient ascent; for "
                             f"memory meta 'adam' use optimizer "
                             f"{name.replace('metagd', 'memadam') if name != 'metagd' else 'metagd-memadam'!r}")
        mem = replace(mem, lr0=lr)
        keyed = [scale_key(mem.key_decay)] if mem.key == "scaled" else []
        return chain(*base, *keyed, memory(mem))
    rule = {
        "gd": lambda: constant(lr),
        "adam": lambda: constant(lr),
        "sgd-hd": lambda: hypergradient(lr, 1e-3 if hd_beta is None else hd_beta, hd_per_group),
        "adam-hd": lambda: hypergradient(lr, 1e-7 if hd_beta is None else hd_beta, hd_per_group),
    }.get(name)
    if rule is None:
        raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")
    return chain(*base, rule())
