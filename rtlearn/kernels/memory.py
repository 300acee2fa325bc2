"""The memory of learning rates (docs/algorithm.md, eqs. M1-M5), O(P*m) per step.

Centres are uniform on [-C, C] with spacing s, kernels psi_k(x) = exp(-(x - c_k)^2 / (2 h^2)).
With p = (x + C) / s, cell = floor(p) and f = p - cell, the kernel of centre cell+j is
exp(-a (j - f)^2 / 2) with a = (s / h)^2, so only j in [-(R-1), R] are evaluated (every
skipped centre is at least R spacings away).

No exponential is evaluated per coordinate (they dominated the step: ~8 ns each, 4 per
coordinate). With f = q/Q + r, 0 <= r < 1/Q, the window value n is
    psi_n(f) = table[q, n] * exp(a (j0 - q/Q) r - a r^2 / 2) * exp(a r)^n,
table[q, n] = psi_n(q/Q), and both small exponentials are a 7-term Taylor series
(|argument| <= a (R + 1) / Q, relative error < 1e-12 for the configurations we allow).
"""

import math

import numpy as np

from numba import njit

from . import JIT

META_GD = 0
META_ADAM = 1


@njit(**JIT)
def _exp_small(y):
    """exp(y) for |y| <= 0.15 (6 Taylor terms, relative error < 2e-8 there, < 1e-12 at 0.02)."""
    return 1.0 + y * (1.0 + y * (0.5 + y * (1.0 / 6.0 + y * (1.0 / 24.0 + y * (1.0 / 120.0)))))


@njit(**JIT)
def _clip_key(x, clip):
    """Eq. M1 input: clip to [-C, C]; NaN maps to -C so indices always stay in range."""
    if not x > -clip:
        return -clip
    if x > clip:
        return clip
    return x


BLOCK = 128  # coordinates per block of _predict_group and _learn_group
BLK_ROWS = 5  # scratch `blk` is (BLK_ROWS, BLOCK)


@njit(**JIT)
def _predict_group(key, u, key_prev, lo, hi, clip, inv_spacing, n_centres, a, j0, table, wpad,
                   mpad, blk):
    """Eq. M2 for coordinates lo..hi-1 with padded rates wpad; returns the sum of the rates.

    In blocks, three loops of independent iterations: positions and the two small
    exponentials (SIMD), window sums, then u and key_prev (SIMD). One fused loop was
    latency-bound (~110 cycles of dependent work per coordinate, only ~2 coordinates in
    flight in the out-of-order window), whatever the instruction count.
    """
    n_q = table.shape[0] - 1
    inv_q = 1.0 / n_q
    n_win = table.shape[1]
    c_max = n_centres - 1.0
    q_max = n_q - 1.0
    cs = blk[0]
    qs = blk[1]
    vals = blk[2]
    steps = blk[3]
    eta_sum = 0.0
    for b_lo in range(lo, hi, BLOCK):
        m = min(BLOCK, hi - b_lo)
        for t in range(m):
            x = _clip_key(key[b_lo + t], clip)
            p = (x + clip) * inv_spacing  # >= 0: floor is a truncation, no NaN (clipped)
            c = min(np.floor(p), c_max)
            fq = (p - c) * n_q
            q = min(np.floor(fq), q_max)
            r = (fq - q) * inv_q
            cs[t] = c
            qs[t] = q
            vals[t] = _exp_small(a * (j0 - q * inv_q) * r - 0.5 * a * r * r)
            steps[t] = _exp_small(a * r)
        for t in range(m):
            c = int(cs[t])
            q = int(qs[t])
            val = vals[t]
            step = steps[t]
            num = 0.0
            den = 0.0
            if n_win == 6:
                # R = 3 (the default): constant trip count, unrolled.
                for n in range(6):
                    ps = table[q, n] * val
                    num += ps * wpad[c + n]
                    den += ps * mpad[c + n]
                    val *= step
            else:
                for n in range(n_win):
                    ps = table[q, n] * val
                    num += ps * wpad[c + n]
                    den += ps * mpad[c + n]
                    val *= step
            vals[t] = num / den
        for t in range(m):
            eta = vals[t]
            eta_sum += eta
            key_prev[b_lo + t] = _clip_key(key[b_lo + t], clip)
            u[b_lo + t] = eta * u[b_lo + t]
    return eta_sum


