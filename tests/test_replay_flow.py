"""A replay never runs ahead of the daemon: RobotClient.wait_in_flight against a fake daemon
that answers only when the test says so (plain pyzmq sockets, ipc, bounded waits)."""

from __future__ import annotations

import threading

import pytest
import zmq

from rtlearn.protocol.client import RobotClient
from rtlearn.protocol.schema import decode_state, encode_hello, encode_prediction
from rtlearn.service.synthetic import synthetic_stream


class FakeDaemon:
    """Binds the daemon's two sockets, says hello, and answers the states it has read only
    on `answer(k)`."""

    def __init__(self, ctx, tmp_path):
        self.state_ep, self.pred_ep = f"ipc://{tmp_path}/s", f"ipc://{tmp_path}/p"
        self.sub, self.pub = ctx.socket(zmq.SUB), ctx.socket(zmq.XPUB)
        for s in (self.sub, self.pub):
            s.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.bind(self.state_ep)
        self.pub.bind(self.pred_ep)
        self.read: list = []
        self.answered = 0

    def handshake(self, ctx) -> RobotClient:
        """A RobotClient, handshaken: ZeroMQ sends the SUB's subscription only while its
        owner touches the socket, so a thread keeps both sockets busy meanwhile."""
        up = threading.Event()

        def serve():
            while not up.is_set():
                self.sub.getsockopt(zmq.EVENTS)
                if self.pub.poll(10):
                    self.pub.recv()
                    self.pub.send(encode_hello(7, "fake"))

        t = threading.Thread(target=serve)
        t.start()
        try:
            client = RobotClient([self.state_ep], self.pred_ep, handshake_timeout=10,
                                 context=ctx)
        finally:
            up.set()
            t.join()
        assert client.ready
        return client

    def take(self, timeout_ms: int = 300) -> int:
        """Read every state that arrives within timeout_ms of the last one; how many."""
        while self.sub.poll(timeout_ms):
            self.read.append(decode_state(self.sub.recv()))
        return len(self.read)

    def answer(self, k: int) -> None:
        """Answer the next k states read (fewer if fewer are waiting)."""
        todo = self.read[self.answered:self.answered + k]
        for s in todo:
            self.reply(s)
        self.answered += len(todo)

    def reply(self, s) -> None:
        self.pub.send(encode_prediction(s.seq, s.t, [0.0] * 7, "fake"))

    def close(self) -> None:
        self.sub.close(linger=0)
        self.pub.close(linger=0)


def test_a_replay_waits_for_the_daemon_and_sends_nothing_beyond_its_window(tmp_path):
    ctx = zmq.Context()
    fake = FakeDaemon(ctx, tmp_path)
    client = fake.handshake(ctx)
    states = list(synthetic_stream(40))
    done = threading.Event()
    errors = []

    def replay():
        try:
            for s in states:
                client.publish(s)
                client.wait_in_flight(5, stall=30)
            client.wait_in_flight(0, stall=30)
        except Exception as e:  # reported by the test below
            errors.append(e)
        done.set()

    sender = threading.Thread(target=replay)
    sender.start()
    try:
        assert fake.take() == 6  # the window, and the one whose wait is blocking
        assert client.in_flight == 6 and not done.is_set()
        fake.answer(3)
        assert fake.take() == 9
        while len(fake.read) < len(states):  # each answer lets one more through, no more
            fake.answer(len(fake.read))
            fake.take()
            assert len(fake.read) - fake.answered <= 6
        assert not done.wait(0.3)  # the last ones are still unanswered: it waits
        fake.answer(len(states))
        assert done.wait(10)
    finally:
        fake.answer(len(states))
        sender.join(30)
        client.close()
        fake.close()
        ctx.term()
    assert not errors
    assert [s.seq for s in fake.read] == [s.seq for s in states]  # nothing lost, in order
    assert client.predictions == 40 and client.in_flight == 0


def test_a_daemon_that_stops_answering_ends_the_wait_with_a_clear_error(tmp_path):
    ctx = zmq.Context()
    fake = FakeDaemon(ctx, tmp_path)
    client = fake.handshake(ctx)
    try:
        for s in synthetic_stream(3):
            client.publish(s)
        fake.take()
        fake.reply(fake.read[1])  # the first one counts as answered too (a rejected packet)
        assert client.recv_prediction(10).seq == 1 and client.in_flight == 1
        with pytest.raises(TimeoutError, match="1 states unanswered"):
            client.wait_in_flight(0, stall=0.3)
    finally:
        client.close()
        fake.close()
        ctx.term()


def test_prediction_seq_reads_the_seq_of_a_prediction_only():
    from rtlearn.protocol.schema import ProtocolError, prediction_seq

    assert prediction_seq(encode_prediction(123456, 0.5, [1.0] * 7, "heavy", False)) == 123456
    assert prediction_seq(encode_hello(7, "none")) is None
    for bad in (b"\x81\xa4kind\xa5state", b"junk", encode_prediction(-1, 0.0, [0.0], "x")):
        with pytest.raises(ProtocolError):
            prediction_seq(bad)
