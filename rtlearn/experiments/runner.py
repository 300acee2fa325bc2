"""Runs an experiment's trials in parallel processes and collects their results.

An experiment module defines:
  DEFAULT_TRIALS: int
  run_trial(seed: int, quick: bool = False, **options) -> dict      (JSON-able; numpy arrays allowed)
  summarize(trials: list[dict]) -> dict                    (JSON-able)
  table(summary: dict) -> str                              (markdown)
  plots(trials, summary, directory) -> list[str]           (PNG paths written)
Trial i uses seed `seed + i`; results are deterministic per seed and do not depend on the
number of worker processes.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

EXPERIMENTS = {
    "rosenbrock": "paper Fig. 2: GD vs MetaGD run 1 vs run 2 with run 1's memory",
    "online-lift": "paper Table I: online inverse dynamics, lift none -> light -> heavy",
    "digits": "paper sequential binary MNIST on sklearn 8x8 digits: 0v1, 2v3, 4v5",
    "batch-id": "paper batch inverse dynamics: rectangle-h then rectangle-v, full batch",
    "payload-swap": "long runs with live payload swaps in the daemon's default configuration",
    "auto-context": "unlabelled payload swaps found by the daemon's detector: auto vs oracle "
                    "labels vs one model",
}


def experiment_module(name: str):
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}")
    return importlib.import_module(f"rtlearn.experiments.{name.replace('-', '_')}")


def _trial(name: str, seed: int, quick: bool, options: dict) -> dict:
    return experiment_module(name).run_trial(seed, quick=quick, **options)


def run_trials(name: str, trials: int | None = None, seed: int = 0, quick: bool = False,
               workers: int | None = None, progress=...,
               options: dict | None = None) -> list[dict]:
    """All trials of an experiment, ordered by seed; prints a progress bar line per finished
    trial, with the time left estimated from the trials done, to `progress` (default: the
    current sys.stderr; None: silent)."""
    if progress is ...:
        progress = sys.stderr
    mod = experiment_module(name)
    options = options or {}
    n = mod.DEFAULT_TRIALS if trials is None else int(trials)
    seeds = [seed + i for i in range(n)]
    workers = workers or min(n, os.cpu_count() or 1)
    t0 = time.perf_counter()
    results: dict[int, dict] = {}

    def report(s):
        if progress is not None:
            done, elapsed = len(results), time.perf_counter() - t0
            bar = "#" * round(20 * done / n) + "-" * (20 - round(20 * done / n))
            left = f", ~{elapsed / done * (n - done):.0f} s left" if done < n else ""
            print(f"[{name}] [{bar}] {done}/{n} trials (seed {s} done), {elapsed:.1f} s{left}",
                  file=progress, flush=True)

    if workers <= 1:
        for s in seeds:
            results[s] = _trial(name, s, quick, options)
            report(s)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(_trial, name, s, quick, options): s for s in seeds}
            for fut in as_completed(futures):
                s = futures[fut]
                results[s] = fut.result()
                report(s)
    return [results[s] for s in seeds]


def run_experiment(name: str, trials: int | None = None, seed: int = 0, quick: bool = False,
                   workers: int | None = None, plots_dir: str | None = None,
                   progress=..., options: dict | None = None) -> dict:
    mod = experiment_module(name)
    results = run_trials(name, trials, seed, quick, workers, progress, options)
    summary = mod.summarize(results)
    out = {"experiment": name, "trials": len(results), "seed": seed, "quick": quick,
           "summary": summary, "table": mod.table(summary), "per_trial": results}
    if plots_dir:
        os.makedirs(plots_dir, exist_ok=True)
        out["plots"] = mod.plots(results, summary, plots_dir)
    return out
