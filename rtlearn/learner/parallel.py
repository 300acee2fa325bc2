"""Joints in parallel: the learning step split into shards of consecutive joints, one thread
each (OnlineLearner.set_threads).

Every joint has its own network, its own parameter groups and so its own memories: nothing
of one joint's step reads another's. A shard is a view of the learner's arrays restricted to
its joints (theta and grad rows, per-parameter and per-group optimizer state) plus its own
scratch, so each thread runs exactly the arithmetic the single-threaded step runs on those
joints, on the same addresses: the result is bitwise the same (tests/test_learner_parallel.py).
The kernels release the GIL; the few Python calls between them are what does not scale.

Threads, not processes: a step is ~0.2-1 ms, and handing a batch to another process and
back costs a pipe round trip (docs/performance.md, "Joints in parallel").
"""

from __future__ import annotations

import threading

import numpy as np

from ..kernels import mlp as KM


class NotSeparable(ValueError):
    """An optimizer whose state couples the joints (one hypergradient rate for all)."""


def _shard_state(optimizer, full, p0: int, p1: int, g0: int, g1: int, bounds: np.ndarray):
    """An OptState for parameters p0:p1 (groups g0:g1): views of `full` for per-parameter
    and per-group arrays, fresh scratch, own copies of the scalars (synced every step)."""
    n_params, n_groups = full.u.shape[0], full.bounds.shape[0] - 1
    sub = optimizer.init(p1 - p0, bounds, full.u.dtype)
    scalars = []
    for t, s_full, s_sub in zip(optimizer.transforms, full.states, sub.states):
        for name, arr in s_full.items():
            if name in t.scratch:
                if arr.shape[:1] == (n_params,):  # e.g. the scaled key: same addresses
                    s_sub[name] = arr[p0:p1]
                continue
            if arr.size == 1:
                scalars.append((arr, s_sub[name]))
            elif arr.shape[0] == n_params:
                s_sub[name] = arr[p0:p1]
            elif arr.shape[0] == n_groups:
                s_sub[name] = arr[g0:g1]
            else:
                raise NotSeparable(f"optimizer state {t.name}.{name} of shape {arr.shape} "
                                   "couples the joints")
        if "alpha" in s_full and s_full["alpha"].size == 1 and n_groups > 1:
            raise NotSeparable("one hypergradient rate for all parameters couples the joints")
    sub.u = full.u[p0:p1]
    return sub, scalars


class JointShards:
    """The learner's step over `n` shards of joints, run by n - 1 worker threads and the
    caller."""

    def __init__(self, learner, n: int):
        net, c = learner.net, learner.config
        self.learner = learner
        J, P = net.theta.shape
        per_joint = (len(net.bounds) - 1) // J
        cuts = np.linspace(0, J, n + 1).round().astype(int)
        self.shards = []
        for j0, j1 in zip(cuts[:-1], cuts[1:]):
            g0, g1 = j0 * per_joint, j1 * per_joint
            bounds = net.bounds[g0:g1 + 1] - net.bounds[g0]
            state, scalars = _shard_state(learner.optimizer, learner.opt_state, j0 * P, j1 * P,
                                          g0, g1, bounds)
            self.shards.append({
                "j": (j0, j1), "state": state, "scalars": scalars,
                "acts": np.zeros_like(net.acts), "deltas": np.zeros_like(net.deltas),
                "Y": np.zeros((c.batch_size, j1 - j0))})
        self._work = None
        self._error = None
        self._go = [threading.Semaphore(0) for _ in self.shards[1:]]
        self._done = threading.Semaphore(0)
        self._stop = False
        self._threads = [threading.Thread(target=self._worker, args=(i,), daemon=True,
                                          name=f"rtlearn-joints-{i}")
                         for i in range(1, len(self.shards))]
        for t in self._threads:
            t.start()

    def _run(self, i: int, X, Y) -> None:
        L, sh = self.learner, self.shards[i]
        net, norm = L.net, L.norm
        j0, j1 = sh["j"]
        B = X.shape[0]
        if B > sh["Y"].shape[0]:  # a batch beyond batch_size, as MLPStack.loss_grad allows
            sh["acts"] = np.zeros((B, net.acts.shape[1]), net.theta.dtype)
            sh["deltas"] = np.zeros_like(sh["acts"])
            sh["Y"] = np.zeros((B, j1 - j0))
        y = sh["Y"][:B]
        y[...] = Y[:, j0:j1]
        for full, own in sh["scalars"]:
            own[...] = full
        KM.mlp_loss_grad(net.theta[j0:j1], net.dims, X, y, norm.x_mean, norm.x_scale,
                         norm.y_mean[j0:j1], norm.y_scale[j0:j1], net.loss_kind, sh["acts"],
                         sh["deltas"], net.grad[j0:j1], net.loss[j0:j1])
        L.optimizer.step(net.theta[j0:j1].reshape(-1), net.grad[j0:j1].reshape(-1),
                         sh["state"])

    def _worker(self, i: int) -> None:
        while True:
            self._go[i - 1].acquire()
            if self._stop:
                return
            try:
                self._run(i, *self._work)
            except BaseException as e:  # re-raised by the caller's step
                self._error = e
            self._done.release()

    def step(self, X, Y) -> np.ndarray:
        """Loss before the update and one optimizer step, every shard; returns net.loss."""
        self._work, self._error = (X, Y), None
        for go in self._go:
            go.release()
        try:
            self._run(0, X, Y)
        finally:
            for _ in self._go:
                self._done.acquire()
        if self._error is not None:
            raise self._error
        for full, own in self.shards[0]["scalars"]:
            full[...] = own  # every shard made the same scalar updates
        return self.learner.net.loss

    def close(self) -> None:
        self._stop = True
        for go in self._go:
            go.release()
        for t in self._threads:
            t.join()
