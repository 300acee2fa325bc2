"""Statistics of the daemon's latency rings, computed without holding the GIL: a status
request answered by the control thread must not stall the socket thread (np.percentile over
65 536 values holds the GIL for ~1 ms)."""

import numpy as np
from numba import njit

from . import JIT


@njit(**JIT)
def percentiles(values, n, q, out):
    """out[i] = the q[i]-th percentile (linear interpolation, as np.percentile) of values[:n]."""
    kth = np.empty(2 * q.shape[0], np.int64)
    for i in range(q.shape[0]):
        lo = int(np.floor(q[i] / 100.0 * (n - 1)))
        kth[2 * i] = lo
        kth[2 * i + 1] = min(lo + 1, n - 1)
    s = np.partition(values[:n], kth)  # a copy, ordered at the kth positions only
    for i in range(q.shape[0]):
        pos = q[i] / 100.0 * (n - 1)
        lo = kth[2 * i]
        out[i] = s[lo] + (pos - lo) * (s[kth[2 * i + 1]] - s[lo])
