"""Paper section "sequential binary MNIST", on scikit-learn's 8x8 digits (no download).

Three binary tasks in sequence: 0 vs 1, 2 vs 3, 4 vs 5 (labels {0, 1}); one MLP (64-32-1, ReLU,
`loss="logistic"`, `n_joints=1`) through `OnlineLearner`, batches of 10 drawn from shuffled
epochs over the task's training half, evaluated prequentially. Each task starts from a fresh
network; the variants (VARIANTS: label -> optimizer, memory carried) differ in the rates:
  GD, Adam, SGD-HD           no memory (SGD-HD: one hypergradient rate, Baydin et al.)
  MetaGD                     memory on GD, trained by GD at beta 1e-3
  MetaGDMemAdam              memory on GD, trained by Adam at 1e-3 (the authors' defaults,
                             `MemoryConfig.authors()`)
  Adam+memory                memory on Adam (indexed by Adam's first moment), trained by Adam
each memory variant "fresh" (a new memory per task) or "carried" (the previous task's memory,
`set_memory_state(transfer=True)`). L2L (a meta-trained LSTM optimizer, rtlearn.experiments.l2l)
is added when torch is importable, else skipped with a message.
Metric: batches until the running mean of the last 10 prequential losses is below TOL (cap
MAX_STEPS), per task and base rate over four decades (the paper's "iterations to threshold vs
initial rate"), plus held-out accuracy at the end. Trial seed s shuffles the split and the
batch order and initialises the networks.
"""

from __future__ import annotations

import gzip
import os
from collections import deque
from functools import lru_cache
from pathlib import Path

import numpy as np

from rtlearn.learner import LearnerConfig, OnlineLearner, authors_memory

from .evaluate import prequential

DEFAULT_TRIALS = 5
TASKS = ((0, 1), (2, 3), (4, 5))
LRS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
TOL = 0.1
WINDOW = 10
MAX_STEPS = 2000
BATCH = 10
VARIANTS = {
    "GD": ("gd", False),
    "Adam": ("adam", False),
    "SGD-HD": ("sgd-hd", False),
    "MetaGD fresh": ("metagd", False),
    "MetaGD carried": ("metagd", True),
    "MetaGDMemAdam fresh": ("metagd-memadam", False),
    "MetaGDMemAdam carried": ("metagd-memadam", True),
    "Adam+memory fresh": ("adam-memadam", False),
    "Adam+memory carried": ("adam-memadam", True),
}
L2L = "L2L (LSTM, meta-trained)"


def task_data(pair, seed, mnist: str | None = None):
    """(Xtr, ytr, Xte, yte) of the binary task `pair` (label 1 = pair[1]), pixels in [0, 1].
    scikit-learn's 8x8 digits, halved into train and held-out after a seeded shuffle; or, with
    `mnist` (a directory of the IDX files), MNIST's training and test sets (784 inputs)."""
    rng = np.random.default_rng([seed, pair[0]])
    if mnist is not None:
        parts = []
        for part in ("train", "test"):
            X, labels = read_mnist(mnist, part)
            keep = np.isin(labels, pair)
            X, y = X[keep], (labels[keep] == pair[1]).astype(np.float64)[:, None]
            order = rng.permutation(len(X))
            parts += [X[order], y[order]]
        return tuple(parts)
    from sklearn.datasets import load_digits
    d = load_digits()
    keep = np.isin(d.target, pair)
    X = d.data[keep] / 16.0
    y = (d.target[keep] == pair[1]).astype(np.float64)[:, None]
    order = rng.permutation(len(X))
    X, y = X[order], y[order]
    half = len(X) // 2
    return X[:half], y[:half], X[half:], y[half:]


MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _mnist_path(directory: str, stem: str) -> Path:
    # the files circulate as "train-images-idx3-ubyte" and "train-images.idx3-ubyte", gzipped or not
    base = Path(directory)
    for name in (stem, stem.replace("-idx", ".idx")):
        for suffix in ("", ".gz"):
            if (base / (name + suffix)).is_file():
                return base / (name + suffix)
    raise FileNotFoundError(f"MNIST: no {stem}[.gz] in {directory}")


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format: two zero bytes, type 0x08 = uint8, rank, big-endian int32
    sizes, then the data), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot read ({e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] == 0:
        raise ValueError(f"{path}: not a uint8 IDX file (magic {raw[:4].hex() or 'missing'})")
    rank = raw[3]
    shape = tuple(int(n) for n in np.frombuffer(raw, ">i4", count=rank, offset=4)) \
        if len(raw) >= 4 + 4 * rank else None
    if shape is None or len(raw) != 4 + 4 * rank + int(np.prod(shape)):
        raise ValueError(f"{path}: size does not match its header {shape}")
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * rank).reshape(shape)


