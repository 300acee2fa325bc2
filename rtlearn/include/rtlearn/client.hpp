// rtlearn C++ client: publish joint states to an `rtlearn serve` daemon and read its torque
// predictions back, from inside a 1 kHz torque callback (docs/cpp.md; wire format:
// docs/protocol.md).
//
// Header-only, C++17, needs only libzmq (link with -lzmq). Find this folder with
//     python -c "import rtlearn; print(rtlearn.get_include())"
//
// Hot path (send_state, poll_prediction): no exceptions, no blocking, no allocation by this
// code (libzmq itself mallocs one block per message it sends that is longer than 33 bytes).
// The msgpack subset is written and read here rather than with msgpack-c: msgpack-c's parser
// allocates its stack on every call, and its packer writes integral doubles (t = 1.0) as
// integers, which would change the bytes of the daemon's compiled fast path.
#pragma once

#include <zmq.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace rtlearn {

constexpr int kProtocolVersion = 1;
constexpr int kMaxJoints = 64;
constexpr std::size_t kMaxFrame = 4096;      // the daemon's limit for a state frame
constexpr std::size_t kMaxString = 256;      // bytes of a label / robot name on the wire

// The robot identity sent as "rid": 32-bit FNV-1a over the UTF-8 robot name followed, for
// each joint, by one 0x00 byte and the joint name.
inline uint32_t robot_id(const std::string& robot, const std::vector<std::string>& joints) {
    uint32_t h = 2166136261u;
    auto eat = [&h](unsigned char c) { h = (h ^ c) * 16777619u; };
    for (unsigned char c : robot) eat(c);
    for (const std::string& joint : joints) {
        eat(0);
        for (unsigned char c : joint) eat(c);
    }
    return h;
}

// One prediction of the daemon (docs/protocol.md, "Prediction socket").
struct Prediction {
    int64_t seq = -1;            // the seq of the state packet it answers
    double t = 0.0;              // that packet's t
    bool valid = false;          // false: tau is all zeros and must not be applied
    int n_joints = 0;
    double tau[kMaxJoints] = {}; // predicted torque, N*m
    char ctx[kMaxString + 1] = {};  // the context whose model answered
};

// The daemon's hello (sent after each subscription): what it serves.
struct Hello {
    bool received = false;
    int64_t n_joints = 0;
    char ctx[kMaxString + 1] = {};
    char robot[kMaxString + 1] = {};   // empty when the daemon does not send it
    bool has_rid = false;
    uint32_t rid = 0;
};

namespace wire {

// Writes the msgpack forms the daemon's compiled parser takes (rtlearn/kernels/packet.py).
class Writer {
public:
    Writer(uint8_t* out, std::size_t cap) : p_(out), begin_(out), end_(out + cap) {}
    bool ok() const { return ok_; }
    std::size_t size() const { return static_cast<std::size_t>(p_ - begin_); }

