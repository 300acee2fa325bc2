"""Automatic contexts: the change detector on synthetic residual streams with known change
points, the selection on a simulated lift with three payloads, and labels winning."""

import math

import numpy as np
import pytest

from naive import payload_law

from rtlearn.learner import LearnerConfig, OnlineLearner
from rtlearn.service.autocontext import (HOLDOFF_BATCHES, WARMUP_BATCHES, AutoContexts,
                                         ChangeDetector)
from rtlearn.service.config import defaults
from rtlearn.service.contexts import ContextBank

K, H = 2.0, 4.0   # the defaults
SIGMA = np.array([5.0, 2.0, 1.0, 0.5, 0.2, 0.1, 0.05])  # per-joint residual scales, N*m


def residuals(rng, batches, gain=1.0):
    return rng.normal(size=(batches, 10, len(SIGMA))) * SIGMA * gain


def run(detector, stream):
    """Batch indices of the alarms."""
    return [b for b, e in enumerate(stream) if detector.update(e)]


def first_alarm(detector, stream):
    """(batch index, onset estimate) at the first alarm, or None."""
    for b, e in enumerate(stream):
        if detector.update(e):
            return b, detector.onset
    return None


def expected_batches(rho2):
    """h / (log rho^2 - k), with the median of the statistic under no change in the log: the
    batch median of 10 normal residuals is normal, so x is the log of a mean of 7 chi-squares
    with one degree of freedom (median 0.9)."""
    return H / (math.log(0.9 * rho2) - K)


def test_no_alarm_on_a_stationary_stream_and_a_jump_found_within_the_cusum_bound():
    rng = np.random.default_rng(0)
    d = ChangeDetector(len(SIGMA), K, H)
    quiet = WARMUP_BATCHES + 20_000                     # 200 s at 1 kHz
    assert run(d, residuals(rng, quiet)) == []
    for gain in (10.0, 3.0):                            # mean square x100 and x9
        d.hold(0)
        change_at = d.samples
        found = first_alarm(d, residuals(rng, 200, gain))
        bound = math.ceil(expected_batches(gain ** 2)) + 2
        assert found is not None and found[0] < bound, (gain, found, bound)
        assert change_at <= found[1] <= change_at + 20   # onset: within two batches of the jump
        d.hold(HOLDOFF_BATCHES)
        run(d, residuals(rng, HOLDOFF_BATCHES + 500))  # back to the old level: quiet again


def test_a_shift_of_one_joint_at_its_usual_spread_is_found_within_the_cusum_bound():
    """A payload grasped at rest: one joint's residual moves by 4 of its standard deviations
    and its spread stays. The batch median of that joint moves by 4 sigma against a usual
    size of sigma^2 pi / 20, so x rises to about log((16 * 20 / pi + 6) / 7) = 2.7 and the
    CUSUM crosses h after about h / (2.7 - k) = 6 batches. (A test on the residual's mean
    square, pooled, sees (17 + 6) / 7: about 40 batches, longer than a learner takes to
    absorb the shift.)"""
    rng = np.random.default_rng(2)
    d = ChangeDetector(len(SIGMA), K, H)
    assert run(d, residuals(rng, WARMUP_BATCHES + 2000)) == []
    shifted = residuals(rng, 100)
    shifted[:, :, 1] += 4.0 * SIGMA[1]
    found = first_alarm(d, shifted)
    x = math.log((16 * 20 / math.pi + 6) / 7)
    assert found is not None and found[0] <= math.ceil(H / (x - K)) + 3, found


def test_a_rise_below_e_to_the_drift_and_single_outliers_raise_no_alarm():
    rng = np.random.default_rng(1)
    d = ChangeDetector(len(SIGMA), K, H)
    run(d, residuals(rng, WARMUP_BATCHES))
    assert run(d, residuals(rng, 5000, math.sqrt(1.5))) == []   # x1.5 < e^k
    spikes = residuals(rng, 3000)
    spikes[::7, 3, :] *= 1000.0                          # one wild sample in every 7th batch
    assert run(d, spikes) == []


def test_non_finite_residuals_are_skipped():
    d = ChangeDetector(len(SIGMA), K, H)
    e = np.full((10, len(SIGMA)), np.nan)
    assert not d.update(e) and d.samples == 0


CFG = LearnerConfig(n_joints=2, n_inputs=4, hidden=(16,), optimizer="gd", lr=0.01, seed=1)