@njit(**JIT)
def _learn_group(key, key_prev, lo, hi, clip, inv_spacing, n_centres, a, j0, table, mpad, dpad,
                 normalized_signal, blk):
    """Eqs. M3-M4 for coordinates lo..hi-1: dpad[bank, window] += phi(x_prev) s (undivided).
    Blocked like _predict_group: the signal, positions and exponentials first (SIMD), then
    the window scatter-adds."""
    n_q = table.shape[0] - 1
    inv_q = 1.0 / n_q
    n_win = table.shape[1]
    c_max = n_centres - 1.0
    q_max = n_q - 1.0
    cs = blk[0]
    qs = blk[1]
    vals = blk[2]
    steps = blk[3]
    sig = blk[4]
    for b_lo in range(lo, hi, BLOCK):
        m = min(BLOCK, hi - b_lo)
        for t in range(m):
            x = key_prev[b_lo + t]  # already clipped
            sig[t] = min(1.0, max(-1.0, _clip_key(key[b_lo + t], clip) * x))
            p = (x + clip) * inv_spacing
            c = min(np.floor(p), c_max)
            fq = (p - c) * n_q
            q = min(np.floor(fq), q_max)
            r = (fq - q) * inv_q
            cs[t] = c
            qs[t] = q
            vals[t] = _exp_small(a * (j0 - q * inv_q) * r - 0.5 * a * r * r)
            steps[t] = _exp_small(a * r)
        for t in range(m):
            s = sig[t]
            if s == 0.0:
                continue  # no signal (first step, zero gradient): skip the window
            c = int(cs[t])
            q = int(qs[t])
            step = steps[t]
            if normalized_signal:
                tot = 0.0
                val = vals[t]
                for n in range(n_win):
                    tot += table[q, n] * val * mpad[c + n]
                    val *= step
                s /= tot
            # 4 banks: consecutive coordinates often share a cell (store-to-load stalls).
            bank = (b_lo + t) & 3
            val = vals[t] * s
            if n_win == 6:
                for n in range(6):  # R = 3 (the default): constant trip count, unrolled
                    dpad[bank, c + n] += table[q, n] * val
                    val *= step
            else:
                for n in range(n_win):
                    dpad[bank, c + n] += table[q, n] * val
                    val *= step


@njit(**JIT)
def memory_step(key, u, key_prev, w, w_m, w_v, count, bounds, clip, inv_spacing, radius, a,
                table, normalized_signal, meta_kind, beta, b1, b2, eps, w_lo, w_hi, learn,
                blk, wpad, mpad, dpad, eta_mean):
    """One memory step for every group: eqs. M3-M5 (learn), then M2 (predict and scale u).

    M3  s_i = clip(x_i * x_prev_i, -1, 1), x = clip(key, -C, C)
    M4  Delta_k = (1/D) sum_i phi_k(x_prev_i) s_i,  phi = psi (eq. 10) or psi / sum(psi)
    M5  w <- w + beta * Delta (MetaGD)  or  w <- w + beta * AdamDirection(Delta) (MemAdam),
        then w clamped to [w_lo, w_hi]
    M2  eta_i = sum_k psi_k(x_i) w_k / sum_k psi_k(x_i);  u_i <- eta_i * u_i
    `key` may alias `u`: each coordinate's key is read before its u is written.
    `key_prev` holds the clipped key of the previous step (zeros at the start: no update).
    `table` is (Q+1, 2R): table[q, n] = exp(-a (1 - R + n - q/Q)^2 / 2).
    Padded arrays (K + 2R - 1) put centre k at k + R - 1, so windows never branch on the
    edges: wpad holds w and zeros, mpad ones and zeros, dpad 4 interleaved accumulators
    (consecutive coordinates often share a cell: separate banks avoid store-to-load stalls).
    `blk` (BLK_ROWS, BLOCK) is the per-block scratch of the coordinate passes.
    """
    n_centres = w.shape[1]
    j0 = 1 - radius
    if learn:
        count[0] += 1.0
    c1 = 1.0 - b1 ** count[0]
    c2 = 1.0 - b2 ** count[0]
    for g in range(bounds.shape[0] - 1):
        g_lo = bounds[g]
        g_hi = bounds[g + 1]
        if learn:
            dpad[:, :] = 0.0
            _learn_group(key, key_prev, g_lo, g_hi, clip, inv_spacing, n_centres, a, j0, table,
                         mpad, dpad, normalized_signal, blk)
            inv_d = 1.0 / (g_hi - g_lo)
            for k in range(n_centres):
                kp = k - j0
                d = (dpad[0, kp] + dpad[1, kp] + dpad[2, kp] + dpad[3, kp]) * inv_d
                if meta_kind == META_ADAM:
                    w_m[g, k] = b1 * w_m[g, k] + (1.0 - b1) * d
                    w_v[g, k] = b2 * w_v[g, k] + (1.0 - b2) * d * d
                    d = (w_m[g, k] / c1) / (math.sqrt(w_v[g, k] / c2) + eps)
                w[g, k] = min(w_hi, max(w_lo, w[g, k] + beta * d))
        for k in range(n_centres):
            wpad[k - j0] = w[g, k]
        eta_sum = _predict_group(key, u, key_prev, g_lo, g_hi, clip, inv_spacing, n_centres, a,
                                 j0, table, wpad, mpad, blk)
        eta_mean[g] = eta_sum / (g_hi - g_lo)
