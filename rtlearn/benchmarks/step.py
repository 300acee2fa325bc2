"""Latency of one learning step: forward, backward, memory rate rule, update, all joints; and
of the peer, I-SSGPR (`run_issgpr_bench`: D rank-1 Cholesky updates per batch, the weights'
triangular solves, predict_one), for `rtlearn bench step --learner issgpr|both`.

The same step is timed in one run: rtlearn's kernels in float64 and float32 (and, with
cpus > 1, the joints split over that many threads), the float64 and float32 steps taking turns
every CHUNK steps so that both see the same moments of the machine's load; plain vectorised
numpy (float64); and (when importable) PyTorch eager on one CPU thread in float64 and
float32. The twins evaluate the memory's kernels directly on the same truncated window (2R
centres per coordinate), the natural vectorised form; the kernels compute the same rates
through node tables (docs/algorithm.md, "Cost"), equal within MemoryConfig.error_bound.
"""

from __future__ import annotations

import gc
import os
import platform
import time
from dataclasses import replace

import numpy as np

from ..learner import LearnerConfig, MemoryConfig, OnlineLearner
from ..learner.issgpr import ISSGPR, ISSGPRConfig

REFERENCE = LearnerConfig(n_joints=7, n_inputs=21, hidden=(128, 64, 32), optimizer="metagd",
                          lr=1e-3, batch_size=10, normalize="none", memory=MemoryConfig())


PACED_PERIOD = 0.010  # s: the daemon's cadence, 10 samples at 1 kHz
PACED_STEPS = 1000
CHUNK = 50           # steps per turn when several rtlearn steps are timed in turns
REF_STEPS = 1000     # timed steps of the numpy and torch twins (20-30 ms each)


def _percentiles(ns: list[int], cpu_ns: list[int] | None = None) -> dict:
    """Wall-clock percentiles (ms); with cpu_ns also those of the CPU time the step's thread
    got (cpu_p50, cpu_p99): on a shared machine the wall-clock tail is mostly the time other
    processes held the CPU, the CPU time is what the step itself costs."""
    ms = np.asarray(ns) / 1e6
    out = {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
           "max": float(ms.max()), "mean": float(ms.mean()), "n": int(len(ms))}
    if cpu_ns is not None:
        cpu = np.asarray(cpu_ns) / 1e6
        out.update(cpu_p50=float(np.percentile(cpu, 50)), cpu_p99=float(np.percentile(cpu, 99)))
    return out


def _time(step, batches, warmup: int, period: float = 0.0) -> dict:
    """Percentiles of step(X, Y); with `period`, one step per period (sleeping between), as
    the daemon runs them at 1 kHz (a batch of 10 every 10 ms): caches and the core go cold."""
    return _time_turns({"step": step}, batches, warmup, period)["step"]


def _time_turns(steps: dict, batches, warmup: int, period: float = 0.0,
                progress=None) -> dict:
    """Percentiles of each step(X, Y) of `steps`, every one fed all `batches` in order, in
    turns of CHUNK steps (one step per `period` if given); progress(fraction) after a turn.
    The CPU time is the calling thread's (with the joints on several threads, its share)."""
    for step in steps.values():
        for X, Y in batches[:warmup]:
            step(X, Y)
    out = {name: ([], []) for name in steps}
    timed = batches[warmup:]
    gc.disable()  # the daemon runs its hot loop with the collector off as well
    try:
        for lo in range(0, len(timed), CHUNK):
            for name, step in steps.items():
                ns, cpu = out[name]
                for X, Y in timed[lo:lo + CHUNK]:
                    c0 = time.thread_time_ns()
                    t0 = time.perf_counter_ns()
                    step(X, Y)
                    ns.append(time.perf_counter_ns() - t0)
                    cpu.append(time.thread_time_ns() - c0)
                    if period:
                        time.sleep(max(0.0, period - (time.perf_counter_ns() - t0) / 1e9))
            if progress is not None:
                progress(min(lo + CHUNK, len(timed)) / len(timed))
    finally:
        gc.enable()
    return {name: _percentiles(ns, cpu) for name, (ns, cpu) in out.items()}


def _layers(learner):
    """(W (J, out, in), b (J, out)) per layer, copied from the learner's initial weights."""
    net, out, p = learner.net, [], 0
    for l in range(len(net.dims) - 1):
        n_in, n_out = int(net.dims[l]), int(net.dims[l + 1])
        W = net.theta[:, p:p + n_in * n_out].reshape(-1, n_out, n_in).copy()
        p += n_in * n_out
        out.append((W, net.theta[:, p:p + n_out].copy()))
        p += n_out
    return out


