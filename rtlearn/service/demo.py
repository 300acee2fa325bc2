"""`rtlearn demo`: the daemon and a simulated KUKA lifting none / light / heavy payloads in turn,
on loopback, with a live progress line and a summary.

The prediction error per phase is computed here, on the robot side, from the predictions
received and the torques actually applied: an independent view of what the daemon learned.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time

import numpy as np

from rtlearn.protocol.client import RobotClient
from rtlearn.service.config import load_config
from rtlearn.service.launch import DaemonProcess
from rtlearn.service.realtime import beside_daemon

PAYLOADS = ("none", "light", "heavy")
CYCLE_S = 3.5  # one lift, about


class StatusPoller(threading.Thread):
    """Keeps the latest daemon status for the progress line, off the 1 kHz loop."""

    def __init__(self, daemon: DaemonProcess, period: float = 0.5):
        super().__init__(daemon=True)
        self.daemon_proc, self.period = daemon, period
        self.latest: dict | None = None
        self.halt = threading.Event()

    def run(self) -> None:
        from rtlearn.service.control import ControlClient

        with ControlClient(self.daemon_proc.endpoints["control"], timeout=2.0) as ctl:
            while not self.halt.wait(self.period):
                try:
                    self.latest = ctl.request("status")
                except Exception:  # a slow reply only delays the display
                    pass


def run_demo(seconds: float = 20.0, transport: str = "tcp", progress: bool = True,
             learner: dict | None = None, out=..., auto: bool = False) -> dict:
    """auto: the states carry no payload label; the daemon finds the swaps itself."""
    from rtlearn.sources.sim import SimSource

    out = sys.stdout if out is ... else out  # the stream of the call, not of the import
    cycles = max(1, int(round(seconds / CYCLE_S)))
    source = SimSource("kuka_iiwa", task="lift", payload=list(PAYLOADS), cycles=cycles,
                       realtime=True)
    total = len(source)
    config = {"snapshots": {"interval": 0.0}}
    if learner:
        config["learner"] = learner
    tau = np.zeros((total, source.robot.n_joints))
    pred = np.full_like(tau, np.nan)
    ctx: list[str] = [""] * total
    rtt = np.full(total, np.nan)
    sent_at = np.zeros(total)
    kind = (learner or {}).get("kind", "mlp")
    print(f"rtlearn demo: {kind} learner, KUKA iiwa lift, payloads {' -> '.join(PAYLOADS)} x {cycles // 3 or 1}"
          f"{'' if cycles % 3 == 0 else ' (partial)'}, {total / 1000:.1f} s at 1 kHz, "
          f"daemon on {transport} loopback, "
          f"{'unlabelled: the daemon finds the swaps' if auto else 'payload labels sent'}",
          file=out)
    with tempfile.TemporaryDirectory(prefix="rtlearn-demo-") as work:
        # the daemon first (it plans its CPUs from ours), then this process, the robot side,
        # onto its serving CPUs
        with DaemonProcess(work, config, transport=transport) as daemon, \
                beside_daemon(load_config(None, config)["realtime"]):
            print(f"watch it live in another terminal: rtlearn top --endpoint "
                  f"{daemon.telemetry_endpoint}", file=out)
            poller = StatusPoller(daemon)
            poller.start()
            client = RobotClient([daemon.endpoints["state"]], daemon.endpoints["prediction"],
                                 robot=source.robot)

            def take(p) -> None:
                if 0 <= p.seq < total:
                    pred[p.seq] = p.tau
                    rtt[p.seq] = time.perf_counter() - sent_at[p.seq]

            # a terminal gets one line redrawn 4 times a second, a pipe or file a line per 2 s
            tty = hasattr(out, "isatty") and out.isatty()
            every, last_line = (0.25 if tty else 2.0), time.monotonic()
            try:
                for s in source:
                    tau[s.seq], ctx[s.seq] = s.tau, s.context
                    if auto:
                        s.context = None
                    sent_at[s.seq] = time.perf_counter()
                    client.publish(s)
                    while (p := client.poll_prediction()) is not None:
                        take(p)
                    if progress and time.monotonic() - last_line > every:
                        last_line = time.monotonic()
                        print(("\r" if tty else "") + _progress(s, pred, tau, poller.latest),
                              end="" if tty else "\n", file=out, flush=True)
                while np.isnan(pred[:, 0]).any() and (p := client.recv_prediction(5.0)):
                    take(p)
            finally:
                client.close()
                source.close()
            st = _final_status(daemon, total)
            poller.halt.set()
            daemon.stop()
    if progress and tty:
        print(file=out)
    result = _summarise(tau, pred, ctx, rtt, st)
    print(report(result), file=out)
    return result


def _progress(s, pred, tau, status) -> str:
    lo = max(0, s.seq - 500)
    ok = ~np.isnan(pred[lo:s.seq + 1, 0])
    err = pred[lo:s.seq + 1][ok] - tau[lo:s.seq + 1][ok]
    rmse = f"{np.sqrt((err ** 2).mean()):6.2f}" if ok.any() else "     -"
    line = f"t {s.t:5.1f} s  RMSE(last 0.5 s) {rmse} N*m"
    if status:
        lat = status["latency_ms"]
        line += (f"  | daemon p99 {lat['p99'] or 0:.2f} ms  steps {status['learning']['steps']}"
                 f"  switches {status['contexts']['switches']}  lost {status['packets']['lost']}")
    return line


def _final_status(daemon: DaemonProcess, total: int, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        st = daemon.status()
        # samples the screen left out (learning.excluded) are done with too
        done = st["learning"]["samples"] + sum(st["learning"]["excluded"].values())
        if (st["learner"]["queued_batches"] == 0 and done >= total - 9) \
                or time.monotonic() > deadline:
            return st
        time.sleep(0.05)


def _summarise(tau, pred, ctx, rtt, st) -> dict:
    phases = []
    start = 0
    for k in range(1, len(ctx) + 1):
        if k == len(ctx) or ctx[k] != ctx[start]:
            sq = (pred[start:k] - tau[start:k]) ** 2  # NaN where no prediction came back
            phases.append({"payload": ctx[start], "start_s": start / 1000, "samples": k - start,
                           "rmse_nm": _rmse(sq), "rmse_first_500ms_nm": _rmse(sq[:500]),
                           "rmse_after_500ms_nm": _rmse(sq[500:]),
                           "rmse_last_1s_nm": _rmse(sq[-1000:]),
                           "rmse_per_joint_nm": np.sqrt(np.nanmean(sq, axis=0)).tolist()})
            start = k
    ok = ~np.isnan(rtt)
    r = rtt[ok] * 1e3
    return {"learner": st["learner"]["kind"], "phases": phases, "packets": len(ctx),
            "predictions": int(ok.sum()),
            "round_trip_ms": {"p50": float(np.percentile(r, 50)), "p99": float(np.percentile(r, 99)),
                              "max": float(r.max())},
            "daemon": {"latency_ms": st["latency_ms"], "packets": st["packets"],
                       "contexts": st["contexts"], "learning": st["learning"]}}


def _detections(auto: dict, phases: list[dict]) -> list[str]:
    """The daemon's automatic decisions, beside the swaps the robot side made."""
    if not auto["alarms"]:
        return [f"payload changes found without labels: none ({len(phases) - 1} swaps made)"]
    lines = [f"payload changes found without labels: {auto['alarms']} alarms for "
             f"{len(phases) - 1} swaps made: {auto['restored']} restored a stored context, "
             f"{auto['created']} opened a new one, {auto['dismissed']} dismissed"]
    for d in auto["recent"]:
        lines.append(f"  {d['from']} -> {d['context']}: {d['decision']} ({d['delay_samples']} "
                     f"samples after the estimated onset)")
    return lines


