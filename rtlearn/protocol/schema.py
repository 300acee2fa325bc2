"""The wire format between robot-side programs and the daemon (docs/protocol.md is the spec).

Every message is one ZeroMQ frame holding one msgpack map whose key "v" is the protocol
version. Vectors are either msgpack arrays of numbers or `bin` of 8*n bytes, IEEE-754 float64
little-endian (what `encode_state` writes: 4x cheaper to pack and unpack than float lists).

Decoding never trusts the input: frame size is checked before unpacking, msgpack's own limits
are set, and every field is checked for type, length and finiteness. Any failure raises
`ProtocolError` whose `reason` is one of `REASONS`, so the daemon can count it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import msgpack
import numpy as np

from rtlearn.protocol.state import JointState

VERSION = 1

DEFAULT_STATE_ENDPOINT = "tcp://127.0.0.1:5601"
DEFAULT_PREDICTION_ENDPOINT = "tcp://127.0.0.1:5602"
DEFAULT_CONTROL_ENDPOINT = "tcp://127.0.0.1:5603"

MAX_JOINTS = 64
MAX_LABEL = 64              # characters of a context label
MAX_STATE_FRAME = 4096      # bytes; a 7-joint state is ~250 B
MAX_CONTROL_FRAME = 65536
MAX_SEQ = 2 ** 63 - 1
MAX_RID = 2 ** 32 - 1

FNV_OFFSET = 2166136261
FNV_PRIME = 16777619

REASONS = (
    "oversized",      # frame longer than the limit for its socket
    "malformed",      # not msgpack, trailing bytes, or beyond msgpack's unpack limits
    "not_a_map",      # top-level value is not a map
    "version",        # "v" missing or not VERSION
    "missing_field",  # a required key is absent
    "bad_type",       # a field has the wrong type
    "bad_length",     # a vector's length differs from the others / the robot's joint count
    "non_finite",     # NaN or +-inf in t or a vector
    "bad_value",      # out of range: negative seq, empty or overlong label, unknown command
    "wrong_robot",    # "rid" names another robot than the one the daemon serves
)

_STATE_LIMITS = dict(max_bin_len=8 * MAX_JOINTS, max_str_len=MAX_LABEL * 4,
                     max_array_len=MAX_JOINTS, max_map_len=16, max_ext_len=0)
_CONTROL_LIMITS = dict(max_bin_len=0, max_str_len=4096, max_array_len=256, max_map_len=64,
                       max_ext_len=0)


class ProtocolError(ValueError):
    """A message that does not follow docs/protocol.md; `reason` is machine-readable."""

    def __init__(self, reason: str, message: str):
        assert reason in REASONS, reason
        self.reason = reason
        super().__init__(f"{reason}: {message}")


class ControlError(Exception):
    """An error reply from the daemon's control socket (reason, message)."""

    def __init__(self, reason: str, message: str):
        self.reason, self.message = reason, message
        super().__init__(f"{reason}: {message}")


class Prediction(NamedTuple):
    seq: int            # seq of the state packet it answers
    t: float            # that packet's t
    tau: np.ndarray     # (n,) predicted torque, N*m; zeros when not valid
    context: str        # payload context whose model made it
    valid: bool         # False: no finite answer within the torque limits; do not apply tau


class Hello(NamedTuple):
    """Sent on the prediction socket to each new subscriber: proof that it is connected.
    robot, joints, rid: the robot the daemon serves (None from a daemon that does not say)."""
    n_joints: int
    context: str
    robot: str | None = None
    joints: tuple[str, ...] | None = None
    rid: int | None = None


def robot_id(name: str, joints) -> int:
    """The robot identity "rid" of docs/protocol.md: 32-bit FNV-1a over the UTF-8 bytes of
    the robot name followed, for each joint name, by one 0x00 byte and the joint name."""
    h = FNV_OFFSET
    for part in (name.encode(), *(b"\x00" + j.encode() for j in joints)):
        for byte in part:
            h = ((h ^ byte) * FNV_PRIME) & 0xFFFFFFFF
    return h


