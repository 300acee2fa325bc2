"""Offline fitting (`rtlearn fit`): logs learned in this process exactly as the daemon learns
them when they are replayed to it, without sockets or a second process.

What the daemon does to a replayed sample, and where it is shared from:
  * the feature row (q, qd, qdd), with qdd estimated causally when the arm gives none, the
    estimator restarted at each new stream (one log = one stream): `features_into`;
  * batches of learner.batch_size samples, the partial one handed over before a context
    switch and at the end;
  * a context label different from the active context switches the bank before the sample
    (the samples buffered before it are learned in the old context first);
  * per batch: the sample screen, the settling of a restored context, the learning step, the
    rollback guard, the prequential statistics and the automatic contexts:
    `BatchLearning.learn`, the very code the learning process runs.
So a fit and a replay of the same logs through a fresh daemon with the same config end with
the same model bytes, at any replay speed. One difference is by design: the daemon's
automatic contexts look at the predictions it served and measure label silence in wall
time, and act at whatever packet it reads when a decision reaches it; here the served
predictions are the learning model's own (a daemon that keeps up), silence is stream time
and a decision acts at the next sample. Logs whose samples carry labels (or --context) never
let automatic contexts act (contexts.label_quiet), so for them the two are equal. The other
(kind = "issgpr"): the daemon fits the kernel beside learning and the new kernel takes effect
at whatever batch the fit ends; here it is fitted in line, as if the fit took no time, so a
fit is the same at any speed and a short log ends calibrated (at full speed the daemon's
first fit may not even have ended by the end of the log).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rtlearn.service import snapshots
from rtlearn.service.contexts import ContextBank
from rtlearn.learner.api import kind_of
from rtlearn.service.config import learner_config
from rtlearn.service.learning import BatchLearning, features_into, make_screen
from rtlearn.sources.filters import CausalDerivative


class Fit:
    """The daemon's learning path in-process: `stream(states)` per log, then `finish()`."""

    def __init__(self, cfg, robot, load: str | Path | None = None):
        self.robot = robot
        # as the daemon's, but a kernel fit (issgpr) runs in line: a replay through the daemon
        # meets it wherever its background fit ends, a fit at full speed would end first
        config = learner_config(cfg, robot.n_joints)
        learner = kind_of(config).make(config)
        bank = ContextBank.configured(cfg["contexts"])
        if load is not None:
            snapshots.restore(*snapshots.read_model(load, robot.name), learner, bank)
        self.core = BatchLearning(learner, bank, cfg, make_screen(cfg, robot))
        c, batch = learner.config, int(cfg["learner"]["batch_size"])  # the daemon's, any kind
        self._X = np.zeros((batch, c.n_inputs))
        self._Y = np.zeros((batch, c.n_joints))
        self._fill = 0
        self._labelled = False
        self._qdd = CausalDerivative(robot.n_joints)
        self._pending: str | None = None   # an automatic switch, done at the next sample
        self._refused: set[str] = set()
        self.t = 0.0  # stream time of the last sample
        self.samples = 0

    @property
    def context(self) -> str:
        return self.core.bank.current

    def stream(self, states, every: int = 0, report=None) -> None:
        """Learn one stream of JointStates (one log); report(self) after every `every`
        samples."""
        self._qdd.reset()
        for s in states:
            self.add(s)
            if every and self.samples % every == 0:
                report(self)

    def add(self, s) -> None:
        """One sample, as the daemon's packet path takes it (Daemon._handle)."""
        if s.context is not None:
            self._labelled = True
        wanted = s.context if s.context is not None else self._pending
        cause = "label" if s.context is not None else "auto"
        self._pending = None
        if wanted is not None and wanted != self.context and wanted not in self._refused:
            self._flush()  # the samples before it belong to the context being left
            if self.core.switch(wanted, cause) == "refused":
                self._refused.add(wanted)
        features_into(self._X[self._fill], s.q, s.qd, s.qdd, s.t, self._qdd)
        self._Y[self._fill] = s.tau
        self._fill += 1
        self.t = s.t
        self.samples += 1
        if self._fill == self._X.shape[0]:
            self._flush()

    def _flush(self) -> None:
        n = self._fill
        if n == 0:
            return
        decision = self.core.learn(self._X[:n], self._Y[:n], None, False, self._labelled,
                                   now=self.t)
        self._fill, self._labelled = 0, False
        if decision is not None:
            self._pending = decision["context"]

    def finish(self) -> None:
        """Learn the partial last batch (the daemon does at shutdown)."""
        self._flush()

    def prequential(self) -> tuple[int, np.ndarray]:
        """(samples scored, per-joint sums of squared prediction errors) so far."""
        st = self.core.stats
        return st.preq_count, st.preq_sum.copy()

    def save(self, path: str | Path, meta: dict | None = None) -> None:
        """A model file: a daemon snapshot (learner config, memories, every context of the
        bank), which `rtlearn serve --load` and `ctl load` start from."""
        st = self.core.stats
        counters = {"steps": st.steps, "samples": st.samples_learned, **(meta or {})}
        m, arrays = snapshots.capture(self.core.learner, self.core.bank, counters)
        m["robot"] = self.robot.name
        snapshots.write(Path(path), m, arrays)


def unwritable(path: str | Path) -> str | None:
    """Why a model file cannot be written at `path` (checked before a long fit), or None."""
    path = Path(path)
    if path.is_dir():
        return f"{path} is a directory"
    parent = path.parent
    while not parent.exists():  # save_state creates the missing directories
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot write in {parent}"
    return None
