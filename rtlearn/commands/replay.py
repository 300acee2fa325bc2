"""`rtlearn replay`: replay an rtlearn log or a ROS 2 bag to the daemon (and/or into a log)."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from rtlearn.commands.sim import add_publish_arguments, parse_speed, run_stream

HELP = "replay a recorded log or ROS 2 bag"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="rtlearn log (.npz) or ROS 2 bag (directory, .mcap or .db3)")
    parser.add_argument("--speed", type=parse_speed, default=1.0,
                        help="1 = recorded pace (default), 2 = twice as fast, 'max' = no pacing")
    bag = parser.add_argument_group("ROS 2 bags")
    bag.add_argument("--robot", default=None,
                     help="robot of a bag (default kuka_iiwa); logs carry their own")
    bag.add_argument("--topic", default=None, help="JointState topic, if the bag has several")
    bag.add_argument("--window", type=int, default=None,
                     help="samples of the causal acceleration estimator (default 15)")
    bag.add_argument("--context", default=None, help="context label given to a bag's packets")
    add_publish_arguments(parser)


def open_source(args):
    from rtlearn.sources.filters import DEFAULT_WINDOW
    from rtlearn.sources.log import LogSource
    from rtlearn.sources.robot import load_robot
    from rtlearn.sources.rosbag import BagSource, is_bag

    robot = load_robot(args.robot) if args.robot else None
    if is_bag(args.file):
        return BagSource(args.file, robot or load_robot("kuka_iiwa"), topic=args.topic,
                         window=args.window or DEFAULT_WINDOW, context=args.context)
    return LogSource(args.file, robot=robot)


def acceleration_note(source) -> str | None:
    """What a user should know when the accelerations learned from are estimated, not
    measured: where they come from and how late they are."""
    from rtlearn.sources.filters import DEFAULT_WINDOW, lag_seconds
    from rtlearn.sources.rosbag import BagSource

    if isinstance(source, BagSource):
        return (f"a ROS 2 bag carries no accelerations: they are estimated from the velocities "
                f"(causal least-squares slope over {source.window} samples, "
                f"{lag_seconds(source.window, 1e-3) * 1e3:.0f} ms behind at 1 kHz)")
    qdd = source.arrays.get("qdd")
    missing = len(source) if qdd is None else int(np.isnan(qdd[:, 0]).sum())
    if not missing:
        return None
    return (f"{missing} of {len(source)} packets of this log carry no accelerations: the "
            f"daemon estimates them from the velocities (causal least-squares slope over "
            f"{DEFAULT_WINDOW} samples, {lag_seconds(DEFAULT_WINDOW, 1e-3) * 1e3:.0f} ms behind "
            f"at 1 kHz)")


def run(args) -> int:
    from rtlearn.sources.base import SourceError

    try:
        source = open_source(args)
    except SourceError as e:
        print(f"rtlearn replay: {e}", file=sys.stderr)
        return 2
    source.speed = args.speed
    if note := acceleration_note(source):
        print(f"rtlearn replay: {note}", file=sys.stderr)
    try:
        return run_stream(source, args, {"source": "replay", "file": str(args.file)}, "replay")
    except SourceError as e:
        print(f"rtlearn replay: {e}", file=sys.stderr)
        return 2
