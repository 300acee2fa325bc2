"""Live progress from inside a running trial: how many learning steps and samples it has
learned so far, sent at most once per INTERVAL to whoever runs the trials (the runner, in
this process, a local worker process or a Dask worker). A trial reports through `tick`,
which `evaluate.prequential` calls after every step; without a sink it costs one compare."""

from __future__ import annotations

import time

INTERVAL = 1.0  # s between two reports of one trial

_sink = None  # callable((seed, steps, samples)), set by the runner where trials run
_seed, _steps, _samples, _sent = None, 0, 0, 0.0


def connect(sink) -> None:
    """Send this process's reports to sink((seed, steps, samples)); None: no reports."""
    global _sink
    _sink = sink


def start(seed: int) -> None:
    """A new trial begins in this process."""
    global _seed, _steps, _samples, _sent
    _seed, _steps, _samples, _sent = seed, 0, 0, time.monotonic()


def tick(samples: int) -> None:
    """One learning step of `samples` samples done."""
    global _steps, _samples, _sent
    if _sink is None:
        return
    _steps += 1
    _samples += samples
    now = time.monotonic()
    if now - _sent >= INTERVAL:
        _sent = now
        _sink((_seed, _steps, _samples))


class DaskSink:
    """On a Dask worker: reports become events of TOPIC, which the runner subscribes to."""

    TOPIC = "rtlearn-progress"

    def __call__(self, report) -> None:
        from distributed import get_worker

        get_worker().log_event(self.TOPIC, report)
