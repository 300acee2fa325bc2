"""Which samples of a batch the learning process learns from (docs/service.md, "Robust
learning"). Runs in the learning process, once per batch, so the per-packet path stays as it
is; the rest of a batch is learned when some of its samples are left out.

A sample is left out, counted by the first reason that applies, when
  * torque_limit:   a measured torque is beyond guard.sample_margin x the robot's
                    torque_limits (or not finite): a sensor or transport fault, since the
                    drives cannot produce it;
  * velocity_limit: a joint velocity is beyond guard.sample_margin x velocity_limits;
  * outlier:        a joint's residual departs from the batch's median residual by more than
                    guard.outlier_k robust residual scales (rtlearn.learner.robust).
The residual scale is kept from every sample within the limits, outliers included (each
moves it by a bounded step), so it follows any lasting change and the screen cannot lock
itself out.
"""

from __future__ import annotations

import numpy as np

REASONS = ("torque_limit", "velocity_limit", "outlier")
FLOOR = 1e-4  # the smallest residual scale, as a fraction of each joint's torque limit


class SampleScreen:
    def __init__(self, torque_limits, velocity_limits, margin: float, k: float):
        self.tau_max = np.asarray(torque_limits, np.float64) * margin
        self.qd_max = np.asarray(velocity_limits, np.float64) * margin
        self.floor = np.asarray(torque_limits, np.float64) * FLOOR
        self.k = k
        self.counts = dict.fromkeys(REASONS, 0)

    def keep(self, learner, X: np.ndarray, Y: np.ndarray, P: np.ndarray) -> np.ndarray:
        """The rows to learn from (bool mask); X holds (q, qd, qdd), Y the measured torques,
        P the model's predictions of them. Updates the learner's residual scale."""
        n = Y.shape[1]
        torque_ok = (np.abs(Y) <= self.tau_max).all(axis=1)  # NaN compares False
        velocity_ok = (np.abs(X[:, n:2 * n]) <= self.qd_max).all(axis=1)
        plausible = torque_ok & velocity_ok
        R = P[plausible] - Y[plausible]
        outlier = np.zeros_like(plausible)
        outlier[plausible] = learner.resid.outliers(R, self.k, self.floor)
        learner.resid.update(R, self.floor)
        self.counts["torque_limit"] += int((~torque_ok).sum())
        self.counts["velocity_limit"] += int((torque_ok & ~velocity_ok).sum())
        self.counts["outlier"] += int(outlier.sum())
        return plausible & ~outlier
