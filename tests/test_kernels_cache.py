"""A learning step gives the same bits whether its kernels were compiled in this process or
loaded from numba's cache. With fastmath 'reassoc', LLVM may reorder sums differently when a
kernel's callees are compiled with it than when they are linked from elsewhere; the memory
kernels' callees are therefore inlined by numba itself (inline="always"). A fit and a replay
through the daemon (tests/test_fit.py) compare bitwise and would otherwise differ on a fresh
clone, where one process compiles and the other loads the cache."""

import os
import subprocess
import sys

import pytest

STEPS = """
import hashlib, sys
import numpy as np
from rtlearn.learner import LearnerConfig, OnlineLearner
L = OnlineLearner(LearnerConfig(n_joints=7, n_inputs=21, hidden=(32, 32), dtype=sys.argv[1],
                                seed=0))
rng = np.random.default_rng(0)
h = hashlib.sha1()
for _ in range(60):
    X, Y = rng.normal(size=(10, 21)), rng.normal(size=(10, 7))
    h.update(L.predict_many(X).tobytes())
    L.learn_many(X, Y)
    h.update(L.net.theta.tobytes())
print(h.hexdigest())
"""


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_compiled_and_cached_kernels_learn_the_same_bits(tmp_path, dtype):
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "numba")}   # empty: the first run compiles

    def run():
        out = subprocess.run([sys.executable, "-c", STEPS, dtype], capture_output=True,
                             text=True, timeout=600, env={**os.environ, **env})
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    compiled = run()
    assert any((tmp_path / "numba").rglob("*.nbi"))  # the second run loads these
    assert run() == compiled
