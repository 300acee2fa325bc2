"""Rigid-body dynamics of a robot with Pinocchio: RNEA torques of the nominal model, with or
without a payload, kinematics of the end effector, and the residual learning target.

The URDF is parsed once per Dynamics; each payload gets its own model copy (Pinocchio's
`model.inertias[j]` aliases the model, so one shared model cannot be edited per call).
"""

from __future__ import annotations

import numpy as np
import pinocchio as pin

from rtlearn.protocol.state import JointState
from rtlearn.sources.base import RobotSpecError
from rtlearn.sources.robot import RobotSpec


class Dynamics:
    def __init__(self, robot: RobotSpec, model: pin.Model | None = None):
        self.robot = robot
        if model is None:
            model = pin.buildModelFromXML(robot.prepared_urdf())
            names = list(model.names)[1:]
            if names != robot.joints:
                raise RobotSpecError(robot.file, "joints",
                                     f"must list the URDF's movable joints base to tip: {names}")
        self.model = model
        self.ee_frame = model.getFrameId(robot.end_effector)
        self._models: dict[str, tuple[pin.Model, pin.Data]] = {"none": (model, model.createData())}
        self._kin_data = model.createData()

    def _pair(self, payload: str) -> tuple[pin.Model, pin.Data]:
        pair = self._models.get(payload)
        if pair is None:
            p = self.robot.payload(payload)
            model = self.model.copy()
            frame = model.frames[self.ee_frame]
            held = pin.Inertia(p.mass, p.com, np.diag(p.inertia))
            model.inertias[frame.parentJoint] = (model.inertias[frame.parentJoint]
                                                 + frame.placement.act(held))
            pair = self._models[payload] = (model, model.createData())
        return pair

    def rnea(self, q, qd, qdd, payload: str = "none") -> np.ndarray:
        """Joint torques M(q) qdd + C(q, qd) qd + g(q) of the rigid model holding `payload`."""
        model, data = self._pair(payload)
        return pin.rnea(model, data, np.asarray(q, np.float64), np.asarray(qd, np.float64),
                        np.asarray(qdd, np.float64)).copy()

    def gravity(self, q, payload: str = "none") -> np.ndarray:
        model, data = self._pair(payload)
        return pin.computeGeneralizedGravity(model, data, np.asarray(q, np.float64)).copy()

    def mass_matrix(self, q, payload: str = "none") -> np.ndarray:
        model, data = self._pair(payload)
        M = pin.crba(model, data, np.asarray(q, np.float64))
        return np.triu(M) + np.triu(M, 1).T

    def frame_position(self, q, frame: str | None = None, offset=None) -> np.ndarray:
        """World position of a point fixed in `frame` (default: end-effector link), in m."""
        fid = self.ee_frame if frame is None else self.model.getFrameId(frame)
        data = self._kin_data
        pin.framesForwardKinematics(self.model, data, np.asarray(q, np.float64))
        placement = data.oMf[fid]
        local = np.zeros(3) if offset is None else np.asarray(offset, np.float64)
        return placement.act(local)

    def frame_jacobian(self, q, frame: str | None = None, offset=None) -> np.ndarray:
        """(3, n) Jacobian of that point's world position with respect to q."""
        fid = self.ee_frame if frame is None else self.model.getFrameId(frame)
        data = self._kin_data
        q = np.asarray(q, np.float64)
        J = pin.computeFrameJacobian(self.model, data, q, fid, pin.LOCAL_WORLD_ALIGNED)
        if offset is None:
            return J[:3].copy()
        lever = data.oMf[fid].rotation @ np.asarray(offset, np.float64)
        return J[:3] - pin.skew(lever) @ J[3:]

    def perturbed(self, rng: np.random.Generator, spread: float) -> "Dynamics":
        """A deliberately wrong copy: each link's mass and inertia scaled by a factor drawn in
        [1 - spread, 1 + spread] and its centre of mass moved by up to 2 cm per axis."""
        model = self.model.copy()
        for j in range(1, model.njoints):
            I = model.inertias[j]
            if I.mass <= 0:
                continue
            k_m, k_i = rng.uniform(1 - spread, 1 + spread, size=2)
            com = I.lever + rng.uniform(-0.02, 0.02, size=3)
            model.inertias[j] = pin.Inertia(I.mass * k_m, com, I.inertia * k_i)
        return Dynamics(self.robot, model)


def residual(dyn: Dynamics, state: JointState, payload: str = "none") -> np.ndarray:
    """The residual target tau - RNEA(q, qd, qdd) of the nominal model (the alternative to
    learning the full torque). Needs an acceleration: estimate it first for arms without one."""
    if state.qdd is None:
        raise ValueError("residual needs qdd; estimate it with rtlearn.sources.filters first")
    return state.tau - dyn.rnea(state.q, state.qd, state.qdd, payload)
