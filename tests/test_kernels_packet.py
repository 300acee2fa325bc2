"""The compiled packet path against the Python reference (rtlearn.protocol.schema): an OK
status from parse_state always means read_state accepts the frame with bit-identical values,
every frame read_state rejects is FALLBACK, and encode_prediction_into writes the bytes of
encode_prediction."""

from __future__ import annotations

import math
import textwrap

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtlearn.kernels import packet
from rtlearn.kernels.packet import (FALLBACK, H_CTX_AT, H_CTX_LEN, H_HAS_QDD, H_HAS_STREAM,
                                    H_SEQ, H_STREAM, H_T, HEAD_LEN, OK_NO_LABEL,
                                    OK_OTHER_LABEL, OK_SAME_LABEL, encode_prediction_into,
                                    parse_state)
from rtlearn.protocol import schema
from rtlearn.protocol.schema import ProtocolError, encode_prediction, read_state

FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
edge_floats = st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308,
                               1.7976931348623157e308, -1.0])
labels = st.text(st.characters(codec="utf-8", categories=["L", "N", "P", "S"],
                               include_characters=" "),
                 min_size=1, max_size=64).filter(str.isprintable)
ascii_labels = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1,
                       max_size=64)
seqs = st.sampled_from([0, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, 2 ** 63 - 1]) \
    | st.integers(0, 2 ** 63 - 1)
rids = st.sampled_from([0, 127, 128, 65535, 65536, 2 ** 32 - 1]) | st.integers(0, 2 ** 32 - 1)

# msgpack int codes -> (byte size, signed)
INT_CODES = {0xCC: (1, False), 0xCD: (2, False), 0xCE: (4, False), 0xCF: (8, False),
             0xD0: (1, True), 0xD1: (2, True), 0xD2: (4, True), 0xD3: (8, True)}


def int_bytes(v: int, code: int | None) -> bytes:
    """v in the msgpack int encoding `code` (None: msgpack's own, the smallest)."""
    if code is None:
        return msgpack.packb(v)
    size, signed = INT_CODES[code]
    return bytes([code]) + v.to_bytes(size, "big", signed=signed)


def int_codes(v: int) -> list[int | None]:
    """The encodings that can hold v."""
    out = [None]
    for code, (size, signed) in INT_CODES.items():
        bits = 8 * size
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        if lo <= v <= hi:
            out.append(code)
    return out


def bin_bytes(data: bytes, wide: bool) -> bytes:
    """A msgpack bin8, or bin16 when wide."""
    if wide:
        return b"\xc5" + len(data).to_bytes(2, "big") + data
    return msgpack.packb(data)


def frame_of(entries: list[tuple[str, bytes]], map16: bool = False) -> bytes:
    """A msgpack map of already encoded values, in the given order (duplicates allowed)."""
    head = b"\xde" + len(entries).to_bytes(2, "big") if map16 else bytes([0x80 | len(entries)])
    return head + b"".join(msgpack.packb(k) + v for k, v in entries)


def test_limits_are_the_schema_limits():
    assert (packet.MAX_STATE_FRAME, packet.MAX_JOINTS, packet.MAX_LABEL, packet.MAX_RID) == \
        (schema.MAX_STATE_FRAME, schema.MAX_JOINTS, schema.MAX_LABEL, schema.MAX_RID)
    assert schema._STATE_LIMITS["max_bin_len"] == 8 * schema.MAX_JOINTS
    assert schema._STATE_LIMITS["max_map_len"] == 16


def parse(frame: bytes, n: int, ctx_now: str, rid: int | None = None):
    """parse_state as the daemon would call it -> (status, vec, head)."""
    vec = np.full((4, n), np.nan)
    head = np.full(HEAD_LEN, -7, np.int64)
    status = parse_state(np.frombuffer(frame, np.uint8), n, vec, head,
                         np.frombuffer(ctx_now.encode(), np.uint8), -1 if rid is None else rid)
    return status, vec, head


def bits(a) -> np.ndarray:
    return np.asarray(a, np.float64).view(np.int64)


