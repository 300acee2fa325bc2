"""Paper Figure 2: the Rosenbrock function, GD vs MetaGD run 1 vs MetaGD run 2.

The authors' example setup (docs ALGORITHM.md sections 7-8): start (1.5, -0.5), base rate 1e-3,
memory trained by Adam at 1e-3 ("metagd-memadam", `MemoryConfig.authors()`: 100 centres over
[-10, 10], clip 10), one memory per coordinate (group bounds [0, 1, 2]). Run 2 starts from the
same point with run 1's memory (`Optimizer.transfer`: memory values kept, their Adam moments
and the gradient history reset). Run 3 (run 2's memory) is reported as an extra.

The memory is evaluated to 1e-11 (MEMORY: truncation 1e-12) rather than the default 1e-7:
the iteration counts of this 2-D problem move by hundreds under 1e-9 changes of the rates
(docs/results.md), and speed does not matter with two coordinates.

Each run stops at f < TOL or after MAX_ITERS updates. Trial 0 starts at the paper's point;
trial i > 0 draws a start uniformly from [-2, 2] x [-1, 3] with seed i (a robustness check).
"""

from __future__ import annotations

import numpy as np

from rtlearn.learner import MemoryConfig, make_optimizer, predict_rates

from .evaluate import prequential

DEFAULT_TRIALS = 1
START = (1.5, -0.5)
LR = 1e-3
TOL = 1e-3
MAX_ITERS = 50_000
RUNS = ("gd", "metagd-1", "metagd-2", "metagd-3")
MEMORY = MemoryConfig.authors(truncation=1e-12)


def f(t):
    return (1.0 - t[0]) ** 2 + 100.0 * (t[1] - t[0] ** 2) ** 2


def grad(t):
    return np.array([-2.0 * (1.0 - t[0]) - 400.0 * t[0] * (t[1] - t[0] ** 2),
                     200.0 * (t[1] - t[0] ** 2)])


class Problem:
    """Adapter for `prequential`: learn_many(None, None) returns f before one optimizer step."""

    def __init__(self, optimizer_name: str, start, memory_state: dict | None = None,
                 lr: float = LR, mem: MemoryConfig | None = None):
        self.optimizer = make_optimizer(optimizer_name, lr, 10.0, mem or MEMORY)
        self.state = self.optimizer.init(2, np.array([0, 1, 2]))
        if memory_state is not None:
            self.optimizer.transfer(self.state, memory_state)
        self.theta = np.array(start, dtype=np.float64)
        self.path = [self.theta.copy()]

    def learn_many(self, X, Y):
        value = f(self.theta)
        self.optimizer.step(self.theta, grad(self.theta), self.state)
        self.path.append(self.theta.copy())
        return np.array([value])

    def memory_state(self) -> dict:
        return {k: v.copy() for k, v in self.optimizer.shared_state(self.state).items()}


def _forever():
    while True:
        yield None, None


def run_one(problem: Problem, max_iters: int = MAX_ITERS, tol: float = TOL) -> dict:
    curve = [float(c.loss[0]) for c in prequential(problem, _forever(), max_steps=max_iters + 1,
                                                   stop=lambda loss: loss[0] < tol)]
    reached = curve[-1] < tol
    return {"iterations": len(curve) - 1 if reached else None, "final_f": curve[-1],
            "curve": np.array(curve), "path": np.array(problem.path)}


def sensitivity(truncations=(1e-7, 1e-9, 1e-11, 1e-13), start=START) -> dict:
    """Iterations of MetaGD runs 1 and 2 with the memory evaluated at each accuracy
    (docs/results.md: the counts are chaotic in the rates)."""
    out = {}
    for t in truncations:
        mem = MemoryConfig.authors(truncation=t)
        run1 = Problem("metagd-memadam", start, mem=mem)
        n1 = run_one(run1)["iterations"]
        n2 = run_one(Problem("metagd-memadam", start, run1.memory_state(), mem=mem))["iterations"]
        out[t] = (n1, n2)
    return out


