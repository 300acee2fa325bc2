"""Live progress of running trials: reports travel from worker processes (and in-process runs)
to the runner's board, and nothing is printed when stdout carries the JSON."""

import io
import json

from rtlearn.cli import main
from rtlearn.experiments import progress, runner


def test_running_trials_report_their_steps_from_the_worker_processes(monkeypatch):
    monkeypatch.setattr(progress, "INTERVAL", 0.0)   # forked workers inherit it
    monkeypatch.setattr(runner.Board, "LIVE_EVERY", 0.0)
    seen = []
    update = runner.Board.update
    monkeypatch.setattr(runner.Board, "update", lambda self, r: (seen.append(tuple(r)),
                                                                  update(self, r)))
    out = io.StringIO()
    local = runner.run_trials("online-lift", trials=2, quick=True, workers=2, progress=out)
    assert {seed for seed, _, _ in seen} == {0, 1}
    for seed in (0, 1):
        steps = [st for s, st, _ in seen if s == seed]
        assert steps == sorted(steps) and steps[-1] > 10  # counts grow within a trial
    text = out.getvalue()
    assert "k steps" in text and "2/2 trials" in text
    # the reports change nothing: the same results in-process
    again = runner.run_trials("online-lift", trials=2, quick=True, workers=1, progress=None)
    assert json.dumps(runner_json(again)) == json.dumps(runner_json(local))


def runner_json(trials):
    from rtlearn.commands.experiment import to_jsonable
    return to_jsonable(trials)


def test_no_progress_when_stdout_is_the_json(capsys):
    assert main(["experiment", "online-lift", "--quick", "--trials", "1", "--json", "-"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["trials"] == 1
    assert "[online-lift]" not in captured.err  # the table goes there, no progress line
