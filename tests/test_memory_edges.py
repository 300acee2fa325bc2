"""The memory kernel never indexes out of its tables, whatever the keys (NaN, inf, the clip
edges, huge values), and stays finite: checked with numba's bounds checking switched on in a
fresh subprocess (the kernels themselves are compiled without it)."""

import textwrap

SCRIPT = textwrap.dedent("""
    import numpy as np
    from rtlearn.learner import MemoryConfig, chain, clip, memory, scale_key
    for cfg in (MemoryConfig(), MemoryConfig.scaled(), MemoryConfig(normalized_signal=True, meta="adam"),
                MemoryConfig(n_centres=7, width_ratio=1.5, clip=2.0), MemoryConfig.authors(),
                MemoryConfig(n_centres=7, clip=2.0, full_window=True, normalized_signal=True)):
        C = cfg.clip
        edge = [np.nan, np.inf, -np.inf, C, -C, np.nextafter(C, 0), np.nextafter(-C, 0),
                1e300, -1e300, 0.0, 5e-324, -5e-324]
        rng = np.random.default_rng(0)
        n = 3000
        bounds = np.array([0, 1, 1, 700, n])  # a one-coordinate and an empty group too
        # no gradient clip: the memory (and eq. O5 where the config scales keys) sees raw keys
        opt = chain(*([scale_key(cfg.key_decay)] if cfg.key == "scaled" else []), memory(cfg))
        st = opt.init(n, bounds)
        theta = np.zeros(n)
        for step in range(6):
            g = rng.normal(scale=C, size=n)
            g[:len(edge)] = np.roll(edge, step)
            g[-len(edge):] = np.roll(edge, -step)
            opt.step(theta, g, st)
            s = st.states[-1]
            assert np.isfinite(s["w"]).all()
            lo, hi = cfg.rate_bounds()
            assert (s["w"] >= lo).all() and (s["w"] <= hi).all()
            assert np.isfinite(s["key_prev"]).all() and (np.abs(s["key_prev"]) <= C).all()
            ok = np.isfinite(g)
            assert np.isfinite(st.u[ok]).all()
            if cfg.key == "scaled":  # the running scale survives NaN and inf keys
                assert np.isfinite(st.states[0]["ms"]).all()
    print("ok")
""")


def test_memory_kernel_stays_in_bounds_on_edge_keys(run_boundschecked):
    run_boundschecked(SCRIPT)
