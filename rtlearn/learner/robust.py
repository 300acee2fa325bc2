"""Per-sample outlier screening of a batch by its prediction residuals (docs/service.md,
"Robust learning").

State: one robust residual scale s_j per output, the running median of |r_j| where
r = prediction - target, kept by a sign rule in the log domain (a stochastic quantile tracker):

    log s_j += rate/2 * (#{|r_bj| > s_j} - #{|r_bj| <= s_j})           (over a batch's rows)

At equilibrium half the residuals lie above s_j, so s_j is their median (a median absolute
deviation about zero). Each sample moves log s_j by at most rate/2, however large its
residual: one outlier cannot inflate the scale, and a lasting change of the residuals moves it
at a bounded speed in either direction.

A row is an outlier when any output departs from the batch's median residual by more than k
scales: |r_bj - median_b(r_j)| > k s_j. Centring on the batch median is what separates a gross
outlier (a minority of the batch) from a real, sustained change of the targets (a new payload:
most of the batch moves together, the median with it, and it is learned at once).

The state belongs to the model whose residuals it measures: OnlineLearner keeps it with its
target normaliser (network_state "resid.*"), so contexts, snapshots and rollbacks carry it.
"""

from __future__ import annotations

import numpy as np

RATE = 0.02     # per sample: a batch of 10 all above (or below) moves the scale by e^(+-0.1)


class ResidualScale:
    def __init__(self, n_outputs: int):
        self.scale = np.zeros(n_outputs)   # s_j; meaningless while count is 0
        self.count = np.zeros(1)           # samples the scale has seen

    def arrays(self) -> dict:
        return {"scale": self.scale, "count": self.count}

    def outliers(self, R: np.ndarray, k: float, floor: np.ndarray | float) -> np.ndarray:
        """Rows of residuals R (B, J) that are outliers; before the scale has seen anything it
        starts at the batch's own median |r| (so it is armed from the first batch). `floor`
        bounds the scale from below (an exact model would otherwise reject everything).
        Non-finite residuals are outliers."""
        if R.shape[0] == 0:
            return np.zeros(0, dtype=bool)
        finite = np.isfinite(R).all(axis=1)
        if self.count[0] == 0:
            if not finite.any():
                return ~finite
            np.maximum(np.median(np.abs(R[finite]), axis=0), floor, out=self.scale)
        med = np.median(R[finite], axis=0) if finite.any() else np.zeros(R.shape[1])
        dev = np.abs(R - med)
        return ~finite | ~(dev <= k * self.scale).all(axis=1)

    def update(self, R: np.ndarray, floor: np.ndarray | float, rate: float = RATE) -> None:
        """The sign rule above over the rows of R (non-finite residuals count as above)."""
        if R.shape[0] == 0:
            return
        above = ~(np.abs(R) <= self.scale)
        steps = 2.0 * above.sum(axis=0) - R.shape[0]
        self.scale *= np.exp(0.5 * rate * steps)
        np.maximum(self.scale, floor, out=self.scale)
        self.count[0] += R.shape[0]
