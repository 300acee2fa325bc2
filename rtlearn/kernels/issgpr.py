"""I-SSGPR kernels: random Fourier features, the blocked Cholesky update with forgetting, the
back substitution for the weights, one-sample prediction (docs/algorithm.md, "I-SSGPR").

Layout: `P` (D/2, n) and `c` (D/2) fold the input standardisation, the length scales and the
random frequencies into one affine map, u = P x - c (eq. G1); `Rp` holds the Cholesky factor
R (upper triangular, R^T R = A, eq. G2, shared by all outputs) with z = R^-T b_j of every
output appended as J more columns, so that one rotation updates both (QR-RLS), packed by
rows: row k is [R_kk .. R_k,D-1, z_k,0 .. z_k,J-1], L - k numbers (L = D + J) from offset
k L - k (k - 1) / 2 (`row_offset`); `W` (J, D) the weights. Explicit loops: np.dot / @ need
scipy in nopython mode.
"""

import math

import numpy as np
from numba import njit

from . import JIT

CHUNK = 16  # samples per pass over Rp (each pass reads and writes the whole factor once)
TILE = 4    # rows of R rotated together: each vector element is loaded once per 4 rows
PAD = 3     # zero vectors that fill the last group of 4 (identity rotations)
RESCALE = 2.0 ** 64  # a vector's squared scale above this is folded back into its values


# sin and cos on [-pi/4, pi/4]: the minimax polynomials of fdlibm (k_sin.c, k_cos.c), after
# u = q pi/2 + r with pi/2 in three 33-bit parts (e_rem_pio2.c): q pi/2 is exact for
# |u| < LIMIT, so r is u's own remainder to rounding. Unlike math.sin / math.cos the loop
# vectorises (docs/algorithm.md, G1).
S1, S2, S3 = -1.66666666666666324348e-01, 8.33333333332248946124e-03, -1.98412698298579493134e-04
S4, S5, S6 = 2.75573137070700676789e-06, -2.50507602534068634195e-08, 1.58969099521155010221e-10
C1, C2, C3 = 4.16666666666666019037e-02, -1.38888888888741095749e-03, 2.48015872894767294178e-05
C4, C5, C6 = -2.75573143513906633035e-07, 2.08757232129817482790e-09, -1.13596475577881948265e-11
TWO_OVER_PI = 6.36619772367581382433e-01
PIO2_1, PIO2_2 = 1.57079632673412561417e+00, 6.07710050630396597660e-11
PIO2_3 = 2.02226624871116645580e-21
LIMIT = 2.0 ** 19


# without 'reassoc': the three-part reduction must be evaluated in its order
@njit(**dict(JIT, fastmath=JIT["fastmath"] - {"reassoc"}))
def cos_sin(u, c_out, scale):
    """Eq. G1's cos and sin: c_out[k] = scale cos(u[k]), u[k] <- scale sin(u[k]), every
    |u[k]| < LIMIT."""
    for k in range(u.shape[0]):
        v = u[k]
        q = math.floor(v * TWO_OVER_PI + 0.5)
        r = ((v - q * PIO2_1) - q * PIO2_2) - q * PIO2_3
        z = r * r
        sr = r + r * z * (S1 + z * (S2 + z * (S3 + z * (S4 + z * (S5 + z * S6)))))
        cr = 1.0 - 0.5 * z + z * z * (C1 + z * (C2 + z * (C3 + z * (C4 + z * (C5 + z * C6)))))
        h = 0.5 * q
        h1 = h + 0.5
        odd = q - 2.0 * math.floor(h) > 0.5                # q mod 2 = 1
        neg_s = h - 2.0 * math.floor(0.5 * h) > 0.75        # q mod 4 in {2, 3}
        neg_c = h1 - 2.0 * math.floor(0.5 * h1) > 0.75      # q mod 4 in {1, 2}
        sn = cr if odd else sr
        cs = sr if odd else cr
        c_out[k] = scale * (-cs if neg_c else cs)
        u[k] = scale * (-sn if neg_s else sn)


