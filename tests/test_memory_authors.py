"""`MemoryConfig.authors()` against the authors' released code, restated independently in
tests/naive.py (ALGORITHM.md section 7), and the symmetry of the truncated window."""

import numpy as np
import pytest

import naive
from rtlearn.experiments.rosenbrock import START, grad
from rtlearn.learner import MemoryConfig, memory, make_optimizer


@pytest.mark.parametrize("name,meta", [("metagd-memadam", "adam"), ("metagd", "gd")])
def test_authors_config_follows_the_released_code_on_rosenbrock(name, meta):
    """First 30 iterations from the paper's start, one memory per coordinate: parameters,
    rates and memory values equal to 1e-10 (every centre, memory-Adam in the torch form).
    Not further: rounding differences grow to percents by iteration 100 (the chaos of
    docs/results.md), so later iterations compare nothing but the order of additions."""
    steps = 30
    opt = make_optimizer(name, 1e-3, 10.0, MemoryConfig.authors(meta=meta))
    state = opt.init(2, np.array([0, 1, 2]))
    theta = np.array(START, dtype=np.float64)
    path, rates = [], []
    for _ in range(steps):
        opt.step(theta, grad(theta), state)
        path.append(theta.copy())
        rates.append(state.states[-1]["eta_mean"].copy())  # one coordinate per group
    ref_path, ref_rates, ref_w = naive.authors_memory_descent(grad, START, steps, [[0], [1]],
                                                              meta=meta)
    np.testing.assert_allclose(path, ref_path, rtol=1e-10, atol=0)
    np.testing.assert_allclose(rates, ref_rates, rtol=1e-10, atol=0)
    # memory values relative to their scale: some are differences of O(lr0) steps
    np.testing.assert_allclose(state.states[-1]["w"], ref_w, rtol=0,
                               atol=1e-10 * np.abs(ref_w).max())
    assert np.ptp(ref_rates) > 1e-3  # the rates did move


def _one_step(cfg, w, x_prev, x):
    """A memory-GD step from keys x_prev to x with memory values w: (new w, rates at x)."""
    t = memory(cfg)
    bounds = np.array([0, len(x)])
    st = t.init(len(x), bounds)
    st["w"][0] = w
    st["key_prev"][:] = x_prev
    u = np.ones(len(x))
    t.update(None, u, x.copy(), st, bounds)
    return st["w"][0].copy(), u


@pytest.mark.parametrize("width_ratio,truncation", [(0.5, 1e-7), (1.0, 1e-3)])
def test_truncated_window_is_symmetric_around_the_key(width_ratio, truncation):
    """Mirroring the keys (x -> -x) and the memory (w_k -> w_{K-1-k}) mirrors the result,
    rates and learned w, to rounding: no centre is kept on one side of a key and dropped at
    the same distance on the other. Keys on the centres, just below and above them, and at
    the clip edges, where the window of one cell hands over to the next."""
    cfg = MemoryConfig(n_centres=100, clip=10.0, width_ratio=width_ratio, beta=0.05,
                       truncation=truncation)
    rng = np.random.default_rng(3)
    c = cfg.centres()
    d = cfg.spacing / node_per_cell(cfg)
    x = np.concatenate([c, c - 0.3 * d, c + 0.3 * d, c - 0.9 * d, [-10.0, 10.0]])
    x_prev = np.clip(x + rng.normal(scale=0.2, size=x.size), -10, 10)
    w = rng.uniform(1e-4, 1e-2, size=100)
    w1, u1 = _one_step(cfg, w, x_prev, x)
    w2, u2 = _one_step(cfg, w[::-1], -x_prev, -x)
    scale = np.ptp(w)
    np.testing.assert_allclose(u2, u1, rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(w2[::-1], w1, rtol=0, atol=1e-12 * scale)
    # the symmetric window keeps, e.g., the centre R spacings inside either clip edge
    assert np.abs(u1[-2:] - naive_rates(cfg, w1, x[-2:])).max() <= cfg.error_bound * np.ptp(w1) / 2


def node_per_cell(cfg):
    from rtlearn.learner.memory import node_tables
    return node_tables(cfg).per_cell


def naive_rates(cfg, w, x):
    ref = naive.Memory(len(x), K=cfg.n_centres, C=cfg.clip, width_ratio=cfg.width_ratio)
    ref.w = w
    return ref.rates(x)
