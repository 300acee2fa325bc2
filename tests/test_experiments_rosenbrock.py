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
    assert (tmp_path / "rosenbrock_convergence.png").exists()


def test_sensitivity_gives_both_runs_per_accuracy():
    out = rosenbrock.sensitivity(truncations=(1e-11,))
    n1, n2 = out[1e-11]
    assert n1 is not None and n2 is not None and n1 > 0 and n2 > 0
