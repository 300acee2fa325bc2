"""I-SSGPR kernels: random Fourier features, the rank-1 Cholesky update with forgetting, the
triangular solves for the weights, one-sample prediction (docs/algorithm.md, "I-SSGPR").

Layout: `P` (D/2, n) and `c` (D/2) fold the input standardisation, the length scales and the
random frequencies into one affine map, u = P x - c (eq. G1); `R` (D, D) is upper triangular
with R^T R = A (eq. G2), shared by all outputs; `B` (J, D) holds b_j = Phi^T y_j per output,
`W` (J, D) the weights. Explicit loops: np.dot / @ need scipy in nopython mode.
"""

import math

import numpy as np
from numba import njit

from . import JIT


@njit(**JIT)
def features(P, c, scale, x, phi):
    """Eq. G1: phi(x) = scale [cos(u), sin(u)], u = P x - c, scale = 1 / sqrt(D/2)."""
    m = P.shape[0]
    n = P.shape[1]
    for k in range(m):
        row = P[k]
        u = -c[k]
        for i in range(n):
            u += row[i] * x[i]
        phi[k] = scale * math.cos(u)
        phi[m + k] = scale * math.sin(u)


@njit(**JIT)
def chol_update(R, v, sqrt_forget, start):
    """Eq. G3: R' upper triangular with R'^T R' = f R^T R + v v^T, f = sqrt_forget^2, in place
    (v is overwritten). Givens form: row k is scaled by sqrt(f) as it is reached, then rotated
    against v; O(D^2). With v zero before `start` and f = 1, rows before it are unchanged and
    skipped (the prior's injections of eq. G3')."""
    n = R.shape[0]
    for k in range(start, n):
        rk = R[k]
        if sqrt_forget != 1.0:
            for j in range(k, n):
                rk[j] *= sqrt_forget
        d = rk[k]
        r = math.sqrt(d * d + v[k] * v[k])
        cs = r / d
        sn = v[k] / d
        rk[k] = r
        inv = 1.0 / cs
        for j in range(k + 1, n):
            rj = (rk[j] + sn * v[j]) * inv
            rk[j] = rj
            v[j] = cs * v[j] - sn * rj


@njit(**JIT)
def solve_weights(R, B, z, W):
    """Eq. G4: W_j = A^{-1} b_j by R^T z = b_j (forward) then R w_j = z (backward), per output."""
    n = R.shape[0]
    for j in range(B.shape[0]):
        for i in range(n):
            z[i] = B[j, i]
        for i in range(n):  # forward, by rows of R: z_i is final once rows < i are applied
            ri = R[i]
            zi = z[i] / ri[i]
            z[i] = zi
            for k in range(i + 1, n):
                z[k] -= ri[k] * zi
        w = W[j]
        for i in range(n - 1, -1, -1):
            ri = R[i]
            s = z[i]
            for k in range(i + 1, n):
                s -= ri[k] * w[k]
            w[i] = s / ri[i]


@njit(**JIT)
def predict_one(P, c, scale, W, y_mean, x, phi, out):
    """Eq. G5: y_j = w_j^T phi(x) + m_j for every output j; writes into out, no allocation."""
    features(P, c, scale, x, phi)
    D = phi.shape[0]
    for j in range(W.shape[0]):
        w = W[j]
        s = y_mean[j]
        for k in range(D):
            s += w[k] * phi[k]
        out[j] = s


@njit(**JIT)
def learn(P, c, scale, X, Y, y_mean, R, B, W, sqrt_forget, rho, t, phi, v, z, pred, loss):
    """One batch, test then train: loss_j = mean_b (y_bj - yhat_bj)^2 with the weights before
    the batch (eq. G5); then per sample A <- f A + phi phi^T (eq. G3), A <- A + rho e_k e_k^T
    with k = t mod D, t += 1 (eq. G3'; t is a 1-element array) and b_j <- f b_j +
    phi (y_j - m_j) (eq. G2); then W from the new R and B (eq. G4)."""
    n_b = X.shape[0]
    J = Y.shape[1]
    D = phi.shape[0]
    f = sqrt_forget * sqrt_forget
    for j in range(J):
        loss[j] = 0.0
    for b in range(n_b):
        predict_one(P, c, scale, W, y_mean, X[b], phi, pred)
        for j in range(J):
            e = pred[j] - Y[b, j]
            loss[j] += e * e / n_b
        for k in range(D):
            v[k] = phi[k]
        chol_update(R, v, sqrt_forget, 0)
        if rho > 0.0:
            k0 = t[0] % D
            for k in range(k0, D):
                v[k] = 0.0
            v[k0] = math.sqrt(rho)
            chol_update(R, v, 1.0, k0)
        t[0] += 1
        for j in range(J):
            bj = B[j]
            dy = Y[b, j] - y_mean[j]
            for k in range(D):
                bj[k] = f * bj[k] + phi[k] * dy
    solve_weights(R, B, z, W)
