"""Base directions and rate rules without memory (docs/algorithm.md, eqs. O1-O4).

Every kernel works in place on flat float64 arrays; `bounds` (G+1,) delimits parameter groups.
"""

import math

from numba import njit

from . import JIT


@njit(**JIT)
def clip_by_value(u, c):
    """Eq. O1: u <- clip(u, -c, c), coordinate-wise."""
    for i in range(u.shape[0]):
        if u[i] > c:
            u[i] = c
        elif u[i] < -c:
            u[i] = -c


@njit(**JIT)
def adam_direction(u, m, v, count, b1, b2, eps):
    """Eq. O2: m, v moments; u <- m_hat / (sqrt(v_hat) + eps) with bias-corrected moments."""
    count[0] += 1.0
    c1 = 1.0 - b1 ** count[0]
    c2 = 1.0 - b2 ** count[0]
    for i in range(u.shape[0]):
        g = u[i]
        m[i] = b1 * m[i] + (1.0 - b1) * g
        v[i] = b2 * v[i] + (1.0 - b2) * g * g
        u[i] = (m[i] / c1) / (math.sqrt(v[i] / c2) + eps)


@njit(**JIT)
def scale(u, lr):
    """Eq. O3: constant rate, u <- lr * u."""
    for i in range(u.shape[0]):
        u[i] *= lr


@njit(**JIT)
def hypergradient(g, u, u_prev, alpha, beta, bounds):
    """Eq. O4 (Baydin et al. 2018), per group: alpha += beta * <g_t, u_{t-1}>; u <- alpha * u.

    With u the plain gradient this is SGD-HD, with u the Adam direction Adam-HD.
    """
    for k in range(bounds.shape[0] - 1):
        h = 0.0
        for i in range(bounds[k], bounds[k + 1]):
            h += g[i] * u_prev[i]
        alpha[k] += beta * h
        a = alpha[k]
        for i in range(bounds[k], bounds[k + 1]):
            u_prev[i] = u[i]
            u[i] = a * u[i]


@njit(**JIT)
def apply_updates(theta, u):
    """theta <- theta - u (the rate rules have already scaled u)."""
    for i in range(theta.shape[0]):
        theta[i] -= u[i]


@njit(**JIT)
def all_finite(x):
    """True when no entry is NaN or infinite."""
    for i in range(x.shape[0]):
        if not math.isfinite(x[i]):
            return False
    return True


@njit(**JIT)
def copy_into(dst, src):
    """dst <- src (flat). No equation: a copy that does not hold the GIL, for the serving copy
    the daemon refreshes after every step while its socket thread runs."""
    for i in range(dst.shape[0]):
        dst[i] = src[i]


@njit(**JIT)
def scale_key(key, out, ms, count, decay, bounds):
    """Eq. O5: out <- key / rms per group, rms the bias-corrected running root mean square
    of the group's key over past steps (EMA with `decay`), taken before this step's key
    enters it, so a sudden jump shows as keys far from zero."""
    count[0] += 1.0
    for k in range(bounds.shape[0] - 1):
        lo = bounds[k]
        hi = bounds[k + 1]
        if hi == lo:
            continue
        sq = 0.0
        for i in range(lo, hi):
            sq += key[i] * key[i]
        sq /= hi - lo
        prev = ms[k] / (1.0 - decay ** (count[0] - 1.0)) if count[0] > 1.0 else sq
        if math.isfinite(sq):  # one NaN or inf gradient must not poison the scale for good
            ms[k] = decay * ms[k] + (1.0 - decay) * sq
        inv = 1.0 / math.sqrt(max(prev, 1e-30)) if math.isfinite(prev) else 0.0
        for i in range(lo, hi):
            out[i] = key[i] * inv
