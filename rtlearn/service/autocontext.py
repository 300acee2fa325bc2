"""Payload changes found without labels: a change-point test on the prediction residual, then
a choice among the stored contexts (docs/service.md, "Automatic contexts").

It runs where the bank lives, in the learning process, once per learned batch, on the
residuals of the predictions the daemon served (P - Y); the per-packet path never sees it.
`rtlearn experiment auto-context` drives the same objects in-process.

Detection (`ChangeDetector`). A payload shifts the torque each joint needs, so the residual
of joint j moves away from where it usually sits; what the detector watches is that shift,
located robustly per batch (the median of the batch's 10 residuals of the joint, m_j) and
standardised by its usual size v_j, an exponential mean over SCALE_BATCHES batches of m_j^2,
each batch's value winsorised at WINSOR times the current v_j so that a change cannot raise its
own yardstick quickly. Pooled over joints:

    x_b = log mean_j m_j^2 / v_j       (one batch; mean about 1 while nothing changes)
    S_b = max(0, S_{b-1} + x_b - k),   alarm when S_b > h              (CUSUM, Page 1954)

A change that multiplies the mean of m_j^2 / v_j by rho > e^k is found after about
h / (log rho - k) batches; smaller rises are absorbed. The onset estimate is the end of the
last batch at which S was 0. Under no change the mean of 7 such ratios exceeds e^k = 7.4
(k = 2) with a probability of order 1e-8 for white residuals; model misfit that follows the
motion makes it larger in practice. Defaults k = 2, h = 4.

Why the shift of the batch median and not the spread of the residual (the first design,
x_b = log median_i mean_j e_ij^2 / s_j^2): the residual is heteroscedastic along a motion. A
payload that attaches while the arm stands still raises the residual to a level that is usual
while it moves, and the learner absorbs the shift within ~100 ms, so a test on its spread
missed 36 % of the payload changes of three KUKA lift runs, most of them the 1.5 kg grasp
from an empty hand; the batch median of a joint sits still while the arm does and jumps at
the grasp (17 % missed, no false alarm in the steady stretches; docs/results.md, section 6).
The median keeps the test blind to single wild samples.

Selection (`AutoContexts`). Predictions keep coming from the current model, which keeps
learning (no batch waits). A stored context's part (output layers, target normaliser) is
scored on the live hidden layers (`OnlineLearner.batch_loss`) against the predictions the
current model actually served on the same samples:
  * at the alarm (30 samples after the onset at the earliest), on the samples since the
    onset but the first TRANSIENT: a stored context below `margin` times the served error is
    restored at once. The first 10 ms after a change cost every model alike, 10-40x the rest
    (the swap's jolt), so left in they decided the comparison by their noise. The continuing model adapts to a new payload
    within ~100 ms; after that no stored context beats it, so a restore pays only early
    (docs/results.md, auto-context);
  * `window` samples after the onset, on the window's second half (past the first
    transient): the same test again; else, if the current context's model as it was at the
    alarm ("before") forecasts those samples no worse than the served predictions, nothing
    changed for the model (dismissed: a burst such as a stiction jolt, or a model served
    late in a flood); else a new context `auto-N`, started from the current model, which
    has adapted to the new payload during the window.
Either switch parks the context being left as it was at the alarm, so the samples of the
new payload learned meanwhile do not stay in the old payload's output layer.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter, deque

import numpy as np

SCALE_BATCHES = 200     # time constant of the per-joint residual scale while watching (2 s)
TRACK_BATCHES = 20      # its time constant while tracking: warm-up, after a switch (0.2 s)
WINSOR = 4.0            # while watching, a batch counts at most this times the current scale
WARMUP_BATCHES = 300    # no alarm before the model has settled from its fresh start (3 s)
HOLDOFF_BATCHES = 100   # no alarm after a switch (1 s): the scale follows the new model
PENDING_BATCHES = 50    # a requested switch not carried out within this many batches lapses
RESTORE_SAMPLES = 30    # samples since the onset after which a restore is tried (30 ms)
TRANSIENT = 10          # the first of them, left out of the restore's score (the swap's jolt)
RECENT = 32             # detections kept for status
DECISIONS = ("restored", "created", "dismissed")
AUTO_NAME = re.compile(r"auto-(\d+)$")


class ChangeDetector:
    """CUSUM on the pooled, standardised residual (module docstring), once per batch.

    Three modes: watching (the default: slow winsorised scale, CUSUM, alarms), tracking
    (`hold(b)` for the next b batches: the scale follows the residual quickly, no alarm; at
    the start and after a switch) and frozen (`update(E, watch=False)`: nothing moves; while
    an alarm is being confirmed, so that the change does not become its own yardstick)."""

    def __init__(self, n_joints: int, drift: float = 2.0, threshold: float = 4.0):
        self.drift, self.threshold = float(drift), float(threshold)
        self.scale = np.zeros(n_joints)   # usual mean squared residual per joint (baseline)
        self.shift = np.zeros(n_joints)   # v_j: usual squared batch median
        self.S = 0.0
        self.samples = 0                  # samples seen
        self.onset = 0                    # sample count at the end of the last batch with S = 0
        self._track = WARMUP_BATCHES      # batches left in tracking mode
        self._ms = np.zeros(n_joints)
        self._m2 = np.zeros(n_joints)

    def hold(self, batches: int = HOLDOFF_BATCHES) -> None:
        """Track, without alarms, for the next `batches` batches; S restarts."""
        self._track = max(self._track, batches)
        self.S = 0.0

    def baseline(self) -> float:
        """The usual mean squared residual, mean over joints (comparable to batch_loss)."""
        return float(self.scale.mean())

    def update(self, E: np.ndarray, watch: bool = True) -> bool:
        """E: (n, n_joints) residuals of one batch; True at an alarm. Non-finite batches are
        skipped (the rollback guard deals with them)."""
        n = E.shape[0]
        if n == 0 or not np.isfinite(E).all():
            return False
        self.samples += n
        if not watch:
            self.S, self.onset = 0.0, self.samples
            return False
        np.mean(E * E, axis=0, out=self._ms)
        np.median(E, axis=0, out=self._m2)
        self._m2 *= self._m2
        if not self.scale.any():
            self.scale[:] = self._ms
            self.shift[:] = self._m2
        if self._track > 0:
            self._track -= 1
            self.scale += (self._ms - self.scale) / TRACK_BATCHES
            self.shift += (self._m2 - self.shift) / TRACK_BATCHES
            self.S, self.onset = 0.0, self.samples
            return False
        floor = 1e-12 + 1e-9 * self.shift.max()  # a joint that never errs divides by this
        x = math.log(max(float(np.mean(self._m2 / np.maximum(self.shift, floor))), 1e-300))
        for usual, now in ((self.scale, self._ms), (self.shift, self._m2)):
            np.minimum(now, WINSOR * usual, out=now)
            usual += (now - usual) / SCALE_BATCHES
        self.S = max(0.0, self.S + x - self.drift)
        if self.S == 0.0:
            self.onset = self.samples
        if self.S > self.threshold:
            self.S = 0.0
            return True
        return False


class AutoContexts:
    """Detector + selection over a ContextBank (module docstring). `after_batch` after each
    learned batch; a switch it asks for is carried out with `switch` (in the daemon after a
    round trip through the serving process, which allocates the epoch)."""

    def __init__(self, settings: dict, n_joints: int, n_inputs: int):
        self.enabled = bool(settings["auto"])
        self.label_quiet = float(settings["label_quiet"])
        self.window = int(settings["window"])
        self.margin = float(settings["margin"])
        self.detector = ChangeDetector(n_joints, settings["cusum_drift"],
                                       settings["cusum_threshold"])
        self._X = np.zeros((self.window, n_inputs))
        self._Y = np.zeros((self.window, n_joints))
        self._served = np.zeros(self.window)  # the served prediction's MSE over joints
        self._at = 0                          # ring position
        self._last_label = -math.inf
        self.alarm: dict | None = None        # being confirmed
        self.pending: dict | None = None      # decided, waiting for the switch
        self.recent: deque = deque(maxlen=RECENT)
        self.counts = Counter()

    def active(self, now: float) -> bool:
        """Acts only when enabled and no labelled packet came for label_quiet seconds."""
        return self.enabled and now - self._last_label >= self.label_quiet

    def after_batch(self, learner, bank, X, Y, P, labelled: bool = False,
                    now: float | None = None) -> dict | None:
        """One learned batch (X, Y) whose served predictions were P. Returns a decision
        {"decision": "restored" | "created", "context": name} to carry out with `switch`,
        else None. `now`: seconds of any monotonic clock (default time.monotonic())."""
        now = time.monotonic() if now is None else now
        if labelled:
            self._last_label = now
            self._cancel("overridden")
        E = P - Y
        self._remember(X, Y, E)
        d = self.detector
        if not self.active(now):
            d.hold(1)
        busy = self.alarm is not None or self.pending is not None
        if d.update(E, watch=not busy):
            self.counts["alarms"] += 1
            self.alarm = {"onset": d.onset, "alarm": d.samples, "wall": time.time(),
                          "baseline": d.baseline(), "pre": learner.network_state(),
                          "tried": False}
        if self.pending is not None:
            self.pending["left"] -= 1
            if self.pending["left"] <= 0:
                self._cancel("lapsed")
        a = self.alarm
        if a is None:
            return None
        since = d.samples - a["onset"]
        # a return to a stored payload pays most before the continuing model adapts (it
        # does within ~100 ms): try a restore as soon as the samples since the onset are
        # enough to tell payloads apart
        if not a["tried"] and since >= RESTORE_SAMPLES:
            a["tried"] = True
            decision = self._decide(learner, bank, final=False)
            if decision is not None or self.alarm is None:
                return decision
        if since < self.window:
            return None
        return self._decide(learner, bank, final=True)

    def _remember(self, X, Y, E) -> None:
        X, Y, E = X[-self.window:], Y[-self.window:], E[-self.window:]
        rows = (self._at + np.arange(X.shape[0])) % self.window
        self._X[rows], self._Y[rows] = X, Y
        self._served[rows] = np.einsum("ij,ij->i", E, E) / E.shape[1]
        self._at = (self._at + X.shape[0]) % self.window

    def _decide(self, learner, bank, final: bool) -> dict | None:
        """At the alarm (final=False): restore a stored context that forecasts the samples
        since the onset better than the continuing model did, by the margin. At the end of
        the window: otherwise a new context, or dismissed if the model from before the alarm
        forecasts the window's second half (100-200 ms after the onset by default, past the
        first transient) no worse than the continuing model."""
        a = self.alarm
        since = min(self.detector.samples - a["onset"], self.window)
        order = np.r_[self._at:self.window, 0:self._at]
        rows = (order[self.window - since + TRANSIENT:] if not final
                else order[self.window // 2:])
        Xw, Yw = self._X[rows], self._Y[rows]
        live = float(self._served[rows].mean())   # served: forecasts, as a restore's are
        stored = {name: learner.batch_loss(Xw, Yw, state) for name, state in bank.parked.items()}
        best = min(stored, key=stored.get) if stored else None
        scores = {"continuing": live, **stored}
        if not final:
            a["scores"], a["window_scores"] = scores, None
        else:
            a["window_scores"] = scores
        if best is not None and stored[best] < self.margin * live:
            decision, name = "restored", best
        elif not final:
            return None
        else:
            pre = scores["before"] = learner.batch_loss(Xw, Yw, a["pre"])
            if pre <= live:
                decision, name = "dismissed", bank.current
            else:
                decision, name = "created", self._new_name(bank)
        self.alarm = None
        self.counts[decision] += 1
        record = {"time": a["wall"], "delay_samples": a["alarm"] - a["onset"],
                  "decided_after_samples": self.detector.samples - a["alarm"],
                  "from": bank.current, "decision": decision, "context": name,
                  "usual": a["baseline"], "scores": a.get("scores"),
                  "window_scores": a["window_scores"]}
        self.recent.append(record)
        if decision == "dismissed":
            return None
        self.pending = {"context": name, "pre": a["pre"], "record": record,
                        "left": PENDING_BATCHES}
        return {"decision": decision, "context": name}

    def decided(self) -> int:
        """Alarms decided so far."""
        return sum(self.counts[k] for k in DECISIONS)

    def _new_name(self, bank) -> str:
        used = [int(m.group(1)) for n in bank.names if (m := AUTO_NAME.match(n))]
        return f"auto-{max(used + [self.counts['named']]) + 1}"

    def _cancel(self, why: str) -> None:
        if self.pending is not None:
            self.pending["record"]["decision"] += f", {why}"
            self.counts[why] += 1
            self.pending = None
        self.alarm = None

    def switch(self, learner, bank, name: str) -> str:
        """Every switch goes through here (labels, `ctl context`, automatic): the automatic
        one asked for parks the context it leaves as it was at the alarm; any other
        overrides a pending one. Returns ContextBank.switch's outcome."""
        p = self.pending
        auto = p is not None and p["context"] == name
        if not auto:
            self._cancel("overridden")
        outcome = bank.switch(learner, name, park=p["pre"] if auto else None, blend=not auto)
        self.pending = None
        if auto and outcome == "created":
            self.counts["named"] += 1
        self.detector.hold()
        return outcome

    def restart(self) -> None:
        """After a reset or load: nothing pending, and a fresh warm-up."""
        self._cancel("overridden")
        self.detector = ChangeDetector(len(self.detector.scale), self.detector.drift,
                                       self.detector.threshold)

    def status(self, now: float | None = None) -> dict:
        now = time.monotonic() if now is None else now
        return {"enabled": self.enabled, "active": self.active(now),
                "confirming": self.alarm is not None,
                "pending": None if self.pending is None else self.pending["context"],
                "alarms": self.counts["alarms"], "restored": self.counts["restored"],
                "created": self.counts["created"], "dismissed": self.counts["dismissed"],
                "overridden": self.counts["overridden"], "lapsed": self.counts["lapsed"],
                "recent": list(self.recent)}
