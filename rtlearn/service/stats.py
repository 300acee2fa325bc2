"""Running statistics of the daemon and rate-limited logging.

Each of the daemon's two processes keeps a `Stats`: the serving process its packet counters,
latencies, deadline misses and back-pressure; the learning process its steps, step times,
losses, contexts and snapshots (`Daemon.status` merges them). Counters are plain ints
(atomic under the GIL); latencies go into fixed rings so the hot path never allocates.
"""

from __future__ import annotations

import errno
import logging
import time
from collections import Counter

import numpy as np

from rtlearn.kernels.stats import percentiles

RING = 1 << 16  # latencies kept for the percentiles: the last 65 s at 1 kHz
_P50_P99 = np.array([50.0, 99.0])


class RateLimitedLog:
    """At most one line per `interval` seconds per kind; says how many were held back."""

    def __init__(self, logger: logging.Logger, interval: float):
        self.logger, self.interval = logger, interval
        self._last: dict[str, float] = {}
        self._held = Counter()

    def __call__(self, kind: str, message: str, level: int = logging.WARNING) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -1e18) < self.interval:
            self._held[kind] += 1
            return
        held = self._held.pop(kind, 0)
        self._last[kind] = now
        self.logger.log(level, "%s%s", message, f" ({held} similar held back)" if held else "")


class Ring:
    """The last RING values (seconds) and the maximum ever seen; `values`: a buffer to keep
    them in (the daemon's latencies live in shared memory, for the telemetry)."""

    def __init__(self, size: int = RING, values: np.ndarray | None = None):
        self.values = np.zeros(size) if values is None else values
        self.count = 0
        self.max = 0.0

    def add(self, value: float) -> None:
        self.values[self.count % self.values.shape[0]] = value
        self.count += 1
        if value > self.max:
            self.max = value

    def summary_ms(self) -> dict:
        n = min(self.count, self.values.shape[0])
        if n == 0:
            return {"count": 0, "p50": None, "p99": None, "max": None}
        out = np.zeros(2)
        percentiles(self.values, n, _P50_P99, out)
        p50, p99 = out
        return {"count": self.count, "p50": p50 * 1e3, "p99": p99 * 1e3, "max": self.max * 1e3}

    def clear(self) -> None:
        self.count, self.max = 0, 0.0


class Stats:
    def __init__(self, n_joints: int):
        self.started = time.time()
        self.received = 0          # frames read from the state socket
        self.predicted = 0         # predictions published (one per accepted state)
        self.invalid_predictions = 0  # published with valid=false: non-finite or over the limits
        self.over_limit_predictions = 0  # of those, finite but beyond the torque limits
        self.rejected = Counter()  # reason -> count
        self.lost = 0              # sequence gaps
        self.stream_restarts = 0
        self.resyncs = 0           # same stream, far jump or run below the high-water seq
        self.context_switches = 0
        self.contexts_created = 0
        self.contexts_restored = 0
        self.contexts_evicted = 0    # least recently used idle ones, for new ones in a full bank
        self.deadline_misses = 0   # a batch was due while the previous step still ran
        self.backpressure_waits = 0  # the batch queue was full: reading paused (nothing lost)
        self.steps = 0
        self.samples_learned = 0
        self.rollbacks = 0
        self.snapshots_written = 0
        self.snapshot_errors = 0
        self.last_snapshot: str | None = None
        self.last_snapshot_time: float | None = None   # wall clock of the last one written
        self.snapshot_last_error: str | None = None
        self.snapshot_last_error_time: float | None = None
        self._snapshot_error_kinds: set[str] = set()
        self.latency = Ring()      # packet received -> prediction sent, inside the daemon
        self.step_time = Ring(4096)
        self.preq_sum = np.zeros(n_joints)   # sum of squared prediction errors, N*m^2
        self.preq_count = 0
        self.preq_recent = np.zeros(n_joints)  # exponential average over ~1000 samples
        self.learn_loss = np.zeros(n_joints)   # learner's own (normalised) loss, same averaging

    def add_prequential(self, sq_err_sum: np.ndarray, n: int, learn_loss: np.ndarray) -> None:
        """One batch of n samples: per-joint sums of squared prediction errors."""
        a = 1.0 - (1.0 - 1e-3) ** n
        if self.preq_count == 0:
            self.preq_recent[:] = sq_err_sum / n
            self.learn_loss[:] = learn_loss
        else:
            self.preq_recent += a * (sq_err_sum / n - self.preq_recent)
            self.learn_loss += a * (learn_loss - self.learn_loss)
        self.preq_sum += sq_err_sum
        self.preq_count += n

    def snapshot_written(self, path) -> None:
        self.snapshots_written += 1
        self.last_snapshot, self.last_snapshot_time = str(path), time.time()

    def snapshot_failed(self, error: BaseException) -> bool:
        """Count a failed snapshot write; True the first time its kind (errno name, else
        exception type) is seen, so that each kind is logged once."""
        self.snapshot_errors += 1
        self.snapshot_last_error, self.snapshot_last_error_time = str(error), time.time()
        code = getattr(error, "errno", None)
        kind = errno.errorcode.get(code, type(error).__name__) if code else type(error).__name__
        first = kind not in self._snapshot_error_kinds
        self._snapshot_error_kinds.add(kind)
        return first

    def reset_losses(self) -> None:
        self.preq_sum[:] = 0.0
        self.preq_recent[:] = 0.0
        self.learn_loss[:] = 0.0
        self.preq_count = 0

    def as_dict(self) -> dict:
        n = max(self.preq_count, 1)
        return {
            "uptime_s": time.time() - self.started,
            "packets": {"received": self.received, "predicted": self.predicted,
                        "invalid_predictions": self.invalid_predictions,
                        "over_limit_predictions": self.over_limit_predictions,
                        "rejected": dict(self.rejected), "rejected_total": sum(self.rejected.values()),
                        "lost": self.lost, "stream_restarts": self.stream_restarts,
                        "resyncs": self.resyncs},
            "latency_ms": self.latency.summary_ms(),
            "learning": {"steps": self.steps, "samples": self.samples_learned,
                         "deadline_misses": self.deadline_misses,
                         "backpressure_waits": self.backpressure_waits,
                         "step_ms": self.step_time.summary_ms(), "rollbacks": self.rollbacks},
            "prequential": {"samples": self.preq_count,
                            "mse_per_joint": (self.preq_sum / n).tolist(),
                            "recent_mse_per_joint": self.preq_recent.tolist(),
                            "recent_learner_loss_per_joint": self.learn_loss.tolist()},
            "contexts": {"switches": self.context_switches, "created": self.contexts_created,
                         "restored": self.contexts_restored, "evicted": self.contexts_evicted},
            "snapshots": {"written": self.snapshots_written, "errors": self.snapshot_errors,
                          "last": self.last_snapshot, "last_time": self.last_snapshot_time,
                          "last_error": self.snapshot_last_error,
                          "last_error_time": self.snapshot_last_error_time},
        }
