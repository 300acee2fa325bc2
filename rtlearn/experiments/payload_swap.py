"""The user's situation: long runs with live payload swaps, learned in the daemon's default
configuration, scored prequentially in the windows a payload change costs.

Per trial (seed s): a simulated arm (`--robot`, any robot file) runs `--task` (lift: pick and
lift, the payload attaches at each grasp; sines: random multi-sine joint motion, the payload
changes every cycle) for CYCLES[task] cycles (>= 60 s) with one payload per cycle, drawn in
random order among all of the robot's payloads (no payload twice in a row, so every run
returns to earlier payloads). Sensor noise 1.0, 1 kHz, batches of 10, each sample used once.

Learners: `LearnerConfig` defaults (what `rtlearn serve` runs) except the optimizer and the
base rate. Modes:
  continue  one model for the whole run;
  bank      labelled contexts, as the daemon's context bank does them
            (rtlearn.service.contexts.ContextBank: an output layer per payload on shared
            hidden layers and memory; `restore` as the daemon's [contexts] restore).
Windows of the prequential MSE (mean over joints, raw N*m squared):
  early               batches 2-50 of the fresh start (batch 1 is predicted before anything
                      is learned: no rate rule can move it);
  after_change_100ms  the 10 batches after each payload change, mean over changes;
  after_change_500ms  the 50 batches after each payload change;
  whole               the whole run;  steady  its last 20 %.
Ratios are MetaGD / baseline at the same base rate, geometric means over trials; GD at its
best rate in hindsight is the best of GD_GRID on the whole run, chosen per trial. I-SSGPR
(rtlearn.learner.issgpr, the peer: a GP with random features, no base rate) runs once per
trial with its defaults and is the denominator of MetaGD/I-SSGPR at every rate.
"""

from __future__ import annotations

import math
import os

import numpy as np

from rtlearn.learner import LearnerConfig, MemoryConfig, OnlineLearner
from rtlearn.learner.issgpr import ISSGPR, ISSGPRConfig

from . import progress
from .evaluate import batched, prequential

DEFAULT_TRIALS = 10
TASKS = ("lift", "sines")
CYCLES = {"lift": 20, "sines": 11}    # ~70 s and 66 s
BATCH = 10
DEFAULT_RATE = LearnerConfig().lr
GD_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
PROFILE_BATCHES = 5   # 50 ms slots of the after-restore profile
# name -> (optimizer, memory). MetaGD: the default memory; MetaGD-paper: the memory as the
# paper has it (absolute rates and meta step), rtlearn's default before this experiment;
# MetaGD-scaled: the scale-free variant (MemoryConfig.scaled()).
METHODS = {"GD": ("gd", None), "MetaGD": ("metagd", None), "Adam": ("adam", None),
           "SGD-HD": ("sgd-hd", None), "MetaGD-paper": ("metagd", MemoryConfig.paper()),
           "MetaGD-scaled": ("metagd", MemoryConfig.scaled()), "I-SSGPR": ("issgpr", None)}
WINDOWS = ("early", "after_change_100ms", "after_change_500ms", "whole", "steady")
DIVERGED = 1e8   # a window mean above this (N*m)^2, or non-finite, is a diverged run


def payload_sequence(names: list[str], n: int, rng: np.random.Generator) -> list[str]:
    """n payloads starting empty-handed, each different from the one before."""
    seq = ["none"]
    while len(seq) < n:
        seq.append(str(rng.choice([p for p in names if p != seq[-1]])))
    return seq


def stream(robot, task: str, seed: int, cycles: int | None = None):
    """(X, Y, context index per sample, payload names) of one simulated run."""
    from rtlearn.sources.robot import load_robot

    spec = load_robot(robot)
    names = list(spec.payloads)
    if len(names) < 3:
        raise ValueError(f"{spec.file}: payload-swap needs at least 3 payloads, "
                         f"the robot file has {len(names)}")
    seq = payload_sequence(names, cycles or CYCLES[task], np.random.default_rng([seed, 7]))
    return simulate(spec, task, seq, seed)


