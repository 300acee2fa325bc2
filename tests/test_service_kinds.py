"""Both learner kinds behind the service's protocol (rtlearn.learner.api): I-SSGPR's context,
calibration and snapshot semantics against the learner itself, the serving copy without
allocation for each kind, and the [learner] kind configuration."""

import tracemalloc

import numpy as np
import pytest

from naive import payload_law

from rtlearn.learner import LearnerConfig, OnlineLearner, StateFileError
from rtlearn.learner.api import KINDS, Learner, kind_of
from rtlearn.learner.issgpr import ISSGPR, ISSGPRConfig
from rtlearn.service import snapshots
from rtlearn.service.autocontext import AutoContexts
from rtlearn.service.config import ConfigError, defaults, learner_config, load_config
from rtlearn.service.contexts import SETTLE_BATCHES, ContextBank
from rtlearn.service.learning import Arena, ServingModel, model_arrays, parked_models

GP = ISSGPRConfig(n_joints=2, n_inputs=4, n_features=40, calib=(30, 100), fit_points=60,
                  fit_iters=20)
MLP = LearnerConfig(n_joints=2, n_inputs=4, hidden=(16,), optimizer="gd", lr=0.05, seed=1)


def feed(learner, law, batches):
    for _ in range(batches):
        learner.learn_many(*next(law))


def test_both_learners_satisfy_the_service_protocol():
    for learner in (OnlineLearner(MLP), ISSGPR(GP)):
        assert isinstance(learner, Learner)
        assert kind_of(learner) is kind_of(learner.config) is KINDS[kind_of(learner).name]
    with pytest.raises(ValueError, match="unknown learner kind"):
        kind_of("gp")


def test_an_issgpr_context_is_its_whole_model_and_comes_back_exactly():
    learner = ISSGPR(GP)
    bank = ContextBank("a", 4)
    feed(learner, payload_law(0.0, 1), 20)                # calibrated in "a"
    X = next(payload_law(0.0, 9))[0]
    in_a = learner.predict_many(X)
    assert bank.switch(learner, "b") == "created"
    np.testing.assert_array_equal(learner.predict_many(X), in_a)   # b starts from a's model
    feed(learner, payload_law(4.0, 2), 20)
    assert np.abs(learner.predict_many(X) - in_a).max() > 1.0
    stored = bank.parked["a"]
    # scoring a stored context predicts with that model, live state untouched
    live = learner.network_state()
    assert learner.batch_loss(X, in_a, stored) == pytest.approx(0.0, abs=1e-20)
    for k, v in learner.network_state().items():
        np.testing.assert_array_equal(v, live[k])
    # the serving side's restore equals what the learner does
    kind = kind_of(learner)
    served = kind.restored(learner, learner.model_copy(), parked_models(learner, bank)["a"])
    assert bank.switch(learner, "a") == "restored"
    np.testing.assert_array_equal(learner.predict_many(X), in_a)
    np.testing.assert_array_equal([learner.predict_one(x, served).copy() for x in X], in_a)


def test_a_restore_the_data_contradicts_falls_back_for_issgpr_too():
    learner = ISSGPR(GP)
    bank = ContextBank("a", 4)
    feed(learner, payload_law(0.0, 1), 20)
    bank.switch(learner, "b")
    feed(learner, payload_law(4.0, 2), 20)
    bank.switch(learner, "a")
    law = payload_law(4.0, 3)                 # still b's payload
    outcomes = []
    for _ in range(SETTLE_BATCHES):
        X, Y = next(law)
        outcomes.append(bank.settle(learner, X, Y))
        learner.learn_many(X, Y)
    assert outcomes[-1] == "fell_back"


def test_calibration_is_shared_state_and_a_restored_learner_does_not_fit_again(tmp_path):
    """Snapshot capture / write / read / restore in-process: the restored learner predicts
    and learns exactly as the original, mid-calibration and after it."""
    for batches in (5, 20):   # stage 1 of 2 (fitted at 30, not yet at 100), then calibrated
        learner = ISSGPR(GP)
        bank = ContextBank("a", 4)
        feed(learner, payload_law(0.0, 1), batches)
        bank.switch(learner, "b")
        feed(learner, payload_law(4.0, 2), 2)
        meta, arrays = snapshots.capture(learner, bank, {})
        assert meta["kind"] == "issgpr"
        path = tmp_path / f"s{batches}.rtsnap"
        snapshots.write(path, meta, arrays)
        meta, arrays = snapshots.read(path)
        twin, twin_bank = ISSGPR(GP), ContextBank("?", 4)
        snapshots.restore(meta, arrays, twin, twin_bank)
        assert twin.stage == learner.stage and twin.calib_fill == learner.calib_fill
        assert twin_bank.current == "b" and twin_bank.names == ["a", "b"]
        law_a, law_b = payload_law(4.0, 5), payload_law(4.0, 5)
        for _ in range(15):   # crosses the second fit when restored mid-calibration
            np.testing.assert_array_equal(twin.learn_many(*next(law_b)),
                                          learner.learn_many(*next(law_a)))
        np.testing.assert_array_equal(twin.W, learner.W)
        np.testing.assert_array_equal(twin.hyper, learner.hyper)


