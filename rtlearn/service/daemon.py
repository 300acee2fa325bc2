"""The daemon: sockets, the per-packet path, batching, context switches and shutdown.

Two processes (rtlearn.service.learning explains why):
  * serving process. Socket thread (the caller of `run`): reads state packets, predicts
    from its private serving copy, publishes the prediction, fills learning batches in shared
    memory and hands them to the learning process; it waits for learning only under
    back-pressure, when `guard.batch_queue` batches are waiting. Control thread
    (`ControlServer`): the REP socket; commands become jobs of the learning process, except
    context switches, which the socket thread carries out so that they take effect at the
    next packet.
  * learning process: learning steps, every change of the model, snapshots.
"""

from __future__ import annotations

import itertools
import logging
import math
import signal
import sys
import threading
import time
import traceback
from collections import deque
from pathlib import Path

import numpy as np
import zmq

from rtlearn.learner import StateFileError
from rtlearn.learner.api import Learner, kind_of
from rtlearn.kernels import packet as K
from rtlearn.protocol.client import use_endpoint
from rtlearn.protocol.schema import (MAX_LABEL, ProtocolError, encode_hello,
                                     encode_prediction, encode_state, read_state, robot_id)
from rtlearn.service import realtime, snapshots
from rtlearn.service.config import ServiceConfig
from rtlearn.service.contexts import ContextBank, UnknownContextError
from rtlearn.service.learning import (BindError, LearningProcess, ServingModel, features_into,
                                      make_learner, make_screen, parked_models)
from rtlearn.service.stats import RateLimitedLog, Ring, Stats
from rtlearn.service.telemetry import Telemetry
from rtlearn.protocol.state import JointState
from rtlearn.sources.filters import CausalDerivative

log = logging.getLogger("rtlearn.service")

HWM = 100_000
POLL_MS = 10            # idle wake-up: control hand-offs and snapshot timer
SWITCH_INTERVAL = 5e-5  # s; Python's GIL hand-over period (default 5 ms would stall packets)
JOB_TIMEOUT = 120.0     # s a control command waits for the learning process
STOP_WAIT = 30.0        # s a stopping daemon waits for a learning process that does not answer
HELLO_INTERVAL = 0.1    # s between two hellos on the prediction socket


class Job:
    """A job of the learning process; wait() returns its result or raises."""

    def __init__(self, args: dict, on_reply=None):
        self.args, self.on_reply = args, on_reply  # on_reply(job): socket thread, on success
        self.result, self.error = None, None
        self.done = threading.Event()

    def wait(self, timeout: float = JOB_TIMEOUT):
        if not self.done.wait(timeout):
            raise TimeoutError("the learning process did not answer in time")
        if self.error is not None:
            raise self.error
        return self.result


_ERRORS = {"bad_snapshot": StateFileError, "failed": ValueError}


