"""I-SSGPR kernels: random Fourier features, the blocked Cholesky update with forgetting, the
back substitution for the weights, one-sample prediction (docs/algorithm.md, "I-SSGPR").

Layout: `P` (D/2, n) and `c` (D/2) fold the input standardisation, the length scales and the
random frequencies into one affine map, u = P x - c (eq. G1); `Rz` (D, D + J) is the
Cholesky factor R (upper triangular, R^T R = A, eq. G2, shared by all outputs) with
z = R^-T b_j of every output appended as J more columns, so that one rotation updates both
(QR-RLS); `W` (J, D) the weights. Explicit loops: np.dot / @ need scipy in nopython mode.
"""

import math

import numpy as np
from numba import njit

from . import JIT

CHUNK = 16  # samples per pass over Rz (each pass reads and writes the whole factor once)


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
def rotate(r, v, cs, sn):
    """One Givens rotation of two row segments in place. A kernel of its own, called on
    slices: on rows of one 2-D array LLVM could not prove them apart and did not vectorise
    (3x slower)."""
    for j in range(r.shape[0]):
        t = r[j]
        u = v[j]
        r[j] = cs * t + sn * u
        v[j] = cs * u - sn * t


@njit(**JIT)
def dot(a, b):
    s = 0.0
    for k in range(a.shape[0]):
        s += a[k] * b[k]
    return s


@njit(**JIT)
def chol_update(Rz, V, nv, sqrt_scale):
    """Eq. G3 for a block of rows: Rz' with Rz'^T Rz' = s^2 Rz^T Rz + sum_b v_b v_b^T over
    the first nv rows v_b of V (overwritten), s = sqrt_scale, one pass over Rz: each row is
    scaled by s as it is reached, then rotated against every v_b in turn (Givens, the
    diagonal kept > 0). A v_b that is zero at a row's diagonal is zero up to it (it has not
    been rotated in yet): the rotation is the identity and is skipped, so the prior's
    one-coordinate vectors of eq. G3' cost only the rows from their coordinate on."""
    D = Rz.shape[0]
    L = Rz.shape[1]
    for k in range(D):
        rk = Rz[k]
        if sqrt_scale != 1.0:
            for j in range(k, L):
                rk[j] *= sqrt_scale
        for b in range(nv):
            vb = V[b]
            x = vb[k]
            if x == 0.0:
                continue
            d = rk[k]
            r = math.sqrt(d * d + x * x)
            cs = d / r
            sn = x / r
            rk[k] = r
            rotate(rk[k + 1:], vb[k + 1:], cs, sn)


@njit(**JIT)
def solve_weights(Rz, W):
    """Eq. G4: R w_j = z_j (back substitution, the z_j are Rz's last J columns), all outputs
    per row of R."""
    D = Rz.shape[0]
    J = W.shape[0]
    for i in range(D - 1, -1, -1):
        ri = Rz[i]
        r = ri[i + 1:D]
        inv = 1.0 / ri[i]
        for j in range(J):
            w = W[j]
            w[i] = (ri[D + j] - dot(r, w[i + 1:])) * inv


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
def learn(P, c, scale, X, Y, y_mean, Rz, W, forget, rho, t, V, pred, loss):
    """One batch, test then train: loss_j = mean_b (y_bj - yhat_bj)^2 with the weights before
    the batch (eq. G5). Then, CHUNK samples at a time, the same A and b as one sample after
    the other would give: per sample A <- f A + phi phi^T, b_j <- f b_j + phi (y_j - m_j)
    (eq. G2, G3), then A <- A + rho e_k e_k^T, k = t mod D, t += 1 (eq. G3'; t is a 1-element
    array): over a chunk of n samples R is scaled by f^(n/2) and sample i's two vectors by
    f^((n-1-i)/2). Then W from the new R and z (eq. G4). V: (2 CHUNK, D + J) workspace."""
    n_b = X.shape[0]
    J = Y.shape[1]
    D = Rz.shape[0]
    L = Rz.shape[1]
    for j in range(J):
        loss[j] = 0.0
    for c0 in range(0, n_b, CHUNK):
        n = min(CHUNK, n_b - c0)
        for i in range(n):
            b = c0 + i
            phi = V[i, :D]
            predict_one(P, c, scale, W, y_mean, X[b], phi, pred)
            w = math.sqrt(forget ** (n - 1 - i))
            for k in range(D):
                phi[k] *= w
            for j in range(J):
                e = pred[j] - Y[b, j]
                loss[j] += e * e / n_b
                V[i, D + j] = w * (Y[b, j] - y_mean[j])
            inj = V[n + i]
            for k in range(L):
                inj[k] = 0.0
            if rho > 0.0:
                inj[(t[0] + i) % D] = w * math.sqrt(rho)
        t[0] += n
        chol_update(Rz, V, 2 * n, math.sqrt(forget ** n))
    solve_weights(Rz, W)
