"""`rtlearn demo`: daemon + simulated KUKA lift with live payload swaps on loopback."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "daemon + simulated KUKA lift with live payload swaps on loopback"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the run (~3.5 s per lift)")
    parser.add_argument("--transport", choices=["tcp", "ipc"], default="tcp")
    parser.add_argument("--no-progress", action="store_true", help="no live progress line")
    parser.add_argument("--learner", choices=["mlp", "issgpr"], default="mlp",
                        help="the daemon's [learner] kind: the MLPs with the memory of "
                             "learning rates (default) or I-SSGPR, the peer")
    parser.add_argument("--hidden", type=int, nargs="+", metavar="N",
                        help="hidden layer widths of the MLPs (default: the learner's)")
    parser.add_argument("--json", metavar="FILE", help="also write the summary as JSON")
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument("--auto", dest="auto", action="store_true", default=False,
                        help="send no payload labels: the daemon finds the swaps itself")
    labels.add_argument("--labels", dest="auto", action="store_false",
                        help="send each state's payload as its context label (default: "
                             "better than --auto, docs/results.md section 5)")


def run(args) -> int:
    from rtlearn.commands.interrupt import interruptible
    from rtlearn.service.demo import run_demo

    if args.hidden and args.learner != "mlp":
        print("rtlearn demo: --hidden applies to --learner mlp only", file=sys.stderr)
        return 2

    def work() -> int:
        learner = {"kind": args.learner, **({"hidden": args.hidden} if args.hidden else {})}
        result = run_demo(args.seconds, args.transport, not args.no_progress, learner,
                          auto=args.auto)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)
        return 0

    # Ctrl-C / SIGTERM: the daemon is stopped and the temporary folder removed, no traceback
    return interruptible("demo", work)
