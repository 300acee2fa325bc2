"""The sim / replay command line, offline (--no-publish): record -> replay -> record."""

import tempfile

import numpy as np
import pytest

from rtlearn.cli import main
from rtlearn.sources.log import read_log


@pytest.fixture
def ipc_dir():
    # Unix socket paths are limited to ~107 bytes: pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="rtl") as d:
        yield d


def test_sim_record_then_replay_record_is_identical(tmp_path, capsys):
    first, second = tmp_path / "sim.npz", tmp_path / "replayed.npz"
    assert main(["sim", "--task", "lift", "--payload", "heavy", "--seed", "5", "--noise", "1",
                 "--speed", "max", "--no-publish", "--record", str(first)]) == 0
    assert main(["replay", str(first), "--speed", "max", "--no-publish", "--record", str(second)]) == 0
    h1, a1 = read_log(first)
    h2, a2 = read_log(second)
    assert h1["meta"]["payload"] == ["heavy"] and h1["meta"]["seed"] == 5
    assert h1["contexts"] == h2["contexts"] == ["none", "heavy"]
    assert set(a1) == set(a2)
    for k in a1:
        assert np.array_equal(a1[k], a2[k]), k
    assert "packets" in capsys.readouterr().out


def test_sim_sines_records_one_payload_per_cycle(tmp_path):
    path = tmp_path / "sines.npz"
    assert main(["sim", "--task", "sines", "--robot", "franka_panda", "--payload", "none,heavy",
                 "--cycles", "2", "--speed", "max", "--no-publish", "--record", str(path)]) == 0
    header, arrays = read_log(path)
    assert header["meta"]["task"] == "sines" and header["count"] == 12000
    assert header["contexts"] == ["none", "heavy"]
    assert np.array_equal(arrays["context"], np.repeat([0, 1], 6000))


def test_bad_inputs_exit_with_a_message(tmp_path, capsys):
    assert main(["sim", "--payload", "anvil", "--no-publish", "--speed", "max"]) == 2
    assert "field 'payloads'" in capsys.readouterr().err
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"\x00" * 100)
    assert main(["replay", str(junk), "--no-publish"]) == 2
    assert "junk.npz" in capsys.readouterr().err


def test_record_logs_a_live_sim_stream_exactly(tmp_path, ipc_dir):
    """rtlearn record (subprocess, SUB bound) <- rtlearn sim (RobotClient) over ipc."""
    import subprocess
    import sys

    endpoint = f"ipc://{ipc_dir}/states"
    recorded, published = tmp_path / "recorded.npz", tmp_path / "published.npz"
    rec = subprocess.Popen([sys.executable, "-m", "rtlearn.cli", "record", str(recorded),
                            "--bind", endpoint, "--count", "2000", "--duration", "120"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "recording" in rec.stderr.readline()  # bound: the client's handshake will see it
        assert main(["sim", "--task", "hold", "--payload", "light", "--noise", "1", "--speed", "max",
                     "--connect", endpoint, "--predictions", "none", "--record", str(published)]) == 0
        out, _ = rec.communicate(timeout=120)
    finally:
        rec.kill()
    assert rec.returncode == 0
    assert "2000 packets recorded" in out and "0 lost" in out
    _, a = read_log(published)
    _, b = read_log(recorded)
    for k in ("seq", "t", "q", "qd", "qdd", "tau", "context"):
        assert np.array_equal(a[k], b[k]), k


def test_robot_bridge_publishes_states_with_estimated_acceleration(ipc_dir):
    import threading

    import zmq

    from rtlearn.protocol.schema import decode_state
    from rtlearn.sources.bridge import RobotBridge
    from rtlearn.sources.robot import load_robot

    robot = load_robot("kuka_iiwa")
    endpoint = f"ipc://{ipc_dir}/bridge"
    got, bound = [], threading.Event()

    def receive():
        # A bound SUB hands its subscription to a new peer only while its owner calls into it,
        # so it must be polled while the client waits for the handshake: its own thread.
        ctx = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.bind(endpoint)
        bound.set()
        while len(got) < 100 and sub.poll(10_000):
            got.append(decode_state(sub.recv(), robot.n_joints))
        sub.close(linger=0)
        ctx.term()

    receiver = threading.Thread(target=receive)
    receiver.start()
    bound.wait(10)
    bridge = RobotBridge(robot, [endpoint], prediction_endpoint=None, handshake_timeout=10.0)
    try:
        assert bridge.client.ready
        sent = [bridge.publish(50.0 + 1e-3 * k, np.full(7, 0.01 * k), np.full(7, 3e-3 * k), np.ones(7))
                for k in range(100)]
    finally:
        bridge.close()
        receiver.join(30)
    assert [s.seq for s in got] == list(range(100))
    assert got[0].t == 0.0 and got[-1].t == sent[-1].t
    assert np.allclose(got[-1].qdd, 3.0)  # qd = 3 t, slope of the causal estimator
    assert np.array_equal(got[-1].tau, np.ones(7))
