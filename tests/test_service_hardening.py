"""Issue 12: starts, snapshots, sequence rules, socket limits, contexts and control options,
each against a real daemon subprocess on loopback."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq

from rtlearn.protocol.client import RobotClient
from rtlearn.protocol.schema import encode_request, encode_state
from rtlearn.service import snapshots
from rtlearn.service.control import ControlClient
from rtlearn.service.launch import DaemonProcess, free_tcp_port, to_toml
from rtlearn.service.synthetic import synthetic_state, synthetic_stream

# joint 2 of the synthetic stream moves faster than twice the iiwa's 1.71 rad/s: its samples
# would not be learned, so the sample limit check is off (the prediction check stays on)
TINY = {"learner": {"hidden": [8]}, "guard": {"sample_margin": float("inf")}}
ROBOTS = Path(__file__).resolve().parents[1] / "robots"


def wait_status(d: DaemonProcess, done, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while not done(st := d.status()):
        assert time.monotonic() < deadline, f"status not reached in time: {st}"
        time.sleep(0.05)
    return st


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def serve(config_path, *extra, timeout: float = 120) -> subprocess.CompletedProcess:
    """`rtlearn serve` expected to end by itself (a refused or failed start)."""
    return subprocess.run([sys.executable, "-m", "rtlearn.cli", "serve", "--config",
                           str(config_path), *extra], capture_output=True, text=True,
                          timeout=timeout)


def test_ipv6_loopback_control_endpoint_serves(tmp_path):
    control = f"tcp://[::1]:{free_tcp_port()}"
    with DaemonProcess(tmp_path, {**TINY, "endpoints": {"control": control}}) as d:
        assert d.status()["robot"] == "kuka_iiwa"


def test_a_bind_failure_exits_2_naming_the_socket_and_writes_nothing(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = {**TINY, "endpoints": {"control": f"tcp://127.0.0.1:{port}",
                                     "state": f"ipc://{tmp_path}/s", "prediction": f"ipc://{tmp_path}/p"},
               "snapshots": {"dir": str(tmp_path / "snaps")}}
        (tmp_path / "d.toml").write_text(to_toml(cfg))
        done = serve(tmp_path / "d.toml")
    assert done.returncode == 2, done.stderr
    assert f"cannot bind the control socket to tcp://127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "snaps").exists() or not any((tmp_path / "snaps").iterdir())


def test_snapshot_generations_rotate_atomically(tmp_path):
    path = tmp_path / "latest.rtsnap"
    for k in range(5):
        snapshots.write(path, {"k": k}, {"a": np.array([k])}, keep=3)
    assert [p.name for p in snapshots.generations(path)] == \
        ["latest.rtsnap", "latest.rtsnap.1", "latest.rtsnap.2"]
    assert [snapshots.load_state(p, snapshots.KIND, (1,))[0]["k"]
            for p in snapshots.generations(path)] == [4, 3, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == \
        ["latest.rtsnap", "latest.rtsnap.1", "latest.rtsnap.2"]  # no temporary left


def test_start_without_resume_refuses_to_overwrite_then_resume_and_fresh(tmp_path):
    cfg = {**TINY, "snapshots": {"interval": 0.2, "keep": 3}}
    with DaemonProcess(tmp_path, cfg) as d:
        with RobotClient([d.endpoints["state"]], d.endpoints["prediction"]) as c:
            for s in synthetic_stream(300):
                c.publish(s)
            wait_for(lambda: d.status()["learning"]["samples"] >= 300)
        wait_for(lambda: d.status()["snapshots"]["written"] >= 3)
        assert d.stop() == 0
    snap = d.snapshot_dir / "latest.rtsnap"
    gens = snapshots.generations(snap)
    assert [p.name for p in gens] == ["latest.rtsnap", "latest.rtsnap.1", "latest.rtsnap.2"]
    before = {p.name: p.read_bytes() for p in gens}

    # no --resume, no --fresh: refused, nothing touched
    done = serve(d.config_path)
    assert done.returncode == 2
    assert "--resume" in done.stderr and "--fresh" in done.stderr and "Traceback" not in done.stderr
    assert {p.name: p.read_bytes() for p in snapshots.generations(snap)} == before

    # --resume with a corrupt newest generation: the next one, said so
    snap.write_bytes(b"PK\x03\x04 torn")
    expected_steps = int(snapshots.read(gens[1])[1]["counters"][0])
    with DaemonProcess(tmp_path, cfg | {"snapshots": {"interval": 0.0}}, resume=True,
                       log_file="resume.log") as d2:
        st = d2.status()
        assert st["resumed_from"] == str(gens[1])
        assert [s["path"] for s in st["resume_skipped"]] == [str(snap)]
        assert st["learner"]["steps"] == expected_steps
        assert d2.stop() == 0
    assert f"skipped the newer {snap}" in d2.log_tail()

    # --fresh: a new start; the old generations moved aside, byte for byte
    now = {p.name: p.read_bytes() for p in snapshots.generations(snap)}
    with DaemonProcess(tmp_path, cfg, fresh=True, log_file="fresh.log") as d3:
        assert d3.status()["learner"]["steps"] == 0
    (aside,) = tmp_path.joinpath("snapshots").glob("previous-*")
    assert {p.name: p.read_bytes() for p in aside.iterdir()} == now


def test_snapshot_write_failures_show_in_status_log_once_and_fail_the_exit(tmp_path):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the snapshot directory should be")
    cfg = {**TINY, "snapshots": {"dir": str(blocked / "snaps"), "interval": 0.1}}
    with DaemonProcess(tmp_path, cfg) as d:
        wait_for(lambda: d.status()["snapshots"]["errors"] >= 3)
        with RobotClient([d.endpoints["state"]], d.endpoints["prediction"]) as c:
            for s in synthetic_stream(50):
                c.publish(s)
            got = [c.recv_prediction(30) for _ in range(50)]
        assert all(p is not None and p.valid for p in got)  # still serving
        st = d.status()["snapshots"]
        assert st["last_time"] is None and st["written"] == 0
        assert "snaps" in st["last_error"] and st["last_error_time"] > 0
        blocked.unlink()  # the disk is back
        wait_for(lambda: d.status()["snapshots"]["written"] >= 1)
        st = d.status()["snapshots"]
        assert st["last_time"] >= st["last_error_time"] and st["errors"] >= 3
        assert d.stop() == 5
    assert d.log_tail(100_000).count("failed: [Errno 20]") == 1  # ENOTDIR, logged once


def test_predictions_beyond_the_robots_torque_limits_are_invalid(tmp_path):
    """A robot file whose limits (0.5 N*m) the learned torques (~25 N*m) exceed: such
    predictions go out with valid = false and zero torque; the others are within them."""
    text = (ROBOTS / "kuka_iiwa.toml").read_text()
    text = re.sub(r"(?m)^torque_limits = .*$", "torque_limits = [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]", text)
    robot = tmp_path / "weak_iiwa.toml"
    robot.write_text(text)
    limit = 0.5
    with DaemonProcess(tmp_path, TINY, robot=str(robot)) as d:
        with RobotClient([d.endpoints["state"]], d.endpoints["prediction"]) as c:
            preds = []
            for s in synthetic_stream(1500):
                c.publish(s)
                preds += iter(c.poll_prediction, None)
            while len(preds) < 1500 and (p := c.recv_prediction(30)) is not None:
                preds.append(p)
        st = d.status()["packets"]
    assert len(preds) == 1500
    invalid = [p for p in preds if not p.valid]
    assert all(np.abs(p.tau).max() <= limit for p in preds if p.valid)
    assert all((p.tau == 0).all() for p in invalid)
    assert len(invalid) > 500  # the model learned torques far beyond 0.5 N*m
    assert st["invalid_predictions"] == st["over_limit_predictions"] == len(invalid)


def test_an_infinite_torque_margin_turns_the_check_off(tmp_path):
    text = (ROBOTS / "kuka_iiwa.toml").read_text()
    text = re.sub(r"(?m)^torque_limits = .*$", "torque_limits = [1e-9, 1e-9, 1e-9, 1e-9, 1e-9, 1e-9, 1e-9]", text)
    robot = tmp_path / "weak_iiwa.toml"
    robot.write_text(text)
    off = {"torque_margin": float("inf"), "sample_margin": float("inf")}
    with DaemonProcess(tmp_path, {**TINY, "guard": off},
                       robot=str(robot)) as d:
        with RobotClient([d.endpoints["state"]], d.endpoints["prediction"]) as c:
            for s in synthetic_stream(20):
                c.publish(s)
            preds = [c.recv_prediction(30) for _ in range(20)]
    assert all(p is not None and p.valid for p in preds)


class RawPeer:
    """A raw XPUB on the state socket (past the slow-joiner) and a SUB on the predictions."""

    def __init__(self, d: DaemonProcess):
        self.ctx = zmq.Context()
        self.pub = self.ctx.socket(zmq.XPUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.setsockopt(zmq.SNDHWM, 100_000)  # a burst must not be dropped at the HWM
        self.pub.connect(d.endpoints["state"])
        assert self.pub.poll(10_000), "daemon never subscribed"
        self.pub.recv()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.RCVHWM, 100_000)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(d.endpoints["prediction"])
        assert self.sub.poll(10_000), "no hello"
        self.sub.recv()

    def send(self, seq: int, stream: int) -> None:
        state = synthetic_state(seq % 10_000)  # the motion repeats; seq is what matters here
        state.seq = seq
        self.pub.send(encode_state(state, stream))

    def answers(self, count: int, timeout_ms: int = 10_000) -> list[int]:
        """The seqs of the predictions received, until `count` or a silence of timeout_ms."""
        out = []
        while len(out) < count and self.sub.poll(timeout_ms):
            msg = msgpack.unpackb(self.sub.recv())
            if msg["kind"] == "prediction":
                out.append(msg["seq"])
        return out

    def close(self) -> None:
        self.pub.close(linger=0)
        self.sub.close(linger=0)
        self.ctx.term()


def test_one_far_ahead_packet_does_not_block_its_stream(tmp_path):
    with DaemonProcess(tmp_path, TINY) as d:
        peer = RawPeer(d)
        sent = list(range(100)) + [2 ** 62] + list(range(100, 2100))
        for seq in sent:
            peer.send(seq, stream=77)
        got = peer.answers(len(sent) - 2)
        peer.close()
        st = wait_status(d, lambda st: st["packets"]["received"] >= len(sent))["packets"]
    # the stray one is answered (it is a valid packet); 100 and 101 are out_of_order, then
    # 102 (the third consecutive one below 2^62) resyncs the stream
    assert got == list(range(100)) + [2 ** 62] + list(range(102, 2100))
    assert st["rejected"] == {"out_of_order": 2}
    assert st["resyncs"] == 2 and st["lost"] == 0


def test_status_survives_huge_sequence_jumps(tmp_path):
    with DaemonProcess(tmp_path, TINY) as d:
        peer = RawPeer(d)
        for stream in (1, 2, 3):
            peer.send(0, stream)
            peer.send(2 ** 63 - 1, stream)
        assert len(peer.answers(6)) == 6
        peer.close()
        st = d.status()["packets"]  # lost would be 3 (2^63 - 2) > 2^64 without the bound
    assert st["lost"] == 0 and st["resyncs"] == 3 and st["stream_restarts"] == 2


def test_an_oversized_control_request_is_refused_before_it_is_read(tmp_path):
    with DaemonProcess(tmp_path, TINY) as d:
        with ControlClient(d.endpoints["control"], 2.0) as big:
            with pytest.raises(TimeoutError):  # ZMQ_MAXMSGSIZE: the connection is dropped
                big.request_raw(encode_request("status") + b"\x00" * (1 << 20))
        reply = msgpack.unpackb(d.ctl.request_raw(b"\x00" * 1000))  # below the limit: decoded
        assert reply["error"]["reason"] == "malformed"
        assert d.status()["robot"] == "kuka_iiwa"  # other clients are served


def test_a_subscription_storm_gets_a_bounded_number_of_hellos(tmp_path):
    with DaemonProcess(tmp_path, TINY) as d:
        peer = RawPeer(d)  # its own hello proves new subscribers are still greeted
        storm = peer.ctx.socket(zmq.XSUB)
        storm.setsockopt(zmq.LINGER, 0)
        storm.connect(d.endpoints["prediction"])
        for _ in range(15_000):
            storm.send(b"\x01")
        d.status()  # the daemon has run its loop since
        hellos = 0
        while peer.sub.poll(1000):  # until a second without any
            hellos += msgpack.unpackb(peer.sub.recv())["kind"] == "hello"
        storm.close(linger=0)
        peer.close()
    assert 1 <= hellos < 100, hellos  # one per 0.1 s at most, not one per subscription