class _Window:
    """Truncated-window indices and factors of the memory, shared by the numpy/torch twins."""

    def __init__(self, cfg: MemoryConfig, n_groups: int):
        self.cfg, self.R, self.a = cfg, cfg.radius, cfg.a
        self.offsets = np.arange(1 - self.R, self.R + 1)
        self.n_groups = n_groups


def numpy_step(learner: OnlineLearner):
    """The reference step in plain numpy (float64), same maths as the kernels."""
    layers = _layers(learner)
    cfg = learner.config.memory
    C, K, lr0 = cfg.clip, cfg.n_centres, learner.config.lr
    beta = cfg.beta * lr0 if cfg.relative and cfg.meta != "log" else cfg.beta
    G, (w_lo, w_hi) = learner.config.grad_clip, cfg.rate_bounds(lr0)
    win = _Window(cfg, len(learner.net.bounds) - 1)
    params = [t for W, b in layers for t in (W, b)]
    # One memory per tensor per joint: group id of every coordinate, in each tensor's layout.
    gid, g0 = [], 0
    for t in params:
        per = t[0].size
        ids = g0 + np.arange(t.shape[0])[:, None] * (2 * len(layers)) + np.zeros(per, int)
        gid.append(ids.reshape(t.shape))
        g0 += 1
    gid = np.concatenate([g.ravel() for g in gid])
    counts = np.bincount(gid, minlength=win.n_groups).astype(float)
    w = np.full(win.n_groups * K, lr0)
    prev = np.zeros(gid.size)
    ms, n_steps = np.zeros(win.n_groups), 0
    inv_s = (K - 1) / (2 * C)

    def window(x):
        p = (x + C) * inv_s
        cell = np.minimum(np.floor(p), K - 1)
        f = p - cell
        k = cell[:, None] + win.offsets[None, :]
        psi = np.exp(-0.5 * win.a * (win.offsets[None, :] - f[:, None]) ** 2)
        valid = (k >= 0) & (k < K)
        psi = np.where(valid, psi, 0.0)
        return psi, (gid[:, None] * K + np.clip(k, 0, K - 1)).astype(np.int64)

    def key_of(g):
        """Eq. O5 when cfg.key == "scaled": g over its group's running RMS."""
        nonlocal ms, n_steps
        if cfg.key != "scaled":
            return g
        sq = np.bincount(gid, weights=g * g, minlength=win.n_groups) / counts
        n_steps += 1
        prev_ms = sq if n_steps == 1 else ms / (1 - cfg.key_decay ** (n_steps - 1))
        ms = cfg.key_decay * ms + (1 - cfg.key_decay) * sq
        return g / np.sqrt(np.maximum(prev_ms, 1e-30))[gid]

    def step(X, Y):
        nonlocal w, prev
        acts = [np.broadcast_to(X, (len(layers[0][0]),) + X.shape)]
        for l, (W, b) in enumerate(layers):
            z = acts[-1] @ W.transpose(0, 2, 1) + b[:, None, :]
            acts.append(np.maximum(z, 0.0) if l < len(layers) - 1 else z)
        err = acts[-1][:, :, 0] - Y.T
        delta = (2.0 / X.shape[0]) * err[:, :, None]
        grads = []
        for l in range(len(layers) - 1, -1, -1):
            W, b = layers[l]
            grads.append((delta.transpose(0, 2, 1) @ acts[l], delta.sum(axis=1)))
            if l:
                delta = (delta @ W) * (acts[l] > 0)
        grads.reverse()
        g = np.clip(np.concatenate([t.ravel() for gw, gb in grads for t in (gw, gb)]), -G, G)
        x = np.clip(key_of(g), -C, C)
        s = np.clip(x * prev, -1.0, 1.0)
        psi, idx = window(prev)
        d = np.bincount(idx.ravel(), weights=(psi * s[:, None]).ravel(), minlength=w.size)
        d /= np.repeat(counts, K)
        w = np.clip(w * np.exp(beta * d) if cfg.meta == "log" else w + beta * d, w_lo, w_hi)
        psi, idx = window(x)
        eta = (psi * w[idx]).sum(axis=1) / psi.sum(axis=1)
        upd, p = eta * g, 0
        for t in params:
            t -= upd[p:p + t.size].reshape(t.shape)
            p += t.size
        prev = x

    step.params = params  # the twin's weights, for checking it against the kernels
    return step


