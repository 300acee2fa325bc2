"""`rtlearn demo` end to end, shortened to one lift: every packet answered, nothing lost."""

from __future__ import annotations

import io

from rtlearn.service.demo import run_demo


def test_short_demo_answers_every_packet_and_reports_phases():
    out = io.StringIO()
    r = run_demo(seconds=3.5, transport="ipc", progress=False, learner={"hidden": [32, 32]},
                 out=out)
    assert r["predictions"] == r["packets"] > 3000 and r["learner"] == "mlp"
    assert r["daemon"]["packets"]["lost"] == 0
    assert r["daemon"]["packets"]["rejected_total"] == 0
    assert [p["payload"] for p in r["phases"]] == ["none"]
    assert r["daemon"]["contexts"]["created"] == 1          # default -> none
    text = out.getvalue()
    assert "prediction error per phase" in text and "0 lost" in text


def test_short_demo_with_the_peer_learner_serves_it_from_the_daemon():
    out = io.StringIO()
    r = run_demo(seconds=3.5, transport="ipc", progress=False, learner={"kind": "issgpr"},
                 out=out)
    assert r["learner"] == "issgpr"   # as the daemon's status reports it
    assert r["predictions"] == r["packets"] > 3000
    assert r["daemon"]["packets"]["lost"] == 0 and r["daemon"]["learning"]["steps"] > 300
    # it learned: the last second of the lift is predicted far better than its first 0.5 s
    p = r["phases"][0]
    assert p["rmse_last_1s_nm"] < 0.5 * p["rmse_first_500ms_nm"], p
    assert out.getvalue().startswith("rtlearn demo: issgpr learner")


def test_demo_refuses_mlp_options_for_the_peer_before_starting_anything():
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "rtlearn.cli", "demo", "--learner", "issgpr",
                        "--hidden", "32"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--hidden applies to --learner mlp only" in r.stderr
    assert "rtlearn demo:" not in r.stdout
