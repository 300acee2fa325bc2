"""Reference trajectories of the simulated tasks, as joint-space arrays sampled every dt.

Most tasks are a Cartesian path of the end effector (straight segments with quintic, rest-to-rest
time scaling) turned into joint space by differential inverse kinematics (damped least squares
plus a pull toward the home pose in the null space), integrated at dt. The joint velocity
is then a smooth function of (q, t), so its finite difference is a clean reference
acceleration. Geometry defaults can be overridden per robot in the TOML `[tasks]` table.

`sines` is defined in joint space instead, analytically, so q, qd and qdd are exact:

  q_j(t) = home_j + r(t) * (c_j - home_j + A_j * s_j(t)),  s_j = sum_i w_ji sin(2 pi f_ji t + phi_ji)

with SINE_COMPONENTS frequencies per joint drawn log-uniformly in SINE_BAND, phases uniform,
weights w ~ U(0.5, 1) / f (each component contributes alike to the velocity), s_j normalised to
peak 1 over the trajectory. r is a septic ramp 0 -> 1 (zero velocity, acceleration and jerk at
both ends), so the arm starts at rest at home and blends into the sines around a centre c_j: home
clamped to SINE_AMPLITUDE inside the URDF position limits less LIMIT_MARGIN (joints without
limits get home +- FREE_RANGE). Since q = (1 - r) home + r (c + A s) is a convex combination,
|A_j| <= min(SINE_AMPLITUDE, distance of c_j to its limits) keeps q inside the limits; A_j is then
the largest amplitude for which the sampled |qd| <= VEL_FRACTION * velocity_limits and
|qdd| <= ACC_LIMIT hold at every step (qd and qdd are affine in A_j, so this is solved exactly).
The ramp lasts RAMP_S, longer if moving home to c alone would use more than half of either bound.

Tasks (each cycle of a multi-cycle run repeats the pattern with the next payload):
  lift         down by lift_depth (1 s), the payload attaches (0.5 s dwell), lift (1 s), hold (1 s)
  rectangle-h  a rectangle in the horizontal plane through the home pose, 1 s per side
  rectangle-v  the same in the vertical (world y-z) plane
  hold         stay at the home pose for 2 s per cycle (static torques; payload k from cycle k)
  sines        seeded multi-sine joint motion, 6 s per cycle, not repeating (payload k from cycle k)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rtlearn.sources.dynamics import Dynamics

TASKS = ("lift", "rectangle-h", "rectangle-v", "hold", "sines")
DEFAULTS = {"lift_depth": 0.20, "rectangle": [0.30, 0.20]}
MOVE_S, GRASP_S, HOLD_S, EDGE_S, STILL_S = 1.0, 0.5, 1.0, 1.0, 2.0
IK_GAIN, IK_DAMPING, POSTURE_GAIN = 50.0, 1e-4, 1.0
SINES_S = 6.0                  # s per cycle of `sines`
SINE_COMPONENTS = 4            # sinusoids per joint
SINE_BAND = (0.05, 0.6)        # Hz
SINE_AMPLITUDE = 1.0           # rad, largest excursion of a joint from its centre
LIMIT_MARGIN = 0.15            # rad kept clear of each URDF position limit (tracking error <= 0.1)
FREE_RANGE = np.pi             # rad either side of home, for joints the URDF does not limit
VEL_FRACTION = 0.5             # of the TOML velocity_limits
ACC_LIMIT = 4.0                # rad/s^2; keeps computed-torque commands inside the torque limits
RAMP_S = 1.0                   # s, shortest ramp-in from rest


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
    if task == "sines":
        return _sines(dyn, payloads, cycles, rng, dt)
    return _cartesian(task, dyn, payloads, cycles, rng, dt)


def _cartesian(task: str, dyn: Dynamics, payloads: list[str], cycles: int,
               rng: np.random.Generator, dt: float) -> Reference:
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


def position_limits(dyn: Dynamics) -> tuple[np.ndarray, np.ndarray]:
    """Per-joint URDF position limits (rad) from the Pinocchio model; -inf / inf where the URDF
    gives none (continuous joints, or lower >= upper as a revolute joint without limits loads)."""
    lo = np.full(dyn.robot.n_joints, -np.inf)
    hi = np.full(dyn.robot.n_joints, np.inf)
    model = dyn.model
    for j in range(dyn.robot.n_joints):
        joint = model.joints[j + 1]  # joint 0 is the universe
        if joint.nq != 1:
            continue
        a, b = model.lowerPositionLimit[joint.idx_q], model.upperPositionLimit[joint.idx_q]
        if np.isfinite(a) and np.isfinite(b) and a < b:
            lo[j], hi[j] = a, b
    return lo, hi


def _sines(dyn: Dynamics, payloads: list[str], cycles: int, rng: np.random.Generator,
           dt: float) -> Reference:
    robot, n = dyn.robot, dyn.robot.n_joints
    home = robot.home.astype(np.float64)
    per_cycle = int(round(SINES_S / dt))
    t = dt * np.arange(cycles * per_cycle)[:, None]
    lo, hi = position_limits(dyn)
    free = ~np.isfinite(lo)
    lo = np.where(free, home - FREE_RANGE, lo + LIMIT_MARGIN)
    hi = np.where(free, home + FREE_RANGE, hi - LIMIT_MARGIN)
    # Centre: home, moved inward until a full SINE_AMPLITUDE fits; a range too narrow for that
    # (or for the margins) is used around its middle.
    roomy = hi - lo > 2 * SINE_AMPLITUDE
    centre = np.where(roomy, np.clip(home, lo + SINE_AMPLITUDE, hi - SINE_AMPLITUDE), 0.5 * (lo + hi))
    reach = np.clip(np.minimum(centre - lo, hi - centre), 0.0, SINE_AMPLITUDE)
    shift = centre - home
    v_max = VEL_FRACTION * robot.velocity_limits

    # Septic ramp (C3: the jerk is continuous too; peak slope 35/16, peak curvature 7.514), long
    # enough that the shift alone takes at most half of each bound.
    ramp_s = max(RAMP_S, float(np.max(2.1875 * np.abs(shift) / (0.5 * v_max))),
                 float(np.max(np.sqrt(7.514 * np.abs(shift) / (0.5 * ACC_LIMIT)))))
    x = np.minimum(t / ramp_s, 1.0)
    r = 35 * x**4 - 84 * x**5 + 70 * x**6 - 20 * x**7
    rd = (140 * x**3 - 420 * x**4 + 420 * x**5 - 140 * x**6) / ramp_s
    rdd = (420 * x**2 - 1680 * x**3 + 2100 * x**4 - 840 * x**5) / ramp_s**2

    omega = 2 * np.pi * np.exp(rng.uniform(*np.log(SINE_BAND), size=(SINE_COMPONENTS, n)))
    phase = rng.uniform(0.0, 2 * np.pi, size=(SINE_COMPONENTS, n))
    weight = rng.uniform(0.5, 1.0, size=(SINE_COMPONENTS, n)) / omega
    s = np.zeros_like(t * home)
    sd, sdd = np.zeros_like(s), np.zeros_like(s)
    for w, om, ph in zip(weight, omega, phase):
        angle = om * t + ph
        s += w * np.sin(angle)
        sd += w * om * np.cos(angle)
        sdd -= w * om**2 * np.sin(angle)
    peak = np.abs(s).max(axis=0)
    s, sd, sdd = s / peak, sd / peak, sdd / peak

    # qd = u + A v and qdd = a + A b, affine in the amplitude A.
    u, v = rd * shift, rd * s + r * sd
    a, b = rdd * shift, rdd * s + 2 * rd * sd + r * sdd
    amp = np.minimum(reach, np.minimum(_largest_scale(u, v, v_max), _largest_scale(a, b, ACC_LIMIT)))
    q = home + r * (shift + amp * s)
    events = [(k * per_cycle, payloads[k % len(payloads)]) for k in range(cycles)]
    return Reference(q=q, qd=u + amp * v, qdd=a + amp * b, events=events, dt=dt)


def _largest_scale(u: np.ndarray, v: np.ndarray, bound) -> np.ndarray:
    """Per column, the largest A >= 0 with |u + A v| <= bound at every row (|u| <= bound)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        room = (bound - np.sign(v) * u) / np.abs(v)
    return np.where(v == 0, np.inf, room).min(axis=0)
