import numpy as np

from rtlearn.experiments import batch_id


def test_batch_id_quick_trial():
    trial = batch_id.run_trial(0, quick=True)
    assert set(trial["at"]) == {"task 1 GD", "task 1 MetaGD fresh", "task 2 GD",
                                "task 2 MetaGD fresh", "task 2 MetaGD task-1 memory"}
    for k, c in trial["_curves"].items():
        assert len(c) == 20 and np.all(np.isfinite(c))
        assert c[-1] < c[0], k  # the training loss falls
    # the carried memory changes the run: not the same curve as a fresh memory
    assert not np.allclose(trial["_curves"]["task 2 MetaGD fresh"],
                           trial["_curves"]["task 2 MetaGD task-1 memory"])
    assert "task 2 MetaGD task-1 memory" in batch_id.table(batch_id.summarize([trial]))