def _settings(**kw):
    return {**defaults()["contexts"], "label_quiet": 0.5, **kw}


def _feed(learner, bank, auto, law, n, labelled=False, t0=0.0):
    """The daemon's order: serve, settle, learn, detect; a decision is carried out at once.
    Returns the decisions."""
    out = []
    for i in range(n):
        X, Y = next(law)
        P = learner.predict_many(X)
        bank.settle(learner, X, Y)
        learner.learn_many(X, Y)
        decision = auto.after_batch(learner, bank, X, Y, P, labelled, now=t0 + i * 0.01)
        if decision is not None:
            out.append(decision)
            auto.switch(learner, bank, decision["context"])
    return out


def test_a_new_payload_opens_a_context_and_a_return_restores_the_old_one():
    learner, bank = OnlineLearner(CFG), ContextBank("a", 8)
    auto = AutoContexts(_settings(), CFG.n_joints, CFG.n_inputs)
    assert _feed(learner, bank, auto, payload_law(0.0, 1), 600) == []
    first = _feed(learner, bank, auto, payload_law(4.0, 2), 300, t0=6.0)
    assert [d["decision"] for d in first] == ["created"] and bank.current == "auto-1"
    back = _feed(learner, bank, auto, payload_law(0.0, 3), 300, t0=10.0)
    assert back == [{"decision": "restored", "context": "a"}] and bank.current == "a"
    assert auto.status()["alarms"] == 2 and auto.status()["recent"][-1]["from"] == "auto-1"


def test_a_label_wins_over_a_pending_automatic_switch():
    learner, bank = OnlineLearner(CFG), ContextBank("a", 8)
    auto = AutoContexts(_settings(), CFG.n_joints, CFG.n_inputs)
    _feed(learner, bank, auto, payload_law(0.0, 1), 600)
    law = payload_law(4.0, 2)
    decision = None
    for i in range(100):  # as in the daemon: decided, not yet carried out
        X, Y = next(law)
        P = learner.predict_many(X)
        learner.learn_many(X, Y)
        decision = decision or auto.after_batch(learner, bank, X, Y, P, now=6 + i * 0.01)
    assert decision is not None and auto.status()["pending"] == decision["context"]
    live = learner.network_state()
    assert auto.switch(learner, bank, "labelled") == "created"  # a label or `ctl context`
    st = auto.status()
    assert st["pending"] is None and st["overridden"] == 1
    np.testing.assert_array_equal(bank.parked["a"]["theta"], live["theta"])  # not the old one
    # a labelled batch cancels a decision too, and keeps the detector quiet for label_quiet s
    auto.pending = {"context": "auto-9", "pre": live, "record": {"decision": "created"},
                    "left": 50}
    _feed(learner, bank, auto, payload_law(0.0, 3), 1, labelled=True, t0=20.0)
    assert auto.status()["pending"] is None and not auto.active(20.2) and auto.active(20.6)


