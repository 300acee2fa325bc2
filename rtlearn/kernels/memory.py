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
from .simd import add4, dot4

# Every helper is inlined by numba (inline="always"), not linked by LLVM: with fastmath
# 'reassoc' a helper linked from elsewhere (loaded from numba's cache) is vectorised apart from
# its caller, and the step's bits then depend on whether this process compiled the kernels
# (tests/test_kernels_cache.py).

META_GD = 0
META_ADAM = 1
META_LOG = 2   # gradient ascent on log w: w <- w exp(beta Delta), rates relative and positive
BLOCK = 256    # coordinates per block of the coordinate passes
BANKS = 4      # interleaved deposit accumulators: consecutive coordinates often share a node


@njit(inline="always", **JIT)
def _clip_key(x, clip):
    """Eq. M1 input: clip to [-C, C]; NaN maps to -C so node indices always stay in range."""
    x = x if x > -clip else -clip
    return x if x < clip else clip


@njit(inline="always", **JIT)
def _lo(a, b):
    """min(a, b) as a select. In the coordinate loops numba's min, max and np.floor stayed
    calls, and a loop with a call does not vectorise (LLVM's remarks: `rtlearn bench loops`)."""
    return a if a < b else b


@njit(inline="always", **JIT)
def _hi(a, b):
    """max(a, b) as a select (see _lo)."""
    return a if a > b else b


@njit(inline="always", **JIT)
def _node_of(x, clip, inv_step, j_last):
    """The node starting the interval of the clipped key x, as an int32 (a truncation: x >= -C,
    so it is the floor)."""
    return _lo(np.int32((x + clip) * inv_step), np.int32(j_last))


@njit(inline="always", **JIT)
def _node_range(x, lo, hi, clip, inv_step, j_last):
    """Nodes first_j .. last_j + 1 hold every interval the keys x[lo:hi] fall in (only those
    are tabulated or collected: keys crowd a few spacings around zero). Used only when the
    memory does not learn; learning steps get it from _deposit_group's pass. Integer min/max:
    LLVM vectorises those reductions, not float ones (without fastmath 'nnan')."""
    j_min = np.int32(j_last)
    j_max = np.int32(0)
    for i in range(lo, hi):
        j = _node_of(_clip_key(x[i], clip), clip, inv_step, j_last)
        j_min = _lo(j_min, j)
        j_max = _hi(j_max, j)
    return int(j_min), int(j_max) + 1


