"""OnlineLearner: test-then-train, snapshots, context state, memory transfer, bad input."""

import numpy as np
import pytest

from rtlearn.learner import LearnerConfig, MemoryConfig, OnlineLearner, StateFileError

CFG = LearnerConfig(n_joints=3, n_inputs=6, hidden=(16, 8), optimizer="metagd", lr=0.01,
                    batch_size=10, normalize="both", memory=MemoryConfig(n_centres=20))


def _batches(n, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(6, 3))
    for _ in range(n):
        X = rng.normal(size=(10, 6))
        yield X, np.tanh(X @ W) * 5 + 2


def test_learning_on_a_batch_lowers_that_batchs_loss():
    learner = OnlineLearner(CFG)
    for X, Y in _batches(20):
        learner.learn_many(X, Y)
    X, Y = next(_batches(1, seed=9))
    before = ((learner.predict_many(X) - Y) ** 2).mean(0)
    reported = learner.learn_many(X, Y).copy()
    after = ((learner.predict_many(X) - Y) ** 2).mean(0)
    np.testing.assert_allclose(reported, before, rtol=1e-12)  # loss is measured before the update
    assert np.all(after < before)


def test_prequential_loss_falls_over_a_stream():
    learner = OnlineLearner(CFG)
    losses = [learner.learn_many(X, Y).mean() for X, Y in _batches(300)]
    assert np.mean(losses[-30:]) < 0.3 * np.mean(losses[:30])


def test_model_copy_serves_the_model_as_it_was_while_training_goes_on():
    learner = OnlineLearner(CFG)
    batches = list(_batches(40))
    for X, Y in batches[:20]:
        learner.learn_many(X, Y)
    x = batches[0][0][0]
    copy = learner.model_copy()
    frozen = learner.predict_many(x[None])[0]  # weights and normalisers of now
    for X, Y in batches[20:]:
        learner.learn_many(X, Y)
    np.testing.assert_array_equal(learner.predict_one(x, copy), frozen)
    assert not np.allclose(learner.predict_one(x), frozen)  # the live model moved on
    learner.copy_model_into(copy)
    np.testing.assert_array_equal(learner.predict_one(x, copy), learner.predict_one(x).copy())


def test_learn_one_batches_exactly_like_learn_many():
    a, b = OnlineLearner(CFG), OnlineLearner(CFG)
    for X, Y in _batches(5):
        out = [a.learn_one(x, y) for x, y in zip(X, Y)]
        assert all(o is None for o in out[:-1])
        np.testing.assert_array_equal(out[-1], b.learn_many(X, Y))
    np.testing.assert_array_equal(a.net.theta, b.net.theta)


@pytest.mark.parametrize("optimizer", ["metagd", "adam-memadam", "sgd-hd", "adam"])
def test_snapshot_round_trip_restores_predictions_and_future_learning(tmp_path, optimizer):
    cfg = LearnerConfig(**{**CFG.to_dict(), "optimizer": optimizer})
    learner = OnlineLearner(cfg)
    stream = list(_batches(30))
    for X, Y in stream[:20]:
        learner.learn_many(X, Y)
    learner.save(tmp_path / "s.npz")
    restored = OnlineLearner.load(tmp_path / "s.npz")
    X = stream[0][0]
    np.testing.assert_array_equal(restored.predict_many(X), learner.predict_many(X))
    for X, Y in stream[20:]:
        np.testing.assert_array_equal(restored.learn_many(X, Y), learner.learn_many(X, Y))
    np.testing.assert_array_equal(restored.net.theta, learner.net.theta)
    assert restored.n_samples == learner.n_samples == 300


def test_network_state_swaps_models_and_leaves_memory_alone():
    learner = OnlineLearner(CFG)
    stream = list(_batches(40))
    for X, Y in stream[:20]:
        learner.learn_many(X, Y)
    model_a = learner.network_state()
    X = stream[0][0]
    pred_a = learner.predict_many(X)
    for X2, Y2 in stream[20:]:
        learner.learn_many(X2, Y2)
    memory = learner.memory_state()
    learner.set_network_state(model_a)
    np.testing.assert_array_equal(learner.predict_many(X), pred_a)
    for k, v in learner.memory_state().items():
        np.testing.assert_array_equal(v, memory[k])


def test_memory_transfer_keeps_rates_and_resets_moments():
    cfg = LearnerConfig(**{**CFG.to_dict(), "optimizer": "metagd-memadam"})
    first = OnlineLearner(cfg)
    for X, Y in _batches(50):
        first.learn_many(X, Y)
    carried = first.memory_state()
    fresh = OnlineLearner(cfg)
    fresh.set_memory_state(carried)
    got = fresh.memory_state()
    w_key = next(k for k in got if k.endswith(".w"))
    np.testing.assert_array_equal(got[w_key], carried[w_key])
    assert np.ptp(got[w_key]) > 0  # the carried memory differs from a fresh one
    assert all(not np.any(v) for k, v in got.items() if k.endswith((".w_m", ".w_v", ".count")))