def simulate(spec, task: str, seq: list[str], seed: int):
    """(X, Y, context index per sample, payload names): `task` run once per entry of `seq`,
    holding that payload, with sensor noise 1.0."""
    from rtlearn.sources.sim import SimSource

    names = list(spec.payloads)
    rows, ctx = [], []
    with SimSource(spec, task=task, payload=seq, cycles=len(seq), seed=seed, noise=1.0) as src:
        for s in src:
            rows.append(np.concatenate([s.q, s.qd, s.qdd, s.tau]))
            ctx.append(names.index(s.context))
    a = np.asarray(rows)
    n = spec.n_joints
    return a[:, :3 * n], a[:, 3 * n:], np.asarray(ctx), names


def changes_of(ctx: np.ndarray) -> tuple[list[int], list[int]]:
    """Batches at which the payload changes, and those of them that return to a payload seen
    before (a bank restores a model there)."""
    cb = ctx[::BATCH]
    changes, restores, seen = [], [], {int(cb[0])}
    for b in range(1, len(cb)):
        if cb[b] != cb[b - 1]:
            changes.append(b)
            if int(cb[b]) in seen:
                restores.append(b)
            seen.add(int(cb[b]))
    return changes, restores


def learner_config(method: str, lr: float, n_joints: int, seed: int,
                   memory: dict | None = None) -> LearnerConfig | ISSGPRConfig:
    """memory: MemoryConfig fields that replace the defaults of "MetaGD" (design variants)."""
    optimizer, mem = METHODS[method]
    if optimizer == "issgpr":
        return ISSGPRConfig(n_joints=n_joints, n_inputs=3 * n_joints, seed=seed)
    if method == "MetaGD" and memory:
        mem = MemoryConfig(**memory)
    return LearnerConfig(n_joints=n_joints, n_inputs=3 * n_joints, optimizer=optimizer, lr=lr,
                         seed=seed, **({"memory": mem} if mem else {}))


def run_continue(X, Y, cfg: LearnerConfig | ISSGPRConfig):
    """Per-batch prequential MSE (mean over joints) and the mean rate per layer / base rate
    (none for I-SSGPR)."""
    learner = ISSGPR(cfg) if isinstance(cfg, ISSGPRConfig) else OnlineLearner(cfg)
    losses, rates = [], []
    for c in prequential(learner, batched(X, Y, BATCH)):
        losses.append(c.loss.mean())
        if isinstance(learner, OnlineLearner):
            rates.append(layer_rates(learner, cfg))
    return np.array(losses), np.array(rates)


def run_bank(X, Y, ctx, names, cfg: LearnerConfig, restore: str = "blend"):
    """The same, with the daemon's context bank switched by the payload labels."""
    from rtlearn.service.contexts import ContextBank

    learner = OnlineLearner(cfg)
    bank = ContextBank(names[int(ctx[0])], max_contexts=len(names), restore=restore)
    losses = []
    for i, (xb, yb) in enumerate(batched(X, Y, BATCH)):
        bank.switch(learner, names[int(ctx[i * BATCH])])
        # Each batch is served before the bank settles a restore on it: the loss a user
        # gets is the one before settle.
        served = learner.batch_loss(xb, yb) if bank.restoring else None
        bank.settle(learner, xb, yb)
        loss = learner.learn_many(xb, yb).mean()
        progress.tick(len(xb))
        losses.append(loss if served is None else served)
    return np.array(losses)


def layer_rates(learner: OnlineLearner, cfg: LearnerConfig) -> np.ndarray:
    """Mean rate of each weight matrix over the joints, relative to the base rate."""
    r = next(iter(learner.rates().values()))
    per_joint = 2 * (len(cfg.hidden) + 1)
    if r.size == 1:
        return np.full(len(cfg.hidden) + 1, r[0] / cfg.lr)
    return r.reshape(-1, per_joint)[:, 0::2].mean(axis=0) / cfg.lr