def _rmse(sq: np.ndarray) -> float:
    return float(np.sqrt(np.nanmean(sq)))


def report(r: dict) -> str:
    lines = ["", "prediction error per phase, RMSE over joints in N*m (robot side: predicted vs "
             "applied torque)",
             f"  {'phase':>5}  {'payload':<7} {'from':>6}  {'samples':>7}  {'whole':>7}  "
             f"{'first 0.5 s':>11}  {'after 0.5 s':>11}  {'last 1 s':>8}"]
    for i, p in enumerate(r["phases"], 1):
        lines.append(f"  {i:>5}  {p['payload']:<7} {p['start_s']:5.1f}s  {p['samples']:>7}  "
                     f"{p['rmse_nm']:7.3f}  {p['rmse_first_500ms_nm']:11.3f}  "
                     f"{p['rmse_after_500ms_nm']:11.3f}  {p['rmse_last_1s_nm']:8.3f}")
    firsts, repeats = {}, []
    for p in r["phases"]:
        if p["payload"] in firsts:
            repeats.append(f"{p['payload']} {firsts[p['payload']]:.2f} -> "
                           f"{p['rmse_after_500ms_nm']:.2f}")
        else:
            firsts[p["payload"]] = p["rmse_after_500ms_nm"]
    lines.append("  (a phase starts when the gripper takes the next payload at the bottom of a "
                 "lift: its first 0.5 s hold the swap's transient, torques jumping by the "
                 "payload's weight with accelerations the model has rarely seen, so the error "
                 "there is larger than after it)")
    if repeats:
        lines.append("  same payload again, after 0.5 s, first visit -> second: " + ", ".join(repeats))
        lines.append("  (a payload seen before gets its stored model back at once"
                     + (" (its output layer, blended with the current one by weights "
                        "learned from the earlier returns: half and half at the first), but that "
                        "layer was stored on hidden layers that have learned from the other "
                        "payloads since, and " if r["learner"] == "mlp" else ", but ")
                     + "the swap's transient is there again: the start of a revisited phase is "
                     "still well above its end)")
    d = r["daemon"]
    lat, rt, pk, cx, ln = d["latency_ms"], r["round_trip_ms"], d["packets"], d["contexts"], d["learning"]
    lines += [
        f"latency inside the daemon: p50 {lat['p50']:.3f}  p99 {lat['p99']:.3f}  max {lat['max']:.3f} ms",
        f"round trip (robot side, read once per 1 ms cycle): p50 {rt['p50']:.3f}  "
        f"p99 {rt['p99']:.3f}  max {rt['max']:.3f} ms",
        f"context switches: {cx['switches']} ({cx['created']} new, {cx['restored']} restored)",
        *_detections(cx["auto"], r["phases"]),
        f"packets: {r['packets']} sent, {r['predictions']} predictions back, {pk['lost']} lost, "
        f"{pk['rejected_total']} rejected; learning steps {ln['steps']} "
        f"(step p50 {ln['step_ms']['p50']:.2f} ms, deadline misses {ln['deadline_misses']})",
    ]
    if ln["deadline_misses"]:
        lines.append("  (a deadline miss: the next 10 samples were ready while the learning step "
                     "before was still running, so they waited in the queue. Nothing is lost "
                     "and predictions never wait for learning; learning just runs behind the "
                     "stream, as it does when the machine is busy)")
    return "\n".join(lines)