@lru_cache(maxsize=4)
def read_mnist(directory: str, part: str):
    """(images (n, 784) in [0, 1], labels (n,)) of MNIST's "train" or "test" set."""
    images, labels = (read_idx(_mnist_path(directory, stem)) for stem in MNIST_FILES[part])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"MNIST {part} set in {directory}: images {images.shape} and labels "
                         f"{labels.shape} do not pair up")
    return images.reshape(len(images), -1) / 255.0, labels


def stream(X, y, seed):
    """Batches of BATCH from shuffled epochs over (X, y), forever."""
    if len(X) < BATCH:  # else the epochs would be empty and the loop would spin
        raise ValueError(f"a task needs at least {BATCH} training samples, got {len(X)}")
    rng = np.random.default_rng([seed, 99])
    while True:
        order = rng.permutation(len(X))
        for i in range(0, len(X) - BATCH + 1, BATCH):
            idx = order[i:i + BATCH]
            yield X[idx], y[idx]


def run_task(learner, data, seed, max_steps):
    Xtr, ytr, Xte, yte = data
    recent = deque(maxlen=WINDOW)

    def stop(loss):
        recent.append(float(loss[0]))
        return len(recent) == WINDOW and np.mean(recent) < TOL

    curve = [float(c.loss[0]) for c in prequential(learner, stream(Xtr, ytr, seed),
                                                   max_steps=max_steps, stop=stop)]
    reached = len(recent) == WINDOW and np.mean(recent) < TOL
    pred = learner.predict_many(Xte)[:, 0]
    acc = float(((pred > 0) == (yte[:, 0] > 0.5)).mean())  # logit > 0 <=> p > 0.5
    return {"steps": len(curve) if reached else None, "accuracy": acc, "curve": np.array(curve)}


def _record(out, label, lr, pair, r):
    out["results"][f"{label}|{lr}|{pair[0]}v{pair[1]}"] = {"steps": r["steps"],
                                                          "accuracy": r["accuracy"]}


def run_trial(seed: int, quick: bool = False, mnist: str | None = None) -> dict:
    from . import l2l
    max_steps = 100 if quick else MAX_STEPS
    lrs = LRS[2:3] if quick else LRS
    tasks = [task_data(p, seed, mnist) for p in TASKS]
    out = {"seed": seed, "results": {}, "l2l": l2l.available(),
           "data": "MNIST" if mnist else "sklearn 8x8 digits"}
    for lr in lrs:
        for label, (opt, carried) in VARIANTS.items():
            cfg = LearnerConfig(n_joints=1, n_inputs=tasks[0][0].shape[1], hidden=(32,),
                                loss="logistic", optimizer=opt, lr=lr, normalize="none",
                                seed=seed, memory=authors_memory(opt))
            memory = None
            for pair, data in zip(TASKS, tasks):
                learner = OnlineLearner(cfg)
                if carried and memory is not None:
                    learner.set_memory_state(memory, transfer=True)
                _record(out, label, f"{lr:g}", pair, run_task(learner, data, seed, max_steps))
                memory = learner.memory_state()
    if out["l2l"] is None:  # the LSTM has no base rate: one row
        trained = l2l.meta_train(seed, quick=quick, mnist=mnist)
        out["l2l_meta_seconds"] = trained["seconds"]
        for pair, data in zip(TASKS, tasks):
            _record(out, L2L, "-", pair, l2l.run_task(trained, data, seed, max_steps))
    return out


