"""The wire format: round trips, every rejection reason, and the decoder fuzzed with hypothesis."""

from __future__ import annotations

import math

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtlearn.protocol import schema
from rtlearn.protocol.schema import (ControlError, ProtocolError, decode_prediction_message,
                                     decode_reply, decode_request, decode_state, encode_error,
                                     encode_hello, encode_prediction, encode_reply,
                                     encode_request, encode_state, read_state)
from rtlearn.protocol.state import JointState

FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@st.composite
def joint_states(draw):
    n = draw(st.integers(1, 12))
    vec = st.lists(finite, min_size=n, max_size=n).map(np.array)
    return JointState(seq=draw(st.integers(0, 2 ** 63 - 1)), t=draw(finite), q=draw(vec),
                      qd=draw(vec), qdd=draw(st.none() | vec), tau=draw(vec),
                      context=draw(st.none() | st.text(st.characters(codec="utf-8",
                                                                      categories=["L", "N"]),
                                                       min_size=1, max_size=64)))


def as_lists(state: JointState) -> bytes:
    """The same packet as another language's client might write it: float arrays, no bin."""
    msg = {"v": 1, "seq": state.seq, "t": state.t, "q": state.q.tolist(), "qd": state.qd.tolist(),
           "tau": state.tau.tolist()}
    if state.qdd is not None:
        msg["qdd"] = state.qdd.tolist()
    if state.context is not None:
        msg["ctx"] = state.context
    return msgpack.packb(msg)


def same(a: JointState, b: JointState) -> None:
    assert (a.seq, a.t, a.context) == (b.seq, b.t, b.context)
    for k in ("q", "qd", "tau", "qdd"):
        x, y = getattr(a, k), getattr(b, k)
        assert (x is None) == (y is None)
        if x is not None:
            assert y.dtype == np.float64 and y.flags.writeable
            np.testing.assert_array_equal(x, y)


@FUZZ
@given(joint_states(), st.none() | st.integers(0, 2 ** 32 - 1))
def test_state_round_trip_bin_and_lists(state, stream):
    decoded, got_stream = read_state(encode_state(state, stream))
    same(state, decoded)
    assert got_stream == stream
    same(state, decode_state(as_lists(state), n_joints=len(state.q)))


def test_encoded_state_layout_is_documented_little_endian_float64():
    s = JointState(5, 0.25, np.array([1.0, -2.0]), np.zeros(2), None, np.array([0.5, 3.0]), "heavy")
    msg = msgpack.unpackb(encode_state(s, stream=9))
    assert msg == {"v": 1, "seq": 5, "t": 0.25, "q": bytes.fromhex("000000000000f03f00000000000000c0"),
                   "qd": bytes(16), "tau": bytes.fromhex("000000000000e03f0000000000000840"),
                   "ctx": "heavy", "stream": 9}


BASE = {"v": 1, "seq": 1, "t": 0.0, "q": [0.0, 1.0], "qd": [0.0, 0.0], "tau": [1.0, 2.0]}


@pytest.mark.parametrize("data, reason", [
    (b"", "malformed"),
    (b"\x81", "malformed"),                              # truncated map
    (msgpack.packb(BASE) + b"\x00", "malformed"),        # trailing bytes
    (msgpack.packb({1: 2}), "malformed"),                # non-string map key
    (b"\xdf\xff\xff\xff\xff", "malformed"),              # map beyond max_map_len
    (msgpack.packb([BASE]), "not_a_map"),
    (msgpack.packb({**BASE, "v": 2}), "version"),
    (msgpack.packb({**BASE, "v": True}), "version"),
    (msgpack.packb({k: v for k, v in BASE.items() if k != "tau"}), "missing_field"),
    (msgpack.packb({**BASE, "seq": 1.0}), "bad_type"),
    (msgpack.packb({**BASE, "seq": True}), "bad_type"),
    (msgpack.packb({**BASE, "t": "0"}), "bad_type"),
    (msgpack.packb({**BASE, "q": {"a": 1}}), "bad_type"),
    (msgpack.packb({**BASE, "q": [0.0, None]}), "bad_type"),
    (msgpack.packb({**BASE, "q": [0.0, False]}), "bad_type"),
    (msgpack.packb({**BASE, "q": [[0.0], [1.0]]}), "bad_type"),
    (msgpack.packb({**BASE, "ctx": 3}), "bad_type"),
    (msgpack.packb({**BASE, "q": []}), "bad_length"),
    (msgpack.packb({**BASE, "qd": [0.0]}), "bad_length"),
    (msgpack.packb({**BASE, "qdd": [0.0] * 3}), "bad_length"),
    (msgpack.packb({**BASE, "tau": b"\x00" * 15}), "bad_length"),
    (msgpack.packb({**BASE, "t": math.nan}), "non_finite"),
    (msgpack.packb({**BASE, "tau": [1.0, math.inf]}), "non_finite"),
    (msgpack.packb({**BASE, "qd": np.array([0.0, -math.inf]).tobytes()}), "non_finite"),
    (msgpack.packb({**BASE, "seq": -1}), "bad_value"),
    (msgpack.packb({**BASE, "ctx": ""}), "bad_value"),
    (msgpack.packb({**BASE, "ctx": "a\nb"}), "bad_value"),
    (msgpack.packb({**BASE, "pad": "x" * 5000}), "oversized"),
    (msgpack.packb({**BASE, "x": msgpack.ExtType(1, b"abc")}), "malformed"),
])
def test_each_rejection_has_its_reason(data, reason):
    with pytest.raises(ProtocolError) as e:
        decode_state(data)
    assert e.value.reason == reason