@njit(**JIT)
def features(P, c, scale, x, phi):
    """Eq. G1: phi(x) = scale [cos(u), sin(u)], u = P x - c, scale = 1 / sqrt(D/2)."""
    m = P.shape[0]
    n = P.shape[1]
    u = phi[m:]
    big = 0.0
    for k in range(m):
        row = P[k]
        s = -c[k]
        for i in range(n):
            s += row[i] * x[i]
        u[k] = s
        big = max(big, abs(s))
    if big < LIMIT:
        cos_sin(u, phi[:m], scale)
        return
    for k in range(m):  # far outside the data (or not finite): the library's reduction
        phi[k] = scale * math.cos(u[k])
        u[k] = scale * math.sin(u[k])


@njit(**JIT)
def row_offset(k, L):
    """Where row k of [R z] starts in Rp (eq. G2's factor packed by rows)."""
    return k * L - k * (k - 1) // 2


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
def scale_row(r, s):
    for j in range(r.shape[0]):
        r[j] *= s


@njit(**JIT)
def dot(a, b):
    s = 0.0
    for k in range(a.shape[0]):
        s += a[k] * b[k]
    return s


@njit(**JIT)
def givens_row(row, V, nv, k, sqrt_scale):
    """Eq. G3 for row k alone (`row` = its L - k numbers from the diagonal), standard Givens:
    the row scaled by s, then rotated against every v_b of V[:nv] with v_b[k] != 0 in turn
    (the diagonal kept > 0); a v_b that is zero at the diagonal has not been rotated in yet
    (eq. G3'): the identity, skipped."""
    L = V.shape[1]
    if sqrt_scale != 1.0:
        scale_row(row, sqrt_scale)
    for b in range(nv):
        vb = V[b]
        x = vb[k]
        if x == 0.0:
            continue
        d = row[0]
        r = math.sqrt(d * d + x * x)
        row[0] = r
        rotate(row[1:], vb[k + 1:L], d / r, x / r)


@njit(**JIT)
def rotate_element(t0, t1, t2, t3, u, C, a):
    """Eq. G3: one element u of vector a through the 4 rows' fast rotations (C[a, 2i : 2i + 2]
    = a, b of row i): t_i += a u, u += b t_i, row after row."""
    t0 += C[a, 0] * u
    u += C[a, 1] * t0
    t1 += C[a, 2] * u
    u += C[a, 3] * t1
    t2 += C[a, 4] * u
    u += C[a, 5] * t2
    t3 += C[a, 6] * u
    return t0, t1, t2, t3, u + C[a, 7] * t3


@njit(**JIT)
def rotate_tile(r0, r1, r2, r3, v0, v1, v2, v3, C, g, m0, m1, m2, m3):
    """Eq. G3: fast (square-root-free) Givens rotations of 4 rows of R against vectors g .. g+3, in
    the order of the row-by-row sweep (row i against a vector uses it after rows < i): per
    rotation t += a u, u += b t, 2 multiply-adds instead of 4 multiplies; each vector
    element is loaded and stored once for all 4 rows. The rows are multiplied by m_i as they
    are stored (their scale after the last group)."""
    for j in range(r0.shape[0]):
        t0, t1, t2, t3, v0[j] = rotate_element(r0[j], r1[j], r2[j], r3[j], v0[j], C, g)
        t0, t1, t2, t3, v1[j] = rotate_element(t0, t1, t2, t3, v1[j], C, g + 1)
        t0, t1, t2, t3, v2[j] = rotate_element(t0, t1, t2, t3, v2[j], C, g + 2)
        t0, t1, t2, t3, v3[j] = rotate_element(t0, t1, t2, t3, v3[j], C, g + 3)
        r0[j] = t0 * m0
        r1[j] = t1 * m1
        r2[j] = t2 * m2
        r3[j] = t3 * m3


