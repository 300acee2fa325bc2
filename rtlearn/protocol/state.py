"""The joint-state contract: what every source produces and what the wire format carries
(see docs/architecture.md). It lives here, below the sources, so that the protocol never
imports a source."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(slots=True)
class JointState:
    seq: int                 # strictly increasing per stream
    t: float                 # seconds since stream start
    q: np.ndarray            # (n,) float64, rad
    qd: np.ndarray           # (n,) float64, rad/s
    qdd: np.ndarray | None   # (n,) float64, rad/s^2; None when the arm gives none
    tau: np.ndarray          # (n,) float64, N*m, the applied joint torque
    context: str | None = None   # payload / context label, e.g. "heavy"
