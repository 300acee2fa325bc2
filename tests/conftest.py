import os
import subprocess
import sys
from pathlib import Path

import pytest

# tests/naive.py: the plain-numpy references the kernels are tested against.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def run_boundschecked(tmp_path):
    """Run a Python script in a subprocess with numba's bounds checking on (and a fresh
    cache, so the kernels are compiled with it); it must print "ok" last."""
    def run(script: str) -> None:
        env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path))
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.strip().endswith("ok")
    return run