@njit(**JIT)
def tile_rotations(T, E2t, na, sqrt_scale, C, M):
    """Eq. G3: the fast Givens parameters of a tile of 4 rows, worked out on its 4 x 4
    triangle T[:, :4] (R[k+i, k+c], true values) and the vectors' columns T[c, 4 + a] =
    v_a[k + c] (stored values, true value e_a v, E2t[a] = e_a^2). Row i starts as s R
    (scale d = s); rotating in v_a (x = e_a v[k+i]) with cos = r_prev / r, sin = x / r
    keeps t = R / d and u = v / e with d <- cos d, e <- e / cos: t += a u, u += b t with a
    = e^2 v / (d0 alpha0), b = -v d0 alpha0 / S (alpha0 = s R_ii, S = the running squared
    diagonal, d0 alpha0 / r = the row's scale after the rotation): no square root but one
    per row, no division chain from one rotation to the next. Fills C[a, 2i : 2i + 2], M[i]
    (the row's final scale), E2t (the vectors' scales after the tile), T (the rotated
    triangle and columns, rows still to be multiplied by M); False if a rotation would need
    cos < sin (the other type of fast rotation; the caller does the tile with standard
    rotations)."""
    for i in range(TILE):
        diag = T[i, i]
        da = sqrt_scale * sqrt_scale * diag
        S = (sqrt_scale * diag) * (sqrt_scale * diag)
        if not S > 0.0:
            return False
        for a in range(na):
            u = T[i, TILE + a]
            e2 = E2t[a]
            x2 = e2 * u * u
            if x2 > S:
                return False
            Sn = S + x2
            C[a, 2 * i] = e2 * u / da
            C[a, 2 * i + 1] = -u * da / Sn
            E2t[a] = e2 * Sn / S
            S = Sn
        r = math.sqrt(S)
        M[i] = da / r
        T[i, i] = r
        for c in range(i + 1, TILE):
            t = T[i, c]
            for a in range(na):
                u = T[c, TILE + a]
                t += C[a, 2 * i] * u
                T[c, TILE + a] = u + C[a, 2 * i + 1] * t
            T[i, c] = t
    return True


@njit(**JIT)
def vector(V, Z, b, lo, hi):
    """v_b's columns lo:hi, or a zero padding vector for b < 0."""
    if b < 0:
        return Z[-1 - b, lo:hi]
    return V[b, lo:hi]


@njit(**JIT)
def fold_scales(V, E2, nv, k):
    """v_b <- e_b v_b from column k on, e_b = 1: the stored vectors become true values."""
    L = V.shape[1]
    for b in range(nv):
        if E2[b] != 1.0:
            scale_row(V[b, k:L], math.sqrt(E2[b]))
            E2[b] = 1.0


@njit(**JIT)
def fast_tile(Rp, o, k, V, nv, sqrt_scale, ws):
    """Eq. G3 for rows k .. k+3 (row k at offset o) against the active vectors by fast Givens; False
    (nothing changed) if a rotation needs the other type."""
    E2, C, act, T, M, Z, E2t = ws
    L = V.shape[1]
    n = L - k
    na = 0
    for b in range(nv):
        if V[b, k] != 0.0 or V[b, k + 1] != 0.0 or V[b, k + 2] != 0.0 or V[b, k + 3] != 0.0:
            act[na] = b
            E2t[na] = E2[b]
            for c in range(TILE):
                T[c, TILE + na] = V[b, k + c]
            na += 1
    o1 = o + n
    o2 = o1 + n - 1
    o3 = o2 + n - 2
    r0 = Rp[o:o + n]
    r1 = Rp[o1:o1 + n - 1]
    r2 = Rp[o2:o2 + n - 2]
    r3 = Rp[o3:o3 + n - 3]
    for c in range(TILE):
        T[0, c] = r0[c]
    for c in range(1, TILE):
        T[1, c] = r1[c - 1]
    for c in range(2, TILE):
        T[2, c] = r2[c - 2]
    T[3, 3] = r3[0]
    if not tile_rotations(T, E2t, na, sqrt_scale, C, M):
        return False
    for c in range(TILE):
        r0[c] = T[0, c] * M[0] if c > 0 else T[0, 0]
    for c in range(1, TILE):
        r1[c - 1] = T[1, c] * M[1] if c > 1 else T[1, 1]
    for c in range(2, TILE):
        r2[c - 2] = T[2, c] * M[2] if c > 2 else T[2, 2]
    r3[0] = T[3, 3]
    for a in range(na):
        E2[act[a]] = E2t[a]
    pad = 0
    while (na + pad) % 4:
        act[na + pad] = -1 - pad
        for c in range(2 * TILE):
            C[na + pad, c] = 0.0
        pad += 1
    if na == 0:
        scale_row(r0[TILE:], M[0])
        scale_row(r1[TILE - 1:], M[1])
        scale_row(r2[TILE - 2:], M[2])
        scale_row(r3[TILE - 3:], M[3])
    for g in range(0, na + pad, 4):
        last = g + 4 >= na + pad
        lo = k + TILE
        rotate_tile(r0[TILE:], r1[TILE - 1:], r2[TILE - 2:], r3[TILE - 3:],
                    vector(V, Z, act[g], lo, L), vector(V, Z, act[g + 1], lo, L),
                    vector(V, Z, act[g + 2], lo, L), vector(V, Z, act[g + 3], lo, L), C, g,
                    M[0] if last else 1.0, M[1] if last else 1.0,
                    M[2] if last else 1.0, M[3] if last else 1.0)
    for a in range(na):
        b = act[a]
        if E2[b] > RESCALE:
            scale_row(V[b, k + TILE:L], math.sqrt(E2[b]))
            E2[b] = 1.0
    return True


