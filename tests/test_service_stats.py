"""Latency rings: percentiles computed off the GIL agree with numpy's."""

import numpy as np
import pytest

from rtlearn.kernels.stats import percentiles
from rtlearn.service.stats import Ring


@pytest.mark.parametrize("n", [1, 2, 3, 17, 1000, 4096])
def test_percentiles_match_numpy(n):
    values = np.random.default_rng(n).lognormal(size=4096)
    q = np.array([0.0, 50.0, 90.0, 99.0, 100.0])
    out = np.zeros(q.shape)
    percentiles(values, n, q, out)
    np.testing.assert_allclose(out, np.percentile(values[:n], q), rtol=1e-12)


def test_ring_keeps_the_last_values_and_the_maximum_ever():
    r = Ring(size=100)
    for v in range(1, 251):  # 1..250 s; the ring keeps 151..250
        r.add(float(v))
    s = r.summary_ms()
    assert s["count"] == 250 and s["max"] == 250e3
    assert s["p50"] == pytest.approx(np.percentile(np.arange(151, 251), 50) * 1e3)
    assert s["p99"] == pytest.approx(np.percentile(np.arange(151, 251), 99) * 1e3)
