"""The `sines` reference: limits, exact derivatives, seeding, payload events, odd robot files."""

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from rtlearn.sources.dynamics import Dynamics
from rtlearn.sources.robot import ROBOTS_DIR, load_robot
from rtlearn.sources.tasks import (ACC_LIMIT, FREE_RANGE, LIMIT_MARGIN, SINES_S, VEL_FRACTION,
                                   make_reference, position_limits)

DT = 1e-3
PAYLOADS = ["none", "light", "heavy"]


@pytest.fixture(scope="module", params=["kuka_iiwa", "franka_panda"])
def dyn(request):
    return Dynamics(load_robot(request.param))


def _check_bounds(dyn, ref, lo, hi):
    robot = dyn.robot
    assert np.all(ref.q >= lo - 1e-12) and np.all(ref.q <= hi + 1e-12)
    assert np.all(np.abs(ref.qd) <= VEL_FRACTION * robot.velocity_limits + 1e-12)
    assert np.all(np.abs(ref.qdd) <= ACC_LIMIT + 1e-12)
    # Starts at rest at home, so the simulation (reset there) starts on the reference.
    assert np.array_equal(ref.q[0], robot.home)
    assert np.abs(ref.qd[0]).max() == 0 and np.abs(ref.qdd[0]).max() == 0


@pytest.mark.parametrize("seed", range(5))
def test_sines_respect_position_velocity_and_acceleration_bounds(dyn, seed):
    ref = make_reference("sines", dyn, PAYLOADS, cycles=2, seed=seed, dt=DT)
    assert len(ref) == round(2 * SINES_S / DT)
    lo, hi = position_limits(dyn)
    assert np.all(np.isfinite(lo)) and np.all(lo < dyn.robot.home) and np.all(dyn.robot.home < hi)
    _check_bounds(dyn, ref, lo + LIMIT_MARGIN, hi - LIMIT_MARGIN)
    # Rich: every joint moves, and the scaling is tight (the bounds are reached, not merely respected).
    assert np.ptp(ref.q, axis=0).min() > 0.3
    used = np.maximum(np.abs(ref.qd).max(0) / (VEL_FRACTION * dyn.robot.velocity_limits),
                      np.abs(ref.qdd).max(0) / ACC_LIMIT)
    assert used.max() > 0.99 and np.median(used) > 0.6


def test_sines_derivatives_are_exact(dyn):
    """Central differences of q and qd match qd and qdd to within their truncation error,
    dt^2/6 * max|next derivative|, estimated from the next difference of qdd."""
    ref = make_reference("sines", dyn, PAYLOADS, cycles=1, seed=7, dt=DT)
    jerk = np.abs(np.diff(ref.qdd, axis=0)).max() / DT
    snap = np.abs(np.diff(ref.qdd, 2, axis=0)).max() / DT**2
    fd_qd = (ref.q[2:] - ref.q[:-2]) / (2 * DT)
    fd_qdd = (ref.qd[2:] - ref.qd[:-2]) / (2 * DT)
    assert np.abs(fd_qd - ref.qd[1:-1]).max() <= 1.5 * DT**2 / 6 * jerk + 1e-12
    assert np.abs(fd_qdd - ref.qdd[1:-1]).max() <= 1.5 * DT**2 / 6 * snap + 1e-12
    assert DT**2 / 6 * jerk < 1e-5  # the test has teeth: a missing ramp term is ~1e-2


def test_sines_are_seeded(dyn):
    a = make_reference("sines", dyn, ["none"], cycles=1, seed=3)
    b = make_reference("sines", dyn, ["none"], cycles=1, seed=3)
    c = make_reference("sines", dyn, ["none"], cycles=1, seed=4)
    assert np.array_equal(a.q, b.q) and np.array_equal(a.qdd, b.qdd)
    assert np.abs(a.q - c.q).max() > 0.1


def test_sines_events_are_one_payload_per_cycle(dyn):
    names = ["none", "light", "heavy", "light", "none"]
    ref = make_reference("sines", dyn, names[:3], cycles=5, seed=0)
    per_cycle = round(SINES_S / DT)
    assert len(ref) == 5 * per_cycle
    assert ref.events == [(k * per_cycle, name) for k, name in enumerate(names[:3] * 2)][:5]
    ref = make_reference("sines", dyn, names, cycles=5, seed=0)
    assert ref.events == [(k * per_cycle, name) for k, name in enumerate(names)]


def _odd_arm(tmp_path, home):
    """The KUKA with its last joint's URDF limits removed and a given home pose."""
    import pybullet_data

    shutil.copytree(Path(pybullet_data.getDataPath()) / "kuka_iiwa", tmp_path / "kuka")
    urdf = tmp_path / "kuka" / "model.urdf"
    text, count = re.subn(r'lower="-3.05432619099" upper="3.05432619099"', 'lower="0" upper="0"',
                          urdf.read_text())
    assert count == 1
    urdf.write_text(text)
    toml = (ROBOTS_DIR / "kuka_iiwa.toml").read_text()
    toml = toml.replace('"pybullet_data://kuka_iiwa/model.urdf"', '"kuka/model.urdf"')
    toml = re.sub(r"^home = .*$", f"home = {list(home)}", toml, flags=re.M)
    (tmp_path / "odd.toml").write_text(toml)
    return Dynamics(load_robot(tmp_path / "odd.toml"))


def test_sines_on_an_arm_with_home_at_a_limit_and_an_unlimited_joint(tmp_path):
    # Joint 2 0.01 rad inside its limit (inside the margin), joint 4 in a 0.1 rad gap from it.
    dyn = _odd_arm(tmp_path, [0.0, 2.084, 0.0, -2.0, 0.0, 1.1, 2.5])
    lo, hi = position_limits(dyn)
    assert lo[6] == -np.inf and hi[6] == np.inf
    home = dyn.robot.home
    lo = np.where(np.isfinite(lo), lo, home - FREE_RANGE)
    hi = np.where(np.isfinite(hi), hi, home + FREE_RANGE)
    for seed in range(3):
        ref = make_reference("sines", dyn, ["none"], cycles=2, seed=seed)
        _check_bounds(dyn, ref, lo, hi)
        # Once ramped in, even the joints started inside the margin keep clear of their limits.
        late = ref.q[len(ref) // 2:]
        assert np.all(late >= lo + LIMIT_MARGIN - 1e-12) and np.all(late <= hi - LIMIT_MARGIN + 1e-12)
        assert np.ptp(late, axis=0).min() > 0.1