def _unpack(data, limit: int, limits: dict):
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError("bad_type", f"frame is {type(data).__name__}, not bytes")
    if len(data) > limit:
        raise ProtocolError("oversized", f"{len(data)} bytes > {limit}")
    try:
        msg = msgpack.unpackb(data, raw=False, strict_map_key=True, **limits)
    except (ValueError, msgpack.UnpackException, UnicodeDecodeError, TypeError, RecursionError) as e:
        raise ProtocolError("malformed", f"not a msgpack value ({type(e).__name__})") from None
    if not isinstance(msg, dict):
        raise ProtocolError("not_a_map", f"top level is {type(msg).__name__}")
    v = msg.get("v")
    if v != VERSION or type(v) is not int:
        raise ProtocolError("version", f"v={v!r}, this end speaks v={VERSION}")
    return msg


def _field(msg: dict, key: str):
    try:
        return msg[key]
    except KeyError:
        raise ProtocolError("missing_field", f"no {key!r}") from None


def _number(msg: dict, key: str) -> float:
    v = _field(msg, key)
    if type(v) not in (int, float):
        raise ProtocolError("bad_type", f"{key!r} is {type(v).__name__}, not a number")
    v = float(v)
    if not math.isfinite(v):
        raise ProtocolError("non_finite", f"{key!r} = {v}")
    return v


def _uint(msg: dict, key: str) -> int:
    v = _field(msg, key)
    if type(v) is not int:
        raise ProtocolError("bad_type", f"{key!r} is {type(v).__name__}, not an integer")
    if not 0 <= v <= MAX_SEQ:
        raise ProtocolError("bad_value", f"{key!r} = {v} outside [0, 2^63)")
    return v


def _rid(msg: dict, expected: int | None) -> int | None:
    """The packet's robot identity (None when absent or nil); ProtocolError "wrong_robot"
    when it is not `expected` (None: any)."""
    v = msg.get("rid")
    if v is None:
        return None
    if type(v) is not int:
        raise ProtocolError("bad_type", f"'rid' is {type(v).__name__}, not an integer")
    if not 0 <= v <= MAX_RID:
        raise ProtocolError("bad_value", f"'rid' = {v} outside [0, 2^32)")
    if expected is not None and v != expected:
        raise ProtocolError("wrong_robot", f"rid {v} is not this robot's ({expected})")
    return v


def _label(msg: dict, key: str) -> str | None:
    v = msg.get(key)
    if v is None:
        return None
    if type(v) is not str:
        raise ProtocolError("bad_type", f"{key!r} is {type(v).__name__}, not a string")
    if not 0 < len(v) <= MAX_LABEL or not v.isprintable():
        raise ProtocolError("bad_value", f"{key!r} must be 1..{MAX_LABEL} printable characters")
    return v


def _raw_vector(msg: dict, key: str, n: int | None) -> bytes | list:
    """A vector field checked for type and length but not converted: bytes or a list."""
    v = _field(msg, key)
    if type(v) is bytes:
        size = len(v) // 8
        if len(v) % 8 or not v:
            raise ProtocolError("bad_length", f"{key!r}: {len(v)} bytes is not a float64 vector")
    elif type(v) in (list, tuple):
        size = len(v)
        if not v:
            raise ProtocolError("bad_length", f"{key!r} is empty")
        for e in v:
            if type(e) not in (int, float):
                raise ProtocolError("bad_type", f"{key!r} holds {type(e).__name__}, not numbers")
    else:
        raise ProtocolError("bad_type", f"{key!r} is {type(v).__name__}, not an array or bin")
    if n is not None and size != n:
        raise ProtocolError("bad_length", f"{key!r} has {size} values, expected {n}")
    return v


def _vectors(msg: dict, keys: tuple[str, ...], n: int | None) -> np.ndarray:
    """The vectors under `keys` as rows of one new (len(keys), n) float64 array.
    Converting and checking them together costs half of doing it per vector."""
    raws = []
    all_bin = True
    for key in keys:
        raw = _raw_vector(msg, key, n)
        if type(raw) is bytes:
            n = len(raw) // 8
        else:
            n = len(raw)
            all_bin = False
        raws.append(raw)
    if all_bin:
        out = np.frombuffer(bytearray(b"".join(raws)), "<f8")
        if out.dtype != np.float64:  # big-endian host
            out = out.astype(np.float64)
    else:
        try:
            out = np.array([np.frombuffer(r, "<f8") if type(r) is bytes else r for r in raws],
                           dtype=np.float64).ravel()
        except OverflowError:
            raise ProtocolError("bad_value", "a vector holds an integer too large") from None
    if not np.isfinite(out).all():
        bad = [k for k, row in zip(keys, out.reshape(len(keys), n)) if not np.isfinite(row).all()]
        raise ProtocolError("non_finite", f"{', '.join(map(repr, bad))} holds NaN or inf")
    return out.reshape(len(keys), n)


