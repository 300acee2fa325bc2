"""PyBullet simulation of a torque-controlled arm tracking a task, as a JointSource.

Physics: DIRECT mode, dt = 1 ms, gravity -9.81, default velocity motors disabled, URDF joint
damping and link damping zeroed so that the only unmodelled forces are ours:
  * joint friction  tau_f = viscous * qd + coulomb * tanh(qd / v_s), scaled per trial. It is
    applied explicitly, which is stable only while dt * coulomb / (v_s * M_jj) stays small:
    v_s = max(0.01 rad/s, 2 dt coulomb / M_jj(home)) per joint (0.72 rad/s for the iiwa's light
    last joint, whose inertia is 1e-3 kg*m^2; 0.01 for the others);
  * the payload, a massless link per payload fixed at its centre of mass whose mass and
    inertia are set when it is held (takes effect at the next step).
Controller: computed torque on a deliberately wrong nominal model (link masses and inertias
off by up to +-30 %, centres of mass by up to 2 cm, no friction) with PID feedback placing a
triple closed-loop pole at -bandwidth; commands are clamped to the torque limits. The nominal
model carries no payload, unless `load_data` (an industrial controller's configured load): with
a loop gain alpha = M_nominal / M_true the PID stays stable only while alpha > 1/9 (Routh), and
the iiwa's wrist (M_66 ~ 0.009 kg*m^2) holding the 4 kg payload has alpha ~ 0.05, quenched by
friction in the small lift motions but diverging (|qd| > 10 rad/s) in `sines`. So `load_data`
defaults to on for `sines` and off for the other tasks, whose streams stay as recorded.

Packet k carries the state (q_k, qd_k) read before step k, the torque tau_k commanded during
the step, and qdd_k = (qd_{k+1} - qd_k) / dt. PyBullet integrates semi-implicitly
(qd_{k+1} = qd_k + dt * qdd_k), so this qdd_k is exactly the acceleration the torque produced:
tau_k = RNEA_true(q_k, qd_k, qdd_k) + tau_f(qd_k). Optional Gaussian sensor noise is added to
the published values only; the controller sees the true state.
"""

from __future__ import annotations

import os
import tempfile
from typing import Iterator, Sequence

import numpy as np

from rtlearn.protocol.state import JointState
from rtlearn.sources.base import JointSource, paced
from rtlearn.sources.dynamics import Dynamics
from rtlearn.sources.robot import PAYLOAD_LINK_PREFIX, RobotSpec, load_robot
from rtlearn.sources.tasks import make_reference


def _import_pybullet():
    """pybullet, imported without the "pybullet build time" line its C module prints on
    every import (to stderr or stdout, depending on the build; below Python's sys.stdout /
    sys.stderr, so only the file descriptors can hold it back)."""
    import ctypes
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    try:
        with open(os.devnull, "wb") as null:
            for fd in saved:
                os.dup2(null.fileno(), fd)
            try:
                import pybullet
            finally:
                ctypes.CDLL(None).fflush(None)  # C stdio buffers a pipe: empty it here
    finally:
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
    return pybullet


pb = _import_pybullet()

DT = 1e-3
GRAVITY = -9.81
NOMINAL_SPREAD = 0.3
FRICTION_SPREAD = 0.2
COULOMB_SMOOTHING = 0.01        # rad/s, the sharpest tanh used, where the joint is heavy enough
INTEGRAL_LIMIT = 0.5            # rad*s, anti-windup clamp of the integrated error
LOAD_DATA_TASKS = ("sines",)    # tasks whose controller knows the held payload by default
# Sensor noise standard deviations at noise=1.0 (q: encoder, qd/qdd: filtered, tau: current sensing).
NOISE_STD = {"q": 1e-4, "qd": 2e-3, "qdd": 5e-2, "tau": 5e-2}


