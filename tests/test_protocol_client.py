"""RobotClient against plain sockets: the handshake means nothing sent after the constructor
returns is lost, to every state endpoint; predictions and hellos are read back."""

from __future__ import annotations

import threading

import numpy as np
import zmq

from rtlearn.protocol.client import RobotClient
from rtlearn.protocol.schema import decode_state, encode_hello, encode_prediction
from rtlearn.service.synthetic import synthetic_stream


def recorder(ctx, endpoint, out, stop):
    """A bound SUB like `rtlearn record`: keeps polling, stores every decoded packet."""
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.bind(endpoint)
    while not stop.is_set():
        if sub.poll(10):
            out.append(decode_state(sub.recv()))
    sub.close(linger=0)


def test_first_packets_reach_every_state_endpoint(tmp_path):
    ctx = zmq.Context()
    eps = [f"ipc://{tmp_path}/a", f"ipc://{tmp_path}/b"]
    got = [[], []]
    stop = threading.Event()
    threads = [threading.Thread(target=recorder, args=(ctx, ep, out, stop))
               for ep, out in zip(eps, got)]
    for t in threads:
        t.start()
    try:
        with RobotClient(eps, prediction_endpoint=None, handshake_timeout=10, context=ctx) as c:
            assert c.ready and c.subscribers == 2
            states = list(synthetic_stream(300, context="light"))
            for s in states:
                c.publish(s)
            for _ in range(500):
                if all(len(g) == len(states) for g in got):
                    break
                stop.wait(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join()
        ctx.term()
    for g in got:
        assert [s.seq for s in g] == [s.seq for s in states]
        np.testing.assert_array_equal(g[-1].tau, states[-1].tau)
        assert g[0].context == "light"


def test_handshake_waits_for_the_daemon_hello_and_reads_predictions(tmp_path):
    ctx = zmq.Context()
    state_ep, pred_ep = f"ipc://{tmp_path}/s", f"ipc://{tmp_path}/p"
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.bind(state_ep)
    pub = ctx.socket(zmq.XPUB)  # a minimal daemon: hello to each subscriber, echo predictions
    pub.setsockopt(zmq.XPUB_VERBOSE, 1)
    pub.bind(pred_ep)
    stop = threading.Event()

    def fake_daemon():
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        poller.register(pub, zmq.POLLIN)
        while not stop.is_set():
            for s, _ in poller.poll(10):
                if s is pub and pub.recv()[:1] == b"\x01":
                    pub.send(encode_hello(7, "none"))
                elif s is sub:
                    st = decode_state(sub.recv())
                    pub.send(encode_prediction(st.seq, st.t, st.tau * 2, "none"))

    t = threading.Thread(target=fake_daemon)
    t.start()
    try:
        with RobotClient([state_ep], pred_ep, handshake_timeout=10, context=ctx) as c:
            assert c.ready and c.daemon_hello.n_joints == 7
            assert c.poll_prediction() is None
            states = list(synthetic_stream(50))
            for s in states:
                c.publish(s)
            preds = [c.recv_prediction(10) for _ in states]
    finally:
        stop.set()
        t.join()
        sub.close(linger=0)
        pub.close(linger=0)
        ctx.term()
    assert [p.seq for p in preds] == [s.seq for s in states]
    np.testing.assert_array_equal(preds[7].tau, states[7].tau * 2)


def test_handshake_gives_up_without_a_listener(tmp_path):
    with RobotClient([f"ipc://{tmp_path}/nobody"], None, handshake_timeout=0.2) as c:
        assert not c.ready
        c.publish(next(synthetic_stream(1)))  # still never blocks
