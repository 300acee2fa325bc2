"""`rtlearn bench serve` end to end, short: a real daemon and a real echo on loopback."""

from rtlearn.service.bench import run_serve_bench, summary


def test_serve_bench_answers_every_packet_and_learns_every_replayed_sample(tmp_path):
    r = run_serve_bench(seconds=1.0, rate=500.0, block=0.2, replay_samples=500,
                        config={"learner": {"hidden": [16]}}, workdir=str(tmp_path), out=None)
    for key in ("echo_rtt_ms", "daemon_rtt_ms"):
        assert r[key]["packets"] == r[key]["replies"] == 500, r[key]
        assert 0 < r[key]["p50"] <= r[key]["p99"] <= r[key]["max"]
    d = r["daemon"]
    assert d["lost"] == 0 and d["rejected"] == 0
    assert d["samples_learned"] == 500  # 50 full batches, each learned once
    assert d["inside_ms"]["count"] == 500
    assert r["replay"]["samples_learned"] == 500 and r["replay"]["predictions"] == 500
    assert r["replay"]["lost"] == 0
    assert r["rtt_p99_ratio_daemon_over_echo"] > 0
    assert "replay at maximum speed" in summary(r)
