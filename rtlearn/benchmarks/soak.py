"""`rtlearn bench soak`: a long run of a real daemon under a hostile stream.

A `rtlearn serve` subprocess on loopback is fed at 1 kHz with a simulated KUKA iiwa lifting no
payload, 1.5 kg and 4 kg in turn (PyBullet, sensor noise, context labels; one 21 s trial
simulated once and replayed with a continuing seq), and with hostile frames at `hostile_rate`
per second, in turn:

  malformed    random bytes                              -> rejected: malformed
  nan          a state with a NaN torque                 -> rejected: non_finite
  wrong_size   a 6-joint state                           -> rejected: bad_length
  torque_1e6   the next state with tau[1] = 1e6          -> excluded: torque_limit
  torque_spike the next state with tau[1] 60 N*m off     -> excluded: outlier
  far_seq      a copy of the last state 2^40 seqs ahead  -> a resync; the next two packets
                                                            out_of_order, the third resyncs

Every `report_every` seconds it records the resident memory of the daemon's processes (the
serving process and the learning process it forks), the daemon's counters, and the prediction
error over that interval computed here, on the robot side, from the predictions received and
the torques sent (corrupted states left out). The summary says whether memory stayed flat
after warm-up, whether the error fell, and whether every hostile frame was counted.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rtlearn.protocol.client import RobotClient
from rtlearn.protocol.schema import encode_state
from rtlearn.service.config import load_config
from rtlearn.service.launch import DaemonProcess
from rtlearn.service.realtime import beside_daemon
from rtlearn.protocol.state import JointState

HOSTILE = ("malformed", "nan", "wrong_size", "torque_1e6", "torque_spike", "far_seq")
RING = 1 << 16  # torques sent, by seq: predictions come back within milliseconds
SPIKE = 60.0    # N*m: within joint 2's 176 N*m limit, hundreds of residual scales off
FAR = 1 << 40


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process (MB), None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return sorted(int(p) for p in out.split())


def simulated_trial(seed: int = 0) -> list[JointState]:
    """One lift trial (none -> light -> heavy, twice), with sensor noise."""
    from rtlearn.sources.sim import SimSource

    source = SimSource("kuka_iiwa", task="lift", payload=["none", "light", "heavy"], cycles=6,
                       seed=seed, noise=1.0)
    try:
        return list(source)
    finally:
        source.close()


class Feeder:
    """The robot side: the replayed trial at 1 kHz, hostile frames in between, and the
    prediction error per report interval."""

    def __init__(self, client: RobotClient, trial: list[JointState], hostile_rate: float):
        self.client, self.trial = client, trial
        self.every = int(1000 / hostile_rate) if hostile_rate > 0 else 0
        self.seq = 0
        self.sent_hostile = dict.fromkeys(HOSTILE, 0)
        self.tau = np.zeros((RING, trial[0].tau.shape[0]))
        self.clean = np.zeros(RING, bool)
        self.sq, self.count, self.received = 0.0, 0, 0

    def send_next(self) -> None:
        k = self.seq
        base = self.trial[k % len(self.trial)]
        s = JointState(k, k * 1e-3, base.q, base.qd, base.qdd, base.tau, base.context)
        kind = HOSTILE[(k // self.every) % len(HOSTILE)] if self.every and k % self.every == 0 \
            and k > 0 else None
        clean = True
        if kind in ("malformed", "nan", "wrong_size", "far_seq"):
            self.client.publish_frame(self._frame(kind, s))
        elif kind == "torque_1e6" or kind == "torque_spike":
            s.tau = s.tau.copy()
            s.tau[1] = 1e6 if kind == "torque_1e6" else s.tau[1] + SPIKE
            clean = False
        if kind is not None:
            self.sent_hostile[kind] += 1
        self.client.publish(s)
        self.tau[k % RING] = s.tau
        self.clean[k % RING] = clean
        self.seq += 1

    def _frame(self, kind: str, s: JointState) -> bytes:
        stream = self.client.stream
        if kind == "malformed":
            return b"\xc1" + os.urandom(24)  # 0xc1 is never used in msgpack
        if kind == "nan":
            tau = s.tau.copy()
            tau[2] = np.nan
            return encode_state(JointState(s.seq, s.t, s.q, s.qd, s.qdd, tau, s.context), stream)
        if kind == "wrong_size":
            return encode_state(JointState(s.seq, s.t, s.q[:6], s.qd[:6], s.qdd[:6], s.tau[:6],
                                           s.context), stream)
        return encode_state(JointState(s.seq - 1 + FAR, s.t, s.q, s.qd, s.qdd, s.tau,
                                       s.context), stream)  # far_seq

    def take_predictions(self, timeout: float) -> None:
        p = self.client.recv_prediction(timeout)
        while p is not None:
            self.received += 1
            if self.seq - RING < p.seq < self.seq and self.clean[p.seq % RING] and p.valid:
                err = p.tau - self.tau[p.seq % RING]
                self.sq += float(err @ err) / err.shape[0]
                self.count += 1
            p = self.client.poll_prediction()

    def window_rmse(self) -> float | None:
        rmse = float(np.sqrt(self.sq / self.count)) if self.count else None
        self.sq, self.count = 0.0, 0
        return rmse


def run_soak(seconds: float, hostile_rate: float = 5.0, report_every: float | None = None,
             config: dict | None = None, workdir: str | None = None, out=...) -> dict:
    """Feed a daemon for `seconds`; returns the result (JSON-able; `report` makes it a table).
    Progress lines go to `out` (default: the current sys.stderr; None: silent)."""
    out = sys.stderr if out is ... else out
    say = (lambda text: print(text, file=out, flush=True)) if out else (lambda text: None)
    report_every = report_every or max(1.0, seconds / 20)
    config = {"snapshots": {"interval": 10.0}, **(config or {})}
    say("simulating one 21 s lift trial ...")
    trial = simulated_trial()
    tmp = tempfile.TemporaryDirectory(prefix="rtlearn-soak-") if workdir is None else None
    work = Path(workdir or tmp.name)
    result = {"seconds": seconds, "rate_hz": 1000.0, "hostile_per_s": hostile_rate,
              "report_every_s": report_every, "config": config, "trial_samples": len(trial)}
    try:
        with DaemonProcess(work, config, transport="tcp") as daemon, \
                beside_daemon(load_config(None, config)["realtime"]):
            pids = [daemon.proc.pid] + children(daemon.proc.pid)
            result["pids"] = {"serving": pids[0], "learning": pids[1:]}
            with RobotClient([daemon.endpoints["state"]], daemon.endpoints["prediction"]) as c:
                feeder = Feeder(c, trial, hostile_rate)
                result["rows"] = _feed(daemon, feeder, pids, seconds, report_every, say)
                final = _settled(daemon, feeder, load_config(None, config)["learner"]["batch_size"])
            result["sent"] = {"states": feeder.seq, "hostile": feeder.sent_hostile}
            result["predictions_received"] = feeder.received
            result["exit_code"] = daemon.stop()
        result["final_status"] = {k: final[k] for k in ("packets", "learning", "prequential",
                                                        "contexts", "snapshots")}
        result["verdict"] = _verdict(result)
        return result
    finally:
        if tmp is not None:
            tmp.cleanup()


def _feed(daemon, feeder: Feeder, pids: list[int], seconds: float, report_every: float,
          say) -> list[dict]:
    rows = []
    say(HEADER)
    start = time.perf_counter()
    next_report = report_every
    while True:
        elapsed = time.perf_counter() - start
        if feeder.seq < elapsed * 1000.0:  # an absolute schedule: catch up after a delay
            feeder.send_next()
            continue
        if elapsed >= next_report or elapsed >= seconds:
            rows.append(_row(daemon, feeder, pids, elapsed))
            say(_row_text(rows[-1]))
            next_report += report_every
            if elapsed >= seconds:
                return rows
            continue
        feeder.take_predictions(min(1e-3, feeder.seq / 1000.0 - elapsed))


def _settled(daemon, feeder: Feeder, batch: int, timeout: float = 60.0) -> dict:
    """The status once the last hostile state is in a submitted batch (a batch more of clean
    states follows it) and every submitted batch is screened: at most the clean partial batch
    being filled is not."""
    feeder.every = 0
    for _ in range(batch):
        feeder.send_next()
    deadline = time.monotonic() + timeout
    while True:
        feeder.take_predictions(0.05)
        st = daemon.status()
        learned = st["learning"]["samples"] + sum(st["learning"]["excluded"].values())
        if st["packets"]["predicted"] - learned < batch or time.monotonic() > deadline:
            return st


def _row(daemon, feeder: Feeder, pids: list[int], elapsed: float) -> dict:
    if daemon.proc.poll() is not None:
        raise RuntimeError(f"the daemon died (exit {daemon.proc.returncode}): "
                           f"{daemon.log_tail()}")
    st = daemon.status()
    rss = [rss_mb(p) for p in pids]
    return {"t_s": round(elapsed, 2), "rss_mb": rss, "rss_total_mb": sum(r or 0 for r in rss),
            "rmse_nm": feeder.window_rmse(), "sent": feeder.seq,
            "received": st["packets"]["received"], "predicted": st["packets"]["predicted"],
            "rejected": st["packets"]["rejected"], "lost": st["packets"]["lost"],
            "resyncs": st["packets"]["resyncs"], "excluded": st["learning"]["excluded"],
            "rollbacks": st["learning"]["rollbacks"], "steps": st["learning"]["steps"],
            "deadline_misses": st["learning"]["deadline_misses"],
            "switches": st["contexts"]["switches"], "rates": st["learner"]["rates"],
            "daemon_recent_mse": float(np.mean(st["prequential"]["recent_mse_per_joint"]))}


def _verdict(r: dict) -> dict:
    """Flat memory after warm-up (the first quarter of the run, at most 60 s), a falling
    error, and every hostile frame counted."""
    rows = r["rows"]
    warm = next((row for row in rows if row["t_s"] >= min(60.0, r["seconds"] / 4)), rows[0])
    after = [row["rss_total_mb"] for row in rows if row["t_s"] >= warm["t_s"]]
    growth = (max(after) - warm["rss_total_mb"]) / warm["rss_total_mb"]
    errors = [row["rmse_nm"] for row in rows if row["rmse_nm"] is not None]
    third = max(1, len(errors) // 3)
    sent, st = r["sent"]["hostile"], r["final_status"]
    rejected, excluded = st["packets"]["rejected"], st["learning"]["excluded"]
    counted = {
        "malformed": rejected.get("malformed", 0) == sent["malformed"],
        "nan": rejected.get("non_finite", 0) == sent["nan"],
        "wrong_size": rejected.get("bad_length", 0) == sent["wrong_size"],
        "torque_1e6": excluded["torque_limit"] >= sent["torque_1e6"],
        "torque_spike": excluded["outlier"] >= sent["torque_spike"],
        # the jump resyncs, and so does the third packet after it below the new high water
        "far_seq": st["packets"]["resyncs"] == 2 * sent["far_seq"]
        and rejected.get("out_of_order", 0) == 2 * sent["far_seq"],
    }
    return {"warmup_s": warm["t_s"], "rss_growth_after_warmup": growth,
            "memory_flat": growth < 0.05,
            "rmse_first_third_nm": float(np.mean(errors[:third])),
            "rmse_last_third_nm": float(np.mean(errors[-third:])),
            "error_fell": float(np.mean(errors[-third:])) < float(np.mean(errors[:third])),
            "hostile_counted": counted, "all_hostile_counted": all(counted.values()),
            "rollbacks": st["learning"]["rollbacks"], "daemon_exit_code": r["exit_code"]}


def _row_text(row: dict) -> str:
    rmse = f"{row['rmse_nm']:6.3f}" if row["rmse_nm"] is not None else "     -"
    ex = row["excluded"]
    return (f"{row['t_s']:8.1f} {row['rss_total_mb']:8.1f} {rmse} {row['received']:9d} "
            f"{sum(row['rejected'].values()):7d} {ex['torque_limit'] + ex['velocity_limit']:6d} "
            f"{ex['outlier']:7d} {row['rollbacks']:5d} {row['lost']:5d} {row['resyncs']:6d} "
            f"{row['switches']:6d}")


HEADER = ("     t s   RSS MB   RMSE  received rejected limits outlier rollb  lost resync "
          "switch")


def report(r: dict) -> str:
    v = r["verdict"]
    lines = [f"soak: {r['seconds']:g} s at 1 kHz, {r['hostile_per_s']:g} hostile frames/s "
             f"({', '.join(f'{k} {n}' for k, n in r['sent']['hostile'].items())})",
             "RSS: serving + learning process; RMSE: predictions vs torques over the interval "
             "(N*m, robot side)", HEADER]
    lines += [_row_text(row) for row in r["rows"]]
    lines += [f"memory after warm-up ({v['warmup_s']:g} s): {v['rss_growth_after_warmup']:+.1%}"
              f" ({'flat' if v['memory_flat'] else 'GROWING'})",
              f"prediction RMSE first third {v['rmse_first_third_nm']:.3f}, last third "
              f"{v['rmse_last_third_nm']:.3f} N*m ({'falling' if v['error_fell'] else 'NOT falling'})",
              f"hostile frames counted: {'all' if v['all_hostile_counted'] else v['hostile_counted']}"
              f"; rollbacks {v['rollbacks']}; daemon exit code {v['daemon_exit_code']}"]
    return "\n".join(lines)