    void map(uint32_t n) { byte(static_cast<uint8_t>(0x80 | n)); }  // n <= 15 here
    void str(const char* s, std::size_t n) {  // n < 256: fixstr or str8
        if (n > 255) {
            ok_ = false;
        } else if (n < 32) {
            byte(static_cast<uint8_t>(0xA0 | n));
        } else {
            byte(0xD9);
            byte(static_cast<uint8_t>(n));
        }
        bytes(s, n);
    }
    void key(const char* s) { str(s, std::strlen(s)); }
    void uint(uint64_t v) {  // the smallest encoding, as msgpack-python writes it
        if (v < 0x80) {
            byte(static_cast<uint8_t>(v));
        } else if (v < 0x100) {
            byte(0xCC);
            be(v, 1);
        } else if (v < 0x10000) {
            byte(0xCD);
            be(v, 2);
        } else if (v < 0x100000000ull) {
            byte(0xCE);
            be(v, 4);
        } else {
            byte(0xCF);
            be(v, 8);
        }
    }
    void f64(double d) {
        uint64_t bits;
        std::memcpy(&bits, &d, 8);
        byte(0xCB);
        be(bits, 8);
    }
    // bin8 / bin16 of n little-endian float64
    void vector(const double* x, int n) {
        std::size_t size = 8u * static_cast<std::size_t>(n);
        if (size < 256) {
            byte(0xC4);
            be(size, 1);
        } else {
            byte(0xC5);
            be(size, 2);
        }
        if (!room(size)) return;
        for (int j = 0; j < n; ++j) {
            uint64_t bits;
            std::memcpy(&bits, &x[j], 8);
            for (int i = 0; i < 8; ++i) p_[8 * j + i] = static_cast<uint8_t>(bits >> (8 * i));
        }
        p_ += size;
    }

private:
    bool room(std::size_t n) {
        if (!ok_ || static_cast<std::size_t>(end_ - p_) < n) ok_ = false;
        return ok_;
    }
    void byte(uint8_t b) {
        if (room(1)) *p_++ = b;
    }
    void bytes(const char* s, std::size_t n) {
        if (!room(n)) return;
        std::memcpy(p_, s, n);
        p_ += n;
    }
    void be(uint64_t v, int k) {
        if (!room(static_cast<std::size_t>(k))) return;
        for (int i = 0; i < k; ++i) *p_++ = static_cast<uint8_t>(v >> (8 * (k - 1 - i)));
    }
    uint8_t* p_;
    uint8_t* begin_;
    uint8_t* end_;
    bool ok_ = true;
};

// A state packet into out -> its length, or 0 if it does not fit. Keys in the order of
// rtlearn.protocol.schema.encode_state (v, seq, t, q, qd, tau, qdd, ctx, stream), then rid;
// qdd / ctx may be null (absent).
inline std::size_t encode_state(uint8_t* out, std::size_t cap, uint64_t seq, double t, int n,
                                const double* q, const double* qd, const double* qdd,
                                const double* tau, const char* ctx, std::size_t ctx_len,
                                const uint64_t* stream, const uint32_t* rid) {
    Writer w(out, cap);
    w.map(6u + (qdd != nullptr) + (ctx != nullptr) + (stream != nullptr) + (rid != nullptr));
    w.key("v");
    w.uint(kProtocolVersion);
    w.key("seq");
    w.uint(seq);
    w.key("t");
    w.f64(t);
    w.key("q");
    w.vector(q, n);
    w.key("qd");
    w.vector(qd, n);
    w.key("tau");
    w.vector(tau, n);
    if (qdd != nullptr) {
        w.key("qdd");
        w.vector(qdd, n);
    }
    if (ctx != nullptr) {
        w.key("ctx");
        w.str(ctx, ctx_len);
    }
    if (stream != nullptr) {
        w.key("stream");
        w.uint(*stream);
    }
    if (rid != nullptr) {
        w.key("rid");
        w.uint(*rid);
    }
    return w.ok() ? w.size() : 0;
}

// A bounds-checked reader of one msgpack value at a time.
class Reader {
public:
    Reader(const uint8_t* data, std::size_t len) : p_(data), end_(data + len) {}
    bool ok() const { return ok_; }
    bool at_end() const { return p_ == end_; }

