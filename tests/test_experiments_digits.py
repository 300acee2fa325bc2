import numpy as np

from rtlearn.experiments import digits


def test_digits_quick_trial():
    trial = digits.run_trial(0, quick=True)
    with_l2l = trial["l2l"] is None
    assert len(trial["results"]) == (len(digits.VARIANTS) + with_l2l) * len(digits.TASKS)
    for r in trial["results"].values():
        assert 0.5 < r["accuracy"] <= 1.0  # better than chance after 100 batches
    text = digits.table(digits.summarize([trial]))
    assert "MetaGDMemAdam carried" in text and "| 0.01 |" in text
    assert (digits.L2L in text) if with_l2l else ("L2L skipped" in text)


def test_digits_loss_falls():
    from rtlearn.learner import LearnerConfig, OnlineLearner
    data = digits.task_data((0, 1), 0)
    learner = OnlineLearner(LearnerConfig(n_joints=1, n_inputs=64, hidden=(32,),
                                          loss="logistic", optimizer="gd", lr=0.1,
                                          normalize="none"))
    r = digits.run_task(learner, data, 0, 60)
    assert np.mean(r["curve"][-10:]) < np.mean(r["curve"][:10])
