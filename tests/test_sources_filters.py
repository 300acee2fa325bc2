"""Causal derivative estimation and the real-arm bridge."""

import numpy as np
import pytest

from rtlearn.sources.bridge import BridgeSource, StateAssembler, stream
from rtlearn.sources.filters import CausalDerivative, estimate_derivative, lag_seconds
from rtlearn.sources.robot import load_robot


def test_exact_for_linear_signals_with_irregular_sampling():
    rng = np.random.default_rng(0)
    t = np.cumsum(rng.uniform(0.5e-3, 1.5e-3, 200))
    x = np.c_[3.0 * t - 1.0, -2.0 * t]
    est = estimate_derivative(t, x, window=9)
    assert np.allclose(est[1:], [3.0, -2.0], atol=1e-8)


@pytest.mark.parametrize("window", [2, 5, 15, 31])
def test_lag_is_half_the_window_for_constant_jerk(window):
    dt = 1e-3
    t = dt * np.arange(300)
    jerk, a0 = 7.0, -1.5
    v = (a0 * t + 0.5 * jerk * t**2)[:, None]  # its true derivative: a0 + jerk * t
    est = estimate_derivative(t, v, window)[window - 1:, 0]
    delayed = a0 + jerk * (t[window - 1:] - lag_seconds(window, dt))
    assert np.allclose(est, delayed, atol=1e-8)
    assert lag_seconds(15, 1e-3) == pytest.approx(7e-3)


def test_update_into_writes_the_same_slope_into_the_callers_buffer():
    rng = np.random.default_rng(2)
    t = np.cumsum(rng.uniform(0.5e-3, 1.5e-3, 100))
    x = 1e3 + np.c_[np.sin(40 * t), 0.5 * t]  # a large offset must not cost precision
    f = CausalDerivative(2, 15)
    out = np.full(2, np.nan)
    for k, (ti, xi) in enumerate(zip(t, x)):
        assert f.update_into(ti, xi, out) is out
        if k >= 1:  # independent reference: numpy's least-squares line over the window
            lo = max(0, k - 14)
            ref = np.polyfit(t[lo:k + 1], x[lo:k + 1], 1)[0]
            np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out[1], 0.5, rtol=1e-6)


def test_noise_gain_matches_the_documented_formula():
    rng = np.random.default_rng(1)
    dt, window, s = 1e-3, 15, 0.01
    f = CausalDerivative(1, window)
    est = np.array([f.update(k * dt, [s * rng.standard_normal()]) for k in range(20000)])[window:, 0]
    expected = s * np.sqrt(12 / (window * (window**2 - 1))) / dt
    assert est.std() == pytest.approx(expected, rel=0.05)


def test_bridge_source_numbers_packets_and_estimates_acceleration():
    robot = load_robot("kuka_iiwa")
    n = robot.n_joints
    dt = 1e-3
    readings = iter([(1000.0 + k * dt, np.full(n, 0.1 * k), np.full(n, 2.0 * k * dt), np.ones(n))
                     for k in range(50)])
    src = BridgeSource(robot, lambda: next(readings, None), window=15, context="light")
    states = list(src)
    assert [s.seq for s in states] == list(range(50))
    assert states[0].t == 0.0 and states[-1].t == pytest.approx(49 * dt)
    assert np.allclose(states[-1].qdd, 2.0)  # qd = 2 t: exact after the first samples
    assert {s.context for s in states} == {"light"}
    with pytest.raises(NotImplementedError):
        src.set_payload("heavy")


def test_assembler_keeps_a_given_acceleration():
    robot = load_robot("kuka_iiwa")
    a = StateAssembler(robot)
    s = a(5.0, np.zeros(7), np.zeros(7), np.zeros(7), qdd=np.arange(7.0))
    assert np.array_equal(s.qdd, np.arange(7.0)) and s.t == 0.0


class _FakeClient:
    def __init__(self):
        self.sent, self.replies = [], []

    def publish(self, state):
        self.sent.append(state)
        self.replies.append(("pred", state.seq))

    def poll_prediction(self):
        return self.replies.pop(0) if self.replies else None


def test_stream_publishes_every_state_and_drains_predictions():
    robot = load_robot("kuka_iiwa")
    readings = iter([(k * 1e-3, np.zeros(7), np.zeros(7), np.zeros(7)) for k in range(30)])
    client, got = _FakeClient(), []
    sent = stream(BridgeSource(robot, lambda: next(readings, None)), client, on_prediction=got.append)
    assert sent == 30 and [s.seq for s in client.sent] == list(range(30))
    assert got == [("pred", k) for k in range(30)]
