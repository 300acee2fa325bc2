"""The rough edges a new user hit, each reproduced: recordings that could be lost, streams sent
into the void, a live payload swap undone, banners and tracebacks, temporary folders left
behind, and error messages that named the wrong thing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from rtlearn.cli import main
from rtlearn.learner import LearnerConfig, OnlineLearner, StateFileError
from rtlearn.protocol.client import RobotClient
from rtlearn.service import snapshots
from rtlearn.service.contexts import ContextBank
from rtlearn.service.demo import _final_status, report
from rtlearn.service.synthetic import synthetic_state
from rtlearn.sources.base import LogFormatError, LogPathError
from rtlearn.sources.log import LogWriter, read_log, write_log
from rtlearn.sources.robot import load_robot

CLI = [sys.executable, "-m", "rtlearn.cli"]


@pytest.fixture
def ipc_dir():
    # Unix socket paths are limited to ~107 bytes: pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="rtl") as d:
        yield d


@pytest.fixture(scope="module")
def robot():
    return load_robot("kuka_iiwa")


# ---- recording ------------------------------------------------------------------------------

def test_record_refuses_a_path_it_cannot_write_before_recording(tmp_path, ipc_dir, capsys):
    # the old recorder listened for the whole --duration, then lost it all in a traceback
    missing = tmp_path / "no" / "such" / "dir" / "r.npz"
    assert main(["record", str(missing), "--bind", f"ipc://{ipc_dir}/a", "--duration", "5"]) == 2
    err = capsys.readouterr().err
    assert "cannot write a log there" in err and "recording" not in err
    # a log under another suffix would be an npz under a false name
    csv = tmp_path / "r.csv"
    assert main(["record", str(csv), "--bind", f"ipc://{ipc_dir}/b", "--duration", "5"]) == 2
    assert "r.npz" in capsys.readouterr().err and not csv.exists()
    assert main(["sim", "--task", "hold", "--speed", "max", "--no-publish",
                 "--record", str(missing)]) == 2
    assert "cannot write a log there" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no temporary file left either


def test_a_failed_final_write_keeps_the_packets_in_a_rescue_file(tmp_path, robot):
    where = tmp_path / "gone"
    where.mkdir()
    states = [synthetic_state(k) for k in range(100)]
    writer = LogWriter(where / "run.npz", robot)
    for s in states:
        writer.append(s)
    shutil.rmtree(where)  # e.g. the disk it was on went away
    with pytest.raises(LogPathError, match="the 100 recorded packets are in") as e:
        writer.close()
    rescue = Path(str(e.value).rsplit(" are in ", 1)[1])
    try:
        header, arrays = read_log(rescue)
        assert header["count"] == 100
        assert np.array_equal(arrays["tau"], np.array([s.tau for s in states]))
    finally:
        rescue.unlink()


def test_sigterm_ends_a_recording_and_keeps_it(tmp_path, ipc_dir):
    endpoint = f"ipc://{ipc_dir}/states"
    path = tmp_path / "r.npz"
    rec = subprocess.Popen(CLI + ["record", str(path), "--bind", endpoint],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "recording" in rec.stderr.readline()
        with RobotClient([endpoint], None, handshake_timeout=30) as c:
            assert c.ready
            for k in range(300):
                c.publish(synthetic_state(k))
        time.sleep(1.0)  # (not an assertion: the recorder drains what arrived either way)
        rec.send_signal(signal.SIGTERM)
        out, err = rec.communicate(timeout=60)
    finally:
        rec.kill()
    assert rec.returncode == 0, err
    header, arrays = read_log(path)
    assert header["count"] >= 1 and f"{header['count']} packets recorded" in out
    assert np.array_equal(arrays["seq"], np.arange(header["count"]))


# ---- publishing without a daemon ------------------------------------------------------------

def test_sim_and_replay_without_a_daemon_are_an_error(tmp_path, ipc_dir, capsys):
    nowhere = ["--connect", f"ipc://{ipc_dir}/s", "--predictions", f"ipc://{ipc_dir}/p",
               "--wait", "0.3"]
    log = tmp_path / "hold.npz"
    assert main(["sim", "--task", "hold", "--speed", "max", *nowhere, "--record", str(log)]) == 3
    err = capsys.readouterr().err
    assert "no daemon answered within 0.3 s" in err and "0 of 1 state endpoints" in err
    assert not log.exists()  # nothing recorded either: the command did not run
    assert main(["sim", "--task", "hold", "--speed", "max", "--no-publish", "--record",
                 str(log)]) == 0
    assert main(["replay", str(log), "--speed", "max", *nowhere]) == 3
    assert "no daemon answered" in capsys.readouterr().err
    # asked for: sent anyway
    assert main(["replay", str(log), "--speed", "max", *nowhere, "--no-daemon-ok"]) == 0
    assert "2000 packets" in capsys.readouterr().out


def test_an_endpoint_without_transport_is_a_clear_error(capsys):
    assert main(["sim", "--task", "hold", "--speed", "max", "--connect", "127.0.0.1:5601"]) == 2
    assert "no transport" in capsys.readouterr().err


# ---- replay ---------------------------------------------------------------------------------

def test_replay_says_when_accelerations_are_estimated(tmp_path, robot, capsys):
    from test_sources_log import _bag_signals, _write_bag

    states = [synthetic_state(k) for k in range(50)]
    for s in states[:20]:
        s.qdd = None
    log = tmp_path / "partly.npz"
    write_log(log, robot, states)
    assert main(["replay", str(log), "--speed", "max", "--no-publish"]) == 0
    assert "20 of 50 packets of this log carry no accelerations" in capsys.readouterr().err
    write_log(tmp_path / "full.npz", robot, [synthetic_state(k) for k in range(50)])
    assert main(["replay", str(tmp_path / "full.npz"), "--speed", "max", "--no-publish"]) == 0
    assert "accelerations" not in capsys.readouterr().err
    t, q, qd, _, tau = _bag_signals(robot, m=50)
    _write_bag(tmp_path / "bag", "mcap", t, q, qd, tau, robot.joints)
    assert main(["replay", str(tmp_path / "bag"), "--speed", "max", "--no-publish",
                 "--window", "9"]) == 0
    assert "a ROS 2 bag carries no accelerations: they are estimated from the velocities " \
           "(causal least-squares slope over 9 samples, 4 ms behind" in capsys.readouterr().err


def test_an_empty_bag_folder_is_named_as_such(tmp_path, capsys):
    (tmp_path / "bag").mkdir()
    assert main(["replay", str(tmp_path / "bag"), "--no-publish"]) == 2
    err = capsys.readouterr().err
    assert "a directory without metadata.yaml" in err and "IsADirectoryError" not in err
    with pytest.raises(LogFormatError, match="metadata.yaml"):
        read_log(tmp_path / "bag")


# ---- simulation -----------------------------------------------------------------------------

def test_a_live_payload_swap_holds_past_the_cycle_boundary(robot):
    from rtlearn.sources.sim import SimSource

    contexts = []
    with SimSource(robot, task="hold", payload=["none", "light"], cycles=3,
                   schedule=[(5.0, "light")]) as src:
        for s in src:
            contexts.append(s.context)
            if s.seq == 100:
                src.set_payload("heavy")  # what --stdin-payloads does
    # cycle 2 (light) and 3 (none) would start at 2 s and 4 s; the scheduled swap still acts
    assert contexts[:101] == ["none"] * 101
    assert set(contexts[102:5000]) == {"heavy"}
    assert set(contexts[5001:]) == {"light"}


def test_no_pybullet_banner_on_a_command():
    done = subprocess.run(CLI + ["sim", "--task", "hold", "--speed", "max", "--no-publish"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "pybullet build time" not in done.stdout + done.stderr
    assert "2000 packets" in done.stdout


# ---- Ctrl-C and SIGTERM ---------------------------------------------------------------------

def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_demo_stops_cleanly_and_removes_its_temporary_folder(tmp_path, sig):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    demo = subprocess.Popen(CLI + ["demo", "--seconds", "30"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=dict(os.environ, TMPDIR=str(tmp)))
    try:
        assert demo.stdout.readline().startswith("rtlearn demo:")
        assert demo.stdout.readline().startswith("watch it live")
        assert demo.stdout.readline().startswith("t ")  # streaming: the daemon is up
        assert list(tmp.glob("rtlearn-demo-*"))
        if sig == signal.SIGINT:
            os.killpg(demo.pid, sig)  # Ctrl-C reaches the terminal's whole process group
        else:
            demo.send_signal(sig)
        out, err = demo.communicate(timeout=120)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
    assert demo.returncode == 130
    assert "Traceback" not in err and "rtlearn demo: interrupted" in err
    assert list(tmp.iterdir()) == []


def test_experiment_ctrl_c_prints_one_line_not_tracebacks():
    exp = subprocess.Popen(CLI + ["experiment", "payload-swap", "--trials", "2", "--workers", "2"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    try:
        for _ in range(600):  # until the trial processes run
            if len(children(exp.pid)) >= 2 or exp.poll() is not None:
                break
            time.sleep(0.1)
        assert len(children(exp.pid)) >= 2
        time.sleep(1.0)  # well inside the trials
        os.killpg(exp.pid, signal.SIGINT)
        out, err = exp.communicate(timeout=120)
    finally:
        if exp.poll() is None:
            os.killpg(exp.pid, signal.SIGKILL)
    assert exp.returncode == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert err.strip().endswith("rtlearn experiment: interrupted")


# ---- snapshots ------------------------------------------------------------------------------

def test_resume_error_names_the_key_that_differs(tmp_path):
    small = OnlineLearner(LearnerConfig(hidden=(8,), grad_clip=5.0))
    meta, arrays = snapshots.capture(small, ContextBank("default", 4), {})
    other = OnlineLearner(LearnerConfig(hidden=(16,), grad_clip=5.0))
    with pytest.raises(StateFileError) as e:
        snapshots.restore(meta, arrays, other, ContextBank("default", 4))
    msg = str(e.value)
    assert "learner.hidden: (8,) in the snapshot, (16,) here" in msg
    assert "grad_clip" not in msg and "memory" not in msg  # not the whole config


def test_random_bytes_as_a_snapshot_are_called_what_they_are(tmp_path):
    junk = tmp_path / "junk.rtsnap"
    junk.write_bytes(b"\x80\x04" + np.random.default_rng(0).bytes(500))
    with pytest.raises(StateFileError) as e:
        snapshots.read(junk)
    assert "not a valid rtlearn state file (not an .npz archive" in str(e.value)
    assert "pickle" not in str(e.value)


# ---- the demo's summary ---------------------------------------------------------------------

def summary(misses: int, learner: str = "mlp") -> dict:
    phase = lambda name, start: {"payload": name, "start_s": start, "samples": 3500,  # noqa: E731
                                 "rmse_nm": 1.0, "rmse_first_500ms_nm": 4.0,
                                 "rmse_after_500ms_nm": 0.5, "rmse_last_1s_nm": 0.4}
    ms = {"p50": 0.1, "p99": 0.3, "max": 1.0}
    return {"learner": learner,
            "phases": [phase("none", 0.0), phase("light", 3.5), phase("none", 7.0)],
            "packets": 10500, "predictions": 10500, "round_trip_ms": ms,
            "daemon": {"latency_ms": ms, "packets": {"lost": 0, "rejected_total": 0},
                       "contexts": {"switches": 3, "created": 2, "restored": 1,
                                    "auto": {"alarms": 0}},
                       "learning": {"steps": 1050, "step_ms": ms, "deadline_misses": misses}}}


def test_demo_summary_explains_deadline_misses_and_a_revisited_phase():
    text = report(summary(186))
    assert "deadline misses 186" in text
    assert "a deadline miss: the next 10 samples were ready" in text and "Nothing is lost" in text
    assert "the start of a revisited phase is still well above its end" in text
    assert "a deadline miss" not in report(summary(0))
    # the hidden layers are the MLP's; I-SSGPR stores whole models
    assert "hidden layers" in text and "hidden layers" not in report(summary(0, "issgpr"))


def test_demo_summary_counts_excluded_samples_as_done():
    class Daemon:
        calls = 0

        def status(self):
            self.calls += 1
            assert self.calls < 5, "waited for samples the screen had left out"
            return {"learner": {"queued_batches": 0},
                    "learning": {"samples": 1000 - 30, "excluded": {"outlier": 30}}}

    assert _final_status(Daemon(), 1000)["learning"]["excluded"] == {"outlier": 30}


def test_a_directory_named_like_a_log_is_refused(tmp_path, robot):
    (tmp_path / "folder.npz").mkdir()
    with pytest.raises(LogPathError, match="is a directory"):
        LogWriter(tmp_path / "folder.npz", robot)
