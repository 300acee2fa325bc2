"""The PyBullet simulation: exact packets, live payload swaps, seeding, a second arm."""

import numpy as np
import pytest

from rtlearn.sources.base import UnknownPayloadError
from rtlearn.sources.robot import load_robot
from rtlearn.sources.sim import DT, NOISE_STD, SimSource


def _run(**kw):
    with SimSource(**kw) as src:
        return src, list(src)


def _consistency_error(src, states):
    """max |tau - friction - RNEA_true(q, qd, qdd)|: 0 up to rounding if qdd is the acceleration
    the torque produced and the held payload is the one the packet names."""
    return max(np.abs(s.tau - src.friction(s.qd) - src.dynamics.rnea(s.q, s.qd, s.qdd, s.context)).max()
               for s in states)


@pytest.mark.parametrize("robot_name", ["kuka_iiwa", "franka_panda"])
def test_lift_stream_is_exact_and_well_formed(robot_name):
    src, states = _run(robot=robot_name, task="lift", payload="heavy", seed=0)
    assert len(states) >= 3000
    assert [s.seq for s in states] == list(range(len(states)))
    assert np.allclose([s.t for s in states], DT * np.arange(len(states)))
    contexts = [s.context for s in states]
    assert contexts[0] == "none" and contexts[-1] == "heavy"
    assert _consistency_error(src, states) < 1e-8
    # The arm really lifts: the end effector goes down then back up.
    z = np.array([src.dynamics.frame_position(s.q)[2] for s in states[::100]])
    assert z.min() < z[0] - 0.1 and abs(z[-1] - z[0]) < 0.02
    # Torques stay within the limits the robot file gives.
    tau = np.array([s.tau for s in states])
    assert np.all(np.abs(tau) <= src.robot.torque_limits + 1e-12)


@pytest.mark.parametrize("task", ["rectangle-h", "rectangle-v"])
def test_rectangles_stay_in_their_plane(task):
    src, states = _run(robot="kuka_iiwa", task=task, payload="light", seed=1)
    x = np.array([src.dynamics.frame_position(s.q) for s in states[1500::50]])  # after the approach
    fixed_axis = 2 if task == "rectangle-h" else 0
    assert np.ptp(x[:, fixed_axis]) < 0.02
    assert np.ptp(np.delete(x, fixed_axis, axis=1), axis=0).min() > 0.12


def test_static_payload_swap_changes_torques_by_gravity_load():
    # Hold the home pose 2 s empty, then 2 s with the 4 kg payload. The mean torque over each
    # hold's last 0.2 s is the static torque (qd ~ 0, friction ~ 0). Tolerance 0.1 N*m (0.4 %
    # of the 23 N*m load): the PID leaves sub-mrad pose differences between the two holds.
    src, states = _run(robot="kuka_iiwa", task="hold", payload=["none", "heavy"], cycles=2, seed=0)
    tau = np.array([s.tau for s in states])
    before, after = tau[1800:2000].mean(0), tau[3800:4000].mean(0)
    p = src.robot.payload("heavy")
    J = src.dynamics.frame_jacobian(states[3999].q, offset=p.com)
    load = J.T @ np.array([0.0, 0.0, 9.81 * p.mass])
    assert np.abs(load).max() > 10
    assert np.abs(after - before - load).max() < 0.1


def test_set_payload_takes_effect_at_the_next_step():
    src = SimSource("kuka_iiwa", task="hold", payload="none", seed=2)
    try:
        states = []
        for s in src:
            states.append(s)
            if s.seq == 500:
                src.set_payload("light")
            if s.seq == 1000:
                break
        assert {s.context for s in states[:501]} == {"none"}
        assert {s.context for s in states[501:]} == {"light"}
        assert _consistency_error(src, states) < 1e-8
        with pytest.raises(UnknownPayloadError, match=r"kuka_iiwa\.toml.*payloads.*'feather'"):
            src.set_payload("feather")
    finally:
        src.close()


