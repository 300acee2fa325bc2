"""Optimizer transforms against the plain-numpy references in tests/naive.py."""

from dataclasses import asdict

import numpy as np
import pytest

import naive
from rtlearn.learner import MemoryConfig, adam, chain, clip, constant, hypergradient, memory
from rtlearn.learner.optim import OPTIMIZERS, make_optimizer


def _run(opt, grads, theta0, bounds=None):
    theta = theta0.copy()
    bounds = np.array([0, len(theta)]) if bounds is None else bounds
    state = opt.init(len(theta), bounds)
    path = []
    for g in grads:
        opt.step(theta, g.copy(), state)
        path.append(theta.copy())
    return np.array(path), state


def _grads(n=12, steps=30, seed=0):
    return np.random.default_rng(seed).normal(scale=2.0, size=(steps, n))


def test_chain_equals_applying_the_parts_by_hand():
    grads = _grads()
    theta0 = np.ones(12)
    path, _ = _run(chain(clip(1.5), adam(), constant(0.01)), grads, theta0)
    ref = naive.Adam(12, 0.01)
    theta = theta0.copy()
    for t, g in enumerate(grads):
        theta = theta - 0.01 * ref.direction(np.clip(g, -1.5, 1.5))
        np.testing.assert_allclose(path[t], theta, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("with_adam", [False, True])
def test_hypergradient_matches_baydin_reference(with_adam):
    grads = _grads()
    beta = 1e-3 if not with_adam else 1e-5
    parts = [clip(100.0)] + ([adam()] if with_adam else []) + [hypergradient(0.01, beta)]
    path, state = _run(chain(*parts), grads, np.zeros(12))
    ad, hd = naive.Adam(12, 0), naive.Hypergradient(12, 0.01, beta)
    theta = np.zeros(12)
    for t, g in enumerate(grads):
        u = ad.direction(g) if with_adam else g
        theta = theta - hd.step(g, u)
        np.testing.assert_allclose(path[t], theta, rtol=1e-11, atol=1e-14)
    assert state.states[-1]["alpha"][0] == pytest.approx(hd.alpha, rel=1e-12)


@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("meta,normalized", [("gd", False), ("adam", False), ("gd", True),
                                             ("adam", True), ("log", False)])
def test_memory_matches_full_reference_over_many_steps(meta, normalized, full):
    """Truncated kernels (and the exact full-window path) vs every centre, per group,
    learning and predicting (eqs. M1-M5). The truncated ones are limited by the tables'
    interpolation floor (1e-11), which memory-Adam amplifies where Delta ~ eps."""
    rng = np.random.default_rng(4)
    n, steps = 40, 60
    grads = np.cumsum(rng.normal(size=(steps, n)), axis=0) * 0.7  # correlated: memory moves
    bounds = np.array([0, 15, 40])
    beta = {"gd": 0.05, "adam": 0.002, "log": 2.0}[meta]
    # "log" with bounds relative to lr0 (the defaults' kind), the others absolute
    rate_min, rate_max = (0.2, 8.0) if meta == "log" else (1e-9, 1.0)
    cfg = MemoryConfig(lr0=0.01, n_centres=30, clip=5.0, width_ratio=0.8, beta=beta, meta=meta,
                       normalized_signal=normalized, truncation=1e-14, full_window=full,
                       key="raw", relative=meta == "log", rate_min=rate_min, rate_max=rate_max)
    rtol, atol = (1e-11, 1e-12) if full else (1e-9, 1e-10)  # |theta| up to ~10
    path, state = _run(chain(clip(5.0), memory(cfg)), grads, np.zeros(n), bounds)
    lo_hi = cfg.rate_bounds()
    refs = [naive.Memory(hi - lo, K=30, C=5.0, width_ratio=0.8, lr0=0.01, beta=beta, meta=meta,
                         normalized=normalized, lo=lo_hi[0], hi=lo_hi[1])
            for lo, hi in zip(bounds[:-1], bounds[1:])]
    theta = np.zeros(n)
    for t, g in enumerate(grads):
        gc = np.clip(g, -5, 5)
        for ref, lo, hi in zip(refs, bounds[:-1], bounds[1:]):
            theta[lo:hi] -= ref.step(gc[lo:hi], gc[lo:hi])
        np.testing.assert_allclose(path[t], theta, rtol=rtol, atol=atol)
    w = state.states[-1]["w"]
    for g, ref in enumerate(refs):
        np.testing.assert_allclose(w[g], ref.w, rtol=1e-12 if full else 1e-9, atol=1e-15)
        assert np.ptp(ref.w) > 1e-3  # the memory did learn something


def test_fast_prediction_within_its_stated_bound():
    """|eta_fast - eta_full| <= E ptp(w) / 2, E = MemoryConfig.error_bound, and E itself is
    at most the truncation part 2 E_skip / S plus the interpolation target max(tol, 1e-11),
    E_skip <= 2 exp(-a R^2/2) / (1 - exp(-a (2R+1)/2)) the skipped kernel mass and
    S >= exp(-a/8) the kept mass."""
    # (0.5, 1e-7) is the default: R = 3
    for width_ratio, tol in [(0.5, 1e-7), (0.5, 1e-8), (1.0, 1e-8), (1.0, 1e-3), (0.3, 1e-9)]:
        cfg = MemoryConfig.paper(width_ratio=width_ratio, truncation=tol)
        a, R = cfg.a, cfg.radius
        skipped = 2 * np.exp(-a * R * R / 2) / (1 - np.exp(-a * (2 * R + 1) / 2)) / np.exp(-a / 8)
        assert cfg.error_bound <= 2 * skipped + max(tol, 1e-11)
        rng = np.random.default_rng(5)
        w = rng.uniform(1e-4, 1e-2, size=50)
        x = np.concatenate([rng.uniform(-12, 12, 20000), [-10, 10, 0, 1e-9, np.nextafter(10, 0)]])
        t = memory(cfg)
        st = t.init(len(x), np.array([0, len(x)]))
        st["w"][0] = w
        st["learn"][0] = 0.0
        u = np.ones(len(x))
        t.update(None, u, x.copy(), st, np.array([0, len(x)]))
        ref = naive.Memory(len(x), K=50, C=10.0, width_ratio=width_ratio)
        ref.w = w
        err = np.abs(u - ref.rates(x))
        assert err.max() <= np.ptp(w) * cfg.error_bound / 2 + 1e-18
        if tol <= 1e-7:
            assert err.max() <= 1e-7 * np.ptp(w)


def test_default_window_learns_like_the_full_reference():
    """The default memory (R = 3 window, node tables) against every centre: equal up to
    its error bound."""
    rng = np.random.default_rng(6)
    n, steps = 300, 40
    grads = np.cumsum(rng.normal(size=(steps, n)), axis=0) * 0.5
    bounds = np.array([0, 100, 300])
    cfg = MemoryConfig.paper(lr0=0.01, beta=0.05)
    assert cfg.radius == 3
    path, state = _run(chain(clip(10.0), memory(cfg)), grads, np.zeros(n), bounds)
    refs = [naive.Memory(hi - lo, K=50, C=10.0, width_ratio=0.5, lr0=0.01, beta=0.05, meta="gd")
            for lo, hi in zip(bounds[:-1], bounds[1:])]
    theta = np.zeros(n)
    for g in grads:
        gc = np.clip(g, -10, 10)
        for ref, lo, hi in zip(refs, bounds[:-1], bounds[1:]):
            theta[lo:hi] -= ref.step(gc[lo:hi], gc[lo:hi])
    np.testing.assert_allclose(path[-1], theta, rtol=1e-6, atol=1e-9)
    for g, ref in enumerate(refs):
        np.testing.assert_allclose(state.states[-1]["w"][g], ref.w, rtol=1e-6, atol=1e-10)
        assert np.ptp(ref.w) > 1e-3


def _quadratic_rates(lr, steps=40):
    """GD with a memory on f(x) = 0.5 * 5 x^2 from x = 1; returns the predicted rates.

    Wide kernels (2 spacings) so what is learned at one gradient value carries to the next.
    """
    cfg = MemoryConfig.paper(lr0=lr, n_centres=20, width_ratio=2.0, beta=0.02)
    opt = chain(clip(10.0), memory(cfg))
    x = np.array([1.0])
    st = opt.init(1, np.array([0, 1]))
    rates = []
    for _ in range(steps):
        opt.step(x, 5.0 * x, st)
        rates.append(st.states[-1]["eta_mean"][0])
    return np.array(rates)


def test_memory_raises_rate_when_signs_agree_and_lowers_it_when_they_oscillate():
    timid = _quadratic_rates(0.01)     # 5 * 0.01 < 1: gradient keeps its sign
    assert timid[10] > 1.5 * timid[0]
    assert np.all(np.diff(timid[:8]) > 0)
    wild = _quadratic_rates(0.35)      # 5 * 0.35 > 1: x overshoots, gradient flips sign
    assert wild[10] < 0.9 * wild[0]
    assert wild[0] > wild[3] > wild[6]


def test_every_named_optimizer_descends_a_parabola():
    """Conformance over the registry (after river's checks): each one makes progress."""
    for name in OPTIMIZERS:
        lr = 0.05 if name.startswith("adam") else 0.1
        opt = make_optimizer(name, lr, grad_clip=10.0)
        x = np.array([3.0, -2.0, 1.0])
        st = opt.init(3, np.array([0, 1, 3]))
        for _ in range(200):
            opt.step(x, 2.0 * x, st)
        assert np.abs(x).max() < 0.5, name


def test_unknown_optimizer_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown optimizer 'sgdd'"):
        make_optimizer("sgdd", 0.1)


def test_scaled_keys_and_log_rates_against_a_plain_reference():
    """The scale-free memory (eq. O5 keys, eq. M5' log-rates, bounds relative to the base
    rate) as make_optimizer chains it, against naive.ScaleKey + naive.Memory step by step; the
    gradients jump in scale halfway, as at a payload change."""
    rng = np.random.default_rng(7)
    n, steps = 30, 80
    grads = np.cumsum(rng.normal(size=(steps, n)), axis=0) * 0.01
    grads[40:] *= 50.0
    bounds = np.array([0, 10, 30])
    cfg = MemoryConfig.scaled(truncation=1e-14)
    opt = make_optimizer("metagd", 0.02, 10.0, cfg)
    assert [t.name for t in opt.transforms] == ["clip", "scale_key", "memory"]
    path, state = _run(opt, grads, np.zeros(n), bounds)
    lo_hi = (cfg.rate_min * 0.02, cfg.rate_max * 0.02)
    keys = [naive.ScaleKey(cfg.key_decay) for _ in bounds[1:]]
    refs = [naive.Memory(hi - lo, K=cfg.n_centres, C=cfg.clip, width_ratio=cfg.width_ratio,
                         lr0=0.02, beta=cfg.beta, meta="log", lo=lo_hi[0], hi=lo_hi[1])
            for lo, hi in zip(bounds[:-1], bounds[1:])]
    theta = np.zeros(n)
    for t, g in enumerate(grads):
        gc = np.clip(g, -10, 10)
        for sk, ref, lo, hi in zip(keys, refs, bounds[:-1], bounds[1:]):
            theta[lo:hi] -= ref.step(sk(gc[lo:hi]), gc[lo:hi])
        np.testing.assert_allclose(path[t], theta, rtol=1e-8, atol=1e-11)
    w = state.states[-1]["w"]
    for g, ref in enumerate(refs):
        np.testing.assert_allclose(w[g], ref.w, rtol=1e-8)
        assert np.ptp(ref.w) > 0.1 * 0.02          # learned something ...
        assert ref.w.min() >= lo_hi[0] and ref.w.max() <= lo_hi[1]  # ... within the bounds


def test_set_lr_moves_the_learned_rates_with_the_base_rate():
    from rtlearn.learner import LearnerConfig, OnlineLearner
    learner = OnlineLearner(LearnerConfig(n_joints=2, n_inputs=3, hidden=(8,), lr=1e-3))
    rng = np.random.default_rng(0)
    for _ in range(50):
        X = rng.normal(size=(10, 3))
        learner.learn_many(X, np.c_[X.sum(1), X[:, 0]])
    s = next(s for s in learner.opt_state.states if "w" in s)
    before = s["w"].copy()
    learner.set_lr(4e-3)
    np.testing.assert_allclose(s["w"], 4.0 * before, rtol=1e-15)
    assert s["lr0"][0] == 4e-3


def test_memory_config_errors_are_clear():
    with pytest.raises(ValueError, match="multiples of the base rate"):
        MemoryConfig(rate_min=2.0).validate()
    with pytest.raises(ValueError, match="key must be"):
        MemoryConfig(key="cooked").validate()
    with pytest.raises(ValueError, match="metagd-memadam"):
        make_optimizer("metagd", 1e-3, 10.0, MemoryConfig(meta="adam"))
    from rtlearn.learner import LearnerConfig
    with pytest.raises(ValueError, match="set lr instead"):
        LearnerConfig(lr=1e-3, memory=MemoryConfig(lr0=5e-4))
    # a config saved before keys were scaled meant raw keys and absolute bounds
    old = {k: v for k, v in asdict(MemoryConfig.paper()).items() if k not in ("key", "relative")}
    assert MemoryConfig.from_dict(old) == MemoryConfig.paper()
    assert MemoryConfig.from_dict({"n_centres": 10}) == MemoryConfig(n_centres=10)  # a config file


def test_relative_rates_are_the_papers_update_in_units_of_the_base_rate():
    """relative=True: beta and the bounds act on multiples of lr0, so at any base rate the
    default memory is the paper's update with beta * lr0 and bounds * lr0."""
    grads = np.cumsum(np.random.default_rng(3).normal(size=(60, 20)), axis=0) * 0.3
    bounds = np.array([0, 8, 20])
    for lr0 in (1e-4, 1e-3, 0.02):
        ours = MemoryConfig(lr0=lr0, beta=3.0, rate_min=0.05, rate_max=20.0)
        paper = MemoryConfig.paper(lr0=lr0, beta=3.0 * lr0, rate_min=0.05 * lr0,
                                   rate_max=20.0 * lr0)
        a, sa = _run(chain(clip(10.0), memory(ours)), grads, np.zeros(20), bounds)
        b, sb = _run(chain(clip(10.0), memory(paper)), grads, np.zeros(20), bounds)
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
        assert np.ptp(sa.states[-1]["w"]) > 0.1 * lr0  # the memory moved, at this scale