def check(frame: bytes, n: int, ctx_now: str, rid: int | None = None) -> int:
    """The contract between parse_state and read_state on one frame -> the status.
    rid: the daemon's robot identity (None: any)."""
    status, vec, head = parse(frame, n, ctx_now, rid)
    assert status in (OK_NO_LABEL, OK_SAME_LABEL, OK_OTHER_LABEL, FALLBACK)
    try:
        state, stream = read_state(frame, n, rid)
    except ProtocolError:
        assert status == FALLBACK
        return status
    if status == FALLBACK:
        return status
    assert head[H_SEQ] == state.seq
    assert head[H_T] == bits(state.t)
    for row, v in enumerate((state.q, state.qd, state.tau)):
        assert (bits(vec[row]) == bits(v)).all()
    assert head[H_HAS_QDD] == (state.qdd is not None)
    if state.qdd is not None:
        assert (bits(vec[3]) == bits(state.qdd)).all()
    assert (head[H_HAS_STREAM], head[H_STREAM]) == ((0, 0) if stream is None else (1, stream))
    if status == OK_NO_LABEL:
        assert state.context is None
    elif status == OK_SAME_LABEL:
        assert state.context == ctx_now
    else:
        at, size = head[H_CTX_AT], head[H_CTX_LEN]
        assert state.context == frame[at:at + size].decode() and state.context != ctx_now
    return status


@st.composite
def vectors(draw, n: int) -> np.ndarray:
    """(4, n) finite float64 of any bit pattern (one draw: far faster than lists of floats),
    with edge values (subnormals, -0.0, extremes) sprinkled in."""
    x = np.frombuffer(draw(st.binary(min_size=32 * n, max_size=32 * n)), np.float64).copy()
    x[~np.isfinite(x)] = -0.0
    for i, v in draw(st.lists(st.tuples(st.integers(0, 4 * n - 1), edge_floats), max_size=4)):
        x[i] = v
    return x.reshape(4, n)


@st.composite
def packets(draw):
    """A valid state packet in the encodings the fast path handles, as (key, value bytes)
    entries, with its joint count, ctx_now and the status parse_state must answer."""
    n = draw(st.integers(1, 12))
    seq = draw(seqs)
    t = draw(finite | edge_floats | st.integers(-2 ** 63, 2 ** 64 - 1)
             | st.floats(width=32, allow_nan=False, allow_infinity=False).map(np.float32))
    if type(t) is np.float32:
        t_bytes = msgpack.packb(float(t), use_single_float=True)
    elif type(t) is int:
        t_bytes = int_bytes(t, draw(st.sampled_from(int_codes(t))))
    else:
        t_bytes = msgpack.packb(t)
    entries = [("v", int_bytes(1, draw(st.sampled_from(int_codes(1))))),
               ("seq", int_bytes(seq, draw(st.sampled_from(int_codes(seq))))),
               ("t", t_bytes)]
    x = draw(vectors(n))
    for row, key in enumerate(("q", "qd", "tau")):
        entries.append((key, bin_bytes(x[row].tobytes(), draw(st.booleans()))))
    qdd = draw(st.sampled_from(["absent", "nil", "bin"]))
    if qdd != "absent":
        entries.append(("qdd", b"\xc0" if qdd == "nil" else
                        bin_bytes(x[3].tobytes(), draw(st.booleans()))))
    ctx_now = draw(labels | ascii_labels | st.just(""))
    ctx = draw(st.none() | st.just("nil") | st.just(ctx_now).filter(bool) | labels | ascii_labels)
    expect = OK_NO_LABEL
    if ctx == "nil":
        entries.append(("ctx", b"\xc0"))
    elif ctx is not None:
        entries.append(("ctx", msgpack.packb(ctx)))
        if ctx == ctx_now:
            expect = OK_SAME_LABEL
        else:
            expect = OK_OTHER_LABEL if ctx.isascii() else FALLBACK
    stream = draw(st.none() | st.just("nil") | seqs)
    if stream is not None:
        entries.append(("stream", b"\xc0" if stream == "nil" else
                        int_bytes(stream, draw(st.sampled_from(int_codes(stream))))))
    rid = draw(st.none() | st.just("nil") | rids)
    if rid is not None:
        entries.append(("rid", b"\xc0" if rid == "nil" else
                        int_bytes(rid, draw(st.sampled_from(int_codes(rid))))))
    entries = draw(st.permutations(entries))
    return entries, draw(st.booleans()), n, ctx_now, expect, rid