@njit(**JIT)
def chol_update(Rp, D, V, nv, sqrt_scale, ws):
    """Eq. G3 in one pass over Rp: R'^T R' = s^2 R^T R + sum_b v_b v_b^T over the first nv rows
    v_b of V (overwritten; z rotated along), s = sqrt_scale. Rows 4 at a time by fast Givens
    (`tile_rotations`, `rotate_tile`): the vectors carry a scale each (E2, e^2) and a row's
    scale is applied as it is stored; a tile that would need the other type of fast
    rotation (cos < sin), and the last D mod 4 rows, take standard Givens (`givens_row`)
    after the scales are folded into the vectors. The same R' and z' as the standard sweep
    up to rounding. A v_b zero at a tile's 4 diagonal columns has not been rotated in yet
    (eq. G3'): left out of the tile. ws: `workspace(nv, D + J)`."""
    E2, Z = ws[0], ws[5]
    L = V.shape[1]
    for b in range(nv):
        E2[b] = 1.0
    for p in range(PAD):
        for j in range(L):
            Z[p, j] = 0.0
    k = 0
    o = 0
    while k < D:
        if k + TILE > D or not fast_tile(Rp, o, k, V, nv, sqrt_scale, ws):
            fold_scales(V, E2, nv, k)
            for i in range(min(TILE, D - k)):
                givens_row(Rp[o:o + L - k], V, nv, k, sqrt_scale)
                o += L - k
                k += 1
        else:
            o += TILE * (L - k) - TILE * (TILE - 1) // 2
            k += TILE


def workspace(n_vectors: int, L: int):
    """chol_update's scratch arrays for up to n_vectors vectors of length L."""
    m = n_vectors + PAD
    return (np.ones(m), np.zeros((m, 2 * TILE)), np.zeros(m, dtype=np.int64),
            np.zeros((TILE, TILE + m)), np.zeros(TILE), np.zeros((PAD, L)), np.ones(m))


@njit(**JIT)
def add_products(s0, s1, s2, s3, x, u0, u1, u2, u3):
    return s0 + x * u0, s1 + x * u1, s2 + x * u2, s3 + x * u3


@njit(**JIT)
def dots_tile(r0, r1, r2, r3, w0, w1, w2, w3, acc, g):
    """Eq. G4's products: acc[i, g + j] = r_i . w_j for 4 rows and 4 weight vectors: each
    element loaded once for 4 products, 16 sums in registers."""
    a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = 0.0
    c0 = c1 = c2 = c3 = d0 = d1 = d2 = d3 = 0.0
    for k in range(r0.shape[0]):
        u0 = w0[k]
        u1 = w1[k]
        u2 = w2[k]
        u3 = w3[k]
        a0, a1, a2, a3 = add_products(a0, a1, a2, a3, r0[k], u0, u1, u2, u3)
        b0, b1, b2, b3 = add_products(b0, b1, b2, b3, r1[k], u0, u1, u2, u3)
        c0, c1, c2, c3 = add_products(c0, c1, c2, c3, r2[k], u0, u1, u2, u3)
        d0, d1, d2, d3 = add_products(d0, d1, d2, d3, r3[k], u0, u1, u2, u3)
    acc[0, g], acc[0, g + 1], acc[0, g + 2], acc[0, g + 3] = a0, a1, a2, a3
    acc[1, g], acc[1, g + 1], acc[1, g + 2], acc[1, g + 3] = b0, b1, b2, b3
    acc[2, g], acc[2, g + 1], acc[2, g + 2], acc[2, g + 3] = c0, c1, c2, c3
    acc[3, g], acc[3, g + 1], acc[3, g + 2], acc[3, g + 3] = d0, d1, d2, d3