def _f64(a) -> bytes:
    return np.ascontiguousarray(a, dtype="<f8").tobytes()


# --- state packets: robot -> daemon -------------------------------------------------------

def encode_state(state: JointState, stream: int | None = None, rid: int | None = None) -> bytes:
    """One state packet; `stream` identifies the sending session (lets the daemon tell a
    restarted publisher from out-of-order packets), `rid` the robot (`robot_id`)."""
    msg = {"v": VERSION, "seq": int(state.seq), "t": float(state.t),
           "q": _f64(state.q), "qd": _f64(state.qd), "tau": _f64(state.tau)}
    if state.qdd is not None:
        msg["qdd"] = _f64(state.qdd)
    if state.context is not None:
        msg["ctx"] = state.context
    if stream is not None:
        msg["stream"] = int(stream)
    if rid is not None:
        msg["rid"] = int(rid)
    return msgpack.packb(msg)


def read_state(data, n_joints: int | None = None,
               rid: int | None = None) -> tuple[JointState, int | None]:
    """Decode and validate a state packet -> (JointState, stream id or None).
    n_joints: the length every vector must have (None: the length of q); rid: the robot
    identity a packet's "rid" must equal (None: any; a packet without one is accepted)."""
    msg = _unpack(data, MAX_STATE_FRAME, _STATE_LIMITS)
    seq = _uint(msg, "seq")
    t = _number(msg, "t")
    if msg.get("qdd") is None:
        (q, qd, tau), qdd = _vectors(msg, ("q", "qd", "tau"), n_joints), None
    else:
        q, qd, tau, qdd = _vectors(msg, ("q", "qd", "tau", "qdd"), n_joints)
    context = _label(msg, "ctx")
    stream = _uint(msg, "stream") if msg.get("stream") is not None else None
    _rid(msg, rid)
    return JointState(seq, t, q, qd, qdd, tau, context), stream


def decode_state(data, n_joints: int | None = None) -> JointState:
    """Decode and validate a state packet; raises ProtocolError."""
    return read_state(data, n_joints)[0]


# --- prediction socket: daemon -> robot ---------------------------------------------------

def encode_prediction(seq: int, t: float, tau, context: str, valid: bool = True) -> bytes:
    """tau: a list of floats or a float64 array."""
    return msgpack.packb({"v": VERSION, "kind": "prediction", "seq": seq, "t": t,
                          "tau": tau if type(tau) is list else tau.tolist(), "ctx": context,
                          "valid": valid})


def torque_problem(tau, limit) -> str | None:
    """Why a predicted torque may not be published as valid: "non_finite" (NaN or inf in a
    joint), "over_limit" (|tau[j]| > limit[j], limit = robot torque limits x margin), or None.
    The reference of rtlearn.kernels.packet.check_torque."""
    if not all(math.isfinite(x) for x in tau):
        return "non_finite"
    if any(abs(x) > lim for x, lim in zip(tau, limit)):
        return "over_limit"
    return None


def encode_hello(n_joints: int, context: str, robot: str | None = None,
                 joints=None) -> bytes:
    """robot, joints: the robot the daemon serves (its name and joint names; the hello
    then carries its rid too)."""
    msg = {"v": VERSION, "kind": "hello", "n_joints": n_joints, "ctx": context}
    if robot is not None:
        msg.update(robot=robot, joints=list(joints), rid=robot_id(robot, joints))
    return msgpack.packb(msg)


def _hello(msg: dict) -> Hello:
    robot, joints = msg.get("robot"), msg.get("joints")
    if robot is not None and type(robot) is not str:
        raise ProtocolError("bad_type", "'robot' is not a string")
    if joints is not None:
        if type(joints) is not list or any(type(j) is not str for j in joints):
            raise ProtocolError("bad_type", "'joints' is not an array of strings")
        joints = tuple(joints)
    return Hello(_uint(msg, "n_joints"), _label(msg, "ctx") or "", robot, joints,
                 _rid(msg, None))