@FUZZ
@given(packets())
def test_valid_packets_decode_bit_identical(case):
    entries, map16, n, ctx_now, expect, rid = case
    frame = frame_of(entries, map16)
    assert check(frame, n, ctx_now) == expect
    # the frame's bytes object works as buf too (skips np.frombuffer)
    vec, head = np.empty((4, n)), np.empty(HEAD_LEN, np.int64)
    assert parse_state(frame, n, vec, head, np.frombuffer(ctx_now.encode(), np.uint8)) == expect
    # a daemon that knows its robot: the same rid (or none) passes, another falls back
    own = 7 if rid in (None, "nil") else rid
    assert check(frame, n, ctx_now, own) == expect
    if rid not in (None, "nil"):
        assert check(frame, n, ctx_now, (rid + 1) % 2 ** 32) == FALLBACK
        with pytest.raises(ProtocolError, match="wrong_robot"):
            read_state(frame, n, (rid + 1) % 2 ** 32)


def test_packets_as_msgpack_writes_them():
    """frame_of is msgpack.packb of the dict when every encoding is msgpack's own."""
    msg = {"stream": 3, "v": 1, "seq": 128, "t": -2, "q": np.zeros(2).tobytes(),
           "qd": np.ones(2).tobytes(), "tau": np.arange(2.0).tobytes(), "ctx": "heavy"}
    frame = msgpack.packb(msg)
    assert frame == frame_of([(k, msgpack.packb(v)) for k, v in msg.items()])
    assert check(frame, 2, "light") == OK_OTHER_LABEL
    assert check(frame, 2, "heavy") == OK_SAME_LABEL


def test_valid_packets_beyond_the_fast_path_fall_back():
    """Valid for read_state, but left to it: unknown or duplicate keys, float arrays, other
    str / bin / map encodings, a non-ASCII label other than ctx_now."""
    x = np.arange(2.0).tobytes()
    base = [("v", b"\x01"), ("seq", b"\x05"), ("t", msgpack.packb(0.5)), ("q", msgpack.packb(x)),
            ("qd", msgpack.packb(x)), ("tau", msgpack.packb(x))]
    assert check(frame_of(base), 2, "heavy") == OK_NO_LABEL
    frames = [frame_of(base + [("extra", b"\x00")]),
              frame_of(base + [("seq", b"\x05")]),
              frame_of(base + [("tau", msgpack.packb([0.0, 1.0]))]),
              frame_of(base + [("ctx", b"\xda\x00\x05heavy")]),    # str16
              frame_of(base + [("ctx", msgpack.packb("schweré"))]),
              frame_of(base + [("q", b"\xc6\x00\x00\x00\x10" + x)]),    # bin32
              b"\xdf\x00\x00\x00\x06" + frame_of(base)[1:],    # map32
              b"\x86\xa1v\x01\xd9\x03seq\x05" + frame_of(base[2:])[1:]]    # str8 key
    for frame in frames:
        read_state(frame, 2)
        assert check(frame, 2, "heavy") == FALLBACK


BAD_VALUES = {
    "v": [2, 0, -1, True, 1.0, "1", None],
    "seq": [-1, -2 ** 63, 2 ** 63, 2 ** 64 - 1, 1.0, True, None, "1"],
    "t": [math.nan, math.inf, -math.inf, True, None, "0", b"\x00" * 8],
    "stream": [-1, 2 ** 63, 2 ** 64 - 1, 1.5, True, "x"],
    "ctx": ["", "a" * 65, "a\nb", "\x7f", "\x00", "\u00a0", "é" * 64, "é" * 65, 5, b"lab", True],
    "rid": [-1, 2 ** 32, 2 ** 63, 2 ** 64 - 1, 1.0, True, "1", b"\x01"],
}
VECTOR_KEYS = ("q", "qd", "qdd", "tau")


