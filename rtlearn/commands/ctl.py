"""`rtlearn ctl`: talk to a running daemon's control socket; replies are printed as JSON."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "talk to a running daemon's control socket"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rtlearn.protocol.schema import DEFAULT_CONTROL_ENDPOINT

    parser.add_argument("--config", metavar="FILE",
                        help="the daemon's TOML config: its control endpoint and CURVE public "
                             "key (--endpoint and --server-key win over it)")
    parser.add_argument("--endpoint",
                        help=f"daemon control endpoint (default: the --config one, else "
                             f"{DEFAULT_CONTROL_ENDPOINT})")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a reply")
    parser.add_argument("--server-key", help="daemon's CURVE public key (remote control)")
    parser.add_argument("--client-key", nargs=2, metavar=("PUBLIC", "SECRET"),
                        help="this client's CURVE key pair (when the daemon lists allowed clients)")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("status", help="statistics as JSON")
    sub.add_parser("contexts", help="stored payload contexts: samples learned, last use")
    p = sub.add_parser("context", help="hold payload context NAME from the next packet on, "
                                       "over packet labels and automatic detection, until "
                                       "--release")
    p.add_argument("name", nargs="?")
    p.add_argument("--create", action="store_true",
                   help="NAME may be a new context (else an unknown NAME is refused)")
    p.add_argument("--release", action="store_true",
                   help="end the override: labels and automatic detection decide again")
    p = sub.add_parser("save", help="snapshot now (path relative to the snapshot directory)")
    p.add_argument("path", nargs="?")
    p = sub.add_parser("load", help="load a snapshot (relative to the snapshot directory)")
    p.add_argument("path")
    sub.add_parser("reset", help="forget everything learned (networks, memories, contexts)")
    p = sub.add_parser("options", help="learning options")
    p.add_argument("--lr", type=float, help="base learning rate")
    p.add_argument("--memory", choices=["on", "off"], help="learn the learning-rate memories")
    sub.add_parser("shutdown", help="stop the daemon (it snapshots first)")
    sub.add_parser("keygen", help="print a new CURVE key pair for [security] (no daemon needed)")


KEY_OPTIONS = {"--server-key": 1, "--client-key": 2}  # option -> number of key values


def prepare_argv(argv: list[str]) -> list[str]:
    """A Z85 key may start with '-', which argparse takes for an option ("expected one
    argument"): such a value of a key option gets a leading space, which makes argparse read
    it as a value; run() strips it (Z85 has no spaces)."""
    out, i = list(argv), 0
    while i < len(out):
        n = KEY_OPTIONS.get(out[i], 0)
        for j in range(i + 1, min(i + 1 + n, len(out))):
            if out[j].startswith("-"):
                out[j] = " " + out[j]
        i += 1 + n
    return out


def run(args) -> int:
    import zmq

    from rtlearn.protocol.schema import ControlError
    from rtlearn.service.control import ControlClient

    if args.action == "keygen":
        public, secret = zmq.curve_keypair()
        print(f'curve_public_key = "{public.decode()}"\ncurve_secret_key = "{secret.decode()}"')
        return 0
    from rtlearn.protocol.client import endpoint_problem
    from rtlearn.protocol.schema import DEFAULT_CONTROL_ENDPOINT
    from rtlearn.service.config import ConfigError, load_config, z85_key_error
    from rtlearn.service.control import not_listening

    if args.action == "context" and (args.name is None) == (not args.release):
        print("rtlearn ctl context: give NAME, or --release (not both)", file=sys.stderr)
        return 2
    if args.config:
        try:
            cfg = load_config(args.config)
        except ConfigError as e:
            print(f"rtlearn ctl: {e}", file=sys.stderr)
            return 2
        args.endpoint = args.endpoint or cfg["endpoints"]["control"]
        args.server_key = args.server_key or cfg["security"]["curve_public_key"] or None
    args.endpoint = args.endpoint or DEFAULT_CONTROL_ENDPOINT
    if problem := endpoint_problem(args.endpoint):
        print(f"rtlearn ctl: --endpoint {problem}", file=sys.stderr)
        return 2
    args.server_key = args.server_key.strip() if args.server_key else None
    args.client_key = [k.strip() for k in args.client_key] if args.client_key else None
    keys = [("--server-key", args.server_key)] if args.server_key else []
    keys += [("--client-key", k) for k in args.client_key or ()]
    for flag, key in keys:
        if why := z85_key_error(key):
            print(f"rtlearn ctl: {flag} {key!r} {why}", file=sys.stderr)
            return 2
    request = {k: v for k, v in vars(args).items()
               if k in ("name", "path", "lr", "memory") and v is not None}
    request.update({k: True for k in ("create", "release") if getattr(args, k, False)})
    if "memory" in request:
        request["memory"] = request["memory"] == "on"
    if why := not_listening(args.endpoint):
        print(f"rtlearn ctl: no daemon: {why}. Is `rtlearn serve` running, with this control "
              f"endpoint ([endpoints] control of its config; `--config FILE` reads it)?",
              file=sys.stderr)
        return 2
    client = ControlClient(args.endpoint, args.timeout, args.server_key,
                           tuple(args.client_key) if args.client_key else None)
    try:
        result = client.request(args.action, **request)
    except ControlError as e:
        print(f"rtlearn ctl: {args.action} refused ({e.reason}): {e.message}", file=sys.stderr)
        return 1
    except TimeoutError as e:
        hint = ("is the daemon running, and do --server-key and --client-key match its keys? "
                "(a CURVE authentication failure looks like no reply at all)"
                if args.server_key else "is the daemon running (and, if its control socket "
                "uses CURVE keys, did you give --server-key)?")
        print(f"rtlearn ctl: {e}; {hint}", file=sys.stderr)
        return 2
    finally:
        client.close()
    print(json.dumps(result, indent=2))
    return 0
