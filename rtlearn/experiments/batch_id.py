"""Paper section "batch inverse dynamics": two motion tasks, memory from task 1 speeds task 2?

Task 1: the simulated KUKA drawing a rectangle in the horizontal plane (`rectangle-h`), task 2:
in the vertical plane (`rectangle-v`), same trial seed (the same perturbed nominal controller
model and friction), sensor noise 1.0, every SUBSAMPLE-th sample kept (~970 per task). Full-batch
training of one MLP per joint (`OnlineLearner`, 128-64-32, raw torques) for ITERS iterations; the
batch is the whole task, so the prequential loss is the training loss before each update.
Variants: GD; MetaGD with a fresh memory; on task 2 also MetaGD starting from the memory
learned on task 1 (`set_memory_state(transfer=True)`); every network starts fresh.
Memory: the authors' defaults (`metagd-memadam`, `MemoryConfig.authors()`).
"""

from __future__ import annotations

import os

import numpy as np

from rtlearn.learner import LearnerConfig, OnlineLearner, authors_memory

from .evaluate import prequential

DEFAULT_TRIALS = 3
LR = 1e-3
ITERS = 300
SUBSAMPLE = 5
AT = (10, 50, 100, 300)
VARIANTS = ("GD", "MetaGD fresh", "MetaGD task-1 memory")


def task_data(task: str, seed: int, subsample: int = SUBSAMPLE, limit: int | None = None):
    from rtlearn.sources.sim import SimSource
    rows = []
    for k, s in enumerate(SimSource("kuka_iiwa", task=task, payload="none", seed=seed,
                                    noise=1.0)):
        if limit is not None and k >= limit:
            break
        if k % subsample == 0:
            rows.append(np.concatenate([s.q, s.qd, s.qdd, s.tau]))
    a = np.array(rows)
    return a[:, :21], a[:, 21:]


def train(optimizer, X, Y, seed, iters, memory=None, hidden=(128, 64, 32)):
    cfg = LearnerConfig(optimizer=optimizer, lr=LR, normalize="none", seed=seed, hidden=hidden,
                        batch_size=len(X), memory=authors_memory(optimizer, full_window=False))
    learner = OnlineLearner(cfg)
    if memory is not None:
        learner.set_memory_state(memory, transfer=True)
    curve = np.array([c.loss.mean() for c in prequential(learner, ((X, Y) for _ in range(iters)))])
    return curve, learner


def run_trial(seed: int, quick: bool = False) -> dict:
    iters = 20 if quick else ITERS
    limit = 1000 if quick else None
    hidden = (16,) if quick else (128, 64, 32)
    X1, Y1 = task_data("rectangle-h", seed, limit=limit)
    X2, Y2 = task_data("rectangle-v", seed, limit=limit)
    curves = {}
    curves["task 1 GD"], _ = train("gd", X1, Y1, seed, iters, hidden=hidden)
    curves["task 1 MetaGD fresh"], l1 = train("metagd-memadam", X1, Y1, seed, iters,
                                              hidden=hidden)
    curves["task 2 GD"], _ = train("gd", X2, Y2, seed, iters, hidden=hidden)
    curves["task 2 MetaGD fresh"], _ = train("metagd-memadam", X2, Y2, seed, iters,
                                             hidden=hidden)
    curves["task 2 MetaGD task-1 memory"], _ = train("metagd-memadam", X2, Y2, seed, iters,
                                                     l1.memory_state(), hidden=hidden)
    return {"seed": seed, "n_samples": [len(X1), len(X2)],
            "at": {k: {str(a): float(c[min(a, len(c)) - 1]) for a in AT} for k, c in curves.items()},
            "mean": {k: float(c.mean()) for k, c in curves.items()}, "_curves": curves}


def summarize(trials):
    keys = list(trials[0]["at"])
    rows = {k: {"at": {a: float(np.mean([t["at"][k][a] for t in trials])) for a in
                       trials[0]["at"][k]},
                "mean": float(np.mean([t["mean"][k] for t in trials]))} for k in keys}
    curves = {k: np.mean([t["_curves"][k] for t in trials], axis=0) for k in keys}
    return {"trials": len(trials), "lr": LR, "rows": rows, "_curves": curves}


def table(summary):
    rows = summary["rows"]
    ats = list(next(iter(rows.values()))["at"])
    out = [f"Full-batch training MSE (all joints, raw torques) before iteration n, base rate "
           f"{summary['lr']:g}; mean over {summary['trials']} trials", "",
           "| run | " + " | ".join(f"n = {a}" for a in ats) + " | mean over run |",
           "|---|" + "---|" * (len(ats) + 1)]
    for k, r in rows.items():
        out.append(f"| {k} | " + " | ".join(f"{r['at'][a]:.3g}" for a in ats)
                   + f" | {r['mean']:.3g} |")
    return "\n".join(out)


def plots(trials, summary, directory):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, c in summary["_curves"].items():
        ax.semilogy(np.arange(1, len(c) + 1), c, label=k, ls="-" if "task 2" in k else ":")
    ax.set_xlabel("iteration (full batch)")
    ax.set_ylabel("training MSE, all joints (N·m)²")
    ax.set_title("batch inverse dynamics: rectangle-h then rectangle-v")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(directory, "batch_id_convergence.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]