    // A map header -> its entry count (ok() false if the value is not a map).
    uint32_t map() {
        uint8_t b = peek();
        if (b >= 0x80 && b <= 0x8F) return ++p_, b & 0x0Fu;
        if (b == 0xDE) return ++p_, static_cast<uint32_t>(be(2));
        if (b == 0xDF) return ++p_, static_cast<uint32_t>(be(4));
        return fail(), 0;
    }
    uint32_t array() {
        uint8_t b = peek();
        if (b >= 0x90 && b <= 0x9F) return ++p_, b & 0x0Fu;
        if (b == 0xDC) return ++p_, static_cast<uint32_t>(be(2));
        if (b == 0xDD) return ++p_, static_cast<uint32_t>(be(4));
        return fail(), 0;
    }
    // A str -> pointer to its bytes and length (nullptr if not a str).
    const char* str(std::size_t& n) {
        uint8_t b = peek();
        if (b >= 0xA0 && b <= 0xBF) {
            ++p_;
            n = b & 0x1Fu;
        } else if (b >= 0xD9 && b <= 0xDB) {
            ++p_;
            n = static_cast<std::size_t>(be(1u << (b - 0xD9)));
        } else {
            return fail(), nullptr;
        }
        if (!ok_ || static_cast<std::size_t>(end_ - p_) < n) return fail(), nullptr;
        const char* s = reinterpret_cast<const char*>(p_);
        p_ += n;
        return s;
    }
    // A str copied NUL-terminated into out (at most kMaxString bytes; longer fails).
    bool str_into(char (&out)[kMaxString + 1]) {
        std::size_t n = 0;
        const char* s = str(n);
        if (s == nullptr || n > kMaxString) return fail(), false;
        std::memcpy(out, s, n);
        out[n] = '\0';
        return true;
    }
    // A non-negative integer below 2^63.
    bool uint(int64_t& v) {
        uint8_t b = peek();
        uint64_t u;
        if (b <= 0x7F) {
            ++p_;
            u = b;
        } else if (b >= 0xCC && b <= 0xCF) {
            ++p_;
            u = be(1u << (b - 0xCC));
        } else if (b >= 0xD0 && b <= 0xD3) {
            ++p_;
            int k = 1 << (b - 0xD0);
            u = be(static_cast<unsigned>(k));
            if (k < 8 && (u >> (8 * k - 1)) & 1u) return fail(), false;  // negative
        } else {
            return fail(), false;
        }
        if (!ok_ || u >> 63) return fail(), false;
        v = static_cast<int64_t>(u);
        return true;
    }
    // Any number (int or float) as a double.
    bool number(double& d) {
        uint8_t b = peek();
        if (b == 0xCB) {
            ++p_;
            uint64_t bits = be(8);
            std::memcpy(&d, &bits, 8);
        } else if (b == 0xCA) {
            ++p_;
            uint32_t bits = static_cast<uint32_t>(be(4));
            float f;
            std::memcpy(&f, &bits, 4);
            d = f;
        } else if (b >= 0xE0) {
            ++p_;
            d = static_cast<int8_t>(b);
        } else if (b >= 0xD0 && b <= 0xD3) {
            ++p_;
            int k = 1 << (b - 0xD0);
            uint64_t u = be(static_cast<unsigned>(k));
            if (k < 8) {
                uint64_t sign = uint64_t{1} << (8 * k - 1);
                d = static_cast<double>(static_cast<int64_t>((u ^ sign) - sign));
            } else {
                d = static_cast<double>(static_cast<int64_t>(u));
            }
        } else if (b <= 0x7F || (b >= 0xCC && b <= 0xCF)) {
            int64_t v = 0;
            if (b == 0xCF) {
                ++p_;
                d = static_cast<double>(be(8));
            } else if (uint(v)) {
                d = static_cast<double>(v);
            }
        } else {
            return fail(), false;
        }
        return ok_;
    }
    bool boolean(bool& v) {
        uint8_t b = peek();
        if (b != 0xC2 && b != 0xC3) return fail(), false;
        ++p_;
        v = b == 0xC3;
        return true;
    }
    // Skip any value; nesting deeper than `depth` fails (no recursion without bound).
    bool skip(int depth = 8) {
        uint8_t b = peek();
        if (!ok_) return false;
        std::size_t n = 0;
        if (b <= 0x7F || b >= 0xE0 || b == 0xC0 || b == 0xC2 || b == 0xC3) return ++p_, true;
        if (b >= 0xA0 && b <= 0xBF) return str(n) != nullptr;
        if (b >= 0xD9 && b <= 0xDB) return str(n) != nullptr;
        if ((b >= 0x80 && b <= 0x8F) || b == 0xDE || b == 0xDF) return items(2ull * map(), depth);
        if ((b >= 0x90 && b <= 0x9F) || b == 0xDC || b == 0xDD) return items(array(), depth);
        ++p_;
        switch (b) {
            case 0xC4: case 0xC5: case 0xC6: n = static_cast<std::size_t>(be(1u << (b - 0xC4))); break;
            case 0xC7: case 0xC8: case 0xC9: n = static_cast<std::size_t>(be(1u << (b - 0xC7))) + 1; break;
            case 0xCA: case 0xCE: case 0xD2: n = 4; break;
            case 0xCB: case 0xCF: case 0xD3: n = 8; break;
            case 0xCC: case 0xD0: n = 1; break;
            case 0xCD: case 0xD1: n = 2; break;
            case 0xD4: case 0xD5: case 0xD6: case 0xD7: case 0xD8: n = 1 + (std::size_t{1} << (b - 0xD4)); break;
            default: return fail(), false;  // 0xC1, never used
        }
        if (!ok_ || static_cast<std::size_t>(end_ - p_) < n) return fail(), false;
        p_ += n;
        return true;
    }

private:
    bool items(uint64_t count, int depth) {
        if (!ok_ || depth <= 0 || count > static_cast<uint64_t>(end_ - p_)) return fail(), false;
        for (uint64_t i = 0; i < count; ++i)
            if (!skip(depth - 1)) return false;
        return true;
    }
    uint8_t peek() {
        if (!ok_ || p_ >= end_) return fail(), 0xC1;
        return *p_;
    }
    uint64_t be(unsigned k) {
        if (!ok_ || static_cast<std::size_t>(end_ - p_) < k) return fail(), 0;
        uint64_t v = 0;
        for (unsigned i = 0; i < k; ++i) v = (v << 8) | *p_++;
        return v;
    }
    void fail() { ok_ = false; }
    const uint8_t* p_;
    const uint8_t* end_;
    bool ok_ = true;
};

enum class Kind { prediction, hello, other, invalid };

inline bool key_is(const char* k, std::size_t n, const char* want) {
    return n == std::strlen(want) && std::memcmp(k, want, n) == 0;
}

// Decode one frame of the prediction socket. A prediction fills `pred`, a hello `hello`;
// another kind (a later protocol addition) is `other`; anything malformed is `invalid`
// (and then pred / hello may be partly written).
inline Kind decode_message(const uint8_t* data, std::size_t len, Prediction& pred, Hello& hello) {
    Reader r(data, len);
    uint32_t count = r.map();
    // the kind may come after the other keys: read every field into both, decide at the end
    enum : unsigned { V = 1, KIND = 2, SEQ = 4, T = 8, TAU = 16, CTX = 32, VALID = 64, N = 128 };
    unsigned seen = 0;
    Kind kind = Kind::other;
    int64_t v = 0;
    for (uint32_t i = 0; i < count && r.ok(); ++i) {
        std::size_t n = 0;
        const char* k = r.str(n);
        if (k == nullptr) return Kind::invalid;
        if (key_is(k, n, "v")) {
            seen |= V;
            r.uint(v);
        } else if (key_is(k, n, "kind")) {
            seen |= KIND;
            std::size_t m = 0;
            const char* s = r.str(m);
            if (s == nullptr) return Kind::invalid;
            kind = key_is(s, m, "prediction") ? Kind::prediction
                 : key_is(s, m, "hello")      ? Kind::hello : Kind::other;
        } else if (key_is(k, n, "seq")) {
            seen |= SEQ;
            r.uint(pred.seq);
        } else if (key_is(k, n, "t")) {
            seen |= T;
            r.number(pred.t);
        } else if (key_is(k, n, "tau")) {
            seen |= TAU;
            uint32_t m = r.array();
            if (m > kMaxJoints) return Kind::invalid;
            pred.n_joints = static_cast<int>(m);
            for (uint32_t j = 0; j < m && r.ok(); ++j) r.number(pred.tau[j]);
        } else if (key_is(k, n, "ctx")) {
            seen |= CTX;
            if (r.str_into(pred.ctx)) std::memcpy(hello.ctx, pred.ctx, sizeof hello.ctx);
        } else if (key_is(k, n, "valid")) {
            seen |= VALID;
            r.boolean(pred.valid);
        } else if (key_is(k, n, "n_joints")) {
            seen |= N;
            r.uint(hello.n_joints);
        } else if (key_is(k, n, "robot")) {
            r.str_into(hello.robot);
        } else if (key_is(k, n, "rid")) {
            int64_t rid = 0;
            if (r.uint(rid) && rid <= 0xFFFFFFFFll) {
                hello.has_rid = true;
                hello.rid = static_cast<uint32_t>(rid);
            } else {
                return Kind::invalid;
            }
        } else {
            r.skip();
        }
    }
    if (!r.ok() || !r.at_end() || !(seen & V) || v != kProtocolVersion || !(seen & KIND))
        return Kind::invalid;
    if (kind == Kind::prediction) {
        const unsigned need = SEQ | T | TAU | CTX | VALID;
        return (seen & need) == need ? kind : Kind::invalid;
    }
    if (kind == Kind::hello) {
        if (!(seen & N)) return Kind::invalid;
        hello.received = true;
    }
    return kind;
}

}  // namespace wire

