"""Where the daemon's processes run and at which priority ([realtime] of the config).

Measured on a 2-core VM (docs/performance.md, "Service", runs A and C): a learning step takes
one core for ~2 ms every 10 ms, and robot-side threads woken on that core waited for the step
to end, even with the learner at SCHED_IDLE (round-trip p99 2.4 ms around each step); with
the learner alone on its own CPU the round trip no longer depends on the step (0.6-0.9 ms).
So by default the learning process gets
the last CPU and the serving process the others; a controller beside the daemon belongs on
the serving CPUs too (`taskset`, or `pin_to` as `rtlearn demo` and `rtlearn bench serve` do).
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager

log = logging.getLogger("rtlearn.service")

NICE = 10  # the learning process's niceness where SCHED_IDLE is not available


def available_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return []


def cpu_plan(realtime: dict) -> tuple[set[int] | None, set[int] | None]:
    """(serving CPUs, learning CPUs) from the config; None: do not pin. Entries index the CPUs
    this process may use (negative from the end), so [-1] is the last of them. Nothing is
    pinned on a single CPU or when the lists leave a side without a CPU."""
    cpus = available_cpus()
    if len(cpus) < 2 or not realtime["learning_cpus"]:
        return None, None
    try:
        learning = {cpus[i] for i in realtime["learning_cpus"]}
        serving = ({cpus[i] for i in realtime["serving_cpus"]} if realtime["serving_cpus"]
                   else set(cpus) - learning)
    except IndexError:
        raise ValueError(f"realtime: a CPU index is outside the {len(cpus)} CPUs this process "
                         f"may use ({cpus})") from None
    if not serving:
        return None, None
    return serving, learning


def pin_to(cpus: set[int] | None) -> None:
    """This process (threads started later inherit it) onto `cpus`; None: leave it."""
    if cpus:
        os.sched_setaffinity(0, cpus)


@contextmanager
def beside_daemon(realtime: dict):
    """Run the body on the daemon's serving CPUs, as a controller beside it should (start the
    daemon first: it plans its CPUs from the affinity it inherits)."""
    before = available_cpus()
    serving, _ = cpu_plan(realtime)
    pin_to(serving)
    try:
        yield serving
    finally:
        pin_to(set(before))


def fifo(priority: int) -> bool:
    """SCHED_FIFO at `priority` for the calling thread (0: leave it). Refused without
    CAP_SYS_NICE / RLIMIT_RTPRIO: a warning, and the thread keeps normal scheduling."""
    if priority <= 0:
        return False
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        return True
    except (AttributeError, OSError) as e:
        log.warning("realtime.priority %d: SCHED_FIFO refused (%s); normal scheduling",
                    priority, e)
        return False


def lowest_priority() -> None:
    """The learning process when it shares CPUs with the serving process: SCHED_IDLE runs it
    only when no other task wants the core and lets any wakeup preempt it; elsewhere a
    niceness."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        try:
            os.nice(NICE)
        except OSError:
            pass
