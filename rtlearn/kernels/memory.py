"""The memory of learning rates (docs/algorithm.md, eqs. M1-M5), O(P) per step.

Every per-coordinate quantity of the memory is a fixed linear map of the K rates w or of
the signals: the rate eta(x) = sum_k phi_k(x) w_k (eq. M2, phi = psi / sum psi) and the
weight psi_k(x) (or phi_k(x)) with which a signal reaches centre k (eq. M4). So once per step
and group, eta and its derivative are tabulated at N = (K - 1) G + 1 nodes, G per centre
spacing (2R or 2R + 1 centres per node, the truncated window). Each coordinate then costs a
cubic Hermite interpolation on its node interval: four loads and a few multiplies, no exponential,
no division. The learning pass is the transpose: each signal is deposited on its interval's
two nodes with the same four Hermite weights, and Delta_k sums the deposits against the
kernels' values and derivatives at the nodes. rtlearn.learner.memory builds the node tables
once per configuration and chooses G so that the interpolation error stays below the stated
bound (MemoryConfig.error_bound).

The per-coordinate loops run in blocks: a SIMD pass (clip, node, Hermite weights), then the
pass that gathers or scatters through the node index.

The window of a node is the 2R centres of its cell (c + 1 - R .. c + R, symmetric about the
cell); a node on a centre c (a cell boundary, shared by two cells) takes the 2R + 1 centres
c - R .. c + R, the union of both cells' windows. So every key keeps each centre closer than
R spacings on either side, and the tables are mirror symmetric (shape (2R + 1, N), row 0 zero
except at those nodes). Giving that node the right cell's window alone shifted the window
of keys just below a centre one place to the right.

With `full_window` (MemoryConfig.authors()) every centre is evaluated for every coordinate
instead, as the authors' code does: O(K) per coordinate, by a recurrence from the nearest
centre (three exponentials per key), exact to rounding.
"""

import math

import numpy as np

from numba import njit

from . import JIT

META_GD = 0
META_ADAM = 1
META_LOG = 2   # gradient ascent on log w: w <- w exp(beta Delta), rates relative and positive
BLOCK = 256    # coordinates per block of the coordinate passes
BANKS = 4      # interleaved deposit accumulators: consecutive coordinates often share a node


@njit(**JIT)
def _clip_key(x, clip):
    """Eq. M1 input: clip to [-C, C]; NaN maps to -C so node indices always stay in range."""
    x = x if x > -clip else -clip
    return x if x < clip else clip


@njit(**JIT)
def _node_range(x, lo, hi, clip, inv_step, j_last):
    """Nodes first_j .. last_j + 1 hold every interval the keys x[lo:hi] fall in (only those
    are tabulated or collected: keys crowd a few spacings around zero)."""
    x_min = clip
    x_max = -clip
    for i in range(lo, hi):
        xc = _clip_key(x[i], clip)
        x_min = min(x_min, xc)
        x_max = max(x_max, xc)
    j_lo = min(np.floor((x_min + clip) * inv_step), j_last)
    j_hi = min(np.floor((x_max + clip) * inv_step), j_last)
    return int(j_lo), int(j_hi) + 1


