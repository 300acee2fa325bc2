// The C++ client's wire format, driven by tests/test_cpp_client.py through stdin / stdout:
//   wire_check encode   lines "seq t n q.. qd.. tau.. has_qdd [qdd..] ctx stream rid" -> hex frames
//                       (floats as C99 hex floats, ctx as hex bytes; "-" for absent)
//   wire_check decode   lines of hex frames -> one line per frame (kind and fields)
//   wire_check rid ROBOT JOINT...   -> the robot identity
//   wire_check client STATE_EP PREDICTION_EP SEND_RID ROBOT JOINT...
//                       connect (1 s handshake), then poll 1 s -> one JSON line
#include <rtlearn/client.hpp>

#include <time.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace {

std::vector<uint8_t> unhex(const std::string& s) {
    std::vector<uint8_t> out;
    for (std::size_t i = 0; i + 1 < s.size(); i += 2)
        out.push_back(static_cast<uint8_t>(std::stoi(s.substr(i, 2), nullptr, 16)));
    return out;
}

void hex(const uint8_t* p, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) std::printf("%02x", p[i]);
}

void vec(std::istringstream& in, int n, double* x) {
    std::string w;
    for (int j = 0; j < n; ++j) {
        in >> w;
        x[j] = std::strtod(w.c_str(), nullptr);
    }
}

int encode() {
    std::string line;
    while (std::getline(std::cin, line)) {
        std::istringstream in(line);
        uint64_t seq;
        std::string t, ctx, stream, rid;
        int n, has_qdd;
        double q[rtlearn::kMaxJoints], qd[rtlearn::kMaxJoints], tau[rtlearn::kMaxJoints],
            qdd[rtlearn::kMaxJoints];
        in >> seq >> t >> n;
        vec(in, n, q);
        vec(in, n, qd);
        vec(in, n, tau);
        in >> has_qdd;
        if (has_qdd) vec(in, n, qdd);
        in >> ctx >> stream >> rid;
        std::vector<uint8_t> label = unhex(ctx);
        uint64_t s = stream == "-" ? 0 : std::stoull(stream);
        uint32_t r = rid == "-" ? 0 : static_cast<uint32_t>(std::stoul(rid));
        uint8_t out[rtlearn::kMaxFrame];
        std::size_t len = rtlearn::wire::encode_state(
            out, sizeof out, seq, std::strtod(t.c_str(), nullptr), n, q, qd, has_qdd ? qdd : nullptr,
            tau, ctx == "-" ? nullptr : reinterpret_cast<const char*>(label.data()), label.size(),
            stream == "-" ? nullptr : &s, rid == "-" ? nullptr : &r);
        hex(out, len);
        std::printf("\n");
    }
    return 0;
}

int decode() {
    std::string line;
    while (std::getline(std::cin, line)) {
        std::vector<uint8_t> frame = unhex(line);
        rtlearn::Prediction p;
        rtlearn::Hello h;
        // data() of an empty vector may be null: give the reader a real (empty) range
        uint8_t none = 0;
        auto kind = rtlearn::wire::decode_message(frame.empty() ? &none : frame.data(),
                                                  frame.size(), p, h);
        if (kind == rtlearn::wire::Kind::invalid) {
            std::printf("invalid\n");
        } else if (kind == rtlearn::wire::Kind::other) {
            std::printf("other\n");
        } else if (kind == rtlearn::wire::Kind::prediction) {
            std::printf("prediction %lld %a %d %d", static_cast<long long>(p.seq), p.t, p.valid,
                        p.n_joints);
            for (int j = 0; j < p.n_joints; ++j) std::printf(" %a", p.tau[j]);
            std::printf(" ");
            hex(reinterpret_cast<const uint8_t*>(p.ctx), std::strlen(p.ctx));
            std::printf("\n");
        } else {
            std::printf("hello %lld ", static_cast<long long>(h.n_joints));
            hex(reinterpret_cast<const uint8_t*>(h.ctx), std::strlen(h.ctx));
            std::printf(" ");
            hex(reinterpret_cast<const uint8_t*>(h.robot), std::strlen(h.robot));
            std::printf(" %d %u\n", h.has_rid, h.rid);
        }
    }
    return 0;
}

int client(int argc, char** argv) {
    rtlearn::Options options;
    options.state_endpoints = {argv[2]};
    options.prediction_endpoint = argv[3];
    options.send_rid = std::string(argv[4]) == "1";
    options.handshake_timeout_ms = 1000;
    options.linger_ms = 0;
    rtlearn::Client c(argv[5], std::vector<std::string>(argv + 6, argv + argc), options);
    static int handler_calls = 0;
    c.set_error_handler([](void*, rtlearn::Error, const char*) { ++handler_calls; }, nullptr);
    bool connected = c.connect();
    std::printf("{\"connected\": %s, \"error\": \"%s\", \"message\": \"%s\", ", connected ? "true" : "false",
                rtlearn::to_string(c.error()), c.error_message());
    double z[rtlearn::kMaxJoints] = {};
    c.send_state(0.0, z, z, nullptr, z);
    rtlearn::Prediction p;
    int returned = 0;
    for (int i = 0; i < 1000; ++i) {
        returned += c.poll_prediction(p);
        timespec ms{0, 1000000};
        nanosleep(&ms, nullptr);
    }
    std::printf("\"returned\": %d, \"predictions\": %llu, \"robot_ok\": %s, \"rid\": %u, "
                "\"handler_calls\": %d}\n", returned,
                static_cast<unsigned long long>(c.stats().predictions), c.robot_ok() ? "true" : "false",
                c.rid(), handler_calls);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "encode") return encode();
    if (mode == "decode") return decode();
    if (mode == "client" && argc > 6) return client(argc, argv);
    if (mode == "rid" && argc > 2) {
        std::printf("%u\n", rtlearn::robot_id(argv[2], std::vector<std::string>(argv + 3, argv + argc)));
        return 0;
    }
    std::fprintf(stderr, "usage: wire_check encode | decode | rid ROBOT JOINT... | client ...\n");
    return 2;
}
