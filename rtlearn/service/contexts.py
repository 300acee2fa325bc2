"""The bank of payload-context models, one per payload. A context owns what a payload
changes: every joint's output layer (with its base-optimiser state) and the target normaliser.
The hidden layers, the input normaliser and the learning-rate memories describe the arm and
how it learns; they are shared by every context and keep learning from every payload.

Why not one whole network per context: a context's network learns only while its payload is
held, so on motions it has not seen it is far worse than the network that kept learning
(sines: 2.6-3.3x the continuing model's error over a run); sharing the hidden layers keeps
that knowledge, the output layer brings back what is particular to the payload
(docs/results.md, payload-swap). Restoring is still a guess: the first batch after a restore
is scored by both the restored and the continuing output layers, and the better one stays.

A restored output layer can also be worse than the continuing one from the first sample on,
before any settling can act: it was learned where the arm moved while its payload was held,
and on motions that visit other postures (the `sines` task) it extrapolates (Panda sines:
2.4x the continuing model's error in the 500 ms after a restore). So a labelled restore serves
a blend of the two output layers, weighted per joint by `RestoreWeights`: how the restored and
the continuing layers did after the arm's earlier restores.
"""

from __future__ import annotations

import time

import numpy as np

from rtlearn.learner.api import kind_of

SETTLE_BATCHES = 5
RESTORES = ("blend", "reload")  # [contexts] restore


class RestoreWeights:
    """Per joint, the weight w of the restored output layer in the blend served after a
    restore: the combination of two forecasts with the least squared error on the evidence
    so far (Bates & Granger 1969),

        w = (S_cc - S_rc) / (S_rr + S_cc - 2 S_rc),  clipped to [0, 1],

    where e_r, e_c are the errors of the restored and of the continuing output layer, both as
    they were at the switch, on the SETTLE_BATCHES batches after each earlier restore, and
    S_rr = sum e_r^2, S_cc = sum e_c^2, S_rc = sum e_r e_c. 1/2 before the first restore."""

    def __init__(self, n_joints: int, sums=None, restores: int = 0):
        self.sums = np.zeros((3, n_joints)) if sums is None else np.array(sums, dtype=np.float64)
        self.restores = int(restores)
        if self.sums.shape != (3, n_joints) or not np.isfinite(self.sums).all():
            raise ValueError(f"restore weights: sums of shape {self.sums.shape}, expected "
                             f"(3, {n_joints}) and finite")

    def weights(self) -> np.ndarray:
        rr, cc, rc = self.sums
        den = rr + cc - 2.0 * rc
        w = np.full(rr.shape, 0.5)
        # den = sum (e_r - e_c)^2: zero when the two layers forecast alike (then any w does)
        ok = den > 1e-12 * (rr + cc)
        w[ok] = np.clip((cc[ok] - rc[ok]) / den[ok], 0.0, 1.0)
        return w

    def add(self, e_r: np.ndarray, e_c: np.ndarray) -> None:
        """Errors (samples, joints) of the restored and the continuing layer on one batch; a
        batch with a non-finite error is left out (the weights must stay finite)."""
        if not (np.isfinite(e_r).all() and np.isfinite(e_c).all()):
            return
        self.sums[0] += np.einsum("ij,ij->j", e_r, e_r)
        self.sums[1] += np.einsum("ij,ij->j", e_c, e_c)
        self.sums[2] += np.einsum("ij,ij->j", e_r, e_c)

    def to_dict(self) -> dict:
        return {"sums": self.sums.tolist(), "restores": self.restores}


class ContextLimitError(RuntimeError):
    pass


class UnknownContextError(ValueError):
    """`ctl context NAME` for a context the bank does not hold, without create."""


