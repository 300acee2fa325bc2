"""`rtlearn bench serve` end to end, short: a real daemon and a real echo on loopback."""

from rtlearn.benchmarks.serve import run_serve_bench, summary


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
    assert len(r["daemon_rtt_p99_by_batch_position_ms"]) == 10
    assert "replay at maximum speed" in summary(r)


def test_packet_bench_reports_the_compiled_and_python_paths():
    from rtlearn.benchmarks.serve import packet_summary, run_packet_bench

    r = run_packet_bench({"learner": {"hidden": [16]}}, packets=200, rate=5000.0)
    for key in ("parse_state_us", "read_state_us", "predict_us", "encode_prediction_into_us",
                "encode_prediction_us"):
        assert r[key] > 0
    for mode in ("hot", "sleep", "spin"):
        q = r[f"path_{mode}_us"]
        assert 0 < q["p50"] <= q["p90"] <= q["p99"] <= q["max"]
    assert "whole path" in packet_summary(r)
