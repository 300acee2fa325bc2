"""RobotClient: what a robot-side program (simulation, log replay, a real arm's bridge) uses to
publish JointStates to the daemon and read its torque predictions back.

Slow-joiner handshake (a PUB drops whatever it sends before a subscriber's subscription has
arrived): the state socket is an XPUB, which *receives* each subscriber's subscription, so the
client knows when every state endpoint it connected to is listening; the daemon answers each
new subscriber of its prediction socket with a `hello`, so the client knows the way back is
open too. `RobotClient(...)` waits for both (bounded by `handshake_timeout`) before returning.

Robot identity: given its robot, the client sends the robot's `rid` in every packet (the
daemon refuses another robot's packets) and checks the daemon's hello, which names the robot
it serves: a mismatch raises RobotMismatchError instead of teaching the daemon the wrong arm.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Sequence
from urllib.parse import urlparse

import zmq

from rtlearn.protocol.schema import (DEFAULT_PREDICTION_ENDPOINT, DEFAULT_STATE_ENDPOINT, Hello,
                                     Prediction, ProtocolError, decode_prediction_message,
                                     encode_state, robot_id)
from rtlearn.protocol.state import JointState

log = logging.getLogger(__name__)

HWM = 100_000  # packets a socket may queue: 100 s at 1 kHz, so a hiccup never drops silently


TRANSPORTS = ("tcp://", "ipc://", "inproc://", "pgm://", "epgm://", "vmci://")


class RobotMismatchError(RuntimeError):
    """The daemon serves another robot than the one this client publishes."""


def endpoint_problem(endpoint: str) -> str | None:
    """Why `endpoint` is not a ZeroMQ endpoint ZeroMQ would take, or None. Catches the
    common slip of a missing transport ("127.0.0.1:5603"), which ZeroMQ reports only as
    "Invalid argument"."""
    if not isinstance(endpoint, str) or not endpoint.startswith(TRANSPORTS):
        return (f"{endpoint!r} has no transport: write tcp://HOST:PORT (e.g. "
                f"tcp://127.0.0.1:5603) or ipc://PATH")
    if endpoint.startswith("tcp://") and ":" not in endpoint[6:].rsplit("]", 1)[-1]:
        return f"{endpoint!r} has no port: write tcp://HOST:PORT"
    return None


def is_ipv6(endpoint: str) -> bool:
    """A tcp:// endpoint whose host is an IPv6 address (tcp://[::1]:5603): ZeroMQ sockets
    need the IPV6 option for it, or bind / connect fails."""
    return endpoint.startswith("tcp://") and ":" in (urlparse(endpoint).hostname or "")


def use_endpoint(sock: zmq.Socket, endpoint: str, bind: bool = False) -> None:
    """Connect (or bind) sock to endpoint, enabling IPv6 first where the endpoint needs it;
    ValueError for an endpoint without transport or port (endpoint_problem)."""
    if problem := endpoint_problem(endpoint):
        raise ValueError(f"endpoint {problem}")
    if is_ipv6(endpoint):
        sock.setsockopt(zmq.IPV6, 1)
    (sock.bind if bind else sock.connect)(endpoint)


def subscriber(ctx: zmq.Context, endpoint: str, hwm: int = HWM) -> zmq.Socket:
    """A SUB socket connected to endpoint, subscribed to everything; closed again if the
    endpoint is refused (ZMQError)."""
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    try:
        use_endpoint(sock, endpoint)
    except zmq.ZMQError:
        sock.close()
        raise
    return sock


class RobotClient:
    """Publishes JointStates to one or more state endpoints (the daemon, a recorder) and reads
    predictions from the daemon's prediction endpoint (None: do not read predictions).
    robot: the robot the states come from (anything with .name and .joints, e.g. a
    RobotSpec); None sends no identity and checks none."""

    def __init__(self, state_endpoints: Sequence[str] = (DEFAULT_STATE_ENDPOINT,),
                 prediction_endpoint: str | None = DEFAULT_PREDICTION_ENDPOINT,
                 handshake_timeout: float = 5.0, context: zmq.Context | None = None,
                 robot=None):
        if isinstance(state_endpoints, str):
            state_endpoints = [state_endpoints]
        self.state_endpoints = list(state_endpoints)
        self.prediction_endpoint = prediction_endpoint
        self.robot = None if robot is None else (robot.name, tuple(robot.joints))
        self.rid = None if robot is None else robot_id(*self.robot)
        self.stream = int.from_bytes(os.urandom(4), "little")  # this session's stream id
        self._ctx = context or zmq.Context.instance()
        self._pub = self._ctx.socket(zmq.XPUB)
        self._pub.setsockopt(zmq.LINGER, 0)
        self._pub.setsockopt(zmq.SNDHWM, HWM)
        self._pub.setsockopt(zmq.XPUB_VERBOSE, 1)  # one subscription message per subscriber
        self._sub = None
        self.subscribers = 0        # subscriptions seen on the state socket
        self.daemon_hello: Hello | None = None
        self.rejected = 0           # undecodable frames on the prediction socket
        try:
            for ep in self.state_endpoints:
                use_endpoint(self._pub, ep)
            if prediction_endpoint is not None:
                self._sub = self._ctx.socket(zmq.SUB)
                self._sub.setsockopt(zmq.LINGER, 0)
                self._sub.setsockopt(zmq.RCVHWM, HWM)
                self._sub.setsockopt(zmq.SUBSCRIBE, b"")
                use_endpoint(self._sub, prediction_endpoint)
            self.ready = self.wait_ready(handshake_timeout)
        except BaseException:
            self.close(linger=0)
            raise
        if not self.ready:
            log.warning("RobotClient: handshake incomplete after %.1f s (%s); publishing anyway",
                        handshake_timeout, self.handshake_status())

    def handshake_status(self) -> str:
        """What the handshake has seen, in words."""
        text = f"{self.subscribers} of {len(self.state_endpoints)} state endpoints listening"
        if self._sub is not None:
            text += f", hello from {self.prediction_endpoint} " + \
                ("received" if self.daemon_hello else "missing")
        return text

    def wait_ready(self, timeout: float) -> bool:
        """Wait until every state endpoint subscribed and the daemon said hello."""
        deadline = time.monotonic() + timeout
        poller = zmq.Poller()
        poller.register(self._pub, zmq.POLLIN)
        if self._sub is not None:
            poller.register(self._sub, zmq.POLLIN)
        while not self._handshaken():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            for sock, _ in poller.poll(max(1, int(left * 1000))):
                if sock is self._pub:
                    self._drain_subscriptions()
                else:
                    self._read_prediction(zmq.NOBLOCK)
        return True

    def _handshaken(self) -> bool:
        return (self.subscribers >= len(self.state_endpoints)
                and (self._sub is None or self.daemon_hello is not None))

    def _drain_subscriptions(self) -> None:
        while True:
            try:
                frame = self._pub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if frame[:1] == b"\x01":
                self.subscribers += 1

    def publish(self, state: JointState) -> None:
        """Send one state packet; never blocks (a full queue drops, which the daemon sees as a
        sequence gap)."""
        try:
            self._pub.send(encode_state(state, self.stream, self.rid), zmq.NOBLOCK)
        except zmq.Again:
            pass

    def publish_frame(self, frame: bytes) -> None:
        """Send one raw frame as it is (fuzzing and soak runs: malformed or foreign packets);
        never blocks."""
        try:
            self._pub.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            pass

    def _read_prediction(self, flags: int) -> Prediction | None:
        while True:
            try:
                frame = self._sub.recv(flags)
            except zmq.Again:
                return None
            try:
                msg = decode_prediction_message(frame)
            except ProtocolError:
                self.rejected += 1
                continue
            if isinstance(msg, Hello):
                self._check_robot(msg)
                self.daemon_hello = msg
                continue
            return msg

    def _check_robot(self, hello: Hello) -> None:
        """RobotMismatchError if the daemon says it serves another robot."""
        if self.rid is None or hello.rid is None or hello.rid == self.rid:
            return
        name, joints = self.robot
        theirs = f"robot {hello.robot!r}"
        ours = f"robot {name!r}"
        if hello.robot == name:  # same name, other joints: say which
            theirs += f" with joints {list(hello.joints or ())}"
            ours += f" with joints {list(joints)}"
        raise RobotMismatchError(
            f"the daemon at {self.prediction_endpoint} serves {theirs}, but this client "
            f"publishes {ours}: start the daemon with `rtlearn serve --robot {name}` (or the "
            f"robot file it should use), or connect to the daemon of this robot")

    def poll_prediction(self) -> Prediction | None:
        """The next prediction received, or None; never blocks."""
        if self._sub is None:
            return None
        return self._read_prediction(zmq.NOBLOCK)

    def recv_prediction(self, timeout: float) -> Prediction | None:
        """The next prediction, waiting at most `timeout` seconds."""
        if self._sub is None:
            return None
        deadline = time.monotonic() + timeout
        while True:
            p = self._read_prediction(zmq.NOBLOCK)
            if p is not None:
                return p
            left = deadline - time.monotonic()
            if left <= 0 or not self._sub.poll(max(1, int(left * 1000))):
                return None

    def close(self, linger: float = 1.0) -> None:
        """Close the sockets; safe to call twice. States still queued are delivered for up to
        `linger` seconds (closing at once dropped the last ones a robot had just published);
        predictions not yet read are dropped."""
        if self._pub is not None and not self._pub.closed:
            self._pub.close(linger=int(linger * 1000))
        if self._sub is not None and not self._sub.closed:
            self._sub.close(linger=0)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
