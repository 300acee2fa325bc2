"""The daemon: sockets, the per-packet path, batching, context switches and shutdown.

Threads:
  * socket thread (the caller of `run`): reads state packets, predicts from the serving copy,
    publishes the prediction, fills learning batches. Nothing in it waits for learning except
    back-pressure, when `guard.batch_queue` batches are waiting.
  * learning thread (`LearningWorker`): learning steps and every change of the model.
  * control thread (`ControlServer`): the REP socket; status is answered there, everything
    else is a job for the learning thread; context switches are handed to the socket thread
    so that they take effect at the next packet.
  * snapshot writer: file I/O off both hot threads.
"""

from __future__ import annotations

import logging
import math
import queue
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import zmq

from rtlearn.learner import OnlineLearner
from rtlearn.protocol.schema import ProtocolError, encode_hello, encode_prediction, read_state
from rtlearn.service import snapshots
from rtlearn.service.config import ServiceConfig, learner_config
from rtlearn.service.contexts import ContextBank
from rtlearn.service.learning import LearningWorker
from rtlearn.service.stats import RateLimitedLog, Stats
from rtlearn.sources.filters import CausalDerivative

log = logging.getLogger("rtlearn.service")

HWM = 100_000
POLL_MS = 10            # idle wake-up: control hand-offs and snapshot timer
SWITCH_INTERVAL = 5e-5  # s; Python's GIL hand-over period (default 5 ms would stall packets)


def make_learner(cfg: ServiceConfig, n_joints: int) -> OnlineLearner:
    return OnlineLearner(learner_config(cfg, n_joints))


class SnapshotWriter(threading.Thread):
    def __init__(self, stats: Stats, say: RateLimitedLog):
        super().__init__(name="rtlearn-snapshots", daemon=True)
        self.stats, self.say = stats, say
        self.todo: queue.SimpleQueue = queue.SimpleQueue()

    def run(self) -> None:
        while (item := self.todo.get()) is not None:
            path, meta, arrays, done = item
            try:
                snapshots.write(path, meta, arrays)
                self.stats.snapshots_written += 1
                self.stats.last_snapshot = str(path)
                if done is not None:
                    done(None)
            except Exception as e:  # a full disk must not stop learning
                self.stats.snapshot_errors += 1
                self.say("snapshot", f"snapshot {path} failed: {e}", logging.ERROR)
                if done is not None:
                    done(e)


