"""rtlearn: learn a robot arm's inverse dynamics online, beside its controller.

Each command lives in its own module of `rtlearn.commands`, which defines `HELP`,
`add_arguments(parser)` and `run(args) -> int` (and may define `prepare_argv(argv) -> argv`,
applied before parsing); modules are imported only when their command runs, so `rtlearn ctl`
does not pay for numba.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "demo": "daemon + simulated KUKA lift with live payload swaps on loopback",
    "serve": "run the learning daemon beside a robot controller",
    "ctl": "talk to a running daemon's control socket",
    "sim": "simulate an arm and publish / record its joint stream",
    "replay": "replay a recorded log or ROS 2 bag",
    "record": "record a live joint stream to a log",
    "top": "live view of a running daemon (its telemetry stream)",
    "fit": "learn logs or ROS 2 bags offline through the daemon's learning path",
    "experiment": "reproduce the paper's experiments",
    "bench": "latency benchmarks",
}


def _module(name: str):
    return importlib.import_module(f"rtlearn.commands.{name}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="rtlearn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = argv[0] if argv and argv[0] in COMMANDS else None
    if chosen and hasattr(_module(chosen), "prepare_argv"):
        argv = _module(chosen).prepare_argv(argv)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            _module(name).add_arguments(p)
        else:
            p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    return int(_module(args.command).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
