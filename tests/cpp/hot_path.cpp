// Counts the allocations of the client's hot path against a real daemon
// (tests/test_cpp_client.py): connects, then runs N ticks of send_state + poll_prediction
// at 1 kHz while counting, in this thread, every operator new and every malloc / calloc /
// realloc (glibc: this definition of malloc takes precedence over libc's), then waits for
// the answers and prints a JSON line.
//   hot_path STATE_EP PREDICTION_EP N
#include <rtlearn/client.hpp>

#include <time.h>

#include <cstdio>
#include <cstdlib>
#include <new>

extern "C" void* __libc_malloc(std::size_t);
extern "C" void* __libc_calloc(std::size_t, std::size_t);
extern "C" void* __libc_realloc(void*, std::size_t);
extern "C" void __libc_free(void*);

namespace {
__thread bool counting = false;
__thread unsigned long news = 0, mallocs = 0;
}  // namespace

extern "C" void* malloc(std::size_t n) {
    mallocs += counting;
    return __libc_malloc(n);
}
extern "C" void* calloc(std::size_t k, std::size_t n) {
    mallocs += counting;
    return __libc_calloc(k, n);
}
extern "C" void* realloc(void* p, std::size_t n) {
    mallocs += counting;
    return __libc_realloc(p, n);
}
extern "C" void free(void* p) { __libc_free(p); }

void* operator new(std::size_t n) {
    news += counting;
    if (void* p = __libc_malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
void operator delete(void* p) noexcept { __libc_free(p); }
void operator delete(void* p, std::size_t) noexcept { __libc_free(p); }

int main(int argc, char** argv) {
    if (argc != 4) return 2;
    rtlearn::Options options;
    options.state_endpoints = {argv[1]};
    options.prediction_endpoint = argv[2];
    long n = std::atol(argv[3]);
    std::vector<std::string> joints;
    for (int j = 1; j <= 7; ++j) joints.push_back("lbr_iiwa_joint_" + std::to_string(j));
    rtlearn::Client client("kuka_iiwa", joints, options);
    if (!client.connect()) {
        std::fprintf(stderr, "%s\n", client.error_message());
        return 2;
    }
    double q[7] = {0.0, 0.6, 0.0, -1.4, 0.0, 1.1, 0.0}, qd[7] = {}, qdd[7] = {}, tau[7] = {};
    rtlearn::Prediction p;
    unsigned long received = 0;
    timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    counting = true;
    for (long k = 0; k < n; ++k) {
        for (int j = 0; j < 7; ++j) {
            q[j] += 1e-4;
            tau[j] = 0.5 * j + 1e-3 * static_cast<double>(k % 100);
        }
        client.send_state(1e-3 * static_cast<double>(k), q, qd, k % 2 ? qdd : nullptr, tau);
        received += client.poll_prediction(p);
        next.tv_nsec += 1000000;
        if (next.tv_nsec >= 1000000000) {
            next.tv_nsec -= 1000000000;
            next.tv_sec += 1;
        }
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, nullptr);
    }
    counting = false;
    const rtlearn::Stats& st = client.stats();
    for (int i = 0; i < 5000 && st.last_prediction_seq + 1 < static_cast<int64_t>(st.sent); ++i) {
        client.poll_prediction(p);
        timespec ms{0, 1000000};
        nanosleep(&ms, nullptr);
    }
    std::printf("{\"sent\": %llu, \"predictions\": %llu, \"gaps\": %llu, \"polled\": %lu, "
                "\"operator_new\": %lu, \"malloc\": %lu}\n",
                static_cast<unsigned long long>(st.sent),
                static_cast<unsigned long long>(st.predictions),
                static_cast<unsigned long long>(st.prediction_gaps), received, news, mallocs);
    return 0;
}
