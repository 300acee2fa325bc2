"""The common state packet and the prediction reply in compiled code (docs/protocol.md).

`parse_state` decodes the state packets `encode_state` writes (and the same content in any
key order or integer encoding); for anything else it answers FALLBACK and the caller runs
rtlearn.protocol.schema.read_state, which stays the reference and names the error. So an OK
status promises that read_state would accept the frame with bit-identical values.

Handled: a fixmap / map16 of at most 16 entries whose keys are fixstr and among v, seq, t, q,
qd, tau, qdd, ctx, stream, rid, each at most once, and nothing after the map; v an int equal
to 1; seq and stream ints in [0, 2^63); rid an int in [0, 2^32) equal to the daemon's rid
(unless that is -1: any); t a float64, float32 or int, finite; q, qd, tau, qdd bin8 / bin16
of exactly 8 n bytes, all finite; qdd, ctx, stream and rid may be nil (= absent); ctx a
fixstr / str8 that equals ctx_now byte for byte, or else 1..64 printable ASCII characters.
Everything else -- float arrays, other encodings, unknown keys, non-ASCII labels other than
ctx_now, another robot's rid, any invalid input -- is FALLBACK. The frame is never read out of bounds.

`check_torque` decides whether a prediction may be published as valid (schema.torque_problem
is its reference); `encode_prediction_into` writes the reply (schema.encode_prediction).
"""

import numpy as np

from numba import njit, types
from numba.extending import intrinsic

from . import JIT

# parse_state status codes (>= 0: decoded)
OK_NO_LABEL = 0      # no ctx (or nil)
OK_SAME_LABEL = 1    # ctx equal to ctx_now
OK_OTHER_LABEL = 2   # ctx another valid label: frame[head[H_CTX_AT]:][:head[H_CTX_LEN]], ASCII
FALLBACK = -1        # run schema.read_state

# check_torque results
TORQUE_OK = 0
TORQUE_OVER_LIMIT = 1    # finite, but |tau[j]| > limit[j] for some joint
TORQUE_NON_FINITE = 2    # NaN or +-inf in some joint

# parse_state's int64 head (HEAD_LEN entries)
H_SEQ = 0         # seq
H_T = 1           # t: the bits of the float64 (read it through head.view(np.float64)[H_T])
H_HAS_STREAM = 2  # 1 if stream is present, else 0
H_STREAM = 3      # stream (0 when absent)
H_HAS_QDD = 4     # 1 if qdd is present (vec[3] written), else 0
H_CTX_AT = 5      # offset of the ctx bytes in buf (0 when absent)
H_CTX_LEN = 6     # their length (0 when absent)
HEAD_LEN = 7

# schema's limits, copied: numba's cache would not see a change made there (test-checked)
MAX_STATE_FRAME = 4096
MAX_JOINTS = 64          # 8 n bytes within msgpack's max_bin_len 512
MAX_LABEL = 64
MAX_RID = 2 ** 32 - 1

# key ids, also the bit of each in the seen-mask
_V, _SEQ, _T, _Q, _QD, _TAU, _QDD, _CTX, _STREAM, _RID = range(10)
_REQUIRED = (1 << _V) | (1 << _SEQ) | (1 << _T) | (1 << _Q) | (1 << _QD) | (1 << _TAU)
_EXP = np.int64(0x7FF)

# int kinds of _read_int
_NOT_INT = 0
_INT64 = 1    # value fits int64
_UINT64 = 2   # uint64 >= 2^63; the value holds its bits


@intrinsic
def _f64_from_bits(typingctx, bits):
    """The float64 whose IEEE-754 bits are the int64 `bits` (a reinterpretation)."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(types.float64))
    return types.float64(types.int64), codegen


@intrinsic
def _f32_from_bits(typingctx, bits):
    """The float32 whose IEEE-754 bits are the int32 `bits` (a reinterpretation)."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(types.float32))
    return types.float32(types.int32), codegen


