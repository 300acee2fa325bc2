"""Snapshots: periodic and on SIGTERM, atomic under kill -9, resumed with --resume; path
confinement; config rules for the control endpoint."""

from __future__ import annotations

import time

import numpy as np
import pytest
import zmq

from rtlearn.learner import LearnerConfig, OnlineLearner
from rtlearn.protocol.client import RobotClient
from rtlearn.service import snapshots
from rtlearn.service.config import ConfigError, load_config
from rtlearn.service.launch import DaemonProcess
from rtlearn.service.synthetic import synthetic_state, synthetic_stream

# the synthetic torques and velocities are not the iiwa's (above its 40 N*m limits on joints 6
# and 7, joint 2 faster than twice its 1.71 rad/s): no limit checks, so that every prediction
# is published as the model made it and every sample is learned
CONFIG = {"learner": {"hidden": [32, 32]}, "snapshots": {"interval": 0.3},
          "guard": {"torque_margin": float("inf"), "sample_margin": float("inf")}}


def stream_through(d: DaemonProcess, states) -> list:
    with RobotClient([d.endpoints["state"]], d.endpoints["prediction"]) as c:
        for s in states:
            c.publish(s)
        got = []
        while len(got) < len(states) and (p := c.recv_prediction(30)) is not None:
            got.append(p)
    return got


def prediction_from_file(path, context, state):
    meta, arrays = snapshots.read(path)
    learner = OnlineLearner(LearnerConfig.from_dict(meta["learner"]))
    i = meta["contexts"].index(context)
    learner.set_network_state({k[len(f"ctx{i}."):]: v for k, v in arrays.items()
                               if k.startswith(f"ctx{i}.")})
    return learner.predict_one(np.concatenate([state.q, state.qd, state.qdd])).copy()


def test_kill_9_then_resume_continues_from_the_snapshot(tmp_path):
    d = DaemonProcess(tmp_path, CONFIG)
    try:
        stream_through(d, [synthetic_state(k, context="lift") for k in range(3000)])
        deadline = time.monotonic() + 60
        while d.status()["learning"]["samples"] < 3000 and time.monotonic() < deadline:
            time.sleep(0.05)
        written = d.status()["snapshots"]["written"]
        while d.status()["snapshots"]["written"] < written + 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # a snapshot taken after all 3000 samples were learned
        # keep learning while snapshots are being written, then die mid-flight
        with RobotClient([d.endpoints["state"]], d.endpoints["prediction"]) as c:
            for s in synthetic_stream(2000, start_seq=3000, context="lift"):
                c.publish(s)
            time.sleep(0.5)
            d.kill()
    finally:
        d.kill()
    path = d.snapshot_dir / "latest.rtsnap"
    meta, arrays = snapshots.read(path)  # intact, not torn
    assert meta["current"] == "lift" and "lift" in meta["contexts"]
    steps_on_disk = int(arrays["counters"][0])
    assert steps_on_disk >= 300  # at most the learning since the last snapshot is lost
    probe = synthetic_state(123_456, context="lift")
    expected = prediction_from_file(path, "lift", probe)

    with DaemonProcess(tmp_path, CONFIG | {"snapshots": {"interval": 0.0}}, resume=True) as d2:
        st = d2.status()
        assert st["resumed_from"] == str(path)
        assert st["learner"]["steps"] == steps_on_disk
        assert st["context"] == "lift"
        (p,) = stream_through(d2, [probe])
    np.testing.assert_allclose(p.tau, expected, rtol=1e-9, atol=1e-9)


def test_sigterm_learns_buffered_samples_and_snapshots(tmp_path):
    cfg = {**CONFIG, "snapshots": {"interval": 0.0}}  # (CONFIG: every sample learned)
    with DaemonProcess(tmp_path, cfg) as d:
        stream_through(d, list(synthetic_stream(1005)))  # 100 full batches + 5 buffered
        assert d.stop() == 0
    meta, arrays = snapshots.read(d.snapshot_dir / "latest.rtsnap")
    assert int(arrays["counters"][1]) == 1005  # every sample learned from, exactly once


def test_save_path_is_confined(tmp_path):
    base = tmp_path / "snaps"
    base.mkdir()
    (tmp_path / "outside").mkdir()
    (base / "link").symlink_to(tmp_path / "outside")
    assert snapshots.confined(base, "a/b.rtsnap") == (base / "a/b.rtsnap").resolve()
    for bad in ["../x", "/etc/passwd", "link/x", "", "a/../../x"]:
        with pytest.raises(snapshots.SnapshotPathError):
            snapshots.confined(base, bad)


def test_remote_control_needs_curve_keys(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[endpoints]\ncontrol = "tcp://0.0.0.0:5603"\n')
    with pytest.raises(ConfigError, match="CURVE|curve"):
        load_config(f)
    public, secret = (k.decode() for k in zmq.curve_keypair())
    f.write_text('[endpoints]\ncontrol = "tcp://0.0.0.0:5603"\n[security]\n'
                 f'curve_secret_key = "{secret}"\ncurve_public_key = "{public}"\n')
    assert load_config(f)["endpoints"]["control"] == "tcp://0.0.0.0:5603"


PUBLIC, SECRET = (k.decode() for k in zmq.curve_keypair())
OTHER_PUBLIC = zmq.curve_keypair()[0].decode()


@pytest.mark.parametrize("security, message", [
    ({"curve_secret_key": SECRET}, "without curve_public_key; the public key of this secret "
                                   f'key is "{PUBLIC}"'),
    ({"curve_public_key": PUBLIC}, "curve_public_key without curve_secret_key"),
    ({"curve_secret_key": SECRET, "curve_public_key": OTHER_PUBLIC},
     "is not the public key of curve_secret_key"),
    ({"curve_secret_key": SECRET, "curve_public_key": "a" * 40},
     "is not the public key of curve_secret_key"),
    ({"curve_secret_key": "~" * 40, "curve_public_key": PUBLIC},
     "curve_secret_key holds characters outside the Z85 alphabet"),
    ({"curve_secret_key": SECRET[:39], "curve_public_key": PUBLIC},
     "curve_secret_key must be a 40-character Z85 key"),
    ({"curve_clients": [OTHER_PUBLIC]}, "curve_clients needs the server's curve_secret_key"),
    ({"curve_secret_key": SECRET, "curve_public_key": PUBLIC, "curve_clients": ["x" * 39]},
     "curve_clients: 'xxx"),
])
def test_curve_key_errors_are_clear(security, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, {"security": security})
    assert message in str(e.value)


@pytest.mark.parametrize("text, key", [
    ("[learner]\nlrr = 1.0\n", "learner.lrr"),
    ("[snapshot]\n", "snapshot"),
    ('[learner]\nlr = "big"\n', "learner.lr"),
    ("[learner]\nmemory = {n_centers = 3}\n", "learner"),
    ("[snapshots]\nfile = '../x'\n", "snapshots.file"),
])
def test_config_errors_name_the_key(tmp_path, text, key):
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(f)