enum class Error {
    none,
    zmq,                   // a socket could not be created or connected (setup)
    handshake_timeout,     // no subscription on a state endpoint or no hello in time
    robot_mismatch,        // the daemon's hello names another robot (rid differs)
    joint_count_mismatch,  // the daemon's hello has another joint count
    bad_label,             // a ctx label of 0 or more than 64 bytes: packet not sent
    send_failed,           // zmq_send failed (not a full queue: a PUB drops silently)
    bad_frame,             // an undecodable frame on the prediction socket (skipped)
};

inline const char* to_string(Error e) {
    switch (e) {
        case Error::none: return "none";
        case Error::zmq: return "zmq";
        case Error::handshake_timeout: return "handshake_timeout";
        case Error::robot_mismatch: return "robot_mismatch";
        case Error::joint_count_mismatch: return "joint_count_mismatch";
        case Error::bad_label: return "bad_label";
        case Error::send_failed: return "send_failed";
        case Error::bad_frame: return "bad_frame";
    }
    return "?";
}

struct Options {
    std::vector<std::string> state_endpoints{"tcp://127.0.0.1:5601"};  // daemon, recorder, ...
    std::string prediction_endpoint = "tcp://127.0.0.1:5602";          // empty: no predictions
    int handshake_timeout_ms = 5000;
    int linger_ms = 1000;       // how long close() still delivers queued states
    int queue = 100000;         // ZeroMQ high-water mark of each socket, in messages
    bool send_rid = true;       // put the robot identity in every packet
    bool send_stream = true;    // a random id per client: the daemon sees restarts
};

