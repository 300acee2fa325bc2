"""`rtlearn fit` against the daemon: the same log replayed through a real daemon subprocess (at
full speed and paced) and fitted offline end with the same model bytes; `serve --load` starts
from a fitted model and predicts what it predicts; bad model files and paths get clear
errors."""

import numpy as np
import pytest

from rtlearn.cli import main
from rtlearn.learner import OnlineLearner, StateFileError
from rtlearn.protocol.client import RobotClient
from rtlearn.service import snapshots
from rtlearn.service.config import learner_config, load_config
from rtlearn.service.contexts import ContextBank
from rtlearn.service.launch import DaemonProcess
from rtlearn.sources.log import LogSource, write_log
from rtlearn.sources.sim import SimSource

# small networks: quicker steps, the same kernels and the same per-batch code
CONFIG = {"learner": {"hidden": [32, 32]}, "snapshots": {"interval": 0.0}}


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    """A labelled lift log (payloads none then heavy: two contexts) and the same states
    without labels."""
    d = tmp_path_factory.mktemp("logs")
    src = SimSource("kuka_iiwa", task="lift", payload=["none", "heavy"], cycles=2, seed=3)
    states = list(src)
    src.close()
    write_log(d / "labelled.npz", src.robot, states)
    for s in states:
        s.context = None
    write_log(d / "plain.npz", src.robot, states)
    return d, len(states)


def _replayed(tmp_path, log, speed, extra=(), count=None):
    """The daemon's final snapshot after a replay of `log` (`count` states) into a fresh
    daemon."""
    with DaemonProcess(tmp_path / "daemon", CONFIG) as d:
        ep = d.endpoints
        assert main(["replay", str(log), "--speed", speed, "--connect", ep["state"],
                     "--predictions", ep["prediction"], *extra]) == 0
        st = d.status()
        assert st["packets"]["predicted"] == (count or len(LogSource(log)))  # every one read
        assert d.stop() == 0
        return snapshots.read(d.snapshot_dir / "latest.rtsnap"), st


def _fitted(tmp_path, log, extra=(), learner="hidden = [32, 32]"):
    model = tmp_path / "fitted" / "model.npz"
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "fit.toml").write_text(f"[learner]\n{learner}\n")
    assert main(["fit", str(log), "--config", str(tmp_path / "fit.toml"), "--save", str(model),
                 *extra]) == 0
    return snapshots.read(model), model


def _same_model(a, b):
    (meta_a, arrays_a), (meta_b, arrays_b) = a, b
    assert (meta_a["contexts"], meta_a["current"]) == (meta_b["contexts"], meta_b["current"])
    assert meta_a["learner"] == meta_b["learner"]
    assert sorted(arrays_a) == sorted(arrays_b)
    for k in arrays_a:
        assert arrays_a[k].tobytes() == arrays_b[k].tobytes(), k


@pytest.mark.parametrize("speed", ["max", "4"])
def test_fit_ends_with_the_model_of_a_replay_through_the_daemon(tmp_path, logs, speed, capsys):
    d, count = logs
    replayed, st = _replayed(tmp_path, d / "labelled.npz", speed)
    fitted, _ = _fitted(tmp_path, d / "labelled.npz")
    assert fitted[0]["contexts"] == ["default", "heavy", "none"]
    _same_model(replayed, fitted)
    out = capsys.readouterr().out
    assert "prequential MSE" in out and f"fitted {count} samples" in out


def test_fit_with_the_peer_learner_ends_calibrated_and_the_same_every_time(tmp_path, logs):
    # a kernel fit takes ~1 s; the log (~7 s of samples) is fitted in well under that, so a
    # fit that left the kernel fits to a thread, as the daemon does, ended uncalibrated
    d, _ = logs
    runs = [_fitted(tmp_path / str(i), d / "labelled.npz", learner='kind = "issgpr"')
            for i in range(2)]
    _same_model(runs[0][0], runs[1][0])
    meta, arrays = runs[0][0]
    assert meta["kind"] == "issgpr"
    config = snapshots.learner_config(meta)
    assert list(arrays["memory.calib.counts"])[0] == len(config.calib)  # every stage fitted
    # served as the daemon would: the kernel is there, and it predicts the last second it
    # learned (its memory is 0.1 s: forget 0.99) far better than the mean of those torques
    from rtlearn.learner.api import kind_of
    learner = kind_of(config).make(config, daemon=True)
    snapshots.restore(meta, arrays, learner, ContextBank("default", 8))
    assert kind_of(learner).status(learner)["kernel"] is not None
    states = list(LogSource(d / "labelled.npz"))
    X = np.array([np.r_[s.q, s.qd, s.qdd] for s in states[-1000:]])
    Y = np.array([s.tau for s in states[-1000:]])
    err = np.mean((learner.predict_many(X) - Y) ** 2)
    assert err < 0.05 * np.mean((Y - Y.mean(0)) ** 2), err


