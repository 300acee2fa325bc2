"""payload-swap: the windows, the swap schedule, the command line on another arm."""

import json
import subprocess
import sys

import numpy as np
import pytest

from rtlearn.experiments import payload_swap as ps


def test_payload_sequence_starts_empty_handed_never_repeats_and_returns():
    seq = ps.payload_sequence(["none", "light", "heavy"], 20, np.random.default_rng(3))
    assert seq[0] == "none" and len(seq) == 20
    assert all(a != b for a, b in zip(seq, seq[1:]))
    assert set(seq) == {"none", "light", "heavy"}


def test_changes_and_restores_from_the_labels():
    ctx = np.repeat([0, 1, 2, 1, 0], 100)   # 10 batches each
    changes, restores = ps.changes_of(ctx)
    assert changes == [10, 20, 30, 40] and restores == [30, 40]


def test_windows_against_a_plain_computation():
    loss = np.arange(1.0, 1001.0)
    w = ps.windows(loss, [100, 600])
    assert w["early"] == pytest.approx(np.mean(loss[1:50]))
    assert w["after_change_100ms"] == pytest.approx((loss[100:110].mean() + loss[600:610].mean()) / 2)
    assert w["after_change_500ms"] == pytest.approx((loss[100:150].mean() + loss[600:650].mean()) / 2)
    assert w["steady"] == pytest.approx(loss[800:].mean()) and w["whole"] == pytest.approx(500.5)
    assert ps.windows(loss, [])["after_change_100ms"] is None
    assert ps.diverged({"a": 1e9}) and ps.diverged({"a": float("nan")})
    assert not ps.diverged({"a": 1.0, "b": None})


def test_after_restore_profile_against_a_plain_computation():
    loss = np.arange(1.0, 1001.0)
    changes, restores = [100, 300, 600], [300, 600]
    p = ps.after_restore(loss, changes, restores)
    assert len(p["slots"]) == 10
    assert p["slots"][0] == pytest.approx((loss[300:305].mean() + loss[600:605].mean()) / 2)
    assert p["slots"][9] == pytest.approx((loss[345:350].mean() + loss[645:650].mean()) / 2)
    # the restore at 300 holds until the change at 600, the one at 600 until the end
    assert p["segment"] == pytest.approx((loss[300:600].mean() + loss[600:].mean()) / 2)
    assert ps.after_restore(loss, changes, []) == {"slots": [], "segment": None}


@pytest.mark.slow
def test_quick_run_on_the_panda_with_sines_reports_every_summary_key(tmp_path):
    out = tmp_path / "ps.json"
    r = subprocess.run([sys.executable, "-m", "rtlearn.cli", "experiment", "payload-swap",
                        "--quick", "--trials", "1", "--robot", "franka_panda", "--task", "sines",
                        "--methods", "GD,MetaGD", "--json", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    s = json.loads(out.read_text())["summary"]
    assert set(s["ratio_metagd_gd"]) == set(ps.WINDOWS)
    for key in ("whole_vs_best_gd", "bank_restore_vs_continue", "diverged"):
        assert key in s
    for m in ("GD", "MetaGD"):
        p = s["bank_restore_profile"][m]
        assert len(p["slots"]) in (0, 10) and all(v > 0 for v in p["slots"])
    assert s["diverged"] == 0 and s["robot"].endswith("franka_panda.toml")
    assert all(v is not None and v > 0 for v in s["ratio_metagd_gd"].values())


def test_bad_options_fail_before_any_worker_with_a_clear_message():
    for args, text in ((["--task", "dance"], "unknown task"),
                       (["--rates", "0.1,x"], "comma-separated numbers"),
                       (["--methods", "GD,Magic"], "unknown payload-swap method"),
                       (["--robot", "/nonexistent/arm.toml"], "arm.toml"),
                       (["--memory", "clip=10,flavour=3"], "not a MemoryConfig field"),
                       (["--memory", "n_centres=many"], "not of type int"),
                       (["--memory", "rate_min=3"], "multiples of the base rate"),
                       (["--cycles", "1"], "at least 2")):
        r = subprocess.run([sys.executable, "-m", "rtlearn.cli", "experiment", "payload-swap",
                            *args], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and text in r.stderr, (args, r.stderr)
    r = subprocess.run([sys.executable, "-m", "rtlearn.cli", "experiment", "digits", "--task",
                        "lift"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "payload-swap and auto-context only" in r.stderr


def test_memory_variant_reaches_metagd_only():
    cfg = ps.learner_config("MetaGD", 1e-3, 7, 0, {"clip": 10.0, "n_centres": 50})
    assert cfg.memory.clip == 10.0 and cfg.memory.n_centres == 50
    assert ps.learner_config("MetaGD-paper", 1e-3, 7, 0, {"clip": 2.0}).memory.clip == 10.0


def test_the_bank_restores_as_the_daemon_is_configured():
    # a return to the first payload, exactly as it was: "reload" serves the stored output
    # layer, "blend" (no earlier restore: weight 1/2) half of it and half of the other
    # payload's, so its first batch after the return costs more
    from naive import payload_law

    from rtlearn.commands.experiment import _payload_swap_options
    from rtlearn.learner import LearnerConfig

    cfg = LearnerConfig(n_joints=2, n_inputs=4, hidden=(16,), optimizer="gd", lr=0.05, seed=1)
    laws = [payload_law(0.0, 1), payload_law(4.0, 2), payload_law(0.0, 3)]
    batches = [next(laws[k]) for k in [0] * 100 + [1] * 100 + [2] * 5]
    X = np.concatenate([b[0] for b in batches])
    Y = np.concatenate([b[1] for b in batches])
    ctx = np.repeat([0] * 100 + [1] * 100 + [0] * 5, 10)
    first = {r: ps.run_bank(X, Y, ctx, ["a", "b"], cfg, r)[200] for r in ("blend", "reload")}
    assert first["reload"] < 0.5 * first["blend"], first
    args = type("A", (), {"methods": None, "robot": None, "task": None, "rates": None,
                          "memory": None, "cycles": None, "restore": "reload"})()
    assert _payload_swap_options(args)["restore"] == "reload"


def test_issgpr_is_one_run_without_a_rate_and_the_denominator_of_its_ratio():
    from rtlearn.learner.issgpr import ISSGPRConfig
    assert isinstance(ps.learner_config("I-SSGPR", 3e-4, 7, 5), ISSGPRConfig)

    def w(x):
        return {k: x for k in ps.WINDOWS}

    trial = {"robot": "kuka_iiwa", "task": "lift", "rates": [1e-3, 3e-4],
             "continue": {"GD 0.001": w(2.0), "GD 0.0003": w(4.0), "MetaGD 0.001": w(1.0),
                          "MetaGD 0.0003": w(3.0), "I-SSGPR": w(0.5)},
             "bank": {m: {"bank": w(1.0), "continue": w(1.0),
                           "profile": [{"slots": [], "segment": None}] * 2} for m in ("GD", "MetaGD")},
             "_rates": {"MetaGD 0.001": np.ones((4, 4))}}
    s = ps.summarize([trial])
    assert s["per_rate"]["0.001"]["MetaGD/I-SSGPR"]["whole"] == pytest.approx(2.0)
    assert s["per_rate"]["0.0003"]["MetaGD/I-SSGPR"]["whole"] == pytest.approx(6.0)
    assert "| I-SSGPR |" in ps.table(s) and s["diverged_baselines"]["I-SSGPR"] == 0
