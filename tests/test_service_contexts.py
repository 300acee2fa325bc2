"""The context bank: a restore brings back a context's output layers and target normaliser onto
the shared hidden layers, and its first batches decide whether it stays."""

import numpy as np

from naive import payload_law

from rtlearn.learner import LearnerConfig, OnlineLearner
from rtlearn.service.contexts import SETTLE_BATCHES, ContextBank

CFG = LearnerConfig(n_joints=2, n_inputs=4, hidden=(16,), optimizer="gd", lr=0.05, seed=1)



def _train(learner, bank, name, law, n):
    for _ in range(n):
        X, Y = next(law)
        bank.switch(learner, name)
        bank.settle(learner, X, Y)
        learner.learn_many(X, Y)


def _return_to_a(first_batches_law):
    learner = OnlineLearner(CFG)
    bank = ContextBank("a", 4)
    _train(learner, bank, "a", payload_law(0.0, 1), 300)
    _train(learner, bank, "b", payload_law(4.0, 2), 300)
    assert bank.switch(learner, "a") == "restored" and bank.restoring
    outcomes = []
    for _ in range(SETTLE_BATCHES):
        X, Y = next(first_batches_law)
        outcomes.append(bank.settle(learner, X, Y))
        learner.learn_many(X, Y)
    assert outcomes[:-1] == [None] * (SETTLE_BATCHES - 1) and not bank.restoring
    return outcomes[-1], bank


def test_a_restored_context_that_fits_its_payload_is_kept():
    outcome, bank = _return_to_a(payload_law(0.0, 3))
    assert outcome == "kept" and bank.settled == {"kept": 1, "fell_back": 0}


def test_a_restore_the_data_contradicts_falls_back_to_the_continuing_model():
    # labelled "a" but the arm still carries b's payload: the continuing output layer wins
    outcome, bank = _return_to_a(payload_law(4.0, 3))
    assert outcome == "fell_back" and bank.settled == {"kept": 0, "fell_back": 1}


def test_a_new_context_starts_from_the_current_model_and_needs_no_settling():
    learner = OnlineLearner(CFG)
    bank = ContextBank("a", 4)
    _train(learner, bank, "a", payload_law(0.0, 1), 50)
    before = learner.network_state()
    assert bank.switch(learner, "b") == "created" and not bank.restoring
    for k, v in learner.network_state().items():
        np.testing.assert_array_equal(v, before[k])


# -- blended restores ---------------------------------------------------------------------

def _two_contexts(blend=True):
    """A learner back in "a" after "b" (a restore), the bank, and the unblended parts: a's
    stored context part and the continuing model's (b's) as it was at the switch."""
    learner = OnlineLearner(CFG)
    bank = ContextBank("a", 4)
    _train(learner, bank, "a", payload_law(0.0, 1), 200)
    _train(learner, bank, "b", payload_law(4.0, 2), 200)
    stored_a, continuing = bank.parked["a"], learner.network_state()
    assert bank.switch(learner, "a", blend=blend) == "restored"
    return learner, bank, stored_a, continuing


def test_a_blended_restore_forecasts_the_weighted_mean_of_the_two_output_layers():
    learner, bank, stored_a, continuing = _two_contexts()
    X = next(payload_law(0.0, 9))[0]
    # before any restore has been settled, the weight is 1/2 on every joint
    np.testing.assert_array_equal(bank.restore_weights(learner), [0.5, 0.5])
    expected = (0.5 * learner.context_predictions(X, stored_a)
                + 0.5 * learner.context_predictions(X, continuing))
    np.testing.assert_allclose(learner.predict_many(X), expected, rtol=1e-12, atol=1e-12)
    # any weights, joint by joint, against the two forecasts combined by hand
    w = np.array([0.8, 0.1])
    learner.set_network_state(stored_a, scope="context")
    learner.blend_context(continuing, w)
    expected = (w * learner.context_predictions(X, stored_a)
                + (1 - w) * learner.context_predictions(X, continuing))
    np.testing.assert_allclose(learner.predict_many(X), expected, rtol=1e-12, atol=1e-12)


def test_the_serving_side_serves_the_same_blend_as_the_learner():
    from rtlearn.learner.api import kind_of
    from rtlearn.service.learning import parked_models

    learner = OnlineLearner(CFG)
    bank = ContextBank("a", 4)
    _train(learner, bank, "a", payload_law(0.0, 1), 200)
    _train(learner, bank, "b", payload_law(4.0, 2), 200)
    w = np.array([0.3, 0.9])
    served_model = kind_of(learner).restored(learner, learner.model_copy(),
                                             parked_models(learner, bank)["a"], w)
    bank.switch(learner, "a", blend=False)
    learner.blend_context(bank.parked["b"], w)  # b: the continuing model, parked at the switch
    X = next(payload_law(0.0, 9))[0]
    served = np.array([learner.predict_one(x, served_model).copy() for x in X])
    np.testing.assert_allclose(served, learner.predict_many(X), rtol=1e-12, atol=1e-12)


def test_an_unblended_restore_brings_back_the_stored_context_exactly():
    learner, bank, stored_a, _ = _two_contexts(blend=False)
    X = next(payload_law(0.0, 9))[0]
    np.testing.assert_array_equal(learner.predict_many(X), learner.context_predictions(X, stored_a))


def _reference_weight(e_r, e_c):
    """The weight in [0, 1] with the least summed squared error of w e_r + (1 - w) e_c, by
    a grid search (written apart from the closed form)."""
    grid = np.linspace(0.0, 1.0, 100001)
    cost = [np.sum((w * e_r + (1 - w) * e_c) ** 2) for w in grid]
    return grid[int(np.argmin(cost))]


