"""The memory of learning rates as a rate rule (docs/algorithm.md sections 2-6).

`memory(config)` is a transform like every other in rtlearn.learner.optim: it takes the base
direction u (and the key that indexes the memory) and scales u by the rate it predicts per
coordinate, while learning from whether consecutive keys agree.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from functools import lru_cache

import numpy as np

from ..kernels import memory as K
from .transform import Transform


# Every MemoryConfig field of the snapshots written before eq. O5 and relative bounds.
LEGACY_FIELDS = {"lr0", "n_centres", "clip", "width_ratio", "normalized_signal", "meta", "beta",
                 "b1", "b2", "eps", "rate_min", "rate_max", "truncation"}
META_KINDS = {"gd": K.META_GD, "adam": K.META_ADAM, "log": K.META_LOG}
MAX_NODES_PER_CELL = 1024
INTERPOLATION_FLOOR = 1e-11  # below this, G would grow past what a step can tabulate


@dataclass(frozen=True)
class MemoryConfig:
    """Settings of one memory per parameter group.

    Defaults (docs/algorithm.md, "Our defaults", measured by `rtlearn experiment
    payload-swap`): the paper's rule (raw keys, MetaGD) learning *multiples of the base rate*
    (relative=True: the meta step is beta * lr0 * Delta, the bounds rate_min and rate_max are
    multiples of lr0), so the base rate keeps its meaning at every value and the learned rates
    cannot drift beyond 30x base. At lr0 = 1e-3 this is the paper's update with tighter
    bounds. key="scaled" (eq. O5) with meta="log" (eq. M5') is the scale-free variant we
    measured beside it. `paper()` and `authors()` give the paper's and the authors' settings.

    `truncation` sets the accuracy of the fast evaluation: the window radius R is the
    smallest with exp(-a R^2 / 2) <= truncation (a = (spacing / width)^2), and the node
    tables get the fewest nodes per spacing G whose interpolation error is at most
    max(truncation, 1e-11).
    `error_bound` then bounds |eta_fast - eta_exact| / ptp(w) over every key (see node_tables).
    `full_window` evaluates every centre exactly instead (O(K) per coordinate, the authors'
    code; error_bound 0): for small problems and fidelity checks, not the 1 kHz networks.
    """

    lr0: float = 1e-3            # eta_0: every local rate starts here (the learner's lr)
    n_centres: int = 50           # K
    clip: float = 10.0            # C: centres on [-C, C]; keys clipped to it
    width_ratio: float = 0.5      # h / centre spacing
    normalized_signal: bool = False  # eq. M4 weights: psi (eq. 10) or psi / sum(psi)
    meta: str = "gd"              # "gd" (MetaGD), "adam" (MemAdam), "log" (MetaGD on log w)
    beta: float = 1.0             # meta learning rate (per unit of lr0 when relative)
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    rate_min: float = 0.01        # bounds of the rates: multiples of lr0 when relative
    rate_max: float = 30.0
    relative: bool = True
    key: str = "raw"              # "raw": the direction itself (paper); "scaled": eq. O5
    key_decay: float = 0.99       # eq. O5: EMA factor of the running RMS (per step)
    truncation: float = 1e-7
    full_window: bool = False

    @classmethod
    def paper(cls, **overrides) -> "MemoryConfig":
        """The paper's memory as rtlearn ran it before payload-swap measured the defaults:
        raw keys, MetaGD on absolute rates (beta 1e-3 whatever the base rate), absolute bounds
        [1e-9, 1]."""
        base = cls(n_centres=50, clip=10.0, meta="gd", beta=1e-3, rate_min=1e-9, rate_max=1.0,
                   relative=False, key="raw")
        return replace(base, **overrides)

    @classmethod
    def scaled(cls, **overrides) -> "MemoryConfig":
        """The scale-free variant measured beside the defaults (docs/results.md §5): keys in
        units of each group's running RMS (eq. O5), log-rates (eq. M5'), [0.3, 5] x base."""
        base = cls(n_centres=17, clip=4.0, meta="log", beta=0.5, rate_min=0.3, rate_max=5.0,
                   relative=True, key="scaled")
        return replace(base, **overrides)

    @classmethod
    def authors(cls, **overrides) -> "MemoryConfig":
        """The authors' released defaults (docs/algorithm.md section 7), exactly: every
        centre updated and predicted from (full_window)."""
        base = cls(lr0=1e-3, n_centres=100, clip=10.0, width_ratio=0.5, normalized_signal=False,
                   meta="adam", beta=1e-3, rate_min=1e-9, rate_max=1.0, relative=False,
                   key="raw", full_window=True)
        return replace(base, **overrides)

    @classmethod
    def from_dict(cls, d: dict) -> "MemoryConfig":
        """From a partial dict (a config file: missing fields take the defaults) or from
        asdict(); a whole dict saved before keys were scaled (every field of then, no 'key')
        meant raw keys and absolute bounds."""
        if "key" not in d and LEGACY_FIELDS <= set(d):
            d = {"key": "raw", "relative": False, **d}
        return cls(**d)

    def rate_bounds(self, lr0: float | None = None) -> tuple[float, float]:
        """(lowest, highest) rate, absolute."""
        lr0 = self.lr0 if lr0 is None else lr0
        return ((self.rate_min * lr0, self.rate_max * lr0) if self.relative
                else (self.rate_min, self.rate_max))

    def validate(self) -> None:
        if self.n_centres < 2:
            raise ValueError(f"memory n_centres must be >= 2, got {self.n_centres}")
        for name in ("clip", "width_ratio", "lr0", "truncation", "beta"):
            if not getattr(self, name) > 0:
                raise ValueError(f"memory {name} must be > 0, got {getattr(self, name)}")
        if self.meta not in META_KINDS:
            raise ValueError(f"memory meta must be one of {', '.join(META_KINDS)}, "
                             f"got {self.meta!r}")
        if self.key not in ("raw", "scaled"):
            raise ValueError(f"memory key must be 'raw' or 'scaled', got {self.key!r}")
        if not 0 < self.key_decay < 1:
            raise ValueError(f"memory key_decay must be in (0, 1), got {self.key_decay}")
        if self.relative and not 0 < self.rate_min <= 1 <= self.rate_max:
            raise ValueError("memory with relative bounds needs 0 < rate_min <= 1 <= rate_max "
                             f"(multiples of the base rate), got {self.rate_min}, {self.rate_max}")
        if not self.relative and not 0 < self.rate_min <= self.lr0 <= self.rate_max:
            raise ValueError("memory with absolute bounds needs 0 < rate_min <= lr0 <= rate_max,"
                             f" got {self.rate_min}, {self.lr0}, {self.rate_max}")
        if not self.truncation >= 1e-15:
            raise ValueError(f"memory truncation must be >= 1e-15, got {self.truncation}")

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

    @property
    def error_bound(self) -> float:
        """E: |eta_fast(x) - eta_exact(x)| <= E * ptp(w) / 2 for every key x."""
        return 0.0 if self.full_window else node_tables(self).error_bound


@dataclass(frozen=True)
class NodeTables:
    """What rtlearn.kernels.memory interpolates: values and (node-step) derivatives of the
    rate weights phi_k = psi_k / sum psi and of the signal weights (psi_k, or phi_k when
    normalized) of the window centres at N = (K - 1) G + 1 nodes, shape (2R + 1, N): node j
    in cell c = j // G sees centres c - R + n, n = 1..2R (the cell's window), and n = 0 too
    when it sits on centre c (j = c G), so its window c - R .. c + R is symmetric."""

    per_cell: int
    phi: np.ndarray
    dphi: np.ndarray
    psi: np.ndarray
    dpsi: np.ndarray
    error_bound: float     # max over x of sum_k |phi_fast_k(x) - phi_k(x)| (eq. M2)
    signal_bound: float    # max over x, k of |psi_fast_k(x) - psi_k(x)| (eq. M4)


def _window_tables(cfg: MemoryConfig, per_cell: int):
    """Exact (truncated-window) weights and d/dt at the nodes, t in node steps."""
    n_c, radius, a = cfg.n_centres, cfg.radius, cfg.a
    j = np.arange((n_c - 1) * per_cell + 1)
    n = np.arange(2 * radius + 1)[:, None]
    k = (j // per_cell)[None, :] - radius + n
    d = j[None, :] / per_cell - k
    inwin = (k >= 0) & (k < n_c) & ((n > 0) | (j % per_cell == 0)[None, :])
    psi = np.where(inwin, np.exp(-0.5 * a * d * d), 0.0)
    dpsi = -a * d * psi
    total, dtotal = psi.sum(axis=0), dpsi.sum(axis=0)
    phi = psi / total
    dphi = (dpsi - phi * dtotal) / total
    return phi, dphi / per_cell, psi, dpsi / per_cell, k


def _interpolation_errors(cfg: MemoryConfig, per_cell: int, tables, samples: int = 16):
    """Dense check of the Hermite interpolants (16 points per node interval): against every
    centre, (max_x sum_k |phi~_k - phi_k|, max_x,k |sig~_k - sig_k|), then the same two
    against the truncated window (the interpolation error alone)."""
    phi, dphi, psi, dpsi, k = tables
    n_c, a = cfg.n_centres, cfg.a
    sig, dsig = (phi, dphi) if cfg.normalized_signal else (psi, dpsi)
    n_nodes = phi.shape[1]
    dense = np.zeros((4, n_nodes, n_c))
    cols = np.clip(k, 0, n_c - 1)
    rows = np.broadcast_to(np.arange(n_nodes)[None, :], k.shape)
    for i, tab in enumerate((phi, dphi, sig, dsig)):
        np.add.at(dense[i], (rows, cols), tab)  # out-of-range centres carry zero weight
    t = (np.arange(samples) + 0.5) / samples
    g = 1.0 - t
    h = np.stack([g * g * (1 + 2 * t), t * g * g, t * t * (3 - 2 * t), -t * t * g])  # (4, S)
    worst = np.zeros(4)
    centres = np.arange(n_c)
    chunk = max(1, 2**20 // (samples * n_c))  # bounds the (J, S, K) temporaries to ~8 MB each
    for lo in range(0, n_nodes - 1, chunk):
        jj = np.arange(lo, min(lo + chunk, n_nodes - 1))
        p = (jj[:, None] + t[None, :]) / per_cell                         # (J, S)
        psi_full = np.exp(-0.5 * a * (p[..., None] - centres) ** 2)       # (J, S, K)
        phi_full = psi_full / psi_full.sum(axis=-1, keepdims=True)
        sig_full = phi_full if cfg.normalized_signal else psi_full
        cell = (jj // per_cell)[:, None, None]
        kk = centres[None, None, :]
        inwin = (kk >= cell + 1 - cfg.radius) & (kk <= cell + cfg.radius)
        psi_tr = np.where(inwin, psi_full, 0.0)
        phi_tr = psi_tr / psi_tr.sum(axis=-1, keepdims=True)
        sig_tr = phi_tr if cfg.normalized_signal else psi_tr

        def interp(v, dv):
            return (h[0][None, :, None] * v[jj][:, None, :] + h[1][None, :, None] * dv[jj][:, None, :]
                    + h[2][None, :, None] * v[jj + 1][:, None, :]
                    + h[3][None, :, None] * dv[jj + 1][:, None, :])

        phi_i = interp(dense[0], dense[1])
        sig_i = interp(dense[2], dense[3])
        worst = np.maximum(worst, [np.abs(phi_i - phi_full).sum(-1).max(),
                                   np.abs(sig_i - sig_full).max(),
                                   np.abs(phi_i - phi_tr).sum(-1).max(),
                                   np.abs(sig_i - sig_tr).max()])
    return worst


def node_tables(cfg: MemoryConfig) -> NodeTables:
    """Node tables for cfg; in units of the centre spacing, they depend on K, the width, the
    truncation and the signal only (the cache key)."""
    return _node_tables(replace(MemoryConfig(), n_centres=cfg.n_centres,
                                width_ratio=cfg.width_ratio, truncation=cfg.truncation,
                                normalized_signal=cfg.normalized_signal))


@lru_cache(maxsize=16)
def _node_tables(cfg: MemoryConfig) -> NodeTables:
    """The fewest nodes per spacing G whose interpolation error (beside truncation) is at
    most max(truncation, 1e-11), found by the G^-4 law of cubic Hermite interpolation and
    checked densely against every centre."""
    cfg.validate()
    target = max(cfg.truncation, INTERPOLATION_FLOOR)
    per_cell = 8
    while True:
        tables = _window_tables(cfg, per_cell)
        err = _interpolation_errors(cfg, per_cell, tables)
        interp = max(err[2], err[3])
        if interp <= target:
            break
        if per_cell >= MAX_NODES_PER_CELL:
            raise ValueError(f"memory truncation {cfg.truncation} needs more than "
                             f"{MAX_NODES_PER_CELL} nodes per centre spacing")
        guess = math.ceil(per_cell * (interp / target) ** 0.25 * 1.05)
        per_cell = min(MAX_NODES_PER_CELL, max(guess, per_cell + 1))
    phi, dphi, psi, dpsi, _ = tables
    sig, dsig = (phi, dphi) if cfg.normalized_signal else (psi, dpsi)
    return NodeTables(per_cell, *(np.ascontiguousarray(x) for x in (phi, dphi, sig, dsig)),
                      float(err[0]), float(err[1]))


def predict_rates(config: MemoryConfig, w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The full O(K) eq. M2 for one group's weights w at keys x (for plots and inspection)."""
    xc = np.clip(np.asarray(x, dtype=float), -config.clip, config.clip)
    h = config.width_ratio * config.spacing
    psi = np.exp(-((xc[:, None] - config.centres()[None, :]) ** 2) / (2 * h * h))
    return psi @ w / psi.sum(axis=1)


