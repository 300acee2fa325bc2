"""The real arm's side: turn a robot's readings into JointStates and publish them.

A robot-side program either
  * calls RobotBridge.publish(t, q, qd, tau[, qdd]) from its own control loop, and
    RobotBridge.poll_prediction() to get the daemon's torque predictions back; or
  * wraps a blocking `read()` function in a BridgeSource, which is then a JointSource like
    the simulation and the log replay, and hands it to `stream()`.
When the arm gives no acceleration, qdd is estimated by `filters.CausalDerivative` on qd
(least-squares slope over the last `window` readings: lag (window - 1) / 2 samples, 7 ms at
1 kHz with the default 15).
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np

from rtlearn.protocol.state import JointState
from rtlearn.sources.base import JointSource
from rtlearn.sources.filters import DEFAULT_WINDOW, CausalDerivative
from rtlearn.sources.robot import RobotSpec

Reading = tuple  # (t, q, qd, tau) or (t, q, qd, tau, qdd); t in s on any monotonic clock


class StateAssembler:
    """Numbers readings, makes time relative to the first one and fills in qdd when missing."""

    def __init__(self, robot: RobotSpec, window: int = DEFAULT_WINDOW, context: str | None = None):
        self.robot, self.context = robot, context
        self._acc = CausalDerivative(robot.n_joints, window)
        self._seq = 0
        self._t0: float | None = None

    def __call__(self, t: float, q, qd, tau, qdd=None) -> JointState:
        n = self.robot.n_joints
        q, qd, tau = (np.asarray(v, np.float64).reshape(n) for v in (q, qd, tau))
        self._t0 = t if self._t0 is None else self._t0
        t = float(t - self._t0)
        estimate = self._acc.update(t, qd)  # kept warm even when the arm sends qdd
        qdd = estimate if qdd is None else np.asarray(qdd, np.float64).reshape(n)
        state = JointState(self._seq, t, q, qd, qdd, tau, self.context)
        self._seq += 1
        return state


class BridgeSource(JointSource):
    """A real arm as a JointSource. `read()` blocks until the next reading and returns it, or
    None when the arm stops."""

    def __init__(self, robot: RobotSpec, read: Callable[[], Reading | None],
                 window: int = DEFAULT_WINDOW, context: str | None = None):
        self.robot = robot
        self._read = read
        self._assemble = StateAssembler(robot, window, context)

    def __iter__(self) -> Iterator[JointState]:
        while (reading := self._read()) is not None:
            yield self._assemble(*reading)


class RobotBridge:
    """What a robot-side program uses: publish readings to the daemon, poll its predictions."""

    def __init__(self, robot: RobotSpec, state_endpoints: Sequence[str],
                 prediction_endpoint: str | None = None, window: int = DEFAULT_WINDOW,
                 context: str | None = None, **client_options):
        from rtlearn.protocol.client import RobotClient

        self.robot = robot
        self._assemble = StateAssembler(robot, window, context)
        self.client = RobotClient(state_endpoints=list(state_endpoints),
                                  prediction_endpoint=prediction_endpoint, robot=robot,
                                  **client_options)

    def publish(self, t: float, q, qd, tau, qdd=None) -> JointState:
        """Non-blocking; returns the JointState that was sent (with its estimated qdd)."""
        state = self._assemble(t, q, qd, tau, qdd)
        self.client.publish(state)
        return state

    def poll_prediction(self):
        return self.client.poll_prediction()

    def close(self) -> None:
        self.client.close()


def stream(source: JointSource, client, on_state: Callable[[JointState], None] | None = None,
           on_prediction: Callable[[object], None] | None = None, limit: int | None = None) -> int:
    """Publish every state of `source` through a RobotClient (or anything with publish /
    poll_prediction); returns how many were sent. Predictions are drained after each send."""
    sent = 0
    for state in source:
        client.publish(state)
        sent += 1
        if on_state is not None:
            on_state(state)
        while (p := client.poll_prediction()) is not None:
            if on_prediction is not None:
                on_prediction(p)
        if limit is not None and sent >= limit:
            break
    return sent
