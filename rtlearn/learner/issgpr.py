"""I-SSGPR, the peer: incremental sparse spectrum GP regression (Gijsberts & Metta, Neural
Networks 2013) with the learner API of OnlineLearner (predict_one / learn_many / save / load /
model_copy). Equations G1-G6 of docs/algorithm.md; kernels in rtlearn.kernels.issgpr.

D random Fourier features of a Gaussian kernel with one length scale per input (eq. G1),
shared by all outputs; the exact ridge / GP-posterior-mean weights of every output from one
Cholesky factor R of A = f-weighted Phi^T Phi + lambda I, updated by rank-1 updates, a
block of samples per pass over R (eqs. G2-G4), so each sample costs O(D^2) for ever. Exponential forgetting f <= 1 for
non-stationary dynamics. The first seconds are a calibration window: predicted by the running
mean of the targets until `calib[0]` samples are in, then at each count of `calib` the
kernel's hyper-parameters are fitted on the window so far by type-II maximum likelihood of an
exact GP (eq. G6) and the window is learned again by the RLS with the new kernel; after the
last count the window is dropped from the work and the kernel stays. With
`background_fit=True` (the daemon) a fit runs in a thread while learning goes on with the
kernel of before; the window keeps filling (up to twice calib[-1] samples) and is learned
again, whole, when the new kernel takes effect, at the first learn_many after the fit.

For rtlearn.service (the Learner protocol, rtlearn.learner.api): one payload context is the
whole model, its kernel included (`network_state`: P, c, hyper, Rp, W, y_mean, t and the
residual scale); what every context shares is the calibration (`memory_state`: its stage and
window), so a snapshot holds it and a resumed learner does not fit again. There is no
learning rate: `set_lr` and `set_memory_learning` refuse.
Residual mode (the semiparametric learner of Camoriano et al., ICRA 2016) is a choice of
targets: give it tau - RNEA(q, qd, qdd) as online-lift does.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, fields

import numpy as np
from threadpoolctl import threadpool_limits

from ..kernels import issgpr as K
from .robust import ResidualScale
from .state_io import load_state, save_state

STATE_KIND = "rtlearn-issgpr"
STATE_VERSION = 3   # 2: z = R^-T b beside R (Rz) instead of b (B); a window of 2 calib[-1]
#                     3: [R z] packed by rows (Rp), half the size; 1 and 2 are packed on load


def packed_index(D: int, L: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) of [R z] (D, L) in the packed order of rtlearn.kernels.issgpr."""
    return np.triu_indices(D, 0, L)


def pack(Rz: np.ndarray) -> np.ndarray:
    """[R z] (D, D + J) -> its packed rows (the upper triangle of R, z whole)."""
    return np.ascontiguousarray(Rz[packed_index(*Rz.shape)], dtype=np.float64)


@dataclass(frozen=True)
class ISSGPRConfig:
    """Defaults measured on the KUKA lift and payload swaps (docs/results.md, "I-SSGPR")."""

    n_joints: int = 7
    n_inputs: int = 21
    n_features: int = 400       # D (even): D/2 frequencies, a cosine and a sine each
    forget: float = 0.99        # f per sample: a memory of 1/(1 - f) = 100 samples (0.1 s)
    calib: tuple = (200, 2000)  # samples after which the kernel is fitted (eq. G6)
    fit_points: int = 250       # the fit's exact GP sees at most this many, evenly spread
    fit_iters: int = 150        # Adam steps of the marginal-likelihood fit
    seed: int = 0

    def __post_init__(self):
        if self.n_features < 2 or self.n_features % 2:
            raise ValueError("n_features must be even and >= 2 (cos and sin per frequency)")
        if not 0.0 < self.forget <= 1.0:
            raise ValueError("forget must be in (0, 1]")
        object.__setattr__(self, "calib", tuple(int(n) for n in self.calib))
        if not self.calib or self.calib[0] < 2 or any(
                b <= a for a, b in zip(self.calib, self.calib[1:])):
            raise ValueError("calib: increasing sample counts, the first >= 2")
        if self.fit_points < 2 or self.n_joints < 1 or self.n_inputs < 1:
            raise ValueError("fit_points >= 2, n_joints and n_inputs >= 1")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ISSGPRConfig":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown I-SSGPR config keys: {sorted(unknown)}")
        return cls(**d)