def gradient_scale(seed: int = 0, steps: int = 200, lr: float = 1e-3) -> dict:
    """Why plain MetaGD barely moves here (docs/results.md): the size of the gradients and of
    the memory's signal |g_t g_t-1| on task 0v1, and the mean predicted rate of each group
    (W1, b1, W2, b2) over the base rate after `steps` batches."""
    data = task_data(TASKS[0], seed)
    learner = OnlineLearner(LearnerConfig(n_joints=1, n_inputs=64, hidden=(32,), loss="logistic",
                                          optimizer="metagd", lr=lr, normalize="none", seed=seed,
                                          memory=authors_memory("metagd")))
    batches, prev, g_med, s_med, zero = stream(data[0], data[1], seed), None, [], [], []
    for _ in range(steps):
        learner.learn_many(*next(batches))
        g = learner.net.grad.ravel().copy()
        zero.append(np.mean(g == 0))
        if prev is not None:
            s = np.abs(g * prev)
            g_med.append(np.median(np.abs(g[g != 0])))
            s_med.append(np.median(s[s > 0]))
        prev = g
    return {"median_abs_grad_nonzero": float(np.median(g_med)), "fraction_zero": float(np.mean(zero)),
            "median_signal_nonzero": float(np.median(s_med)),
            "mean_rate_over_base_per_group": (learner.rates()["memory"] / lr).round(3).tolist()}


def summarize(trials):
    keys = list(trials[0]["results"])
    rows = {}
    for k in keys:
        steps = [t["results"][k]["steps"] for t in trials]
        reached = [s for s in steps if s is not None]
        rows[k] = {"mean_steps": float(np.mean(reached)) if reached else None,
                   "not_reached": len(steps) - len(reached),
                   "accuracy": float(np.mean([t["results"][k]["accuracy"] for t in trials]))}
    return {"trials": len(trials), "tol": TOL, "window": WINDOW, "max_steps": MAX_STEPS,
            "rows": rows, "l2l_skipped": trials[0]["l2l"], "data": trials[0]["data"]}


def table(summary):
    rows = summary["rows"]
    lrs = _rates(rows)
    tasks = [f"{a}v{b}" for a, b in TASKS]
    out = [f"Batches of 10 until the mean of the last {summary['window']} prequential logistic "
           f"losses < {summary['tol']} (cap {summary['max_steps']}; [n] = trials not reaching "
           f"it), held-out accuracy; mean over {summary['trials']} trials; data: "
           f"{summary['data']}", "",
           "| base rate | variant | " + " | ".join(tasks) + " | accuracy (3 tasks) |",
           "|---|---|" + "---|" * (len(tasks) + 1)]
    for lr in lrs + ["-"]:
        for v in [*VARIANTS, L2L]:
            cells, accs = [], []
            for t in tasks:
                r = rows.get(f"{v}|{lr}|{t}")
                if r is None:
                    continue
                s = "-" if r["mean_steps"] is None else f"{r['mean_steps']:.0f}"
                if r["not_reached"]:
                    s += f" [{r['not_reached']}]"
                cells.append(s)
                accs.append(r["accuracy"])
            if cells:
                out.append(f"| {lr} | {v} | " + " | ".join(cells) + " | "
                           + " / ".join(f"{a:.3f}" for a in accs) + " |")
    if summary.get("l2l_skipped"):
        out += ["", summary["l2l_skipped"]]
    return "\n".join(out)


def _rates(rows):
    return sorted({k.split("|")[1] for k in rows} - {"-"}, key=float)


def plots(trials, summary, directory):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = summary["rows"]
    lrs = _rates(rows)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), sharey=True)
    cap = summary["max_steps"]
    for ax, (a, b) in zip(axes, TASKS):
        for v in VARIANTS:
            # a rate at which some trial never reached the threshold is drawn at the cap
            ys = [cap if rows[f"{v}|{lr}|{a}v{b}"]["not_reached"] else
                  rows[f"{v}|{lr}|{a}v{b}"]["mean_steps"] for lr in lrs]
            ax.loglog([float(x) for x in lrs], ys, "o-" if "carried" in v else "s--",
                      label=v, alpha=0.85)
        l2l_row = rows.get(f"{L2L}|-|{a}v{b}")
        if l2l_row and not l2l_row["not_reached"]:
            ax.axhline(l2l_row["mean_steps"], color="k", lw=1, ls=":", label=L2L)
        ax.axhline(cap, color="grey", lw=0.5)
        ax.set_title(f"task {a} vs {b}")
        ax.set_xlabel("base learning rate")
    axes[0].set_ylabel(f"batches to loss < {summary['tol']} (cap {cap}: not reached)")
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    path = os.path.join(directory, "digits_steps_vs_rate.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]
