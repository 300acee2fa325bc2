"""`rtlearn top` driven against a real daemon subprocess: the rich view captured from a
forced terminal, the plain lines of a pipe, and the `q` / Ctrl-C exits on a real pseudo-
terminal."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import numpy as np
import pytest
import zmq

from rtlearn.protocol.client import RobotClient
from rtlearn.service.synthetic import synthetic_stream

from test_service_daemon import SMALL, send_all, wait_learned

rich = pytest.importorskip("rich", reason="rtlearn top needs rich (the test extra has it)")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    from rtlearn.service.launch import DaemonProcess

    with DaemonProcess(tmp_path_factory.mktemp("top"), SMALL) as d:
        with RobotClient([d.endpoints["state"]], d.endpoints["prediction"]) as client:
            send_all(client, synthetic_stream(1000, context="light"))
            client.publish_frame(b"\xc1")
        wait_learned(d, 1000)
        yield d


def top(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rtlearn.cli", "top", *args],
                          capture_output=True, text=True, timeout=120, **kw)


def test_the_terminal_view_redraws_in_place_with_the_daemons_numbers(daemon):
    from rich.console import Console

    from rtlearn.commands.top import watch

    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(daemon.telemetry_endpoint)
    console = Console(file=io.StringIO(), force_terminal=True, width=160, color_system=None)
    try:
        assert watch(sock, console, live=True, count=3) == 0
    finally:
        sock.close(linger=0)
    status = daemon.status()
    out = console.file.getvalue()
    assert out.count("\x1b[1A") > 20  # cursor up: the later frames overwrite the first
    frame = out[out.rindex("rtlearn top"):]
    assert "context light" in frame and "1000 samples" in frame
    assert re.search(r"received / predicted\s+1001 / 1000", frame)
    assert "malformed 1" in frame
    recent = np.sqrt(status["prequential"]["recent_mse_per_joint"])
    for j in range(7):
        assert re.search(rf"lbr_iiwa_joint_{j + 1}\s+-\s+{recent[j]:.4f}", frame)
    assert re.search(r"default\s+light\s+created \(label\)", frame)
    assert re.search(r"out\s+[0-9.e-]+ \[", frame)  # rates of the output layer
    assert "latency ms (last 1000)" in frame


def test_piped_it_prints_plain_lines(daemon):
    done = top("--config", str(daemon.config_path), "--count", "2", "--interval", "0.1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2
    for line in lines:
        assert "\x1b" not in line
        assert re.search(r"ctx=light recv=1001 pred=1000 rej=malformed:1 lost=0 ", line), line
        assert len(re.search(r"err_rms=\[([^]]*)\]", line).group(1).split()) == 7


def test_without_a_daemon_it_says_so_and_exits_2(tmp_path):
    done = top("--endpoint", f"ipc://{tmp_path}/none", "--wait", "0.5")
    assert done.returncode == 2
    assert "no telemetry within 0.5 s" in done.stderr
    (tmp_path / "bad.toml").write_text("[telemetry]\nrate = 3\n")
    done = top("--config", str(tmp_path / "bad.toml"))
    assert done.returncode == 2 and "unknown key telemetry.rate" in done.stderr


def _on_a_terminal(daemon):
    """`rtlearn top` on a pseudo-terminal once its first frame is drawn: (process, master
    fd, output so far)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))  # rows, cols
    proc = subprocess.Popen([sys.executable, "-m", "rtlearn.cli", "top", "--endpoint",
                             daemon.telemetry_endpoint], stdin=slave, stdout=slave,
                            stderr=slave, start_new_session=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 60
    while b"packets and latency" not in out and time.monotonic() < deadline:
        if select.select([master], [], [], 0.5)[0]:
            out += os.read(master, 65536)
    assert b"packets and latency" in out, out[-2000:]
    return proc, master, out


def _finish(proc, master, out: bytes) -> bytes:
    # keep reading while it exits: a full terminal buffer (a few kB, one frame) would block
    # its last writes, and with them its exit
    deadline = time.monotonic() + 20
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    out += os.read(master, 65536)
                except OSError:
                    break
        proc.wait(max(0.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
    while select.select([master], [], [], 0.2)[0]:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal's other end is gone
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return out


@pytest.mark.parametrize("how", ["q", "ctrl-c"])
def test_on_a_terminal_q_and_ctrl_c_exit_cleanly(daemon, how):
    proc, master, out = _on_a_terminal(daemon)
    if how == "q":
        os.write(master, b"q")
    else:
        proc.send_signal(signal.SIGINT)
    out = _finish(proc, master, out)
    assert proc.returncode == 0
    assert b"Traceback" not in out
    assert out.endswith(b"\x1b[?25h") or b"\x1b[?25h" in out[-200:]  # cursor shown again
