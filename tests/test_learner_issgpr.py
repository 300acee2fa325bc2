"""I-SSGPR against independent references: numpy Cholesky and ridge regression on features
written out from eq. G1, the exact RBF kernel, the exact GP marginal likelihood; the API
contract shared with OnlineLearner (no allocation in predict_one, snapshots, model copies)."""

import tracemalloc

import numpy as np
import pytest

from rtlearn.kernels.issgpr import LIMIT, TILE, chol_update, features, solve_weights, workspace
from rtlearn.learner.issgpr import (STATE_KIND, ISSGPR, ISSGPRConfig, fit_hyperparameters,
                                    pack)
from rtlearn.learner.state_io import StateFileError, save_state

N_IN, N_OUT = 3, 2


def _smooth(X):
    """A smooth 2-output target of 3 inputs (the third irrelevant)."""
    return np.stack([np.sin(2 * X[:, 0]) + 0.5 * X[:, 1] ** 2, np.cos(X[:, 0] + X[:, 1])], 1)


def _stream(n, seed=0, noise=0.05):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1.5, 1.5, size=(n, N_IN))
    return X, _smooth(X) + noise * rng.standard_normal((n, N_OUT))


def _features(learner, X):
    """Eq. G1 written out: sqrt(2/D) [cos(Omega (x - m) / l), sin(...)]."""
    n = learner.config.n_inputs
    x_mean, ell = learner.hyper[:n], learner.hyper[n:2 * n]
    U = ((X - x_mean) / ell) @ learner.omega.T
    return np.hstack([np.cos(U), np.sin(U)]) * np.sqrt(2.0 / learner.config.n_features)


def unpack(Rp, D, L):
    """Packed rows (row k: columns k .. L-1) back to a (D, L) array, zeros below."""
    Rz = np.zeros((D, L))
    o = 0
    for k in range(D):
        Rz[k, k:] = Rp[o:o + L - k]
        o += L - k
    return Rz


def _fixed(D=64, forget=1.0, noise=0.3):
    learner = ISSGPR(ISSGPRConfig(n_joints=N_OUT, n_inputs=N_IN, n_features=D, forget=forget))
    learner.set_hyperparameters(np.zeros(N_IN), [0.7, 0.9, 2.0], 1.2, noise, [0.1, -0.2])
    return learner


