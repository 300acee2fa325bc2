"""Config: documented defaults, TOML written by the launcher, CURVE-protected control."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import zmq

from rtlearn.learner import LearnerConfig
from rtlearn.protocol.schema import ControlError
from rtlearn.service.config import defaults, load_config, render_markdown
from rtlearn.service.control import ControlClient
from rtlearn.service.launch import DaemonProcess, free_tcp_port, to_toml

DOCS = Path(__file__).resolve().parents[1] / "docs" / "service.md"


def test_every_key_is_documented_with_its_default():
    assert render_markdown() in DOCS.read_text()


def test_learner_defaults_are_the_learners_own():
    lc = LearnerConfig()
    d = defaults()["learner"]
    assert tuple(d["hidden"]) == lc.hidden and d["lr"] == lc.lr and d["optimizer"] == lc.optimizer


def test_launcher_toml_round_trips(tmp_path):
    cfg = {"learner": {"hidden": [8, 4], "memory": {"n_centres": 10}},
           "snapshots": {"dir": str(tmp_path / 'a "quoted" dir'), "interval": 0.5}}
    assert tomllib.loads(to_toml(cfg)) == cfg
    f = tmp_path / "c.toml"
    f.write_text(to_toml(cfg))
    loaded = load_config(f)
    assert loaded["learner"]["memory"] == {"n_centres": 10}
    assert loaded["snapshots"]["interval"] == 0.5


def test_curve_control_accepts_only_listed_clients(tmp_path):
    server_pub, server_sec = (k.decode() for k in zmq.curve_keypair())
    client = tuple(k.decode() for k in zmq.curve_keypair())
    stranger = tuple(k.decode() for k in zmq.curve_keypair())
    control = f"tcp://127.0.0.1:{free_tcp_port()}"
    cfg = {"endpoints": {"control": control},
           "security": {"curve_public_key": server_pub, "curve_secret_key": server_sec,
                        "curve_clients": [client[0]]},
           "learner": {"hidden": [8]}}
    with DaemonProcess(tmp_path, cfg, server_key=server_pub, client_keys=client) as d:
        assert d.status()["robot"] == "kuka_iiwa"
        for keys, server in ((stranger, server_pub), (None, None)):
            with ControlClient(control, 1.0, server, keys) as other:
                with pytest.raises(TimeoutError):  # handshake refused: no reply at all
                    other.request("status")
        # rtlearn ctl with a key the daemon does not accept names authentication as a cause
        ctl = subprocess.run([sys.executable, "-m", "rtlearn.cli", "ctl", "--endpoint", control,
                              "--timeout", "1", "--server-key", server_pub, "--client-key",
                              *stranger, "status"], capture_output=True, text=True, timeout=60)
        assert ctl.returncode == 2 and "authentication" in ctl.stderr
        assert d.request("options", lr=0.01)["rates"]
        with pytest.raises(ControlError):
            d.request("load", path="../outside")
