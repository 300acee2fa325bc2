import numpy as np
import pytest

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


def _write_idx(path, array, gz):
    import gzip
    import struct
    head = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    data = head + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def _fake_mnist(d, n=60):
    """Tiny IDX files of all ten digits: train gzipped, test not, labels named both ways."""
    rng = np.random.default_rng(0)
    for part, gz, stem in (("train", True, "train"), ("test", False, "t10k")):
        labels = np.arange(n) % 10
        # each digit a bright bar at its own row, plus noise: separable like real digits
        images = rng.integers(0, 40, size=(n, 28, 28))
        images[np.arange(n), 2 * labels + 4, :] = 255
        suffix = ".gz" if gz else ""
        _write_idx(d / f"{stem}-images-idx3-ubyte{suffix}", images, gz)
        _write_idx(d / f"{stem}.labels.idx1-ubyte{suffix}".replace(".labels", "-labels"), labels, gz)
    return images, labels


def test_mnist_idx_files_give_the_task_data(tmp_path):
    images, labels = _fake_mnist(tmp_path)
    Xtr, ytr, Xte, yte = digits.task_data((2, 3), 0, mnist=str(tmp_path))
    assert Xtr.shape == (12, 784) and Xte.shape == (12, 784)
    assert 0.0 <= Xtr.min() and Xtr.max() == 1.0
    assert set(np.unique(ytr[:, 0])) == {0.0, 1.0}
    # the test set's rows are exactly its images of digits 2 and 3, scaled
    ref = images[np.isin(labels, (2, 3))].reshape(-1, 784) / 255.0
    assert sorted(map(tuple, Xte.round(6))) == sorted(map(tuple, ref.round(6)))


def test_bad_mnist_files_are_named_in_the_error(tmp_path, capsys):
    from rtlearn.cli import main
    assert main(["experiment", "digits", "--quick", "--mnist", str(tmp_path / "none")]) == 2
    assert "train-images-idx3-ubyte" in capsys.readouterr().err
    _fake_mnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x09\x03" + bytes(20))
    digits.read_mnist.cache_clear()
    assert main(["experiment", "digits", "--quick", "--mnist", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "t10k-images-idx3-ubyte" in err and "not a uint8 IDX file" in err
    assert main(["experiment", "rosenbrock", "--mnist", str(tmp_path)]) == 2



def test_a_task_without_enough_samples_is_an_error_not_a_hang():
    with pytest.raises(ValueError, match="at least 10"):
        next(digits.stream(np.zeros((3, 4)), np.zeros((3, 1)), 0))
