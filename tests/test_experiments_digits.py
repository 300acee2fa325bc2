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


def test_gradient_scale_reports_the_small_signal_of_plain_metagd():
    r = digits.gradient_scale(steps=20)
    assert 0 < r["median_signal_nonzero"] < r["median_abs_grad_nonzero"] < 1
    assert 0 < r["fraction_zero"] < 1
    assert len(r["mean_rate_over_base_per_group"]) == 4