def test_bad_state_files_give_clear_errors(tmp_path):
    with pytest.raises(StateFileError, match="cannot read"):
        OnlineLearner.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(StateFileError, match="not a valid"):
        OnlineLearner.load(tmp_path / "junk.npz")
    learner = OnlineLearner(CFG)
    learner.save(tmp_path / "ok.npz")
    raw = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(StateFileError, match="cut.npz"):
        OnlineLearner.load(tmp_path / "cut.npz")


def test_bad_config_is_rejected_with_the_field_named():
    with pytest.raises(ValueError, match="unknown optimizer"):
        LearnerConfig(optimizer="nope")
    with pytest.raises(ValueError, match="n_centres"):
        LearnerConfig(memory=MemoryConfig(n_centres=1))
    with pytest.raises(ValueError, match="unknown learner config keys"):
        LearnerConfig.from_dict({"hiden": (3,)})


def test_context_scope_restores_output_layers_and_target_normaliser_only():
    cfg = LearnerConfig(**{**CFG.to_dict(), "optimizer": "adam"})  # per-parameter moments too
    learner = OnlineLearner(cfg)
    stream = list(_batches(40))
    for X, Y in stream[:20]:
        learner.learn_many(X, Y)
    model_a = learner.network_state()
    for X, Y in stream[20:]:
        learner.learn_many(X, 3.0 * Y - 7.0)  # another "payload": other targets
    live = learner.network_state()
    learner.set_network_state(model_a, scope="context")
    now = learner.network_state()
    theta, P = now["theta"], learner.net.n_params
    head = cfg.hidden[-1] + 1                      # each joint's last W row and bias
    np.testing.assert_array_equal(theta[:, P - head:], model_a["theta"][:, P - head:])
    np.testing.assert_array_equal(theta[:, :P - head], live["theta"][:, :P - head])
    for k in ("x_count", "x_mean", "x_m2", "x_scale"):
        np.testing.assert_array_equal(now[f"norm.{k}"], live[f"norm.{k}"])
    for k in ("y_count", "y_mean", "y_m2", "y_scale"):
        np.testing.assert_array_equal(now[f"norm.{k}"], model_a[f"norm.{k}"])
    m = next(k for k in now if k.endswith("adam.m"))
    np.testing.assert_array_equal(now[m].reshape(3, P)[:, P - head:],
                                  model_a[m].reshape(3, P)[:, P - head:])
    np.testing.assert_array_equal(now[m].reshape(3, P)[:, :P - head],
                                  live[m].reshape(3, P)[:, :P - head])
    # batch_loss(X, Y, d) scores d's context part on the live model without changing it
    X, Y = stream[0]
    assert learner.batch_loss(X, Y, live) == pytest.approx(
        np.mean((_predict_with(cfg, live, X) - Y) ** 2), rel=1e-12)
    assert learner.network_state()["theta"].tobytes() == now["theta"].tobytes()


def _predict_with(cfg, model, X):
    other = OnlineLearner(cfg)
    other.set_network_state(model)
    return other.predict_many(X)


def test_a_version_1_state_with_one_count_array_still_loads(tmp_path):
    learner = OnlineLearner(CFG)
    for X, Y in _batches(5):
        learner.learn_many(X, Y)
    model = learner.network_state()
    old = {k: v for k, v in model.items() if k not in ("norm.x_count", "norm.y_count")}
    old["norm.count"] = np.array([model["norm.x_count"][0], model["norm.y_count"][0]])
    fresh = OnlineLearner(CFG)
    fresh.set_network_state(old)
    for k, v in model.items():
        if k == "theta" or k.startswith("norm."):  # (the optimiser's history is reset)
            np.testing.assert_array_equal(fresh.network_state()[k], v)


@pytest.mark.parametrize("optimizer", ["metagd", "gd"])
def test_layer_rates_are_the_groups_rates_per_joint_and_layer(optimizer):
    cfg = LearnerConfig(n_joints=3, n_inputs=9, hidden=(8, 4), optimizer=optimizer)
    learner = OnlineLearner(cfg)
    rng = np.random.default_rng(0)
    for _ in range(5):
        learner.learn_many(rng.normal(size=(10, 9)), rng.normal(size=(10, 3)))
    name, table = learner.layer_rates()
    (expected_name, flat), = learner.rates().items()
    assert name == expected_name and table.shape == (3, 3, 2)
    # groups are, per joint, W then b of each layer (MLPStack); a single rate fills them all
    groups = np.broadcast_to(flat, (3 * 3 * 2,))
    dims, bounds, per_joint = [9, 8, 4, 1], learner.net.bounds, learner.net.n_params
    for j in range(3):
        start = j * per_joint
        for layer in range(3):
            w, b = 6 * j + 2 * layer, 6 * j + 2 * layer + 1
            # the group really is that layer's weight matrix / bias in theta's layout
            assert bounds[w] == start and bounds[b] - bounds[w] == dims[layer] * dims[layer + 1]
            assert bounds[b + 1] - bounds[b] == dims[layer + 1]
            start = bounds[b + 1]
            assert table[j, layer, 0] == groups[w] and table[j, layer, 1] == groups[b]
