"""The daemon's telemetry (docs/protocol.md, "Telemetry socket") and its recordings.

Everything here runs in the learning process, never on the per-packet path: the serving
process only writes each packet's arrival time, seq and validity beside its sample in the
shared batch slot (three stores), keeps its latency ring in shared memory, and sends its
counters over the pipe at the telemetry rate. The learning process sees every batch in order
(`batch`), so it has every state and every served prediction; at each due time (`wait`) it
builds one message from both sides' numbers and publishes it (`publish`). MCAP recording
and the Foxglove bridge (rtlearn.protocol.mcap) run in a writer thread of their own, fed by
a bounded queue: a slow disk drops recorded messages (counted), never learning steps.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
import zmq

from rtlearn.protocol.client import use_endpoint
from rtlearn.protocol.mcap import (PREDICTION_TOPIC, STATE_TOPIC, TELEMETRY_TOPIC, FoxgloveSink,
                                   McapSink, finite_or_none, prediction_message, state_message)
from rtlearn.protocol.telemetry import SERVING_COUNTERS, encode_telemetry

log = logging.getLogger("rtlearn.service")

LATENCY_WINDOW = 1000   # packets behind the latency percentiles (1 s at 1 kHz)
STEP_WINDOW = 100       # learning steps behind the step-time percentiles
RECENT = 8              # switches and detections carried in each message
RECORD_QUEUE = 1000     # batches waiting for the recording thread (10 s at 1 kHz)
_Q = np.array([50.0, 90.0, 99.0])


def recent_ms(values: np.ndarray, count: int, k: int) -> dict:
    """Percentiles and maximum (ms) of the last min(count, k) values of a ring of seconds."""
    n = min(count, k, values.shape[0])
    if n == 0:
        return {"count": 0, "p50": None, "p90": None, "p99": None, "max": None}
    last = values[(count - n + np.arange(n)) % values.shape[0]] * 1e3
    p50, p90, p99 = np.percentile(last, _Q)
    return {"count": n, "p50": float(p50), "p90": float(p90), "p99": float(p99),
            "max": float(last.max())}


def _rms(sq_sum: np.ndarray, n: int) -> list:
    return [finite_or_none(v) for v in np.sqrt(sq_sum / n)] if n else [None] * len(sq_sum)


def _mean(total: np.ndarray, n: int) -> list:
    return [finite_or_none(v) for v in total / n] if n else [None] * len(total)


class Telemetry:
    """Made in the serving process before the fork (settings only), opened in the learning
    process (`open`), which then calls `batch` per learned slot, `serving` per counters
    message, `switched` per context change and `publish` when due."""

    def __init__(self, settings: dict, robot: str, joints: list[str], started: float):
        self.settings, self.robot, self.joints = settings, robot, list(joints)
        self.n = len(self.joints)
        self.period = 1.0 / float(settings["rate_hz"])
        self.started = started
        self.active = bool(settings["enabled"] or settings["mcap"] or settings["foxglove_port"])

    # -- learning process --------------------------------------------------------------------
    def open(self, arena) -> str | None:
        """Bind the socket, open the sinks; the reason it failed, or None."""
        n, s = self.n, self.settings
        self.arena = arena
        self.seq = 0
        self.next_due = time.monotonic() + self.period
        self.window_start = time.monotonic()
        self._y_sum, self._p_sum, self._sq_sum = np.zeros(n), np.zeros(n), np.zeros(n)
        self._y_last, self._p_last = np.full(n, np.nan), np.full(n, np.nan)
        self._count = 0
        self.serving_counters: dict = {}
        self.switches: deque = deque(maxlen=RECENT)
        self.recorded_dropped = 0
        # perf_counter is CLOCK_MONOTONIC, shared by both processes: arrival -> wall time
        self._wall_offset = time.time() - time.perf_counter()
        self._zmq = self.sock = None
        self.sinks: list = []
        self._writer = None
        step = f"bind the telemetry socket to {s['endpoint']}"
        try:
            if s["enabled"]:
                self._zmq = zmq.Context()
                self.sock = self._zmq.socket(zmq.PUB)
                self.sock.setsockopt(zmq.LINGER, 0)
                self.sock.setsockopt(zmq.SNDHWM, 100)  # a slow viewer loses messages (seq)
                use_endpoint(self.sock, s["endpoint"], bind=True)
            if s["mcap"]:
                step = f"write an MCAP recording into telemetry.mcap = {s['mcap']!r}"
                folder = Path(s["mcap"])
                folder.mkdir(parents=True, exist_ok=True)
                name = time.strftime("rtlearn-%Y%m%d-%H%M%S.mcap")
                self.sinks.append(McapSink(folder / name, {"robot": self.robot,
                                                           "joints": ",".join(self.joints)}))
            if s["foxglove_port"]:
                step = f"start the Foxglove bridge on port {s['foxglove_port']}"
                self.sinks.append(FoxgloveSink(int(s["foxglove_port"])))
        except Exception as e:  # bind failure, unwritable folder, port in use, missing extra
            self.close()
            return f"cannot {step}: {e}"
        if self.sinks:
            self._writer = _RecordWriter(self.sinks)
            self._writer.start()
        return None

    def wait(self) -> float:
        """Seconds until the next message is due (0: now)."""
        return max(0.0, self.next_due - time.monotonic())

    def batch(self, slot: int, n: int, context: str) -> None:
        """One submitted slot, every sample of it (also those the screen keeps from learning)."""
        a = self.arena
        Y, P = a.Y[slot, :n], a.P[slot, :n]
        err = P - Y
        self._sq_sum += np.einsum("ij,ij->j", err, err)
        self._y_sum += Y.sum(axis=0)
        self._p_sum += P.sum(axis=0)
        self._y_last[:], self._p_last[:] = Y[-1], P[-1]
        self._count += n
        if self._writer is not None:
            try:
                self._writer.todo.put_nowait(("batch", (a.T[slot, :n].copy(), a.S[slot, :n].copy(),
                                                        a.X[slot, :n].copy(), Y.copy(), P.copy(),
                                                        context, self._wall_offset)))
            except queue.Full:
                self.recorded_dropped += n

    def switched(self, before: str, after: str, outcome: str, by: str) -> None:
        self.switches.append({"time": time.time(), "from": before, "to": after,
                              "outcome": outcome, "by": by})

    def publish(self, proc) -> None:
        """Build and send one message from the learning process `proc`'s state."""
        msg = self.message(proc)
        self.seq += 1
        if self.sock is not None:
            try:
                self.sock.send(encode_telemetry(msg), zmq.NOBLOCK)
            except zmq.Again:
                pass
        if self._writer is not None:
            try:
                self._writer.todo.put_nowait(("telemetry", msg))
            except queue.Full:
                self.recorded_dropped += 1
        now = time.monotonic()
        self.next_due = max(self.next_due + self.period, now)  # no burst after a stall
        self.window_start = now
        self._y_sum[:] = self._p_sum[:] = self._sq_sum[:] = 0.0
        self._count = 0

    def message(self, proc) -> dict:
        c = self._count
        learner, stats = proc.learner, proc.stats
        optimizer, rates = learner.layer_rates()
        sc = self.serving_counters
        counters = {k: int(sc.get(k, 0)) for k in SERVING_COUNTERS}
        counters["rejected"] = dict(sc.get("rejected", {}))
        excluded = {k: int(v) for k, v in proc.screen.counts.items()}
        counters.update(steps=stats.steps, samples=stats.samples_learned,
                        rollbacks=stats.rollbacks, excluded=excluded,
                        excluded_total=sum(excluded.values()),
                        recorded_dropped=self.recorded_dropped)
        auto = proc.auto.status()
        detections = [{"time": d["time"], "from": d["from"], "decision": d["decision"],
                       "context": d["context"], "delay_samples": int(d["delay_samples"])}
                      for d in auto["recent"][-RECENT:]]
        return {
            "seq": self.seq, "time": time.time(), "uptime_s": time.time() - self.started,
            "robot": self.robot, "n_joints": self.n, "joints": self.joints,
            "context": proc.bank.current,
            "window": {"samples": c, "seconds": time.monotonic() - self.window_start},
            "error": {"rms": _rms(self._sq_sum, c),
                      "recent_rms": [finite_or_none(v) for v in np.sqrt(stats.preq_recent)]
                      if stats.preq_count else [None] * self.n},
            "torque": {"measured_mean": _mean(self._y_sum, c),
                       "predicted_mean": _mean(self._p_sum, c),
                       "measured_last": [finite_or_none(v) for v in self._y_last],
                       "predicted_last": [finite_or_none(v) for v in self._p_last]},
            "lr": {"optimizer": optimizer, "layers": int(rates.shape[1]),
                   "weights": [[finite_or_none(v) for v in row] for row in rates[:, :, 0]],
                   "biases": [[finite_or_none(v) for v in row] for row in rates[:, :, 1]]},
            "counters": counters,
            "contexts": {"known": list(proc.bank.names), "switches": stats.context_switches,
                         "recent": list(self.switches), "detections": detections,
                         "auto": {k: int(auto[k]) for k in ("alarms", "restored", "created",
                                                            "dismissed", "overridden",
                                                            "lapsed")},
                         "auto_active": bool(auto["active"]),
                         "auto_pending": auto["pending"]},
            "latency_ms": recent_ms(self.arena.latency, int(sc.get("latency_count", 0)),
                                    LATENCY_WINDOW),
            "step_ms": recent_ms(stats.step_time.values, stats.step_time.count, STEP_WINDOW),
        }

    def close(self) -> None:
        """Every queued record written, the files finished, the socket closed."""
        if self._writer is not None:
            self._writer.stop()
            self._writer = None
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as e:
                log.error("closing a telemetry recording failed: %s", e)
        self.sinks = []
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None
        if self._zmq is not None:
            self._zmq.term()
            self._zmq = None


