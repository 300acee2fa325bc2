"""The learning process, the shared memory it publishes into, and the serving copy.

The daemon runs in two processes so that learning never takes the CPU, the caches or the GIL
from the per-packet path:

  * the serving process (rtlearn.service.daemon) predicts every packet at once from its own
    private copy of the active model and writes the samples into batch slots in shared memory;
  * the learning process (`LearningProcess`, forked before the serving process starts any
    thread or socket) owns the learner and the context bank. It learns each submitted slot,
    in order, and publishes the new weights into shared memory. Every change of the learning
    state (steps, context switches, snapshots, reset, load, options) runs there, in the order
    the serving process sent it, so none of them needs a lock.

Messages go through a pipe (small pickled tuples: slot numbers and jobs); batches and
weights go through one anonymous shared mapping (`Arena`). The published model is guarded by
a process-shared lock the reader only ever tries (`try_refresh`), so a copy is never torn and
the per-packet path never waits.
"""

from __future__ import annotations

import atexit
import logging
import math
import mmap
import multiprocessing
import queue
import signal
import threading
import time
import traceback

from dataclasses import fields

import numpy as np

from rtlearn.learner import StateFileError
from rtlearn.learner.api import Learner, kind_of
from rtlearn.service import realtime, snapshots
from rtlearn.service.autocontext import AutoContexts
from rtlearn.service.config import learner_config
from rtlearn.service.contexts import ContextBank, ContextLimitError
from rtlearn.service.screen import SampleScreen
from rtlearn.service.stats import RING, RateLimitedLog, Stats
from rtlearn.service.telemetry import Telemetry

log = logging.getLogger("rtlearn.service")
READY_WAIT = 60.0  # s the serving process waits for the learning process's telemetry start


class BindError(RuntimeError):
    """A socket could not bind its endpoint (in use, no such interface, ...)."""


def model_arrays(model) -> tuple[np.ndarray, ...]:
    """The arrays of a model copy (ModelCopy, ISSGPRModel: dataclasses of arrays), in the
    order its `assign` takes them."""
    return tuple(getattr(model, f.name) for f in fields(model))


def blank_like(model):
    return type(model)(*(np.zeros_like(a) for a in model_arrays(model)))


