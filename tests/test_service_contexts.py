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
