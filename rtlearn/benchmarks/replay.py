"""`rtlearn bench replay`: samples learned per second by `rtlearn fit` (in-process) and by a
replay at full speed through a daemon on loopback, on the same log, and which part of each
is the learning step itself (`OnlineLearner.learn_many`) -- the rest is what the path around
the step costs: the sample screen's forward pass, statistics, automatic contexts and, through
the daemon, sockets, the serving process and the pipe between the processes.

The replay is the one of `rtlearn replay --speed max`: the log's states published by a
RobotClient at most REPLAY_WINDOW ahead of the daemon's predictions, on the daemon's serving
CPUs; samples/s counts samples learned (or screened out), from the first send until the
learning process has taken every full batch.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from rtlearn.protocol.client import REPLAY_WINDOW, RobotClient
from rtlearn.service.config import load_config
from rtlearn.service.fit import Fit
from rtlearn.service.launch import DaemonProcess
from rtlearn.service.realtime import beside_daemon
from rtlearn.sources.log import LogSource, write_log
from rtlearn.sources.sim import SimSource

SETTLE_TIMEOUT = 600.0  # s a replay may take to be learned


def simulated_log(path: Path, seconds: float) -> Path:
    """A labelled lift log of about `seconds` (payloads none, light, heavy in turn)."""
    cycles = max(3, round(seconds / 3.5))  # a lift cycle lasts ~3.5 s
    payloads = (["none", "light", "heavy"] * cycles)[:cycles]
    with SimSource("kuka_iiwa", task="lift", payload=payloads, cycles=cycles, seed=0) as src:
        write_log(path, src.robot, src)
    return path


def timed_fit(log: Path, cfg) -> dict:
    """`rtlearn fit` of the log, with the time inside learn_many summed apart."""
    source = LogSource(log)
    states = list(source)  # read before the clock starts, as the daemon's client does its own
    fit = Fit(cfg, source.robot)
    learner = fit.core.learner
    step = learner.learn_many
    inside = [0.0]

    def learn_many(X, Y):
        t0 = time.perf_counter()
        loss = step(X, Y)
        inside[0] += time.perf_counter() - t0
        return loss

    learner.learn_many = learn_many
    t0 = time.perf_counter()
    fit.stream(states)
    fit.finish()
    wall = time.perf_counter() - t0
    steps = fit.core.stats.steps
    return {"samples": fit.samples, "seconds": wall, "samples_per_s": fit.samples / wall,
            "steps": steps, "step_ms_mean": inside[0] / steps * 1e3,
            "step_only_samples_per_s": fit.samples / inside[0], "step_fraction": inside[0] / wall}


def timed_replay(log: Path, config: dict, work: Path, step_ms: float) -> dict:
    """The log replayed at full speed through a daemon subprocess (ipc)."""
    source = LogSource(log)
    states = list(source)
    # the samples after the last full batch wait in the serving process until the next
    # packet or shutdown; context switches hand partial batches over, so how many wait varies
    full = len(states) - load_config(None, config)["learner"]["batch_size"] + 1
    with DaemonProcess(work, config, transport="ipc") as daemon:
        pids = {"serving": daemon.proc.pid, "learning": _child(daemon.proc.pid)}
        with beside_daemon(load_config(None, config)["realtime"]):
            with RobotClient([daemon.endpoints["state"]], daemon.endpoints["prediction"]) as c:
                cpu0 = {k: _cpu_seconds(p) for k, p in pids.items()}
                client0 = time.process_time()
                t0 = time.perf_counter()
                for s in states:
                    c.publish(s)
                    c.wait_in_flight(REPLAY_WINDOW)
                c.wait_in_flight(0)
                sent = time.perf_counter() - t0
                client = time.process_time() - client0
                st = _learned(daemon, full)
                wall = time.perf_counter() - t0
                cpu = {k: _cpu_seconds(p) - cpu0[k] for k, p in pids.items()}
    learned = st["learning"]["samples"] + sum(st["learning"]["excluded"].values())
    steps = st["learning"]["steps"]
    return {"samples": learned, "seconds": wall, "samples_per_s": learned / wall,
            "sent_seconds": sent, "steps": steps, "lost": st["packets"]["lost"],
            "daemon_step_ms": st["learning"]["step_ms"],
            # CPU seconds each process used over the run: wall time they did not get is the
            # machine's load, not our path
            "cpu_s": {"client": client, **cpu},
            "backpressure_waits": st["learning"]["backpressure_waits"],
            # learn_many's mean time from the fit run just before, times the daemon's steps
            "step_fraction": steps * step_ms / 1e3 / wall}


def _child(pid: int) -> int:
    """The learning process: the serving process's one child."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return int(children[0])


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _learned(daemon: DaemonProcess, samples: int) -> dict:
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        try:
            st = daemon.status()  # answered after the batches queued before it
        except TimeoutError:
            if time.monotonic() > deadline:
                raise
            continue
        L = st["learning"]
        settled = (L["samples"] + sum(L["excluded"].values()) >= samples
                   and st["learner"]["queued_batches"] == 0)
        if settled or time.monotonic() > deadline:
            return st
        time.sleep(0.01)


def run_replay_bench(log: str | None = None, seconds: float = 60.0, config: dict | None = None,
                     workdir: str | None = None, out=...) -> dict:
    """fit, then replay, of `log` (default: a simulated lift of `seconds`)."""
    out = sys.stderr if out is ... else out
    say = (lambda text: print(text, file=out, flush=True)) if out else (lambda text: None)
    tmp = tempfile.TemporaryDirectory(prefix="rtlearn-bench-") if workdir is None else None
    work = Path(workdir or tmp.name)
    config = {"snapshots": {"interval": 0.0}, **(config or {})}
    try:
        if log is None:
            say(f"simulating a {seconds:g} s lift log ...")
            log = simulated_log(work / "lift.npz", seconds)
        count = len(LogSource(log))
        result = {"log": str(log), "samples": count, "config": config}
        say(f"fit: {count} samples in-process ...")
        result["fit"] = timed_fit(Path(log), load_config(None, config))
        say(f"replay: {count} samples through the daemon at full speed ...")
        result["replay"] = timed_replay(Path(log), config, work / "daemon",
                                        result["fit"]["step_ms_mean"])
        say(summary(result))
        return result
    finally:
        if tmp is not None:
            tmp.cleanup()


def summary(r: dict) -> str:
    f, p = r["fit"], r["replay"]
    return "\n".join([
        f"learning step (learn_many)  : mean {f['step_ms_mean']:.3f} ms per batch "
        f"= {f['step_only_samples_per_s']:,.0f} samples/s if it were all",
        f"fit                         : {f['samples_per_s']:,.0f} samples/s ({f['samples']} in "
        f"{f['seconds']:.2f} s), the step {f['step_fraction']:.0%} of the time",
        f"replay --speed max (daemon) : {p['samples_per_s']:,.0f} samples/s learned "
        f"({p['samples']} in {p['seconds']:.2f} s; sent in {p['sent_seconds']:.2f} s), the step "
        f"~{p['step_fraction']:.0%} of the time; daemon step p50 "
        f"{p['daemon_step_ms']['p50']:.3f} ms (screen + step + guards); lost {p['lost']}",
        "  CPU seconds over the replay: " + ", ".join(f"{k} {v:.2f}" for k, v in
                                                      p["cpu_s"].items())
        + f" (of {p['seconds']:.2f} s wall on {os.cpu_count()} CPUs)",
    ])