def test_restore_weights_are_the_least_squares_combination_of_past_restores():
    from rtlearn.service.contexts import RestoreWeights

    rng = np.random.default_rng(4)
    rw = RestoreWeights(3)
    e_r, e_c = [], []
    for _ in range(4):  # four restores of 5 batches
        for _ in range(SETTLE_BATCHES):
            common = rng.normal(size=(10, 3))
            r = common + rng.normal(size=(10, 3)) * [0.2, 2.0, 1.0]
            c = common + rng.normal(size=(10, 3)) * [1.0, 0.5, 1.0] + [0.0, 0.0, 3.0]
            rw.add(r, c)
            e_r.append(r)
            e_c.append(c)
        rw.restores += 1
    e_r, e_c = np.concatenate(e_r), np.concatenate(e_c)
    w = rw.weights()
    for j in range(3):
        assert abs(w[j] - _reference_weight(e_r[:, j], e_c[:, j])) < 2e-5
    assert w[0] > 0.8 and w[1] < 0.2 and w[2] > 0.85  # the better forecast gets the weight
    # clipped: a restored layer without error takes it all, one that is always worse none
    exact = RestoreWeights(1)
    exact.add(np.zeros((10, 1)), np.ones((10, 1)))
    worse = RestoreWeights(1)
    worse.add(2.0 * np.ones((10, 1)), np.ones((10, 1)))
    assert exact.weights()[0] == 1.0 and worse.weights()[0] == 0.0


def test_the_weights_learn_whether_restores_of_this_arm_pay():
    # labels a, b, a, b, ...: with payloads 0, 4, 0, 4, ... each restored output layer fits
    # and its weight rises above 1/2; with payloads 0, 4, 8, 12, ... the continuing layer
    # is always the nearer one and the weight falls below 1/2
    for step, rises in ((0.0, True), (4.0, False)):
        learner = OnlineLearner(CFG)
        bank = ContextBank("a", 4)
        _train(learner, bank, "a", payload_law(0.0, 1), 200)
        for k in range(1, 9):
            payload = 4.0 * (k % 2) + step * 2 * (k // 2)
            _train(learner, bank, "ab"[k % 2], payload_law(payload, 10 + k), 100)
        w = bank.restore_weights(learner)
        assert bank.weights.restores == 7  # every segment but the first two is a restore
        assert (w > 0.6).all() if rises else (w < 0.4).all(), w


def test_snapshots_keep_the_restore_weights():
    from rtlearn.service import snapshots

    learner = OnlineLearner(CFG)
    bank = ContextBank("a", 4)
    _train(learner, bank, "a", payload_law(0.0, 1), 100)
    for k in range(2):
        _train(learner, bank, "b", payload_law(4.0, 10 + k), 50)
        _train(learner, bank, "a", payload_law(0.0, 20 + k), 50)
    meta, arrays = snapshots.capture(learner, bank, {})
    again, bank2 = OnlineLearner(CFG), ContextBank("a", 4)
    snapshots.restore(meta, arrays, again, bank2)
    np.testing.assert_array_equal(bank2.restore_weights(again), bank.restore_weights(learner))
    assert bank2.weights.restores == 3  # a, b, a


def test_bad_restore_weights_in_a_snapshot_are_refused_and_nan_errors_left_out():
    import pytest

    from rtlearn.service import snapshots
    from rtlearn.service.contexts import RestoreWeights
    from rtlearn.service.snapshots import StateFileError

    learner = OnlineLearner(CFG)
    bank = ContextBank("a", 4)
    _train(learner, bank, "a", payload_law(0.0, 1), 50)
    _train(learner, bank, "b", payload_law(4.0, 2), 50)
    _train(learner, bank, "a", payload_law(0.0, 3), 50)
    meta, arrays = snapshots.capture(learner, bank, {})
    for bad in ([[float("nan")] * 2] * 3, [[0.0] * 3] * 3):
        meta["restore_weights"] = {"sums": bad, "restores": 1}
        with pytest.raises(StateFileError, match="restore weights"):
            snapshots.restore(meta, arrays, OnlineLearner(CFG), ContextBank("a", 4))
    rw = RestoreWeights(2)
    rw.add(np.array([[np.nan, 0.0]]), np.ones((1, 2)))
    np.testing.assert_array_equal(rw.sums, 0.0)
    np.testing.assert_array_equal(rw.weights(), [0.5, 0.5])


def test_restore_reload_restores_a_labelled_context_as_stored_and_bad_values_are_refused():
    import pytest

    from rtlearn.service.config import ConfigError, load_config

    learner = OnlineLearner(CFG)
    bank = ContextBank("a", 4, restore="reload")
    _train(learner, bank, "a", payload_law(0.0, 1), 200)
    _train(learner, bank, "b", payload_law(4.0, 2), 200)
    stored_a = bank.parked["a"]
    assert bank.switch(learner, "a") == "restored" and bank.restore_weights(learner) is None
    X = next(payload_law(0.0, 9))[0]
    np.testing.assert_array_equal(learner.predict_many(X), learner.context_predictions(X, stored_a))
    assert load_config(None, {"contexts": {"restore": "reload"}})["contexts"]["restore"] == "reload"
    with pytest.raises(ConfigError, match="contexts.restore must be one of blend, reload"):
        load_config(None, {"contexts": {"restore": "mix"}})
    with pytest.raises(ValueError, match="unknown restore"):
        ContextBank("a", 4, restore="mix")
