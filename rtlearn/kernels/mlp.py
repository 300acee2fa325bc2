"""Per-joint MLP stack: forward and backward for all joints and a whole batch in one call.

Layout (docs/algorithm.md, "Network"): `theta` has shape (J, P), one row per joint network.
A row holds, layer after layer, W (n_out x n_in, row-major) then b (n_out). `dims` lists the
layer widths [n_in, h_1, ..., h_L, 1]. Hidden layers use ReLU, the output is linear.
Activations for a batch live in `acts` (B, sum(dims)); `deltas` has the same shape. The
one-sample forward pass of the per-packet path, `mlp_predict_one`, takes `acts` 1-D and runs
the same forward pass on it as a (1, sum(dims)) view.
Inner loops run over contiguous 1-D slices: with plain 2-D offset indexing LLVM did not
vectorise them (measured 5x slower). theta, grad and the activations share one dtype, float32
or float64; accumulators start from a zero of that dtype (`theta.dtype.type(0)`) because a
float64 literal would widen float32 loops to float64.
"""

import math

import numpy as np
from numba import njit

from . import JIT

LOSS_MSE = 0
LOSS_LOGISTIC = 1


@njit(**JIT)
def _forward_joint(row, dims, acts, n_batch):
    """Eq. N1: a_{l+1} = relu(W_l a_l + b_l), last layer linear; returns the output column.

    Four rows of W at a time: each activation load feeds four dot products, and each runs
    over a contiguous row slice so LLVM vectorises it (blocks of 2 or 8 rows measured slower
    for one sample; for a batch of 10, 30 % faster than one row at a time).
    """
    zero = row.dtype.type(0)
    p = 0
    a_off = 0
    n_layers = dims.shape[0] - 1
    for l in range(n_layers):
        n_in = dims[l]
        n_out = dims[l + 1]
        w = row[p: p + n_out * n_in]
        bias = row[p + n_out * n_in: p + n_out * n_in + n_out]
        o_off = a_off + n_in
        # ReLU as max(s, lo) without a branch; -inf leaves the output layer linear. max keeps
        # a NaN since the flags exclude 'nnan'/'ninf'.
        lo = zero if l < n_layers - 1 else row.dtype.type(-np.inf)
        n_block = n_out - n_out % 4
        for o in range(0, n_block, 4):
            q = o * n_in
            w0 = w[q: q + n_in]
            w1 = w[q + n_in: q + 2 * n_in]
            w2 = w[q + 2 * n_in: q + 3 * n_in]
            w3 = w[q + 3 * n_in: q + 4 * n_in]
            for b in range(n_batch):
                a = acts[b, a_off: a_off + n_in]
                s0 = zero
                s1 = zero
                s2 = zero
                s3 = zero
                for i in range(n_in):
                    ai = a[i]
                    s0 += w0[i] * ai
                    s1 += w1[i] * ai
                    s2 += w2[i] * ai
                    s3 += w3[i] * ai
                z = acts[b, o_off + o: o_off + o + 4]
                z[0] = max(s0 + bias[o], lo)
                z[1] = max(s1 + bias[o + 1], lo)
                z[2] = max(s2 + bias[o + 2], lo)
                z[3] = max(s3 + bias[o + 3], lo)
        for o in range(n_block, n_out):
            wo = w[o * n_in: (o + 1) * n_in]
            for b in range(n_batch):
                a = acts[b, a_off: a_off + n_in]
                s = zero
                for i in range(n_in):
                    s += wo[i] * a[i]
                acts[b, o_off + o] = max(s + bias[o], lo)
        p += n_out * n_in + n_out
        a_off = o_off
    return a_off


@njit(**JIT)
def _backward_joint(row, grad, dims, acts, deltas, n_batch):
    """Eq. N2: backpropagation. Expects dL/d(output) in deltas[:, output column]; writes dL/dtheta."""
    zero = row.dtype.type(0)
    n_layers = dims.shape[0] - 1
    # Offsets of each layer's parameters and activations, walked from the top.
    p_end = 0
    a_off = 0
    for l in range(n_layers):
        p_end += dims[l + 1] * dims[l] + dims[l + 1]
        a_off += dims[l]
    for l in range(n_layers - 1, -1, -1):
        n_in = dims[l]
        n_out = dims[l + 1]
        b_off = p_end - n_out
        p = b_off - n_out * n_in
        o_off = a_off
        i_off = a_off - n_in
        first = l == 0
        if not first:
            for b in range(n_batch):
                deltas[b, i_off: i_off + n_in] = 0.0
        for o in range(n_out):
            w = row[p + o * n_in: p + (o + 1) * n_in]
            gw = grad[p + o * n_in: p + (o + 1) * n_in]
            gb = zero
            gw[:] = zero
            for b in range(n_batch):
                d = deltas[b, o_off + o]
                if d == zero:
                    continue
                gb += d
                x = acts[b, i_off: i_off + n_in]
                for i in range(n_in):
                    gw[i] += d * x[i]
                if not first:
                    di = deltas[b, i_off: i_off + n_in]
                    for i in range(n_in):
                        di[i] += d * w[i]
            grad[b_off + o] = gb
        if not first:
            for b in range(n_batch):
                x = acts[b, i_off: i_off + n_in]
                di = deltas[b, i_off: i_off + n_in]
                for i in range(n_in):
                    if x[i] <= zero:
                        di[i] = zero
        p_end = p
        a_off = i_off