struct Stats {
    uint64_t sent = 0;               // state packets handed to ZeroMQ
    uint64_t send_failures = 0;
    uint64_t predictions = 0;        // predictions received (every one, not only the latest)
    uint64_t prediction_gaps = 0;    // seqs skipped between two consecutive predictions
    uint64_t hellos = 0;
    uint64_t bad_frames = 0;
    int64_t first_prediction_seq = -1;
    int64_t last_prediction_seq = -1;
};

// Publishes joint states to the daemon and reads its predictions (docs/cpp.md).
// Set-up (constructor, connect) may allocate and block; send_state and poll_prediction do
// neither. Not thread-safe: call it from the control thread only.
class Client {
public:
    using ErrorHandler = void (*)(void* user, Error error, const char* message);

    Client(std::string robot, std::vector<std::string> joints, Options options = {})
        : robot_(std::move(robot)), joints_(std::move(joints)), opt_(std::move(options)),
          n_(static_cast<int>(joints_.size())), rid_(robot_id(robot_, joints_)) {
        if (joints_.empty() || joints_.size() > static_cast<std::size_t>(kMaxJoints))
            throw std::invalid_argument("rtlearn::Client: 1 to 64 joint names");
        if (opt_.state_endpoints.empty())
            throw std::invalid_argument("rtlearn::Client: no state endpoint");
        stream_ = std::random_device{}();  // 32 random bits, as RobotClient's
    }
    ~Client() { close(); }
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;

    // Open the sockets and wait (at most handshake_timeout_ms) until every state endpoint is
    // listening and the daemon said hello. false: see error() / error_message().
    bool connect() {
        close();
        zmq_ = zmq_ctx_new();
        pub_ = zmq_ ? zmq_socket(zmq_, ZMQ_XPUB) : nullptr;
        if (pub_ == nullptr) return fail(Error::zmq, "cannot create the state socket"), false;
        int one = 1;
        zmq_setsockopt(pub_, ZMQ_XPUB_VERBOSE, &one, sizeof one);  // one message per subscriber
        zmq_setsockopt(pub_, ZMQ_SNDHWM, &opt_.queue, sizeof opt_.queue);
        zmq_setsockopt(pub_, ZMQ_LINGER, &opt_.linger_ms, sizeof opt_.linger_ms);
        for (const std::string& ep : opt_.state_endpoints)
            if (!attach(pub_, ep)) return false;
        if (!opt_.prediction_endpoint.empty()) {
            sub_ = zmq_socket(zmq_, ZMQ_SUB);
            if (sub_ == nullptr) return fail(Error::zmq, "cannot create the prediction socket"), false;
            int zero = 0;
            zmq_setsockopt(sub_, ZMQ_LINGER, &zero, sizeof zero);
            zmq_setsockopt(sub_, ZMQ_RCVHWM, &opt_.queue, sizeof opt_.queue);
            zmq_setsockopt(sub_, ZMQ_SUBSCRIBE, "", 0);
            if (!attach(sub_, opt_.prediction_endpoint)) return false;
        }
        return handshake();
    }