class PhysicsArm:
    """One PyBullet DIRECT client holding one arm, driven by joint torques."""

    def __init__(self, robot: RobotSpec):
        self.robot = robot
        self.client = pb.connect(pb.DIRECT)
        c = self.client
        pb.setGravity(0, 0, GRAVITY, physicsClientId=c)
        pb.setTimeStep(DT, physicsClientId=c)
        # PyBullet only loads URDF files: write the prepared text next to nothing, load, delete.
        fd, path = tempfile.mkstemp(suffix=".urdf", prefix=f"rtlearn_{robot.name}_")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(robot.prepared_urdf())
            self.body = pb.loadURDF(path, useFixedBase=True, flags=pb.URDF_USE_INERTIA_FROM_FILE,
                                    physicsClientId=c)
        finally:
            os.unlink(path)
        joint_index, link_index = {}, {}
        for i in range(pb.getNumJoints(self.body, physicsClientId=c)):
            info = pb.getJointInfo(self.body, i, physicsClientId=c)
            joint_index[info[1].decode()] = i
            link_index[info[12].decode()] = i
        self.joints = [joint_index[j] for j in robot.joints]
        self.payload_links = {name: link_index[PAYLOAD_LINK_PREFIX + name]
                              for name, p in robot.payloads.items() if p.mass > 0}
        for link in range(-1, pb.getNumJoints(self.body, physicsClientId=c)):
            pb.changeDynamics(self.body, link, linearDamping=0.0, angularDamping=0.0,
                              jointDamping=0.0, physicsClientId=c)
        pb.setJointMotorControlArray(self.body, self.joints, pb.VELOCITY_CONTROL,
                                     forces=[0.0] * len(self.joints), physicsClientId=c)
        self.payload = "none"

    def reset(self, q: np.ndarray) -> None:
        for j, qj in zip(self.joints, q):
            pb.resetJointState(self.body, j, float(qj), 0.0, physicsClientId=self.client)

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        states = pb.getJointStates(self.body, self.joints, physicsClientId=self.client)
        return (np.array([s[0] for s in states]), np.array([s[1] for s in states]))

    def step(self, tau: np.ndarray) -> None:
        pb.setJointMotorControlArray(self.body, self.joints, pb.TORQUE_CONTROL,
                                     forces=tau.tolist(), physicsClientId=self.client)
        pb.stepSimulation(physicsClientId=self.client)

    def set_payload(self, name: str) -> None:
        """Hold payload `name` from the next step on (microseconds; no reload)."""
        new = self.robot.payload(name)
        old_link = self.payload_links.get(self.payload)
        if old_link is not None:
            pb.changeDynamics(self.body, old_link, mass=0.0, localInertiaDiagonal=[0.0] * 3,
                              physicsClientId=self.client)
        new_link = self.payload_links.get(name)
        if new_link is not None:
            pb.changeDynamics(self.body, new_link, mass=new.mass,
                              localInertiaDiagonal=new.inertia.tolist(), physicsClientId=self.client)
        self.payload = name

    def close(self) -> None:
        if self.client is not None:
            pb.disconnect(physicsClientId=self.client)
            self.client = None