def fit_hyperparameters(X: np.ndarray, Y: np.ndarray, iters: int = 150,
                        rate: float = 0.05) -> dict:
    """Eq. G6: type-II maximum likelihood of an exact GP on a calibration window.

    Inputs standardised by the window's mean and std, targets by each output's; one kernel
    k(x, x') = sf^2 exp(-1/2 sum_i ((x_i - x'_i) / l_i)^2) + sn^2 [x = x'] shared by all
    outputs, maximising sum_j log N(y_j | 0, K). Gradient 1/2 tr((alpha alpha^T - J K^-1)
    dK/dtheta) with alpha = K^-1 Y, Adam on theta = log(l, sf, sn) from l_i = sqrt(n),
    sf = 1, sn = 0.1; the best iterate is kept. Length scales are returned in the raw input
    units (l_i * std_i), with the window's mean and the target means.
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    N, n = X.shape
    J = Y.shape[1]
    x_mean, y_mean = X.mean(0), Y.mean(0)
    x_std = X.std(0)
    x_std = np.where(x_std > 1e-12, x_std, 1.0)   # a constant input: leave its units
    y_std = Y.std(0)
    Z = (X - x_mean) / x_std
    Ys = (Y - y_mean) / np.where(y_std > 1e-12, y_std, 1.0)
    theta = np.concatenate([np.full(n, 0.5 * np.log(n)), [0.0, np.log(0.1)]])
    lo = np.concatenate([np.full(n, np.log(0.05)), [np.log(1e-2), np.log(1e-3)]])
    hi = np.concatenate([np.full(n, np.log(1e3)), [np.log(1e2), np.log(1e1)]])
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    eye = np.eye(N)
    Z2 = Z * Z
    best, best_theta = np.inf, theta.copy()
    for t in range(1, iters + 1):
        inv_l2 = np.exp(-2.0 * theta[:n])
        sf2, sn2 = np.exp(2.0 * theta[n]), np.exp(2.0 * theta[n + 1])
        Zl = Z * np.sqrt(inv_l2)
        sq = np.sum(Zl * Zl, axis=1)
        Kf = sf2 * np.exp(-0.5 * np.maximum(sq[:, None] + sq[None, :] - 2.0 * (Zl @ Zl.T), 0.0))
        Ky = Kf + sn2 * eye
        L = np.linalg.cholesky(Ky)
        Kinv = np.linalg.inv(Ky)
        alpha = Kinv @ Ys
        nll = 0.5 * np.sum(Ys * alpha) + J * np.log(np.diag(L)).sum()
        if nll < best:
            best, best_theta = nll, theta.copy()
        M = (alpha @ alpha.T - J * Kinv) * Kf      # Q o Kf, symmetric
        # sum_ab M_ab (z_ai - z_bi)^2 = 2 sum_a z_ai^2 (M 1)_a - 2 sum_a z_ai (M Z)_ai
        d2 = 2.0 * (M.sum(1) @ Z2) - 2.0 * np.sum(Z * (M @ Z), axis=0)
        grad = np.empty_like(theta)                     # of the log likelihood
        grad[:n] = 0.5 * d2 * inv_l2
        grad[n] = np.sum(M)
        grad[n + 1] = sn2 * (np.sum(alpha * alpha) - J * np.trace(Kinv))
        g = -grad / (N * J)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        theta = np.clip(theta - rate * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8),
                        lo, hi)
    ell = np.exp(best_theta[:n])
    return {"x_mean": x_mean, "length_scales": ell * x_std, "signal": float(np.exp(best_theta[n])),
            "noise": float(np.exp(best_theta[n + 1])), "y_mean": y_mean, "nll": float(best)}


@dataclass
class ISSGPRModel:
    """What a prediction needs, copied out so another thread can serve while the learner
    trains (the I-SSGPR twin of rtlearn.learner.learner.ModelCopy)."""

    P: np.ndarray
    c: np.ndarray
    W: np.ndarray
    y_mean: np.ndarray

    def assign(self, P, c, W, y_mean) -> None:
        """Overwrite in place (no allocation)."""
        np.copyto(self.P, P)
        np.copyto(self.c, c)
        np.copyto(self.W, W)
        np.copyto(self.y_mean, y_mean)


class _Fit(threading.Thread):
    """A kernel fit (eq. G6) off the learning thread; `token` names the state it is for."""

    def __init__(self, X, Y, iters: int, stage: int, token: int):
        super().__init__(name="rtlearn-issgpr-fit", daemon=True)
        self.X, self.Y, self.iters, self.stage, self.token = X, Y, iters, stage, token
        self.result, self.error = None, None

    def run(self) -> None:
        try:
            self.result = _fit(self.X, self.Y, self.iters)
        except Exception as e:  # handed to the learning thread, which raises it
            self.error = e


def _fit(X, Y, iters) -> dict:
    # One BLAS thread: on 2 busy CPUs two OpenBLAS threads made the fit 10x slower
    # (5.9 s against 0.54 s for 250 points, 150 iterations).
    with threadpool_limits(1):
        return fit_hyperparameters(X, Y, iters)


class ISSGPR:
    """I-SSGPR for all joints: shared features and Cholesky factor, one weight vector each."""

    def __init__(self, config: ISSGPRConfig = ISSGPRConfig(), background_fit: bool = False):
        self.config = c = config
        self.background_fit = background_fit
        D, m, J, n = c.n_features, c.n_features // 2, c.n_joints, c.n_inputs
        self.scale = 1.0 / np.sqrt(m)
        # Eq. G1: frequencies of the unit Gaussian kernel, drawn once from the seed.
        self.omega = np.random.default_rng(c.seed).standard_normal((m, n))
        self.P, self.c = np.zeros((m, n)), np.zeros(m)
        # R and z = R^-T b_j side by side: one rotation updates both (QR-RLS, eq. G3),
        # packed by rows: row k from its diagonal on
        L = D + J
        self.Rp = np.zeros(D * L - D * (D - 1) // 2)
        self._diag = np.array([K.row_offset(k, L) for k in range(D)])
        self.Rp[self._diag] = 1.0
        # the weights, rows padded to a multiple of 4 for the solve's tiles (eq. G4)
        self._Wp = np.zeros((-(-J // 4) * 4, D))
        self.W = self._Wp[:J]
        self.y_mean = np.zeros(J)
        self.t = np.zeros(1, dtype=np.int64)  # samples learned with this kernel (eq. G3')
        # x_mean (n), length_scales (n), [signal, noise]: the kernel in use.
        self.hyper = np.zeros(2 * n + 2)
        # Calibration: stage k means the kernel was fitted at calib[k - 1] samples; the
        # window is kept until the last fit, which ends calibration. Room for twice the last
        # count: a background fit's samples are learned again with its kernel.
        self.stage = 0
        self.calib_X = np.zeros((2 * c.calib[-1], n))
        self.calib_Y = np.zeros((2 * c.calib[-1], J))
        self.calib_fill = 0
        self._fitting: _Fit | None = None
        self._token = 0  # changes when the calibration state is replaced: a running fit lapses
        self.resid = ResidualScale(J)  # kept by the daemon's sample screen
        self.n_steps = self.n_samples = 0
        self._x1, self._y1, self._phi1 = np.zeros(n), np.zeros(J), np.zeros(D)
        self._V, self._pred = np.zeros((2 * K.CHUNK, D + J)), np.zeros(J)
        self._ws = K.workspace(2 * K.CHUNK, D + J)
        self._acc = np.zeros((K.TILE, len(self._Wp)))
        self._loss = np.zeros(J)

    # -- hyper-parameters -------------------------------------------------------------------
    def set_hyperparameters(self, x_mean, length_scales, signal: float, noise: float,
                            y_mean) -> None:
        """Fix the kernel and restart the regression (ends any calibration): P = Omega
        diag(1/l), c = P x_mean (eq. G1), R = sqrt(lambda) I with lambda = (noise / signal)^2
        (eq. G2), z = 0, w = 0; targets are learned as y - y_mean."""
        x_mean = np.asarray(x_mean, dtype=np.float64)
        ell = np.asarray(length_scales, dtype=np.float64)
        if not (np.all(ell > 0) and signal > 0 and noise > 0):
            raise ValueError("length scales, signal and noise must be > 0")
        np.divide(self.omega, ell[None, :], out=self.P)
        np.copyto(self.c, self.P @ x_mean)
        np.copyto(self.y_mean, y_mean)
        self.Rp[...] = 0.0
        self.Rp[self._diag] = noise / signal
        self.W[...] = 0.0
        self.t[0] = 0
        n = self.config.n_inputs
        self.hyper[:n], self.hyper[n:2 * n], self.hyper[2 * n:] = x_mean, ell, (signal, noise)
        self.stage = len(self.config.calib)

    def _unpacked(self) -> np.ndarray:
        D = self.config.n_features
        Rz = np.zeros((D, D + self.config.n_joints))
        Rz[packed_index(*Rz.shape)] = self.Rp
        return Rz

    @property
    def R(self) -> np.ndarray:
        """The Cholesky factor R (D, D), R^T R = A (eq. G2): a new array."""
        return self._unpacked()[:, :self.config.n_features]

    @property
    def z(self) -> np.ndarray:
        """z_j = R^-T b_j as columns (D, J): a new array."""
        return self._unpacked()[:, self.config.n_features:]

    @property
    def calibrated(self) -> bool:
        return self.stage == len(self.config.calib)

    @property
    def ridge(self) -> float:
        """lambda of eq. G2."""
        signal, noise = self.hyper[-2:]
        return float((noise / signal) ** 2)

    @property
    def fitting(self) -> bool:
        """A background kernel fit is under way."""
        return self._fitting is not None

    def _calibrate(self) -> None:
        """Fit the kernel on the window so far (eq. G6), in a thread with background_fit,
        and learn the window again with it."""
        c, n = self.config, self.calib_fill
        stage = sum(n >= k for k in c.calib)
        pick = np.linspace(0, n - 1, min(n, c.fit_points)).round().astype(np.int64)
        fit = _Fit(self.calib_X[pick], self.calib_Y[pick], c.fit_iters, stage, self._token)
        if self.background_fit:
            self._fitting = fit
            fit.start()
        else:
            fit.run()
            self._use_fit(fit)

    def finish_fit(self, wait: bool = True) -> bool:
        """A background fit that has ended (or, with wait, the running one once it ends)
        takes effect; True if one did."""
        fit = self._fitting
        if fit is None or (not wait and fit.is_alive()):
            return False
        fit.join()
        self._fitting = None
        if fit.token != self._token:
            return False  # the calibration state was replaced meanwhile (rollback, load)
        self._use_fit(fit)
        return True

    def _use_fit(self, fit: _Fit) -> None:
        if fit.error is not None:
            raise fit.error
        h = fit.result
        self.set_hyperparameters(h["x_mean"], h["length_scales"], h["signal"], h["noise"],
                                 h["y_mean"])
        self.stage = fit.stage
        n = self.calib_fill
        self._learn(self.calib_X[:n], self.calib_Y[:n])

    # -- river-style API --------------------------------------------------------------------
    def predict_one(self, x: np.ndarray, model: ISSGPRModel | None = None) -> np.ndarray:
        """Eq. G5 for one sample; returns a view of an internal buffer (copy to keep it).
        With `model` it predicts from that copy; one thread at a time."""
        self._x1[:] = x
        m = self if model is None else model
        K.predict_one(m.P, m.c, self.scale, m.W, m.y_mean, self._x1, self._phi1, self._y1)
        return self._y1

    def predict_many(self, X: np.ndarray, model: ISSGPRModel | None = None) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float64)
        m = self if model is None else model
        out = np.zeros((X.shape[0], self.config.n_joints))
        phi = np.zeros(self.config.n_features)
        for i in range(X.shape[0]):
            K.predict_one(m.P, m.c, self.scale, m.W, m.y_mean, X[i], phi, out[i])
        return out

    def learn_many(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """Test then train on a batch; returns the per-output MSE before the update (a new
        array). Before the first fit the prediction is the mean of the targets so far."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        Y = np.ascontiguousarray(Y, dtype=np.float64)
        self.n_steps += 1
        self.n_samples += len(X)
        self.finish_fit(wait=False)
        if self.calibrated:
            return self._learn(X, Y).copy()
        loss = self._learn(X, Y).copy() if self.stage else np.mean((Y - self.y_mean) ** 2, 0)
        fill = self.calib_fill
        take = min(len(X), len(self.calib_X) - fill)  # beyond: only the kernel of before
        self.calib_X[fill:fill + take] = X[:take]
        self.calib_Y[fill:fill + take] = Y[:take]
        self.calib_fill = fill = fill + take
        if not self.stage:
            np.copyto(self.y_mean, self.calib_Y[:fill].mean(0))
        if not self.fitting and fill >= self.config.calib[self.stage]:
            self._calibrate()
            if take < len(X) and not self.fitting:
                self._learn(X[take:], Y[take:])
        return loss

    def _learn(self, X, Y) -> np.ndarray:
        f = self.config.forget
        K.learn(self.P, self.c, self.scale, X, Y, self.y_mean, self.Rp, self._Wp, f,
                (1.0 - f) * self.ridge * self.config.n_features, self.t, self._V, self._ws,
                self._acc, self._pred, self._loss)
        return self._loss

    def model_copy(self) -> ISSGPRModel:
        return ISSGPRModel(self.P.copy(), self.c.copy(), self.W.copy(), self.y_mean.copy())

    def copy_model_into(self, out: ISSGPRModel) -> None:
        out.assign(self.P, self.c, self.W, self.y_mean)

    # -- the Learner protocol of rtlearn.service (rtlearn.learner.api) --------------------
    CONTEXT = ("P", "c", "hyper", "Rp", "W", "y_mean", "t")

    def _context(self) -> dict[str, np.ndarray]:
        d = {k: getattr(self, k) for k in self.CONTEXT}
        d.update({f"resid.{k}": v for k, v in self.resid.arrays().items()})
        return d

    def network_state(self) -> dict[str, np.ndarray]:
        """One payload context: the whole model, its kernel included (a copy)."""
        return {k: np.array(v, copy=True) for k, v in self._context().items()}

    def set_network_state(self, d: dict, scope: str = "all") -> None:
        """Load a network_state. Both scopes load all of it: a context owns the whole model
        (the kernel is the same in every context fitted after the calibration; a context
        left during it keeps the kernel it was learned with)."""
        if scope not in ("all", "context"):
            raise ValueError(f"unknown scope {scope!r}")
        d = _packed(d)
        dst = self._context()
        for k, v in dst.items():
            if k not in d:
                raise ValueError(f"state {k}: missing (not an I-SSGPR model)")
            if np.shape(d[k]) != v.shape:
                raise ValueError(f"state {k}: shape {np.shape(d[k])}, expected {v.shape}")
        for k, v in dst.items():
            np.copyto(v, d[k])

    def batch_loss(self, X: np.ndarray, Y: np.ndarray, d: dict | None = None) -> float:
        """Mean MSE over joints of a batch, predicted by the live model or by the model `d`
        (a network_state); changes nothing."""
        model = None if d is None else ISSGPRModel(*(np.asarray(d[k]) for k in (
            "P", "c", "W", "y_mean")))
        return float(np.mean((self.predict_many(X, model) - Y) ** 2))

    def memory_state(self) -> dict[str, np.ndarray]:
        """What every context shares: the calibration (stage, the window so far; a copy)."""
        n = self.calib_fill
        return {"calib.counts": np.array([self.stage, n], dtype=np.int64),
                "calib.X": self.calib_X[:n].copy(), "calib.Y": self.calib_Y[:n].copy()}

    def set_memory_state(self, d: dict, transfer: bool = True) -> None:
        """Load a memory_state (`transfer` has no meaning here: nothing is learned about
        learning); a fit under way lapses."""
        stage, n = (int(v) for v in np.asarray(d["calib.counts"]))
        X, Y = np.asarray(d["calib.X"]), np.asarray(d["calib.Y"])
        if not (0 <= stage <= len(self.config.calib) and 0 <= n <= len(self.calib_X)
                and X.shape == (n, self.calib_X.shape[1]) and Y.shape == (n, self.calib_Y.shape[1])):
            raise ValueError(f"calibration state of stage {stage} with {n} samples, window "
                             f"{X.shape} / {Y.shape}, does not fit this I-SSGPR")
        self.stage, self.calib_fill = stage, n
        self.calib_X[:n], self.calib_Y[:n] = X, Y
        self._token += 1
        self._fitting = None

    def is_finite(self) -> bool:
        return bool(np.isfinite(self.W).all() and np.isfinite(self.y_mean).all())

    def set_lr(self, lr: float) -> None:
        raise ValueError("I-SSGPR has no learning rate (its weights are the exact least-squares "
                         "solution); how fast it adapts is [learner] issgpr.forget")

    def set_memory_learning(self, on: bool) -> None:
        raise ValueError("I-SSGPR has no memory of learning rates to freeze or resume")

    def rates(self) -> dict[str, np.ndarray]:
        return {}

    def layer_rates(self) -> tuple[str, np.ndarray]:
        """No layers, no rates: (name, an (n_joints, 0, 2) array), as OnlineLearner's."""
        return "none", np.zeros((self.config.n_joints, 0, 2))

    def options(self) -> dict:
        """What `ctl options` could change: nothing (no rate, no memory)."""
        return {"lr": None, "memory": None, "forget": self.config.forget}

    def nbytes(self) -> int:
        """Bytes of learner state (the calibration window included)."""
        return sum(a.nbytes for a in (self.omega, self.P, self.c, self.Rp, self.W,
                                      self.y_mean, self.hyper, self.calib_X, self.calib_Y))

    # -- state ------------------------------------------------------------------------------
    ARRAYS = ("omega", "P", "c", "Rp", "W", "y_mean", "t", "hyper", "calib_X", "calib_Y")

    def save(self, path) -> None:
        arrays = {k: getattr(self, k) for k in self.ARRAYS}
        arrays.update({f"resid.{k}": v for k, v in self.resid.arrays().items()})
        arrays["counters"] = np.array([self.n_steps, self.n_samples, self.calib_fill,
                                       self.stage], dtype=np.int64)
        save_state(path, STATE_KIND, STATE_VERSION,
                   {"config": json.loads(json.dumps(self.config.to_dict()))}, arrays)

    @classmethod
    def load(cls, path) -> "ISSGPR":
        meta, arrays = load_state(path, STATE_KIND, (1, 2, STATE_VERSION))
        learner = cls(ISSGPRConfig.from_dict(meta["config"]))
        if "R" in arrays:  # version 1 kept b: z = R^-T b
            R = arrays["R"]
            arrays["Rz"] = np.hstack([R, np.linalg.solve(R.T, arrays["B"].T)])
        arrays = _packed(arrays)
        for k in cls.ARRAYS:
            dst = getattr(learner, k)
            if k.startswith("calib_") and len(arrays[k]) <= len(dst):
                dst = dst[:len(arrays[k])]  # version 1 had room for calib[-1] samples only
            if arrays[k].shape != dst.shape:
                raise ValueError(f"{path}: {k} has shape {arrays[k].shape}, expected {dst.shape}")
            np.copyto(dst, arrays[k])
        for k, v in learner.resid.arrays().items():
            if f"resid.{k}" in arrays:  # (version 1 had none: the screen starts afresh)
                np.copyto(v, arrays[f"resid.{k}"])
        (learner.n_steps, learner.n_samples, learner.calib_fill,
         learner.stage) = (int(v) for v in arrays["counters"])
        return learner


def _packed(d: dict) -> dict:
    """d with a full [R z] (state versions 1 and 2, contexts of daemon snapshots written by
    them) as Rp."""
    if "Rz" not in d or "Rp" in d:
        return d
    Rz = np.asarray(d["Rz"])
    if Rz.ndim != 2 or Rz.shape[1] <= Rz.shape[0]:
        raise ValueError(f"state Rz: shape {Rz.shape}, not [R z] (D, D + J)")
    return {**{k: v for k, v in d.items() if k != "Rz"}, "Rp": pack(Rz)}
