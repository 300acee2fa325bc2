"""Pinocchio RNEA against PyBullet's own inverse dynamics, and payload gravity against J^T m g.

Tolerance 1e-9 N*m: both sides run a recursive Newton-Euler pass in double precision on the
same URDF parameters (measured max difference ~1e-13), so anything above rounding noise
(a wrong frame, a misplaced payload centre of mass, a stale inertia) shows up by orders of
magnitude.
"""

import numpy as np
import pybullet as pb
import pytest

from rtlearn.protocol.state import JointState
from rtlearn.sources.dynamics import Dynamics, residual
from rtlearn.sources.robot import load_robot
from rtlearn.sources.sim import PhysicsArm

TOL = 1e-9


def _pybullet_id(arm: PhysicsArm, q, qd, qdd):
    # PyBullet wants lists (numpy arrays crash it), one entry per movable joint.
    out = pb.calculateInverseDynamics(arm.body, q.tolist(), qd.tolist(), qdd.tolist(),
                                      physicsClientId=arm.client)
    return np.array(out)


@pytest.mark.parametrize("robot_name", ["kuka_iiwa", "franka_panda"])
@pytest.mark.parametrize("payload", ["none", "light", "heavy"])
def test_rnea_matches_pybullet_inverse_dynamics(robot_name, payload):
    robot = load_robot(robot_name)
    dyn = Dynamics(robot)
    arm = PhysicsArm(robot)
    try:
        # PyBullet builds its ID model at the first call and never refreshes it: set the
        # payload on this fresh body first.
        arm.set_payload(payload)
        rng = np.random.default_rng(7)
        n = robot.n_joints
        worst = 0.0
        for _ in range(100):
            q = rng.uniform(-2, 2, n)
            qd = rng.uniform(-2, 2, n)
            qdd = rng.uniform(-5, 5, n)
            ref = _pybullet_id(arm, q, qd, qdd)
            worst = max(worst, np.abs(dyn.rnea(q, qd, qdd, payload) - ref).max())
        assert worst < TOL
    finally:
        arm.close()


def test_payload_changes_torques_by_its_gravity_load():
    robot = load_robot("kuka_iiwa")
    dyn = Dynamics(robot)
    rng = np.random.default_rng(3)
    for name in ("light", "heavy"):
        p = robot.payload(name)
        for _ in range(10):
            q = rng.uniform(-2, 2, robot.n_joints)
            # Gravity of a point mass at the payload's centre: J^T (m g), independent of RNEA.
            expected = dyn.frame_jacobian(q, offset=p.com).T @ np.array([0, 0, 9.81 * p.mass])
            got = dyn.gravity(q, name) - dyn.gravity(q, "none")
            assert np.allclose(got, expected, atol=1e-9)


def test_payload_inertia_matters_when_accelerating():
    robot = load_robot("kuka_iiwa")
    dyn = Dynamics(robot)
    q = robot.home
    qdd = np.zeros(robot.n_joints)
    qdd[6] = 10.0  # spin the flange: only the payload's inertia about the tool axis resists
    heavy = robot.payload("heavy")
    extra = dyn.rnea(q, 0 * q, qdd, "heavy")[6] - dyn.rnea(q, 0 * q, qdd, "none")[6]
    # Parallel axes: I_zz + m * (x^2 + y^2) about the joint-7 axis (z of the flange link).
    expected = 10.0 * (heavy.inertia[2] + heavy.mass * (heavy.com[0] ** 2 + heavy.com[1] ** 2))
    assert extra == pytest.approx(expected, rel=1e-9)


def test_residual_and_perturbed_model():
    robot = load_robot("kuka_iiwa")
    dyn = Dynamics(robot)
    rng = np.random.default_rng(0)
    q, qd, qdd = (rng.uniform(-1, 1, 7) for _ in range(3))
    tau = dyn.rnea(q, qd, qdd)
    state = JointState(0, 0.0, q, qd, qdd, tau + 1.0)
    assert np.allclose(residual(dyn, state), 1.0)
    wrong = dyn.perturbed(np.random.default_rng(1), 0.3)
    assert np.abs(wrong.rnea(q, qd, qdd) - tau).max() > 0.1
    assert np.allclose(dyn.rnea(q, qd, qdd), tau)  # the original model is left untouched
    with pytest.raises(ValueError, match="qdd"):
        residual(dyn, JointState(0, 0.0, q, qd, None, tau))