class ContextBank:
    def __init__(self, initial: str, max_contexts: int, restore: str = "blend"):
        """restore: "blend" (labelled restores are blended, `restore_weights`) or "reload"
        (restored as stored)."""
        if restore not in RESTORES:
            raise ValueError(f"unknown restore {restore!r}; choose blend or reload")
        self.blends = restore == "blend"
        self.current = initial
        self.weights: RestoreWeights | None = None  # made at the first use, for the learner
        self._pure = None  # after a blended restore: the restored context part, unblended
        self.max_contexts = max_contexts
        self.parked: dict[str, dict] = {}  # name -> network_state of an inactive context
        self._left: str | None = None       # after a restore: the context just left
        self.settled = {"kept": 0, "fell_back": 0}
        self.last_evicted: str | None = None  # by the last switch
        self.usage: dict[str, dict] = {initial: {"samples": 0, "last_used": time.time()}}

    @classmethod
    def configured(cls, contexts: dict, initial: str | None = None) -> "ContextBank":
        """The bank a daemon config's [contexts] section describes, starting in `initial`
        (default its `initial`)."""
        return cls(initial or contexts["initial"], contexts["max_contexts"], contexts["restore"])

    @property
    def names(self) -> list[str]:
        return sorted({self.current, *self.parked})

    def switch(self, learner, name: str, park: dict | None = None, blend: bool = True) -> str:
        """Make `name` active: 'restored' (its own model comes back: the paper's reload warm
        start), 'created' (it starts from the current model) or 'same'. A new context in a full
        bank evicts the least recently used idle one (`last_evicted`). `park`: the state kept
        for the context left (default the live model; an automatic switch keeps the one from
        before the change). blend: a restore serves the restored output layer blended with the
        one it replaces (`restore_weights`), for a learner that blends; an automatic restore,
        chosen on the data, does not. Call with the learner idle."""
        self.last_evicted = None
        if name == self.current:
            return "same"
        if name not in self.parked and len(self.parked) + 2 > self.max_contexts:
            if not self.parked:
                raise ContextLimitError(f"context bank full ({self.max_contexts}); not creating {name!r}")
            # full: forget the least recently used idle context (parked first: dicts keep order)
            self.last_evicted = next(iter(self.parked))
            del self.parked[self.last_evicted]
            self.usage.pop(self.last_evicted, None)
        self.parked[self.current] = learner.network_state() if park is None else park
        self.usage.setdefault(self.current, {"samples": 0})["last_used"] = time.time()
        self.usage.setdefault(name, {"samples": 0})["last_used"] = time.time()
        left, self.current = self.current, name
        model = self.parked.pop(name, None)
        self._left = None
        if model is None:
            return "created"
        learner.set_network_state(model, scope="context")
        self._left, self._score, self._seen = left, [0.0, 0.0], 0
        self._pure = None
        w = self.restore_weights(learner) if blend else None
        if w is not None:
            self._pure = model
            learner.blend_context(self.parked[left], w)
        return "restored"

    def restore_weights(self, learner) -> np.ndarray | None:
        """Per joint, the weight of a restored output layer in the blend served
        (RestoreWeights); None: restores are not blended (`learner`'s kind does not
        blend, or restore = "reload")."""
        if not (self.blends and kind_of(learner).blends):
            return None
        if self.weights is None:
            self.weights = RestoreWeights(learner.config.n_joints)
        return self.weights.weights()

    @property
    def restoring(self) -> bool:
        """A restore is being settled (see settle)."""
        return self._left is not None

    def settle(self, learner, X, Y) -> str | None:
        """With each of the first SETTLE_BATCHES batches after a restore, before learning
        from it: score the live (restored) output layer and the one of the context just left
        (the continuing model) on it; at the last one keep the restored layer if its summed
        error is at most the other's, else take the other back. One batch is not enough
        evidence: at a lift's grasp the first 10 ms are a coin flip (lift: 9 of 17 fell
        back, and the restores' gain went from 0.33x to 0.95x). Call with the learner idle."""
        left = self._left
        if left is None:
            return None
        if left not in self.parked:
            self._left = self._pure = None
            return None
        other = self.parked[left]
        self._score[0] += learner.batch_loss(X, Y)
        self._score[1] += learner.batch_loss(X, Y, other)
        if self._pure is not None:
            self.weights.add(learner.context_predictions(X, self._pure) - Y,
                             learner.context_predictions(X, other) - Y)
        self._seen += 1
        if self._seen < SETTLE_BATCHES:
            return None
        self._left = None
        if self._pure is not None:
            self.weights.restores += 1
            self._pure = None
        if self._score[0] <= self._score[1]:
            self.settled["kept"] += 1
            return "kept"
        learner.set_network_state(other, scope="context")
        self.settled["fell_back"] += 1
        return "fell_back"

    def learned(self, n: int) -> None:
        """n samples learned in the active context."""
        u = self.usage.setdefault(self.current, {"samples": 0})
        u["samples"] += n
        u["last_used"] = time.time()

    def listing(self) -> list[dict]:
        """Every stored context, the most recently used first: name, active, samples learned
        while it was active, last use (wall clock, s)."""
        rows = [{"name": name, "active": name == self.current,
                 "samples": self.usage.get(name, {}).get("samples", 0),
                 "last_used": self.usage.get(name, {}).get("last_used")}
                for name in self.names]
        return sorted(rows, key=lambda r: -(r["last_used"] or 0.0))

    def all_models(self, learner) -> dict[str, dict]:
        """Every context's model, the active one read from the learner."""
        return {**self.parked, self.current: learner.network_state()}

    def replace(self, models: dict[str, dict], current: str, learner,
                usage: dict | None = None, weights: dict | None = None) -> None:
        """Load a whole bank (snapshot restore); weights: RestoreWeights.to_dict (None: from
        scratch)."""
        learner.set_network_state(models[current])
        self.current = current
        self.parked = {k: v for k, v in models.items() if k != current}
        self.usage = {k: dict((usage or {}).get(k, {"samples": 0, "last_used": None}))
                      for k in models}
        self.weights = None
        if weights is not None and kind_of(learner).blends:
            self.weights = RestoreWeights(learner.config.n_joints, weights["sums"],
                                          weights["restores"])
        self._left = self._pure = None

    def clear(self) -> None:
        self.parked.clear()
        self._left = self._pure = None