def test_robot_joint_count_is_enforced():
    with pytest.raises(ProtocolError) as e:
        decode_state(msgpack.packb(BASE), n_joints=7)
    assert e.value.reason == "bad_length"


def check_decoder(data: bytes) -> None:
    """The decoder's contract: a valid JointState, or ProtocolError with a known reason."""
    try:
        s, stream = read_state(data)
    except ProtocolError as e:
        assert e.reason in schema.REASONS
        return
    n = len(s.q)
    assert 1 <= n <= schema.MAX_JOINTS
    for v in (s.q, s.qd, s.tau) + (() if s.qdd is None else (s.qdd,)):
        assert v.shape == (n,) and v.dtype == np.float64 and np.isfinite(v).all()
    assert isinstance(s.seq, int) and 0 <= s.seq < 2 ** 63 and math.isfinite(s.t)
    assert s.context is None or 0 < len(s.context) <= schema.MAX_LABEL


@FUZZ
@given(st.binary(max_size=600))
def test_decoder_fuzz_random_bytes(data):
    check_decoder(data)


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 63, 2 ** 64 - 1) | st.floats(width=64)
    | st.text(max_size=80) | st.binary(max_size=80),
    lambda inner: st.lists(inner, max_size=9) | st.dictionaries(st.text(max_size=6), inner, max_size=8),
    max_leaves=30)
vector_like = (st.lists(st.floats(width=64) | st.integers(-2 ** 63, 2 ** 63) | st.booleans(),
                        min_size=0, max_size=9)
               | st.binary(max_size=80) | msgpack_values)


@FUZZ
@given(st.fixed_dictionaries(
    {},
    optional={"v": st.sampled_from([1, 1, 1, 2, True, "1", 1.0]), "seq": msgpack_values | st.integers(-5, 2 ** 64 - 1),
              "t": msgpack_values, "q": vector_like, "qd": vector_like, "qdd": vector_like,
              "tau": vector_like, "ctx": msgpack_values, "stream": msgpack_values,
              "extra": msgpack_values}))
def test_decoder_fuzz_structured_packets(msg):
    try:
        data = msgpack.packb(msg)
    except (OverflowError, ValueError):
        return  # not representable in msgpack: nothing a client could send
    check_decoder(data)


@FUZZ
@given(st.binary(max_size=300) | msgpack_values.map(lambda v: msgpack.packb(v)))
def test_control_decoder_fuzz(data):
    try:
        cmd, args = decode_request(data)
    except ProtocolError as e:
        assert e.reason in schema.REASONS
        return
    assert cmd in schema.COMMANDS and isinstance(args, dict)


def test_prediction_and_hello_round_trip():
    p = decode_prediction_message(encode_prediction(42, 0.042, np.array([1.5, -2.0]), "heavy"))
    assert (p.seq, p.t, p.context, p.valid) == (42, 0.042, "heavy", True)
    np.testing.assert_array_equal(p.tau, [1.5, -2.0])
    h = decode_prediction_message(encode_hello(7, "none"))
    assert (h.n_joints, h.context) == (7, "none")


def test_control_messages():
    assert decode_request(encode_request("options", lr=0.01, memory=False)) == \
        ("options", {"lr": 0.01, "memory": False})
    assert decode_reply(encode_reply({"a": 1})) == {"a": 1}
    with pytest.raises(ControlError) as e:
        decode_reply(encode_error("bad_path", "nope"))
    assert (e.value.reason, e.value.message) == ("bad_path", "nope")
    for bad, reason in [(encode_request("fly"), "bad_value"),
                        (encode_request("options", lr=math.nan), "bad_value"),
                        (encode_request("options", lr=-1), "bad_value"),
                        (encode_request("options", lr=0.0), "bad_value"),
                        (encode_request("options", lr=1e308), "bad_value"),
                        (encode_request("options", lr=2 ** 64 - 1), "bad_value"),
                        (encode_request("options", rate=1.0), "bad_value"),
                        (encode_request("context", name=""), "bad_value"),
                        (encode_request("load"), "missing_field")]:
        with pytest.raises(ProtocolError) as e:
            decode_request(bad)
        assert e.value.reason == reason