def decode_prediction_message(data) -> Prediction | Hello:
    """Decode a frame of the prediction socket; raises ProtocolError."""
    msg = _unpack(data, MAX_STATE_FRAME, _STATE_LIMITS)
    kind = _field(msg, "kind")
    if kind == "hello":
        return _hello(msg)
    if kind != "prediction":
        raise ProtocolError("bad_value", f"unknown kind {kind!r}")
    valid = _field(msg, "valid")
    if type(valid) is not bool:
        raise ProtocolError("bad_type", "'valid' is not a boolean")
    return Prediction(_uint(msg, "seq"), _number(msg, "t"), _vectors(msg, ("tau",), None)[0],
                      _label(msg, "ctx") or "", valid)


# --- control socket: REQ/REP, JSON-like maps -----------------------------------------------

# command -> {argument: (accepted types, required)}
COMMANDS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "status": {},
    "contexts": {},
    "context": {"name": ((str,), False), "create": ((bool,), False),
                "release": ((bool,), False)},
    "save": {"path": ((str,), False)},
    "load": {"path": ((str,), True)},
    "reset": {},
    "options": {"lr": ((int, float), False), "memory": ((bool,), False)},
    "shutdown": {},
}


# (command, argument) -> inclusive range of a numeric argument
RANGES: dict[tuple[str, str], tuple[float, float]] = {
    ("options", "lr"): (1e-9, 10.0),
}


def encode_request(cmd: str, **args) -> bytes:
    return msgpack.packb({"v": VERSION, "cmd": cmd, "args": args})


def decode_request(data) -> tuple[str, dict]:
    """Validate a control request -> (command, arguments); raises ProtocolError."""
    msg = _unpack(data, MAX_CONTROL_FRAME, _CONTROL_LIMITS)
    cmd = _field(msg, "cmd")
    if type(cmd) is not str:
        raise ProtocolError("bad_type", "'cmd' is not a string")
    if cmd not in COMMANDS:
        raise ProtocolError("bad_value", f"unknown command {cmd!r}; known: {', '.join(COMMANDS)}")
    args = msg.get("args", {})
    if not isinstance(args, dict):
        raise ProtocolError("bad_type", "'args' is not a map")
    spec = COMMANDS[cmd]
    for key, value in args.items():
        if key not in spec:
            raise ProtocolError("bad_value", f"{cmd}: unknown argument {key!r}")
        types = spec[key][0]
        if type(value) not in types:
            raise ProtocolError("bad_type", f"{cmd}: {key!r} must be {'/'.join(t.__name__ for t in types)}")
        if type(value) in (int, float):
            lo, hi = RANGES.get((cmd, key), (-math.inf, math.inf))
            if not (math.isfinite(value) and lo <= value <= hi):
                raise ProtocolError("bad_value", f"{cmd}: {key!r} = {value!r} outside "
                                                 f"[{lo:g}, {hi:g}]")
    for key, (_, required) in spec.items():
        if required and key not in args:
            raise ProtocolError("missing_field", f"{cmd}: argument {key!r} is required")
    if cmd == "context":
        if args.get("release"):
            if "name" in args or args.get("create"):
                raise ProtocolError("bad_value", "context: release takes no name and no create")
        elif "name" not in args:
            raise ProtocolError("missing_field", "context: argument 'name' is required "
                                                 "(or release: true)")
        _label(args, "name")
    return cmd, args


def encode_reply(result) -> bytes:
    return msgpack.packb({"v": VERSION, "ok": True, "result": result})


def encode_error(reason: str, message: str) -> bytes:
    return msgpack.packb({"v": VERSION, "ok": False, "error": {"reason": reason, "message": message}})


def decode_reply(data):
    """The result of a control reply; raises ControlError for an error reply."""
    msg = _unpack(data, 1 << 24, dict(max_str_len=1 << 20, max_bin_len=1 << 20,
                                      max_array_len=1 << 16, max_map_len=1 << 12, max_ext_len=0))
    if msg.get("ok") is True:
        return msg.get("result")
    err = msg.get("error")
    if not isinstance(err, dict):
        raise ProtocolError("missing_field", "error reply without 'error'")
    raise ControlError(str(err.get("reason")), str(err.get("message")))
