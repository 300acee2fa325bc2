"""Paper Figure 2: the Rosenbrock function, GD vs MetaGD run 1 vs MetaGD run 2, as ensembles.

The authors' example setup (docs ALGORITHM.md sections 7-8): start (1.5, -0.5), base rate 1e-3,
memory trained by Adam at 1e-3 ("metagd-memadam", `MemoryConfig.authors()`: 100 centres over
[-10, 10], clip 10, every centre evaluated), one memory per coordinate (group bounds [0, 1, 2]).
Run 2 starts from the same point with run 1's memory (`Optimizer.transfer`: memory values kept,
their Adam moments and the gradient history reset).

The iteration counts of MetaGD are chaotic: moving the start by 1e-9 changes them several-fold
and flips run 1 / run 2 (docs/results.md). So a trial is an ensemble: ENSEMBLE runs of
(GD, run 1, run 2) from the trial's start, member 0 exactly there, member m > 0 moved by
PERTURBATION * N(0, 1) in each coordinate (seeded by trial and member). Each run stops at
f < TOL or after MAX_ITERS updates. Trial 0 starts at the paper's point; trial i > 0 draws a
start uniformly from [-2, 2] x [-1, 3] with seed i.
"""

from __future__ import annotations

import numpy as np

from rtlearn.learner import MemoryConfig, make_optimizer, predict_rates

from .evaluate import prequential

DEFAULT_TRIALS = 5
START = (1.5, -0.5)
LR = 1e-3
TOL = 1e-3
MAX_ITERS = 50_000
ENSEMBLE = 50
PERTURBATION = 1e-9
QUICK = {"ensemble": 4, "max_iters": 3000}
RUNS = ("gd", "metagd-1", "metagd-2")
LABELS = {"gd": "GD", "metagd-1": "MetaGD run 1", "metagd-2": "MetaGD run 2 (memory of 1)"}
MEMORY = MemoryConfig.authors()


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


def start_point(seed: int):
    if seed == 0:
        return START
    rng = np.random.default_rng([seed, 7])
    return (float(rng.uniform(-2, 2)), float(rng.uniform(-1, 3)))


def member_start(start, seed: int, member: int) -> np.ndarray:
    """The start of ensemble member `member` (member 0: `start` itself)."""
    if member == 0:
        return np.array(start, dtype=np.float64)
    return np.array(start) + PERTURBATION * np.random.default_rng([seed, member, 11]).normal(size=2)


def run_member(start, max_iters: int = MAX_ITERS) -> dict:
    """GD, MetaGD run 1 and MetaGD run 2 (run 1's memory) from one start."""
    out = {"gd": run_one(Problem("gd", start), max_iters)}
    run1 = Problem("metagd-memadam", start)
    out["metagd-1"] = run_one(run1, max_iters)
    out["memory-1"] = run1.memory_state()["1.memory.w"].copy()
    run2 = Problem("metagd-memadam", start, run1.memory_state())
    out["metagd-2"] = run_one(run2, max_iters)
    out["memory-2"] = run2.memory_state()["1.memory.w"].copy()
    return out


def run_trial(seed: int, quick: bool = False) -> dict:
    n = QUICK["ensemble"] if quick else ENSEMBLE
    max_iters = QUICK["max_iters"] if quick else MAX_ITERS
    start = start_point(seed)
    out = {"seed": seed, "start": list(start), "ensemble": n, "max_iters": max_iters,
           "perturbation": PERTURBATION, "iterations": {r: [] for r in RUNS}}
    for m in range(n):
        res = run_member(member_start(start, seed, m), max_iters)
        for r in RUNS:
            out["iterations"][r].append(res[r]["iterations"])
        if m == 0:
            out["_member0"] = res  # curves and memories for the plots, not for the JSON
    return out


def _count(v) -> int | None:
    return int(v) if np.isfinite(v) else None


def _stats(counts: np.ndarray) -> dict:
    """Lower median and quartiles of iteration counts (actual counts of members; inf = not
    reached, None in the summary), and the spread max / min of the reached ones."""
    q1, med, q3 = np.percentile(counts, [25, 50, 75], method="lower")
    reached = counts[np.isfinite(counts)]
    return {"median": _count(med), "q1": _count(q1), "q3": _count(q3),
            "not_reached": int(len(counts) - len(reached)),
            "max/min": float(reached.max() / reached.min()) if len(reached) else None}


def _row(iterations: dict) -> dict:
    it = {r: np.array([np.inf if v is None else v for v in iterations[r]], dtype=float)
          for r in RUNS}
    row = {r: _stats(it[r]) for r in RUNS}
    row["runs"] = len(it["gd"])
    row["run2 < run1 < gd"] = float(np.mean((it["metagd-2"] < it["metagd-1"])
                                            & (it["metagd-1"] < it["gd"])))
    row["run2 < run1"] = float(np.mean(it["metagd-2"] < it["metagd-1"]))
    row["run1 < gd"] = float(np.mean(it["metagd-1"] < it["gd"]))
    return row


def summarize(trials: list[dict]) -> dict:
    """Per start and pooled over all starts: quartiles of the iteration counts of each run
    and the fractions of ensemble members with run 2 < run 1 < GD, run 2 < run 1, run 1 < GD."""
    rows = [{"seed": t["seed"], "start": t["start"], **_row(t["iterations"])} for t in trials]
    pooled = {r: sum((t["iterations"][r] for t in trials), []) for r in RUNS}
    return {"tol": TOL, "max_iters": trials[0]["max_iters"], "lr": LR,
            "perturbation": PERTURBATION, "rows": rows, "all": _row(pooled)}


def table(summary: dict) -> str:
    def cell(st):
        q1, med, q3 = ("-" if st[k] is None else str(st[k]) for k in ("q1", "median", "q3"))
        return f"{med} [{q1}, {q3}]"

    lines = [f"Iterations to f < {summary['tol']:g} (cap {summary['max_iters']}; '-' = not "
             "reached): median [quartiles] over an ensemble per start (member 0 at the start, "
             f"the others moved by {summary['perturbation']:g} N(0, 1) per coordinate); base "
             "rate 1e-3, memory: the authors' defaults (every centre) trained by Adam at 1e-3",
             "",
             "| seed | start | runs | GD | MetaGD run 1 | MetaGD run 2 (run 1's memory) | "
             "run 1 max/min | run 2 max/min | run 2 < run 1 < GD | run 2 < run 1 |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def ratio(st):
        return "-" if st["max/min"] is None else f"{st['max/min']:.1f}"

    for r in summary["rows"] + [dict(summary["all"], seed="all", start=None)]:
        where = "pooled" if r["start"] is None else f"({r['start'][0]:.2f}, {r['start'][1]:.2f})"
        lines.append(f"| {r['seed']} | {where} | {r['runs']} | "
                     + " | ".join(cell(r[k]) for k in RUNS)
                     + f" | {ratio(r['metagd-1'])} | {ratio(r['metagd-2'])}"
                     + f" | {r['run2 < run1 < gd']:.2f} | {r['run2 < run1']:.2f} |")
    return "\n".join(lines)


def plots(trials: list[dict], summary: dict, directory: str) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = trials[0]
    member = t["_member0"]
    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in RUNS:
        c = member[r]["curve"]
        ax.semilogy(np.arange(len(c)), c, label=LABELS[r], lw=1.2)
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
        for k in (1, 2):
            w = member[f"memory-{k}"][d]
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
