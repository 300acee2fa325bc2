"""Reference trajectories of the simulated tasks, as joint-space arrays sampled every dt.

A task is a Cartesian path of the end effector (straight segments with quintic, rest-to-rest
time scaling) turned into joint space by differential inverse kinematics (damped least squares
plus a pull toward the home pose in the null space), integrated at dt. The joint velocity
is then a smooth function of (q, t), so its finite difference is a clean reference
acceleration. Geometry defaults can be overridden per robot in the TOML `[tasks]` table.

Tasks (each cycle of a multi-cycle run repeats the pattern with the next payload):
  lift         down by lift_depth (1 s), the payload attaches (0.5 s dwell), lift (1 s), hold (1 s)
  rectangle-h  a rectangle in the horizontal plane through the home pose, 1 s per side
  rectangle-v  the same in the vertical (world y-z) plane
  hold         stay at the home pose for 2 s per cycle (static torques; payload k from cycle k)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rtlearn.sources.dynamics import Dynamics

TASKS = ("lift", "rectangle-h", "rectangle-v", "hold")
DEFAULTS = {"lift_depth": 0.20, "rectangle": [0.30, 0.20]}
MOVE_S, GRASP_S, HOLD_S, EDGE_S, STILL_S = 1.0, 0.5, 1.0, 1.0, 2.0
IK_GAIN, IK_DAMPING, POSTURE_GAIN = 50.0, 1e-4, 1.0


@dataclass(slots=True)
class Reference:
    q: np.ndarray                      # (N, n) rad
    qd: np.ndarray                     # (N, n) rad/s
    qdd: np.ndarray                    # (N, n) rad/s^2
    events: list[tuple[int, str]]      # (step, payload name): payload changes scheduled by the task
    dt: float

    def __len__(self) -> int:
        return len(self.q)


def _segments(task: str, start: np.ndarray, payloads: list[str], cycles: int,
              geom: dict, rng: np.random.Generator):
    """Yield (target point, duration s, payload attached at segment start or None)."""
    def jitter() -> float:  # per-trial timing variation
        return rng.uniform(0.9, 1.1)

    if task == "lift":
        depth = float(geom["lift_depth"]) * rng.uniform(0.85, 1.15)
        pick = start + np.r_[rng.uniform(-0.03, 0.03, 2), -depth]
        for k in range(cycles):
            yield pick, MOVE_S * jitter(), None
            yield pick, GRASP_S, payloads[k % len(payloads)]
            yield start, MOVE_S * jitter(), None
            yield start, HOLD_S, None
        return
    if task == "hold":
        for k in range(cycles):
            yield start, STILL_S, payloads[k % len(payloads)]
        return
    a, b = np.asarray(geom["rectangle"], np.float64) * rng.uniform(0.9, 1.1)
    centre = start + np.r_[rng.uniform(-0.02, 0.02, 3)]
    signs = ([1, 1], [-1, 1], [-1, -1], [1, -1])
    axes = [0, 1] if task == "rectangle-h" else [1, 2]
    corners = []
    for sx, sy in signs:
        c = centre.copy()
        c[axes] += 0.5 * np.array([sx * a, sy * b])
        corners.append(c)
    yield corners[0], MOVE_S * jitter(), payloads[0]
    for k in range(cycles):
        for i in range(4):
            attach = payloads[k % len(payloads)] if i == 0 and k > 0 else None
            yield corners[(i + 1) % 4], EDGE_S * jitter(), attach


def make_reference(task: str, dyn: Dynamics, payloads: list[str], cycles: int = 1,
                   seed: int = 0, dt: float = 1e-3) -> Reference:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    if cycles < 1:
        raise ValueError("cycles must be >= 1")
    for p in payloads:
        dyn.robot.payload(p)  # fail before simulating on an unknown name
    rng = np.random.default_rng([seed, 1])
    geom = {**DEFAULTS, **dyn.robot.tasks}
    home = dyn.robot.home.copy()
    x0 = dyn.frame_position(home)
    path_x, path_xd = [], []
    events: list[tuple[int, str]] = []
    here = x0
    for target, duration, attach in _segments(task, x0, payloads, cycles, geom, rng):
        steps = int(round(duration / dt))
        tau = np.arange(steps) / steps
        s = 10 * tau**3 - 15 * tau**4 + 6 * tau**5
        sd = (30 * tau**2 - 60 * tau**3 + 30 * tau**4) / duration
        if attach is not None:
            events.append((sum(map(len, path_x)), attach))
        path_x.append(here + np.outer(s, target - here))
        path_xd.append(np.outer(sd, target - here))
        here = target
    X, XD = np.concatenate(path_x), np.concatenate(path_xd)
    n, N = dyn.robot.n_joints, len(X)
    q = np.empty((N + 1, n))
    qd = np.empty((N + 1, n))
    q[0] = home
    damping, identity = IK_DAMPING * np.eye(3), np.eye(n)
    for k in range(N + 1):
        xr, xdr = (X[k], XD[k]) if k < N else (X[-1], np.zeros(3))
        J = dyn.frame_jacobian(q[k])
        J_pinv = J.T @ np.linalg.inv(J @ J.T + damping)
        v = xdr + IK_GAIN * (xr - dyn.frame_position(q[k]))
        qd[k] = J_pinv @ v + (identity - J_pinv @ J) @ (POSTURE_GAIN * (home - q[k]))
        if k < N:
            q[k + 1] = q[k] + dt * qd[k]
    qdd = np.diff(qd, axis=0) / dt
    return Reference(q=q[:N], qd=qd[:N], qdd=qdd, events=events, dt=dt)