@njit(**JIT)
def solve_weights(Rp, W, acc):
    """Eq. G4: R w_j = z_j (back substitution, the z_j at the end of each packed row). Rows
    4 at a time: their products with the weights already found (columns below the tile)
    in one pass (`dots_tile`), then the tile's own 4 x 4 triangle. W: (J rounded up to 4,
    D), the rows beyond J zero; acc: (4, W.shape[0]) scratch."""
    Jp = W.shape[0]
    D = W.shape[1]
    L = (Rp.shape[0] + D * (D - 1) // 2) // D
    J = L - D
    top = D
    while top > 0:
        lo = max(top - TILE, 0)
        for i in range(TILE):
            for j in range(Jp):
                acc[i, j] = 0.0
        if top - lo == TILE:
            n = D - top
            o0 = row_offset(lo, L) + TILE
            o1 = row_offset(lo + 1, L) + TILE - 1
            o2 = row_offset(lo + 2, L) + TILE - 2
            o3 = row_offset(lo + 3, L) + TILE - 3
            for g in range(0, Jp, 4):
                dots_tile(Rp[o0:o0 + n], Rp[o1:o1 + n], Rp[o2:o2 + n], Rp[o3:o3 + n],
                          W[g, top:], W[g + 1, top:], W[g + 2, top:], W[g + 3, top:], acc, g)
        else:
            for i in range(top - lo):
                o = row_offset(lo + i, L) + top - lo - i
                for j in range(J):
                    acc[i, j] = dot(Rp[o:o + D - top], W[j, top:])
        for row in range(top - 1, lo - 1, -1):
            i = row - lo
            o = row_offset(row, L)
            inv = 1.0 / Rp[o]
            for j in range(J):
                s = acc[i, j]
                for c in range(row + 1, top):
                    s += Rp[o + c - row] * W[j, c]
                W[j, row] = (Rp[o + D - row + j] - s) * inv
        top = lo


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
def learn(P, c, scale, X, Y, y_mean, Rp, W, forget, rho, t, V, ws, acc, pred, loss):
    """One batch, test then train: loss_j = mean_b (y_bj - yhat_bj)^2 with the weights before
    the batch (eq. G5). Then, CHUNK samples at a time, the same A and b as one sample after
    the other would give: per sample A <- f A + phi phi^T, b_j <- f b_j + phi (y_j - m_j)
    (eq. G2, G3), then A <- A + rho e_k e_k^T, k = t mod D, t += 1 (eq. G3'; t is a 1-element
    array): over a chunk of n samples R is scaled by f^(n/2) and sample i's two vectors by
    f^((n-1-i)/2). Then W from the new R and z (eq. G4). W: (J rounded up to 4, D), rows
    beyond J zero; V: (2 CHUNK, D + J) workspace, ws: `workspace(2 CHUNK, D + J)`, acc: (4,
    W.shape[0])."""
    n_b = X.shape[0]
    J = Y.shape[1]
    D = W.shape[1]
    L = V.shape[1]
    Wj = W[:J]
    for j in range(J):
        loss[j] = 0.0
    for c0 in range(0, n_b, CHUNK):
        n = min(CHUNK, n_b - c0)
        for i in range(n):
            b = c0 + i
            phi = V[i, :D]
            predict_one(P, c, scale, Wj, y_mean, X[b], phi, pred)
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
        chol_update(Rp, D, V, 2 * n, math.sqrt(forget ** n), ws)
    solve_weights(Rp, W, acc)
