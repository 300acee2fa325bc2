"""`rtlearn record`: bind a SUB socket, decode every joint packet published to it and write
them to an rtlearn log (publishers list this endpoint beside the daemon's)."""

from __future__ import annotations

import argparse
import sys
import time

from rtlearn.protocol.schema import DEFAULT_PREDICTION_ENDPOINT
from rtlearn.protocol.telemetry import DEFAULT_TELEMETRY_ENDPOINT

HELP = "record a live joint stream to a log"
DEFAULT_BIND = "tcp://127.0.0.1:5610"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="log to write (.npz; checked before recording starts)")
    parser.add_argument("--bind", default=DEFAULT_BIND,
                        help=f"endpoint the publishers connect to (default {DEFAULT_BIND})")
    parser.add_argument("--robot", default="kuka_iiwa", help="robot the stream comes from")
    parser.add_argument("--count", type=int, default=None, help="stop after N packets")
    parser.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    parser.add_argument("--mcap", metavar="FILE", help="also write an MCAP file (Foxglove, "
                        "PlotJuggler) of these states and the daemon's predictions and telemetry")
    parser.add_argument("--predictions", default=DEFAULT_PREDICTION_ENDPOINT, metavar="EP",
                        help="with --mcap: the daemon's prediction endpoint ('' : none)")
    parser.add_argument("--telemetry", default=DEFAULT_TELEMETRY_ENDPOINT, metavar="EP",
                        help="with --mcap: the daemon's telemetry endpoint ('' : none)")


def run(args) -> int:
    import zmq

    from rtlearn.commands.interrupt import interrupts
    from rtlearn.protocol.client import use_endpoint
    from rtlearn.protocol.schema import ProtocolError, read_state, robot_id
    from rtlearn.sources.base import SourceError
    from rtlearn.sources.log import LogWriter
    from rtlearn.sources.robot import load_robot

    try:
        robot = load_robot(args.robot)
        # before binding: a path that cannot take the log fails now, not after the recording
        writer = LogWriter(args.file, robot, {"source": "record", "bind": args.bind})
    except SourceError as e:
        print(f"rtlearn record: {e}", file=sys.stderr)
        return 2
    rid = robot_id(robot.name, robot.joints)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 100_000)  # a slow disk write must not drop packets
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    try:
        use_endpoint(sock, args.bind, bind=True)
    except (zmq.ZMQError, ValueError) as e:
        print(f"rtlearn record: cannot bind {args.bind}: {e}", file=sys.stderr)
        writer.discard()
        sock.close()
        ctx.term()
        return 2
    print(f"recording {args.bind} -> {args.file} (Ctrl-C to stop)", file=sys.stderr)
    mcap = None
    if args.mcap:
        from rtlearn.protocol.mcap import McapRecording

        try:
            mcap = McapRecording(args.mcap, ctx, args.predictions or None,
                                 args.telemetry or None,
                                 {"robot": robot.name, "joints": ",".join(robot.joints)})
        except (OSError, zmq.ZMQError) as e:
            print(f"rtlearn record: --mcap: {e}", file=sys.stderr)
            writer.discard()
            sock.close()
            ctx.term()
            return 2
    received = rejected = lost = 0
    last_seq = first_stream = None
    deadline = None if args.duration is None else time.monotonic() + args.duration

    def take(frame: bytes) -> None:
        nonlocal received, rejected, lost, last_seq, first_stream
        received += 1
        try:
            state, stream = read_state(frame, robot.n_joints, rid)
        except ProtocolError as e:
            rejected += 1
            print(f"rtlearn record: dropped a packet: {e}", file=sys.stderr)
            return
        # One log = one stream: a second publisher or a restarted one is not recorded.
        first_stream = stream if last_seq is None else first_stream
        if stream != first_stream or (last_seq is not None and state.seq <= last_seq):
            rejected += 1
            return
        if last_seq is not None:
            lost += state.seq - last_seq - 1
        last_seq = state.seq
        writer.append(state)
        if mcap is not None:
            mcap.state(state)

    def full() -> bool:
        return args.count is not None and len(writer) >= args.count

    try:
        with interrupts():  # SIGTERM too: what was recorded is written
            while not full():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if sock.poll(100):
                    take(sock.recv())
    except KeyboardInterrupt:
        while not full():  # what already arrived belongs to the recording
            try:
                take(sock.recv(zmq.NOBLOCK))
            except zmq.Again:
                break
    finally:
        if mcap is not None:
            mcap.close()  # before ctx.term(): it owns sockets of ctx
        sock.close()
        ctx.term()
        try:
            writer.close()
            written = True
        except SourceError as e:  # says where the packets went instead
            print(f"rtlearn record: {e}", file=sys.stderr)
            written = False
    if not written:
        return 1
    print(f"{len(writer)} packets recorded to {args.file}; {received} received, "
          f"{rejected} rejected, {lost} lost (sequence gaps)")
    return 0