def torch_step(learner: OnlineLearner):
    """The reference step in PyTorch eager, one CPU thread, in the learner's dtype; None
    without torch."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    dt = torch.float32 if learner.net.theta.dtype == np.float32 else torch.float64
    layers = [(torch.tensor(W, requires_grad=True), torch.tensor(b, requires_grad=True))
              for W, b in _layers(learner)]
    params = [t for pair in layers for t in pair]
    cfg = learner.config.memory
    C, K, G = cfg.clip, cfg.n_centres, learner.config.grad_clip
    w_lo, w_hi = cfg.rate_bounds(learner.config.lr)
    beta = cfg.beta * learner.config.lr if cfg.relative and cfg.meta != "log" else cfg.beta
    win = _Window(cfg, len(learner.net.bounds) - 1)
    gid, g0 = [], 0
    for t in params:
        J, per = t.shape[0], t[0].numel()
        gid.append((g0 + torch.arange(J)[:, None] * (2 * len(layers))).expand(J, per).reshape(-1))
        g0 += 1
    gid = torch.cat(gid)
    counts = torch.bincount(gid, minlength=win.n_groups).to(dt)
    state = {"w": torch.full((win.n_groups * K,), learner.config.lr, dtype=dt),
             "prev": torch.zeros(gid.numel(), dtype=dt),
             "ms": torch.zeros(win.n_groups, dtype=dt), "n": 0}
    offsets = torch.tensor(win.offsets, dtype=dt)
    inv_s = (K - 1) / (2 * C)

    def window(x):
        p = (x + C) * inv_s
        cell = torch.clamp(torch.floor(p), max=K - 1)
        f = p - cell
        k = cell[:, None] + offsets[None, :]
        psi = torch.exp(-0.5 * win.a * (offsets[None, :] - f[:, None]) ** 2)
        psi = torch.where((k >= 0) & (k < K), psi, torch.zeros_like(psi))
        return psi, gid[:, None] * K + torch.clamp(k, 0, K - 1).long()

    def step(X, Y):
        Xt, Yt = torch.from_numpy(X).to(dt), torch.from_numpy(Y).to(dt)
        a = Xt.expand(len(layers[0][0]), *Xt.shape)
        for l, (W, b) in enumerate(layers):
            a = torch.baddbmm(b[:, None, :], a, W.transpose(1, 2))
            if l < len(layers) - 1:
                a = torch.relu(a)
        loss = ((a[:, :, 0] - Yt.T) ** 2).mean(dim=1).sum()
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            g = torch.clamp(torch.cat([t.reshape(-1) for t in grads]), -G, G)
            x = g
            if cfg.key == "scaled":  # eq. O5
                sq = torch.bincount(gid, weights=g * g, minlength=win.n_groups) / counts
                state["n"] += 1
                prev_ms = (sq if state["n"] == 1
                           else state["ms"] / (1 - cfg.key_decay ** (state["n"] - 1)))
                state["ms"] = cfg.key_decay * state["ms"] + (1 - cfg.key_decay) * sq
                x = g / torch.sqrt(torch.clamp(prev_ms, min=1e-30))[gid]
            x = torch.clamp(x, -C, C)
            s = torch.clamp(x * state["prev"], -1.0, 1.0)
            psi, idx = window(state["prev"])
            d = torch.bincount(idx.reshape(-1), weights=(psi * s[:, None]).reshape(-1),
                               minlength=state["w"].numel()) / counts.repeat_interleave(K)
            w = state["w"]
            w = w * torch.exp(beta * d) if cfg.meta == "log" else w + beta * d
            state["w"] = torch.clamp(w, w_lo, w_hi)
            psi, idx = window(x)
            eta = (psi * state["w"][idx]).sum(dim=1) / psi.sum(dim=1)
            upd, p = eta * g, 0
            for t in params:
                t -= upd[p:p + t.numel()].reshape(t.shape)
                p += t.numel()
            state["prev"] = x

    return step


def run_step_bench(steps: int = 3000, warmup: int = 200, seed: int = 0,
                   config: LearnerConfig = REFERENCE, cpus: int = 1, ref_steps: int = REF_STEPS,
                   say=None) -> dict:
    """The reference step in float64 and float32 (and on `cpus` threads if > 1), in turns;
    then the numpy and torch twins (`ref_steps` timed steps each). say(text): progress."""
    say = say or (lambda text: None)
    t_start = time.perf_counter()

    def phase(text):
        say(f"[{time.perf_counter() - t_start:6.1f} s] {text}")

    def ticker(name):
        marks = [0.25, 0.5, 0.75]

        def tick(f):
            while marks and f >= marks[0]:
                phase(f"  {name}: {int(marks.pop(0) * 100)} %")
        return tick

    batches = _random_batches(steps + warmup, config.batch_size, config.n_inputs,
                              config.n_joints, seed)
    load_before = os.getloadavg()
    phase("loading kernels (compiled on first use, then cached)")
    learners, t0 = {}, time.perf_counter()
    for dtype in ("float64", "float32"):
        for threads in sorted({1, cpus}):
            learner = OnlineLearner(replace(config, dtype=dtype))
            learner.set_threads(threads)
            learner.learn_many(*batches[0])  # compile or load cached kernels
            learners[dtype if threads == 1 else f"{dtype} x{threads}"] = learner
    compile_s = time.perf_counter() - t0
    learner = learners["float64"]
    result = {
        "config": {"n_joints": config.n_joints, "hidden": list(config.hidden),
                   "batch_size": config.batch_size, "optimizer": config.optimizer,
                   "n_centres": config.memory.n_centres, "window": 2 * config.memory.radius,
                   "n_params": int(learner.net.theta.size), "steps": steps, "warmup": warmup,
                   "ref_steps": ref_steps, "cpus": cpus,
                   "threads": {k: v.threads for k, v in learners.items()}},
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or
                    platform.machine(), "numpy": np.__version__,
                    "cpus_available": len(os.sched_getaffinity(0))},
        "kernel_load_s": compile_s,
        # what a snapshot holds: network, normalisers, optimiser and memory state
        "state_bytes": {dtype: _state_bytes(learners[dtype]) for dtype in ("float64", "float32")},
    }
    phase(f"rtlearn {', '.join(learners)}: {steps} steps each, in turns of {CHUNK}")
    timed = _time_turns({k: v.learn_many for k, v in learners.items()}, batches, warmup,
                        progress=ticker("rtlearn"))
    result["train_step_ms"] = timed["float64"]
    result["train_step_float32_ms"] = timed["float32"]
    if cpus > 1:
        result["parallel"] = {dtype: timed[f"{dtype} x{cpus}"] for dtype in ("float64", "float32")}
        phase("hand-off to another thread and to another process: 2000 round trips each")
        result["parallel"]["handoff"] = handoff_costs()
    paced = batches[:warmup + min(steps, PACED_STEPS)]
    phase(f"rtlearn float64, float32: one step per {PACED_PERIOD * 1e3:.0f} ms, "
          f"{len(paced) - warmup} steps each")
    paced_t = _time_turns({k: learners[k].learn_many for k in ("float64", "float32")}, paced,
                          warmup, period=PACED_PERIOD)
    result["train_step_paced_ms"] = paced_t["float64"]
    result["train_step_float32_paced_ms"] = paced_t["float32"]
    predict_x = batches[0][0][0]
    result["predict_one_ms"] = _time(lambda X, Y: learner.predict_one(predict_x), batches, warmup)
    ref = batches[:warmup + min(steps, ref_steps)]
    phase(f"numpy twin (float64): {len(ref) - warmup} steps")
    result["numpy_step_ms"] = _time_turns({"numpy": numpy_step(OnlineLearner(config))}, ref,
                                          warmup, progress=ticker("numpy"))["numpy"]
    for dtype, key in (("float64", "torch_step_ms"), ("float32", "torch_step_float32_ms")):
        tstep = torch_step(OnlineLearner(replace(config, dtype=dtype)))
        if tstep is not None:
            phase(f"torch eager, 1 thread ({dtype}): {len(ref) - warmup} steps")
            tstep = _time_turns({"torch": tstep}, ref, warmup,
                                progress=ticker(f"torch {dtype}"))["torch"]
        result[key] = tstep
    if result["torch_step_ms"] is not None:
        import torch
        result["machine"]["torch"] = torch.__version__
    result["load_average"] = {"before": list(load_before), "after": list(os.getloadavg())}
    for lr in learners.values():
        lr.set_threads(1)
    phase("done")
    return result


def profile_step(steps: int = 1000, warmup: int = 200, seed: int = 0,
                 config: LearnerConfig = REFERENCE) -> dict:
    """Where a step's time goes: the parts of OnlineLearner.learn_many timed one by one (the
    forward and backward pass, each transform of the optimizer chain, the update), in float64
    and float32 in turns; percentiles in ms per part."""
    from ..kernels.optim import apply_updates

    batches = _random_batches(steps + warmup, config.batch_size, config.n_inputs,
                              config.n_joints, seed)
    learners = {d: OnlineLearner(replace(config, dtype=d)) for d in ("float64", "float32")}
    parts = {d: {} for d in learners}

    def timed(d, name, fn, *args):
        t0 = time.perf_counter_ns()
        fn(*args)
        parts[d].setdefault(name, []).append(time.perf_counter_ns() - t0)

    def step(d, X, Y):
        lr = learners[d]
        net, opt, st = lr.net, lr.optimizer, lr.opt_state
        timed(d, "forward + backward", net.loss_grad, X, Y, lr.norm)
        timed(d, "normaliser", lr.norm.observe, X, Y)
        grad = net.grad.reshape(-1)
        timed(d, "u <- gradient (copy)", np.copyto, st.u, grad)
        key = st.u
        for t, s in zip(opt.transforms, st.states):
            timed(d, f"transform {t.name}", t.update, grad, st.u, key, s, st.bounds)
            if t.key is not None:
                key = s[t.key]
        timed(d, "update theta -= u", apply_updates, net.theta.reshape(-1), st.u)

    for d in learners:
        for X, Y in batches[:warmup]:
            step(d, X, Y)
        parts[d].clear()
    gc.disable()
    try:
        for lo in range(warmup, len(batches), CHUNK):
            for d in learners:
                for X, Y in batches[lo:lo + CHUNK]:
                    step(d, X, Y)
    finally:
        gc.enable()
    return {d: {name: _percentiles(ns) for name, ns in p.items()} for d, p in parts.items()}


def handoff_costs(n: int = 2000) -> dict:
    """What splitting a step costs before any work: a round trip to another thread through
    two semaphores (what rtlearn.learner.parallel does per step), and to another process
    through a pipe (what a learning process per CPU would need per step); percentiles in ms."""
    import multiprocessing
    import threading

    go, done = threading.Semaphore(0), threading.Semaphore(0)
    stop = []

    def worker():
        while True:
            go.acquire()
            if stop:
                return
            done.release()

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    ns = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        go.release()
        done.acquire()
        ns.append(time.perf_counter_ns() - t0)
    stop.append(True)
    go.release()
    t.join()
    threads = _percentiles(ns)
    here, there = multiprocessing.get_context("fork").Pipe()
    child = multiprocessing.get_context("fork").Process(target=_echo, args=(there,), daemon=True)
    child.start()
    ns = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        here.send_bytes(b"x")
        here.recv_bytes()
        ns.append(time.perf_counter_ns() - t0)
    here.send_bytes(b"")
    child.join(5)
    return {"thread_ms": threads, "process_ms": _percentiles(ns)}


def _echo(conn) -> None:
    while msg := conn.recv_bytes():
        conn.send_bytes(msg)


def _state_bytes(learner) -> int:
    return int(sum(v.nbytes for v in learner.network_state().values())
               + sum(v.nbytes for v in learner.optimizer.all_state(learner.opt_state).values()))


def _random_batches(n: int, batch_size: int, n_inputs: int, n_joints: int, seed: int):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(batch_size, n_inputs)),
             rng.normal(scale=20.0, size=(batch_size, n_joints))) for _ in range(n)]


def run_issgpr_bench(steps: int = 3000, warmup: int = 200, seed: int = 0,
                     config: ISSGPRConfig = ISSGPRConfig(), batch_size: int = 10) -> dict:
    """I-SSGPR timed like the MLP step: learn_many on batches of 10 after calibration (D
    rank-1 updates of eq. G3 per sample, then the solves of eq. G4), back to back and one per
    10 ms, and predict_one. The calibration (kernel fit, eq. G6, learning the window again,
    and the kernels' compile or cache load) is timed once."""
    n_calib = config.calib[-1]
    batches = _random_batches(steps + warmup + n_calib // batch_size + 1, batch_size,
                              config.n_inputs, config.n_joints, seed)
    learner = ISSGPR(config)
    calib, batches = batches[:n_calib // batch_size + 1], batches[n_calib // batch_size + 1:]
    t0 = time.perf_counter()
    for X, Y in calib:
        learner.learn_many(X, Y)
    calib_s = time.perf_counter() - t0
    assert learner.calibrated
    predict_x = batches[0][0][0]
    paced = batches[:warmup + min(steps, PACED_STEPS)]
    return {"config": {**config.to_dict(), "batch_size": batch_size, "steps": steps,
                       "warmup": warmup},
            "calibration_s": calib_s,
            "state_bytes": learner.nbytes(),
            "train_step_ms": _time(learner.learn_many, batches, warmup),
            "train_step_paced_ms": _time(learner.learn_many, paced, warmup, period=PACED_PERIOD),
            "predict_one_ms": _time(lambda X, Y: learner.predict_one(predict_x), batches, warmup)}