@njit(**JIT)
def _tabulate(wpad, phi, dphi, per_cell, j_lo, j_hi, eta, deta, tab):
    """Eq. M2 at nodes j_lo..j_hi: eta[j] = sum_n phi[n, j] w[c(j) + n] and deta likewise,
    c(j) = j // G the node's cell, w zero-padded (wpad[c + n] is centre c + n - R);
    then interleaved into tab for the coordinate pass."""
    n_win = phi.shape[0]
    for c in range(j_lo // per_cell, j_hi // per_cell + 1):
        a = max(j_lo, c * per_cell)
        b = min(j_hi + 1, (c + 1) * per_cell)
        e = eta[a:b]
        de = deta[a:b]
        e[:] = 0.0
        de[:] = 0.0
        for n in range(n_win):
            wv = wpad[c + n]
            p = phi[n, a:b]
            dp = dphi[n, a:b]
            for j in range(b - a):
                e[j] += p[j] * wv
                de[j] += dp[j] * wv
    for j in range(j_lo, j_hi + 1):
        tab[2 * j] = eta[j]
        tab[2 * j + 1] = deta[j]


@njit(**JIT)
def _hermite(x, clip, inv_step, j_last, t, js, hw):
    """Node j (stored as 2 j, the offset in an interleaved (N, 2) table) and the cubic
    Hermite weights (h00, h10, h01, h11) of the clipped key x at slot t."""
    p = (x + clip) * inv_step
    j = min(np.floor(p), j_last)
    f = p - j
    g = 1.0 - f
    js[t] = 2.0 * j
    hw[0, t] = g * g * (1.0 + 2.0 * f)
    hw[1, t] = g * g * f
    hw[2, t] = f * f * (3.0 - 2.0 * f)
    hw[3, t] = -f * f * g


@njit(**JIT)
def _predict_group(key, u, key_prev, lo, hi, clip, inv_step, j_last, tab, w_lo, w_hi, js, hw,
                   out):
    """Eq. M2 for coordinates lo..hi-1 (u <- eta(key) u); returns the sum of the rates.
    tab is interleaved: tab[2 j] = eta(x_j), tab[2 j + 1] = step * eta'(x_j)."""
    h0, h1, h2, h3 = hw[0], hw[1], hw[2], hw[3]
    eta_sum = 0.0
    for b_lo in range(lo, hi, BLOCK):
        m = min(BLOCK, hi - b_lo)
        k = key[b_lo:b_lo + m]  # 1-D views: LLVM vectorises these loops, not offset indexing
        kp = key_prev[b_lo:b_lo + m]
        for t in range(m):
            x = _clip_key(k[t], clip)
            kp[t] = x
            _hermite(x, clip, inv_step, j_last, t, js, hw)
        for t in range(m):
            j = np.int64(js[t])
            out[t] = h0[t] * tab[j] + h1[t] * tab[j + 1] + h2[t] * tab[j + 2] + h3[t] * tab[j + 3]
        uu = u[b_lo:b_lo + m]  # may alias k: read above, written only now
        for t in range(m):
            # The interpolant may overshoot [min w, max w] by the error bound: keep the clamp.
            e = min(w_hi, max(w_lo, out[t]))
            eta_sum += e
            uu[t] = e * uu[t]
    return eta_sum


@njit(**JIT)
def _deposit_group(key, key_prev, lo, hi, clip, inv_step, j_last, acc, js, hw):
    """Eq. M3 signals s = clip(x x_prev, -1, 1) deposited at x_prev's interval: acc[bank]
    gets s (h00, h10) at node j and s (h01, h11) at node j + 1."""
    n2 = acc.shape[1]
    flat = acc.reshape(-1)
    h0, h1, h2, h3 = hw[0], hw[1], hw[2], hw[3]
    for b_lo in range(lo, hi, BLOCK):
        m = min(BLOCK, hi - b_lo)
        k = key[b_lo:b_lo + m]
        kp = key_prev[b_lo:b_lo + m]  # already clipped
        for t in range(m):
            xp = kp[t]
            s = min(1.0, max(-1.0, _clip_key(k[t], clip) * xp))
            _hermite(xp, clip, inv_step, j_last, t, js, hw)
            h0[t] *= s
            h1[t] *= s
            h2[t] *= s
            h3[t] *= s
        for t in range(m):
            r = (t & (BANKS - 1)) * n2 + np.int64(js[t])
            flat[r] += h0[t]
            flat[r + 1] += h1[t]
            flat[r + 2] += h2[t]
            flat[r + 3] += h3[t]


@njit(**JIT)
def _collect(acc, j_lo, j_hi, psi, dpsi, per_cell, v, d, dpad):
    """Eq. M4 from the deposits: dpad[c(j) + n] += v_j psi[n, j] + d_j dpsi[n, j] over nodes
    j_lo..j_hi, v and d summed over the banks (which are cleared)."""
    n_win = psi.shape[0]
    m = j_hi + 1 - j_lo
    vv = v[:m]
    dd = d[:m]
    vv[:] = 0.0
    dd[:] = 0.0
    for bank in range(acc.shape[0]):
        row = acc[bank, 2 * j_lo: 2 * j_hi + 2]
        for t in range(m):
            vv[t] += row[2 * t]
            dd[t] += row[2 * t + 1]
        row[:] = 0.0
    for c in range(j_lo // per_cell, j_hi // per_cell + 1):
        a = max(j_lo, c * per_cell)
        b = min(j_hi + 1, (c + 1) * per_cell)
        vc = vv[a - j_lo: b - j_lo]
        dc = dd[a - j_lo: b - j_lo]
        for n in range(n_win):
            p = psi[n, a:b]
            dp = dpsi[n, a:b]
            total = 0.0
            for t in range(b - a):
                total += vc[t] * p[t] + dc[t] * dp[t]
            dpad[c + n] += total


@njit(**JIT)
def _kernel_row(p, a, q, row):
    """Eq. M1 at every centre: row[k] = psi_k = exp(-a (p - k)^2 / 2), p the key in centre
    spacings. Out from the nearest centre k0 by psi_{k+-1} = psi_k r, r <- r q (q = exp(-a)):
    three exponentials per key instead of K; the walk stops where psi underflows to 0, so
    row[k_lo:k_hi] (returned) holds every nonzero one. Rounding: O(n^2) ulp after n steps."""
    n = row.shape[0]
    k0 = min(int(p + 0.5), n - 1)
    d = p - k0
    psi0 = math.exp(-0.5 * a * d * d)
    row[k0] = psi0
    v = psi0
    r = math.exp(a * d - 0.5 * a)  # psi_{k0 + 1} / psi_{k0}
    k_hi = k0 + 1
    while k_hi < n:
        v *= r
        if v == 0.0:
            break
        row[k_hi] = v
        r *= q
        k_hi += 1
    v = psi0
    r = math.exp(-a * d - 0.5 * a)  # psi_{k0 - 1} / psi_{k0}
    k_lo = k0
    while k_lo > 0:
        v *= r
        if v == 0.0:
            break
        k_lo -= 1
        row[k_lo] = v
        r *= q
    return k_lo, k_hi


@njit(**JIT)
def _deposit_full(key, key_prev, lo, hi, clip, inv_spacing, a, q, normalized, row, delta):
    """Eqs. M3-M4 over every centre: delta[k] += phi_k(x_prev_i) s_i for coordinates lo..hi-1,
    phi = psi or psi / sum psi, p = (x + C) / spacing (row: scratch of K)."""
    for i in range(lo, hi):
        xp = key_prev[i]  # already clipped
        s = min(1.0, max(-1.0, _clip_key(key[i], clip) * xp))
        if s == 0.0:  # the first step, and keys at zero: nothing to deposit
            continue
        k_lo, k_hi = _kernel_row((xp + clip) * inv_spacing, a, q, row)
        if normalized:
            total = 0.0
            for k in range(k_lo, k_hi):
                total += row[k]
            s /= total
        for k in range(k_lo, k_hi):
            delta[k] += row[k] * s


@njit(**JIT)
def _predict_full(key, u, key_prev, lo, hi, clip, inv_spacing, a, q, w, w_lo, w_hi, row):
    """Eq. M2 over every centre for coordinates lo..hi-1 (u <- eta(key) u); returns the sum
    of the rates (row: scratch of K)."""
    eta_sum = 0.0
    for i in range(lo, hi):
        x = _clip_key(key[i], clip)  # read before u[i] is written: key may alias u
        key_prev[i] = x
        k_lo, k_hi = _kernel_row((x + clip) * inv_spacing, a, q, row)
        num = 0.0
        den = 0.0
        for k in range(k_lo, k_hi):
            num += row[k] * w[k]
            den += row[k]
        e = min(w_hi, max(w_lo, num / den))  # a convex combination: the clamp only rounds
        eta_sum += e
        u[i] = e * u[i]
    return eta_sum


@njit(**JIT)
def memory_step(key, u, key_prev, w, w_m, w_v, count, bounds, clip, inv_step, per_cell, phi,
                dphi, psi, dpsi, meta_kind, beta, b1, b2, eps, w_lo, w_hi, learn, js, hw, out,
                acc, wpad, dpad, eta, deta, tab, eta_mean, full_window, a, normalized):
    """One memory step for every group: eqs. M3-M5 (learn), then M2 (predict and scale u).

    M3  s_i = clip(x_i * x_prev_i, -1, 1), x = clip(key, -C, C)
    M4  Delta_k = (1/D) sum_i phi_k(x_prev_i) s_i,  phi = psi (eq. 10) or psi / sum(psi)
    M5  MetaGD: w <- w + beta * Delta;  MemAdam, in the torch form of the authors' code:
        m, v <- Adam's moments of Delta,
        w <- w + beta * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps);
    M5' meta "log" (MetaGD on log w): w <- w * exp(beta * Delta);
        then w clamped to [w_lo, w_hi]
    M2  eta_i = sum_k psi_k(x_i) w_k / sum_k psi_k(x_i);  u_i <- eta_i * u_i
    `key` may alias `u`: each coordinate's key is read before its u is written.
    `key_prev` holds the clipped key of the previous step (zeros at the start: no update).
    Node tables (W = 2R + 1, N nodes): phi/dphi give eta and its derivative times the node
    step at every node (eq. M2), psi/dpsi the same for the signal weights of eq. M4. Padded
    arrays (K + 2R) put centre k at k + R so windows never branch on the edges.
    Scratch: js, out (BLOCK,), hw (4, BLOCK), acc (BANKS, 2N) zero between calls, eta and
    deta (N,), tab (2N,).
    With `full_window` every centre is evaluated (_deposit_full, _predict_full): inv_step is
    then 1 / spacing, a = (spacing / h)^2, `normalized` picks phi = psi / sum psi in eq. M4;
    of the tables and scratch only wpad and dpad (K each) are used, wpad for one key's psi.
    """
    n_centres = w.shape[1]
    shift = (wpad.shape[0] - n_centres) // 2  # R
    j_last = phi.shape[1] - 2.0
    q = math.exp(-a)
    adam_scale = 0.0
    if learn:
        count[0] += 1.0
        adam_scale = math.sqrt(1.0 - b2 ** count[0]) / (1.0 - b1 ** count[0])
    for g in range(bounds.shape[0] - 1):
        g_lo = bounds[g]
        g_hi = bounds[g + 1]
        if g_hi == g_lo:
            continue
        if learn:
            dpad[:] = 0.0
            if full_window:
                _deposit_full(key, key_prev, g_lo, g_hi, clip, inv_step, a, q, normalized, wpad,
                              dpad)
            else:
                j_lo, j_hi = _node_range(key_prev, g_lo, g_hi, clip, inv_step, j_last)
                _deposit_group(key, key_prev, g_lo, g_hi, clip, inv_step, j_last, acc, js, hw)
                _collect(acc, j_lo, j_hi, psi, dpsi, per_cell, eta, deta, dpad)  # eta: scratch
            inv_d = 1.0 / (g_hi - g_lo)
            for k in range(n_centres):
                d = dpad[k + shift] * inv_d
                if meta_kind == META_ADAM:
                    w_m[g, k] = b1 * w_m[g, k] + (1.0 - b1) * d
                    w_v[g, k] = b2 * w_v[g, k] + (1.0 - b2) * d * d
                    # eps on the uncorrected sqrt(v), as the authors' Adam (ALGORITHM.md §7)
                    d = adam_scale * w_m[g, k] / (math.sqrt(w_v[g, k]) + eps)
                if meta_kind == META_LOG:
                    w[g, k] = min(w_hi, max(w_lo, w[g, k] * math.exp(beta * d)))
                else:
                    w[g, k] = min(w_hi, max(w_lo, w[g, k] + beta * d))
        if full_window:
            eta_sum = _predict_full(key, u, key_prev, g_lo, g_hi, clip, inv_step, a, q, w[g],
                                    w_lo, w_hi, wpad)
        else:
            for k in range(n_centres):
                wpad[k + shift] = w[g, k]
            j_lo, j_hi = _node_range(key, g_lo, g_hi, clip, inv_step, j_last)
            _tabulate(wpad, phi, dphi, per_cell, j_lo, j_hi, eta, deta, tab)
            eta_sum = _predict_group(key, u, key_prev, g_lo, g_hi, clip, inv_step, j_last,
                                     tab, w_lo, w_hi, js, hw, out)
        eta_mean[g] = eta_sum / (g_hi - g_lo)
