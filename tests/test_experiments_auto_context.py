"""auto-context: the schedule, the detection and window scores, the command line on another arm."""

import json
import subprocess
import sys

import numpy as np
import pytest

from rtlearn.experiments import auto_context as ac


def test_schedule_has_the_changes_steady_stretches_and_returns():
    seq, long = ac.schedule(["none", "light", "heavy"], np.random.default_rng(5), "lift")
    runs = [seq[0]]
    lengths = [1]
    for a, b in zip(seq, seq[1:]):
        if a == b:
            lengths[-1] += 1
        else:
            runs.append(b)
            lengths.append(1)
    assert len(runs) == ac.CHANGES + 1 and runs[0] == "none"
    assert all(a != b for a, b in zip(runs, runs[1:]))
    assert len(set(runs)) == 3 and len(runs) > len(set(runs))  # returns to earlier payloads
    assert [lengths[i] for i in long] == [ac.STEADY_CYCLES["lift"]] * ac.STEADY
    assert all(lengths[i] <= 2 for i in range(len(lengths)) if i not in long)


def test_detection_and_windows_against_a_plain_count():
    trial = {"samples": 200_000, "changes": [10_000, 100_000, 150_000],
             "steady": [(105_000, 150_000)],
             "alarms": [[10_040, "created"], [50_000, "dismissed"], [120_000, "created"],
                        [150_500, "restored"]],
             "loss": {"auto": np.arange(20_000.0)}}
    d = ac.detection(trial)
    assert d["delays_ms"] == [40.0, None, 500.0]
    # outside [c, c + 1 s): 200 s - 3 s, two alarms, one of which switched
    assert d["false"] == 2 and d["false_switched"] == 1
    assert d["minutes"] == pytest.approx(197 / 60)
    assert d["steady_false"] == 1 and d["steady_minutes"] == pytest.approx(45 / 60)
    w = ac.windows(trial)["auto"]
    loss = trial["loss"]["auto"]
    assert w["after_change"] == pytest.approx(np.mean([loss[c // 10:c // 10 + 50].mean()
                                                       for c in trial["changes"]]))
    assert w["steady"] == pytest.approx(loss[10_500:15_000].mean())
    assert w["first_batch"] == pytest.approx(np.mean([loss[c // 10] for c in trial["changes"]])
                                             / 50)


def test_purity_names_each_context_after_its_most_held_payload():
    # batches 0-9 none in "default"; 10-19 heavy, switched to "auto-1" at 12 (late);
    # 20-29 none: back to "default" at 20 (right); 30-39 light: "auto-1" again at 31 (wrong:
    # auto-1 held heavy in 8 batches, light in 9 -> named light, so that switch is right
    # and the one at 12 is wrong)
    truth = ["none"] * 10 + ["heavy"] * 10 + ["none"] * 10 + ["light"] * 10
    trial = {"truth": truth, "active": [[0, "default"], [12, "auto-1"], [20, "default"],
                                        [31, "auto-1"]]}
    p = ac.purity(trial)
    # default: none 10 + 2 (heavy 10-11) + 10 + 1 (light 30) -> none; auto-1: heavy 8, light 9
    assert p == {"switches": 3, "right": 2, "batches_right": 20 + 9, "batches": 40}


@pytest.mark.slow
def test_quick_run_on_the_panda_reports_every_summary_key(tmp_path):
    out = tmp_path / "ac.json"
    r = subprocess.run([sys.executable, "-m", "rtlearn.cli", "experiment", "auto-context",
                        "--quick", "--trials", "1", "--robot", "franka_panda", "--json",
                        str(out)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    s = json.loads(out.read_text())["summary"]
    assert set(s["detection_delay_ms"]) == {"p50", "p90"}
    for key in ("after_change_mse", "steady_mse"):
        assert set(s[key]) == {"auto", "oracle", "single"}
        assert all(v > 0 for v in s[key].values())
    assert 0 <= s["missed_changes"] <= 1 and s["false_alarms_per_min"] >= 0
    assert s["robot"].endswith("franka_panda.toml") and s["changes"] == 3
    assert 0 <= s["switch_purity"] <= 1 and 0 < s["context_purity"] <= 1
    assert 0 < s["label_free_bound_over_single"] <= 1


def test_bad_options_fail_before_any_worker():
    for args, text in ((["--task", "dance"], "unknown task"),
                       (["--robot", "/nonexistent/arm.toml"], "arm.toml"),
                       (["--rates", "0.1"], "payload-swap only")):
        r = subprocess.run([sys.executable, "-m", "rtlearn.cli", "experiment", "auto-context",
                            *args], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and text in r.stderr, (args, r.stderr)