def authors_memory(optimizer: str, **overrides) -> MemoryConfig:
    """MemoryConfig.authors() with the meta-optimiser the optimizer name says: Adam for
    *-memadam, gradient ascent (the authors' "MetaGD") otherwise."""
    return MemoryConfig.authors(**{"meta": "adam" if optimizer.endswith("memadam") else "gd",
                                   **overrides})


def _interleave(v: np.ndarray, dv: np.ndarray, dtype) -> np.ndarray:
    """(W, N) values and derivatives as one (W, 2N) table, [n, 2 j] = v, [n, 2 j + 1] = dv:
    the layout of the kernel's node table and deposits."""
    out = np.empty((v.shape[0], 2 * v.shape[1]), dtype=dtype)
    out[:, 0::2], out[:, 1::2] = v, dv
    return out


def memory(config: MemoryConfig = MemoryConfig()) -> Transform:
    """Rate rule: u <- eta(key) * u, the memory learning online (eqs. M1-M5). With
    config.key == "scaled" the key must come from `scale_key` (make_optimizer chains it).

    The per-coordinate state (the previous key) and the node tables take the parameters'
    dtype; the K rates of each group and their moments stay float64."""
    config.validate()
    if config.full_window:  # no tables: the kernel's exact path uses dpad (K) only
        nodes = NodeTables(1, *([np.zeros((1, 2))] * 4), 0.0, 0.0)
        n_pad = config.n_centres
        inv_step = 1.0 / config.spacing
    else:
        nodes = node_tables(config)
        n_pad = config.n_centres + 2 * config.radius
        inv_step = nodes.per_cell / config.spacing
    n_nodes = nodes.phi.shape[1]
    meta_kind = META_KINDS[config.meta]
    tables = {}  # dtype -> (tphi, tpsi)

    def init(n_params: int, bounds: np.ndarray, dtype=np.float64) -> dict:
        g = len(bounds) - 1
        kc = config.n_centres
        dt = np.dtype(dtype)
        if dt not in tables:
            tables[dt] = (_interleave(nodes.phi, nodes.dphi, dt),
                          _interleave(nodes.psi, nodes.dpsi, dt))
        return {
            "lr0": np.array([config.lr0]),   # the base rate (set_lr moves it, and the rates)
            "w": np.full((g, kc), config.lr0),
            "w_m": np.zeros((g, kc)),
            "w_v": np.zeros((g, kc)),
            "count": np.zeros(1),
            "key_prev": np.zeros(n_params, dt),
            "learn": np.ones(1),
            # scratch, and the mean predicted rate per group for monitoring
            "js": np.zeros(K.BLOCK, dt),
            "hw": np.zeros((4, K.BLOCK), dt),
            "out": np.zeros(K.BLOCK, dt),
            "acc": np.zeros((K.BANKS, 2 * n_nodes), dt),
            "wpad": np.zeros(n_pad, dt),
            "dpad": np.zeros(n_pad),
            "tab": np.zeros(2 * n_nodes, dt),
            "eta_mean": np.full(g, config.lr0),
        }

    # Relative rates: the meta step of GD / Adam is in units of the base rate too (the log
    # step already is).
    beta_per_lr0 = config.relative and config.meta != "log"

    def update(grad, u, key, state, bounds):
        lr0 = state["lr0"][0]
        w_lo, w_hi = config.rate_bounds(lr0)
        beta = config.beta * lr0 if beta_per_lr0 else config.beta
        tphi, tpsi = tables[state["key_prev"].dtype]
        K.memory_step(key, u, state["key_prev"], state["w"], state["w_m"], state["w_v"],
                      state["count"], bounds, config.clip, inv_step, nodes.per_cell, tphi, tpsi,
                      meta_kind, beta, config.b1, config.b2, config.eps, w_lo, w_hi,
                      state["learn"][0] > 0, state["js"], state["hw"], state["out"],
                      state["acc"], state["wpad"], state["dpad"], state["tab"],
                      state["eta_mean"], config.full_window, config.a, config.normalized_signal)

    return Transform("memory", init, update, shared=("lr0", "w", "w_m", "w_v", "count"),
                     carry=("lr0", "w"),
                     history=("key_prev",),
                     scratch=("js", "hw", "out", "acc", "wpad", "dpad", "tab"),
                     hyper=asdict(config))
