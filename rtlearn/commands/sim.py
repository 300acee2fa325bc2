"""`rtlearn sim`: simulate an arm on a task and publish its joint stream and/or record it."""

from __future__ import annotations

import argparse
import sys
import threading
import time

import numpy as np

from rtlearn.commands.interrupt import interrupts

HELP = "simulate an arm and publish / record its joint stream"


def parse_speed(text: str) -> float | None:
    """'max' -> None (as fast as possible), else a positive factor of real time."""
    if text == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"speed must be a number or 'max', got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("speed must be > 0")
    return value


def parse_schedule(text: str) -> list[tuple[float, str]]:
    """'5:light,10.5:heavy' -> [(5.0, 'light'), (10.5, 'heavy')]."""
    out = []
    for item in filter(None, text.split(",")):
        t, sep, name = item.partition(":")
        try:
            out.append((float(t), name))
        except ValueError:
            sep = ""
        if not sep or not name:
            raise argparse.ArgumentTypeError(f"schedule items are TIME:PAYLOAD, got {item!r}")
    return out


def add_publish_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that sends a stream to the daemon."""
    g = parser.add_argument_group("publishing")
    g.add_argument("--connect", action="append", metavar="ENDPOINT",
                   help="daemon / recorder state endpoint to publish to (repeatable; "
                        "default: the protocol's default state endpoint)")
    g.add_argument("--predictions", metavar="ENDPOINT|none",
                   help="daemon prediction endpoint to read predictions from (default: the "
                        "protocol's; 'none' when publishing only to a recorder)")
    g.add_argument("--no-publish", action="store_true", help="do not publish (e.g. only --record)")
    g.add_argument("--no-daemon-ok", action="store_true",
                   help="publish even when no daemon answers the handshake (else: exit 3)")
    g.add_argument("--wait", type=float, default=5.0, metavar="SECONDS",
                   help="how long to wait for the daemon's handshake (default 5)")
    parser.add_argument("--record", metavar="FILE",
                        help="also write the stream to an rtlearn log (.npz)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--robot", default="kuka_iiwa", help="robots/<NAME>.toml or a TOML path")
    parser.add_argument("--task", default="lift",
                        choices=["lift", "rectangle-h", "rectangle-v", "hold", "sines"])
    parser.add_argument("--payload", default="none",
                        help="payload name, or a comma list giving one per cycle (e.g. none,light,heavy)")
    parser.add_argument("--cycles", type=int, default=1, help="repetitions of the task")
    parser.add_argument("--schedule", type=parse_schedule, default=[],
                        help="extra payload swaps, TIME:PAYLOAD[,...] in seconds")
    parser.add_argument("--seed", type=int, default=0, help="trial seed")
    parser.add_argument("--noise", type=float, default=0.0, help="sensor noise scale (1 = nominal)")
    parser.add_argument("--no-friction", action="store_true", help="disable joint friction")
    parser.add_argument("--speed", type=parse_speed, default=1.0,
                        help="1 = real time 1 kHz (default), 'max' = as fast as possible")
    parser.add_argument("--stdin-payloads", action="store_true",
                        help="read payload names from stdin, one per line, and swap them in "
                             "live; a live payload holds (the task's per-cycle payloads stop)")
    add_publish_arguments(parser)


def open_client(args, robot):
    """A RobotClient for the publishing options, or None with --no-publish."""
    if args.no_publish:
        return None
    from rtlearn.protocol import client as protocol_client

    kwargs = {}
    if args.connect:
        kwargs["state_endpoints"] = args.connect
    if args.predictions:
        kwargs["prediction_endpoint"] = None if args.predictions == "none" else args.predictions
    return protocol_client.RobotClient(**kwargs, handshake_timeout=args.wait, robot=robot)


def run_stream(source, args, meta: dict, prog: str = "sim", window: int | None = None) -> int:
    """Publish and/or record every state of `source`; print throughput and pacing figures.
    window: at most this many states published ahead of the daemon's predictions (a replay,
    whose every sample must be learned: it waits for a daemon that is behind, and ends once
    every state is answered); None: never wait (a robot's stream).
    Exit 2 for a log that cannot be written or a bad endpoint, 3 when no daemon answered
    (unless --no-daemon-ok); both before anything is sent or recorded."""
    from rtlearn.protocol.client import RobotMismatchError
    from rtlearn.sources.base import SourceError
    from rtlearn.sources.log import LogWriter

    try:
        writer = LogWriter(args.record, source.robot, meta) if args.record else None
    except SourceError as e:
        source.close()
        print(f"rtlearn {prog}: --record {e}", file=sys.stderr)
        return 2
    try:
        client = open_client(args, source.robot)
    except (ValueError, RobotMismatchError) as e:
        client, problem = None, (2, str(e))
    else:
        problem = None
        if client is not None and not client.ready and not args.no_daemon_ok:
            client.close(linger=0)
            problem = (3, f"no daemon answered within {args.wait:g} s "
                          f"({client.handshake_status()}): start `rtlearn serve` first or check "
                          "--connect / --predictions; --no-daemon-ok sends anyway, --no-publish "
                          "only records")
    if problem is not None:
        if writer is not None:
            writer.discard()
        source.close()
        print(f"rtlearn {prog}: {problem[1]}", file=sys.stderr)
        return problem[0]
    # paced by the daemon only when one answered (--no-daemon-ok sends into the void)
    window = (window if client is not None and client.ready and client.prediction_endpoint
              else None)
    lateness = []
    count = 0
    code = 0
    start = time.perf_counter()
    try:
        with interrupts():  # SIGTERM too: what was recorded is written
            for state in source:
                if client is not None:
                    client.publish(state)
                    if window:
                        client.wait_in_flight(window)
                    else:
                        while client.poll_prediction() is not None:
                            pass
                if writer is not None:
                    writer.append(state)
                if args.speed:
                    lateness.append(time.perf_counter() - start - state.t / args.speed)
                count += 1
            if window:
                client.wait_in_flight(0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    except TimeoutError as e:
        print(f"rtlearn: {e}", file=sys.stderr)
        code = 3
    finally:
        elapsed = time.perf_counter() - start
        source.close()
        if client is not None:
            client.close()
        if writer is not None:
            writer.close()  # LogPathError: the message says where the data went instead
    line = f"{count} packets in {elapsed:.3f} s = {count / max(elapsed, 1e-9):.0f} packets/s"
    if lateness:
        late = np.array(lateness) * 1e3
        line += (f"; lateness behind schedule p50 {np.percentile(late, 50):.3f} ms, "
                 f"p99 {np.percentile(late, 99):.3f} ms, max {late.max():.3f} ms")
    if client is not None:
        line += f"; {client.predictions} predictions received"
    if writer is not None:
        line += f"; recorded to {args.record}"
    print(line)
    return code


def run(args) -> int:
    from rtlearn.sources.base import SourceError
    from rtlearn.sources.sim import SimSource

    if args.speed not in (None, 1.0):
        print("rtlearn sim: --speed is 1 (real time) or max", file=sys.stderr)
        return 2
    payloads = [p for p in args.payload.split(",") if p]
    try:
        source = SimSource(args.robot, task=args.task, payload=payloads, seed=args.seed,
                           schedule=args.schedule, realtime=args.speed is not None,
                           noise=args.noise, cycles=args.cycles, friction=not args.no_friction)
    except SourceError as e:
        print(f"rtlearn sim: {e}", file=sys.stderr)
        return 2
    if args.stdin_payloads:
        threading.Thread(target=_payload_commands, args=(source,), daemon=True).start()
    meta = {"source": "sim", "task": args.task, "payload": payloads, "cycles": args.cycles,
            "seed": args.seed, "noise": args.noise, "friction": not args.no_friction,
            "schedule": args.schedule}
    try:
        return run_stream(source, args, meta)
    except SourceError as e:
        print(f"rtlearn sim: {e}", file=sys.stderr)
        return 2


def _payload_commands(source) -> None:
    from rtlearn.sources.base import UnknownPayloadError

    for line in sys.stdin:
        name = line.strip()
        if not name:
            continue
        try:
            source.set_payload(name)
            print(f"payload -> {name}", file=sys.stderr)
        except UnknownPayloadError as e:
            print(f"rtlearn sim: {e}", file=sys.stderr)
