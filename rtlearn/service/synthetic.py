"""A smooth analytic joint stream for tests and benchmarks that need no physics engine:
tau = 5 sin(q) + (1 + payload) qdd + 0.5 qd + payload (2 + cos q), on sinusoidal joint motion
that repeats every PERIOD seconds."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from rtlearn.protocol.state import JointState

DT = 1e-3
PERIOD = 2.0  # s


def synthetic_state(seq: int, n: int = 7, payload: float = 0.0, context: str | None = None,
                    t: float | None = None) -> JointState:
    t = seq * DT if t is None else t
    w = np.pi * (1 + np.arange(n) % 2)  # 0.5 and 1 Hz: the pattern repeats every PERIOD
    phase = np.arange(n) * 0.9
    q = 0.6 * np.sin(w * t + phase)
    qd = 0.6 * w * np.cos(w * t + phase)
    qdd = -w * w * q
    tau = 5 * np.sin(q) + (1 + payload) * qdd + 0.5 * qd + payload * (2 + np.cos(q))
    return JointState(seq, t, q, qd, qdd, tau, context)


def synthetic_stream(count: int, n: int = 7, start_seq: int = 0, payload: float = 0.0,
                     context: str | None = None) -> Iterator[JointState]:
    for seq in range(start_seq, start_seq + count):
        yield synthetic_state(seq, n, payload, context)