@intrinsic
def _bits_of_f64(typingctx, x):
    """The IEEE-754 bits of the float64 `x` as an int64 (a reinterpretation)."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(types.int64))
    return types.int64(types.float64), codegen


@njit(**JIT)
def _be(buf, p, k):
    """The k-byte big-endian unsigned integer at buf[p:p+k] as int64 bits (caller checks
    bounds; k = 8 wraps to negative for values >= 2^63)."""
    v = np.int64(0)
    for i in range(k):
        v = (v << 8) | np.int64(buf[p + i])
    return v


@njit(**JIT)
def _read_int(buf, p, end):
    """A msgpack int at buf[p] -> (kind, value, position after it); kind _NOT_INT for any
    other type or a truncated value."""
    b = np.int64(buf[p])
    if b <= 0x7F:
        return _INT64, b, p + 1
    if b >= 0xE0:
        return _INT64, b - 256, p + 1
    if 0xCC <= b <= 0xCF:
        k = np.int64(1) << (b - 0xCC)
        if p + 1 + k > end:
            return _NOT_INT, np.int64(0), p
        v = _be(buf, p + 1, k)
        return (_UINT64 if v < 0 else _INT64), v, p + 1 + k
    if 0xD0 <= b <= 0xD3:
        k = np.int64(1) << (b - 0xD0)
        if p + 1 + k > end:
            return _NOT_INT, np.int64(0), p
        v = _be(buf, p + 1, k)
        if k < 8:
            sign = np.int64(1) << (8 * k - 1)
            v = (v ^ sign) - sign
        return _INT64, v, p + 1 + k
    return _NOT_INT, np.int64(0), p


@njit(**JIT)
def _key_id(buf, p, k):
    """The id of the k-byte key at buf[p:p+k], or -1 for a key the fast path does not know."""
    c0 = buf[p]
    if k == 1:
        if c0 == 118:    # v
            return _V
        if c0 == 116:    # t
            return _T
        if c0 == 113:    # q
            return _Q
    elif k == 2:
        if c0 == 113 and buf[p + 1] == 100:    # qd
            return _QD
    elif k == 3:
        c1 = buf[p + 1]
        c2 = buf[p + 2]
        if c0 == 115 and c1 == 101 and c2 == 113:    # seq
            return _SEQ
        if c0 == 116 and c1 == 97 and c2 == 117:     # tau
            return _TAU
        if c0 == 113 and c1 == 100 and c2 == 100:    # qdd
            return _QDD
        if c0 == 99 and c1 == 116 and c2 == 120:     # ctx
            return _CTX
        if c0 == 114 and c1 == 105 and c2 == 100:    # rid
            return _RID
    elif k == 6:
        if (buf[p] == 115 and buf[p + 1] == 116 and buf[p + 2] == 114 and buf[p + 3] == 101
                and buf[p + 4] == 97 and buf[p + 5] == 109):    # stream
            return _STREAM
    return -1


@njit(**JIT)
def _read_vector(buf, p, end, n, vec, row):
    """A bin8 / bin16 of n little-endian finite float64 at buf[p] into vec[row] -> position
    after it, or -1 for anything else."""
    b = buf[p]
    if b == 0xC4:
        if p + 2 > end:
            return -1
        size = np.int64(buf[p + 1])
        p += 2
    elif b == 0xC5:
        if p + 3 > end:
            return -1
        size = _be(buf, p + 1, 2)
        p += 3
    else:
        return -1
    if size != 8 * n or p + size > end:
        return -1
    for j in range(n):
        a = p + 8 * j
        bits = np.int64(0)
        for i in range(7, -1, -1):
            bits = (bits << 8) | np.int64(buf[a + i])
        if (bits >> 52) & _EXP == _EXP:    # inf or NaN
            return -1
        vec[row, j] = _f64_from_bits(bits)
    return p + size


@njit(**JIT)
def parse_state(buf, n, vec, head, ctx_now, rid=-1):
    """Decode a state packet of n joints from the frame bytes buf -> status. buf: a uint8
    array (np.frombuffer(frame, np.uint8)) or the bytes object itself (cheaper to pass).
    rid: the robot identity a packet's "rid" must equal (-1: any); a packet without one
    passes.

    On an OK status (>= 0): vec (float64, (4, n)) holds q, qd, tau and, when
    head[H_HAS_QDD], qdd in its rows 0..3; head (int64, HEAD_LEN) holds seq, the bits of t,
    stream and the ctx position (the H_* constants). ctx_now: the active context label's
    UTF-8 bytes (a valid label, or empty to match none). FALLBACK for anything the fast path
    does not handle or that is invalid; vec and head are then undefined.
    """
    end = len(buf)
    if (end > MAX_STATE_FRAME or end == 0 or n < 1 or n > MAX_JOINTS or vec.shape[0] < 4
            or vec.shape[1] < n or head.shape[0] < HEAD_LEN):
        return FALLBACK
    b = np.int64(buf[0])
    if 0x80 <= b <= 0x8F:
        count = b - 0x80
        p = 1
    elif b == 0xDE and end >= 3:
        count = _be(buf, 1, 2)
        p = 3
        if count > 16:    # msgpack's max_map_len
            return FALLBACK
    else:
        return FALLBACK
    seen = 0
    status = OK_NO_LABEL
    head[H_HAS_STREAM] = 0
    head[H_STREAM] = 0
    head[H_HAS_QDD] = 0
    head[H_CTX_AT] = 0
    head[H_CTX_LEN] = 0
    for _ in range(count):
        if p >= end:
            return FALLBACK
        kb = np.int64(buf[p])
        if not 0xA0 <= kb <= 0xBF:
            return FALLBACK
        k = kb - 0xA0
        if k == 0 or p + 1 + k >= end:    # the value needs one byte at least
            return FALLBACK
        key = _key_id(buf, p + 1, k)
        if key < 0 or seen & (1 << key):
            return FALLBACK
        seen |= 1 << key
        p += 1 + k
        vb = buf[p]
        if vb == 0xC0 and (key == _QDD or key == _CTX or key == _STREAM or key == _RID):
            p += 1    # nil: absent
        elif key == _V:
            kind, v, p = _read_int(buf, p, end)
            if kind != _INT64 or v != 1:
                return FALLBACK
        elif key == _RID:
            kind, v, p = _read_int(buf, p, end)
            if kind != _INT64 or v < 0 or v > MAX_RID or (rid >= 0 and v != rid):
                return FALLBACK
        elif key == _SEQ or key == _STREAM:
            kind, v, p = _read_int(buf, p, end)
            if kind != _INT64 or v < 0:
                return FALLBACK
            if key == _SEQ:
                head[H_SEQ] = v
            else:
                head[H_HAS_STREAM] = 1
                head[H_STREAM] = v
        elif key == _T:
            if vb == 0xCB:
                if p + 9 > end:
                    return FALLBACK
                bits = _be(buf, p + 1, 8)
                p += 9
            elif vb == 0xCA:
                if p + 5 > end:
                    return FALLBACK
                t32 = _f32_from_bits(np.int32(_be(buf, p + 1, 4)))
                bits = _bits_of_f64(np.float64(t32))
                p += 5
            else:
                kind, v, p = _read_int(buf, p, end)
                if kind == _NOT_INT:
                    return FALLBACK
                bits = _bits_of_f64(np.float64(np.uint64(v)) if kind == _UINT64
                                    else np.float64(v))
            if (bits >> 52) & _EXP == _EXP:
                return FALLBACK
            head[H_T] = bits
        elif key == _CTX:
            if 0xA0 <= vb <= 0xBF:
                size = np.int64(vb) - 0xA0
                p += 1
            elif vb == 0xD9 and p + 2 <= end:
                size = np.int64(buf[p + 1])
                p += 2
            else:
                return FALLBACK
            if size == 0 or p + size > end:
                return FALLBACK
            same = size == ctx_now.shape[0]
            ascii = size <= MAX_LABEL
            for i in range(size):
                c = buf[p + i]
                same = same and c == ctx_now[i]
                ascii = ascii and 0x20 <= c <= 0x7E    # str.isprintable() holds for these
            if same:
                status = OK_SAME_LABEL
            elif ascii:
                status = OK_OTHER_LABEL
            else:
                return FALLBACK
            head[H_CTX_AT] = p
            head[H_CTX_LEN] = size
            p += size
        else:
            row = 3 if key == _QDD else key - _Q    # _Q, _QD, _TAU are rows 0, 1, 2
            p = _read_vector(buf, p, end, n, vec, row)
            if p < 0:
                return FALLBACK
            if key == _QDD:
                head[H_HAS_QDD] = 1
    if p != end or seen & _REQUIRED != _REQUIRED:
        return FALLBACK
    return status


@njit(**JIT)
def check_torque(tau, limit):
    """TORQUE_NON_FINITE if a tau[j] is NaN or inf, else TORQUE_OVER_LIMIT if some |tau[j]| >
    limit[j] (limit: the robot's torque limits times the margin), else TORQUE_OK."""
    status = TORQUE_OK
    for j in range(tau.shape[0]):
        x = tau[j]
        if not np.isfinite(x):
            return TORQUE_NON_FINITE
        if abs(x) > limit[j]:
            status = TORQUE_OVER_LIMIT
    return status


@njit(**JIT)
def _put_be(out, p, v, k):
    """Write the low k bytes of int64 v big-endian at out[p] -> position after them."""
    for i in range(k):
        out[p + i] = (v >> (8 * (k - 1 - i))) & 0xFF
    return p + k


@njit(**JIT)
def _put_head(out, p, size, fix, fix_max, code16, code32):
    """A msgpack length header (fix form below fix_max, else 16 or 32 bits) -> position."""
    if size < fix_max:
        out[p] = fix | size
        return p + 1
    if size < 65536:
        out[p] = code16
        return _put_be(out, p + 1, size, 2)
    out[p] = code32
    return _put_be(out, p + 1, size, 4)


@njit(**JIT)
def _put_str(out, p, chars):
    """A fixstr of the ASCII codes in the tuple chars -> position after it."""
    out[p] = 0xA0 | len(chars)
    for i, c in enumerate(chars):
        out[p + 1 + i] = c
    return p + 1 + len(chars)


@njit(**JIT)
def encode_prediction_into(out, seq, t, tau, ctx, valid):
    """Write the prediction message into out (uint8) -> its length, or -1 if out is too
    small or seq < 0 (seqs are validated non-negative). The bytes are those of
    schema.encode_prediction(seq, t, tau, ctx_str, valid), i.e. msgpack.packb of {v, kind,
    seq, t, tau, ctx, valid} in that order (ints in their smallest encoding, floats as
    float64); ctx: the label's UTF-8 bytes.
    """
    n = tau.shape[0]
    size = ctx.shape[0]
    if seq < 0 or out.shape[0] < 69 + 9 * n + size:    # 69: keys, "prediction", headers
        return -1
    out[0] = 0x87
    p = _put_str(out, 1, (118,))    # v
    out[p] = 1
    p = _put_str(out, p + 1, (107, 105, 110, 100))    # kind
    p = _put_str(out, p, (112, 114, 101, 100, 105, 99, 116, 105, 111, 110))    # prediction
    p = _put_str(out, p, (115, 101, 113))    # seq
    if seq < 0x80:
        out[p] = seq
        p += 1
    elif seq < 0x100:
        out[p] = 0xCC
        p = _put_be(out, p + 1, seq, 1)
    elif seq < 0x10000:
        out[p] = 0xCD
        p = _put_be(out, p + 1, seq, 2)
    elif seq < 0x100000000:
        out[p] = 0xCE
        p = _put_be(out, p + 1, seq, 4)
    else:
        out[p] = 0xCF
        p = _put_be(out, p + 1, seq, 8)
    p = _put_str(out, p, (116,))    # t
    out[p] = 0xCB
    p = _put_be(out, p + 1, _bits_of_f64(t), 8)
    p = _put_str(out, p, (116, 97, 117))    # tau
    p = _put_head(out, p, n, 0x90, 16, 0xDC, 0xDD)
    for j in range(n):
        out[p] = 0xCB
        p = _put_be(out, p + 1, _bits_of_f64(tau[j]), 8)
    p = _put_str(out, p, (99, 116, 120))    # ctx
    if 32 <= size < 256:    # str8 sits between fixstr and str16
        out[p] = 0xD9
        out[p + 1] = size
        p += 2
    else:
        p = _put_head(out, p, size, 0xA0, 32, 0xDA, 0xDB)
    for i in range(size):
        out[p + i] = ctx[i]
    p = _put_str(out, p + size, (118, 97, 108, 105, 100))    # valid
    out[p] = 0xC3 if valid else 0xC2
    return p + 1
