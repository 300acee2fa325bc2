"""Joints in parallel (OnlineLearner.set_threads): every step bitwise equal to the
single-threaded learner's, whatever the optimizer, dtype, split or batch size; optimizers
whose state couples the joints stay on one thread."""

import copy

import numpy as np
import pytest

from rtlearn.learner import LearnerConfig, MemoryConfig, OnlineLearner

BASE = dict(n_joints=5, n_inputs=6, hidden=(16, 8), lr=0.01, batch_size=10, normalize="both")


def _stream(n, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(6, 5))
    for _ in range(n):
        X = rng.normal(size=(10, 6))
        yield X, np.tanh(X @ W) * 5 + 0.1 * rng.normal(size=(10, 5))


def _assert_same(a, b):
    assert np.array_equal(a.net.theta, b.net.theta)
    sa, sb = a.optimizer.all_state(a.opt_state), b.optimizer.all_state(b.opt_state)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert np.array_equal(sa[k], sb[k]), k
    for k, v in a.norm.arrays().items():
        assert np.array_equal(v, b.norm.arrays()[k]), k


@pytest.mark.parametrize("optimizer,memory,dtype", [
    ("metagd", MemoryConfig(), "float64"),
    ("metagd", MemoryConfig(), "float32"),
    ("metagd", MemoryConfig.scaled(), "float64"),
    ("adam-memadam", MemoryConfig(), "float32"),
    ("gd", MemoryConfig(), "float64"),
    ("adam", MemoryConfig(), "float64"),
])
@pytest.mark.parametrize("threads", [2, 3])
def test_threads_give_bitwise_the_serial_steps(optimizer, memory, dtype, threads):
    cfg = LearnerConfig(**BASE, optimizer=optimizer, memory=memory, dtype=dtype)
    serial, parallel = OnlineLearner(cfg), OnlineLearner(cfg)
    assert parallel.set_threads(threads) == threads == parallel.threads
    for i, (X, Y) in enumerate(_stream(60)):
        rows = 10 if i % 7 else 4  # screened batches are shorter
        assert np.array_equal(serial.learn_many(X[:rows], Y[:rows]),
                              parallel.learn_many(X[:rows], Y[:rows]))
        if i == 30:  # live options reach every shard
            for lr in (serial, parallel):
                lr.set_lr(0.02)
                lr.set_memory_learning(False)
    _assert_same(serial, parallel)
    assert not np.array_equal(serial.net.theta, OnlineLearner(cfg).net.theta)


def test_loaded_state_and_copies_stay_consistent(tmp_path):
    cfg = LearnerConfig(**BASE)
    serial, parallel = OnlineLearner(cfg), OnlineLearner(cfg)
    parallel.set_threads(2)
    stream = list(_stream(40, seed=1))
    for X, Y in stream[:20]:
        serial.learn_many(X, Y)
    serial.save(tmp_path / "m.npz")
    loaded = OnlineLearner.load(tmp_path / "m.npz")
    # state loaded into a threaded learner goes into the arrays its shards view
    parallel.set_network_state(loaded.network_state())
    parallel.set_memory_state(loaded.memory_state(), transfer=False)
    parallel.n_steps = serial.n_steps
    serial.set_network_state(loaded.network_state())  # the same history reset on both
    for X, Y in stream[20:]:
        serial.learn_many(X, Y)
        parallel.learn_many(X, Y)
    _assert_same(serial, parallel)
    twin = copy.deepcopy(parallel)  # a copy runs on one thread and carries on identically
    assert twin.threads == 1
    X, Y = stream[0]
    assert np.array_equal(twin.learn_many(X, Y), parallel.learn_many(X, Y))
    _assert_same(twin, parallel)


def test_coupled_optimizers_and_single_joints_stay_on_one_thread():
    assert OnlineLearner(LearnerConfig(**BASE, optimizer="sgd-hd")).set_threads(2) == 1
    assert OnlineLearner(LearnerConfig(**BASE, optimizer="adam-hd",
                                       hd_per_group=True)).set_threads(2) == 2
    assert OnlineLearner(LearnerConfig(**{**BASE, "n_joints": 1})).set_threads(4) == 1
    lr = OnlineLearner(LearnerConfig(**BASE))
    assert lr.set_threads(9) == 5  # at most one thread per joint
    assert lr.set_threads(1) == 1 and lr.threads == 1