class Daemon:
    def __init__(self, cfg: ServiceConfig, robot, resume: bool = False):
        self.cfg, self.robot = cfg, robot
        self.n = robot.n_joints
        self.say = RateLimitedLog(log, cfg["guard"]["log_interval"])
        self.stats = Stats(self.n)
        self.snap_dir = Path(cfg["snapshots"]["dir"])
        self.snap_path = snapshots.confined(self.snap_dir, cfg["snapshots"]["file"])
        t0 = time.perf_counter()
        learner = make_learner(cfg, self.n)
        bank = ContextBank(cfg["contexts"]["initial"], cfg["contexts"]["max_contexts"])
        self.resumed_from = None
        if resume:
            if self.snap_path.exists():
                meta, arrays = snapshots.read(self.snap_path)
                snapshots.restore(meta, arrays, learner, bank)
                self.resumed_from = str(self.snap_path)
                log.info("resumed from %s: %d steps, contexts %s (active %s)", self.snap_path,
                         learner.n_steps, bank.names, bank.current)
            else:
                log.warning("--resume: no snapshot at %s; starting fresh", self.snap_path)
        self.worker = LearningWorker(learner, bank, self.stats, cfg["guard"], self.say)
        self._warm_up()
        self.warmup_s = time.perf_counter() - t0
        self.context = bank.current           # as seen by the socket thread
        self.pending_context: str | None = None
        self._refused: set[str] = set()
        self._known = set(bank.names)  # contexts the bank holds once queued switches are done
        self.stopping = False
        self.writer = SnapshotWriter(self.stats, self.say)
        self._last_seq: int | None = None
        self._stream: int | None = None
        self._last_arrival = 0.0
        self._qdd = CausalDerivative(self.n)
        self._slot = self.worker.free.get()
        self._fill = 0
        self._zeros = np.zeros(self.n)
        self._zmq = zmq.Context()
        self._sockets()
        self.control = None

    def _warm_up(self) -> None:
        """Compile / load every kernel before the first packet, on a throwaway learner."""
        scratch = make_learner(self.cfg, self.n)
        x = np.zeros((scratch.config.batch_size, scratch.config.n_inputs))
        scratch.learn_many(x, np.zeros((x.shape[0], self.n)))
        scratch.is_finite()
        self.worker.serving.predict(x[0])

    def _sockets(self) -> None:
        ep = self.cfg["endpoints"]
        self.sub = self._zmq.socket(zmq.SUB)
        self.sub.setsockopt(zmq.RCVHWM, HWM)
        # Beyond any valid packet; the decoder counts "oversized" below this hard limit.
        self.sub.setsockopt(zmq.MAXMSGSIZE, 1 << 20)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.pub = self._zmq.socket(zmq.XPUB)
        self.pub.setsockopt(zmq.SNDHWM, HWM)
        self.pub.setsockopt(zmq.XPUB_VERBOSE, 1)  # every new subscriber gets a hello
        for s in (self.sub, self.pub):
            s.setsockopt(zmq.LINGER, 0)
        self.sub.bind(ep["state"])
        self.pub.bind(ep["prediction"])

    # -- main loop --------------------------------------------------------------------------
    def run(self) -> int:
        from rtlearn.service.control import ControlServer

        sys.setswitchinterval(SWITCH_INTERVAL)
        self.control = ControlServer(self, self._zmq)
        self.worker.start()
        self.writer.start()
        self.control.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        interval = float(self.cfg["snapshots"]["interval"])
        next_snapshot = time.monotonic() + interval if interval > 0 else math.inf
        log.info("serving %s: states %s, predictions %s, control %s; kernels ready in %.2f s",
                 self.robot.name, self.cfg["endpoints"]["state"],
                 self.cfg["endpoints"]["prediction"], self.cfg["endpoints"]["control"],
                 self.warmup_s)
        poller = zmq.Poller()
        poller.register(self.sub, zmq.POLLIN)
        poller.register(self.pub, zmq.POLLIN)
        try:
            while not self.stopping:
                ready = poller.poll(POLL_MS)
                if ready:
                    self._drain_subscriptions()
                    self._drain_states()
                if time.monotonic() >= next_snapshot:
                    next_snapshot += interval
                    self.snapshot(self.snap_path)
        finally:
            self._shutdown()
        return 0

    def _on_signal(self, signum, frame) -> None:
        self.stopping = True

    def _drain_subscriptions(self) -> None:
        while True:
            try:
                frame = self.pub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if frame[:1] == b"\x01":
                self.pub.send(encode_hello(self.n, self.context), zmq.NOBLOCK)

    def _drain_states(self) -> None:
        sub = self.sub
        while True:
            try:
                frame = sub.recv(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return
            arrival = time.perf_counter()
            self.stats.received += 1
            if sub.get(zmq.RCVMORE):  # (the .rcvmore property costs twice as much)
                while sub.get(zmq.RCVMORE):
                    sub.recv()
                self._reject("malformed", "multipart message (a packet is one frame)")
                continue
            try:
                self._handle(frame, arrival)
            except Exception:  # a bug must cost one packet, not the daemon
                self.stats.rejected["internal"] += 1
                self.say("internal", "internal error on a packet:\n" + traceback.format_exc(),
                         logging.ERROR)

    def _reject(self, reason: str, message: str) -> None:
        self.stats.rejected[reason] += 1
        self.say(reason, f"rejected a state packet: {message}")

    def _handle(self, frame: bytes, arrival: float) -> None:
        try:
            state, stream = read_state(frame, self.n)
        except ProtocolError as e:
            self._reject(e.reason, str(e))
            return
        seq, last = state.seq, self._last_seq
        if stream != self._stream or last is None:
            if last is not None:
                self._new_stream(f"stream id {self._stream} -> {stream}")
            self._stream = stream
        elif seq <= last:
            if stream is None and arrival - self._last_arrival > self.cfg["guard"]["stream_timeout"]:
                self._new_stream(f"seq went back from {last} to {seq} after a silence")
            else:
                self._reject("duplicate_seq" if seq == last else "out_of_order",
                             f"seq {seq} after {last}")
                return
        elif seq > last + 1:
            self.stats.lost += seq - last - 1
            self.say("lost", f"sequence gap: {seq - last - 1} packets lost before seq {seq}")
        self._last_seq, self._last_arrival = seq, arrival

        wanted = state.context if state.context is not None else self.pending_context
        self.pending_context = None
        if wanted is not None and wanted != self.context and wanted not in self._refused:
            self._switch(wanted)

        w, i, n = self.worker, self._fill, self.n
        x = w.X[self._slot, i]
        x[:n] = state.q
        x[n:2 * n] = state.qd
        x[2 * n:] = self._qdd.update(state.t, state.qd) if state.qdd is None else state.qdd
        w.Y[self._slot, i] = state.tau
        pred = w.serving.predict(x)
        taus = pred.tolist()  # checked and sent as Python floats: cheaper than numpy for 7
        valid = all(map(math.isfinite, taus))
        if not valid:
            pred, taus = self._zeros, self._zeros.tolist()
            self.stats.invalid_predictions += 1
            w.rollback_requested = True
            self.say("nonfinite", "the model predicted NaN/inf: published valid=false, rolling back")
        w.P[self._slot, i] = pred
        self.pub.send(encode_prediction(seq, state.t, taus, self.context, valid), zmq.NOBLOCK)
        self.stats.predicted += 1
        self.stats.latency.add(time.perf_counter() - arrival)
        self._fill = i + 1
        if self._fill == w.X.shape[1]:
            self._submit()

    def _new_stream(self, why: str) -> None:
        self.stats.stream_restarts += 1
        self._qdd.reset()
        self.say("stream", f"new stream ({why})", logging.INFO)

    def _submit(self) -> None:
        """Hand the filled slot (possibly partial) to the learning thread; take a free one."""
        w = self.worker
        if w.batches_submitted > w.batches_done:
            self.stats.deadline_misses += 1
            self.say("deadline", "a learning step was still running when the next batch was due")
        w.submit_batch(self._slot, self._fill)
        self._fill = 0
        try:
            self._slot = w.free.get_nowait()
        except queue.Empty:
            self.stats.backpressure_waits += 1
            self.say("backpressure", "learning is behind: batch queue full, reading paused")
            self._slot = w.free.get()

    def _switch(self, name: str) -> None:
        """Takes effect for this packet without waiting: the learning thread parks the old
        model and restores / creates the new one in order; samples already buffered belong
        to the old context, so they are learned there first."""
        if name not in self._known and len(self._known) >= self.cfg["contexts"]["max_contexts"]:
            self._refused.add(name)  # do not retry on every packet
            self.say("context", f"context bank full ({len(self._known)}); not creating {name!r}",
                     logging.ERROR)
            return
        if self._fill:
            self._submit()
        w = self.worker
        w.call(lambda: w.switch_context(name))
        self._known.add(name)
        self.context = w.serving.wanted = name

    # -- snapshots and shutdown -------------------------------------------------------------
    def snapshot(self, path: Path, done=None) -> None:
        """Capture in the learning thread (consistent), write in the writer thread."""
        def capture():
            meta, arrays = snapshots.capture(self.worker.learner, self.worker.bank,
                                             self._counters())
            meta["robot"] = self.robot.name
            self.writer.todo.put((path, meta, arrays, done))
        self.worker.call(capture)

    def _shutdown(self) -> None:
        log.info("stopping: learning the buffered samples and writing %s", self.snap_path)
        if self.control is not None:
            self.control.stop()
        if self._fill:
            self._submit()
        self.worker.stop()  # learns everything submitted; its learner is idle from here on
        meta, arrays = snapshots.capture(self.worker.learner, self.worker.bank, self._counters())
        meta["robot"] = self.robot.name
        self.writer.todo.put((self.snap_path, meta, arrays, None))
        self.writer.todo.put(None)
        self.writer.join()
        for s in (self.sub, self.pub):
            s.close(linger=0)
        self._zmq.term()
        log.info("stopped: %s", self.stats.as_dict()["packets"])

    def _counters(self) -> dict:
        return {"steps": self.stats.steps, "samples": self.stats.samples_learned,
                "predicted": self.stats.predicted}

    # -- control commands (called from the control thread) ------------------------------------
    def status(self) -> dict:
        d = self.stats.as_dict()
        w = self.worker
        d.update({"robot": self.robot.name, "n_joints": self.n, "context": self.context,
                  "contexts_known": w.bank.names,
                  "learner": {"steps": w.learner.n_steps, "samples": w.learner.n_samples,
                              "rates": {k: float(np.mean(v)) for k, v in w.learner.rates().items()},
                              "queued_batches": w.batches_submitted - w.batches_done},
                  "resumed_from": self.resumed_from, "warmup_s": self.warmup_s})
        return d

    def command(self, cmd: str, args: dict):
        """Mutating commands; raise ValueError / StateFileError for a clear error reply."""
        w = self.worker
        if cmd == "context":
            self.pending_context = args["name"]
            return {"scheduled": args["name"], "current": self.context}
        if cmd == "shutdown":
            self.stopping = True
            return {"stopping": True}
        if cmd == "save":
            path = snapshots.confined(self.snap_dir, args.get("path", self.cfg["snapshots"]["file"]))
            result: dict = {}
            written = threading.Event()

            def done(err):
                result["error"] = err
                written.set()
            self.snapshot(path, done)
            if not written.wait(60):
                raise TimeoutError("snapshot not written within 60 s")
            if result["error"] is not None:
                raise OSError(f"snapshot {path} failed: {result['error']}")
            return {"saved": str(path)}
        if cmd == "load":
            path = snapshots.confined(self.snap_dir, args["path"])
            meta, arrays = snapshots.read(path)
            learner = make_learner(self.cfg, self.n)
            bank = ContextBank(meta["current"], self.cfg["contexts"]["max_contexts"])
            snapshots.restore(meta, arrays, learner, bank)  # into fresh objects: a bad file changes nothing
            w.call(lambda: w.replace_learner(learner, bank)).wait(60)
            self.pending_context = None
            self.context = bank.current
            self._known, self._refused = set(bank.names), set()
            return {"loaded": str(path), "context": bank.current, "contexts": bank.names}
        if cmd == "reset":
            learner = make_learner(self.cfg, self.n)
            bank = ContextBank(self.context, self.cfg["contexts"]["max_contexts"])
            w.call(lambda: w.replace_learner(learner, bank)).wait(60)
            self._known, self._refused = set(bank.names), set()
            return {"reset": True, "context": self.context}
        if cmd == "options":
            def apply():
                if "lr" in args:
                    w.learner.set_lr(float(args["lr"]))
                if "memory" in args:
                    w.learner.set_memory_learning(args["memory"])
                return {"rates": {k: float(np.mean(v)) for k, v in w.learner.rates().items()}}
            return w.call(apply).wait(60)
        raise ValueError(f"unhandled command {cmd!r}")

