"""The memory of learning rates as a rate rule (docs/algorithm.md sections 2-6).

`memory(config)` is a transform like every other in rtlearn.learner.optim: it takes the base
direction u (and the key that indexes the memory) and scales u by the rate it predicts per
coordinate, while learning from whether consecutive keys agree.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from ..kernels import memory as K
from .transform import Transform


TABLE_BINS = 256  # Q of the tabulated kernel (rtlearn.kernels.memory)


@dataclass(frozen=True)
class MemoryConfig:
    """Settings of one memory per parameter group.

    `truncation` bounds the kernel mass skipped per coordinate (eq. M1 window): the radius R
    is the smallest with exp(-a R^2 / 2) <= truncation, a = (spacing / width)^2.
    """

    lr0: float = 1e-3            # eta_0: every local rate starts here
    n_centres: int = 50           # K
    clip: float = 10.0            # C: centres on [-C, C]; keys clipped to it
    width_ratio: float = 0.5      # h / centre spacing
    normalized_signal: bool = False  # eq. M4 weights: psi (eq. 10) or psi / sum(psi)
    meta: str = "gd"              # "gd" (MetaGD) or "adam" (MetaGDMemAdam)
    beta: float = 1e-3            # meta learning rate
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    rate_min: float = 1e-9
    rate_max: float = 1.0
    truncation: float = 1e-7

    @classmethod
    def authors(cls, **overrides) -> "MemoryConfig":
        """The authors' released defaults (docs/algorithm.md section 7), exactly."""
        base = cls(lr0=1e-3, n_centres=100, clip=10.0, width_ratio=0.5, normalized_signal=False,
                   meta="adam", beta=1e-3, rate_min=1e-9, rate_max=1.0)
        return replace(base, **overrides)

    def validate(self) -> None:
        if self.n_centres < 2:
            raise ValueError(f"memory n_centres must be >= 2, got {self.n_centres}")
        for name in ("clip", "width_ratio", "lr0", "truncation"):
            if not getattr(self, name) > 0:
                raise ValueError(f"memory {name} must be > 0, got {getattr(self, name)}")
        if self.meta not in ("gd", "adam"):
            raise ValueError(f"memory meta must be 'gd' or 'adam', got {self.meta!r}")
        if self.a * (self.radius + 1) / TABLE_BINS > 0.15:
            raise ValueError("memory width_ratio too small for the tabulated kernel (>= 0.2)")
        if not 0 < self.rate_min <= self.lr0 <= self.rate_max:
            raise ValueError("memory needs 0 < rate_min <= lr0 <= rate_max")

    @property
    def spacing(self) -> float:
        return 2.0 * self.clip / (self.n_centres - 1)

    @property
    def a(self) -> float:
        return 1.0 / self.width_ratio**2

    @property
    def radius(self) -> int:
        return max(1, math.ceil(math.sqrt(2.0 * math.log(1.0 / self.truncation) / self.a)))

    def centres(self) -> np.ndarray:
        return np.linspace(-self.clip, self.clip, self.n_centres)


def predict_rates(config: MemoryConfig, w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The full O(K) eq. M2 for one group's weights w at keys x (for plots and inspection)."""
    xc = np.clip(np.asarray(x, dtype=float), -config.clip, config.clip)
    h = config.width_ratio * config.spacing
    psi = np.exp(-((xc[:, None] - config.centres()[None, :]) ** 2) / (2 * h * h))
    return psi @ w / psi.sum(axis=1)


def memory(config: MemoryConfig = MemoryConfig()) -> Transform:
    """Rate rule: u <- eta(key) * u, the memory learning online (eqs. M1-M5)."""
    config.validate()
    radius = config.radius
    a = config.a
    f = np.arange(TABLE_BINS + 1)[:, None] / TABLE_BINS
    table = np.exp(-0.5 * a * (np.arange(1 - radius, radius + 1)[None, :] - f) ** 2)
    n_pad = config.n_centres + 2 * radius - 1
    inv_spacing = 1.0 / config.spacing
    meta_kind = K.META_ADAM if config.meta == "adam" else K.META_GD

    mpad = np.zeros(n_pad)
    mpad[radius - 1: radius - 1 + config.n_centres] = 1.0

    def init(n_params: int, bounds: np.ndarray) -> dict:
        g = len(bounds) - 1
        kc = config.n_centres
        return {
            "w": np.full((g, kc), config.lr0),
            "w_m": np.zeros((g, kc)),
            "w_v": np.zeros((g, kc)),
            "count": np.zeros(1),
            "key_prev": np.zeros(n_params),
            "learn": np.ones(1),
            # scratch, and the mean predicted rate per group for monitoring
            "blk": np.zeros((K.BLK_ROWS, K.BLOCK)),
            "wpad": np.zeros(n_pad),
            "mpad": mpad.copy(),
            "dpad": np.zeros((4, n_pad)),
            "eta_mean": np.full(g, config.lr0),
        }

    def update(grad, u, key, state, bounds):
        K.memory_step(key, u, state["key_prev"], state["w"], state["w_m"], state["w_v"],
                      state["count"], bounds, config.clip, inv_spacing, radius, a, table,
                      config.normalized_signal, meta_kind, config.beta, config.b1, config.b2,
                      config.eps, config.rate_min, config.rate_max, state["learn"][0] > 0,
                      state["blk"], state["wpad"], state["mpad"],
                      state["dpad"], state["eta_mean"])

    return Transform("memory", init, update, shared=("w", "w_m", "w_v", "count"), carry=("w",),
                     history=("key_prev",), scratch=("blk", "wpad", "mpad", "dpad"), hyper=asdict(config))
