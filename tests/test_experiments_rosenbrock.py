import json

import numpy as np

from rtlearn.experiments import rosenbrock
from rtlearn.experiments.evaluate import prequential


class Counter:
    def __init__(self):
        self.value = 10.0

    def learn_many(self, X, Y):
        before = self.value
        self.value *= 0.5
        return np.array([before, 2 * before])


def test_prequential_reports_loss_before_update_and_running_mean():
    cps = list(prequential(Counter(), [(np.zeros((2, 1)), None)] * 5, every=2))
    assert [c.step for c in cps] == [2, 4, 5]
    assert cps[-1].n_samples == 10
    assert cps[0].loss.tolist() == [5.0, 10.0]
    np.testing.assert_allclose(cps[0].mean_loss, [7.5, 15.0])
    stopped = list(prequential(Counter(), [(None, None)] * 50, stop=lambda l: l[0] < 1))
    assert stopped[-1].step == 5 and stopped[-1].loss[0] < 1


def test_rosenbrock_metagd_beats_gd_and_memory_transfers():
    gd = rosenbrock.run_one(rosenbrock.Problem("gd", rosenbrock.START), max_iters=400)
    p1 = rosenbrock.Problem("metagd-memadam", rosenbrock.START)
    m1 = rosenbrock.run_one(p1, max_iters=400)
    assert m1["curve"][-1] < gd["curve"][-1] < gd["curve"][0]
    fresh = rosenbrock.Problem("metagd-memadam", rosenbrock.START)
    moved = rosenbrock.Problem("metagd-memadam", rosenbrock.START, p1.memory_state())
    w_fresh = fresh.memory_state()["1.memory.w"]
    w_moved = moved.memory_state()["1.memory.w"]
    assert w_moved.shape == (2, 100)
    assert not np.allclose(w_fresh, w_moved)
    np.testing.assert_array_equal(w_moved, p1.memory_state()["1.memory.w"])


def test_experiment_command_quick(tmp_path, capsys):
    from rtlearn.cli import main
    out = tmp_path / "r.json"
    assert main(["experiment", "rosenbrock", "--quick", "--trials", "1", "--json", str(out),
                 "--plots", str(tmp_path)]) == 0
    assert "MetaGD run 1" in capsys.readouterr().out
    d = json.loads(out.read_text())
    assert d["experiment"] == "rosenbrock" and d["trials"] == 1
    row = d["summary"]["rows"][0]
    assert set(rosenbrock.RUNS) <= set(row)
    n = rosenbrock.QUICK["ensemble"]
    assert row["runs"] == n and all(len(v) == n for v in d["per_trial"][0]["iterations"].values())
    assert (tmp_path / "rosenbrock_convergence.png").exists()


def test_ensemble_members_start_within_the_perturbation():
    assert np.array_equal(rosenbrock.member_start(rosenbrock.START, 0, 0), rosenbrock.START)
    moved = np.array([rosenbrock.member_start(rosenbrock.START, 0, m) for m in range(1, 20)])
    d = np.abs(moved - rosenbrock.START)
    assert (d > 0).all() and d.max() < 5 * rosenbrock.PERTURBATION
    assert len(np.unique(moved[:, 0])) == 19


def test_summary_counts_against_numpy():
    """Quartiles (lower, actual counts), spreads and fractions, with unreached runs (None)
    counting as slower than any reached one."""
    rng = np.random.default_rng(2)
    trials = []
    for seed in range(2):
        it = {r: [int(v) for v in rng.integers(10, 500, size=9)] for r in rosenbrock.RUNS}
        it["gd"][3] = None
        it["metagd-1"][0] = None
        trials.append({"seed": seed, "start": [0.0, 0.0], "max_iters": 600, "iterations": it})
    s = rosenbrock.summarize(trials)
    for row, t in zip(s["rows"], trials):
        a = {r: np.array([np.inf if v is None else v for v in t["iterations"][r]])
             for r in rosenbrock.RUNS}
        for r in rosenbrock.RUNS:
            srt = np.sort(a[r])
            assert (row[r]["q1"], row[r]["median"], row[r]["q3"]) == (srt[2], srt[4], srt[6])
            fin = a[r][np.isfinite(a[r])]
            assert row[r]["max/min"] == fin.max() / fin.min()
        expect = np.mean([a["metagd-2"][i] < a["metagd-1"][i] < a["gd"][i] for i in range(9)])
        assert row["run2 < run1 < gd"] == expect
        assert row["run2 < run1"] == np.mean(a["metagd-2"] < a["metagd-1"])
    assert s["rows"][0]["gd"]["not_reached"] == 1 and s["all"]["runs"] == 18
    assert "| all | pooled | 18 |" in rosenbrock.table(s)
