"""Plain-numpy references, written apart from the kernels and kept obviously correct.

They evaluate every kernel over all K centres (no truncation), loop over steps in Python,
and follow docs/algorithm.md line by line.
"""

import math

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
    """Memory of learning rates for one parameter group, every centre evaluated; meta "gd",
    "adam" or "log" (w <- w exp(beta Delta)); lo, hi: absolute bounds of the rates."""

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
            # the authors' (torch) form: eps on the uncorrected sqrt(v)
            scale = np.sqrt(1 - 0.999 ** self.t) / (1 - 0.9 ** self.t)
            delta = scale * self.m / (np.sqrt(self.v) + 1e-8)
        if self.meta == "log":
            self.w = np.clip(self.w * np.exp(self.beta * delta), self.lo, self.hi)
        else:
            self.w = np.clip(self.w + self.beta * delta, self.lo, self.hi)
        self.prev = x
        return self.rates(x) * u


def authors_memory_descent(grad, theta0, steps, groups, meta="adam", K=100, C=10.0, lr0=1e-3,
                           beta=1e-3, b1=0.9, b2=0.999, eps=1e-8, lo=1e-9, hi=1.0):
    """GD scaled by a memory of learning rates per group, step for step as the authors'
    released code does it (ALGORITHM.md section 7), in scalar Python over every centre.

    One step: g = clip(grad(theta), -C, C); g_prev <- the previous g (0 at the first step);
    Delta_k = mean over the group of clip(g_i g_prev_i, -1, 1) psi_k(g_prev_i) (raw psi);
    w += beta Delta (meta "gd") or w += beta sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps)
    with Adam's moments m, v of Delta (meta "adam"); w clamped to [lo, hi];
    eta_i = sum_k psi_k(g_i) w_k / sum_k psi_k(g_i); theta_i -= eta_i g_i.
    Returns the parameters and the rates after each step, shape (steps, n) each, and the
    final memory values per group."""
    centres = [-C + 2.0 * C * k / (K - 1) for k in range(K)]
    sigma = 0.5 * (centres[1] - centres[0])

    def psi(x):
        return [math.exp(-0.5 * (x - c) ** 2 / sigma ** 2) for c in centres]

    theta = [float(v) for v in theta0]
    n = len(theta)
    w = [[lr0] * K for _ in groups]
    m = [[0.0] * K for _ in groups]
    v = [[0.0] * K for _ in groups]
    g_cur = [0.0] * n
    thetas, rates = [], []
    for t in range(1, steps + 1):
        g_prev = g_cur
        g_cur = [min(C, max(-C, gi)) for gi in grad(np.array(theta))]
        eta = [0.0] * n
        for l, idx in enumerate(groups):
            delta = [0.0] * K
            for i in idx:
                s = min(1.0, max(-1.0, g_cur[i] * g_prev[i]))
                for k, p in enumerate(psi(g_prev[i])):
                    delta[k] += s * p / len(idx)
            for k in range(K):
                if meta == "adam":
                    m[l][k] = b1 * m[l][k] + (1 - b1) * delta[k]
                    v[l][k] = b2 * v[l][k] + (1 - b2) * delta[k] ** 2
                    scale = math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
                    step = scale * m[l][k] / (math.sqrt(v[l][k]) + eps)
                else:
                    step = delta[k]
                w[l][k] = min(hi, max(lo, w[l][k] + beta * step))
            for i in idx:
                p = psi(g_cur[i])
                eta[i] = sum(pk * wk for pk, wk in zip(p, w[l])) / sum(p)
        theta = [th - e * gi for th, e, gi in zip(theta, eta, g_cur)]
        thetas.append(theta)
        rates.append(eta)
    return np.array(thetas), np.array(rates), np.array(w)


class ScaleKey:
    """Eq. O5 for one group: the key over the bias-corrected running RMS of the keys of the
    steps before (the first step: its own RMS)."""

    def __init__(self, decay):
        self.decay, self.ms, self.t = decay, 0.0, 0

    def __call__(self, key):
        sq = float(np.mean(key ** 2))
        prev = sq if self.t == 0 else self.ms / (1 - self.decay ** self.t)
        self.ms = self.decay * self.ms + (1 - self.decay) * sq
        self.t += 1
        return key / np.sqrt(max(prev, 1e-30))


def payload_law(payload, seed):
    """Batches (10 x 4 inputs, 10 x 2 targets) of a fixed smooth two-joint law plus a
    payload offset: a stand-in torque stream whose payload changes are known."""
    rng = np.random.default_rng(seed)
    W = np.random.default_rng(0).normal(size=(4, 2))
    while True:
        X = rng.normal(size=(10, 4))
        yield X, np.tanh(X) @ W + payload * np.array([3.0, -2.0])