def test_a_snapshot_of_the_other_kind_is_refused(tmp_path):
    learner = OnlineLearner(MLP)
    meta, arrays = snapshots.capture(learner, ContextBank("a", 4), {})
    snapshots.write(tmp_path / "mlp.rtsnap", meta, arrays)
    meta, arrays = snapshots.read(tmp_path / "mlp.rtsnap")
    gp = ISSGPR(GP)
    with pytest.raises(StateFileError, match="another learner configuration"):
        snapshots.restore(meta, arrays, gp, ContextBank("a", 4))
    assert gp.n_steps == 0 and gp.stage == 0


def test_a_background_fit_gives_the_kernel_of_the_fit_in_line():
    """The daemon fits in a thread; given the same window it must end where the in-line fit
    does, and until it takes effect learning goes on with the kernel of before."""
    inline, background = ISSGPR(GP), ISSGPR(GP, background_fit=True)
    law_a, law_b = payload_law(0.0, 1), payload_law(0.0, 1)
    for _ in range(12):                      # the first fit at 30 samples, the second at 100
        X, Y = next(law_a)
        inline.learn_many(X, Y)
        background.learn_many(*next(law_b))
        background.finish_fit()              # as if the fit had ended before the next batch
    assert not background.fitting and background.stage == inline.stage == 2
    np.testing.assert_array_equal(background.hyper, inline.hyper)
    np.testing.assert_allclose(background.W, inline.W, rtol=1e-12, atol=1e-12)
    # while a fit runs, batches are learned with the old kernel and kept for the new one
    late = ISSGPR(GP, background_fit=True)
    law = payload_law(0.0, 1)
    feed(late, law, 3)                        # 30 samples: the fit starts
    assert late.fitting and late.stage == 0
    feed(late, law, 2)
    assert late.calib_fill == 50
    late.finish_fit()
    assert late.stage == 1 and late.t[0] == 50   # the whole window learned with the kernel


def test_options_that_have_no_meaning_for_issgpr_are_refused_clearly():
    learner = ISSGPR(GP)
    with pytest.raises(ValueError, match="no learning rate"):
        learner.set_lr(1e-3)
    with pytest.raises(ValueError, match="no memory"):
        learner.set_memory_learning(False)
    assert learner.rates() == {}
    assert kind_of(learner).status(learner)["calibration"]["stage"] == 0


def test_auto_contexts_run_on_issgpr():
    """The detector and the selection need only the protocol: a stored payload comes back."""
    cfg = {**defaults()["contexts"], "window": 40}
    learner, bank = ISSGPR(GP), ContextBank("a", 4)
    auto = AutoContexts(cfg, 2, 4)
    decisions = []

    def stream(law, batches):
        for _ in range(batches):
            X, Y = next(law)
            P = learner.predict_many(X)
            learner.learn_many(X, Y)
            d = auto.after_batch(learner, bank, X, Y, P, now=1e9)
            if d is not None:
                decisions.append(d["decision"])
                auto.switch(learner, bank, d["context"])

    stream(payload_law(0.0, 1), 400)           # warm-up and a settled model
    stream(payload_law(6.0, 2), 300)           # new payload: a new context
    stream(payload_law(0.0, 3), 300)           # back: the first context is restored
    assert decisions[:2] == ["created", "restored"], decisions
    assert bank.current == "a"


@pytest.mark.parametrize("kind", ["mlp", "issgpr"])
def test_the_serving_copy_predicts_the_published_model_without_allocating(kind):
    """The per-packet part that depends on the kind: predict from the private copy, take a
    publication. Nothing is retained, and nothing the size of the model's weights or
    features is allocated even for a moment (the peak: a few argument tuples and views)."""
    config = (ISSGPRConfig(**{**GP.to_dict(), "n_features": 200}) if kind == "issgpr" else
              LearnerConfig(**{**MLP.to_dict(), "hidden": (64,)}))
    trained, predictor = KINDS[kind].make(config), KINDS[kind].make(config)
    KINDS[kind].warm_up(predictor, 10)
    feed(trained, payload_law(0.0, 1), 15)
    arena = Arena(trained, 2, 10)
    serving = ServingModel(arena, predictor, "a")
    arena.publish(trained, 0)
    assert serving.try_refresh()
    X = next(payload_law(0.0, 4))[0]
    np.testing.assert_allclose([serving.predict(x).copy() for x in X], trained.predict_many(X),
                               rtol=1e-12, atol=1e-12)
    x = X[0].copy()
    for _ in range(3):                        # first calls: lazily created caches
        serving.predict(x)
        arena.publish(trained, 0)
        serving.try_refresh()
    tracemalloc.start()
    try:
        for i in range(200):                 # packets, and a publication every 10th
            serving.predict(x)
            if i % 10 == 0:
                arena.publish(trained, 0)
            serving.try_refresh()
        size, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size == 0
    assert peak < 1024 < max(a.nbytes for a in model_arrays(arena.model))


def test_learner_kind_in_the_config():
    cfg = load_config(None, {"learner": {"kind": "issgpr", "seed": 3,
                                         "issgpr": {"n_features": 500, "forget": 0.995}}})
    c = learner_config(cfg, 6)
    assert c == ISSGPRConfig(n_joints=6, n_inputs=18, n_features=500, forget=0.995, seed=3)
    assert isinstance(learner_config(load_config(None), 7), LearnerConfig)
    for bad, key in (({"kind": "gp"}, "kind"), ({"kind": "issgpr", "issgpr": {"D": 4}}, "D"),
                     ({"kind": "issgpr", "issgpr": {"n_features": 7}}, "even"),
                     ({"kind": "issgpr", "issgpr": {"n_joints": 3}}, "n_joints")):
        with pytest.raises(ConfigError, match=key):
            load_config(None, {"learner": bad})
