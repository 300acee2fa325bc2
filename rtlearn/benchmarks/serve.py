"""`rtlearn bench serve`: the daemon's latency and throughput over its real sockets, against a
bare pyzmq echo over the same transport measured in the same run (loopback on these VMs is
itself slow and jittery, so only the comparison means something).

Two servers, each in its own subprocess, driven by the same client loop:
  1. echo:   a process with the daemon's socket layout that sends every state frame back;
  2. daemon: `rtlearn serve`, learning on;
paced at `rate` Hz for `seconds` each, taking turns in blocks of `block` seconds so that both
see the same moments of the VM's load; then
  3. replay: the same daemon fed as fast as it takes packets (`replay_samples` of them);
     samples/s counts samples *learned*, from the first send to the last learning step.

Run as a module (`python -m rtlearn.benchmarks.serve echo STATE PRED`) it is the echo server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import numpy as np
import zmq

from rtlearn.protocol.schema import encode_hello, encode_state
from rtlearn.service.config import load_config
from rtlearn.service.launch import DaemonProcess, endpoints
from rtlearn.service.learning import Arena, ServingModel
from rtlearn.service.realtime import beside_daemon
from rtlearn.service.synthetic import synthetic_state

HWM = 1_000_000


def echo_server(state_ep: str, pred_ep: str) -> None:
    """The bare-pyzmq reference: same sockets and hello as the daemon, no work."""
    ctx = zmq.Context()
    sub, pub = ctx.socket(zmq.SUB), ctx.socket(zmq.XPUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    pub.setsockopt(zmq.XPUB_VERBOSE, 1)
    for s in (sub, pub):
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, HWM)
        s.setsockopt(zmq.RCVHWM, HWM)
    sub.bind(state_ep)
    pub.bind(pred_ep)
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    poller.register(pub, zmq.POLLIN)
    while True:
        for s, _ in poller.poll(100):
            if s is pub:
                if pub.recv()[:1] == b"\x01":
                    pub.send(encode_hello(7, "echo"))
            else:
                pub.send(sub.recv())


class Driver:
    """The robot side: an XPUB (handshaken like RobotClient) and a SUB, timestamping by seq."""

    def __init__(self, state_ep: str, pred_ep: str, n: int):
        self.ctx = zmq.Context()
        self.pub, self.sub = self.ctx.socket(zmq.XPUB), self.ctx.socket(zmq.SUB)
        for s in (self.pub, self.sub):
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SNDHWM, HWM)
            s.setsockopt(zmq.RCVHWM, HWM)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.pub.connect(state_ep)
        self.sub.connect(pred_ep)
        if not self.pub.poll(30_000) or not self.sub.poll(30_000):
            raise RuntimeError("benchmark server did not answer the handshake")
        self.pub.recv()
        self.sub.recv()  # hello
        self.sent = np.full(n, np.nan)
        self.back = np.full(n, np.nan)
        self.replies = 0

    def _drain(self) -> None:
        while True:
            try:
                frame = self.sub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            now = time.perf_counter()
            msg = msgpack.unpackb(frame)
            if msg.get("kind") == "hello":
                continue
            seq = msg["seq"]
            if 0 <= seq < self.back.shape[0] and np.isnan(self.back[seq]):
                self.back[seq] = now
                self.replies += 1

    def flood(self, frames: list[bytes], window: int) -> None:
        """Send as fast as replies come back, at most `window` unanswered."""
        k = 0
        while k < len(frames):
            while k < len(frames) and k - self.replies < window:
                self.pub.send(frames[k])
                self.sent[k] = time.perf_counter()
                k += 1
            if not self.sub.poll(30_000):
                raise RuntimeError(f"no reply for 30 s after {self.replies} of {len(frames)}")
            self._drain()
        self.wait(len(frames), 30.0)

    def wait(self, n: int, timeout: float) -> None:
        deadline = time.perf_counter() + timeout
        while self.replies < n and time.perf_counter() < deadline:
            if self.sub.poll(100):
                self._drain()

    def close(self) -> None:
        self.pub.close(linger=0)
        self.sub.close(linger=0)
        self.ctx.term()


def interleaved(drivers: list[Driver], frames: list[list[bytes]], rate: float, block: int,
                progress=None) -> None:
    """Send at `rate` on one absolute schedule, the drivers taking turns in blocks of `block`
    packets (echo, daemon, echo, ...), so that both see the same moments of the VM's load;
    wait on the reply sockets between sends so replies are stamped when they arrive."""
    poller = zmq.Poller()
    for d in drivers:
        poller.register(d.sub, zmq.POLLIN)
    by_sub = {d.sub: d for d in drivers}
    sent = [0] * len(drivers)
    total = sum(len(f) for f in frames)
    start = time.perf_counter()
    k = 0
    while k < total:
        now = time.perf_counter()
        due = start + k / rate
        if now >= due:
            i = (k // block) % len(drivers)
            if sent[i] == len(frames[i]):  # this one is done: the others go on alone
                i = next(j for j in range(len(drivers)) if sent[j] < len(frames[j]))
            d = drivers[i]
            d.pub.send(frames[i][sent[i]])
            d.sent[sent[i]] = time.perf_counter()
            sent[i] += 1
            k += 1
            if progress is not None and k % 1000 == 0:
                progress(k)
            continue
        # poll timeouts are whole ms: wait 1 ms (woken at once by a reply, so stamps stay
        # exact) unless the send is due within 0.2 ms; never spin the whole millisecond,
        # the daemon needs the CPU
        for sock, _ in poller.poll(1 if due - now > 2e-4 else 0):
            by_sub[sock]._drain()
    for i, d in enumerate(drivers):
        d.wait(len(frames[i]), 5.0)


def _frames(n: int, stream: int) -> list[bytes]:
    """n synthetic state packets; a new `stream` id per run makes seq 0 welcome again."""
    return [encode_state(synthetic_state(k), stream=stream) for k in range(n)]


def _rtt(d: Driver) -> dict:
    ok = ~np.isnan(d.back)
    rtt = (d.back[ok] - d.sent[ok]) * 1e3
    return {"packets": int(d.sent.shape[0]), "replies": int(ok.sum()),
            "missing": int((~ok).sum()), "p50": float(np.percentile(rtt, 50)),
            "p99": float(np.percentile(rtt, 99)), "max": float(rtt.max())}


def run_packet_bench(config: dict | None = None, packets: int = 3000,
                     rate: float = 1000.0) -> dict:
    """The per-packet work of the daemon alone (no sockets, no learning, no other process):
    the cost of each piece hot (timeit means, µs), then the whole compiled path (parse, fill,
    predict, encode) per packet, percentiles in µs, three ways: back to back (hot), paced at
    `rate` sleeping between packets (what a daemon that sleeps in poll does), and paced
    spinning (realtime.spin)."""
    import timeit

    from rtlearn.kernels import packet as K
    from rtlearn.learner.api import kind_of
    from rtlearn.protocol.schema import encode_prediction, read_state
    from rtlearn.service.daemon import make_learner

    cfg = load_config(None, config)
    trained, predictor = make_learner(cfg, 7), make_learner(cfg, 7)
    batch = int(cfg["learner"]["batch_size"])
    kind_of(trained).warm_up(trained, batch)
    arena = Arena(trained, 2, batch)
    arena.publish(trained, 0)
    model = ServingModel(arena, predictor, "bench")
    model.try_refresh()
    frame = encode_state(synthetic_state(1), stream=1)
    vec, head = np.zeros((4, 7)), np.zeros(K.HEAD_LEN, np.int64)
    ctx, out = np.frombuffer(b"bench", np.uint8), np.zeros(1024, np.uint8)
    x, tau = np.zeros(21), np.ones(7)

    def whole():
        K.parse_state(frame, 7, vec, head, ctx)
        x[:7], x[7:14], x[14:] = vec[0], vec[1], vec[3]
        pred = model.predict(x)
        return out[:K.encode_prediction_into(out, 1, 0.5, pred, ctx, True)]

    whole()
    cost = lambda f: timeit.timeit(f, number=packets) / packets * 1e6  # noqa: E731
    lc = cfg["learner"]
    learner = (f"MLP {list(lc['hidden'])}" if lc["kind"] == "mlp" else
               f"I-SSGPR D = {trained.config.n_features}")
    result = {"learner": learner, "hidden": list(lc["hidden"]),
              "cpus": sorted(os.sched_getaffinity(0)),
              "parse_state_us": cost(lambda: K.parse_state(frame, 7, vec, head, ctx)),
              "read_state_us": cost(lambda: read_state(frame, 7)),
              "predict_us": cost(lambda: model.predict(x)),
              "encode_prediction_into_us":
                  cost(lambda: K.encode_prediction_into(out, 1, 0.5, tau, ctx, True)),
              "encode_prediction_us": cost(lambda: encode_prediction(1, 0.5, tau, "bench", True))}
    result.update(_telemetry_costs(cfg, trained, arena, cost))
    period = 1.0 / rate
    for mode in ("hot", "sleep", "spin"):
        t = np.zeros(packets)
        for k in range(packets):
            if mode == "sleep":
                time.sleep(period)
            elif mode == "spin":
                until = time.perf_counter() + period
                while time.perf_counter() < until:
                    pass
            t0 = time.perf_counter()
            whole()
            t[k] = time.perf_counter() - t0
        p50, p90, p99 = np.percentile(t * 1e6, [50, 90, 99])
        result[f"path_{mode}_us"] = {"p50": p50, "p90": p90, "p99": p99, "max": t.max() * 1e6}
    return result


def _telemetry_costs(cfg, learner, arena: Arena, cost) -> dict:
    """What the telemetry adds (rtlearn.service.telemetry): the serving process's stores
    beside each sample while recording, and the learning process's work per batch and per
    message (built and encoded; full latency ring, 7 joints)."""
    from types import SimpleNamespace

    from rtlearn.protocol.telemetry import encode_telemetry
    from rtlearn.service.autocontext import AutoContexts
    from rtlearn.service.contexts import ContextBank
    from rtlearn.service.stats import Stats
    from rtlearn.service.telemetry import Telemetry

    c = learner.config
    arena.latency[:] = np.random.default_rng(0).uniform(5e-5, 2e-4, arena.latency.shape[0])
    tel = Telemetry({**cfg["telemetry"], "enabled": False}, "bench",
                    [f"joint_{j}" for j in range(c.n_joints)], time.time())
    tel.open(arena)
    tel.serving_counters = {"latency_count": arena.latency.shape[0]}
    stats = Stats(c.n_joints)
    for _ in range(200):
        stats.step_time.add(1e-3)
    proc = SimpleNamespace(learner=learner, stats=stats, screen=SimpleNamespace(counts={}),
                           auto=AutoContexts(cfg["contexts"], c.n_joints, c.n_inputs),
                           bank=ContextBank("bench", 2))

    def stores():
        meta, ids = arena.T[1, 3], arena.S[1, 3]
        meta[0], meta[1], ids[0], ids[1] = 0.5, 123.4, 99, True

    frame = encode_telemetry(tel.message(proc))
    return {"recording_stores_us": cost(stores),
            "telemetry_batch_us": cost(lambda: tel.batch(0, c.batch_size, "bench")),
            "telemetry_message_us": cost(lambda: encode_telemetry(tel.message(proc))),
            "telemetry_frame_bytes": len(frame)}


def packet_summary(r: dict) -> str:
    rows = [f"per-packet work alone, {r['learner']}, CPUs {r['cpus']} (µs)",
            f"  decode   compiled {r['parse_state_us']:6.2f}   Python read_state {r['read_state_us']:6.2f}",
            f"  predict  {r['predict_us']:6.2f}",
            f"  encode   compiled {r['encode_prediction_into_us']:6.2f}   Python {r['encode_prediction_us']:6.2f}",
            f"  recording stores (only with [telemetry] mcap / foxglove_port) "
            f"{r['recording_stores_us']:6.2f}",
            f"  telemetry, learning process: per batch {r['telemetry_batch_us']:6.1f}, per "
            f"message {r['telemetry_message_us']:6.1f} ({r['telemetry_frame_bytes']} B)"]
    for mode, text in (("hot", "back to back"), ("sleep", "1 kHz, sleeping between"),
                       ("spin", "1 kHz, spinning between")):
        q = r[f"path_{mode}_us"]
        rows.append(f"  whole path, {text:<24} p50 {q['p50']:6.1f}  p90 {q['p90']:6.1f}  "
                    f"p99 {q['p99']:6.1f}  max {q['max']:7.1f}")
    return "\n".join(rows)


def run_serve_bench(seconds: float = 60.0, rate: float = 1000.0, transport: str = "tcp",
                    replay_samples: int = 20_000, block: float = 1.0,
                    config: dict | None = None,
                    workdir: str | None = None, out=...) -> dict:
    """Echo and daemon at `rate` for `seconds` each, interleaved in blocks of `block` s, then
    the flooded daemon; returns a JSON-able dict. Progress goes to `out` (default: the
    current sys.stderr; None: silent). `config`: extra daemon config sections."""
    out = sys.stderr if out is ... else out
    n = int(seconds * rate)
    say = (lambda text: print(text, file=out, flush=True)) if out else (lambda text: None)
    tmp = tempfile.TemporaryDirectory(prefix="rtlearn-bench-") if workdir is None else None
    work = Path(workdir or tmp.name)
    result = {"seconds": seconds, "rate_hz": rate, "transport": transport, "block_s": block,
              "replay_samples": replay_samples}
    # the synthetic stream is not the iiwa's (joint 2 faster than twice its velocity limit):
    # every sample is learned, as the benchmark counts them
    config = {"snapshots": {"interval": 0.0}, **(config or {})}
    config["guard"] = {"sample_margin": float("inf"), **config.get("guard", {})}
    result["config"] = config
    try:
        eps = endpoints(transport, work / "echo")
        (work / "echo").mkdir(parents=True, exist_ok=True)
        with DaemonProcess(work / "daemon", config, transport=transport) as daemon:
            # the client and the echo on the daemon's serving CPUs, as a controller should be
            with beside_daemon(load_config(None, config)["realtime"]) as cpus:
                result["client_cpus"] = sorted(cpus or [])
                echo = subprocess.Popen([sys.executable, "-m", "rtlearn.benchmarks.serve", "echo",
                                         eps["state"], eps["prediction"]])
                try:
                    _measure(daemon, eps, n, rate, block, replay_samples, result, say,
                             load_config(None, config)["learner"]["batch_size"])
                finally:
                    echo.kill()
                    echo.wait()
        ratio = result["daemon_rtt_ms"]["p99"] / result["echo_rtt_ms"]["p99"]
        result["rtt_p99_ratio_daemon_over_echo"] = ratio
        say(summary(result))
        return result
    finally:
        if tmp is not None:
            tmp.cleanup()


def _measure(daemon, eps, n, rate, block, replay_samples, result, say, batch: int) -> None:
    say(f"echo and daemon: {result['rate_hz']:g} Hz over {result['transport']}, "
        f"{result['seconds']:g} s each, taking turns every {block:g} s (the same client loop; "
        "learning on) ...")
    e = Driver(eps["state"], eps["prediction"], n)
    d = Driver(daemon.endpoints["state"], daemon.endpoints["prediction"], n)
    interleaved([e, d], [_frames(n, stream=1), _frames(n, stream=1)], rate,
                max(1, int(block * rate)))
    result["echo_rtt_ms"], result["daemon_rtt_ms"] = _rtt(e), _rtt(d)
    # the packet that completes a batch (position batch-1) starts a learning step: does the
    # step slow down the round trips around it?
    rtt = (d.back - d.sent) * 1e3
    result["daemon_rtt_p99_by_batch_position_ms"] = [
        float(np.nanpercentile(rtt[k::batch], 99)) for k in range(batch)]
    e.close()
    d.close()
    st = _settled(daemon, n - n % batch)
    result["daemon"] = {"inside_ms": st["latency_ms"], "lost": st["packets"]["lost"],
                        "rejected": st["packets"]["rejected_total"],
                        "deadline_misses": st["learning"]["deadline_misses"],
                        "backpressure_waits": st["learning"]["backpressure_waits"],
                        "step_ms": st["learning"]["step_ms"],
                        "samples_learned": st["learning"]["samples"],
                        "learner": st["learner"], "realtime": st["realtime"]}

    say(f"replay: {replay_samples} samples as fast as the daemon takes them ...")
    before = st["learning"]["samples"]
    flood = _frames(replay_samples, stream=2)
    d = Driver(daemon.endpoints["state"], daemon.endpoints["prediction"], replay_samples)
    t0 = time.perf_counter()
    d.flood(flood, window=2000)
    st = _settled(daemon, before + replay_samples - replay_samples % batch)
    elapsed = time.perf_counter() - t0
    learned = st["learning"]["samples"] - before
    result["replay"] = {"samples_learned": learned, "seconds": elapsed,
                        "samples_per_s": learned / elapsed,
                        "predictions": d.replies, "lost": st["packets"]["lost"]}
    d.close()


def _settled(daemon: DaemonProcess, samples: int, timeout: float = 120.0) -> dict:
    """Status once `samples` are learned and the queue is empty (bounded by timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        st = daemon.status()
        done = st["learning"]["samples"] >= samples and st["learner"]["queued_batches"] == 0
        if done or time.monotonic() > deadline:
            return st
        time.sleep(0.02)


def summary(r: dict) -> str:
    e, d, i = r["echo_rtt_ms"], r["daemon_rtt_ms"], r["daemon"]["inside_ms"]
    rows = [
        f"round trip, bare pyzmq echo : p50 {e['p50']:.3f}  p99 {e['p99']:.3f}  max {e['max']:.3f} ms",
        f"round trip, rtlearn daemon  : p50 {d['p50']:.3f}  p99 {d['p99']:.3f}  max {d['max']:.3f} ms"
        f"  (p99 ratio {r['rtt_p99_ratio_daemon_over_echo']:.2f}x)",
        f"inside the daemon           : p50 {i['p50']:.3f}  p99 {i['p99']:.3f}  max {i['max']:.3f} ms",
        f"learning step               : p50 {r['daemon']['step_ms']['p50']:.3f}  "
        f"p99 {r['daemon']['step_ms']['p99']:.3f} ms; deadline misses "
        f"{r['daemon']['deadline_misses']}; lost {r['daemon']['lost']}, missing replies "
        f"{d['missing']}",
        "daemon round trip p99 by position in the batch (ms): "
        + " ".join(f"{v:.2f}" for v in r["daemon_rtt_p99_by_batch_position_ms"]),
        f"replay at maximum speed     : {r['replay']['samples_per_s']:.0f} samples/s learned "
        f"({r['replay']['samples_learned']} in {r['replay']['seconds']:.2f} s)",
    ]
    return "\n".join(rows)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "echo":
        echo_server(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: python -m rtlearn.benchmarks.serve echo STATE_ENDPOINT PREDICTION_ENDPOINT")
