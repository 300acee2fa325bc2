#!/usr/bin/env python3
"""I-SSGPR's learning step of another commit against this tree's, timed in turns in one
process (docs/performance.md, "I-SSGPR's update").

    scripts/ab_issgpr.py 5f893aa [--features 500] [--steps 2000] [--paced 600]

Both learners are calibrated on the same batches (the kernel fit gives both the same
hyper-parameters), then fed the same batches in order, 50 steps per turn: back to back, then
one step per 10 ms as the daemon runs them (`rtlearn bench step`'s timing). Prints p50 / p99
per variant, the load average, and how far apart the two learners' weights end (the
same mathematics: rounding only).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ab_step import import_commit  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rev", help="the other commit")
    p.add_argument("--features", type=int, default=500, help="D")
    p.add_argument("--steps", type=int, default=2000, help="timed back-to-back steps")
    p.add_argument("--paced", type=int, default=600, help="timed steps at the 10 ms cadence")
    p.add_argument("--warmup", type=int, default=200)
    args = p.parse_args()
    from rtlearn.benchmarks.step import PACED_PERIOD, _random_batches, _time_turns
    from rtlearn.learner.issgpr import ISSGPR, ISSGPRConfig

    cfg = replace(ISSGPRConfig(), n_features=args.features)
    with tempfile.TemporaryDirectory(prefix="rtlearn-ab-") as tmp:
        other = import_commit(args.rev, Path(tmp), "learner.issgpr")
        learners = {f"{args.rev}": other.ISSGPR(other.ISSGPRConfig(**cfg.to_dict())),
                    "this tree": ISSGPR(cfg)}
        n_calib = cfg.calib[-1] // 10 + 1
        need = n_calib + 2 * args.warmup + args.steps + args.paced
        batches = _random_batches(need, 10, cfg.n_inputs, cfg.n_joints, 0)
        for learner in learners.values():
            for X, Y in batches[:n_calib]:
                learner.learn_many(X, Y)
            assert learner.calibrated
        rest = batches[n_calib:]
        steps = {name: learner.learn_many for name, learner in learners.items()}
        load = os.getloadavg()
        b2b = _time_turns(steps, rest[:args.warmup + args.steps], args.warmup)
        paced = _time_turns(steps, rest[args.warmup + args.steps:], args.warmup,
                            period=PACED_PERIOD)
        end = os.getloadavg()
        W = [learner.W for learner in learners.values()]
    print(f"I-SSGPR D = {cfg.n_features}, batch 10, 7 joints; load average (1 min) "
          f"{load[0]:.2f} before, {end[0]:.2f} after; {len(os.sched_getaffinity(0))} CPUs")
    for title, res in (("back to back", b2b), ("one step per 10 ms", paced)):
        print(f"  {title}")
        for name, r in res.items():
            print(f"    {name:<12} p50 {r['p50']:.3f}  p99 {r['p99']:.3f}  max {r['max']:.3f} ms"
                  f"  (CPU time p50 {r['cpu_p50']:.3f}  p99 {r['cpu_p99']:.3f})")
    print(f"  weights after {args.steps + args.paced + 2 * args.warmup} steps: max |difference| / "
          f"max |w| = {np.abs(W[0] - W[1]).max() / np.abs(W[0]).max():.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