class Daemon:
    def __init__(self, cfg: ServiceConfig, robot, resume: bool = False, fresh: bool = False,
                 load: str | None = None):
        """resume: continue from the newest readable snapshot generation; fresh: start anew,
        moving existing snapshots aside once the sockets are bound. With neither, existing
        snapshots refuse the start (SnapshotsExistError): it would overwrite them. load: a
        model file (`rtlearn fit --save`, or any snapshot) to start from instead of a fresh
        learner; not with resume."""
        if resume and load is not None:
            raise ValueError("--resume and --load exclude each other")
        self.cfg, self.robot = cfg, robot
        self.n = robot.n_joints
        self.rid = robot_id(robot.name, robot.joints)
        self.say = RateLimitedLog(log, cfg["guard"]["log_interval"])
        self.stats = Stats(self.n)
        self.snap_dir = Path(cfg["snapshots"]["dir"])
        self.snap_path = snapshots.confined(self.snap_dir, cfg["snapshots"]["file"])
        self.snap_keep = int(cfg["snapshots"]["keep"])
        existing = snapshots.generations(self.snap_path)
        if existing and not (resume or fresh):
            raise snapshots.SnapshotsExistError(
                f"{self.snap_dir} holds snapshots ({', '.join(p.name for p in existing)}): "
                + ("" if load is not None else "start with --resume to continue from them, or ")
                + f"with --fresh to move them aside into {self.snap_dir}/previous-<date>-"
                f"<time>/ and start anew" + (f" from {load}" if load is not None else ""))
        self._move_aside = fresh and bool(existing)
        t0 = time.perf_counter()
        learner = make_learner(cfg, self.n)
        bank = ContextBank.configured(cfg["contexts"])
        self.resumed_from, self.resume_skipped, self.loaded_from = None, [], None
        if load is not None:
            snapshots.restore(*snapshots.read_model(load, robot.name), learner, bank)
            self.loaded_from = str(load)
            log.info("loaded %s: %d steps, contexts %s (active %s)", load, learner.n_steps,
                     bank.names, bank.current)
        if resume:
            newest = snapshots.read_newest(self.snap_path)  # StateFileError: none readable
            if newest is None:
                log.warning("--resume: no snapshot at %s; starting fresh", self.snap_path)
            else:
                path, meta, arrays, skipped = newest
                snapshots.restore(meta, arrays, learner, bank)
                self.resumed_from = str(path)
                self.resume_skipped = [{"path": p, "why": why} for p, why in skipped]
                for p, why in skipped:
                    log.warning("--resume: skipped the newer %s: %s", p, why)
                log.info("resumed from %s: %d steps, contexts %s (active %s)", path,
                         learner.n_steps, bank.names, bank.current)
        predictor = self._warm_up()
        self._set_context(bank.current)
        # contexts the bank holds once queued switches are done, least recently active first
        self._known = dict.fromkeys(bank.parked) | {bank.current: None}
        serving_cpus, learning_cpus = realtime.cpu_plan(cfg["realtime"])
        self._serving_cpus = serving_cpus
        self.cpus = {"serving": sorted(serving_cpus or []), "learning": sorted(learning_cpus or [])}
        parked = parked_models(learner, bank)  # a resumed bank's others, servable at once
        # Forked now, before this process has any thread or socket.
        telemetry = Telemetry(cfg["telemetry"], robot.name, robot.joints, self.stats.started)
        self.learning = LearningProcess(learner, bank, cfg, lambda: make_learner(cfg, self.n),
                                        robot.name, make_screen(cfg, robot), telemetry,
                                        learning_cpus)
        del learner, bank
        try:
            self._after_fork(predictor, t0, parked)
        except BaseException:
            self.learning.kill()
            raise

    def _after_fork(self, predictor: Learner, t0: float, parked: dict) -> None:
        arena = self.learning.arena
        self.stats.latency = Ring(values=arena.latency)  # the telemetry reads it there
        tel = self.cfg["telemetry"]
        self._recording = bool(tel["mcap"] or tel["foxglove_port"])
        self.serving = ServingModel(arena, predictor, self.context)
        self.serving.frozen.update(parked)
        self.serving.try_refresh()
        self.warmup_s = time.perf_counter() - t0
        self.pending_context: str | None = None  # automatic switch, under _pending_lock
        self.override: str | None = None  # `ctl context NAME` until `ctl context --release`
        self._pending_lock = threading.Lock()
        self._lost = False
        self._loop_thread = threading.current_thread()  # run()'s, set again there
        self._refused: set[str] = set()
        self.stopping = False
        self.exit_code = 0  # 5 if a snapshot write failed during the run
        self._epochs = itertools.count(1)
        self._jobs: dict[int, Job] = {}
        self._job_ids = itertools.count()
        self._send_lock = threading.Lock()  # the pipe is written by the socket and control threads
        self._free = deque(range(arena.X.shape[0]))
        self.batches_submitted = 0
        self.batches_done = 0
        self._rollback_requested = False
        self._labelled = False  # a packet of the batch being filled carried a context label
        self._last_seq: int | None = None
        self._stream: int | None = None
        self._hello_due, self._next_hello = False, 0.0
        self._behind, self._behind_run = -2, 0  # last packet below _last_seq, run length
        guard = self.cfg["guard"]
        self._stream_timeout = float(guard["stream_timeout"])
        self._max_jump, self._resync_after = int(guard["max_seq_jump"]), int(guard["resync_after"])
        self._last_arrival = 0.0
        self._qdd = CausalDerivative(self.n)
        self._slot = self._free.popleft()
        self._fill = 0
        self._zeros = np.zeros(self.n)
        self._limit = np.ascontiguousarray(self.robot.torque_limits, np.float64) \
            * float(self.cfg["guard"]["torque_margin"])
        self._vec = np.zeros((4, self.n))
        self._head = np.zeros(K.HEAD_LEN, np.int64)
        self._head_f64 = self._head.view(np.float64)
        self._out = np.zeros(128 + 9 * self.n + 4 * MAX_LABEL, np.uint8)
        realtime.pin_to(self._serving_cpus)  # before the context: its I/O threads inherit it
        self._zmq = zmq.Context()
        self._sockets()
        if self._move_aside:
            aside = snapshots.move_aside(self.snap_path)
            log.warning("--fresh: the previous snapshots were moved to %s", aside)
        self.realtime: dict = {}

    def _warm_up(self) -> Learner:
        """Compile / load every kernel before the first packet, on a throwaway learner that
        then serves as the predictor of the serving copy."""
        scratch = make_learner(self.cfg, self.n)
        kind_of(scratch).warm_up(scratch, int(self.cfg["learner"]["batch_size"]))
        z = np.zeros(self.n)
        frame = encode_state(JointState(0, 0.0, z, z, z, z, "warm-up"))
        K.parse_state(frame, self.n, np.zeros((4, self.n)), np.zeros(K.HEAD_LEN, np.int64),
                      np.frombuffer(b"warm-up", np.uint8), self.rid)
        K.check_torque(z, z)
        K.encode_prediction_into(np.zeros(256, np.uint8), 0, 0.0, z,
                                 np.frombuffer(b"warm-up", np.uint8), True)
        ring = Ring(2)
        ring.add(0.0)
        ring.summary_ms()
        return scratch

    def _sockets(self) -> None:
        """Create and bind all three sockets before anything is served: a bind failure ends
        the start at once (serve exits 2), with nothing learned or written."""
        from rtlearn.service.control import ControlServer

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
        try:
            for name, sock in (("state", self.sub), ("prediction", self.pub)):
                try:
                    use_endpoint(sock, ep[name], bind=True)
                except zmq.ZMQError as e:
                    raise BindError(f"cannot bind the {name} socket to {ep[name]}: {e}") from None
            try:
                self.control = ControlServer(self, self._zmq)
            except zmq.ZMQError as e:
                raise BindError(f"cannot bind the control socket to {ep['control']}: {e}") from None
        except BaseException:
            for s in (self.sub, self.pub):
                s.close(linger=0)
            self._zmq.term()
            raise

    # -- the learning process's pipe ---------------------------------------------------------
    def _send(self, msg: tuple) -> None:
        """A message to the learning process; its death shows here first when the pipe is
        written (the counters every telemetry period) before it is read."""
        with self._send_lock:
            try:
                self.learning.conn.send(msg)
                return
            except (BrokenPipeError, ConnectionResetError):
                pass
        self._learning_lost()

    def call(self, name: str, args: dict | None = None, on_reply=None, epoch: bool = False) -> Job:
        """Queue a job for the learning process (after everything sent before it). With
        epoch=True it gets a new epoch (args["epoch"]), allocated in send order."""
        args = dict(args or {})
        job = Job(args, on_reply)
        if self._lost:
            raise RuntimeError("the learning process has ended; the daemon is stopping")
        with self._send_lock:
            job_id = next(self._job_ids)
            if epoch:
                args["epoch"] = next(self._epochs)
            self._jobs[job_id] = job
            try:
                self.learning.conn.send(("job", job_id, name, args))
                return job
            except (BrokenPipeError, ConnectionResetError):
                pass
        self._learning_lost()

    def _pump(self, timeout: float = 0.0) -> None:
        """Socket thread: take the learning process's messages (slots back, job replies)."""
        conn = self.learning.conn
        while conn.poll(timeout):
            timeout = 0.0
            try:
                msg = conn.recv()
            except (EOFError, OSError):  # OSError: ECONNRESET when it died with our bytes unread
                self._learning_lost()
                return
            if msg[0] == "done":
                self._free.append(msg[1])
                self.batches_done += 1
            elif msg[0] == "auto":
                self._auto_switch(msg[1], msg[2])
            elif msg[0] == "reply":
                _, job_id, ok, payload = msg
                job = self._jobs.pop(job_id)
                if ok:
                    job.result = payload
                    if job.on_reply is not None:
                        job.on_reply(job)
                else:
                    reason, text = payload
                    job.error = _ERRORS.get(reason, RuntimeError)(text)
                    self.say("job", f"learning-process job failed: {reason}: {text}")
                job.done.set()

    def _auto_switch(self, name: str, epoch: int) -> None:
        """The learning process found a payload change: switch at the next packet unless a
        switch (label, control, reset, load) came since it decided (an override or a label
        on that packet wins over it)."""
        if epoch == self.serving.epoch:
            with self._pending_lock:
                if self.pending_context is None:
                    self.pending_context = name

    def _learning_lost(self) -> None:
        """Stop with exit code 3. Raised here in the main loop; from another thread (the
        control socket's) the job fails and the main loop stops at its next turn."""
        if not self._lost:
            log.critical("the learning process ended unexpectedly (exit code %s); stopping",
                         self.learning.proc.exitcode)
        self.stopping = self._lost = True
        for job in list(self._jobs.values()):
            job.error = RuntimeError("the learning process ended; the daemon is stopping")
            job.done.set()
        if threading.current_thread() is not self._loop_thread:
            raise RuntimeError("the learning process has ended; the daemon is stopping")
        raise SystemExit(3)

    # -- main loop --------------------------------------------------------------------------
    def run(self) -> int:
        self._loop_thread = threading.current_thread()
        sys.setswitchinterval(SWITCH_INTERVAL)
        fifo = realtime.fifo(int(self.cfg["realtime"]["priority"]))  # this thread only
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        interval = float(self.cfg["snapshots"]["interval"])
        spin = float(self.cfg["realtime"]["spin"])
        next_snapshot = time.monotonic() + interval if interval > 0 else math.inf
        tel_period = (1.0 / self.cfg["telemetry"]["rate_hz"] if self.learning.telemetry.active
                      else math.inf)
        next_counters = time.monotonic()
        self.realtime = {**{f"{k}_cpus": v for k, v in self.cpus.items()}, "fifo": fifo,
                         "spin_s": spin}
        log.info("serving %s: states %s, predictions %s, control %s; kernels ready in %.2f s; "
                 "realtime %s", self.robot.name, self.cfg["endpoints"]["state"],
                 self.cfg["endpoints"]["prediction"], self.cfg["endpoints"]["control"],
                 self.warmup_s, self.realtime)
        poller = zmq.Poller()
        poller.register(self.sub, zmq.POLLIN)
        poller.register(self.pub, zmq.POLLIN)
        poller.register(self.learning.conn.fileno(), zmq.POLLIN)
        sub, pub, serving, now = self.sub, self.pub, self.serving, time.perf_counter
        busy_until = 0.0
        try:
            self.control.start()
            while not self.stopping:
                # Spinning (timeout 0) while packets flow keeps this core awake: a wake-up
                # from a sleeping poll makes the next packet's path several times slower.
                ready = dict(poller.poll(0 if now() < busy_until else POLL_MS))
                if sub in ready:
                    self._drain_states()
                    busy_until = now() + spin
                if pub in ready:
                    self._drain_subscriptions()
                elif self._hello_due:
                    self._say_hello()
                if ready:
                    self._pump()
                serving.try_refresh()
                if time.monotonic() >= next_counters:
                    next_counters = time.monotonic() + tel_period
                    self._send(("serving", self._serving_counters()))
                if time.monotonic() >= next_snapshot:
                    next_snapshot = time.monotonic() + interval  # no burst after a stall
                    self.call("snapshot", {"path": str(self.snap_path), "keep": self.snap_keep,
                                           "counters": self._counters(), "wait": False})
        finally:
            self._shutdown()
        return 3 if self._lost else self.exit_code

    def _on_signal(self, signum, frame) -> None:
        self.stopping = True

    def _drain_subscriptions(self) -> None:
        """New subscriptions make a hello due. A hello reaches every subscriber (PUB
        semantics), so one serves all that arrived meanwhile: at most one per HELLO_INTERVAL,
        however many subscriptions a peer sends."""
        while True:
            try:
                frame = self.pub.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            if frame[:1] == b"\x01":
                self._hello_due = True
        self._say_hello()

    def _say_hello(self) -> None:
        now = time.monotonic()
        if self._hello_due and now >= self._next_hello:
            self.pub.send(encode_hello(self.n, self.context, self.robot.name, self.robot.joints),
                          zmq.NOBLOCK)
            self._hello_due, self._next_hello = False, now + HELLO_INTERVAL

    def _drain_states(self) -> None:
        sub, serving = self.sub, self.serving
        while not self.stopping:
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
            # after the prediction is out, never before a packet's read; also in a flood,
            # where this loop would otherwise not end (two compares when nothing is new)
            serving.try_refresh()

    def _reject(self, reason: str, message: str) -> None:
        self.stats.rejected[reason] += 1
        if reason != "wrong_robot":
            self.say(reason, f"rejected a state packet: {message}")
        elif self.stats.rejected[reason] == 1:  # a wrong setup, not noise: say it once
            log.error("rejecting the packets of another robot (%s): this daemon serves %s "
                      "(joints %s). Further ones are only counted (status: packets.rejected."
                      "wrong_robot)", message, self.robot.name, ", ".join(self.robot.joints))

    def _decode(self, frame: bytes):
        """(seq, t, stream, label, q, qd, tau, qdd) of a state packet, or None if rejected.
        The compiled parser takes the common packets; anything else (and every invalid one)
        goes to read_state, which names the reason. Vectors may be views of reused buffers."""
        code = K.parse_state(frame, self.n, self._vec, self._head, self._ctx_bytes, self.rid)
        if code == K.FALLBACK:
            try:
                state, stream = read_state(frame, self.n, self.rid)
            except ProtocolError as e:
                self._reject(e.reason, str(e))
                return None
            return (state.seq, state.t, stream, state.context, state.q, state.qd, state.tau,
                    state.qdd)
        head, vec = self._head, self._vec
        if code == K.OK_NO_LABEL:
            label = None
        elif code == K.OK_SAME_LABEL:
            label = self.context
        else:
            at = int(head[K.H_CTX_AT])
            label = frame[at: at + int(head[K.H_CTX_LEN])].decode("ascii")
        return (int(head[K.H_SEQ]), float(self._head_f64[K.H_T]),
                int(head[K.H_STREAM]) if head[K.H_HAS_STREAM] else None, label,
                vec[0], vec[1], vec[2], vec[3] if head[K.H_HAS_QDD] else None)

    def _set_context(self, name: str) -> None:
        self.context = name
        self._ctx_bytes = np.frombuffer(name.encode(), np.uint8)

    def _handle(self, frame: bytes, arrival: float) -> None:
        decoded = self._decode(frame)
        if decoded is None:
            return
        seq, t, stream, label, q, qd, tau, qdd = decoded
        if label is not None or self.override is not None:
            self._labelled = True  # keeps automatic contexts quiet
        last = self._last_seq
        if stream != self._stream or last is None:
            if last is not None:
                self._new_stream(f"stream id {self._stream} -> {stream}")
            self._stream = stream
        elif seq <= last:
            if stream is None and arrival - self._last_arrival > self._stream_timeout:
                self._new_stream(f"seq went back from {last} to {seq} after a silence")
            elif seq == self._behind + 1 and self._behind_run + 1 >= self._resync_after:
                self._resync(f"{self._resync_after} consecutive packets below seq {last}, "
                             f"up to {seq}")
            else:
                # a run of consecutive packets below the high-water mark resyncs the stream
                # (one stray far-ahead packet must not block it); anything else is rejected
                self._behind_run = self._behind_run + 1 if seq == self._behind + 1 else 1
                self._behind = seq
                self._reject("duplicate_seq" if seq == last else "out_of_order",
                             f"seq {seq} after {last}")
                return
        elif seq - last > self._max_jump:
            self._resync(f"seq jumped from {last} to {seq}")
        elif seq > last + 1:
            self.stats.lost += seq - last - 1
            self.say("lost", f"sequence gap: {seq - last - 1} packets lost before seq {seq}")
        self._last_seq, self._last_arrival = seq, arrival
        self._behind_run = 0

        # precedence: `ctl context` override, then the packet's label, then automatic
        wanted, cause = (label, "label") if self.override is None else (self.override, "ctl")
        if self.pending_context is not None:
            with self._pending_lock:
                if wanted is None:
                    wanted, cause = self.pending_context, "auto"
                self.pending_context = None
        if wanted is not None and wanted != self.context and wanted not in self._refused:
            self._switch(wanted, cause)

        arena, i = self.learning.arena, self._fill
        x = arena.X[self._slot, i]
        features_into(x, q, qd, qdd, t, self._qdd)
        arena.Y[self._slot, i] = tau
        pred = self.serving.predict(x)
        problem = K.check_torque(pred, self._limit)
        valid = problem == K.TORQUE_OK
        if not valid:
            pred = self._zeros
            self.stats.invalid_predictions += 1
            if problem == K.TORQUE_NON_FINITE:
                self._rollback_requested = True
                self.say("nonfinite", "the model predicted NaN/inf: published valid=false, "
                                      "rolling back")
            else:
                self.stats.over_limit_predictions += 1
                self.say("over_limit", "a prediction exceeded the torque limits (x guard."
                                       "torque_margin): published valid=false, zero torque")
        arena.P[self._slot, i] = pred
        if self._recording:  # [telemetry] mcap / foxglove_port: ~0.8 µs
            meta, ids = arena.T[self._slot, i], arena.S[self._slot, i]
            meta[0], meta[1], ids[0], ids[1] = t, arrival, seq, valid
        size = K.encode_prediction_into(self._out, seq, t, pred, self._ctx_bytes, valid)
        self.stats.predicted += 1  # before the send: a client that has it sees it counted
        self.pub.send(self._out[:size] if size > 0 else
                      encode_prediction(seq, t, pred.tolist(), self.context, valid), zmq.NOBLOCK)
        self.stats.latency.add(time.perf_counter() - arrival)
        self._fill = i + 1
        if self._fill == arena.X.shape[1]:
            self._submit()

    def _resync(self, why: str) -> None:
        """Same stream, new sequence: neither the skipped nor the passed-over seqs are lost."""
        self.stats.resyncs += 1
        self._qdd.reset()
        self.say("resync", f"stream resynchronised ({why})")

    def _new_stream(self, why: str) -> None:
        self.stats.stream_restarts += 1
        self._qdd.reset()
        self.say("stream", f"new stream ({why})", logging.INFO)

    def _submit(self) -> None:
        """Hand the filled slot (possibly partial) to the learning process; take a free one."""
        self._pump()
        if self.batches_submitted > self.batches_done:
            self.stats.deadline_misses += 1
            if self.stats.deadline_misses == 1:  # routine under load: counted, said once
                log.info("a learning step was still running when the next batch was due: the "
                         "batch waits in the queue (nothing is lost; predictions never wait). "
                         "Further ones are only counted (status: learning.deadline_misses)")
        self._send(("batch", self._slot, self._fill, self._rollback_requested, self._labelled))
        self._rollback_requested = self._labelled = False
        self.batches_submitted += 1
        self._fill = 0
        if not self._free:
            self.stats.backpressure_waits += 1
            self.say("backpressure", "learning is behind: batch queue full, reading paused")
            hung = None
            while not self._free:
                self._pump(1.0)
                if not self.learning.proc.is_alive():
                    self._learning_lost()
                if self.stopping:  # a learner this slow may be hung: stop waiting in time
                    hung = hung or time.monotonic() + STOP_WAIT
                    if time.monotonic() > hung:
                        log.critical("the learning process has not taken a batch for %.0f s; "
                                     "stopping without learning the rest", STOP_WAIT)
                        self._lost = True
                        raise SystemExit(4)
        self._slot = self._free.popleft()

    def _switch(self, name: str, cause: str) -> None:
        """Takes effect for this packet without waiting: the learning process parks the old
        model and restores / creates the new one in order; samples already buffered belong
        to the old context, so they are learned there first."""
        if name not in self._known and len(self._known) >= self.cfg["contexts"]["max_contexts"]:
            if len(self._known) < 2:  # max_contexts 1: nothing idle to evict
                self._refused.add(name)  # do not retry on every packet
                self.say("context", f"context bank full ({len(self._known)}); not creating "
                                    f"{name!r}", logging.ERROR)
                return
            # the learning process evicts the same one, the least recently used idle context
            evicted = next(k for k in self._known if k != self.context)
            del self._known[evicted]
            self.serving.frozen.pop(evicted, None)
            self.say("evicted", f"context bank full: forgot the least recently used context "
                                f"{evicted!r} for {name!r}")
        if self._fill:
            self._submit()
        job = self.call("switch", {"name": name, "cause": cause}, epoch=True,
                        on_reply=self._switched)
        self.serving.switch(name, job.args["epoch"], blend=cause != "auto")
        self._known.pop(self.context, None)  # re-inserted last: the most recently active
        self._known[self.context] = None
        self._known[name] = None
        self._set_context(name)

    def _switched(self, job: Job) -> None:
        """The learning process's view of the bank after a switch (socket thread)."""
        r = job.result
        if job.args["epoch"] != self.serving.epoch:
            return  # a later switch / reset / load decides
        held = set(r["contexts"])
        self._known = dict.fromkeys([k for k in self._known if k in held]
                                    + [k for k in r["contexts"] if k not in self._known])
        for gone in set(self.serving.frozen) - held:
            del self.serving.frozen[gone]
        if r["outcome"] == "refused":  # its bank was full after all: stay where it is
            self._refused.add(job.args["name"])
            self._set_context(r["context"])
            self.serving.context = r["context"]

    # -- shutdown ---------------------------------------------------------------------------
    def _shutdown(self) -> None:
        log.info("stopping: learning the buffered samples and writing %s", self.snap_path)
        self.control.stop()
        if self.learning.proc.is_alive() and not self._lost:
            if self._fill:
                self._submit()
            job = self.call("snapshot", {"path": str(self.snap_path), "keep": self.snap_keep,
                                         "counters": self._counters(), "wait": True})
            deadline = time.monotonic() + JOB_TIMEOUT
            while not job.done.is_set() and time.monotonic() < deadline:
                self._pump(0.1)
            if not job.done.is_set():
                log.error("final snapshot not written within %.0f s", JOB_TIMEOUT)
                self.exit_code = 5
            elif job.error is not None:
                log.error("final snapshot failed: %s", job.error)
            status = self.call("status")  # after the final snapshot: every write counted
            while not status.done.is_set() and time.monotonic() < deadline:
                self._pump(0.1)
            errors = status.result["stats"]["snapshots"]["errors"] if status.result else None
            if errors != 0:
                log.error("%s snapshot writes failed during this run: exit code 5",
                          "some" if errors is None else errors)
                self.exit_code = 5
            self._send(("stop",))
            self.learning.proc.join(STOP_WAIT)
        self.learning.kill()
        for s in (self.sub, self.pub):
            s.close(linger=0)
        self._zmq.term()
        log.info("stopped: %s", self.stats.as_dict()["packets"])

    def _counters(self) -> dict:
        return {"predicted": self.stats.predicted}

    def _serving_counters(self) -> dict:
        """For the telemetry (rtlearn.service.telemetry), at its rate."""
        s = self.stats
        return {"received": s.received, "predicted": s.predicted,
                "invalid_predictions": s.invalid_predictions,
                "over_limit_predictions": s.over_limit_predictions,
                "rejected": dict(s.rejected), "rejected_total": sum(s.rejected.values()),
                "lost": s.lost, "stream_restarts": s.stream_restarts, "resyncs": s.resyncs,
                "deadline_misses": s.deadline_misses,
                "backpressure_waits": s.backpressure_waits, "latency_count": s.latency.count}

    # -- control commands (called from the control thread) ------------------------------------
    def status(self) -> dict:
        """Packets and latencies from here, learning from the learning process (it answers
        after the batches already queued: a few steps at most)."""
        d = self.stats.as_dict()
        ls = self.call("status").wait(10.0)
        theirs = ls["stats"]
        d["learning"].update({k: theirs["learning"][k]
                              for k in ("steps", "samples", "step_ms", "rollbacks",
                                        "excluded")})
        for section in ("prequential", "contexts", "snapshots"):
            d[section] = theirs[section]
        d["contexts"]["auto"] = ls["auto"]
        d.update({"robot": self.robot.name, "n_joints": self.n, "rid": self.rid,
                  "joints": list(self.robot.joints), "context": self.context,
                  "context_override": self.override, "options": ls["options"],
                  "contexts_known": ls["contexts_known"],
                  "learner": {**ls["learner"],
                              "queued_batches": self.batches_submitted - self.batches_done},
                  "resumed_from": self.resumed_from, "resume_skipped": self.resume_skipped,
                  "loaded_from": self.loaded_from,
                  "warmup_s": self.warmup_s,
                  "realtime": self.realtime})
        return d

    def _override(self, args: dict) -> dict:
        """`ctl context`: NAME holds (over labels and automatic switches) from the next
        packet until released; an unknown NAME only with create."""
        if args.get("release"):
            released, self.override = self.override, None
            if released is not None:
                log.info("context override %r released: labels and automatic detection "
                         "decide again", released)
            return {"released": released, "current": self.context}
        name = args["name"]
        known = sorted(dict(self._known))  # (a copy: the socket thread changes it)
        new = name not in known
        if new and not args.get("create"):
            raise UnknownContextError(
                f"no context {name!r}; known: {', '.join(known)}. To start a new one, "
                f"`rtlearn ctl context --create {name}`")
        self.override = name
        log.info("context override %r%s: holds over labels and automatic detection until "
                 "`rtlearn ctl context --release`", name, " (new)" if new else "")
        return {"override": name, "new": new, "current": self.context,
                "until": "rtlearn ctl context --release"}

    def command(self, cmd: str, args: dict):
        """Mutating commands; raise ValueError / StateFileError for a clear error reply."""
        if cmd == "context":
            return self._override(args)
        if cmd == "contexts":
            return self.call("contexts").wait()
        if cmd == "shutdown":
            self.stopping = True
            return {"stopping": True}
        if cmd == "save":
            path = snapshots.confined(self.snap_dir, args.get("path", self.cfg["snapshots"]["file"]))
            keep = self.snap_keep if path == self.snap_path else 1
            return self.call("snapshot", {"path": str(path), "keep": keep,
                                          "counters": self._counters(), "wait": True}).wait()
        if cmd in ("load", "reset"):
            if cmd == "load":
                name, job_args = "load", {"path": str(snapshots.confined(self.snap_dir, args["path"]))}
            else:
                name, job_args = "reset", {"context": self.context}

            def replaced(job):  # socket thread: in order with its own switches
                parked = job.result.pop("parked", {})  # (not for the control reply)
                if job.args["epoch"] > self.serving.epoch:
                    with self._pending_lock:
                        self.pending_context = None
                    self._set_context(job.result["context"])
                    self._known = dict.fromkeys(job.result.get("contexts", [self.context]))
                    self._refused = set()
                    self.serving.replace(self.context, job.args["epoch"], parked)
            return self.call(name, job_args, on_reply=replaced, epoch=True).wait()
        if cmd == "options":
            return self.call("options", {k: args[k] for k in ("lr", "memory") if k in args}).wait()
        raise ValueError(f"unhandled command {cmd!r}")
