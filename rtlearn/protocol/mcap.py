"""Joint states, predictions and telemetry as JSON messages with JSON schemas: written to an
MCAP file (`McapSink`, the official `mcap` writer) or served live to Foxglove (`FoxgloveSink`,
the `foxglove-sdk` WebSocket server). Both take the same calls, so the daemon
(`[telemetry] mcap`, `foxglove_port`) and `rtlearn record --mcap` share them.

JSON + JSON schema rather than Foxglove's well-known (protobuf / flatbuffer) schemas: there is
no well-known schema for a joint state or for our telemetry, JSON needs no generated code,
and both Foxglove and PlotJuggler open JSON channels of an MCAP file without a plugin
(docs/telemetry.md).
"""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

_VECTOR = {"type": "array", "items": {"type": "number"}}
_NULLABLE_VECTOR = {"type": ["array", "null"], "items": {"type": "number"}}

STATE_TOPIC = "/rtlearn/joint_state"
PREDICTION_TOPIC = "/rtlearn/prediction"
TELEMETRY_TOPIC = "/rtlearn/telemetry"

SCHEMAS: dict[str, tuple[str, dict]] = {
    STATE_TOPIC: ("rtlearn.JointState", {
        "type": "object", "title": "rtlearn.JointState",
        "description": "a state packet the daemon accepted (docs/protocol.md)",
        "properties": {"seq": {"type": "integer"}, "t": {"type": "number"},
                       "q": _VECTOR, "qd": _VECTOR, "qdd": _NULLABLE_VECTOR, "tau": _VECTOR,
                       "context": {"type": ["string", "null"]}},
        "required": ["seq", "t", "q", "qd", "tau"]}),
    PREDICTION_TOPIC: ("rtlearn.Prediction", {
        "type": "object", "title": "rtlearn.Prediction",
        "description": "the daemon's predicted torque for the state of the same seq",
        "properties": {"seq": {"type": "integer"}, "t": {"type": "number"}, "tau": _VECTOR,
                       "context": {"type": "string"}, "valid": {"type": "boolean"}},
        "required": ["seq", "t", "tau", "context", "valid"]}),
    TELEMETRY_TOPIC: ("rtlearn.Telemetry", {
        "type": "object", "title": "rtlearn.Telemetry",
        "description": "one telemetry message, schema 1 (docs/protocol.md, Telemetry socket)",
        "properties": {
            "seq": {"type": "integer"}, "time": {"type": "number"},
            "uptime_s": {"type": "number"}, "robot": {"type": "string"},
            "context": {"type": "string"}, "n_joints": {"type": "integer"},
            "joints": {"type": "array", "items": {"type": "string"}},
            "window": {"type": "object", "properties": {"samples": {"type": "integer"},
                                                        "seconds": {"type": "number"}}},
            "error": {"type": "object", "properties": {"rms": _NULLABLE_VECTOR,
                                                       "recent_rms": _NULLABLE_VECTOR}},
            "torque": {"type": "object", "properties": {
                k: _NULLABLE_VECTOR for k in ("measured_mean", "predicted_mean",
                                              "measured_last", "predicted_last")}},
            "lr": {"type": "object", "properties": {
                "optimizer": {"type": "string"}, "layers": {"type": "integer"},
                "weights": {"type": "array", "items": _NULLABLE_VECTOR},
                "biases": {"type": "array", "items": _NULLABLE_VECTOR}}},
            "counters": {"type": "object", "additionalProperties": True},
            "contexts": {"type": "object", "additionalProperties": True},
            "latency_ms": {"type": "object", "additionalProperties": True},
            "step_ms": {"type": "object", "additionalProperties": True}}}),
}


def state_message(seq: int, t: float, q, qd, qdd, tau, context: str | None) -> dict:
    """q, qd, qdd, tau: float64 arrays (qdd may be None)."""
    return {"seq": int(seq), "t": float(t), "q": q.tolist(), "qd": qd.tolist(),
            "qdd": None if qdd is None else qdd.tolist(), "tau": tau.tolist(),
            "context": context}


def prediction_message(seq: int, t: float, tau, context: str, valid: bool) -> dict:
    return {"seq": int(seq), "t": float(t), "tau": tau.tolist() if hasattr(tau, "tolist")
            else list(tau), "context": context, "valid": bool(valid)}


def _json(msg: dict) -> bytes:
    # NaN / inf are not JSON: the readers would refuse the message
    return json.dumps(msg, allow_nan=False, separators=(",", ":")).encode()


