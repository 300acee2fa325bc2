"""The per-joint MLP kernels against central finite differences and a numpy forward pass."""

import numpy as np
import pytest

import naive
from rtlearn.kernels.mlp import mlp_predict, mlp_predict_one, n_params
from rtlearn.learner.network import MLPStack, Normalizer


def _stack(loss="mse"):
    return MLPStack(n_joints=3, n_inputs=5, hidden=(6, 4), batch_size=4, loss=loss, seed=3)


def _data(rng, loss):
    X = rng.normal(size=(4, 5))
    Y = rng.normal(size=(4, 3)) * 3.0 + 1.0
    if loss == "logistic":
        Y = (Y > 1.0).astype(float)
    return X, Y


@pytest.mark.parametrize("loss", ["mse", "logistic"])
def test_gradient_matches_central_differences_every_parameter(loss):
    rng = np.random.default_rng(0)
    net = _stack(loss)
    # Shift biases so no ReLU sits at its kink, where finite differences are meaningless.
    net.theta += rng.normal(scale=0.1, size=net.theta.shape)
    X, Y = _data(rng, loss)
    norm = Normalizer(5, 3, "none")
    loss_fn = naive.mse if loss == "mse" else naive.logistic
    net.loss_grad(X, Y, norm)
    eps = 1e-6
    for j in range(3):
        fd = np.zeros(net.n_params)
        for p in range(net.n_params):
            t = net.theta[j].copy()
            t[p] += eps
            up = loss_fn(t, net.dims, X, Y[:, j])
            t[p] -= 2 * eps
            down = loss_fn(t, net.dims, X, Y[:, j])
            fd[p] = (up - down) / (2 * eps)
        np.testing.assert_allclose(net.grad[j], fd, rtol=1e-5, atol=1e-7)
        assert np.count_nonzero(net.grad[j]) > net.n_params // 2


def test_loss_is_measured_before_any_update_and_matches_numpy():
    rng = np.random.default_rng(1)
    net = _stack()
    X, Y = _data(rng, "mse")
    loss = net.loss_grad(X, Y, Normalizer(5, 3, "none")).copy()
    expected = [naive.mse(net.theta[j], net.dims, X, Y[:, j]) for j in range(3)]
    np.testing.assert_allclose(loss, expected, rtol=1e-12)


def _observed(rng):
    """A stack, a normaliser that has seen shifted and scaled data, and a batch X."""
    net, norm = _stack(), Normalizer(5, 3, "both")
    X, Y = _data(rng, "mse")
    norm.observe(X * 5 + 2, Y * 10 - 4)
    return net, norm, X


def test_normalised_prediction_is_the_network_in_standard_units():
    rng = np.random.default_rng(2)
    net, norm, X = _observed(rng)
    out = np.zeros((4, 3))
    net.predict_into(X, norm, out)
    Xs = (X - norm.x_mean) * norm.x_scale
    for j in range(3):
        ref = norm.y_mean[j] + norm.y_scale[j] * naive.mlp_forward(net.theta[j], net.dims, Xs)
        np.testing.assert_allclose(out[:, j], ref, rtol=1e-12)
    Xn = X * 5 + 2
    np.testing.assert_allclose(norm.x_mean, Xn.mean(0), rtol=1e-12)
    np.testing.assert_allclose(1 / norm.x_scale ** 2, Xn.var(0), rtol=1e-10)


def test_group_bounds_cover_every_tensor_of_every_joint():
    net = _stack()
    sizes = np.diff(net.bounds)
    assert net.bounds[0] == 0 and net.bounds[-1] == net.theta.size
    assert list(sizes[:6]) == [30, 6, 24, 4, 4, 1]
    assert len(sizes) == 3 * 6


# Widths that are and are not multiples of the kernel's 4-row blocks, down to no hidden layer.
ONE_SAMPLE_DIMS = [(21, 128, 64, 32, 1), (21, 30, 7, 1), (3, 9, 1), (13, 5, 6, 3, 1),
                   (1, 4, 1), (7, 2, 1), (6, 1)]


@pytest.mark.parametrize("dims", ONE_SAMPLE_DIMS)
def test_one_sample_kernel_matches_numpy_and_the_batch_kernel(dims):
    rng = np.random.default_rng(len(dims) * 100 + dims[1])
    dims = np.array(dims, dtype=np.int64)
    J, n_in, width = 7, int(dims[0]), int(dims.sum())
    theta = rng.normal(scale=0.5, size=(J, n_params(dims)))
    x = rng.normal(size=n_in) * 3.0 + 1.0
    x_mean, x_scale = rng.normal(size=n_in), rng.uniform(0.5, 2.0, n_in)
    y_mean, y_scale = rng.normal(size=J), rng.uniform(0.5, 2.0, J)
    # Guard entries after the scratch and the output catch writes past their ends.
    acts_buf, out_buf = np.full(width + 4, 7.0), np.full(J + 4, 7.0)
    mlp_predict_one(theta, dims, x, x_mean, x_scale, y_mean, y_scale, acts_buf[:width],
                    out_buf[:J])
    out = out_buf[:J]
    xs = ((x - x_mean) * x_scale)[None]
    ref = [y_mean[j] + y_scale[j] * naive.mlp_forward(theta[j], dims, xs)[0] for j in range(J)]
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    batch = np.zeros((1, J))
    mlp_predict(theta, dims, x[None], x_mean, x_scale, y_mean, y_scale, np.zeros((1, width)),
                batch)
    np.testing.assert_allclose(out, batch[0], rtol=1e-12, atol=1e-12)
    assert np.all(acts_buf[width:] == 7.0) and np.all(out_buf[J:] == 7.0)


def test_one_sample_kernel_propagates_nan():
    dims = np.array([5, 6, 1], dtype=np.int64)
    theta = np.random.default_rng(4).normal(size=(2, n_params(dims)))
    x = np.full(5, np.nan)
    out = np.zeros(2)
    mlp_predict_one(theta, dims, x, np.zeros(5), np.ones(5), np.zeros(2), np.ones(2),
                    np.zeros(int(dims.sum())), out)
    assert np.all(np.isnan(out))


def test_one_row_prediction_matches_the_batch_path_with_either_weights():
    rng = np.random.default_rng(5)
    net, norm, X = _observed(rng)
    other = net.theta + rng.normal(scale=0.1, size=net.theta.shape)
    for theta in (None, other):
        batch = np.zeros((4, 3))
        net.predict_into(X, norm, batch, theta)
        for b in range(4):
            one = np.zeros((1, 3))
            net.predict_into(X[b:b + 1], norm, one, theta)
            np.testing.assert_allclose(one[0], batch[b], rtol=1e-12, atol=1e-12)
