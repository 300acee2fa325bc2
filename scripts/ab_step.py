#!/usr/bin/env python3
"""The reference learning step of another commit against this tree's, timed in turns in one
process so that both see the same moments of the machine's load (docs/performance.md).

    scripts/ab_step.py 38129e6 [--rounds 30] [--per 100]

The other commit's package is extracted with `git archive` into a temporary directory and
imported under another name (rtlearn_<rev>); every variant runs the same batches in order,
`--per` steps per turn, `--rounds` turns; this tree's float64 and float32 steps and the other
commit's default step take turns. Prints p50 / p90 / p99 per variant and the load average.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def import_commit(rev: str, into: Path, module: str = "learner"):
    """rtlearn.<module> of commit `rev`, its package imported as rtlearn_<rev>."""
    name = "rtlearn_" + re.sub(r"\W", "_", rev)
    blob = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "rtlearn"],
                          capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(into, filter="data")
    (into / "rtlearn").rename(into / name)
    for path in (into / name).rglob("*.py"):
        text = path.read_text()
        path.write_text(re.sub(r"\brtlearn(?=[. ])", name, text))
    sys.path.insert(0, str(into))
    return importlib.import_module(f"{name}.{module}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rev", help="the other commit")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--per", type=int, default=100, help="steps per turn")
    args = p.parse_args()
    from rtlearn.benchmarks.step import REFERENCE, _random_batches
    from rtlearn.learner import OnlineLearner

    with tempfile.TemporaryDirectory(prefix="rtlearn-ab-") as tmp:
        other = import_commit(args.rev, Path(tmp))
        ref = {k: v for k, v in REFERENCE.to_dict().items() if k != "dtype"}
        variants = {
            f"{args.rev} (its default)": other.OnlineLearner(other.LearnerConfig(**ref)),
            "this tree float64": OnlineLearner(replace(REFERENCE, dtype="float64")),
            "this tree float32": OnlineLearner(replace(REFERENCE, dtype="float32")),
        }
        warm = 200
        batches = _random_batches(warm + args.rounds * args.per, REFERENCE.batch_size,
                                  REFERENCE.n_inputs, REFERENCE.n_joints, 0)
        for learner in variants.values():
            for X, Y in batches[:warm]:
                learner.learn_many(X, Y)
        times = {k: [] for k in variants}
        load = os.getloadavg()
        gc.disable()
        for r in range(args.rounds):
            turn = batches[warm + r * args.per: warm + (r + 1) * args.per]
            for name, learner in variants.items():
                for X, Y in turn:
                    t0 = time.perf_counter_ns()
                    learner.learn_many(X, Y)
                    times[name].append(time.perf_counter_ns() - t0)
        gc.enable()
    print(f"{args.rounds} turns of {args.per} steps each; load average (1 min) {load[0]:.2f} "
          f"before, {os.getloadavg()[0]:.2f} after; {len(os.sched_getaffinity(0))} CPUs")
    for name, ns in times.items():
        ms = np.asarray(ns) / 1e6
        print(f"  {name:<26} p50 {np.percentile(ms, 50):.3f}  p90 {np.percentile(ms, 90):.3f}  "
              f"p99 {np.percentile(ms, 99):.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
