"""The telemetry stream: what the daemon's learner is doing, published on a PUB socket at a
fixed rate (docs/protocol.md, "Telemetry socket"). One frame, one msgpack map, like the rest
of the protocol; its own version (`TELEMETRY_VERSION`) so that viewers can refuse a schema
they do not know. `decode_telemetry` checks every field a viewer reads.
"""

from __future__ import annotations

import math

import msgpack

from rtlearn.protocol.schema import ProtocolError, _unpack

TELEMETRY_VERSION = 1
DEFAULT_TELEMETRY_ENDPOINT = "tcp://127.0.0.1:5604"
MAX_TELEMETRY_FRAME = 1 << 20
_LIMITS = dict(max_bin_len=0, max_str_len=4096, max_array_len=4096, max_map_len=256,
               max_ext_len=0)

# serving-side counters (the socket thread's), then the learning process's own
SERVING_COUNTERS = ("received", "predicted", "invalid_predictions", "over_limit_predictions",
                    "rejected_total", "lost", "stream_restarts", "resyncs", "deadline_misses",
                    "backpressure_waits")
LEARNING_COUNTERS = ("steps", "samples", "rollbacks", "excluded_total")
SWITCH_KEYS = ("time", "from", "to", "outcome", "by")
DETECTION_KEYS = ("time", "from", "decision", "context", "delay_samples")


def encode_telemetry(msg: dict) -> bytes:
    """msg: the map of docs/protocol.md without v / kind (plain Python values)."""
    return msgpack.packb({"v": 1, "kind": "telemetry", "schema": TELEMETRY_VERSION, **msg})


def _get(msg: dict, key: str, types: tuple, where: str = ""):
    if key not in msg:
        raise ProtocolError("missing_field", f"no {where}{key!r}")
    v = msg[key]
    if type(v) not in types:
        raise ProtocolError("bad_type", f"{where}{key!r} is {type(v).__name__}")
    return v


def _numbers(v, n: int, key: str, nullable: bool = False) -> None:
    """A list of n finite numbers (or nils where nullable)."""
    if type(v) is not list or len(v) != n:
        raise ProtocolError("bad_length", f"{key!r} is not a list of {n} values")
    for e in v:
        if e is None and nullable:
            continue
        if type(e) not in (int, float) or not math.isfinite(e):
            raise ProtocolError("bad_value", f"{key!r} holds {e!r}, not a finite number")


def _counts(v, key: str) -> None:
    if type(v) is not dict or not all(type(k) is str and type(c) is int for k, c in v.items()):
        raise ProtocolError("bad_type", f"{key!r} is not a map of counts")


def decode_telemetry(data) -> dict:
    """Decode and validate one telemetry frame -> the map (lists for vectors, nil where a
    value is unknown); raises ProtocolError (reason "version" for another schema)."""
    msg = _unpack(data, MAX_TELEMETRY_FRAME, _LIMITS)
    if msg.get("kind") != "telemetry":
        raise ProtocolError("bad_value", f"kind {msg.get('kind')!r} is not 'telemetry'")
    if msg.get("schema") != TELEMETRY_VERSION:
        raise ProtocolError("version", f"telemetry schema {msg.get('schema')!r}, this end "
                                       f"reads {TELEMETRY_VERSION}")
    for key, types in (("seq", (int,)), ("time", (float, int)), ("uptime_s", (float, int)),
                       ("robot", (str,)), ("context", (str,))):
        _get(msg, key, types)
    n = _get(msg, "n_joints", (int,))
    names = _get(msg, "joints", (list,))
    if len(names) != n or not all(type(s) is str for s in names):
        raise ProtocolError("bad_length", f"'joints' is not a list of {n} names")
    w = _get(msg, "window", (dict,))
    _get(w, "samples", (int,), "window.")
    _get(w, "seconds", (float, int), "window.")
    err = _get(msg, "error", (dict,))
    for key in ("rms", "recent_rms"):
        _numbers(_get(err, key, (list,), "error."), n, f"error.{key}", nullable=True)
    tq = _get(msg, "torque", (dict,))
    for key in ("measured_mean", "predicted_mean", "measured_last", "predicted_last"):
        _numbers(_get(tq, key, (list,), "torque."), n, f"torque.{key}", nullable=True)
    lr = _get(msg, "lr", (dict,))
    _get(lr, "optimizer", (str,), "lr.")
    layers = _get(lr, "layers", (int,), "lr.")
    for key in ("weights", "biases"):
        rows = _get(lr, key, (list,), "lr.")
        if len(rows) != n:
            raise ProtocolError("bad_length", f"lr.{key} has {len(rows)} rows, not {n}")
        for row in rows:
            _numbers(row, layers, f"lr.{key}", nullable=True)
    c = _get(msg, "counters", (dict,))
    for key in SERVING_COUNTERS + LEARNING_COUNTERS:
        _get(c, key, (int,), "counters.")
    _counts(_get(c, "rejected", (dict,), "counters."), "counters.rejected")
    _counts(_get(c, "excluded", (dict,), "counters."), "counters.excluded")
    ctx = _get(msg, "contexts", (dict,))
    _get(ctx, "known", (list,), "contexts.")
    _get(ctx, "switches", (int,), "contexts.")
    for key, fields in (("recent", SWITCH_KEYS), ("detections", DETECTION_KEYS)):
        for item in _get(ctx, key, (list,), "contexts."):
            if type(item) is not dict or not set(fields) <= set(item):
                raise ProtocolError("missing_field", f"contexts.{key}: an entry lacks one of "
                                                     f"{fields}")
    _counts(_get(ctx, "auto", (dict,), "contexts."), "contexts.auto")
    for key in ("latency_ms", "step_ms"):
        d = _get(msg, key, (dict,))
        _get(d, "count", (int,), f"{key}.")
        for q in ("p50", "p90", "p99", "max"):
            v = _get(d, q, (float, int, type(None)), f"{key}.")
            if v is not None and not math.isfinite(v):
                raise ProtocolError("bad_value", f"{key}.{q} = {v}")
    return msg