class _RecordWriter(threading.Thread):
    """JSON encoding and file / WebSocket output, off the learning loop, in batch order."""

    def __init__(self, sinks: list):
        super().__init__(name="rtlearn-record", daemon=True)
        self.sinks = sinks
        self.todo: queue.Queue = queue.Queue(RECORD_QUEUE)
        self._failed: set[str] = set()

    def stop(self) -> None:
        self.todo.put(None)
        self.join()

    def run(self) -> None:
        while (item := self.todo.get()) is not None:
            kind, payload = item
            try:
                if kind == "telemetry":
                    self._write(TELEMETRY_TOPIC, payload, None)
                else:
                    self._batch(*payload)
            except Exception as e:  # a full disk must not stop learning
                if type(e).__name__ not in self._failed:
                    self._failed.add(type(e).__name__)
                    log.error("telemetry recording failed: %s (further failures of this kind "
                              "are not logged)", e)

    def _write(self, topic: str, msg: dict, ns: int | None) -> None:
        for sink in self.sinks:
            sink.write(topic, msg, ns)

    def _batch(self, T, S, X, Y, P, context: str, wall_offset: float) -> None:
        n = Y.shape[1]
        for (t, arrival), (seq, valid), x, y, p in zip(T, S, X, Y, P):
            ns = int((arrival + wall_offset) * 1e9)
            self._write(STATE_TOPIC, state_message(seq, t, x[:n], x[n:2 * n], x[2 * n:], y,
                                                   context), ns)
            self._write(PREDICTION_TOPIC, prediction_message(seq, t, p, context, bool(valid)),
                        ns)