    // Close the sockets (states still queued are delivered for up to linger_ms).
    void close() {
        if (pub_) zmq_close(pub_);
        if (sub_) zmq_close(sub_);
        if (zmq_) zmq_ctx_term(zmq_);
        pub_ = sub_ = zmq_ = nullptr;
    }

    // Publish one state -> its seq (0, 1, 2, ... per client), or -1 if nothing was sent.
    // qdd may be null (the daemon estimates it); ctx: an optional payload label. tau: the
    // torque the joints applied in this state (the learning target). Never blocks: a full
    // queue drops the packet, and the daemon counts the gap as lost.
    int64_t send_state(double t, const double* q, const double* qd, const double* qdd,
                       const double* tau, const char* ctx = nullptr) noexcept {
        std::size_t ctx_len = ctx ? std::strlen(ctx) : 0;
        if (ctx != nullptr && (ctx_len == 0 || ctx_len > 64))
            return fail(Error::bad_label, "ctx label must be 1..64 characters"), -1;
        uint32_t rid = rid_;
        uint64_t stream = stream_;
        std::size_t len = wire::encode_state(out_, sizeof out_, static_cast<uint64_t>(seq_), t, n_,
                                             q, qd, qdd, tau, ctx, ctx_len,
                                             opt_.send_stream ? &stream : nullptr,
                                             opt_.send_rid ? &rid : nullptr);
        if (len == 0 || pub_ == nullptr || zmq_send(pub_, out_, len, ZMQ_DONTWAIT) < 0) {
            ++stats_.send_failures;
            return fail(Error::send_failed, "state packet not sent"), -1;
        }
        ++stats_.sent;
        return seq_++;
    }

    // Read everything the daemon sent since the last call, without waiting. true: a new
    // prediction arrived and `out` holds the latest one (check out.valid and out.seq against
    // the seq you just sent); false: nothing new, `out` untouched. While the daemon serves
    // another robot or joint count (error() says which), its predictions are never returned.
    bool poll_prediction(Prediction& out) noexcept {
        if (sub_ == nullptr) return false;
        bool fresh = false;
        for (;;) {
            int len = zmq_recv(sub_, in_, sizeof in_, ZMQ_DONTWAIT);
            if (len < 0) break;
            if (static_cast<std::size_t>(len) > sizeof in_ || !accept(in_, static_cast<std::size_t>(len))) {
                ++stats_.bad_frames;
                fail(Error::bad_frame, "undecodable frame on the prediction socket");
                continue;
            }
            fresh = fresh || got_prediction_;
        }
        if (!fresh || mismatch_) return false;
        out = latest_;
        return true;
    }

    void set_error_handler(ErrorHandler handler, void* user) {
        handler_ = handler;
        handler_user_ = user;
    }
    Error error() const { return error_; }
    const char* error_message() const { return message_; }
    void clear_error() {
        error_ = Error::none;
        message_[0] = '\0';
    }
    // false while the last hello named another robot or joint count
    bool robot_ok() const { return !mismatch_; }

    const Hello& hello() const { return hello_; }
    const Stats& stats() const { return stats_; }
    uint32_t rid() const { return rid_; }
    uint64_t stream() const { return stream_; }
    int n_joints() const { return n_; }
    const std::string& robot() const { return robot_; }

private:
    bool attach(void* sock, const std::string& ep) {
        if (ep.rfind("tcp://[", 0) == 0) {  // IPv6 address
            int one = 1;
            zmq_setsockopt(sock, ZMQ_IPV6, &one, sizeof one);
        }
        if (zmq_connect(sock, ep.c_str()) != 0) {
            std::snprintf(message_, sizeof message_, "cannot connect to %s: %s", ep.c_str(),
                          zmq_strerror(zmq_errno()));
            return fail(Error::zmq, message_), false;
        }
        return true;
    }