def windows(loss: np.ndarray, changes: list[int], after: list[int] | None = None) -> dict:
    n = len(loss)
    after = changes if after is None else after

    def mean_after(width):  # None: no such change in this run
        return float(np.mean([loss[c:c + width].mean() for c in after])) if after else None

    return {"early": float(loss[1:50].mean()),
            "after_change_100ms": mean_after(10), "after_change_500ms": mean_after(50),
            "whole": float(loss.mean()), "steady": float(loss[int(0.8 * n):].mean())}


def after_restore(loss: np.ndarray, changes: list[int], restores: list[int]) -> dict:
    """After the restores, mean over them: the loss per PROFILE_BATCHES slot of the first 500
    ms, and over the whole segment to the next change (does a restore pay while it holds?)."""
    ends = {c: e for c, e in zip(changes, changes[1:] + [len(loss)])}
    slots = [[loss[r + k:r + k + PROFILE_BATCHES].mean() for r in restores]
             for k in range(0, 50, PROFILE_BATCHES)]
    return {"slots": [float(np.mean(v)) for v in slots] if restores else [],
            "segment": float(np.mean([loss[r:ends[r]].mean() for r in restores]))
            if restores else None}


def diverged(w: dict) -> bool:
    return any(not (np.isfinite(v) and v < DIVERGED) for v in w.values() if v is not None)


def run_trial(seed: int, quick: bool = False, robot: str = "kuka_iiwa", task: str = "lift",
              rates: tuple = (DEFAULT_RATE,), methods: tuple = tuple(METHODS),
              cycles: int | None = None, memory: dict | None = None,
              restore: str = "blend") -> dict:
    X, Y, ctx, names = stream(robot, task, seed, cycles=3 if quick else cycles)
    n_joints = Y.shape[1]
    changes, restores = changes_of(ctx)
    continue_, rate_traces, curves = {}, {}, {}
    runs = {(m, lr) for m in methods for lr in rates if m != "I-SSGPR"}
    runs |= {("GD", lr) for lr in (GD_GRID[1:4] if quick else GD_GRID)}
    for m, lr in sorted(runs):
        cfg = learner_config(m, lr, n_joints, seed, memory)
        loss, layer = run_continue(X, Y, cfg)
        curves[(m, lr)] = loss
        continue_[f"{m} {lr:g}"] = windows(loss, changes)
        if m.startswith("MetaGD"):
            rate_traces[f"{m} {lr:g}"] = layer
    if "I-SSGPR" in methods:  # no base rate: one run
        loss, _ = run_continue(X, Y, learner_config("I-SSGPR", DEFAULT_RATE, n_joints, seed))
        continue_["I-SSGPR"] = windows(loss, changes)
    bank = {}
    for m in ("GD", "MetaGD"):
        cfg = learner_config(m, DEFAULT_RATE, n_joints, seed, memory)
        loss_b = run_bank(X, Y, ctx, names, cfg, restore)
        loss_c = curves.get((m, DEFAULT_RATE))
        if loss_c is None:
            loss_c, _ = run_continue(X, Y, cfg)
        bank[m] = {"bank": windows(loss_b, changes, restores),
                   "continue": windows(loss_c, changes, restores),
                   "profile": [after_restore(loss, changes, restores) for loss in (loss_b, loss_c)]}
    return {"seed": seed, "robot": str(robot), "task": task, "rates": list(rates),
            "n_batches": len(X) // BATCH, "changes": changes, "restores": restores,
            "continue": continue_, "bank": bank, "_rates": rate_traces}


def _gmean(xs) -> tuple[float, int]:
    xs = np.asarray([x for x in xs if x is not None], dtype=float)
    ok = np.isfinite(xs) & (xs > 0)
    return (float(np.exp(np.log(xs[ok]).mean())) if ok.any() else math.nan), int((~ok).sum())


