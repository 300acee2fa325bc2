"""`rtlearn serve`: the learning daemon beside a robot controller (docs/service.md)."""

from __future__ import annotations

import argparse
import logging
import sys

HELP = "run the learning daemon beside a robot controller"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--robot", default="kuka_iiwa", help="robots/<NAME>.toml or a TOML path")
    parser.add_argument("--config", metavar="FILE", help="daemon TOML config (docs/service.md)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true",
                       help="continue from the newest readable snapshot of the config, if any")
    start.add_argument("--fresh", action="store_true",
                       help="start anew; existing snapshots are moved to a previous-<time> "
                            "directory beside them (without --resume or --fresh, existing "
                            "snapshots refuse the start)")
    parser.add_argument("--load", metavar="MODEL",
                        help="start from a model file (`rtlearn fit --save`, or a snapshot): "
                             "its learner state and bank of contexts; not with --resume")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def run(args) -> int:
    import zmq

    from rtlearn.learner import StateFileError
    from rtlearn.service.config import ConfigError, load_config
    from rtlearn.service.daemon import BindError, Daemon
    from rtlearn.service.snapshots import SnapshotPathError, SnapshotsExistError
    from rtlearn.sources.base import SourceError
    from rtlearn.sources.robot import load_robot

    if args.load and args.resume:
        print("rtlearn serve: --load and --resume exclude each other", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        robot = load_robot(args.robot)
        cfg = load_config(args.config)
        daemon = Daemon(cfg, robot, resume=args.resume, fresh=args.fresh, load=args.load)
    except (ConfigError, SourceError, StateFileError, SnapshotPathError,
            SnapshotsExistError) as e:
        print(f"rtlearn serve: {e}", file=sys.stderr)
        return 2
    except BindError as e:
        print(f"rtlearn serve: {e} (another daemon on it? an address of this host?)",
              file=sys.stderr)
        return 2
    except zmq.ZMQError as e:
        print(f"rtlearn serve: ZeroMQ error at start: {e}", file=sys.stderr)
        return 2
    return daemon.run()