def test_fit_into_a_named_context_equals_a_replay_labelled_with_it(tmp_path, logs):
    d, _ = logs
    replayed, _ = _replayed(tmp_path, d / "plain.npz", "max", ["--context", "payload-a"])
    fitted, _ = _fitted(tmp_path, d / "plain.npz", ["--context", "payload-a"])
    assert fitted[0]["current"] == "payload-a"
    _same_model(replayed, fitted)


def test_serve_load_starts_from_the_fitted_model(tmp_path, logs):
    d, _ = logs
    (meta, arrays), model = _fitted(tmp_path, d / "labelled.npz")
    # the reference: the file restored into a learner outside any daemon
    cfg = load_config(None, CONFIG)
    learner = OnlineLearner(learner_config(cfg, 7))
    snapshots.restore(meta, arrays, learner, ContextBank("default", 32))
    state = list(LogSource(d / "plain.npz"))[3000]  # mid-lift: a prediction within the limits
    expected = learner.predict_one(np.concatenate([state.q, state.qd, state.qdd])).copy()
    with DaemonProcess(tmp_path / "loaded", CONFIG, load=str(model)) as daemon:
        st = daemon.status()
        assert st["loaded_from"] == str(model)
        assert st["context"] == meta["current"] and st["contexts_known"] == meta["contexts"]
        assert st["learner"]["steps"] == int(arrays["counters"][0])
        with RobotClient([daemon.endpoints["state"]], daemon.endpoints["prediction"]) as c:
            c.publish(state)
            p = c.recv_prediction(30)
    assert p is not None and p.seq == state.seq and p.valid
    np.testing.assert_allclose(p.tau, expected, rtol=1e-12, atol=1e-12)


def test_bad_model_files_and_paths_get_clear_errors(tmp_path, logs, capsys):
    d, _ = logs
    log = str(d / "labelled.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a model")
    assert main(["fit", log, "--load", str(junk)]) == 2
    assert "not a valid rtlearn state file" in capsys.readouterr().err
    assert main(["fit", log, "--load", str(tmp_path / "missing.npz")]) == 2
    assert "cannot read" in capsys.readouterr().err
    (tmp_path / "afile").write_text("")
    assert main(["fit", log, "--save", str(tmp_path / "afile" / "model.npz")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert main(["fit", log, "--save", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert main(["fit", str(tmp_path / "nolog.npz")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["serve", "--load", str(junk), "--resume"]) == 2
    assert "exclude each other" in capsys.readouterr().err
    # another robot's model, and a model of another learner configuration
    (meta, arrays), model = _fitted(tmp_path, d / "labelled.npz")
    capsys.readouterr()
    snapshots.write(tmp_path / "other.npz", {**meta, "robot": "ur5"}, arrays)
    with pytest.raises(StateFileError, match="robot 'ur5'"):
        snapshots.read_model(tmp_path / "other.npz", "kuka_iiwa")
    assert main(["fit", log, "--load", str(model)]) == 2  # default hidden layers: another config
    assert "another learner configuration" in capsys.readouterr().err
    cfg = tmp_path / "serve.toml"
    cfg.write_text(f"[snapshots]\ndir = '{tmp_path / 'snaps'}'\n")
    assert main(["serve", "--config", str(cfg), "--load", str(tmp_path / "other.npz")]) == 2
    assert "robot 'ur5'" in capsys.readouterr().err


def test_fit_of_a_ros2_bag_equals_its_replay(tmp_path, logs):
    from test_sources_log import _write_bag

    d, _ = logs
    src = LogSource(d / "plain.npz")
    a = src.arrays
    bag = tmp_path / "arm_bag"
    m = 3000  # 3 s: the bag's accelerations come from the causal estimate
    _write_bag(bag, "mcap", a["t"][:m], a["q"][:m], a["qd"][:m], a["tau"][:m],
               src.robot.joints)
    replayed, _ = _replayed(tmp_path, bag, "max", ["--context", "arm"], count=m)
    fitted, _ = _fitted(tmp_path, bag, ["--context", "arm"])
    assert int(fitted[1]["counters"][1]) > m - 100  # learned, a few outliers aside
    _same_model(replayed, fitted)


def test_serve_load_refuses_to_overwrite_snapshots_without_fresh(tmp_path, logs, capsys):
    d, _ = logs
    _, model = _fitted(tmp_path, d / "labelled.npz")
    snaps = tmp_path / "snaps"
    snaps.mkdir()
    (snaps / "latest.rtsnap").write_bytes(b"a trained model")
    cfg = tmp_path / "serve.toml"
    cfg.write_text(f"[learner]\nhidden = [32, 32]\n[snapshots]\ndir = '{snaps}'\n")
    capsys.readouterr()
    assert main(["serve", "--config", str(cfg), "--load", str(model)]) == 2
    err = capsys.readouterr().err
    assert "--fresh" in err and "--resume" not in err and str(model) in err
    assert (snaps / "latest.rtsnap").read_bytes() == b"a trained model"
