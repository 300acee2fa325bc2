"""`rtlearn fit`: learn logs or ROS 2 bags offline, as the daemon learns them replayed
(rtlearn.service.fit), printing the prequential error as it goes; `--save` writes a model
file that `rtlearn serve --load` starts from."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from rtlearn.commands.replay import add_source_arguments, open_source

HELP = "learn logs or ROS 2 bags offline through the daemon's learning path"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="LOG",
                        help="rtlearn logs (.npz) or ROS 2 bags, learned in this order, each "
                             "as one stream")
    parser.add_argument("--config", metavar="FILE",
                        help="daemon TOML config: its [learner], [contexts] and [guard] apply "
                             "as in `rtlearn serve --config`")
    parser.add_argument("--load", metavar="MODEL",
                        help="start from a model file (`fit --save`, or a daemon snapshot)")
    parser.add_argument("--save", metavar="MODEL",
                        help="write the model (learner state and bank of contexts) here, for "
                             "`rtlearn serve --load`")
    parser.add_argument("--every", type=int, default=10_000, metavar="SAMPLES",
                        help="a prequential error line every SAMPLES samples (0: only the "
                             "summary; default 10000)")
    add_source_arguments(parser)


def _fail(message: str) -> int:
    print(f"rtlearn fit: {message}", file=sys.stderr)
    return 2


def run(args) -> int:
    from rtlearn.learner import StateFileError
    from rtlearn.service.config import ConfigError, load_config
    from rtlearn.service.fit import Fit, unwritable
    from rtlearn.sources.base import SourceError

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="rtlearn fit: %(message)s")  # screened samples, rollbacks
    if args.every < 0:
        return _fail("--every must be >= 0")
    if args.save and (why := unwritable(args.save)):
        return _fail(f"--save {args.save}: {why}")
    sources = []
    try:
        cfg = load_config(args.config)
        for f in args.files:
            sources.append(open_source(args, f))
        robot = sources[0].robot
        for f, s in zip(args.files, sources):
            if (s.robot.name, s.robot.n_joints) != (robot.name, robot.n_joints):
                return _fail(f"{f}: a log of robot {s.robot.name!r}, the first is of "
                             f"{robot.name!r} (fit one robot at a time)")
        fit = Fit(cfg, robot, load=args.load)
        return _fit(fit, args, sources)
    except (ConfigError, SourceError, StateFileError) as e:
        return _fail(str(e))
    finally:
        for s in sources:
            s.close()


def _fit(fit, args, sources) -> int:
    from rtlearn.sources.base import SourceError

    t0 = time.perf_counter()
    last = [0, 0.0]  # samples scored and their error sum at the previous line

    def report(f, name):
        count, sq = f.prequential()
        n, total = count - last[0], float(sq.sum())
        recent = (total - last[1]) / max(n, 1) / len(sq)
        last[:] = [count, total]
        rate = f.samples / max(time.perf_counter() - t0, 1e-9)
        print(f"[fit] {name}  t {f.t:8.1f} s  samples {f.samples:8d}  prequential MSE "
              f"{recent:.4g} (last {n}), {total / max(count, 1) / len(sq):.4g} (all)  "
              f"context {f.context}  {rate:,.0f} samples/s", flush=True)

    try:
        for f, source in zip(args.files, sources):
            fit.stream(source, args.every, lambda fit_, name=f: report(fit_, name))
        fit.finish()
    except KeyboardInterrupt:
        print(f"rtlearn fit: interrupted after {fit.samples} samples; nothing saved",
              file=sys.stderr)
        return 130
    except SourceError as e:  # a bag found corrupt part-way
        print(f"rtlearn fit: {e}; nothing saved", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - t0
    st = fit.core.status()
    learning, preq = st["stats"]["learning"], st["stats"]["prequential"]
    print(f"fitted {fit.samples} samples of {len(sources)} log(s) in {elapsed:.2f} s = "
          f"{fit.samples / max(elapsed, 1e-9):,.0f} samples/s; learned {learning['samples']} "
          f"in {learning['steps']} steps, excluded {learning['excluded']}, rollbacks "
          f"{learning['rollbacks']}; contexts {st['contexts_known']} (active {fit.context})")
    print("prequential MSE per joint (N*m)^2: "
          + " ".join(f"{v:.4g}" for v in preq["mse_per_joint"]))
    if args.save:
        try:
            fit.save(args.save, {"fitted": [str(f) for f in args.files]})
        except OSError as e:
            return _fail(f"--save {args.save}: {e}")
        print(f"model saved to {args.save} (rtlearn serve --load {args.save})")
    return 0
