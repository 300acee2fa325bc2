"""The per-sample screen of the learning process (rtlearn.service.screen) and the residual scale
it keeps in the learner's state (rtlearn.learner.robust)."""

from __future__ import annotations

import numpy as np
import pytest

from rtlearn.learner import LearnerConfig, OnlineLearner
from rtlearn.learner.robust import RATE, ResidualScale
from rtlearn.service.screen import SampleScreen

CFG = LearnerConfig(n_joints=2, n_inputs=6, hidden=(8,), optimizer="gd", lr=0.01)
TAU_MAX, QD_MAX = np.array([100.0, 50.0]), np.array([2.0, 3.0])


def batch(rng, n=10, resid=0.1):
    """(X, Y, P): states within the limits, torques, predictions off by ~resid."""
    X = rng.uniform(-1, 1, (n, 6))
    Y = rng.uniform(-20, 20, (n, 2))
    return X, Y, Y + resid * rng.standard_normal((n, 2))


def trained_screen(rng, k=20.0):
    learner, screen = OnlineLearner(CFG), SampleScreen(TAU_MAX, QD_MAX, 2.0, k)
    for _ in range(300):
        screen.keep(learner, *batch(rng))
    return learner, screen


def test_the_scale_tracks_the_median_absolute_residual():
    rng = np.random.default_rng(0)
    scale = ResidualScale(2)
    R = rng.laplace(0.0, [0.3, 2.0], (20_000, 2))
    for b in range(0, R.shape[0], 10):
        scale.update(R[b:b + 10], 1e-6)
    np.testing.assert_allclose(scale.scale, np.median(np.abs(R), axis=0), rtol=0.15)
    assert scale.count[0] == R.shape[0]


def test_one_sample_moves_the_scale_by_at_most_half_the_rate():
    scale = ResidualScale(1)
    scale.scale[:] = 1.0
    scale.update(np.array([[1e300]]), 1e-6)
    assert scale.scale[0] == pytest.approx(np.exp(RATE / 2), rel=1e-12)
    scale.update(np.array([[np.nan]]), 1e-6)  # counted as above, not poisoning the scale
    assert scale.scale[0] == pytest.approx(np.exp(RATE), rel=1e-12)


def test_a_gross_outlier_is_left_out_and_the_rest_of_its_batch_kept():
    rng = np.random.default_rng(1)
    learner, screen = trained_screen(rng)
    X, Y, P = batch(rng)
    Y[3, 1] += 30.0  # within the torque limits, 300 residual scales off
    keep = screen.keep(learner, X, Y, P)
    assert keep.tolist() == [i != 3 for i in range(10)]
    assert screen.counts == {"torque_limit": 0, "velocity_limit": 0, "outlier": 1}


def test_samples_beyond_the_limits_are_left_out_by_reason():
    rng = np.random.default_rng(2)
    learner, screen = trained_screen(rng)
    X, Y, P = batch(rng)
    Y[0, 0] = 1e300          # beyond 2 x 100 N*m
    Y[1, 1] = -101.0         # beyond 2 x 50 N*m
    X[2, 3] = 6.5            # qd of joint 2 beyond 2 x 3 rad/s
    Y[4, 0] = 199.0          # within the limit, but an outlier
    P[4, 0] = 199.0          # ... unless the model predicted it
    keep = screen.keep(learner, X, Y, P)
    assert keep.tolist() == [False, False, False] + [True] * 7
    assert screen.counts == {"torque_limit": 2, "velocity_limit": 1, "outlier": 0}


def test_a_sustained_jump_is_kept_at_once():
    rng = np.random.default_rng(3)
    learner, screen = trained_screen(rng)
    X, Y, P = batch(rng)
    Y[:, 1] += 20.0  # a new payload: every sample of the batch moves together
    assert screen.keep(learner, X, Y, P).all()
    X, Y, P = batch(rng)
    Y[7:, 1] += 20.0  # the jump inside a batch: the minority after it is left out
    assert screen.keep(learner, X, Y, P).tolist() == [True] * 7 + [False] * 3


def test_the_first_batch_is_screened_against_its_own_median():
    rng = np.random.default_rng(4)
    learner, screen = OnlineLearner(CFG), SampleScreen(TAU_MAX, QD_MAX, 2.0, 20.0)
    X, Y, P = batch(rng, resid=5.0)  # an untrained model: large residuals everywhere
    Y[5, 0] += 180.0
    assert screen.keep(learner, X, Y, P).tolist() == [i != 5 for i in range(10)]
    assert learner.resid.count[0] == 10


def test_the_scale_is_part_of_a_model_and_of_a_context():
    rng = np.random.default_rng(5)
    learner, _ = trained_screen(rng)
    state = learner.network_state()
    np.testing.assert_array_equal(state["resid.scale"], learner.resid.scale)
    other = OnlineLearner(CFG)
    other.set_network_state(state, scope="context")
    np.testing.assert_array_equal(other.resid.scale, learner.resid.scale)
    assert other.resid.count[0] == learner.resid.count[0] == 3000


def test_a_model_without_a_scale_starts_from_its_torques_spread():
    learner = OnlineLearner(CFG)
    rng = np.random.default_rng(6)
    seen = []
    for _ in range(20):
        X, Y, _ = batch(rng)
        learner.learn_many(X, Y)
        seen.append(Y)
    old = {k: v for k, v in learner.network_state().items() if not k.startswith("resid.")}
    restored = OnlineLearner(CFG)
    restored.set_network_state(old)
    np.testing.assert_allclose(restored.resid.scale, np.std(np.concatenate(seen), axis=0))
    assert restored.resid.count[0] == 1
    untrained = {k: v for k, v in OnlineLearner(CFG).network_state().items()
                 if not k.startswith("resid.")}
    restored.set_network_state(untrained)
    assert restored.resid.count[0] == 0  # no statistics: the first batch sets the scale