def finite_or_none(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


class McapSink:
    """An MCAP file with the three channels (JSON encoding, jsonschema schemas). Calls may
    come from several threads. The file is valid only after `close` (its summary and index
    are written then); a file cut short is recoverable with `mcap recover`."""

    def __init__(self, path: str | Path, metadata: dict[str, str] | None = None):
        from mcap.writer import Writer

        self.path = Path(path)
        self._file = open(self.path, "wb")
        self._writer = Writer(self._file)
        self._writer.start(profile="", library="rtlearn")
        self._channels = {}
        for topic, (name, schema) in SCHEMAS.items():
            sid = self._writer.register_schema(name, "jsonschema", json.dumps(schema).encode())
            self._channels[topic] = self._writer.register_channel(topic, "json", sid)
        if metadata:
            self._writer.add_metadata("rtlearn", {k: str(v) for k, v in metadata.items()})
        self._seq = dict.fromkeys(SCHEMAS, 0)
        self._lock = threading.Lock()
        self.counts = dict.fromkeys(SCHEMAS, 0)

    def write(self, topic: str, msg: dict, log_time_ns: int | None = None) -> None:
        data = _json(msg)
        ns = time.time_ns() if log_time_ns is None else int(log_time_ns)
        with self._lock:
            if self._writer is None:
                return
            self._writer.add_message(self._channels[topic], ns, data, ns, self._seq[topic])
            self._seq[topic] += 1
            self.counts[topic] += 1

    def close(self) -> None:
        with self._lock:
            if self._writer is None:
                return
            self._writer.finish()
            self._file.close()
            self._writer = None


class FoxgloveSink:
    """The same channels served live by a foxglove-sdk WebSocket server (Foxglove: "Open
    connection", ws://HOST:PORT). Messages go out only while a client subscribes to them."""

    def __init__(self, port: int, host: str = "127.0.0.1"):
        try:
            import foxglove
        except ImportError:
            raise RuntimeError("the Foxglove bridge needs the optional extra: "
                               "pip install 'rtlearn[foxglove]'") from None
        self._ctx = foxglove.Context()
        self._channels = {topic: foxglove.Channel(topic, schema=schema, context=self._ctx)
                          for topic, (_, schema) in SCHEMAS.items()}
        self._server = foxglove.start_server(name="rtlearn", host=host, port=port,
                                             context=self._ctx)
        self.port = self._server.port

    def write(self, topic: str, msg: dict, log_time_ns: int | None = None) -> None:
        ch = self._channels[topic]
        if ch.has_sinks():
            ch.log(_json(msg), log_time=time.time_ns() if log_time_ns is None else log_time_ns)

    def close(self) -> None:
        self._server.stop()


class McapRecording:
    """`rtlearn record --mcap`: the states the recorder accepts (`state`), and in a thread of
    its own the predictions and the telemetry of the daemon, whose endpoints it connects to
    (None: not recorded), all into one MCAP file."""

    def __init__(self, path: str | Path, zmq_context, prediction_endpoint: str | None,
                 telemetry_endpoint: str | None, metadata: dict[str, str] | None = None):
        from rtlearn.protocol.client import subscriber

        self._socks = []
        try:
            for ep in (prediction_endpoint, telemetry_endpoint):
                self._socks.append(None if ep is None else subscriber(zmq_context, ep))
            self.sink = McapSink(path, metadata)
        except BaseException:
            for s in self._socks:
                if s is not None:
                    s.close(linger=0)
            raise
        self.rejected = 0
        self._last_state = self._last_prediction = -1
        self._quiet_since = time.monotonic()
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rtlearn-mcap", daemon=True)
        self._thread.start()

    def state(self, state) -> None:
        self._last_state = state.seq
        self.sink.write(STATE_TOPIC, state_message(state.seq, state.t, state.q, state.qd,
                                                   state.qdd, state.tau, state.context))

    def _run(self) -> None:
        import zmq

        from rtlearn.protocol.schema import Hello, ProtocolError, decode_prediction_message
        from rtlearn.protocol.telemetry import decode_telemetry

        pred, tel = self._socks
        poller = zmq.Poller()
        for s in (pred, tel):
            if s is not None:
                poller.register(s, zmq.POLLIN)
        while not self._halt.is_set():
            for s, _ in poller.poll(100):
                frame = s.recv()
                self._quiet_since = time.monotonic()
                try:
                    if s is pred:
                        p = decode_prediction_message(frame)
                        if not isinstance(p, Hello):
                            self._last_prediction = p.seq
                            self.sink.write(PREDICTION_TOPIC, prediction_message(
                                p.seq, p.t, p.tau, p.context, p.valid))
                    else:
                        msg = decode_telemetry(frame)
                        self.sink.write(TELEMETRY_TOPIC, {k: v for k, v in msg.items()
                                                          if k not in ("v", "kind", "schema")})
                except ProtocolError:
                    self.rejected += 1

    def close(self, grace: float = 1.0, limit: float = 10.0) -> None:
        """Finish the file once the daemon's answer to the last state is in (or nothing came
        for `grace` s; at most `limit` s), then stop reading the daemon."""
        end = time.monotonic() + limit
        while (self._socks[0] is not None and self._last_prediction < self._last_state
               and time.monotonic() - self._quiet_since < grace and time.monotonic() < end):
            time.sleep(0.01)
        self._halt.set()
        self._thread.join()
        for s in self._socks:
            if s is not None:
                s.close(linger=0)
        self.sink.close()