    bool handshake() {
        using clock = std::chrono::steady_clock;
        auto deadline = clock::now() + std::chrono::milliseconds(opt_.handshake_timeout_ms);
        std::size_t subscribers = 0;
        while (subscribers < opt_.state_endpoints.size() || (sub_ && !hello_.received)) {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
            if (left.count() <= 0) {
                std::snprintf(message_, sizeof message_,
                              "handshake incomplete after %d ms: %zu of %zu state endpoints "
                              "listening, daemon hello %s", opt_.handshake_timeout_ms,
                              subscribers, opt_.state_endpoints.size(),
                              hello_.received ? "received" : "missing");
                return fail(Error::handshake_timeout, message_), false;
            }
            zmq_pollitem_t items[2] = {{pub_, 0, ZMQ_POLLIN, 0}, {sub_, 0, ZMQ_POLLIN, 0}};
            if (zmq_poll(items, sub_ ? 2 : 1, static_cast<long>(left.count())) < 0) continue;
            if (items[0].revents & ZMQ_POLLIN) {
                uint8_t frame[256];
                while (zmq_recv(pub_, frame, sizeof frame, ZMQ_DONTWAIT) >= 1)
                    if (frame[0] == 1) ++subscribers;
            }
            if (sub_ && (items[1].revents & ZMQ_POLLIN)) {
                Prediction ignored;
                poll_prediction(ignored);
            }
        }
        return !mismatch_;
    }

    // One decoded frame into latest_ / hello_; false if it is not a valid message.
    bool accept(const uint8_t* data, std::size_t len) {
        got_prediction_ = false;
        scratch_hello_ = Hello{};
        wire::Kind kind = wire::decode_message(data, len, scratch_, scratch_hello_);
        if (kind == wire::Kind::invalid) return false;
        if (kind == wire::Kind::hello) {
            hello_ = scratch_hello_;
            ++stats_.hellos;
            check_hello();
        } else if (kind == wire::Kind::prediction) {
            if (stats_.last_prediction_seq >= 0 && scratch_.seq > stats_.last_prediction_seq + 1)
                stats_.prediction_gaps += static_cast<uint64_t>(scratch_.seq - stats_.last_prediction_seq - 1);
            if (stats_.first_prediction_seq < 0) stats_.first_prediction_seq = scratch_.seq;
            stats_.last_prediction_seq = scratch_.seq;
            ++stats_.predictions;
            latest_ = scratch_;
            got_prediction_ = true;
        }
        return true;
    }

    void check_hello() {
        if (hello_.n_joints != n_) {
            std::snprintf(message_, sizeof message_, "the daemon serves %lld joints, this client "
                          "has %d", static_cast<long long>(hello_.n_joints), n_);
            mismatch_ = true;
            fail(Error::joint_count_mismatch, message_);
        } else if (hello_.has_rid && hello_.rid != rid_) {
            std::snprintf(message_, sizeof message_, "the daemon serves robot '%s' (rid %u), "
                          "this client is '%s' (rid %u): predictions ignored", hello_.robot,
                          hello_.rid, robot_.c_str(), rid_);
            mismatch_ = true;
            fail(Error::robot_mismatch, message_);
        } else if (mismatch_) {
            mismatch_ = false;
            clear_error();
        }
    }

    void fail(Error e, const char* message) noexcept {
        bool changed = e != error_;
        error_ = e;
        if (message != message_) std::snprintf(message_, sizeof message_, "%s", message);
        if (changed && handler_) handler_(handler_user_, e, message_);
    }

    std::string robot_;
    std::vector<std::string> joints_;
    Options opt_;
    int n_;
    uint32_t rid_;
    uint64_t stream_ = 0;
    int64_t seq_ = 0;
    void* zmq_ = nullptr;
    void* pub_ = nullptr;
    void* sub_ = nullptr;
    uint8_t out_[kMaxFrame];
    uint8_t in_[kMaxFrame];
    Prediction latest_;
    Prediction scratch_;
    Hello hello_;
    Hello scratch_hello_;
    bool got_prediction_ = false;
    bool mismatch_ = false;
    Stats stats_;
    Error error_ = Error::none;
    char message_[512] = {};
    ErrorHandler handler_ = nullptr;
    void* handler_user_ = nullptr;
};

}  // namespace rtlearn
