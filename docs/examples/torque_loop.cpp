// A 1 kHz torque loop as libfranka and KUKA FRI run one, with rtlearn's learned feed-forward
// (docs/cpp.md). Build:
//
//     INCLUDE=$(python -c 'import rtlearn; print(rtlearn.get_include())')
//     g++ -std=c++17 -O2 -I"$INCLUDE" docs/examples/torque_loop.cpp -lzmq -o torque_loop
//     rtlearn serve --robot robots/kuka_iiwa.toml &
//     ./torque_loop --seconds 60
//
// The robot here is a stand-in (SimulatedArm: seven independent joints with inertia, friction
// and gravity) so that the example runs anywhere. On a real arm, `Controller::control` is the
// body of the robot library's callback, fed with the measured q and dq:
//     libfranka:  robot.control([&](const franka::RobotState& s, franka::Duration) { ...
//                     controller.control(state, tau); return franka::Torques(tau); });
//     KUKA FRI:   void MyClient::command() { ... controller.control(state, tau);
//                     robotCommand().setTorque(tau); }
//
// Each tick: read the latest prediction (never waits), command tau = feedback + feed-forward
// (the prediction, when valid and fresh), then publish the *desired* state of this tick with
// the torque just commanded. The daemon learns torque = f(desired state); its prediction for
// a tick is the torque that tick needed (feedback-error learning: the feedback part is the
// model's error, and shrinks as it learns). Publishing the measured state and adding its
// prediction back would feed the commanded torque back into itself: it diverges
// (docs/cpp.md, "Which state to send").
#include <rtlearn/client.hpp>

#include <time.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

constexpr int N = 7;
constexpr double kDt = 1e-3;  // s, 1 kHz
constexpr double kPi = 3.14159265358979323846;

// robots/kuka_iiwa.toml: the daemon's robot file must name the same robot and joints
const char* kRobot = "kuka_iiwa";
const std::vector<std::string> kJoints = {
    "lbr_iiwa_joint_1", "lbr_iiwa_joint_2", "lbr_iiwa_joint_3", "lbr_iiwa_joint_4",
    "lbr_iiwa_joint_5", "lbr_iiwa_joint_6", "lbr_iiwa_joint_7"};
constexpr double kTorqueLimit[N] = {176, 176, 110, 110, 110, 40, 40};  // N*m
constexpr double kHome[N] = {0.0, 0.6, 0.0, -1.4, 0.0, 1.1, 0.0};      // rad

// What the robot library hands the callback each tick.
struct RobotState {
    double time;    // s
    double q[N];    // rad
    double dq[N];   // rad/s
};

class Controller {
public:
    Controller(rtlearn::Client& client, int max_age, const char* ctx, bool feed_forward)
        : client_(client), max_age_(max_age), ctx_(ctx), feed_forward_(feed_forward) {}

    // The torque callback: allocation-free and never blocking.
    void control(const RobotState& s, double* tau) {
        if (client_.poll_prediction(prediction_)) have_ = feed_forward_;
        // a prediction answers the packet of an earlier tick; older than max_age ticks it
        // belongs to another part of the motion (or the daemon stalled): feedback only
        bool use = have_ && prediction_.valid && prediction_.n_joints == N &&
                   last_seq_ - prediction_.seq < max_age_;
        double q_d[N], dq_d[N], ddq_d[N];
        desired(s.time, q_d, dq_d, ddq_d);
        for (int j = 0; j < N; ++j) {
            double feedback = kKp[j] * (q_d[j] - s.q[j]) + kKd[j] * (dq_d[j] - s.dq[j]);
            double ff = use ? prediction_.tau[j] : 0.0;
            tau[j] = std::clamp(feedback + ff, -kTorqueLimit[j], kTorqueLimit[j]);
            double e = q_d[j] - s.q[j];
            error2_ += e * e;
            feedback2_ += feedback * feedback;
        }
        int64_t seq = client_.send_state(s.time, q_d, dq_d, ddq_d, tau, ctx_);
        if (seq >= 0) last_seq_ = seq;
        ticks_ += 1;
        feed_forward_ticks_ += use;
    }

    // RMS tracking error (rad) and feedback torque (N*m) since the last call.
    void window(double& error, double& feedback) {
        double count = std::max(1.0, static_cast<double>(N) * (ticks_ - window_start_));
        error = std::sqrt(error2_ / count);
        feedback = std::sqrt(feedback2_ / count);
        error2_ = feedback2_ = 0.0;
        window_start_ = ticks_;
    }

    long ticks_ = 0;
    long feed_forward_ticks_ = 0;

private:
    // A smooth motion around home that starts at rest: q_d = home + A (1 - cos(w t)).
    static void desired(double t, double* q, double* dq, double* ddq) {
        for (int j = 0; j < N; ++j) {
            double a = 0.2, w = 2 * kPi * (0.3 + 0.05 * j);
            q[j] = kHome[j] + a * (1 - std::cos(w * t));
            dq[j] = a * w * std::sin(w * t);
            ddq[j] = a * w * w * std::cos(w * t);
        }
    }

    static constexpr double kKp[N] = {900, 900, 450, 450, 225, 90, 45};  // I * 30^2
    static constexpr double kKd[N] = {60, 60, 30, 30, 15, 6, 3};         // I * 2 * 30
    rtlearn::Client& client_;
    int max_age_;
    const char* ctx_;
    bool feed_forward_;
    rtlearn::Prediction prediction_;
    bool have_ = false;
    int64_t last_seq_ = -1;
    double error2_ = 0.0, feedback2_ = 0.0;
    long window_start_ = 0;
};

