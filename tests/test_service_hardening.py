"""Issue 12: starts, snapshots, sequence rules, socket limits, contexts and control options,
each against a real daemon subprocess on loopback."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from rtlearn.service.launch import DaemonProcess, free_tcp_port, to_toml

TINY = {"learner": {"hidden": [8]}}


def serve(config_path, *extra, timeout: float = 120) -> subprocess.CompletedProcess:
    """`rtlearn serve` expected to end by itself (a refused or failed start)."""
    return subprocess.run([sys.executable, "-m", "rtlearn.cli", "serve", "--config",
                           str(config_path), *extra], capture_output=True, text=True,
                          timeout=timeout)


def test_ipv6_loopback_control_endpoint_serves(tmp_path):
    control = f"tcp://[::1]:{free_tcp_port()}"
    with DaemonProcess(tmp_path, {**TINY, "endpoints": {"control": control}}) as d:
        assert d.status()["robot"] == "kuka_iiwa"


def test_a_bind_failure_exits_2_naming_the_socket_and_writes_nothing(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = {**TINY, "endpoints": {"control": f"tcp://127.0.0.1:{port}",
                                     "state": f"ipc://{tmp_path}/s", "prediction": f"ipc://{tmp_path}/p"},
               "snapshots": {"dir": str(tmp_path / "snaps")}}
        (tmp_path / "d.toml").write_text(to_toml(cfg))
        done = serve(tmp_path / "d.toml")
    assert done.returncode == 2, done.stderr
    assert f"cannot bind the control socket to tcp://127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "snaps").exists() or not any((tmp_path / "snaps").iterdir())