def test_schedule_and_cycles():
    src, states = _run(robot="kuka_iiwa", task="lift", payload=["light", "heavy"], cycles=2,
                       schedule=[(0.5, "heavy"), (1.0, "none")], seed=0)
    ctx = [s.context for s in states]
    assert ctx[499] == "none" and ctx[500] == "heavy" and ctx[1000] == "none"
    events = src.reference.events
    assert [name for _, name in events] == ["light", "heavy"]
    assert ctx[events[0][0]] == "light" and ctx[events[1][0]] == "heavy" and ctx[-1] == "heavy"


def test_seeds_vary_trials_and_repeat_exactly():
    def taus(states):
        return np.array([s.tau for s in states][:2000])

    with SimSource("kuka_iiwa", task="lift", payload="light", seed=0) as src:
        first, again = taus(src), taus(src)  # iterating twice replays the trial from rest
    _, other_seed = _run(robot="kuka_iiwa", task="lift", payload="light", seed=1)
    _, same_seed = _run(robot="kuka_iiwa", task="lift", payload="light", seed=0)
    assert np.array_equal(first, again) and np.array_equal(first, taus(same_seed))
    assert np.abs(first - taus(other_seed)).max() > 0.5


def test_noise_is_added_to_published_values_only():
    _, clean = _run(robot="kuka_iiwa", task="hold", payload="none", seed=4)
    _, noisy = _run(robot="kuka_iiwa", task="hold", payload="none", seed=4, noise=1.0)
    for field in ("q", "qd", "qdd", "tau"):
        diff = np.array([getattr(b, field) - getattr(a, field) for a, b in zip(clean, noisy)])
        assert diff.std() == pytest.approx(NOISE_STD[field], rel=0.1), field


def test_friction_makes_the_stream_differ_from_the_rigid_model():
    src, states = _run(robot="kuka_iiwa", task="lift", payload="none", seed=0)
    rigid = max(np.abs(s.tau - src.dynamics.rnea(s.q, s.qd, s.qdd)).max() for s in states)
    assert rigid > 0.5


def test_unknown_payload_or_task_is_rejected_before_simulating():
    robot = load_robot("kuka_iiwa")
    with pytest.raises(UnknownPayloadError, match="payloads"):
        SimSource(robot, task="lift", payload="anvil")
    with pytest.raises(ValueError, match="unknown task"):
        SimSource(robot, task="juggle")


@pytest.mark.parametrize("robot_name", ["kuka_iiwa", "franka_panda"])
def test_sines_are_tracked_within_the_torque_limits(robot_name):
    # Measured over seeds 0-4, none/light/heavy: max tracking error 0.098 rad (KUKA last joint,
    # whose 0.3 N*m Coulomb friction is unmodelled against a 1e-3 kg*m^2 link), no clamping.
    # Seed 2 is the one whose KUKA wrist diverged with the heavy payload before load data.
    src, states = _run(robot=robot_name, task="sines", payload=["none", "light", "heavy"],
                       cycles=3, seed=2)
    assert src.load_data and len(states) == 18000
    assert _consistency_error(src, states) < 1e-8
    q = np.array([s.q for s in states])
    assert np.abs(q - src.reference.q).max() < 0.12
    tau = np.array([s.tau for s in states])
    clamped = np.abs(tau) >= src.robot.torque_limits - 1e-9
    assert clamped.any(axis=1).mean() < 0.01
    qd = np.array([s.qd for s in states])
    assert np.all(np.abs(qd) <= src.robot.velocity_limits)


@pytest.mark.parametrize("task", ["sines", "lift"])
def test_one_payload_per_cycle_in_order(task):
    import itertools

    names = ["none", "light", "heavy", "light", "none"]
    src, states = _run(robot="kuka_iiwa", task=task, payload=names, cycles=len(names), seed=3,
                       noise=1.0)
    ctx = [s.context for s in states]
    assert [name for name, _ in itertools.groupby(ctx)] == names
    assert [name for _, name in src.reference.events] == names
    for step, name in src.reference.events:
        assert ctx[step] == name
    if task == "sines":  # held from the start of its cycle to the end of it
        per_cycle = len(states) // len(names)
        assert [set(ctx[k * per_cycle:(k + 1) * per_cycle]) for k in range(len(names))] == \
            [{name} for name in names]
