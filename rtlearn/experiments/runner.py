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
import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

from . import progress as progress_module

CONNECT_TIMEOUT = 30  # s to reach a Dask scheduler

EXPERIMENTS = {
    "rosenbrock": "paper Fig. 2: GD vs MetaGD run 1 vs run 2 with run 1's memory",
    "online-lift": "paper Table I: online inverse dynamics, lift none -> light -> heavy",
    "digits": "paper sequential binary MNIST on sklearn 8x8 digits: 0v1, 2v3, 4v5",
    "batch-id": "paper batch inverse dynamics: rectangle-h then rectangle-v, full batch",
    "payload-swap": "long runs with live payload swaps in the daemon's default configuration",
    "auto-context": "unlabelled payload swaps found by the daemon's detector: auto vs oracle "
                    "labels vs one model",
}


class ClusterError(RuntimeError):
    """--scheduler given, but Dask distributed is missing or the scheduler unreachable."""


def experiment_module(name: str):
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}")
    return importlib.import_module(f"rtlearn.experiments.{name.replace('-', '_')}")


def _trial(name: str, seed: int, quick: bool, options: dict, sink=None) -> dict:
    if sink is not None:
        progress_module.connect(sink)
    progress_module.start(seed)
    return experiment_module(name).run_trial(seed, quick=quick, **options)


class Board:
    """What the runner prints (to `out`; None: nothing): a line per finished trial with the
    time left estimated from the trials done, and, between them, live progress of the
    running trials (learning steps and samples so far): one line rewritten in place on a
    terminal, else a line every LIVE_EVERY seconds."""

    LIVE_EVERY = 10.0

    def __init__(self, name: str, n: int, out):
        self.name, self.n, self.out = name, n, out
        self.t0 = time.perf_counter()
        self.done = 0
        self.running: dict[int, tuple[int, int]] = {}
        self.tty = out is not None and hasattr(out, "isatty") and out.isatty()
        self._printed = 0.0
        self._live = False  # a live line is on the terminal
        self._lock = threading.Lock()

    def update(self, report) -> None:
        """(seed, steps, samples) from a running trial (any thread)."""
        seed, steps, samples = report
        with self._lock:
            self.running[seed] = (steps, samples)
            now = time.perf_counter()
            if self.out is None or now - self._printed < (0.5 if self.tty else self.LIVE_EVERY):
                return
            self._printed = now
            live = ", ".join(f"seed {s}: {st / 1e3:.1f}k steps, {sa / 1e3:.0f}k samples"
                             for s, (st, sa) in sorted(self.running.items()))
            line = f"[{self.name}] {self.done}/{self.n} trials done, {now - self.t0:.0f} s; {live}"
            if self.tty:
                print("\r" + line[:160].ljust(160), end="", file=self.out, flush=True)
                self._live = True
            else:
                print(line, file=self.out, flush=True)

    def trial_done(self, seed: int) -> None:
        with self._lock:
            self.done += 1
            self.running.pop(seed, None)
            if self.out is None:
                return
            if self._live:
                print("\r" + " " * 160 + "\r", end="", file=self.out)
                self._live = False
            elapsed = time.perf_counter() - self.t0
            bar = "#" * round(20 * self.done / self.n) + "-" * (20 - round(20 * self.done / self.n))
            left = (f", ~{elapsed / self.done * (self.n - self.done):.0f} s left"
                    if self.done < self.n else "")
            print(f"[{self.name}] [{bar}] {self.done}/{self.n} trials (seed {seed} done), "
                  f"{elapsed:.1f} s{left}", file=self.out, flush=True)


def run_trials(name: str, trials: int | None = None, seed: int = 0, quick: bool = False,
               workers: int | None = None, progress=...,
               options: dict | None = None, scheduler: str | None = None) -> list[dict]:
    """All trials of an experiment, ordered by seed, on `workers` local processes or, with
    `scheduler` (a Dask scheduler address, e.g. tcp://10.0.0.5:8786), on that Dask cluster's
    workers. Progress (`Board`) goes to `progress` (default: the current sys.stderr; None:
    silent)."""
    if progress is ...:
        progress = sys.stderr
    mod = experiment_module(name)
    options = options or {}
    n = mod.DEFAULT_TRIALS if trials is None else int(trials)
    seeds = [seed + i for i in range(n)]
    workers = workers or min(n, os.cpu_count() or 1)
    board = Board(name, n, progress)
    results: dict[int, dict] = {}
    if scheduler is not None:
        return _on_cluster(scheduler, name, seeds, quick, options, board)
    if workers <= 1:
        try:
            for s in seeds:
                results[s] = _trial(name, s, quick, options, board.update)
                board.trial_done(s)
        finally:
            progress_module.connect(None)
        return [results[s] for s in seeds]
    ctx = multiprocessing.get_context()
    reports = ctx.Queue()
    reader = threading.Thread(target=_read_reports, args=(reports, board), daemon=True)
    reader.start()
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                                 initializer=progress_module.connect,
                                 initargs=(reports.put,)) as pool:
            futures = {pool.submit(_trial, name, s, quick, options): s for s in seeds}
            for fut in as_completed(futures):
                s = futures[fut]
                results[s] = fut.result()
                board.trial_done(s)
    finally:
        reports.put(None)
        reader.join()
    return [results[s] for s in seeds]


def _read_reports(reports, board: Board) -> None:
    while (report := reports.get()) is not None:
        board.update(report)


def _on_cluster(scheduler: str, name: str, seeds: list[int], quick: bool, options: dict,
                board: Board) -> list[dict]:
    """The trials on a Dask distributed cluster (optional extra `cluster`); each worker needs
    this rtlearn installed (docs/results.md, "Sweeps on a cluster")."""
    try:
        from distributed import Client
    except ImportError:
        raise ClusterError("--scheduler needs Dask distributed: pip install "
                           "'rtlearn[cluster]'") from None
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as e:
        raise ClusterError(f"cannot reach the Dask scheduler at {scheduler}: {e}") from None
    results: dict[int, dict] = {}
    try:
        client.subscribe_topic(progress_module.DaskSink.TOPIC, lambda event: board.update(event[1]))
        with client.get_executor(pure=False) as pool:
            futures = {pool.submit(_trial, name, s, quick, options, progress_module.DaskSink()): s
                       for s in seeds}
            for fut in as_completed(futures):
                s = futures[fut]
                results[s] = fut.result()
                board.trial_done(s)
    finally:
        client.unsubscribe_topic(progress_module.DaskSink.TOPIC)
        client.close()
    return [results[s] for s in seeds]


def run_experiment(name: str, trials: int | None = None, seed: int = 0, quick: bool = False,
                   workers: int | None = None, plots_dir: str | None = None,
                   progress=..., options: dict | None = None,
                   scheduler: str | None = None) -> dict:
    mod = experiment_module(name)
    results = run_trials(name, trials, seed, quick, workers, progress, options, scheduler)
    summary = mod.summarize(results)
    out = {"experiment": name, "trials": len(results), "seed": seed, "quick": quick,
           "summary": summary, "table": mod.table(summary), "per_trial": results}
    if plots_dir:
        os.makedirs(plots_dir, exist_ok=True)
        out["plots"] = mod.plots(results, summary, plots_dir)
    return out