// Stand-in for libfranka / FRI: integrates seven independent joints,
// I qdd = tau - b qd - g sin(q), and calls the controller every millisecond.
class SimulatedArm {
public:
    SimulatedArm() {
        std::copy(kHome, kHome + N, s_.q);
        std::fill(s_.dq, s_.dq + N, 0.0);
        s_.time = 0.0;
    }

    template <class Callback>
    void run(long ticks, Callback&& callback) {
        timespec next;
        clock_gettime(CLOCK_MONOTONIC, &next);
        double tau[N];
        for (long k = 0; k < ticks; ++k) {
            callback(s_, tau);
            for (int j = 0; j < N; ++j) {
                double ddq = (tau[j] - kFriction[j] * s_.dq[j] - kGravity[j] * std::sin(s_.q[j])) / kInertia[j];
                s_.dq[j] += ddq * kDt;
                s_.q[j] += s_.dq[j] * kDt;
            }
            s_.time += kDt;
            next.tv_nsec += 1000000;
            if (next.tv_nsec >= 1000000000) {
                next.tv_nsec -= 1000000000;
                next.tv_sec += 1;
            }
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, nullptr);
        }
    }

private:
    static constexpr double kInertia[N] = {1.0, 1.0, 0.5, 0.5, 0.25, 0.1, 0.05};  // kg m^2
    static constexpr double kFriction[N] = {0.8, 0.8, 0.5, 0.5, 0.3, 0.2, 0.2};   // N*m*s/rad
    static constexpr double kGravity[N] = {0.0, 40.0, 0.0, 20.0, 0.0, 2.0, 0.0};  // N*m
    RobotState s_;
};

void on_error(void*, rtlearn::Error error, const char* message) {
    std::fprintf(stderr, "rtlearn: %s: %s\n", rtlearn::to_string(error), message);
}

const char* arg(int argc, char** argv, const char* name, const char* fallback) {
    for (int i = 1; i + 1 < argc; ++i)
        if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
    return fallback;
}

bool flag(int argc, char** argv, const char* name) {
    for (int i = 1; i < argc; ++i)
        if (std::strcmp(argv[i], name) == 0) return true;
    return false;
}

}  // namespace

int main(int argc, char** argv) {
    if (flag(argc, argv, "--help")) {
        std::printf("torque_loop [--state EP] [--prediction EP] [--seconds S | --ticks N] "
                    "[--max-age TICKS] [--ctx LABEL] [--no-rid] [--feedback-only]\n");
        return 0;
    }
    rtlearn::Options options;
    options.state_endpoints = {arg(argc, argv, "--state", "tcp://127.0.0.1:5601")};
    options.prediction_endpoint = arg(argc, argv, "--prediction", "tcp://127.0.0.1:5602");
    options.send_rid = !flag(argc, argv, "--no-rid");
    long ticks = std::atol(arg(argc, argv, "--ticks", "0"));
    if (ticks <= 0) ticks = static_cast<long>(std::atof(arg(argc, argv, "--seconds", "10")) / kDt);
    int max_age = std::atoi(arg(argc, argv, "--max-age", "5"));
    const char* ctx = arg(argc, argv, "--ctx", nullptr);

    // set-up, before the robot starts: may allocate and wait
    rtlearn::Client client(kRobot, kJoints, options);
    client.set_error_handler(on_error, nullptr);
    if (!client.connect()) {
        std::fprintf(stderr, "torque_loop: %s\n", client.error_message());
        return 2;
    }
    Controller controller(client, max_age, ctx, !flag(argc, argv, "--feedback-only"));
    SimulatedArm arm;
    auto tick = [&](const RobotState& s, double* tau) { controller.control(s, tau); };
    double error_first = 0, feedback_first = 0, error_last = 0, feedback_last = 0;
    long first = std::min(ticks, 1000L), last = std::min(ticks - first, 1000L);
    arm.run(first, tick);
    controller.window(error_first, feedback_first);
    arm.run(ticks - first - last, tick);
    controller.window(error_last, feedback_last);
    arm.run(last, tick);
    controller.window(error_last, feedback_last);

    // after the loop: wait (bounded) for the answers still on their way
    const rtlearn::Stats& st = client.stats();
    rtlearn::Prediction late;
    for (int i = 0; i < 5000 && st.last_prediction_seq + 1 < static_cast<int64_t>(st.sent); ++i) {
        client.poll_prediction(late);
        timespec ms{0, 1000000};
        nanosleep(&ms, nullptr);
    }
    bool complete = st.predictions == st.sent && st.prediction_gaps == 0 &&
                    st.first_prediction_seq == 0 &&
                    st.last_prediction_seq + 1 == static_cast<int64_t>(st.sent);
    std::printf("{\"sent\": %llu, \"predictions\": %llu, \"first_seq\": %lld, \"last_seq\": %lld, "
                "\"gaps\": %llu, \"bad_frames\": %llu, \"feed_forward_ticks\": %ld, "
                "\"rid\": %u, \"robot_ok\": %s, \"hello_rid\": %s, "
                "\"rms_error_first_s\": %.6g, \"rms_error_last_s\": %.6g, "
                "\"rms_feedback_first_s\": %.6g, \"rms_feedback_last_s\": %.6g, "
                "\"error\": \"%s\"}\n",
                static_cast<unsigned long long>(st.sent),
                static_cast<unsigned long long>(st.predictions),
                static_cast<long long>(st.first_prediction_seq),
                static_cast<long long>(st.last_prediction_seq),
                static_cast<unsigned long long>(st.prediction_gaps),
                static_cast<unsigned long long>(st.bad_frames), controller.feed_forward_ticks_,
                client.rid(), client.robot_ok() ? "true" : "false",
                client.hello().has_rid ? std::to_string(client.hello().rid).c_str() : "null",
                error_first, error_last, feedback_first, feedback_last, rtlearn::to_string(client.error()));
    return complete && client.robot_ok() ? 0 : 1;
}