@st.composite
def mutated_packets(draw):
    """A valid packet with one field, the map or the bytes broken (or, sometimes, still
    valid in an encoding the fast path leaves to Python)."""
    entries, map16, n, ctx_now, _, rid = draw(packets())
    entries = list(entries)
    how = draw(st.sampled_from(["value", "vector", "label", "drop", "duplicate", "unknown",
                                "count", "flip", "truncate", "append", "oversize",
                                "float32 nan", "n"]))
    if how == "value":
        key = draw(st.sampled_from(sorted(BAD_VALUES)))
        entries.append((key, msgpack.packb(draw(st.sampled_from(BAD_VALUES[key])))))
        entries = [(k, v) for k, v in entries[:-1] if k != key] + entries[-1:]
    elif how == "vector":
        key = draw(st.sampled_from(VECTOR_KEYS))
        x = draw(vectors(n))[0].copy()
        bad = draw(st.sampled_from(["nan", "inf", "short", "long", "odd", "empty", "list",
                                    "ints", "str", "nil", "bool", "bin32"]))
        value = {"short": x[:-1].tobytes(), "long": np.append(x, 1.0).tobytes(),
                 "odd": x.tobytes() + b"\x00", "empty": b"", "list": x.tolist(),
                 "ints": [int(v) for v in x.clip(-1e15, 1e15)], "str": "q", "nil": None,
                 "bool": False}.get(bad)
        if bad in ("nan", "inf"):
            x[draw(st.integers(0, n - 1))] = math.nan if bad == "nan" else -math.inf
            value = x.tobytes()
        raw = b"\xc6" + (8 * n).to_bytes(4, "big") + x.tobytes() if bad == "bin32" \
            else msgpack.packb(value)
        entries = [(k, v) for k, v in entries if k != key] + [(key, raw)]
    elif how == "label":    # any ASCII, control characters and DEL too, any length
        label = draw(st.text(st.characters(max_codepoint=0x7F), max_size=70))
        entries = [(k, v) for k, v in entries if k != "ctx"] + [("ctx", msgpack.packb(label))]
    elif how == "drop":
        del entries[draw(st.integers(0, len(entries) - 1))]
    elif how == "duplicate":    # last one wins in Python; nil then hides an earlier value
        key, value = draw(st.sampled_from(entries))
        entries.append((key, draw(st.sampled_from([value, b"\xc0"]))))
    elif how == "unknown":
        entries.insert(draw(st.integers(0, len(entries))),
                       (draw(st.sampled_from(["x", "kind", "Q", "tau2", ""])), msgpack.packb(0)))
    elif how == "float32 nan":
        entries = [(k, v) for k, v in entries if k != "t"] + [("t", b"\xca\x7f\xc0\x00\x00")]
    frame = frame_of(entries, map16)
    if how == "count":
        frame = bytes([frame[0] + draw(st.sampled_from([-1, 1]))]) + frame[1:] if not map16 \
            else frame[:2] + bytes([frame[2] + draw(st.sampled_from([-1, 1, 16]))]) + frame[3:]
    elif how == "flip":
        data = bytearray(frame)
        for _ in range(draw(st.integers(1, 3))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        frame = bytes(data)
    elif how == "truncate":
        frame = frame[:draw(st.integers(0, len(frame) - 1))]
    elif how == "append":
        frame += draw(st.binary(min_size=1, max_size=9))
    elif how == "oversize":
        frame += bytes(4097 - len(frame))
    elif how == "n":
        n = draw(st.sampled_from([0, n - 1, n + 1, 65]))
    own = draw(st.sampled_from([None, 7] + ([] if rid in (None, "nil") else [rid])))
    return frame, n, ctx_now, own


@FUZZ
@given(mutated_packets())
def test_broken_packets_are_never_accepted_wrongly(case):
    check(*case)


@FUZZ
@given(st.binary(max_size=400), st.integers(1, 12), st.none() | rids)
def test_random_bytes_are_never_accepted_wrongly(frame, n, rid):
    check(frame, n, "heavy", rid)


BOUNDS_SCRIPT = textwrap.dedent("""
    from dataclasses import replace
    import numpy as np
    from rtlearn.kernels.packet import FALLBACK, HEAD_LEN, parse_state
    from rtlearn.protocol.schema import encode_state
    from rtlearn.service.synthetic import synthetic_state
    ctx_now = np.frombuffer(b"heavy", np.uint8)
    frames = []
    for n in (1, 7, 40):    # 40: bin16 vectors
        for ctx in (None, "heavy", "light"):
            for stream in (None, 3):
                s = synthetic_state(2 ** 40, n, context=ctx)
                frames.append((n, encode_state(s, stream)))
                frames.append((n, encode_state(s, stream, 2 ** 32 - 1)))
                frames.append((n, encode_state(replace(s, qdd=None, t=1e300), stream)))
    rng = np.random.default_rng(0)
    vec = np.empty((4, 64))
    head = np.empty(HEAD_LEN, np.int64)
    for n, frame in frames:
        v = vec[:, :n].copy()
        assert parse_state(np.frombuffer(frame, np.uint8), n, v, head, ctx_now) >= 0
        for k in range(len(frame)):
            cut = np.frombuffer(frame[:k], np.uint8).copy()    # exactly k bytes long
            assert parse_state(cut, n, v, head, ctx_now) == FALLBACK
        for _ in range(300):    # corrupted frames: any answer, but no read out of bounds
            data = np.frombuffer(frame, np.uint8).copy()
            idx = rng.integers(0, len(data), rng.integers(1, 4))
            data[idx] = rng.integers(0, 256, len(idx))
            parse_state(data[:rng.integers(1, len(data) + 1)].copy(), n, v, head, ctx_now)
    print("ok")
""")


def test_parse_stays_in_bounds_on_truncated_frames(run_boundschecked):
    run_boundschecked(BOUNDS_SCRIPT)


@FUZZ
@given(seqs, st.floats(width=64), st.integers(0, 40).flatmap(
    lambda n: st.lists(st.floats(width=64), min_size=n, max_size=n)), labels, st.booleans())
def test_encode_prediction_into_is_byte_identical(seq, t, tau, ctx, valid):
    tau = np.array(tau, np.float64)
    out = np.zeros(1024, np.uint8)
    size = encode_prediction_into(out, seq, t, tau, np.frombuffer(ctx.encode(), np.uint8), valid)
    assert bytes(out[:size]) == encode_prediction(seq, t, tau, ctx, valid)


def test_encode_prediction_into_length_headers_at_their_boundaries():
    for n in (0, 15, 16, 65535, 65536):
        tau = np.linspace(-1.0, 1.0, n)
        for size in (1, 31, 32, 255, 256, 65535, 65536):
            out = np.zeros(69 + 9 * n + size, np.uint8)
            ctx = np.full(size, ord("a"), np.uint8)
            length = encode_prediction_into(out, 3, 0.5, tau, ctx, False)
            assert bytes(out[:length]) == encode_prediction(3, 0.5, tau, "a" * size, False)


def test_encode_prediction_into_refuses_a_short_buffer():
    tau = np.ones(7)
    ctx = np.frombuffer(b"heavy", np.uint8)
    assert encode_prediction_into(np.zeros(60, np.uint8), 1, 0.0, tau, ctx, True) == -1
    assert encode_prediction_into(np.zeros(1024, np.uint8), -1, 0.0, tau, ctx, True) == -1


TORQUE_CODES = {None: packet.TORQUE_OK, "over_limit": packet.TORQUE_OVER_LIMIT,
                "non_finite": packet.TORQUE_NON_FINITE}


@FUZZ
@given(st.integers(1, 64).flatmap(lambda n: st.tuples(
    st.lists(st.floats(width=64) | st.sampled_from([176.0, -176.0, 1.8e10, 4.3e302]),
             min_size=n, max_size=n),
    st.lists(st.floats(0.0, 1e3) | st.just(float("inf")), min_size=n, max_size=n))))
def test_check_torque_agrees_with_the_reference(case):
    tau, limit = (np.array(v, np.float64) for v in case)
    assert packet.check_torque(tau, limit) == TORQUE_CODES[schema.torque_problem(tau, limit)]


def test_check_torque_examples():
    limit = np.array([176.0, 40.0])
    assert packet.check_torque(np.array([176.0, -40.0]), limit) == packet.TORQUE_OK  # at the limit
    assert packet.check_torque(np.array([1.8e10, 0.0]), limit) == packet.TORQUE_OVER_LIMIT
    assert packet.check_torque(np.array([0.0, -4.3e302]), limit) == packet.TORQUE_OVER_LIMIT
    assert packet.check_torque(np.array([1e300, np.nan]), limit) == packet.TORQUE_NON_FINITE
