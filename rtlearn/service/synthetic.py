"""A smooth analytic joint stream for tests and benchmarks that need no physics engine:
tau = 5 sin(q) + (1 + payload) qdd + 0.5 qd + payload (2 + cos q), on sinusoidal joint motion."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from rtlearn.sources.base import JointState

DT = 1e-3


def synthetic_state(seq: int, n: int = 7, payload: float = 0.0, context: str | None = None,
                    t: float | None = None) -> JointState:
    t = seq * DT if t is None else t
    w = 0.5 + 0.3 * np.arange(n)
    phase = np.arange(n) * 0.9
    q = 0.8 * np.sin(w * t + phase)
    qd = 0.8 * w * np.cos(w * t + phase)
    qdd = -w * w * q
    tau = 5 * np.sin(q) + (1 + payload) * qdd + 0.5 * qd + payload * (2 + np.cos(q))
    return JointState(seq, t, q, qd, qdd, tau, context)


def synthetic_stream(count: int, n: int = 7, start_seq: int = 0, payload: float = 0.0,
                     context: str | None = None) -> Iterator[JointState]:
    for seq in range(start_seq, start_seq + count):
        yield synthetic_state(seq, n, payload, context)