@pytest.mark.parametrize("forget", [1.0, 0.97])
@pytest.mark.parametrize("n_vectors", [1, 5])
def test_blocked_update_matches_numpy_cholesky(forget, n_vectors):
    """One pass: R'^T R' = f R^T R + V^T V, the appended columns z rotated along so that
    R'^T z' = f R^T z + V^T y; a vector zero up to a coordinate (eq. G3') included."""
    rng = np.random.default_rng(1)
    M = rng.standard_normal((12, 12))
    A = M.T @ M + 0.5 * np.eye(12)
    R = np.linalg.cholesky(A).T
    z = rng.standard_normal((12, 2))
    V = rng.standard_normal((n_vectors, 14))
    V[-1, :7] = 0.0
    Rp = pack(np.hstack([R, z]))
    chol_update(Rp, 12, V.copy(), n_vectors, np.sqrt(forget), workspace(n_vectors, 14))
    Rz = unpack(Rp, 12, 14)
    Vx, Vy = V[:, :12], V[:, 12:]
    expected = np.linalg.cholesky(forget * A + Vx.T @ Vx).T
    np.testing.assert_allclose(Rz[:, :12], expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(Rz[:, :12].T @ Rz[:, 12:], forget * R.T @ z + Vx.T @ Vy,
                               rtol=1e-12, atol=1e-12)


def _givens_sweep(Rz, V, s):
    """The standard row-by-row Givens sweep in plain numpy (the reference for the tiled fast
    update): row k scaled by s, then rotated against every vector nonzero at column k."""
    Rz, V = Rz.copy(), V.copy()
    for k in range(Rz.shape[0]):
        Rz[k, k:] *= s
        for v in V:
            if v[k] == 0.0:
                continue
            r = np.hypot(Rz[k, k], v[k])
            c, sn = Rz[k, k] / r, v[k] / r
            Rz[k, k:], v[k:] = c * Rz[k, k:] + sn * v[k:], c * v[k:] - sn * Rz[k, k:]
    return Rz


def _update(Rz, V, s):
    """chol_update on the packed form of Rz; the result unpacked."""
    D, L = Rz.shape
    Rp = pack(Rz)
    chol_update(Rp, D, V.copy(), len(V), s, workspace(len(V), L))
    return unpack(Rp, D, L)


def _factor(rng, D, J, ridge=0.5):
    M = rng.standard_normal((2 * D, D))
    return np.hstack([np.linalg.cholesky(M.T @ M / D + ridge * np.eye(D)).T,
                      rng.standard_normal((D, J))])


@pytest.mark.parametrize("D", [13, 40])          # 13: three tiles of 4 and one row alone
@pytest.mark.parametrize("n_dense, n_prior", [(1, 0), (3, 4), (10, 10)])
@pytest.mark.parametrize("forget", [1.0, 0.97])
def test_tiled_fast_update_equals_the_standard_givens_sweep(D, n_dense, n_prior, forget):
    """The fast Givens tiles (4 rows against groups of 4 vectors, zero padding vectors for
    the last group) give the standard sweep's R and z to rounding, with dense sample vectors
    and one-coordinate prior vectors (eq. G3') that enter at their coordinate."""
    rng = np.random.default_rng(D + 7 * n_dense + n_prior)
    J = 3
    Rz = _factor(rng, D, J)
    V = np.zeros((n_dense + n_prior, D + J))
    V[:n_dense] = 0.3 * rng.standard_normal((n_dense, D + J))
    for i in range(n_prior):
        V[n_dense + i, rng.integers(D)] = 0.4
    s = np.sqrt(forget)
    got = _update(Rz, V, s)
    np.testing.assert_allclose(got, _givens_sweep(Rz, V, s), rtol=1e-12, atol=1e-12)
    Vx, Vy = V[:, :D], V[:, D:]
    R, z = Rz[:, :D], Rz[:, D:]
    np.testing.assert_allclose(got[:, :D].T @ got[:, :D], forget * R.T @ R + Vx.T @ Vx,
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got[:, :D].T @ got[:, D:], forget * R.T @ z + Vx.T @ Vy,
                               rtol=1e-12, atol=1e-12)


def test_tiles_where_a_fast_rotation_would_lose_accuracy_take_standard_rotations():
    """Vectors larger than R's diagonal need rotations with cos < sin, which the one fast
    form would compute with cancellation: those tiles take the standard sweep. Here the
    first half of the rows has a tiny diagonal (every tile there falls back), the rest a
    large one (fast tiles), so both paths and the hand-over between them are exercised."""
    rng = np.random.default_rng(5)
    D, J = 24, 2
    Rz = _factor(rng, D, J)
    Rz[:12] *= 1e-3
    V = rng.standard_normal((6, D + J))
    got = _update(Rz, V, 0.9)
    np.testing.assert_allclose(got, _givens_sweep(Rz, V, 0.9), rtol=1e-11, atol=1e-12)
    R = Rz[:, :D]
    np.testing.assert_allclose(got[:, :D].T @ got[:, :D], 0.81 * R.T @ R + V[:, :D].T @ V[:, :D],
                               rtol=1e-12, atol=1e-12)


def test_a_vector_scale_that_grows_large_is_folded_back_into_the_vector():
    """Each fast rotation divides a vector's scale by cos: with cos^2 = 0.81 on every row
    (a diagonal R chosen so) the scale passes 2^64 after ~210 rows and is folded into the
    stored values; the result still equals the standard sweep (relative to each row)."""
    D, J = 240, 2
    x = 0.9 ** np.arange(D)                       # the vector's entries as rows rotate it in
    Rz = np.hstack([np.diag(x * np.sqrt(0.81 / 0.19)),
                    np.random.default_rng(6).standard_normal((D, J))])
    V = np.ones((1, D + J))
    got, ref = _update(Rz, V, 1.0), _givens_sweep(Rz, V, 1.0)
    scale = np.abs(ref).max(1, keepdims=True)
    np.testing.assert_allclose(got / scale, ref / scale, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.diag(got), x / np.sqrt(0.19), rtol=1e-12)  # sqrt(d^2 + x^2)


@pytest.mark.parametrize("D", [13, 64])
@pytest.mark.parametrize("J", [1, 4, 7])
def test_back_substitution_solves_r_w_equals_z_for_every_output(D, J):
    """solve_weights (4 rows per tile, weights padded to a multiple of 4 outputs) against
    numpy's solve; the padding rows stay zero."""
    rng = np.random.default_rng(D + J)
    Rz = _factor(rng, D, J)
    Wp = np.zeros((-(-J // 4) * 4, D))
    solve_weights(pack(Rz), Wp, np.zeros((TILE, len(Wp))))
    np.testing.assert_allclose(Wp[:J], np.linalg.solve(Rz[:, :D], Rz[:, D:]).T,
                               rtol=1e-10, atol=1e-12)
    assert np.all(Wp[J:] == 0.0)


@pytest.mark.parametrize("forget", [1.0, 0.99])
def test_weights_equal_weighted_ridge_regression_on_the_features(forget):
    learner = _fixed(forget=forget)
    X, Y = _stream(300)
    for i in range(0, 300, 10):
        learner.learn_many(X[i:i + 10], Y[i:i + 10])
    Phi = _features(learner, X)
    D = Phi.shape[1]
    w = forget ** np.arange(299, -1, -1)            # sample i weighs f^(n-1-i)
    # the prior decays with the data, and is given back one coordinate per sample (eq. G3')
    prior = np.full(D, learner.ridge * forget ** 300)
    np.add.at(prior, np.arange(300) % D, w * (1 - forget) * learner.ridge * D)
    A = Phi.T @ (w[:, None] * Phi) + np.diag(prior)
    W = np.linalg.solve(A, Phi.T @ (w[:, None] * (Y - [0.1, -0.2]))).T
    np.testing.assert_allclose(learner.W, W, rtol=1e-8, atol=1e-8 * np.abs(W).max())
    np.testing.assert_allclose(learner.predict_many(X[:5]), Phi[:5] @ W.T + [0.1, -0.2],
                               rtol=1e-9, atol=1e-9)


def test_the_prior_stays_near_lambda_under_forgetting():
    """Without eq. G3' an unexcited direction of A decays like f^t (to 0 in float64 after
    ~7e5 samples at f = 0.998); with it, A's diagonal where no data arrives stays within
    [f^D, 1] rho / (1 - f^D) of lambda."""
    learner = _fixed(D=16, forget=0.98)
    zero = np.zeros((10, N_IN))
    learner.P[...] = 0.0   # cos(0 - c) and sin(0 - c) for every x: excite only those
    for _ in range(100):
        learner.learn_many(zero, np.zeros((10, N_OUT)))
    A = learner.R.T @ learner.R
    Phi = _features(learner, zero[:1])
    null = np.linalg.svd(Phi)[2][1:]              # directions no sample has touched
    q = np.diag(null @ A @ null.T) / learner.ridge
    rho_over_lam, fD = (1 - 0.98) * 16, 0.98 ** 16
    assert np.all(q > 0.99 * fD * rho_over_lam / (1 - fD))
    assert np.all(q < 1.01 * rho_over_lam / (1 - fD))


@pytest.mark.parametrize("spread", [1.0, 30.0, 0.9 * LIMIT, 2 * LIMIT])
def test_feature_sines_and_cosines_equal_numpys(spread):
    """Eq. G1's cos and sin (fdlibm's polynomials after a three-part reduction; the library's
    beyond LIMIT) against numpy's on the same u = P x - c, across all four quadrants: within
    one rounding of u's size (u itself is a sum rounded at its magnitude)."""
    rng = np.random.default_rng(3)
    m = 256
    P = np.zeros((m, 1))
    c = -np.concatenate([np.arange(-8, 8) * np.pi / 4, rng.uniform(-spread, spread, m - 16)])
    phi = np.zeros(2 * m)
    features(P, c, 0.5, np.zeros(1), phi)
    u = -c
    tol = 0.5 * 4e-16 * np.maximum(np.abs(u), 1.0)
    assert np.all(np.abs(phi[:m] - 0.5 * np.cos(u)) <= tol)
    assert np.all(np.abs(phi[m:] - 0.5 * np.sin(u)) <= tol)
    c[5] = np.nan
    features(P, c, 0.5, np.zeros(1), phi)
    assert np.isnan(phi[5]) and np.isnan(phi[m + 5])


def test_random_features_approach_the_rbf_kernel_like_one_over_sqrt_d():
    rng = np.random.default_rng(2)
    X = rng.uniform(-1, 1, size=(200, N_IN))
    ell = np.array([0.7, 0.9, 2.0])
    exact = np.exp(-0.5 * (((X[:, None, :] - X[None, :, :]) / ell) ** 2).sum(-1))
    Ds = (32, 128, 512, 2048)
    errors = []
    for D in Ds:
        err = []
        for seed in range(8):
            learner = ISSGPR(ISSGPRConfig(n_joints=1, n_inputs=N_IN, n_features=D, seed=seed))
            learner.set_hyperparameters(np.zeros(N_IN), ell, 1.0, 0.1, [0.0])
            Phi = _features(learner, X)
            err.append(np.abs(Phi @ Phi.T - exact).mean())
        errors.append(np.mean(err))
    slope = np.polyfit(np.log(Ds), np.log(errors), 1)[0]
    assert -0.6 < slope < -0.4, (errors, slope)


def test_loss_is_measured_before_the_update():
    learner = _fixed()
    X, Y = _stream(200)
    for i in range(0, 190, 10):
        learner.learn_many(X[i:i + 10], Y[i:i + 10])
    before = ((learner.predict_many(X[190:]) - Y[190:]) ** 2).mean(0)
    np.testing.assert_allclose(learner.learn_many(X[190:], Y[190:]), before, rtol=1e-12)


def test_predict_one_allocates_nothing_and_returns_its_buffer():
    learner = _fixed()
    X, Y = _stream(50)
    learner.learn_many(X[:10], Y[:10])
    x = X[20].copy()
    out = learner.predict_one(x)
    np.testing.assert_allclose(out, learner.predict_many(x[None])[0], rtol=1e-12)
    copy = learner.model_copy()
    learner.predict_one(x, copy)
    tracemalloc.start()
    try:
        for _ in range(50):
            same = learner.predict_one(x)
            learner.predict_one(x, copy)
        size, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert same is out or np.shares_memory(same, out)
    assert size == 0


def test_model_copy_serves_the_model_as_it_was_while_training_goes_on():
    learner = _fixed()
    X, Y = _stream(200)
    learner.learn_many(X[:100], Y[:100])
    copy = learner.model_copy()
    frozen = learner.predict_many(X[:1])[0]
    learner.learn_many(X[100:], Y[100:])
    np.testing.assert_array_equal(learner.predict_one(X[0], copy), frozen)
    assert not np.allclose(learner.predict_one(X[0]), frozen)
    learner.copy_model_into(copy)
    np.testing.assert_array_equal(learner.predict_one(X[0], copy), learner.predict_many(X[:1])[0])


def test_learns_a_smooth_function_online_far_better_than_the_mean():
    learner = ISSGPR(ISSGPRConfig(n_joints=N_OUT, n_inputs=N_IN, n_features=200,
                                  calib=(50, 300), fit_iters=100))
    X, Y = _stream(3000)
    losses = np.array([learner.learn_many(X[i:i + 10], Y[i:i + 10]).mean()
                       for i in range(0, 3000, 10)])
    assert learner.calibrated and learner.stage == 2
    mean_predictor = Y.var(0).mean()
    assert losses[-50:].mean() < 0.05 * mean_predictor
    # the irrelevant third input gets the longest length scale
    ell = learner.hyper[N_IN:2 * N_IN] / X.std(0)
    assert ell[2] > 2 * max(ell[0], ell[1])


def test_marginal_likelihood_fit_beats_its_start_on_the_exact_likelihood():
    X, Y = _stream(150, seed=3, noise=0.1)
    h = fit_hyperparameters(X, Y, iters=100)
    Z = (X - X.mean(0)) / X.std(0)
    Ys = (Y - Y.mean(0)) / Y.std(0)

    def nll(ell, sf, sn):  # the exact GP negative log marginal likelihood, plain numpy
        d = (((Z[:, None] - Z[None]) / ell) ** 2).sum(-1)
        K = sf ** 2 * np.exp(-0.5 * d) + sn ** 2 * np.eye(len(Z))
        _, logdet = np.linalg.slogdet(K)
        return 0.5 * np.sum(Ys * np.linalg.solve(K, Ys)) + 0.5 * Ys.shape[1] * logdet

    fitted = nll(h["length_scales"] / X.std(0), h["signal"], h["noise"])
    assert fitted == pytest.approx(h["nll"], rel=1e-8)
    assert fitted < nll(np.sqrt(N_IN), 1.0, 0.1) - 10.0
    assert 0.05 < h["noise"] / h["signal"] < 0.3   # targets: noise 0.1 on a signal of ~0.7


@pytest.mark.parametrize("n_before", [120, 400])  # mid-calibration, and after it
def test_snapshot_round_trip_restores_predictions_and_future_learning(tmp_path, n_before):
    cfg = ISSGPRConfig(n_joints=N_OUT, n_inputs=N_IN, n_features=40, forget=0.999,
                       calib=(60, 250), fit_iters=20)
    learner = ISSGPR(cfg)
    X, Y = _stream(600)
    for i in range(0, n_before, 10):
        learner.learn_many(X[i:i + 10], Y[i:i + 10])
    learner.save(tmp_path / "gp.npz")
    restored = ISSGPR.load(tmp_path / "gp.npz")
    assert restored.config == cfg and restored.stage == learner.stage
    np.testing.assert_array_equal(restored.predict_many(X[:7]), learner.predict_many(X[:7]))
    for i in range(n_before, 600, 10):
        np.testing.assert_array_equal(restored.learn_many(X[i:i + 10], Y[i:i + 10]),
                                      learner.learn_many(X[i:i + 10], Y[i:i + 10]))
    np.testing.assert_array_equal(restored.W, learner.W)
    assert restored.n_samples == learner.n_samples == 600


def test_a_version_2_snapshot_with_the_full_factor_loads_packed_and_goes_on_identically(
        tmp_path):
    """Version 2 stored [R z] whole ("Rz"); it is packed on load, and a context dict of that
    form (a daemon snapshot written before) is taken by set_network_state."""
    learner = _fixed(D=16)
    X, Y = _stream(200)
    learner.learn_many(X[:100], Y[:100])
    arrays = {k: getattr(learner, k) for k in ISSGPR.ARRAYS if k != "Rp"}
    arrays["Rz"] = unpack(learner.Rp, 16, 16 + N_OUT)
    arrays.update({f"resid.{k}": v for k, v in learner.resid.arrays().items()})
    arrays["counters"] = np.array([learner.n_steps, learner.n_samples, learner.calib_fill,
                                   learner.stage], dtype=np.int64)
    save_state(tmp_path / "v2.npz", STATE_KIND, 2, {"config": learner.config.to_dict()},
               arrays)
    restored = ISSGPR.load(tmp_path / "v2.npz")
    old_context = {k: v for k, v in learner.network_state().items() if k != "Rp"}
    old_context["Rz"] = arrays["Rz"]
    twin = _fixed(D=16)
    twin.set_network_state(old_context)
    for other in (restored, twin):
        np.testing.assert_array_equal(other.Rp, learner.Rp)
    expected = learner.learn_many(X[100:], Y[100:])
    for other in (restored, twin):
        np.testing.assert_array_equal(other.learn_many(X[100:], Y[100:]), expected)
        np.testing.assert_array_equal(other.W, learner.W)


def test_a_learner_snapshot_is_not_an_issgpr_snapshot(tmp_path):
    from rtlearn.learner import LearnerConfig, OnlineLearner
    OnlineLearner(LearnerConfig(n_joints=2, n_inputs=3, hidden=(4,))).save(tmp_path / "m.npz")
    with pytest.raises(StateFileError, match="rtlearn-learner"):
        ISSGPR.load(tmp_path / "m.npz")
