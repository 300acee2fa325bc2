"""`rtlearn bench loops`: which loops of the learning step's kernels LLVM vectorised, from its
own optimisation remarks.

A child process compiles the kernels afresh (an empty numba cache) for the reference step
(rtlearn.benchmarks.step.REFERENCE) in one dtype, with LLVM's loop-vectorizer remarks on and
numba's line info (without the lifetime extension numba's debug mode adds, which changes
what LLVM may optimise), runs one learning step and one prediction, and exits; the parent
reads the remarks (`FILE:LINE:COL: message` on stderr) and joins them to the source lines.
A loop inlined at several places reports once per place.
"""

from __future__ import annotations

import linecache
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

KERNELS = Path(__file__).resolve().parents[1] / "kernels"
REMARK = re.compile(r"remark: (\w+\.py):(\d+):\d+: (.*)")
VECTORISED = re.compile(r"vectorized loop \(vectorization width: (\d+), interleaved count: (\d+)\)")


def _child(dtype: str) -> None:
    import llvmlite.binding as llvm
    from numba.core import cpu

    for option in ("-pass-remarks=loop-vectorize", "-pass-remarks-missed=loop-vectorize",
                   "-pass-remarks-analysis=loop-vectorize"):
        llvm.set_option("", option)
    finalize = cpu.CPUTargetOptions.finalize

    def keep_lifetimes_short(self, flags, options):
        flags.dbg_extend_lifetimes = False
        finalize(self, flags, options)

    cpu.CPUTargetOptions.finalize = keep_lifetimes_short
    from dataclasses import replace

    from rtlearn.benchmarks.step import REFERENCE, _random_batches
    from rtlearn.learner import OnlineLearner

    learner = OnlineLearner(replace(REFERENCE, dtype=dtype))
    X, Y = _random_batches(1, REFERENCE.batch_size, REFERENCE.n_inputs, REFERENCE.n_joints, 0)[0]
    learner.learn_many(X, Y)
    learner.predict_one(X[0])


def remarks(dtype: str, timeout: float = 600.0) -> list[tuple[str, int, str]]:
    """(file, line, message) of every loop-vectorizer remark on the kernels."""
    with tempfile.TemporaryDirectory(prefix="rtlearn-loops-") as cache:
        env = {**os.environ, "NUMBA_DEBUGINFO": "1", "NUMBA_CACHE_DIR": cache}
        proc = subprocess.run([sys.executable, "-m", "rtlearn.benchmarks.loops", dtype],
                              env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"the compiling child failed:\n{proc.stderr[-2000:]}")
    out = []
    for line in proc.stderr.splitlines():
        m = REMARK.match(line)
        if m and int(m.group(2)) > 0 and (KERNELS / m.group(1)).exists():
            out.append((m.group(1), int(m.group(2)), m.group(3)))
    return out


def loop_table(dtype: str) -> list[dict]:
    """One row per loop (file, line): its source, the vector widths it got where vectorised,
    how many of its copies were not, and LLVM's first reason for those."""
    rows: dict[tuple[str, int], dict] = {}
    for file, line, msg in remarks(dtype):
        row = rows.setdefault((file, line), {"file": file, "line": line, "widths": [],
                                             "not_vectorised": 0, "reason": None})
        m = VECTORISED.match(msg)
        if m:
            row["widths"].append(int(m.group(1)))
        elif msg == "loop not vectorized":
            row["not_vectorised"] += 1
        elif msg.startswith("loop not vectorized: ") and row["reason"] is None:
            row["reason"] = msg[len("loop not vectorized: "):]
    for row in rows.values():
        row["source"] = linecache.getline(str(KERNELS / row["file"]), row["line"]).strip()
    return [rows[k] for k in sorted(rows)]


def report(tables: dict[str, list[dict]]) -> str:
    lines = []
    for dtype, rows in tables.items():
        lines.append(f"{dtype}: loops of the reference step's kernels (LLVM loop vectorizer)")
        for r in rows:
            got = ", ".join(f"x{w}" for w in sorted(set(r["widths"])))
            verdict = (f"vectorised {got}" if r["widths"] else "scalar")
            if r["widths"] and r["not_vectorised"]:
                verdict += f" (scalar in {r['not_vectorised']} inlined copies)"
            if not r["widths"] and r["reason"]:
                verdict += f": {r['reason']}"
            lines.append(f"  {r['file']}:{r['line']:<4} {r['source'][:60]:<60} {verdict}")
    return "\n".join(lines)


if __name__ == "__main__":
    _child(sys.argv[1])