class Arena:
    """One anonymous shared mapping (inherited by the forked learning process) holding the
    published model (laid out as the learner's model copy) and the batch slots. header:
    [version, epoch]: version counts publications, epoch names the switch / reset / load the
    model belongs to. Beside each sample, T: [t, arrival (perf_counter)] and S: [seq, valid]
    (for the recordings), and the serving process's latency ring (for the telemetry)."""

    def __init__(self, learner: Learner, slots: int, batch_size: int):
        c = learner.config
        n_in, n_out, b = c.n_inputs, c.n_joints, batch_size
        copy = learner.model_copy()
        model = {f"model.{f.name}": (getattr(copy, f.name).shape, getattr(copy, f.name).dtype)
                 for f in fields(copy)}  # the weights may be float32 (LearnerConfig.dtype)
        shapes = {"header": ((2,), np.int64), **model, "weights": ((n_out,), np.float64),
                  "X": ((slots, b, n_in), np.float64), "Y": ((slots, b, n_out), np.float64),
                  "P": ((slots, b, n_out), np.float64), "T": ((slots, b, 2), np.float64),
                  "S": ((slots, b, 2), np.int64), "latency": ((RING,), np.float64)}
        # every block a multiple of 8 bytes, so every view stays aligned
        nbytes = {k: -(-int(np.prod(s)) * np.dtype(t).itemsize // 8) * 8
                  for k, (s, t) in shapes.items()}
        # MAP_SHARED | MAP_ANONYMOUS: shared across fork
        self._map = mmap.mmap(-1, sum(nbytes.values()))
        views, offset = {}, 0
        for name, (shape, dtype) in shapes.items():
            n = int(np.prod(shape))
            views[name] = np.frombuffer(self._map, dtype, n, offset).reshape(shape)
            offset += nbytes[name]
        self.header = views["header"]
        self.model = type(copy)(*(views[k] for k in model))
        self.weights = views["weights"]  # the bank's restore weights (NaN: none)
        self.weights[:] = np.nan
        self.X, self.Y, self.P = views["X"], views["Y"], views["P"]
        self.T, self.S, self.latency = views["T"], views["S"], views["latency"]
        self.lock = multiprocessing.get_context("fork").Lock()

    def publish(self, learner: Learner, epoch: int, weights: np.ndarray | None = None) -> None:
        """Learning process: the learner's active model becomes the published one, with the
        context bank's restore weights (ContextBank.restore_weights)."""
        with self.lock:
            learner.copy_model_into(self.model)
            self.weights[:] = np.nan if weights is None else weights
            self.header[1] = epoch
            self.header[0] += 1


def make_learner(cfg, n_joints: int) -> Learner:
    """A fresh learner of [learner] kind for an arm of n_joints, as the daemon runs it."""
    config = learner_config(cfg, n_joints)
    return kind_of(config).make(config, daemon=True)


def make_screen(cfg, robot) -> SampleScreen:
    """The sample screen of a daemon config ([guard]) for `robot`'s limits."""
    guard = cfg["guard"]
    return SampleScreen(robot.torque_limits, robot.velocity_limits,
                        float(guard["sample_margin"]), float(guard["outlier_k"]))


def features_into(x: np.ndarray, q, qd, qdd, t: float, derivative) -> None:
    """One sample's feature row x = (q, qd, qdd), in place (the per-packet path: no
    allocation). qdd None (an arm that gives none): the causal estimate of `derivative`
    (rtlearn.sources.filters.CausalDerivative) from qd and the time stamp t."""
    n = q.shape[0]
    x[:n] = q
    x[n:2 * n] = qd
    if qdd is None:
        derivative.update_into(t, qd, x[2 * n:])
    else:
        x[2 * n:] = qdd


class ServingModel:
    """What the serving process predicts from, without ever waiting for learning.

    `current` is a private copy of the last published model of this epoch, refreshed between
    packets (`try_refresh`): a private copy stays in this core's cache, where the shared one
    is rewritten by the other core every step. At a context switch the current copy is
    parked as that context's frozen model, and until the learning process has carried out
    the switch and published the new context's model, predictions come from the new
    context's frozen copy (a known context: the paper's reload) or from the parked one (a new
    context starts from the current model).
    """

    def __init__(self, arena: Arena, predictor: Learner, context: str):
        # Predictions go through predictor.predict_one (its one-row buffers belong to this
        # thread); the learner itself lives in the learning process.
        self.arena, self._predictor = arena, predictor
        self.kind = kind_of(predictor)
        self._published = model_arrays(arena.model)
        self.current = self._blank()
        self._staging = self._blank()
        self.frozen: dict = {}       # context -> model copy
        self.interim = None          # a model copy served until this epoch's model arrives
        self.context, self.epoch, self._version = context, 0, -1

    def _blank(self):
        return blank_like(self.arena.model)

    def try_refresh(self) -> bool:
        """Take the published model if it is new and of this epoch; never blocks."""
        header = self.arena.header
        if header[0] == self._version or header[1] != self.epoch:
            return False
        if not self.arena.lock.acquire(False):
            return False  # being written: try again after the next packet
        try:
            if header[1] != self.epoch:
                return False
            self._staging.assign(*self._published)
            self._version = int(header[0])
        finally:
            self.arena.lock.release()
        self.current, self._staging = self._staging, self.current
        self.interim = None
        return True

    def switch(self, name: str, epoch: int, blend: bool = True) -> None:
        """Serving side of a context switch (the learning process does its part in order);
        blend: as ContextBank.switch (an automatic restore does not blend)."""
        parked = self.current if self.interim is None else self.interim
        self.frozen[self.context] = parked
        stored = self.frozen.get(name)
        w = self.arena.weights
        self.interim = (parked if stored is None else
                        self.kind.restored(self._predictor, parked, stored,
                                           w.copy() if blend and not np.isnan(w[0]) else None))
        self.current, self._staging = self._blank(), self._blank()
        self.context, self.epoch, self._version = name, epoch, -1

    def replace(self, context: str, epoch: int, parked: dict) -> None:
        """After a reset or load: the new bank's parked models become the frozen ones."""
        self.frozen = dict(parked)
        if self.interim is None:
            self.interim = self.current
        self.context, self.epoch, self._version = context, epoch, -1
        self.try_refresh()

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The prediction for one feature row (a view of a reused buffer)."""
        return self._predictor.predict_one(x, self.current if self.interim is None
                                           else self.interim)


def parked_models(learner: Learner, bank: ContextBank) -> dict:
    """A servable model copy of every parked context."""
    kind = kind_of(learner)
    return {name: kind.servable(state) for name, state in bank.parked.items()}


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the serving process dies (kill -9 included)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class BatchLearning:
    """The learning state (learner, context bank, sample screen, automatic contexts, guards,
    statistics) and everything a batch or a context switch does to it, in order, without
    sockets or processes. The learning process runs it on the batches the serving process
    hands over; `rtlearn fit` (rtlearn.service.fit) runs the very same object on the batches
    of a log, so a fit and a replay through the daemon learn alike."""

    def __init__(self, learner: Learner, bank: ContextBank, cfg: dict,
                 screen: SampleScreen):
        self.cfg, self.guard, self.screen = cfg, cfg["guard"], screen
        self.learner, self.bank = learner, bank
        self.config = learner.config
        self.auto = AutoContexts(cfg["contexts"], self.config.n_joints, self.config.n_inputs)
        self.stats = Stats(self.config.n_joints)
        self.say = RateLimitedLog(log, self.guard["log_interval"])
        self._good = None
        self._save_good()

    def publish(self) -> None:
        """The model to serve changed (the learning process publishes it; in-process, no
        one serves meanwhile)."""

    def _screened(self, X, Y, P):
        """The samples of a batch to learn from (rtlearn.service.screen): the others are
        counted by reason and left out, the rest of the batch is still learned. Residuals
        are the learning model's own, not the served ones: a served copy may be a step or
        several behind, and one published in the middle of a batch would make its residuals
        jump there. P None: the served predictions are the learning model's own."""
        own = self.learner.predict_many(X)
        P = own if P is None else P
        keep = self.screen.keep(self.learner, X, Y, own)
        if keep.all():
            return X, Y, P
        n = X.shape[0]
        self.say("excluded", f"{n - int(keep.sum())} of {n} samples of a batch not learned: "
                             f"beyond the robot's limits or outliers (status learning.excluded: "
                             f"{self.screen.counts})")
        return X[keep], Y[keep], P[keep]

    def learn(self, X, Y, P=None, rollback: bool = False, labelled: bool = False,
              now: float | None = None) -> dict | None:
        """One batch: X features, Y torques, P the predictions served for them (None: the
        learning model's own). rollback: a served prediction was not finite; labelled: a
        packet of the batch carried a context label; now: seconds of the clock automatic
        contexts measure label silence with (default monotonic wall time). Returns the
        automatic switch to carry out (`switch`) before the next batch, or None."""
        t0 = time.perf_counter()
        if rollback:
            self._rollback("a served prediction was not finite")
        X, Y, P = self._screened(X, Y, P)
        n = X.shape[0]
        if n == 0:
            return None
        err = P - Y
        sq = np.einsum("ij,ij->j", err, err)
        self.bank.settle(self.learner, X, Y)
        loss = self.learner.learn_many(X, Y)
        mean = float(loss.mean())
        ref = float(self.stats.learn_loss.mean())
        exploded = (kind_of(self.learner).diverges and self.stats.preq_count > 1000
                    and ref > 0 and mean > self.guard["explode_factor"] * ref)
        good = math.isfinite(mean) and not exploded
        if not good:
            self._rollback(f"loss {mean:.3g} (running {ref:.3g})")
        else:
            self.stats.add_prequential(sq, n, loss)
            if self.learner.n_steps % int(self.guard["good_every"]) == 0:
                self._save_good()
            self.bank.learned(n)
        self.publish()
        decision = None
        if good:  # after the publication: detection never delays the served model
            decision = self.auto.after_batch(self.learner, self.bank, X, Y, P, labelled, now)
            if decision is not None:
                self.say("auto", f"payload change found: {decision['decision']} context "
                                 f"{decision['context']!r}", logging.INFO)
        self.stats.steps += 1
        self.stats.samples_learned += n
        self.stats.step_time.add(time.perf_counter() - t0)
        return decision

    def switch(self, name: str, cause: str = "label") -> str:
        """Make context `name` active; cause: label, ctl (an override) or auto. Returns
        ContextBank.switch's outcome, or 'refused' when the bank is full."""
        left = self.bank.current
        try:
            outcome = self.auto.switch(self.learner, self.bank, name)
        except ContextLimitError as e:
            outcome = "refused"
            self.say("context", str(e), logging.ERROR)
        if self.bank.last_evicted is not None:
            self.stats.contexts_evicted += 1
        if outcome in ("created", "restored"):
            self.stats.context_switches += 1
            if outcome == "created":
                self.stats.contexts_created += 1
            else:
                self.stats.contexts_restored += 1
            self._save_good()
        self.publish()
        if outcome != "same":
            log.info("context %r -> %r (%s; %s)%s", left, name, outcome, _CAUSES[cause],
                     f"; evicted {self.bank.last_evicted!r}" if self.bank.last_evicted else "")
        return outcome

    def _save_good(self) -> None:
        if self.learner.is_finite():
            self._good = (self.bank.current, self.learner.network_state(),
                          self.learner.memory_state(), self.learner.n_steps)

    def _rollback(self, why: str) -> None:
        ctx, net, mem, step = self._good
        if ctx == self.bank.current:
            self.learner.set_network_state(net)
        self.learner.set_memory_state(mem, transfer=False)
        self.stats.rollbacks += 1
        self.say("rollback", f"model diverged ({why}): rolled back to the state of step {step}")
        self.publish()

    def _replace(self, learner: Learner, bank: ContextBank, why: str) -> None:
        """A new learner and bank (why: loaded, reset)."""
        self.learner, self.bank = learner, bank
        self.auto.restart()
        self.stats.reset_losses()
        self._save_good()
        self.publish()

    def status(self) -> dict:
        lr = self.learner
        stats = self.stats.as_dict()
        stats["contexts"]["settled"] = dict(self.bank.settled)
        w = self.bank.restore_weights(lr)
        stats["contexts"]["restore_weights"] = None if w is None else [round(float(v), 3)
                                                                        for v in w]
        stats["learning"]["excluded"] = dict(self.screen.counts)
        return {"stats": stats, "contexts_known": self.bank.names,
                "auto": self.auto.status(), "options": lr.options(),
                "learner": {"steps": lr.n_steps, "samples": lr.n_samples,
                            **kind_of(lr).status(lr)}}


class LearningProcess(BatchLearning):
    """Serving-process handle of the learning process, and (after the fork) its main loop.

    Protocol on the pipe, serving -> learning: ("batch", slot, n, rollback_requested,
    labelled), ("job", id, name, args), ("serving", counters) at the telemetry rate,
    ("stop",). Learning -> serving: ("ready", None or why the telemetry could not start)
    first, then ("done", slot),
    ("reply", id, ok, result or (reason, message)), ("auto", context, epoch): an automatic
    switch the serving process schedules like `ctl context` (its own epoch, its frozen
    copies), unless a switch of a later epoch came first. Snapshot jobs are answered by the
    writer thread once the file is on disk, so learning goes on meanwhile.
    """

    def __init__(self, learner: Learner, bank: ContextBank, cfg: dict,
                 make_learner, robot_name: str, screen: SampleScreen, telemetry: Telemetry,
                 cpus: set[int] | None = None):
        self.cpus, self.make_learner, self.robot_name = cpus, make_learner, robot_name
        self.telemetry = telemetry
        self.arena = Arena(learner, int(cfg["guard"]["batch_queue"]),
                           int(cfg["learner"]["batch_size"]))
        self.epoch = 0
        super().__init__(learner, bank, cfg, screen)
        self.arena.publish(learner, 0, bank.restore_weights(learner))
        self.conn, child = multiprocessing.Pipe(duplex=True)
        self.proc = multiprocessing.get_context("fork").Process(
            target=self._main, args=(child,), name="rtlearn-learning", daemon=True)
        self.proc.start()
        child.close()
        del self.learner, self.bank  # from here the learning state lives in the child
        # multiprocessing joins a daemon child at exit after a SIGTERM it ignores: kill it
        # first if the serving process exits without the orderly stop (registered after
        # multiprocessing's own handler, so it runs before it)
        atexit.register(self.kill)
        why = self.conn.recv()[1] if self.conn.poll(READY_WAIT) else "no answer"
        if why is not None:
            self.kill()
            raise BindError(why)

    def switch(self, name: str, cause: str = "label") -> str:
        left = self.bank.current
        outcome = super().switch(name, cause)
        if self.telemetry.active:
            self.telemetry.switched(left, self.bank.current, outcome, cause)
        return outcome

    def _replace(self, learner: Learner, bank: ContextBank, why: str) -> None:
        if self.telemetry.active:
            self.telemetry.switched(self.bank.current, bank.current, why, "command")
        kind_of(self.learner).set_threads(self.learner, 1)  # its worker threads end with it
        kind_of(learner).set_threads(learner, self.threads)
        super()._replace(learner, bank, why)

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)

    def publish(self) -> None:
        """At once while learning keeps up. While batches wait (a replay at full speed), at
        most every PUBLISH_LAG changes, and once the queue runs dry: copying the whole model
        out costs ~5% of a step (45 us of ~1 ms), and the serving side, reading ahead of
        learning then, has no use for every version."""
        self._stale += 1
        if self._stale >= PUBLISH_LAG or not self.conn.poll():
            self._publish_now()

    def _publish_now(self) -> None:
        self.arena.publish(self.learner, self.epoch, self.bank.restore_weights(self.learner))
        self._stale = 0

    # -- the learning process -------------------------------------------------------------
    def _main(self, conn) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)  # the serving process decides when to stop
        _die_with_parent()
        realtime.pin_to(self.cpus)
        if not self.cpus:  # sharing CPUs with the per-packet path: yield to it at once
            realtime.lowest_priority()
        # one thread per learning CPU, the joints split between them (threads started here:
        # a fork keeps only the forking thread)
        self.threads = len(self.cpus) if self.cpus else 1
        kind_of(self.learner).set_threads(self.learner, self.threads)
        self.conn = conn
        self._send_lock = threading.Lock()  # the main loop and the snapshot writer reply
        self._writer = _SnapshotWriter(self.stats, self._reply)
        self._writer.start()
        tel = self.telemetry if self.telemetry.active else None
        self._send(("ready", tel.open(self.arena) if tel is not None else None))
        self._stale = 0  # changes of the model not published yet
        while True:
            if self._stale and not conn.poll():
                self._publish_now()
            if tel is not None:
                if tel.wait() == 0.0:  # also in a flood of batches
                    tel.publish(self)
                if not conn.poll(tel.wait()):
                    continue
            msg = conn.recv()
            kind = msg[0]
            if kind == "batch":
                _, slot, n, rollback, labelled = msg
                a = self.arena
                if tel is not None:
                    tel.batch(slot, n, self.bank.current)
                try:
                    decision = self.learn(a.X[slot, :n], a.Y[slot, :n], a.P[slot, :n],
                                          rollback, labelled)
                    if decision is not None:
                        self._send(("auto", decision["context"], self.epoch))
                except Exception:
                    log.exception("learning step failed; rolling back")
                    self._rollback("exception in the learning step")
                self._send(("done", slot))
            elif kind == "job":
                _, job_id, name, args = msg
                try:
                    result = getattr(self, "_job_" + name)(job_id=job_id, **args)
                    if result is not DEFERRED:
                        self._reply(job_id, None, result)
                except Exception as e:  # reported to the caller, never ends the process
                    if not isinstance(e, (StateFileError, ValueError, OSError)):
                        log.error("learning job %s failed:\n%s", name, traceback.format_exc())
                    self._reply(job_id, e, None)
            elif kind == "serving":
                if tel is not None:
                    tel.serving_counters = msg[1]
            elif kind == "stop":
                self._writer.stop()  # every queued snapshot on disk, in order
                if tel is not None:
                    tel.close()
                return

    def _send(self, msg: tuple) -> None:
        with self._send_lock:
            self.conn.send(msg)

    def _reply(self, job_id: int, error: Exception | None, result) -> None:
        if error is None:
            self._send(("reply", job_id, True, result))
            return
        reason = ("bad_snapshot" if isinstance(error, StateFileError) else
                  "failed" if isinstance(error, (ValueError, OSError)) else "internal")
        text = str(error) if reason != "internal" else f"{type(error).__name__}: {error}"
        self._send(("reply", job_id, False, (reason, text)))

    # -- jobs: ("job", id, name, args) runs _job_<name>(job_id=id, **args) ------------------
    def _job_status(self, job_id: int) -> dict:
        return self.status()

    def _job_contexts(self, job_id: int) -> dict:
        return {"contexts": self.bank.listing()}

    def _job_switch(self, job_id: int, name: str, epoch: int, cause: str) -> dict:
        """The serving side has switched already; it learns the outcome from the reply (and
        the bank's names, in case a load it has not heard of yet changed them). cause:
        label, ctl (an override) or auto."""
        self.epoch = epoch  # the serving side takes only models of this epoch from now on
        outcome = self.switch(name, cause)
        return {"outcome": outcome, "context": self.bank.current, "contexts": self.bank.names,
                "evicted": self.bank.last_evicted}

    def _job_snapshot(self, job_id: int, path: str, counters: dict, wait: bool, keep: int = 1):
        """Captured here (in learning order), written by the writer thread in FIFO order; with
        wait, the writer replies once the file is on disk."""
        meta, arrays = snapshots.capture(self.learner, self.bank,
                                         {"steps": self.stats.steps,
                                          "samples": self.stats.samples_learned, **counters})
        meta["robot"] = self.robot_name
        self._writer.todo.put((path, meta, arrays, keep, job_id if wait else None))
        return DEFERRED if wait else {"queued": path}

    def _job_load(self, job_id: int, path: str, epoch: int) -> dict:
        meta, arrays = snapshots.read(path)
        learner = self.make_learner()
        bank = ContextBank.configured(self.cfg["contexts"], meta["current"])
        snapshots.restore(meta, arrays, learner, bank)  # into fresh objects: a bad file changes nothing
        self.epoch = epoch
        self._replace(learner, bank, "loaded")
        log.info("loaded %s: %d steps, contexts %s (active %r)", path, learner.n_steps,
                 bank.names, bank.current)
        return {"loaded": path, "context": bank.current, "contexts": bank.names,
                "parked": parked_models(learner, bank)}  # for the serving side only

    def _job_reset(self, job_id: int, context: str, epoch: int) -> dict:
        self.epoch = epoch
        self._replace(self.make_learner(),
                      ContextBank.configured(self.cfg["contexts"], context), "reset")
        log.info("reset: everything learned forgotten (networks, memories, contexts); "
                 "starting again in context %r", context)
        return {"reset": True, "context": context, "contexts": [context]}

    def _job_options(self, job_id: int, lr: float | None = None,
                     memory: bool | None = None) -> dict:
        if lr is not None:
            self.learner.set_lr(float(lr))
        if memory is not None:
            self.learner.set_memory_learning(memory)
        log.info("options: %s", self.learner.options())
        return {"options": self.learner.options(),
                "rates": kind_of(self.learner).status(self.learner)["rates"]}