@pytest.mark.slow
def test_on_a_simulated_lift_the_return_to_a_payload_restores_its_context():
    """none, light, heavy learned with labels (two lifts each), then light again without:
    the detector finds the grasp and the selection picks light's stored context."""
    from rtlearn.experiments import payload_swap as ps
    from rtlearn.sources.robot import load_robot

    spec = load_robot("kuka_iiwa")
    seq = ["none", "none", "light", "light", "heavy", "heavy", "light"]
    X, Y, ctx, names = ps.simulate(spec, "lift", seq, seed=3)
    cfg = ps.learner_config("MetaGD", ps.DEFAULT_RATE, 7, 3)
    learner, bank = OnlineLearner(cfg), ContextBank("none", 8)
    auto = AutoContexts(_settings(), 7, 21)
    last_heavy = int(np.flatnonzero(ctx == names.index("heavy"))[-1])
    decisions = []
    for b in range(len(X) // 10):
        xb, yb = X[b * 10:b * 10 + 10], Y[b * 10:b * 10 + 10]
        labelled = b * 10 <= last_heavy - 1500   # labels end in heavy's second lift
        if labelled:
            auto.switch(learner, bank, names[int(ctx[b * 10])])
        P = learner.predict_many(xb)
        bank.settle(learner, xb, yb)
        learner.learn_many(xb, yb)
        d = auto.after_batch(learner, bank, xb, yb, P, labelled, now=b * 0.01)
        if d is not None:
            decisions.append((b * 10, d))
            auto.switch(learner, bank, d["context"])
    after = [d for at, d in decisions if at > last_heavy]
    assert after and after[0] == {"decision": "restored", "context": "light"}, decisions


def test_a_daemon_finds_an_unlabelled_jump_and_reports_it(tmp_path):
    """A real daemon on loopback: an unlabelled synthetic stream whose payload jumps from 0
    to 4; the daemon opens a new context by itself, says so in status, serves under it and
    lists it in `ctl contexts`. The jump is sent at 1 kHz: in a flood the served model lags
    the learner by hundreds of samples, and that lag is what the residual shows (alarms
    there are dismissed: the learner's own model still fits)."""
    from rtlearn.protocol.client import RobotClient
    from rtlearn.service.launch import DaemonProcess
    from rtlearn.service.synthetic import synthetic_stream
    from rtlearn.sources.base import paced
    from test_service_daemon import SMALL, send_all, wait_status

    with DaemonProcess(tmp_path, SMALL) as d:
        with RobotClient([d.endpoints["state"]], d.endpoints["prediction"]) as c:
            send_all(c, list(synthetic_stream(8000, payload=0.0)))
            st = wait_status(d, lambda s: s["learning"]["samples"] >= 7990)
            send_all(c, paced(synthetic_stream(2000, start_seq=8000, payload=0.0), 1.0))
            st = wait_status(d, lambda s: s["learning"]["samples"] >= 9990)
            auto = st["contexts"]["auto"]
            assert auto["created"] == auto["restored"] == 0 and st["context"] == "default"
            alarms = auto["alarms"]  # dismissed ones, if any
            send_all(c, paced(synthetic_stream(1000, start_seq=10_000, payload=4.0), 1.0))
            st = wait_status(d, lambda s: s["contexts"]["auto"]["created"] >= 1)
            auto = st["contexts"]["auto"]
            assert auto["enabled"] and auto["active"] and auto["alarms"] > alarms
            # (a loaded machine may add alarms that are dismissed: served late, the model lags)
            created = [r for r in auto["recent"] if r["decision"].startswith("created")]
            assert created[0]["from"] == "default" and created[0]["context"] == "auto-1"
            assert 0 <= created[0]["delay_samples"] <= 500
            later = send_all(c, list(synthetic_stream(20, start_seq=11_000, payload=4.0)))
            now = d.status()["context"]
            assert later[-1].context == now and now != "default"
            rows = {r["name"]: r for r in d.request("contexts")["contexts"]}
            assert {"default", "auto-1"} <= set(rows) and rows[now]["active"]
            assert rows["default"]["samples"] >= 10_000 and rows["auto-1"]["samples"] > 0


class _Scored:
    """A learner whose stored contexts forecast each sample with the loss written in its
    first input (what `batch_loss` would measure), for selection alone."""

    def network_state(self):
        return {}

    def batch_loss(self, X, Y, d=None):
        return float(np.mean(X[:, 0]))


def test_a_restore_is_scored_past_the_swaps_jolt():
    # After a change every model is far off for the first batch (the jolt); a stored context
    # that fits the new payload from then on must win even if it met the jolt worse than the
    # continuing model: served MSE 900 then 9 per sample, the stored model 2000 then 0.1.
    # Scored on all 30 samples since the onset it would lose (667 against 306).
    rng = np.random.default_rng(0)
    auto = AutoContexts(_settings(), 2, 3)
    bank = ContextBank("a", 8)
    bank.parked["b"] = {}
    learner = _Scored()
    X = np.zeros((10, 3))
    for i in range(WARMUP_BATCHES + 100):
        E = rng.normal(scale=0.1, size=(10, 2))
        assert auto.after_batch(learner, bank, X, np.zeros((10, 2)), E, now=i * 0.01) is None
    decisions = []
    for k, (served, stored) in enumerate(((30.0, 2000.0), (3.0, 0.1), (3.0, 0.1))):
        X[:, 0] = stored
        decisions.append(auto.after_batch(learner, bank, X, np.zeros((10, 2)),
                                          np.full((10, 2), served), now=10.0 + k * 0.01))
    assert auto.counts["alarms"] == 1
    assert decisions == [None, None, {"decision": "restored", "context": "b"}]
