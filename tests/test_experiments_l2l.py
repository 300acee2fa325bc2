import importlib
import sys

import numpy as np
import pytest

import rtlearn.experiments
from rtlearn.experiments import digits, l2l


def test_without_torch_import_works_and_available_says_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    monkeypatch.delitem(sys.modules, "rtlearn.experiments.l2l")
    monkeypatch.delattr(rtlearn.experiments, "l2l")
    fresh = importlib.import_module("rtlearn.experiments.l2l")
    assert fresh.available() == fresh.TORCH_MISSING


def test_meta_tasks_exclude_evaluation_tasks():
    assert not {tuple(sorted(p)) for p in l2l.META_TASKS} & set(digits.TASKS)


@pytest.fixture(scope="module")
def trained():
    pytest.importorskip("torch")
    return l2l.meta_train(0, quick=True)


def test_available_with_torch(trained):
    assert l2l.available() is None


def test_quick_meta_train(trained):
    assert len(trained["meta_losses"]) == l2l.QUICK_ITERATIONS
    assert np.all(np.isfinite(trained["meta_losses"]))
    assert all(isinstance(v, np.ndarray) for v in trained["state"].values())


def test_trained_lstm_lowers_the_loss(trained):
    r = l2l.run_task(trained, digits.task_data((0, 1), 0), 0, 60)
    assert len(r["curve"]) == 60 or r["steps"] is not None
    assert np.mean(r["curve"][-10:]) < np.mean(r["curve"][:10])
    assert r["accuracy"] > 0.5


def test_meta_train_is_deterministic(trained):
    again = l2l.meta_train(0, quick=True)
    assert trained["state"].keys() == again["state"].keys()
    for k, v in trained["state"].items():
        np.testing.assert_array_equal(v, again["state"][k])
    assert trained["meta_losses"] == again["meta_losses"]