class SimSource(JointSource):
    """A simulated arm running a task; iterating steps the physics and yields one JointState
    per millisecond.

    payload: the object picked up by `lift` (or held during a rectangle); a sequence gives
    one payload per cycle, cycled, e.g. ("none", "light", "heavy") with cycles=6.
    schedule: extra (time s, payload) swaps; set_payload() swaps at the next step, and that
    live payload holds: the task's own payload changes (one per cycle) no longer apply in that
    iteration (scheduled swaps still do).
    seed: draws the nominal-model error, friction, task geometry/timing and noise.
    load_data: the controller's nominal model includes the held payload (None: only for `sines`,
    see the module docstring).
    noise: sensor noise scale (0 = none, 1 = NOISE_STD).
    realtime: pace the iteration at 1 kHz on the wall clock (absolute deadlines).
    """

    def __init__(self, robot: RobotSpec | str, task: str = "lift",
                 payload: str | Sequence[str] = "none", seed: int = 0,
                 schedule: Sequence[tuple[float, str]] | None = None, realtime: bool = False,
                 noise: float = 0.0, cycles: int = 1, friction: bool = True,
                 load_data: bool | None = None):
        self.robot = load_robot(robot) if isinstance(robot, str) else robot
        payloads = [payload] if isinstance(payload, str) else list(payload)
        for name in payloads + [name for _, name in schedule or ()]:
            self.robot.payload(name)
        self.task, self.seed, self.realtime, self.noise = task, seed, realtime, float(noise)
        self.payloads, self.cycles = payloads, cycles
        self.load_data = task in LOAD_DATA_TASKS if load_data is None else load_data
        self.dynamics = Dynamics(self.robot)
        rng = np.random.default_rng([seed, 0])
        self.nominal = self.dynamics.perturbed(rng, NOMINAL_SPREAD)
        k = rng.uniform(1 - FRICTION_SPREAD, 1 + FRICTION_SPREAD, size=(2, self.robot.n_joints))
        self.viscous = self.robot.viscous_friction * k[0] * friction
        self.coulomb = self.robot.coulomb_friction * k[1] * friction
        inertia = np.diag(self.dynamics.mass_matrix(self.robot.home))
        self.coulomb_smoothing = np.maximum(COULOMB_SMOOTHING, 2 * DT * self.coulomb / inertia)
        self._noise_rng = np.random.default_rng([seed, 2])
        self.reference = make_reference(task, self.dynamics, payloads, cycles, seed, DT)
        # step -> [(payload, set by the task itself)]
        events = [(k, name, True) for k, name in self.reference.events]
        events += [(int(round(t / DT)), name, False) for t, name in schedule or ()]
        self._events: dict[int, list[tuple[str, bool]]] = {}
        for step, name, own in sorted(events, key=lambda e: e[0]):
            self._events.setdefault(step, []).append((name, own))
        self._pending: str | None = None
        self.arm = PhysicsArm(self.robot)

    def __len__(self) -> int:
        return len(self.reference)

    def set_payload(self, name: str) -> None:
        self.robot.payload(name)
        self._pending = name  # applied by the iterating thread before its next step

    def friction(self, qd: np.ndarray) -> np.ndarray:
        return self.viscous * qd + self.coulomb * np.tanh(qd / self.coulomb_smoothing)

    def __iter__(self) -> Iterator[JointState]:
        return paced(self._steps(), 1.0 if self.realtime else None)

    def _steps(self) -> Iterator[JointState]:
        ref, arm, robot = self.reference, self.arm, self.robot
        w = robot.bandwidth
        kp, kd, ki = 3 * w * w, 3 * w, w ** 3
        limit = robot.torque_limits
        integral = np.zeros(robot.n_joints)
        arm.reset(robot.home)  # each iteration replays the same trial from rest
        arm.set_payload("none")
        model_payload = "none"
        live = False  # a set_payload() came: the task's own payload changes stop
        q, qd = arm.read()
        for k in range(len(ref)):
            for name, own in self._events.get(k, ()):
                if not (own and live):
                    arm.set_payload(name)
            if self._pending is not None:
                arm.set_payload(self._pending)
                self._pending, live = None, True
            if self.load_data and arm.payload != model_payload:
                # The integral holds the unmodelled torques (friction) as an acceleration: rescale
                # it to the new inertia so the torque it commands does not jump with the model.
                integral *= (np.diag(self.nominal.mass_matrix(q, model_payload))
                             / np.diag(self.nominal.mass_matrix(q, arm.payload)))
                model_payload = arm.payload
            e = ref.q[k] - q
            integral = np.clip(integral + DT * e, -INTEGRAL_LIMIT, INTEGRAL_LIMIT)
            qdd_cmd = ref.qdd[k] + kd * (ref.qd[k] - qd) + kp * e + ki * integral
            tau = np.clip(self.nominal.rnea(q, qd, qdd_cmd, model_payload), -limit, limit)
            arm.step(tau - self.friction(qd))
            q_next, qd_next = arm.read()
            state = JointState(seq=k, t=k * DT, q=q, qd=qd, qdd=(qd_next - qd) / DT, tau=tau,
                               context=arm.payload)
            if self.noise:
                self._add_noise(state)
            yield state
            q, qd = q_next, qd_next

    def _add_noise(self, s: JointState) -> None:
        g = self._noise_rng
        n = self.robot.n_joints
        s.q = s.q + self.noise * NOISE_STD["q"] * g.standard_normal(n)
        s.qd = s.qd + self.noise * NOISE_STD["qd"] * g.standard_normal(n)
        s.qdd = s.qdd + self.noise * NOISE_STD["qdd"] * g.standard_normal(n)
        s.tau = s.tau + self.noise * NOISE_STD["tau"] * g.standard_normal(n)

    def close(self) -> None:
        self.arm.close()
