"""Robot identity: the rid of docs/protocol.md against a separately written FNV-1a, the hello
that names the daemon's robot, RobotClient refusing a daemon of another robot, and a real
daemon refusing (and counting) another robot's packets."""

from __future__ import annotations

import threading
from dataclasses import replace

import msgpack
import pytest
import zmq

from rtlearn.protocol.client import RobotClient, RobotMismatchError
from rtlearn.protocol.schema import (Hello, decode_prediction_message, encode_hello,
                                     encode_state, robot_id)
from rtlearn.service.launch import DaemonProcess
from rtlearn.service.synthetic import synthetic_state, synthetic_stream
from rtlearn.sources.robot import load_robot


def fnv1a_32(data: bytes) -> int:
    """FNV-1a as its authors define it (http://www.isthe.com/chongo/tech/comp/fnv/)."""
    h = 0x811C9DC5
    for b in data:
        h ^= b
        h = (h * 0x01000193) % (1 << 32)
    return h


def test_rid_is_fnv1a_of_name_and_nul_separated_joints():
    # published FNV-1a 32-bit test vectors
    assert robot_id("", []) == fnv1a_32(b"") == 0x811C9DC5
    assert robot_id("a", []) == 0xE40C292C
    assert robot_id("foobar", []) == 0xBF9CF968
    kuka = load_robot("kuka_iiwa")
    assert robot_id(kuka.name, kuka.joints) == fnv1a_32(
        b"\x00".join([kuka.name.encode()] + [j.encode() for j in kuka.joints]))
    assert robot_id("bras", ["épaule", "coude"]) == fnv1a_32("bras\x00épaule\x00coude".encode())
    # the separator makes the split matter; the joint order matters
    assert robot_id("ab", ["c"]) != robot_id("a", ["bc"])
    assert robot_id("r", ["j1", "j2"]) != robot_id("r", ["j2", "j1"])


def test_hello_names_the_robot_and_old_hellos_still_decode():
    h = decode_prediction_message(encode_hello(2, "none", "arm", ["j1", "j2"]))
    assert h == Hello(2, "none", "arm", ("j1", "j2"), robot_id("arm", ["j1", "j2"]))
    assert decode_prediction_message(encode_hello(2, "none")) == Hello(2, "none")
    assert msgpack.unpackb(encode_state(synthetic_state(0), rid=5))["rid"] == 5


class FakeDaemon:
    """A prediction XPUB that answers each subscriber with a given hello."""

    def __init__(self, tmp_path, hello: bytes):
        self.ctx = zmq.Context()
        self.state_ep, self.pred_ep = f"ipc://{tmp_path}/s", f"ipc://{tmp_path}/p"
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.bind(self.state_ep)
        self.pub = self.ctx.socket(zmq.XPUB)
        self.pub.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.pub.bind(self.pred_ep)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(hello,))
        self.thread.start()

    def _run(self, hello: bytes) -> None:
        poller = zmq.Poller()
        poller.register(self.sub, zmq.POLLIN)
        poller.register(self.pub, zmq.POLLIN)
        while not self.stop.is_set():
            for s, _ in poller.poll(10):
                if s.recv()[:1] == b"\x01" and s is self.pub:
                    self.pub.send(hello)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sub.close(linger=0)
        self.pub.close(linger=0)
        self.ctx.term()


@pytest.mark.parametrize("served, names", [
    (("franka_panda", None), ["'franka_panda'", "'kuka_iiwa'", "--robot kuka_iiwa"]),
    (("kuka_iiwa", "renamed"), ["joints ['renamed'", "'lbr_iiwa_joint_1'"]),
])
def test_client_refuses_a_daemon_of_another_robot(tmp_path, served, names):
    kuka = load_robot("kuka_iiwa")
    name, joints = served
    joints = [joints] * 7 if joints else load_robot(name).joints
    fake = FakeDaemon(tmp_path, encode_hello(7, "none", name, joints))
    try:
        with pytest.raises(RobotMismatchError) as e:
            RobotClient([fake.state_ep], fake.pred_ep, handshake_timeout=10, robot=kuka)
        # the same daemon, its own robot: accepted
        with RobotClient([fake.state_ep], fake.pred_ep, handshake_timeout=10,
                         robot=replace(kuka, name=name, joints=joints)) as c:
            assert c.ready and c.daemon_hello.robot == name
    finally:
        fake.close()
    for text in names:
        assert text in str(e.value)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with DaemonProcess(tmp_path_factory.mktemp("identity"),
                       {"learner": {"hidden": [16]},
                        "guard": {"torque_margin": float("inf"), "sample_margin": float("inf")}},
                       robot="kuka_iiwa") as d:
        yield d


def test_daemon_refuses_another_robots_packets_counts_and_logs_once(daemon):
    kuka, franka = load_robot("kuka_iiwa"), load_robot("franka_panda")
    assert kuka.n_joints == franka.n_joints  # the joint count alone would not tell them apart
    st = daemon.status()
    assert (st["robot"], st["joints"], st["rid"]) == (kuka.name, kuka.joints,
                                                     robot_id(kuka.name, kuka.joints))
    # a client of another robot: refused at the handshake, by the daemon's hello
    with pytest.raises(RobotMismatchError, match="franka_panda"):
        RobotClient([daemon.endpoints["state"]], daemon.endpoints["prediction"], robot=franka)
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.connect(daemon.endpoints["state"])
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(daemon.endpoints["prediction"])
    try:
        assert pub.poll(10_000) and pub.recv()[:1] == b"\x01"
        assert sub.poll(10_000)
        hello = decode_prediction_message(sub.recv())
        assert (hello.robot, hello.joints, hello.rid) == (kuka.name, tuple(kuka.joints),
                                                          st["rid"])
        wrong, right = robot_id(franka.name, franka.joints), st["rid"]
        states = list(synthetic_stream(60, start_seq=1000))
        # rid of another robot (compiled path and, with float lists, the Python reference),
        # then this robot's rid, then no rid at all
        for s in states[:20]:
            pub.send(encode_state(s, 1, wrong))
        for s in states[:5]:
            pub.send(msgpack.packb({"v": 1, "seq": s.seq, "t": s.t, "q": s.q.tolist(),
                                    "qd": s.qd.tolist(), "tau": s.tau.tolist(), "stream": 1,
                                    "rid": wrong}))
        for s in states[20:40]:
            pub.send(encode_state(s, 1, right))
        for s in states[40:]:
            pub.send(encode_state(s, 1))
        answered = []
        while len(answered) < 40 and sub.poll(10_000):
            answered.append(decode_prediction_message(sub.recv()).seq)
    finally:
        pub.close(linger=0)
        sub.close(linger=0)
        ctx.term()
    assert answered == [s.seq for s in states[20:]]
    after = daemon.status()
    rejected = after["packets"]["rejected"].get("wrong_robot", 0) \
        - st["packets"]["rejected"].get("wrong_robot", 0)
    assert rejected == 25
    assert daemon.log_tail(100_000).count("rejecting the packets of another robot") == 1