DEFERRED = object()  # a job whose reply comes later (from the snapshot writer)
PUBLISH_LAG = 10     # model changes the served copy may lag while batches are waiting
_CAUSES = {"label": "packet label", "ctl": "ctl context override",
           "auto": "payload change found without labels"}


class _SnapshotWriter(threading.Thread):
    """File I/O off the learning loop (learning process), in the order of capture."""

    def __init__(self, stats: Stats, reply):
        super().__init__(name="rtlearn-snapshots", daemon=True)
        self.stats, self.reply = stats, reply
        self.todo: queue.SimpleQueue = queue.SimpleQueue()

    def stop(self) -> None:
        self.todo.put(None)
        self.join()

    def run(self) -> None:
        while (item := self.todo.get()) is not None:
            path, meta, arrays, keep, job_id = item
            error = None
            try:
                snapshots.write(path, meta, arrays, keep)
                self.stats.snapshot_written(path)
                log.info("snapshot written: %s (%d steps)", path, meta["counters"]["steps"])
            except Exception as e:  # a full disk must not stop learning
                if self.stats.snapshot_failed(e):  # each kind logged once; all in status
                    log.error("snapshot %s failed: %s (further failures of this kind are only "
                              "counted in status; the exit code will be 5)", path, e)
                error = OSError(f"snapshot {path} failed: {e}")
            if job_id is not None:
                self.reply(job_id, error, {"saved": str(path)})
