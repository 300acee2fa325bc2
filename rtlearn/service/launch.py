"""Start and stop a daemon subprocess on private endpoints: used by `rtlearn demo`,
`rtlearn bench serve` and the tests. The daemon runs exactly as `rtlearn serve` does."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from rtlearn.protocol.schema import ControlError
from rtlearn.service.config import toml_value
from rtlearn.service.control import ControlClient


def _die_with_parent() -> None:
    """Linux: SIGTERM the daemon when the process that launched it dies (no orphans left
    holding ports after a killed test or benchmark)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def endpoints(transport: str, workdir: Path,
              names: tuple[str, ...] = ("state", "prediction", "control")) -> dict:
    """Fresh endpoints (by default the daemon's state / prediction / control): 'tcp' on
    loopback or 'ipc' in workdir."""
    if transport == "tcp":
        return {k: f"tcp://127.0.0.1:{free_tcp_port()}" for k in names}
    if transport == "ipc":
        return {k: f"ipc://{workdir / (k + '.sock')}" for k in names}
    raise ValueError(f"transport is tcp or ipc, not {transport!r}")


def to_toml(sections: dict) -> str:
    """A daemon config as TOML text."""
    out = []
    for section, keys in sections.items():
        out.append(f"[{section}]")
        out += [f"{k} = {toml_value(v)}" for k, v in keys.items()]
        out.append("")
    return "\n".join(out)


class DaemonProcess:
    """`rtlearn serve` in a subprocess with a config written to workdir/daemon.toml."""

    def __init__(self, workdir: str | Path, config: dict | None = None, robot: str = "kuka_iiwa",
                 transport: str = "ipc", resume: bool = False, fresh: bool = False, log_file: str | None = "daemon.log",
                 ready_timeout: float = 60.0, server_key: str | None = None,
                 client_keys: tuple[str, str] | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        sections = {k: dict(v) for k, v in (config or {}).items()}
        self.endpoints = {**endpoints(transport, self.workdir), **sections.pop("endpoints", {})}
        # a private telemetry endpoint too: two daemons must not both want the default one
        tel = sections.setdefault("telemetry", {})
        tel.setdefault("endpoint", endpoints(transport, self.workdir, ("telemetry",))["telemetry"])
        self.telemetry_endpoint = tel["endpoint"]
        sections.setdefault("snapshots", {}).setdefault("dir", str(self.workdir / "snapshots"))
        self.config = {"endpoints": self.endpoints, **sections}
        self.config_path = self.workdir / "daemon.toml"
        self.config_path.write_text(to_toml(self.config))
        self.snapshot_dir = Path(self.config["snapshots"]["dir"])
        cmd = [sys.executable, "-m", "rtlearn.cli", "serve", "--robot", robot,
               "--config", str(self.config_path)] + (["--resume"] if resume else []) \
            + (["--fresh"] if fresh else [])
        self.log_path = self.workdir / log_file if log_file else None
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=_die_with_parent)
        if self.log_path:
            out.close()
        self.ctl = ControlClient(self.endpoints["control"], 2.0, server_key, client_keys)
        try:
            self._wait_ready(ready_timeout)
        except BaseException:  # Ctrl-C while it starts: no daemon left behind
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                self.status()
                return
            except (TimeoutError, ControlError):
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"daemon not ready within {timeout:g} s: {self.log_tail()}")

    def log_tail(self, chars: int = 2000) -> str:
        return self.log_path.read_text()[-chars:] if self.log_path and self.log_path.exists() else ""

    def status(self) -> dict:
        return self.ctl.request("status")

    def request(self, cmd: str, **args):
        return self.ctl.request(cmd, **args)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM: the daemon learns what it buffered, snapshots and exits."""
        self.ctl.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL, no chance to clean up (the crash case)."""
        self.ctl.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.stop()
