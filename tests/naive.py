"""Plain-numpy references, written apart from the kernels and kept obviously correct.

They evaluate every kernel over all K centres (no truncation), loop over steps in Python,
and follow docs/algorithm.md line by line.
"""

import numpy as np


def mlp_forward(theta_j, dims, X):
    """One joint's network on a batch; returns the output (B,)."""
    a, p = X, 0
    for l in range(len(dims) - 1):
        n_in, n_out = dims[l], dims[l + 1]
        W = theta_j[p:p + n_in * n_out].reshape(n_out, n_in)
        p += n_in * n_out
        b = theta_j[p:p + n_out]
        p += n_out
        a = a @ W.T + b
        if l < len(dims) - 2:
            a = np.maximum(a, 0.0)
    return a[:, 0]


def mse(theta_j, dims, X, y):
    return np.mean((mlp_forward(theta_j, dims, X) - y) ** 2)


def logistic(theta_j, dims, X, y):
    z = mlp_forward(theta_j, dims, X)
    return np.mean(np.logaddexp(0.0, z) - y * z)


class Adam:
    def __init__(self, n, lr, b1=0.9, b2=0.999, eps=1e-8):
        self.m, self.v, self.t = np.zeros(n), np.zeros(n), 0
        self.lr, self.b1, self.b2, self.eps = lr, b1, b2, eps

    def direction(self, g):
        self.t += 1
        self.m = self.b1 * self.m + (1 - self.b1) * g
        self.v = self.b2 * self.v + (1 - self.b2) * g * g
        mhat = self.m / (1 - self.b1 ** self.t)
        vhat = self.v / (1 - self.b2 ** self.t)
        return mhat / (np.sqrt(vhat) + self.eps)


class Hypergradient:
    """Baydin et al.: alpha_t = alpha_{t-1} + beta * g_t . u_{t-1}; step alpha_t * u_t."""

    def __init__(self, n, lr, beta):
        self.alpha, self.beta, self.u_prev = lr, beta, np.zeros(n)

    def step(self, g, u):
        self.alpha = self.alpha + self.beta * float(np.dot(g, self.u_prev))
        self.u_prev = u.copy()
        return self.alpha * u


class Memory:
    """Memory of learning rates for one parameter group, every centre evaluated."""

    def __init__(self, n, K=100, C=10.0, width_ratio=0.5, lr0=1e-3, beta=1e-3, meta="adam",
                 normalized=False, lo=1e-9, hi=1.0):
        self.c = np.linspace(-C, C, K)
        self.h = width_ratio * (self.c[1] - self.c[0])
        self.C, self.w = C, np.full(K, lr0)
        self.beta, self.meta, self.normalized, self.lo, self.hi = beta, meta, normalized, lo, hi
        self.prev = np.zeros(n)
        self.m, self.v, self.t = np.zeros(K), np.zeros(K), 0

    def psi(self, x):
        return np.exp(-((x[:, None] - self.c[None, :]) ** 2) / (2 * self.h ** 2))

    def rates(self, x):
        p = self.psi(np.clip(x, -self.C, self.C))
        return p @ self.w / p.sum(axis=1)

    def step(self, key, u):
        """Returns eta * u after learning from sign agreement of key with the previous key."""
        x = np.clip(key, -self.C, self.C)
        s = np.clip(x * self.prev, -1.0, 1.0)
        phi = self.psi(self.prev)
        if self.normalized:
            phi = phi / phi.sum(axis=1, keepdims=True)
        delta = (phi * s[:, None]).mean(axis=0)
        if self.meta == "adam":
            self.t += 1
            self.m = 0.9 * self.m + 0.1 * delta
            self.v = 0.999 * self.v + 0.001 * delta ** 2
            delta = (self.m / (1 - 0.9 ** self.t)) / (np.sqrt(self.v / (1 - 0.999 ** self.t)) + 1e-8)
        self.w = np.clip(self.w + self.beta * delta, self.lo, self.hi)
        self.prev = x
        return self.rates(x) * u
