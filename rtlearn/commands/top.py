"""`rtlearn top`: a live view of a running daemon, built on its telemetry stream
(docs/protocol.md, "Telemetry socket"). On a terminal it redraws in place (rich's Live) and
quits on `q` or Ctrl-C; piped, it prints one plain line per --interval seconds."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections import deque

HELP = "live view of a running daemon: error, rates, contexts, latency, counters"
SPARK = "▁▂▃▄▅▆▇█"
HISTORY = 60  # updates behind each sparkline


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rtlearn.protocol.telemetry import DEFAULT_TELEMETRY_ENDPOINT

    where = parser.add_mutually_exclusive_group()
    where.add_argument("--endpoint", help="the daemon's telemetry endpoint (default "
                       f"{DEFAULT_TELEMETRY_ENDPOINT})")
    where.add_argument("--config", metavar="FILE",
                       help="take the endpoint from the daemon's config ([telemetry] endpoint)")
    parser.add_argument("--interval", type=float, default=1.0,
                        help="seconds between two lines when the output is not a terminal")
    parser.add_argument("--count", type=int, default=None, help="stop after N updates")
    parser.add_argument("--wait", type=float, default=10.0,
                        help="give up if no telemetry arrives within S seconds (0: wait forever)")


def spark(values) -> str:
    """Block characters scaled between the smallest and largest value; blank for unknowns."""
    known = [v for v in values if v is not None]
    if not known:
        return ""
    lo, hi = min(known), max(known)
    span = hi - lo or 1.0
    return "".join(" " if v is None else SPARK[min(7, int((v - lo) / span * 8))]
                   for v in values)


def _f(v, fmt: str = ".3g") -> str:
    return "-" if v is None else format(v, fmt)


class View:
    """The state of the view: the last message and the history behind the sparklines."""

    def __init__(self):
        self.msg: dict | None = None
        self.errors: list[deque] = []

    def update(self, msg: dict) -> None:
        if len(self.errors) != msg["n_joints"]:
            self.errors = [deque(maxlen=HISTORY) for _ in range(msg["n_joints"])]
        err = msg["error"]
        for j, hist in enumerate(self.errors):
            # the window's own error when it had samples, else the running one
            hist.append(err["rms"][j] if err["rms"][j] is not None else err["recent_rms"][j])
        self.msg = msg

    def line(self) -> str:
        """One plain line (piped output)."""
        m = self.msg
        c, lat = m["counters"], m["latency_ms"]
        rej = ",".join(f"{k}:{v}" for k, v in sorted(c["rejected"].items())) or "0"
        err = " ".join(_f(e, ".3f") for e in (m["error"]["rms"] if m["window"]["samples"]
                                               else m["error"]["recent_rms"]))
        rates = " ".join(_f(_mean(col)) for col in zip(*m["lr"]["weights"]))
        return (f"{time.strftime('%H:%M:%S', time.localtime(m['time']))} "
                f"ctx={m['context']} recv={c['received']} pred={c['predicted']} rej={rej} "
                f"lost={c['lost']} miss={c['deadline_misses']} rollback={c['rollbacks']} "
                f"excl={c['excluded_total']} steps={c['steps']} err_rms=[{err}] "
                f"lr_w=[{rates}] lat_ms p50={_f(lat['p50'])} p99={_f(lat['p99'])} "
                f"max={_f(lat['max'])}")

    def render(self):
        from rich import box
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        m = self.msg
        c = m["counters"]
        head = Text.assemble(("rtlearn top  ", "bold"), f"{m['robot']} · context ",
                             (m["context"], "bold cyan"),
                             f" · up {m['uptime_s']:.0f} s · {c['steps']} steps · "
                             f"{c['samples']} samples · message {m['seq']}  (q: quit)")
        joints = Table(title=Text("prediction error per joint (N·m, RMS; window of "
                                  f"{m['window']['samples']} samples, recent ≈ 1000)"),
                       title_justify="left", box=box.SIMPLE_HEAD)
        for col in ("joint", "window", "recent", "trend", "τ measured", "τ predicted"):
            joints.add_column(col, justify="left" if col in ("joint", "trend") else "right")
        err, tq = m["error"], m["torque"]
        measured = tq["measured_mean"] if m["window"]["samples"] else tq["measured_last"]
        predicted = tq["predicted_mean"] if m["window"]["samples"] else tq["predicted_last"]
        for j, name in enumerate(m["joints"]):
            _row(joints, name, _f(err["rms"][j], ".4f"), _f(err["recent_rms"][j], ".4f"),
                 spark(self.errors[j]), _f(measured[j], ".2f"), _f(predicted[j], ".2f"))
        lr = m["lr"]
        rates = Table(title=Text(f"learning rate per layer ({lr['optimizer']}; mean over "
                                 "joints [min–max])"), title_justify="left",
                      box=box.SIMPLE_HEAD)
        for col in ("layer", "weights", "biases"):
            rates.add_column(col, justify="right")
        for layer, (w, b) in enumerate(zip(zip(*lr["weights"]), zip(*lr["biases"]))):
            name = "out" if layer == lr["layers"] - 1 else str(layer + 1)
            _row(rates, name, _span(w), _span(b))
        side = Table.grid(padding=(0, 2))
        side.add_row(rates, self._counters())
        return Group(head, joints, side, self._contexts())

    def _contexts(self):
        from rich import box
        from rich.table import Table
        from rich.text import Text

        ctx = self.msg["contexts"]
        auto = ctx["auto"]
        t = Table(title=Text(f"contexts: {', '.join(ctx['known'])}; {ctx['switches']} "
                             "switches"), title_justify="left",
                  caption=Text(f"automatic contexts {'acting' if ctx['auto_active'] else 'idle'}"
                               f": {auto['alarms']} alarms, {auto['restored']} restored, "
                               f"{auto['created']} created, {auto['dismissed']} dismissed"),
                  caption_justify="left", box=box.SIMPLE_HEAD)
        for col in ("time", "from", "to", "how"):
            t.add_column(col)
        events = [(s["time"], s["from"], s["to"], f"{s['outcome']} ({s['by']})")
                  for s in ctx["recent"]]
        events += [(d["time"], d["from"], d["context"], f"detected: {d['decision']} after "
                                                        f"{d['delay_samples']} samples")
                   for d in ctx["detections"]]
        for when, frm, to, how in sorted(events)[-4:]:
            _row(t, time.strftime("%H:%M:%S", time.localtime(when)), frm, to, how)
        return t

    def _counters(self):
        from rich import box
        from rich.table import Table

        m = self.msg
        c, lat, step = m["counters"], m["latency_ms"], m["step_ms"]
        t = Table(title="packets and latency", title_justify="left", show_header=False,
                  box=box.SIMPLE)
        t.add_column("what")
        t.add_column("value")
        rej = ", ".join(f"{k} {v}" for k, v in sorted(c["rejected"].items())) or "none"
        excl = ", ".join(f"{k} {v}" for k, v in sorted(c["excluded"].items()) if v) or "none"
        _row(t, "received / predicted",
             f"{c['received']} / {c['predicted']} ({c['invalid_predictions']} invalid)")
        _row(t, "rejected", f"{c['rejected_total']}: {rej}")
        _row(t, "lost / restarts / resyncs",
             f"{c['lost']} / {c['stream_restarts']} / {c['resyncs']}")
        _row(t, "deadline misses / back-pressure",
             f"{c['deadline_misses']} / {c['backpressure_waits']}")
        _row(t, "rollbacks / not learned", f"{c['rollbacks']} / {c['excluded_total']} ({excl})")
        _row(t, f"latency ms (last {lat['count']})",
             f"p50 {_f(lat['p50'])}  p90 {_f(lat['p90'])}  p99 {_f(lat['p99'])}  "
             f"max {_f(lat['max'])}")
        _row(t, f"learning step ms (last {step['count']})",
             f"p50 {_f(step['p50'])}  p99 {_f(step['p99'])}")
        return t


def _row(table, *cells: str) -> None:
    """Cells as plain text: a context or reason named like rich markup stays as it is."""
    from rich.text import Text

    table.add_row(*(Text(c) for c in cells))


def _mean(values) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def _span(values) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "-"
    return f"{_mean(known):.3g} [{min(known):.3g}–{max(known):.3g}]"


def watch(sock, console, live: bool, keys=None, interval: float = 1.0,
          count: int | None = None, wait: float = 10.0) -> int:
    """Show the messages of a connected telemetry SUB socket on a rich Console: redrawn in
    place (live) or one plain line per `interval` s. keys: a file whose "q" quits (a
    terminal in cbreak mode). Returns the exit code."""
    import zmq

    from rtlearn.protocol.schema import ProtocolError
    from rtlearn.protocol.telemetry import decode_telemetry

    view, shown, last_line = View(), 0, -float("inf")
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    if keys is not None:
        poller.register(keys.fileno(), zmq.POLLIN)
    deadline = time.monotonic() + wait if wait > 0 else float("inf")
    display = None
    try:
        while count is None or shown < count:
            ready = dict(poller.poll(100))
            if keys is not None and keys.fileno() in ready \
                    and os.read(keys.fileno(), 1) in (b"q", b"Q", b""):  # b"": closed
                break
            if sock not in ready:
                if view.msg is None and time.monotonic() > deadline:
                    print(f"rtlearn top: no telemetry within {wait:g} s: is the daemon running, "
                          "with [telemetry] enabled on this endpoint?", file=sys.stderr)
                    return 2
                continue
            while sock.poll(0):  # only the newest matters
                try:
                    msg = decode_telemetry(sock.recv())
                except ProtocolError as e:
                    print(f"rtlearn top: unreadable telemetry: {e}", file=sys.stderr)
                    return 2
                view.update(msg)
            if live:
                if display is None:
                    from rich.live import Live

                    display = Live(view.render(), console=console, auto_refresh=False,
                                   transient=False)
                    display.start()
                display.update(view.render(), refresh=True)
                shown += 1
            elif time.monotonic() - last_line >= interval:
                console.print(view.line(), highlight=False, soft_wrap=True)
                last_line = time.monotonic()
                shown += 1
    except KeyboardInterrupt:
        pass
    finally:
        if display is not None:
            display.stop()
    return 0


def run(args) -> int:
    import zmq
    from rich.console import Console

    from rtlearn.protocol.client import subscriber
    from rtlearn.protocol.telemetry import DEFAULT_TELEMETRY_ENDPOINT

    endpoint = args.endpoint or DEFAULT_TELEMETRY_ENDPOINT
    if args.config:
        from rtlearn.service.config import ConfigError, load_config

        try:
            endpoint = load_config(args.config)["telemetry"]["endpoint"]
        except ConfigError as e:
            print(f"rtlearn top: {e}", file=sys.stderr)
            return 2
    ctx = zmq.Context()
    try:
        sock = subscriber(ctx, endpoint, hwm=100)
    except zmq.ZMQError as e:
        print(f"rtlearn top: cannot connect to {endpoint!r}: {e}", file=sys.stderr)
        ctx.term()
        return 2
    console = Console()
    live = console.is_terminal
    if live:
        # a viewer on a terminal quits on Ctrl-C even when started from a shell that ignores
        # SIGINT for it (a background job, nohup): Python then installs no handler of its own
        signal.signal(signal.SIGINT, signal.default_int_handler)
    keys, saved = None, None
    if live and sys.stdin.isatty():
        import termios
        import tty

        saved = termios.tcgetattr(sys.stdin)
        tty.setcbreak(sys.stdin)  # keys without Enter; Ctrl-C still interrupts
        keys = sys.stdin
    try:
        return watch(sock, console, live, keys, args.interval, args.count, args.wait)
    finally:
        if saved is not None:
            import termios

            termios.tcsetattr(sys.stdin, termios.TCSADRAIN, saved)
        sock.close(linger=0)
        ctx.term()
