"""LearnerConfig.dtype: float32 learns what float64 learns on a lift stream (within rounding),
its state is float32 throughout, and it round-trips through files and the daemon's shared
memory; files written before the setting existed load as float64."""

import json
import zipfile

import numpy as np
import pytest

from rtlearn.experiments import online_lift as ol
from rtlearn.experiments.evaluate import batched, prequential
from rtlearn.learner import LearnerConfig, MemoryConfig, OnlineLearner
from rtlearn.learner.learner import ModelCopy

SAMPLES = 1500  # the light lift's first 1.5 s: the arm moves, the payload attaches at 1.09 s


@pytest.fixture(scope="module")
def lift():
    X, tau, _, attach = ol.phase_data("light", 0, max_samples=SAMPLES)
    assert attach is not None and attach < SAMPLES
    return X, tau


@pytest.mark.parametrize("cfg", [
    LearnerConfig(),  # the daemon's defaults: normalised targets, relative memory
    LearnerConfig(normalize="none", lr=3e-4, memory=MemoryConfig.paper()),  # raw torques
], ids=["defaults", "paper"])
def test_float32_learns_the_lift_as_float64_does(lift, cfg):
    X, tau = lift
    runs = {}
    for dtype in ("float64", "float32"):
        learner = OnlineLearner(LearnerConfig(**{**cfg.to_dict(), "dtype": dtype}))
        losses = np.array([c.loss for c in prequential(learner, batched(X, tau, 10))])
        runs[dtype] = learner, losses
    (l64, loss64), (l32, loss32) = runs["float64"], runs["float32"]
    assert l32.net.theta.dtype == np.float32 and l64.net.theta.dtype == np.float64
    # it learned: the error after the payload attached is far below the first batches'
    assert loss64[-20:].mean() < 0.1 * loss64[:20].mean()
    # prequential MSE per batch and over the stream (measured: 4e-6 and 2e-3 relative per
    # batch, 1e-9 / 1e-6 over the stream), predictions (1e-5 / 1e-4 N*m), learned rates
    np.testing.assert_allclose(loss32.mean(1), loss64.mean(1), rtol=2e-2)
    assert abs(loss32.mean() - loss64.mean()) < 1e-4 * loss64.mean()
    np.testing.assert_allclose(l32.predict_many(X[-200:]), l64.predict_many(X[-200:]),
                               atol=2e-3)
    r32, r64 = l32.rates()["memory"], l64.rates()["memory"]
    np.testing.assert_allclose(r32, r64, rtol=1e-3)
    assert np.ptp(r64) > 0  # the rates moved, so the comparison means something


def test_float32_state_is_float32_and_survives_save_and_load(tmp_path):
    cfg = LearnerConfig(n_joints=2, n_inputs=4, hidden=(8,), dtype="float32")
    learner = OnlineLearner(cfg)
    rng = np.random.default_rng(0)
    for _ in range(5):
        learner.learn_many(rng.normal(size=(10, 4)), rng.normal(size=(10, 2)))
    per_param = [v for v in learner.optimizer.all_state(learner.opt_state).values()
                 if v.shape == (learner.net.theta.size,)]
    assert per_param and all(v.dtype == np.float32 for v in per_param)
    assert learner.model_copy().theta.dtype == np.float32
    learner.save(tmp_path / "m.npz")
    back = OnlineLearner.load(tmp_path / "m.npz")
    assert back.config.dtype == "float32" and back.net.theta.dtype == np.float32
    assert np.array_equal(back.net.theta, learner.net.theta)
    x = rng.normal(size=4)
    assert np.array_equal(back.predict_one(x), learner.predict_one(x))


def test_a_file_from_before_the_setting_loads_as_float64(tmp_path):
    learner = OnlineLearner(LearnerConfig(n_joints=2, n_inputs=4, hidden=(8,), dtype="float64"))
    path = tmp_path / "old.npz"
    learner.save(path)
    with np.load(path) as z:  # rewrite it as a version-3 file: no dtype in its config
        arrays = {k: z[k] for k in z.files}
    header = json.loads(arrays["__header__"].tobytes().decode())
    del header["meta"]["config"]["dtype"]
    header["version"] = 3
    arrays["__header__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    assert zipfile.is_zipfile(path)
    back = OnlineLearner.load(path)
    assert back.config.dtype == "float64" and np.array_equal(back.net.theta, learner.net.theta)


def test_unknown_dtype_is_a_clear_error():
    with pytest.raises(ValueError, match="float16"):
        LearnerConfig(dtype="float16")


def test_the_daemons_shared_model_carries_float32_weights():
    from rtlearn.service.learning import Arena

    learner = OnlineLearner(LearnerConfig(n_joints=3, n_inputs=9, hidden=(8,), dtype="float32"))
    rng = np.random.default_rng(1)
    for _ in range(3):
        learner.learn_many(rng.normal(size=(10, 9)), rng.normal(size=(10, 3)))
    arena = Arena(learner, slots=4, batch_size=10)
    arena.publish(learner, epoch=0)
    m = arena.model
    assert m.theta.dtype == np.float32 and np.array_equal(m.theta, learner.net.theta)
    for a in (m.x_mean, m.y_scale, arena.X, arena.P):  # every view aligned after theta
        assert a.ctypes.data % 8 == 0
    copy = ModelCopy(*(np.zeros_like(a) for a in (m.theta, m.x_mean, m.x_scale, m.y_mean,
                                                   m.y_scale)))
    copy.assign(m.theta, m.x_mean, m.x_scale, m.y_mean, m.y_scale)
    x = rng.normal(size=9)
    assert np.array_equal(learner.predict_one(x, copy).copy(), learner.predict_one(x).copy())


def test_a_float64_daemon_snapshot_resumes_in_float32_and_nothing_else_differs():
    from dataclasses import replace

    from rtlearn.learner import StateFileError
    from rtlearn.service import snapshots
    from rtlearn.service.config import defaults, learner_config
    from rtlearn.service.contexts import ContextBank

    cfg = learner_config(defaults(), 3)
    assert cfg.dtype == "float32"  # the daemon's default (docs/performance.md)
    old = OnlineLearner(replace(cfg, dtype="float64"))
    rng = np.random.default_rng(2)
    for _ in range(20):
        old.learn_many(rng.normal(size=(10, 9)), rng.normal(size=(10, 3)))
    meta, arrays = snapshots.capture(old, ContextBank("default", 4), {})
    del meta["learner"]["dtype"]  # as a snapshot from before the setting: float64
    new = OnlineLearner(cfg)
    snapshots.restore(meta, arrays, new, ContextBank("default", 4))
    assert new.net.theta.dtype == np.float32 and new.n_steps == 20
    x = rng.normal(size=9)
    np.testing.assert_allclose(new.predict_one(x), old.predict_one(x), rtol=1e-5, atol=1e-6)
    other = OnlineLearner(replace(cfg, hidden=(16,)))
    with pytest.raises(StateFileError, match="another learner configuration"):
        snapshots.restore(meta, arrays, other, ContextBank("default", 4))
