"""The daemon's two processes: CPU plan, pinning, and what happens when the learner dies."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from rtlearn.service import realtime
from rtlearn.service.config import ConfigError, load_config
from rtlearn.service.launch import DaemonProcess

RT = {"learning_cpus": [-1], "serving_cpus": [], "priority": 0, "spin": 0.0}


def plan(monkeypatch, cpus, **keys):
    monkeypatch.setattr(realtime, "available_cpus", lambda: cpus)
    return realtime.cpu_plan({**RT, **keys})


def test_cpu_plan_defaults_learning_last_serving_rest(monkeypatch):
    assert plan(monkeypatch, [0, 1]) == ({0}, {1})
    assert plan(monkeypatch, [2, 5, 7, 9]) == ({2, 5, 7}, {9})
    assert plan(monkeypatch, [4]) == (None, None)          # one CPU: nothing to split
    assert plan(monkeypatch, [0, 1], learning_cpus=[]) == (None, None)
    assert plan(monkeypatch, [0, 1, 2, 3], learning_cpus=[0], serving_cpus=[-1]) == ({3}, {0})
    assert plan(monkeypatch, [0, 1], learning_cpus=[0, 1]) == (None, None)  # no serving CPU left


def test_cpu_plan_index_outside_the_cpus_is_a_config_error(monkeypatch, tmp_path):
    monkeypatch.setattr(realtime, "available_cpus", lambda: [0, 1])
    with pytest.raises(ValueError, match="outside the 2 CPUs"):
        realtime.cpu_plan({**RT, "learning_cpus": [5]})
    f = tmp_path / "c.toml"
    for text, match in (("[realtime]\nlearning_cpus = [5]", "outside"),
                        ("[realtime]\npriority = 100", "priority"),
                        ("[realtime]\nspin = -1.0", "spin"), ("[realtime]\nspin = inf", "spin"),
                        ('[realtime]\nserving_cpus = ["a"]', "integers"),
                        ("[realtime]\nlearning_cpus = [1]\nserving_cpus = [1]", "overlap"),
                        ("[realtime]\npriority = 10\nspin = 0.005", "2 serving CPUs"),
                        ('[contexts]\ninitial = ""', "initial"),
                        ('[contexts]\ninitial = "tab\\there"', "initial"),
                        ("[contexts]\nmax_contexts = 0", "max_contexts")):
        f.write_text(text + "\n")
        with pytest.raises(ConfigError, match=match):
            load_config(f)


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def allowed(pid: int) -> set[int]:
    return os.sched_getaffinity(pid)


@pytest.mark.skipif(len(realtime.available_cpus()) < 2, reason="needs 2 CPUs to split")
def test_learning_process_runs_alone_on_the_last_cpu(tmp_path):
    cpus = realtime.available_cpus()
    with DaemonProcess(tmp_path, {"learner": {"hidden": [8]}}) as d:
        rt = d.status()["realtime"]
        (child,) = children(d.proc.pid)
        assert rt["learning_cpus"] == [cpus[-1]] and rt["serving_cpus"] == cpus[:-1]
        assert allowed(child) == {cpus[-1]}
        assert allowed(d.proc.pid) == set(cpus[:-1])
        assert os.sched_getscheduler(child) == os.SCHED_OTHER  # its own CPU: no need to yield


def test_unpinned_learning_process_runs_at_the_lowest_priority(tmp_path):
    with DaemonProcess(tmp_path, {"learner": {"hidden": [8]},
                                  "realtime": {"learning_cpus": []}}) as d:
        (child,) = children(d.proc.pid)
        assert d.status()["realtime"]["learning_cpus"] == []
        assert os.sched_getscheduler(child) == os.SCHED_IDLE


def test_daemon_exits_when_the_learning_process_dies(tmp_path):
    with DaemonProcess(tmp_path, {"learner": {"hidden": [8]}}) as d:
        (child,) = children(d.proc.pid)
        os.kill(child, signal.SIGKILL)
        assert d.proc.wait(30) == 3, d.log_tail()
        assert "learning process ended unexpectedly" in d.log_tail()


def test_kill_9_of_the_daemon_leaves_no_learning_process(tmp_path):
    d = DaemonProcess(tmp_path, {"learner": {"hidden": [8]}})
    (child,) = children(d.proc.pid)
    os.kill(d.proc.pid, signal.SIGKILL)  # the daemon alone, not its process group
    d.proc.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.path.exists(f"/proc/{child}"):
        try:  # reap it if it became ours; otherwise init does
            os.waitpid(child, os.WNOHANG)
        except ChildProcessError:
            pass
        if _state(child) in ("Z", None):
            break
        time.sleep(0.05)
    assert _state(child) in ("Z", None), "the learning process outlived the daemon"


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


class _DeadPipe:
    """The serving side's end of the pipe after the learning process died with bytes we had
    sent still unread: the kernel resets the connection (ECONNRESET), not an EOF."""

    def poll(self, timeout=0.0):
        return True

    def recv(self):
        raise ConnectionResetError(104, "Connection reset by peer")

    def send(self, msg):
        raise BrokenPipeError(32, "Broken pipe")


def _daemon_with_a_dead_learner():
    import itertools
    import threading
    from types import SimpleNamespace

    from rtlearn.service.daemon import Daemon
    d = object.__new__(Daemon)  # only what the pipe's handling touches
    d.learning = SimpleNamespace(conn=_DeadPipe(), proc=SimpleNamespace(exitcode=-9))
    d._lost, d.stopping, d._jobs = False, False, {}
    d._send_lock, d._job_ids, d._epochs = threading.Lock(), itertools.count(), itertools.count()
    d._loop_thread = threading.current_thread()
    return d


@pytest.mark.parametrize("how", ["recv", "send", "call"])
def test_a_reset_pipe_stops_the_daemon_with_exit_code_3(how):
    d = _daemon_with_a_dead_learner()
    with pytest.raises(SystemExit) as e:
        {"recv": d._pump, "send": lambda: d._send(("serving", {})),
         "call": lambda: d.call("status")}[how]()
    assert e.value.code == 3 and d.stopping and d._lost


def test_a_dead_learner_met_by_the_control_thread_fails_its_job_and_stops_the_loop():
    import threading
    d = _daemon_with_a_dead_learner()
    out = {}

    def control():
        try:
            d.call("status")
        except BaseException as e:  # noqa: B902 - what reaches the control thread
            out["error"] = e

    t = threading.Thread(target=control)
    t.start()
    t.join(5)
    assert isinstance(out["error"], RuntimeError) and "learning process has ended" in str(out["error"])
    assert d.stopping and d._lost   # the main loop stops at its next turn, with exit code 3
