"""`rtlearn bench soak`, a few seconds of it: a real daemon fed a simulated lift and hostile
frames (the long run is a command, docs/performance.md)."""

import json
import subprocess
import sys

from rtlearn.benchmarks.soak import HOSTILE


def test_a_short_soak_counts_every_hostile_frame_and_the_daemon_survives(tmp_path):
    out = tmp_path / "soak.json"
    done = subprocess.run([sys.executable, "-m", "rtlearn.cli", "bench", "soak", "--seconds", "6",
                           "--hostile-rate", "30", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(out.read_text())
    assert {"rows", "sent", "final_status", "verdict", "pids"} <= set(r)
    assert len(r["rows"]) >= 5
    for row in r["rows"]:
        assert {"t_s", "rss_mb", "rss_total_mb", "rmse_nm", "received", "rejected", "excluded",
                "rollbacks", "lost", "resyncs"} <= set(row)
        assert all(rss > 0 for rss in row["rss_mb"]) and len(row["rss_mb"]) == 2
    sent = r["sent"]["hostile"]
    assert set(sent) == set(HOSTILE) and min(sent.values()) >= 4
    v = r["verdict"]
    assert v["all_hostile_counted"], v["hostile_counted"]
    assert v["daemon_exit_code"] == 0 and v["rollbacks"] == 0
    st = r["final_status"]
    assert st["packets"]["rejected"]["non_finite"] == sent["nan"]
    assert st["packets"]["lost"] == 0
    # every clean state was answered: the hostile ones in between took nothing from them
    assert r["predictions_received"] >= r["sent"]["states"] - 2 * sent["far_seq"] - 10
    assert "memory after warm-up" in done.stdout and "hostile frames counted: all" in done.stdout
