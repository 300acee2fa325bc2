import numpy as np

from rtlearn.experiments import online_lift as ol
from rtlearn.learner import LearnerConfig, OnlineLearner


def test_phase_data_from_committed_stream():
    X, tau, res, attach = ol.phase_data("light", 0, max_samples=200)
    assert X.shape == (200, 21) and tau.shape == (200, 7) and res.shape == (200, 7)
    assert attach is None  # the payload attaches ~1.1 s in, after these 200 samples
    assert np.abs(res).mean() < np.abs(tau).mean()  # the Pinocchio prior explains most torque


def test_quick_trial_structure_and_learning(monkeypatch):
    monkeypatch.setattr(ol, "PHASES", ("none", "light"))
    trial = ol.run_trial(0, quick=True)
    assert set(trial["early"]) == {"GD noreload", "GD reload", "MetaGD noreload", "MetaGD reload"}
    cell = trial["early"]["MetaGD reload"]["0.0001"]["light"]
    assert set(cell) == set(ol.METRICS) and all(np.isfinite(v) for v in cell.values())
    # reload's first phase is noreload's first phase
    assert trial["early"]["GD reload"]["0.0001"]["none"] == trial["early"]["GD noreload"]["0.0001"]["none"]
    # learning: the reloaded network starts light better than a fresh one
    assert (trial["early"]["GD reload"]["0.0001"]["light"]["all"]
            < trial["early"]["GD noreload"]["0.0001"]["light"]["all"])
    summary = ol.summarize([trial])
    text = ol.table(summary)
    assert "| light |" in text and "MetaGD reload" in text


def test_transferred_memory_differs_from_fresh():
    X, tau, _, _ = ol.phase_data("none", 0, max_samples=300)
    cfg = LearnerConfig(optimizer="metagd", lr=1e-4, normalize="none", hidden=(16,))
    first = OnlineLearner(cfg)
    losses = [first.learn_many(X[i:i + 10], tau[i:i + 10]).copy() for i in range(0, 300, 10)]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    fresh, moved = OnlineLearner(cfg), OnlineLearner(cfg)
    moved.set_memory_state(first.memory_state(), transfer=True)
    a, b = fresh.memory_state(), moved.memory_state()
    assert any(not np.allclose(a[k], b[k]) for k in a if k.endswith(".w"))


def test_unknown_method_is_a_clear_error(capsys):
    from rtlearn.cli import main
    assert main(["experiment", "online-lift", "--quick", "--methods", "GD,Nope"]) == 2
    err = capsys.readouterr().err
    assert "'Nope'" in err and "MetaGDMemAdam" in err


def test_quick_trial_with_the_issgpr_peer_on_the_residual(monkeypatch):
    monkeypatch.setattr(ol, "PHASES", ("none", "light"))
    trial = ol.run_trial(0, quick=True, methods="GD,I-SSGPR residual")
    early = trial["early"]
    assert set(early) == {"GD noreload", "GD reload", "I-SSGPR residual noreload",
                          "I-SSGPR residual reload"}
    # reload goes on learning with the model of the first phase: light starts better
    assert (early["I-SSGPR residual reload"]["0.0001"]["light"]["all"]
            < early["I-SSGPR residual noreload"]["0.0001"]["light"]["all"])
    assert "I-SSGPR residual reload" in ol.table(ol.summarize([trial]))
