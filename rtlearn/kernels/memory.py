"""The memory of learning rates (docs/algorithm.md, eqs. M1-M5), O(P*m) per step.

Centres are uniform on [-C, C] with spacing s, kernels psi_k(x) = exp(-(x - c_k)^2 / (2 h^2)).
With p = (x + C) / s, cell = floor(p) and f = p - cell, the kernel of centre cell+j is
exp(-a (j - f)^2 / 2) with a = (s / h)^2, so only j in [-(R-1), R] are evaluated (every
skipped centre is at least R spacings away) and consecutive values follow by one multiply:
psi_{j+1} = psi_j * exp(a f) * exp(-a (j + 1/2)). Two exponentials per coordinate.
`ratios[j + R - 1]` holds exp(-a (j + 1/2)).
"""

import math

from numba import njit

from . import JIT

META_GD = 0
META_ADAM = 1


@njit(**JIT)
def _window(x, clip, inv_spacing, n_centres, radius, a, ratios, psi):
    """Eq. M1 on the truncated window: psi[0 .. 2R) for centres first .. first+2R-1; returns first.

    Entries whose centre falls outside 0..K-1 are set to 0.
    """
    p = (x + clip) * inv_spacing
    cell = int(math.floor(p))
    if cell > n_centres - 1:
        cell = n_centres - 1
    if cell < 0:
        cell = 0
    f = p - cell
    j0 = 1 - radius
    first = cell + j0
    val = math.exp(-0.5 * a * (j0 - f) * (j0 - f))
    step = math.exp(a * f)
    for n in range(2 * radius):
        k = first + n
        psi[n] = val if (k >= 0 and k < n_centres) else 0.0
        val = val * step * ratios[n]
    return first


@njit(**JIT)
def memory_step(key, u, key_prev, w, w_m, w_v, count, bounds, clip, inv_spacing, radius, a,
                ratios, normalized_signal, meta_kind, beta, b1, b2, eps, w_lo, w_hi, learn,
                psi, delta, eta_mean):
    """One memory step for every group: eqs. M3-M5 (learn), then M2 (predict and scale u).

    M3  s_i = clip(x_i * x_prev_i, -1, 1), x = clip(key, -C, C)
    M4  Delta_k = (1/D) sum_i phi_k(x_prev_i) s_i,  phi = psi (eq. 10) or psi / sum(psi)
    M5  w <- w + beta * Delta (MetaGD)  or  w <- w + beta * AdamDirection(Delta) (MemAdam),
        then w clamped to [w_lo, w_hi]
    M2  eta_i = sum_k psi_k(x_i) w_k / sum_k psi_k(x_i);  u_i <- eta_i * u_i
    `key` may alias `u`: each coordinate's key is read before its u is written.
    `key_prev` holds the clipped key of the previous step (zeros at the start: no update).
    """
    n_centres = w.shape[1]
    n_win = 2 * radius
    if learn:
        count[0] += 1.0
    c1 = 1.0 - b1 ** count[0]
    c2 = 1.0 - b2 ** count[0]
    for g in range(bounds.shape[0] - 1):
        lo = bounds[g]
        hi = bounds[g + 1]
        if learn:
            for k in range(n_centres):
                delta[k] = 0.0
            for i in range(lo, hi):
                x = key[i]
                if x > clip:
                    x = clip
                elif x < -clip:
                    x = -clip
                s = x * key_prev[i]
                if s == 0.0:
                    continue
                if s > 1.0:
                    s = 1.0
                elif s < -1.0:
                    s = -1.0
                first = _window(key_prev[i], clip, inv_spacing, n_centres, radius, a, ratios, psi)
                if normalized_signal:
                    tot = 0.0
                    for n in range(n_win):
                        tot += psi[n]
                    s = s / tot
                for n in range(n_win):
                    if psi[n] != 0.0:
                        delta[first + n] += psi[n] * s
            inv_d = 1.0 / (hi - lo)
            for k in range(n_centres):
                d = delta[k] * inv_d
                if meta_kind == META_ADAM:
                    w_m[g, k] = b1 * w_m[g, k] + (1.0 - b1) * d
                    w_v[g, k] = b2 * w_v[g, k] + (1.0 - b2) * d * d
                    d = (w_m[g, k] / c1) / (math.sqrt(w_v[g, k] / c2) + eps)
                val = w[g, k] + beta * d
                if val < w_lo:
                    val = w_lo
                elif val > w_hi:
                    val = w_hi
                w[g, k] = val
        eta_sum = 0.0
        for i in range(lo, hi):
            x = key[i]
            if x > clip:
                x = clip
            elif x < -clip:
                x = -clip
            first = _window(x, clip, inv_spacing, n_centres, radius, a, ratios, psi)
            num = 0.0
            den = 0.0
            for n in range(n_win):
                if psi[n] != 0.0:
                    num += psi[n] * w[g, first + n]
                    den += psi[n]
            eta = num / den
            eta_sum += eta
            u[i] = eta * u[i]
            key_prev[i] = x
        eta_mean[g] = eta_sum / (hi - lo)
