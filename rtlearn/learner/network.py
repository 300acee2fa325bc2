"""One MLP per joint, all joints in one parameter array (kernels: rtlearn.kernels.mlp)."""

from __future__ import annotations

import numpy as np

from ..kernels import mlp as K

LOSSES = {"mse": K.LOSS_MSE, "logistic": K.LOSS_LOGISTIC}


class MLPStack:
    """J networks n_inputs -> hidden... -> 1 (ReLU), parameters theta of shape (J, P).

    Parameter groups (one memory each): every weight matrix and every bias vector of every
    joint's network, in memory order, as in the authors' code (one memory per tensor).
    """

    def __init__(self, n_joints: int, n_inputs: int, hidden: tuple[int, ...], batch_size: int,
                 loss: str = "mse", seed: int = 0, dtype=np.float64):
        if n_joints < 1 or n_inputs < 1 or batch_size < 1 or any(h < 1 for h in hidden):
            raise ValueError("network sizes must be positive")
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose from {', '.join(LOSSES)}")
        self.n_joints, self.n_inputs, self.hidden = n_joints, n_inputs, tuple(hidden)
        self.loss_kind = LOSSES[loss]
        self.dims = np.array([n_inputs, *hidden, 1], dtype=np.int64)
        self.n_params = K.n_params(self.dims)
        self.theta = np.zeros((n_joints, self.n_params), dtype)  # float32 or float64
        self.grad = np.zeros_like(self.theta)
        self.bounds = self._group_bounds()
        # Flat indices of every joint's output layer (W and b): what a payload context owns.
        head = int(self.dims[-2]) + 1
        self.head = np.concatenate([np.arange((j + 1) * self.n_params - head,
                                              (j + 1) * self.n_params)
                                    for j in range(n_joints)]).astype(np.int64)
        width = int(self.dims.sum())
        self.acts = np.zeros((batch_size, width), dtype)
        self.deltas = np.zeros((batch_size, width), dtype)
        self._acts_one = np.zeros(width, dtype)
        self.loss = np.zeros(n_joints)
        self.reset(seed)

    def _group_bounds(self) -> np.ndarray:
        sizes = []
        for l in range(len(self.dims) - 1):
            sizes += [int(self.dims[l + 1] * self.dims[l]), int(self.dims[l + 1])]
        per_joint = np.cumsum([0, *sizes])
        offsets = [per_joint[:-1] + j * self.n_params for j in range(self.n_joints)]
        return np.append(np.concatenate(offsets), self.n_joints * self.n_params).astype(np.int64)

    def reset(self, seed: int) -> None:
        """He-normal weights for ReLU layers, zero biases, a small output layer."""
        rng = np.random.default_rng(seed)
        for j in range(self.n_joints):
            p = 0
            for l in range(len(self.dims) - 1):
                n_in, n_out = int(self.dims[l]), int(self.dims[l + 1])
                std = np.sqrt(2.0 / n_in) if l < len(self.dims) - 2 else np.sqrt(1.0 / n_in)
                self.theta[j, p:p + n_in * n_out] = rng.normal(0.0, std, n_in * n_out)
                p += n_in * n_out
                self.theta[j, p:p + n_out] = 0.0
                p += n_out

    def loss_grad(self, X, Y, norm) -> np.ndarray:
        """Per-joint batch loss before any update; fills self.grad."""
        B = X.shape[0]
        if B > self.acts.shape[0]:
            self.acts = np.zeros((B, self.acts.shape[1]), self.theta.dtype)
            self.deltas = np.zeros_like(self.acts)
        K.mlp_loss_grad(self.theta, self.dims, X, Y, norm.x_mean, norm.x_scale, norm.y_mean,
                        norm.y_scale, self.loss_kind, self.acts, self.deltas, self.grad, self.loss)
        return self.loss

    def predict_into(self, X, norm, out, theta=None) -> None:
        theta = self.theta if theta is None else theta
        if X.shape[0] == 1:
            # The per-packet path: the register-blocked one-sample kernel, on 1-D row views.
            K.mlp_predict_one(theta, self.dims, X[0], norm.x_mean, norm.x_scale, norm.y_mean,
                              norm.y_scale, self._acts_one, out[0])
            return
        acts = np.zeros((X.shape[0], self.acts.shape[1]), self.theta.dtype)
        K.mlp_predict(theta, self.dims, X, norm.x_mean, norm.x_scale, norm.y_mean, norm.y_scale,
                      acts, out)


class Normalizer:
    """Running standardisation of inputs and/or targets (eq. N4). mode: none | input | both."""

    MODES = ("none", "input", "both")

    def __init__(self, n_inputs: int, n_outputs: int, mode: str):
        if mode not in self.MODES:
            raise ValueError(f"unknown normalize mode {mode!r}; choose from {', '.join(self.MODES)}")
        self.mode = mode
        self.x_count, self.y_count = np.zeros(1), np.zeros(1)  # samples seen by each side
        self.x_mean, self.x_m2 = np.zeros(n_inputs), np.zeros(n_inputs)
        self.y_mean, self.y_m2 = np.zeros(n_outputs), np.zeros(n_outputs)
        self.x_scale = np.ones(n_inputs)   # 1 / std
        self.y_scale = np.ones(n_outputs)  # std

    def observe(self, X, Y) -> None:
        if self.mode == "none":
            return
        self.x_count[0] = K.running_moments(X, self.x_count[0], self.x_mean, self.x_m2)
        # Standard deviations below the floor (constant inputs) are not amplified.
        np.divide(1.0, np.sqrt(np.maximum(self.x_m2 / self.x_count[0], 1e-6)), out=self.x_scale)
        if self.mode == "both":
            self.y_count[0] = K.running_moments(Y, self.y_count[0], self.y_mean, self.y_m2)
            np.sqrt(np.maximum(self.y_m2 / self.y_count[0], 1e-6), out=self.y_scale)

    INPUT_KEYS = ("x_count", "x_mean", "x_m2", "x_scale")

    def arrays(self) -> dict:
        """Input statistics (INPUT_KEYS: the robot's state space, the same for every payload)
        and target statistics (the torques, which a payload changes)."""
        return {"x_count": self.x_count, "x_mean": self.x_mean, "x_m2": self.x_m2,
                "x_scale": self.x_scale, "y_count": self.y_count, "y_mean": self.y_mean,
                "y_m2": self.y_m2, "y_scale": self.y_scale}