def summarize(trials: list[dict]) -> dict:
    rates = trials[0]["rates"]
    keys = list(trials[0]["continue"])
    n_diverged = {m: sum(diverged(t["continue"][k]) for t in trials for k in keys
                         if k.split()[0] == m) for m in METHODS}
    n_diverged["MetaGD"] += sum(diverged(t["bank"]["MetaGD"]["bank"]) for t in trials)

    def ratio(num, den):
        out = {}
        for w in WINDOWS:
            vals = []
            for t in trials:
                a, b = t["continue"].get(num), t["continue"].get(den)
                if a is None or b is None or diverged(a) or diverged(b):
                    vals.append(math.inf)
                elif a[w] is None:
                    continue
                else:
                    vals.append(a[w] / b[w])
            out[w] = _gmean(vals)[0]
        return out

    per_rate = {}
    for lr in rates:
        r = f"{lr:g}"
        per_rate[r] = {f"MetaGD/{b}": ratio(f"MetaGD {r}", f"{b} {r}")
                       for b in ("GD", "Adam", "SGD-HD", "MetaGD-paper", "MetaGD-scaled")
                       if f"{b} {r}" in keys}
        for variant in ("MetaGD-paper", "MetaGD-scaled"):
            if f"{variant} {r}" in keys:
                per_rate[r][f"{variant}/GD"] = ratio(f"{variant} {r}", f"GD {r}")
        if "I-SSGPR" in keys:
            per_rate[r]["MetaGD/I-SSGPR"] = ratio(f"MetaGD {r}", "I-SSGPR")
    default = f"{DEFAULT_RATE:g}"
    gd_keys = [k for k in keys if k.startswith("GD ")]
    best, best_rate = [], []
    for t in trials:
        whole = {k: t["continue"][k]["whole"] for k in gd_keys if not diverged(t["continue"][k])}
        k_best = min(whole, key=whole.get)
        best_rate.append(float(k_best.split()[1]))
        m = t["continue"].get(f"MetaGD {default}")
        best.append(m["whole"] / whole[k_best] if m and not diverged(m) else math.inf)
    bank = {}
    for m in ("GD", "MetaGD"):
        pairs = [(t["bank"][m]["bank"], t["bank"][m]["continue"]) for t in trials]
        bank[m] = _gmean([math.inf if diverged(b) or diverged(c) else
                          b["after_change_500ms"] / c["after_change_500ms"]
                          for b, c in pairs if b["after_change_500ms"] is not None])[0]
    profile = {}
    for m in ("GD", "MetaGD"):
        ps_ = [t["bank"][m]["profile"] for t in trials if t["bank"][m]["profile"][0]["slots"]]
        profile[m] = {
            "slots": [float(np.mean([b["slots"][k] for b, _ in ps_])
                            / np.mean([c["slots"][k] for _, c in ps_]))
                      for k in range(len(ps_[0][0]["slots"]))] if ps_ else [],
            "segment": _gmean([b["segment"] / c["segment"] for b, c in ps_])[0]}
    mean_windows = {k: {w: _gmean([t["continue"][k][w] for t in trials
                                   if not diverged(t["continue"][k])])[0] for w in WINDOWS}
                    for k in keys}
    trace = f"MetaGD {default}"
    ends = np.array([t["_rates"][trace][-1] for t in trials if trace in t["_rates"]])
    mids = np.array([t["_rates"][trace][len(t["_rates"][trace]) // 2] for t in trials
                     if trace in t["_rates"]])
    return {
        "trials": len(trials), "robot": trials[0]["robot"], "task": trials[0]["task"],
        "rates": rates,
        "ratio_metagd_gd": per_rate.get(default, {}).get("MetaGD/GD", {}),
        "whole_vs_best_gd": _gmean(best)[0],
        "best_gd_rate": {f"{r:g}": best_rate.count(r) for r in sorted(set(best_rate))},
        "bank_restore_vs_continue": bank["MetaGD"],
        "bank_restore_vs_continue_gd": bank["GD"],
        "bank_restore_profile": profile,
        "diverged": n_diverged["MetaGD"],
        "diverged_baselines": {m: n for m, n in n_diverged.items() if m != "MetaGD"},
        "per_rate": per_rate,
        "windows": mean_windows,
        "rate_multipliers_end": ends.mean(axis=0).tolist() if len(ends) else [],
        "rate_drift_end_vs_mid": (ends / mids).mean(axis=0).tolist() if len(ends) else [],
        "_rates": {k: np.mean([t["_rates"][k][:min(len(u["_rates"][k]) for u in trials)]
                               for t in trials], axis=0) for k in trials[0]["_rates"]},
    }


def table(summary: dict) -> str:
    out = [f"Payload swaps, {summary['robot']} / {summary['task']}, {summary['trials']} trials "
           f"(geometric means of per-trial ratios; diverged runs: MetaGD {summary['diverged']}, "
           + ", ".join(f"{m} {n}" for m, n in summary["diverged_baselines"].items()) + ")", ""]
    out.append("| ratio | " + " | ".join(WINDOWS) + " |")
    out.append("|---|" + "---|" * len(WINDOWS))
    for lr, cols in summary["per_rate"].items():
        for name, r in cols.items():
            out.append(f"| {name} @ {lr} | " + " | ".join(f"{r[w]:.3f}" for w in WINDOWS) + " |")
    out.append("")
    out.append(f"MetaGD @ {DEFAULT_RATE:g} whole run / GD at its best rate in hindsight: "
               f"{summary['whole_vs_best_gd']:.3f} (best GD rates: {summary['best_gd_rate']})")
    out.append(f"Bank restore / continue, 500 ms after a return to a payload: MetaGD "
               f"{summary['bank_restore_vs_continue']:.3f}, GD "
               f"{summary['bank_restore_vs_continue_gd']:.3f}")
    for m, p in summary["bank_restore_profile"].items():
        if p["slots"]:
            out.append(f"  {m}, bank / continue per 50 ms after a restore (pooled): "
                       + " ".join(f"{v:.2f}" for v in p["slots"])
                       + f"; over the segment until the next change: {p['segment']:.3f}")
    if summary["rate_multipliers_end"]:
        out.append("MetaGD rate / base rate per weight matrix at the end: "
                   + ", ".join(f"{x:.2f}" for x in summary["rate_multipliers_end"])
                   + "; end / middle of the run: "
                   + ", ".join(f"{x:.2f}" for x in summary["rate_drift_end_vs_mid"]))
    out.append("")
    out.append("Mean prequential MSE, (N·m)², geometric mean over trials")
    out.append("")
    out.append("| method | " + " | ".join(WINDOWS) + " |")
    out.append("|---|" + "---|" * len(WINDOWS))
    for k, w in summary["windows"].items():
        out.append(f"| {k} | " + " | ".join(f"{w[x]:.4g}" for x in WINDOWS) + " |")
    return "\n".join(out)


def plots(trials: list[dict], summary: dict, directory: str) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    if summary["_rates"]:
        fig, axes = plt.subplots(1, len(summary["_rates"]), figsize=(6 * len(summary["_rates"]), 3.6),
                                 squeeze=False, sharey=True)
        for ax, (label, r) in zip(axes[0], summary["_rates"].items()):
            t = np.arange(len(r)) * BATCH / 1000.0
            for layer in range(r.shape[1]):
                ax.semilogy(t, r[:, layer], lw=1.1, label=f"W{layer + 1}")
            for c in trials[0]["changes"]:
                ax.axvline(c * BATCH / 1000.0, color="k", lw=0.4, alpha=0.5)
            ax.axhline(1.0, color="grey", lw=0.6, ls=":")
            ax.set_xlabel("time (s); vertical lines: payload changes of trial 0")
            ax.set_title(f"{label}: {os.path.basename(str(summary['robot']))} / {summary['task']}",
                         fontsize=9)
        axes[0][0].set_ylabel("mean rate / base rate")
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        name = os.path.basename(str(summary["robot"])).removesuffix(".toml")
        path = os.path.join(directory, f"payload_swap_rates_{name}_{summary['task']}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
