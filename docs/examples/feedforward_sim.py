"""Why the example torque loop (torque_loop.cpp) publishes the *desired* state: its control
law in numpy, on the same simulated arm, with an online-learned model standing in for the
daemon (normalised LMS on the arm's exact features, answering each packet two ticks later, as
the daemon's prediction arrives on loopback). docs/cpp.md, "Which state to send".

    python docs/examples/feedforward_sim.py [--seconds 60]

Modes:
  feedback-only  tau = PD feedback
  measured       packets carry the measured state; tau = feedback + prediction (the
                 prediction holds the feedback already applied: it is fed back into itself)
  desired        packets carry the desired state; tau = feedback + prediction (the example)
"""

import argparse
import json

import numpy as np

DT = 1e-3
LAG = 2  # ticks from a packet to its prediction
INERTIA = np.array([1.0, 1.0, 0.5, 0.5, 0.25, 0.1, 0.05])
FRICTION = np.array([0.8, 0.8, 0.5, 0.5, 0.3, 0.2, 0.2])
GRAVITY = np.array([0.0, 40.0, 0.0, 20.0, 0.0, 2.0, 0.0])
LIMIT = np.array([176.0, 176, 110, 110, 110, 40, 40])
HOME = np.array([0.0, 0.6, 0.0, -1.4, 0.0, 1.1, 0.0])
KP, KD = INERTIA * 30.0 ** 2, INERTIA * 2 * 30.0
W = 2 * np.pi * (0.3 + 0.05 * np.arange(7))


def desired(t):
    a = 0.2
    return HOME + a * (1 - np.cos(W * t)), a * W * np.sin(W * t), a * W * W * np.cos(W * t)


def run(mode: str, seconds: float = 60.0, rate: float = 0.05) -> dict:
    """RMS tracking error (rad) and feedback torque (N*m) over the first and last second, the
    fraction of joint-ticks whose torque hit the limit (the arm's torque limits clip it), and
    when the arm left the workspace (None: never)."""
    q, dq = HOME.copy(), np.zeros(7)
    weights = np.zeros((7, 4))  # per joint: tau ~ w . (sin q, qd, qdd, 1)
    answers: dict[int, np.ndarray] = {}
    errors, feedbacks, saturated = [], [], []
    ticks = int(seconds / DT)
    for k in range(ticks):
        q_d, dq_d, ddq_d = desired(k * DT)
        fb = KP * (q_d - q) + KD * (dq_d - dq)
        ff = answers.pop(k - LAG, np.zeros(7)) if mode != "feedback-only" else 0.0
        tau = np.clip(fb + ff, -LIMIT, LIMIT)
        saturated.append(np.mean(np.abs(tau) >= LIMIT))
        ddq = (tau - FRICTION * dq - GRAVITY * np.sin(q)) / INERTIA
        if mode != "feedback-only":
            x = (np.stack([np.sin(q_d), dq_d, ddq_d, np.ones(7)], 1) if mode == "desired"
                 else np.stack([np.sin(q), dq, ddq, np.ones(7)], 1))
            answers[k] = (weights * x).sum(1)  # predicted before learning, as the daemon does
            weights += rate * ((tau - answers[k])[:, None] * x) / (1 + (x * x).sum(1))[:, None]
        dq = dq + ddq * DT
        q = q + dq * DT
        errors.append(np.mean((q_d - q) ** 2))
        feedbacks.append(np.mean(fb ** 2))
        if np.abs(q - HOME).max() > 3.0:
            return {"mode": mode, "diverged_at_s": round(k * DT, 3)}
    second = int(1.0 / DT)
    rms = lambda xs: float(np.sqrt(np.mean(xs)))  # noqa: E731
    return {"mode": mode, "diverged_at_s": None,
            "rms_error_first_s": rms(errors[:second]), "rms_error_last_s": rms(errors[-second:]),
            "rms_feedback_first_s": rms(feedbacks[:second]),
            "rms_feedback_last_s": rms(feedbacks[-second:]),
            "saturated_last_s": float(np.mean(saturated[-second:]))}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    for mode in ("feedback-only", "measured", "desired"):
        print(json.dumps(run(mode, args.seconds)))
