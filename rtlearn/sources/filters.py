"""Causal estimation of derivatives for arms that report no acceleration (or no velocity).

The estimate is the slope of the least-squares line through the last `window` samples,
using their real time stamps. It only looks back, so it can run online at 1 kHz.

Lag: a least-squares line's slope is exact for a linearly changing signal and, for a signal
whose slope changes linearly (constant jerk), equals the true slope at the window's mean time.
With uniform sampling at dt that is a pure delay of (window - 1) / 2 * dt: 7 ms for the
default 15 samples at 1 kHz. Noise: a white error of std s on the input becomes
s * sqrt(12 / (window * (window^2 - 1))) / dt on the slope (0.06 s / dt for 15 samples).
"""

from __future__ import annotations

import numpy as np

DEFAULT_WINDOW = 15


def lag_seconds(window: int, dt: float) -> float:
    """Delay of the estimate behind the true derivative for uniform sampling at dt."""
    return (window - 1) / 2 * dt


class CausalDerivative:
    """Online slope of an (n,) signal over its last `window` samples."""

    def __init__(self, n: int, window: int = DEFAULT_WINDOW):
        if window < 2:
            raise ValueError("window must be >= 2")
        self.window = window
        self._t = np.zeros(window)
        self._x = np.zeros((window, n))
        self._dt = np.zeros(window)
        self._count = 0

    def reset(self) -> None:
        self._count = 0

    def update(self, t: float, x: np.ndarray) -> np.ndarray:
        """Add the sample (t, x) and return the slope estimate at this time (zeros at first)."""
        return self.update_into(t, x, np.zeros(self._x.shape[1]))

    def update_into(self, t: float, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        """`update` writing into `out` (n,) without allocating arrays: the daemon's 1 kHz path.
        The slope is sum(dt_k x_k) / sum(dt_k^2), dt centred (so x needs no centring)."""
        i = self._count % self.window
        self._t[i] = t
        self._x[i] = x
        self._count += 1
        m = min(self._count, self.window)
        dt = self._dt[:m]
        np.subtract(self._t[:m], self._t[:m].mean(), out=dt)
        denom = np.dot(dt, dt)
        if m < 2 or not denom > 0:
            out[:] = 0.0
            return out
        np.dot(dt, self._x[:m], out=out)
        out /= denom
        return out


def estimate_derivative(t: np.ndarray, x: np.ndarray, window: int = DEFAULT_WINDOW) -> np.ndarray:
    """The online estimator run over a whole (N,) time vector and (N, n) signal."""
    est = CausalDerivative(x.shape[1], window)
    return np.array([est.update(ti, xi) for ti, xi in zip(t, x)]).reshape(x.shape)