def start_point(seed: int):
    if seed == 0:
        return START
    rng = np.random.default_rng([seed, 7])
    return (float(rng.uniform(-2, 2)), float(rng.uniform(-1, 3)))


def run_trial(seed: int, quick: bool = False) -> dict:
    max_iters = 3000 if quick else MAX_ITERS
    start = start_point(seed)
    out = {"seed": seed, "start": list(start), "runs": {}, "memory": {}}
    out["runs"]["gd"] = run_one(Problem("gd", start), max_iters)
    memory = None
    for k in (1, 2, 3):
        p = Problem("metagd-memadam", start, memory)
        out["runs"][f"metagd-{k}"] = run_one(p, max_iters)
        memory = p.memory_state()
        out["memory"][f"after-{k}"] = memory["1.memory.w"].copy()
    return out


def summarize(trials: list[dict]) -> dict:
    rows = []
    for t in trials:
        row = {"seed": t["seed"], "start": t["start"]}
        for r in RUNS:
            row[r] = t["runs"][r]["iterations"]
            row[f"{r}_final_f"] = t["runs"][r]["final_f"]
        it = [row[r] if row[r] is not None else np.inf for r in RUNS]
        row["run2 < run1 < gd"] = bool(it[2] < it[1] < it[0])
        rows.append(row)
    return {"tol": TOL, "max_iters": MAX_ITERS, "lr": LR, "rows": rows}


def table(summary: dict) -> str:
    lines = [f"Iterations to f < {summary['tol']:g} (cap {summary['max_iters']}; '-' = not "
             "reached), base rate 1e-3, memory: authors' defaults with Adam at 1e-3",
             "",
             "| seed | start | GD | MetaGD run 1 | MetaGD run 2 (run 1's memory) | "
             "MetaGD run 3 (run 2's memory) | run 2 < run 1 < GD |",
             "|---|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        cells = [str(r[k]) if r[k] is not None else "-" for k in RUNS]
        lines.append(f"| {r['seed']} | ({r['start'][0]:.2f}, {r['start'][1]:.2f}) | "
                     + " | ".join(cells) + f" | {'yes' if r['run2 < run1 < gd'] else 'no'} |")
    return "\n".join(lines)


def plots(trials: list[dict], summary: dict, directory: str) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = trials[0]
    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    labels = {"gd": "GD", "metagd-1": "MetaGD run 1", "metagd-2": "MetaGD run 2 (memory of 1)",
              "metagd-3": "MetaGD run 3 (memory of 2)"}
    for r in RUNS:
        c = t["runs"][r]["curve"]
        ax.semilogy(np.arange(len(c)), c, label=labels[r], lw=1.2)
    ax.axhline(summary["tol"], color="k", ls=":", lw=0.8)
    ax.set_xlabel("iteration")
    ax.set_ylabel("f(x, y)")
    ax.set_title(f"Rosenbrock from ({t['start'][0]:.2f}, {t['start'][1]:.2f})")
    ax.legend()
    fig.tight_layout()
    p = f"{directory}/rosenbrock_convergence.png"
    fig.savefig(p, dpi=120)
    plt.close(fig)
    paths.append(p)

    cfg = MEMORY
    xs = np.linspace(-cfg.clip, cfg.clip, 401)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for d, ax in enumerate(axes):
        for k in (1, 2, 3):
            w = np.asarray(t["memory"][f"after-{k}"])[d]
            ax.semilogy(xs, predict_rates(cfg, w, xs), label=f"after run {k}")
        ax.axhline(LR, color="k", ls=":", lw=0.8, label="initial rate")
        ax.set_xlabel(f"gradient of coordinate {d + 1} (clipped)")
        ax.set_title(f"memory of coordinate {d + 1}")
    axes[0].set_ylabel("predicted learning rate")
    axes[0].legend()
    fig.tight_layout()
    p = f"{directory}/rosenbrock_memory.png"
    fig.savefig(p, dpi=120)
    plt.close(fig)
    paths.append(p)
    return paths
