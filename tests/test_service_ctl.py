"""`rtlearn ctl` against a real daemon: the context override and its precedence over labels,
unknown names refused, --config, endpoints without a transport, a daemon that is not running,
the learning options in status; and what the daemon's log says about it all."""

from __future__ import annotations

import json

import pytest

from rtlearn.cli import main
from rtlearn.protocol.client import RobotClient
from rtlearn.service.launch import DaemonProcess, free_tcp_port
from rtlearn.service.synthetic import synthetic_state

# large layers: a learning step takes longer than ten packets of a flood, so deadline misses
# happen for sure; a tiny log interval: the old log said each of them
CONFIG = {"learner": {"hidden": [512, 512]},
          "guard": {"torque_margin": float("inf"), "sample_margin": float("inf"),
                    "log_interval": 0.001}}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with DaemonProcess(tmp_path_factory.mktemp("ctl"), CONFIG) as d:
        yield d


def ctl(daemon, *argv) -> int:
    return main(["ctl", "--endpoint", daemon.endpoints["control"], *argv])


def answer(client: RobotClient, seq: int, label: str | None):
    """The context that answered one labelled packet."""
    client.publish(synthetic_state(seq, context=label))
    p = client.recv_prediction(30)
    assert p is not None and p.seq == seq
    return p.context


def test_override_holds_over_labels_until_released(daemon, capsys):
    with RobotClient([daemon.endpoints["state"]], daemon.endpoints["prediction"]) as c:
        assert answer(c, 1, "heavy") == "heavy"
        assert answer(c, 2, "light") == "light"
        # a typo is refused with the names it could have meant; nothing is created
        assert ctl(daemon, "context", "hevy") == 1
        err = capsys.readouterr().err
        assert "unknown_context" in err and "'hevy'" in err and "heavy" in err
        assert ctl(daemon, "context", "heavy") == 0
        reply = json.loads(capsys.readouterr().out)
        assert reply["override"] == "heavy" and not reply["new"]
        # the stream keeps saying "light": the override holds, packet after packet
        assert [answer(c, s, "light") for s in range(3, 8)] == ["heavy"] * 5
        assert ctl(daemon, "status") == 0
        st = json.loads(capsys.readouterr().out)
        assert st["context_override"] == "heavy" and st["context"] == "heavy"
        assert "hevy" not in st["contexts_known"]
        assert ctl(daemon, "context", "--release") == 0
        assert json.loads(capsys.readouterr().out)["released"] == "heavy"
        assert answer(c, 8, "light") == "light"
        # a new name only when asked for
        assert ctl(daemon, "context", "--create", "crate") == 0
        assert json.loads(capsys.readouterr().out)["new"]
        assert answer(c, 9, "light") == "crate"
        assert ctl(daemon, "context", "--release") == 0
    assert daemon.status()["context_override"] is None
    log = daemon.log_tail(1_000_000)
    assert "context override 'heavy'" in log and "released" in log
    assert "'light' -> 'heavy' (restored; ctl context override)" in log


def test_options_are_shown_in_status(daemon, capsys):
    before = daemon.status()["options"]
    assert before == {"lr": pytest.approx(1e-3), "memory": True}
    assert ctl(daemon, "options", "--lr", "0.002", "--memory", "off") == 0
    capsys.readouterr()
    assert daemon.status()["options"] == {"lr": pytest.approx(0.002), "memory": False}
    assert ctl(daemon, "options", "--lr", "0.001", "--memory", "on") == 0
    assert daemon.status()["options"] == {"lr": pytest.approx(0.001), "memory": True}


def test_ctl_reads_the_endpoint_from_the_daemon_config(daemon, capsys):
    assert main(["ctl", "--config", str(daemon.config_path), "status"]) == 0
    assert json.loads(capsys.readouterr().out)["robot"] == "kuka_iiwa"


def test_an_endpoint_without_transport_is_a_clear_error(capsys):
    assert main(["ctl", "--endpoint", "127.0.0.1:5603", "status"]) == 2
    err = capsys.readouterr().err
    assert "no transport" in err and "tcp://127.0.0.1:5603" in err and "Traceback" not in err


@pytest.mark.parametrize("endpoint", ["ipc://{tmp}/nobody", "tcp://127.0.0.1:{port}"])
def test_a_daemon_not_running_is_said_without_waiting_for_the_timeout(tmp_path, capsys,
                                                                       endpoint):
    endpoint = endpoint.format(tmp=tmp_path, port=free_tcp_port())
    # the old client waited the whole --timeout and said "no reply within 60 s"
    assert main(["ctl", "--endpoint", endpoint, "--timeout", "60", "status"]) == 2
    err = capsys.readouterr().err
    assert f"no daemon: nothing listens on {endpoint}" in err and "within" not in err


def test_the_serve_log_says_switches_saves_resets_not_each_deadline_miss(daemon, capsys):
    with RobotClient([daemon.endpoints["state"]], daemon.endpoints["prediction"]) as c:
        for s in range(10_000, 12_000):  # a flood: learning falls behind
            c.publish(synthetic_state(s, context="flood"))
        while c.recv_prediction(30) is not None and c.poll_prediction() is not None:
            pass
    assert ctl(daemon, "save", "by-hand.rtsnap") == 0
    assert ctl(daemon, "load", "by-hand.rtsnap") == 0
    assert ctl(daemon, "reset") == 0
    capsys.readouterr()
    st = daemon.status()
    assert st["learning"]["deadline_misses"] >= 2
    log = daemon.log_tail(1_000_000)
    assert log.count("learning step was still running") == 1
    assert "-> 'flood' (created; packet label)" in log
    assert "snapshot written: " in log and "by-hand.rtsnap" in log
    assert "loaded " in log and "reset: everything learned forgotten" in log


def test_a_daemon_config_with_an_endpoint_without_transport_is_refused(tmp_path, capsys):
    from rtlearn.service.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="endpoints.state '127.0.0.1:5601' has no transport"):
        load_config(None, {"endpoints": {"state": "127.0.0.1:5601"}})
    with pytest.raises(ConfigError, match="has no port"):
        load_config(None, {"endpoints": {"control": "tcp://127.0.0.1"}})
    bad = tmp_path / "bad.toml"
    bad.write_text('[endpoints]\ncontrol = "localhost:5603"\n')
    assert main(["ctl", "--config", str(bad), "status"]) == 2
    assert "endpoints.control 'localhost:5603' has no transport" in capsys.readouterr().err


def test_keys_that_start_with_a_dash_are_taken_as_keys(capsys):
    # Z85 has '-' in its alphabet, so about one CURVE key in 85 starts with it; argparse
    # took such a value for an option ("expected one argument")
    from zmq.utils import z85

    key = "-" + "0" * 39
    assert len(z85.decode(key)) == 32
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    code = main(["ctl", "--endpoint", endpoint, "--timeout", "0.3", "--server-key", key,
                 "--client-key", key, "-" + "1" * 39, "status"])
    err = capsys.readouterr().err
    assert "expected" not in err and "argument" not in err, err
    assert code == 2 and "rtlearn ctl" in err  # it got as far as the socket: nobody answers
    assert main(["ctl", "--endpoint", endpoint, "--server-key", "-short", "status"]) == 2
    assert "'-short'" in capsys.readouterr().err  # and a bad key is still named as such