@njit(inline="always", **JIT)
def _tabulate(wpad, tphi, per_cell, j_lo, j_hi, tab):
    """Eq. M2 at nodes j_lo..j_hi: tab[2 j] = eta(x_j) = sum_n phi[n, j] w[c(j) + n], tab[2 j + 1]
    = step * eta'(x_j) likewise, c(j) = j // G the node's cell, w zero-padded (wpad[c + n] is
    centre c + n - R). tphi interleaves the two tables (tphi[n, 2 j] = phi, tphi[n, 2 j + 1] =
    dphi), so each cell and centre is one contiguous multiply-add over the cell's nodes."""
    n_win = tphi.shape[0]
    for c in range(j_lo // per_cell, j_hi // per_cell + 1):
        a = 2 * max(j_lo, c * per_cell)
        b = 2 * min(j_hi + 1, (c + 1) * per_cell)
        t = tab[a:b]
        w0 = wpad[c]
        p = tphi[0, a:b]
        for j in range(b - a):
            t[j] = p[j] * w0
        for n in range(1, n_win):
            wv = wpad[c + n]
            p = tphi[n, a:b]
            for j in range(b - a):
                t[j] += p[j] * wv


@njit(inline="always", **JIT)
def _hermite(x, clip, inv_step, j_last, one, t, js, hw):
    """Node j (stored as 2 j, the offset in an interleaved (N, 2) table) and the cubic
    Hermite weights (h00, h10, h01, h11) of the clipped key x at slot t. `one` carries the
    state's dtype: float64 literals would widen float32 arithmetic."""
    p = (x + clip) * inv_step
    j = _lo(js.dtype.type(np.int32(p)), j_last)  # the floor (p >= 0), see _node_of
    f = p - j
    g = one - f
    js[t] = j + j
    hw[0, t] = g * g * (one + f + f)
    hw[1, t] = g * g * f
    hw[2, t] = f * f * (one + one + one - f - f)
    hw[3, t] = -f * f * g


@njit(inline="always", **JIT)
def _predict_group(key, u, key_prev, lo, hi, clip, inv_step, j_last, one, tab, w_lo, w_hi, js,
                   hw, out):
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
            _hermite(x, clip, inv_step, j_last, one, t, js, hw)
        for t in range(m):  # tab[j:j + 4] . (h00, h10, h01, h11), one vector load
            out[t] = dot4(tab, np.int64(js[t]), h0[t], h1[t], h2[t], h3[t])
        uu = u[b_lo:b_lo + m]  # may alias k: read above, written only now
        for t in range(m):
            # The interpolant may overshoot [min w, max w] by the error bound: keep the clamp.
            e = _lo(w_hi, _hi(w_lo, out[t]))
            eta_sum += e
            uu[t] = e * uu[t]
    return eta_sum


@njit(inline="always", **JIT)
def _deposit_group(key, key_prev, lo, hi, clip, inv_step, j_last, one, acc, js, hw):
    """Eq. M3 signals s = clip(x x_prev, -1, 1) deposited at x_prev's interval: acc[bank]
    gets s (h00, h10) at node j and s (h01, h11) at node j + 1.

    The same pass finds the node range of x_prev (what _collect reads) and of the clipped
    key x (what the prediction tabulates): returns (j_lo, j_hi + 1) of each, as
    _node_range would, without two more passes over the coordinates (integer min/max, which
    LLVM vectorises)."""
    n2 = acc.shape[1]
    flat = acc.reshape(-1)
    h0, h1, h2, h3 = hw[0], hw[1], hw[2], hw[3]
    top = np.int32(j_last)
    p_min = top + top
    p_max = np.int32(0)
    x_min = top
    x_max = np.int32(0)
    for b_lo in range(lo, hi, BLOCK):
        m = min(BLOCK, hi - b_lo)
        k = key[b_lo:b_lo + m]
        kp = key_prev[b_lo:b_lo + m]  # already clipped
        for t in range(m):
            xp = kp[t]
            x = _clip_key(k[t], clip)
            jx = _node_of(x, clip, inv_step, j_last)
            x_min = _lo(x_min, jx)
            x_max = _hi(x_max, jx)
            s = _lo(one, _hi(-one, x * xp))
            _hermite(xp, clip, inv_step, j_last, one, t, js, hw)
            jp = np.int32(js[t])
            p_min = _lo(p_min, jp)
            p_max = _hi(p_max, jp)
            h0[t] *= s
            h1[t] *= s
            h2[t] *= s
            h3[t] *= s
        for t in range(m):  # flat[r:r + 4] += (h00, h10, h01, h11) s, one vector add
            add4(flat, (t & (BANKS - 1)) * n2 + np.int64(js[t]), h0[t], h1[t], h2[t], h3[t])
    return int(p_min) // 2, int(p_max) // 2 + 1, int(x_min), int(x_max) + 1


@njit(inline="always", **JIT)
def _collect(acc, j_lo, j_hi, tpsi, per_cell, dpad):
    """Eq. M4 from the deposits: dpad[c(j) + n] += v_j psi[n, j] + d_j dpsi[n, j] over nodes
    j_lo..j_hi, (v, d) the deposits summed over the banks (which are cleared); tpsi
    interleaves psi and dpsi as acc interleaves v and d, so each term is a contiguous dot
    product."""
    n_win = tpsi.shape[0]
    total = acc[0, 2 * j_lo: 2 * j_hi + 2]
    for bank in range(1, acc.shape[0]):
        row = acc[bank, 2 * j_lo: 2 * j_hi + 2]
        for t in range(row.shape[0]):
            total[t] += row[t]
        row[:] = 0.0
    for c in range(j_lo // per_cell, j_hi // per_cell + 1):
        a = 2 * max(j_lo, c * per_cell)
        b = 2 * min(j_hi + 1, (c + 1) * per_cell)
        vd = acc[0, a:b]
        for n in range(n_win):
            p = tpsi[n, a:b]
            dot = 0.0
            for t in range(b - a):
                dot += vd[t] * p[t]
            dpad[c + n] += dot
    total[:] = 0.0


@njit(inline="always", **JIT)
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


@njit(inline="always", **JIT)
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


@njit(inline="always", **JIT)
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
def memory_step(key, u, key_prev, w, w_m, w_v, count, bounds, clip, inv_step, per_cell, tphi,
                tpsi, meta_kind, beta, b1, b2, eps, w_lo, w_hi, learn, js, hw, out, acc, wpad,
                dpad, tab, eta_mean, full_window, a, normalized):
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
    Node tables (W = 2R + 1 rows, N nodes interleaved: (W, 2N)): tphi gives eta and its
    derivative times the node step at every node (eq. M2), tpsi the same for the signal
    weights of eq. M4. Padded arrays (K + 2R) put centre k at k + R so windows never branch
    on the edges. Scratch: js, out (BLOCK,), hw (4, BLOCK), acc (BANKS, 2N) zero between
    calls, tab (2N,). key, u, key_prev, the tables and the scratch share one dtype (float32
    or float64); the rates w and their moments are float64.
    With `full_window` every centre is evaluated (_deposit_full, _predict_full): inv_step is
    then 1 / spacing, a = (spacing / h)^2, `normalized` picks phi = psi / sum psi in eq. M4;
    of the tables and scratch only wpad and dpad (K each) are used, wpad for one key's psi.
    """
    n_centres = w.shape[1]
    shift = (wpad.shape[0] - n_centres) // 2  # R
    one = key.dtype.type(1.0)
    clip_t = key.dtype.type(clip)
    step_t = key.dtype.type(inv_step)
    j_last = key.dtype.type(tphi.shape[1] // 2 - 2)
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
        x_lo, x_hi = 0, 0  # the key's node range, from the learning pass or _node_range
        if learn:
            dpad[:] = 0.0
            if full_window:
                _deposit_full(key, key_prev, g_lo, g_hi, clip, inv_step, a, q, normalized, wpad,
                              dpad)
            else:
                j_lo, j_hi, x_lo, x_hi = _deposit_group(key, key_prev, g_lo, g_hi, clip_t,
                                                        step_t, j_last, one, acc, js, hw)
                _collect(acc, j_lo, j_hi, tpsi, per_cell, dpad)
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
            if not learn:
                x_lo, x_hi = _node_range(key, g_lo, g_hi, clip_t, step_t, j_last)
            _tabulate(wpad, tphi, per_cell, x_lo, x_hi, tab)
            eta_sum = _predict_group(key, u, key_prev, g_lo, g_hi, clip_t, step_t, j_last, one,
                                     tab, key.dtype.type(w_lo), key.dtype.type(w_hi), js, hw,
                                     out)
        eta_mean[g] = eta_sum / (g_hi - g_lo)