@njit(**JIT)
def mlp_loss_grad(theta, dims, X, Y, x_mean, x_scale, y_mean, y_scale, loss_kind,
                  acts, deltas, grad, loss):
    """Eqs. N1-N3 for every joint: forward, loss before any update, gradient of the batch loss.

    Inputs are standardised as (x - x_mean) * x_scale, targets as (y - y_mean) / y_scale; the
    network learns in those units. `loss[j]` is reported in raw units: for MSE the mean of
    (yhat - y)^2 over the batch (eq. N3), for the logistic loss the mean cross-entropy
    with labels in {0, 1}. The training loss is the same in network units.
    """
    n_batch = X.shape[0]
    n_in = X.shape[1]
    for b in range(n_batch):
        for i in range(n_in):
            acts[b, i] = (X[b, i] - x_mean[i]) * x_scale[i]
    n_joints = theta.shape[0]
    for j in range(n_joints):
        out = _forward_joint(theta[j], dims, acts, n_batch)
        total = 0.0
        for b in range(n_batch):
            z = acts[b, out]
            if loss_kind == LOSS_MSE:
                yn = (Y[b, j] - y_mean[j]) / y_scale[j]
                err = z - yn
                raw = err * y_scale[j]
                total += raw * raw
                deltas[b, out] = 2.0 * err / n_batch
            else:
                # log(1 + exp(z)) - y z, written to stay finite for large |z|.
                total += max(z, 0.0) - Y[b, j] * z + math.log1p(math.exp(-abs(z)))
                deltas[b, out] = (1.0 / (1.0 + math.exp(-z)) - Y[b, j]) / n_batch
        loss[j] = total / n_batch
        _backward_joint(theta[j], grad[j], dims, acts, deltas, n_batch)


@njit(**JIT)
def mlp_predict(theta, dims, X, x_mean, x_scale, y_mean, y_scale, acts, out):
    """Eq. N1 for every joint and sample of X; out[b, j] in raw units (MSE) or logits."""
    n_batch = X.shape[0]
    n_in = X.shape[1]
    for b in range(n_batch):
        for i in range(n_in):
            acts[b, i] = (X[b, i] - x_mean[i]) * x_scale[i]
    for j in range(theta.shape[0]):
        col = _forward_joint(theta[j], dims, acts, n_batch)
        for b in range(n_batch):
            out[b, j] = y_mean[j] + y_scale[j] * acts[b, col]


@njit(**JIT)
def mlp_predict_one(theta, dims, x, x_mean, x_scale, y_mean, y_scale, acts, out):
    """Eq. N1 for every joint and one sample x (n_in,); out[j] as `mlp_predict` gives out[0, j].

    The per-packet path. `acts` is a 1-D scratch of length sum(dims); the standardised input
    sits in its first n_in entries and is shared by all joints.
    """
    for i in range(x.shape[0]):
        acts[i] = (x[i] - x_mean[i]) * x_scale[i]
    rows = acts.reshape((1, acts.shape[0]))
    for j in range(theta.shape[0]):
        col = _forward_joint(theta[j], dims, rows, 1)
        out[j] = y_mean[j] + y_scale[j] * acts[col]


@njit(**JIT)
def running_moments(X, count, mean, m2):
    """Eq. N4: Welford's running mean and sum of squared deviations, per column; returns count."""
    for b in range(X.shape[0]):
        count += 1.0
        for i in range(X.shape[1]):
            d = X[b, i] - mean[i]
            mean[i] += d / count
            m2[i] += d * (X[b, i] - mean[i])
    return count


def n_params(dims: np.ndarray) -> int:
    return int(sum(dims[l + 1] * dims[l] + dims[l + 1] for l in range(len(dims) - 1)))
