"""Ctrl-C and SIGTERM for the commands that run long (demo, experiment, record, sim, replay):
both end the work through the same `finally` blocks (daemons stopped, logs written, temporary
folders removed), with one line instead of a traceback.

Python's default SIGTERM kills the process without running any `finally`; a forked worker
(an experiment's trial process) would print its own KeyboardInterrupt traceback. Here the
main process raises KeyboardInterrupt once and stops its multiprocessing children, and a
forked child that inherited the handler exits silently.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading

INTERRUPTED = 130  # exit code after Ctrl-C or SIGTERM (the shell's 128 + SIGINT)


@contextlib.contextmanager
def interrupts(signals=(signal.SIGINT, signal.SIGTERM)):
    """Within: each of `signals` raises KeyboardInterrupt in the main thread of this process
    after terminating its multiprocessing children, and ends a forked child at once."""
    main = os.getpid()

    def handler(signum, frame):
        if os.getpid() != main:
            os._exit(128 + signum)
        for child in multiprocessing.active_children():
            child.terminate()
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield  # (a command run from a thread: only the main thread may set handlers)
        return
    old = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def interruptible(prog: str, work) -> int:
    """work() -> exit code; INTERRUPTED with one line on stderr after Ctrl-C or SIGTERM."""
    try:
        with interrupts():
            return work()
    except KeyboardInterrupt:
        print(f"rtlearn {prog}: interrupted", file=sys.stderr)
        return INTERRUPTED
