"""The daemon with `[learner] kind = "issgpr"` as a real subprocess on ipc:// endpoints: it
serves and learns, calibrates its kernel on the first samples, restores a payload context
exactly, refuses the rate options, snapshots the calibration and resumes without fitting
again. Predictions are checked against ISSGPR itself loaded from the daemon's files."""

from __future__ import annotations

import numpy as np
import pytest

from test_service_daemon import (CYCLE, features, probe_like, send_all, wait_learned,
                                 wait_status)

from rtlearn.learner.issgpr import ISSGPR, ISSGPRConfig
from rtlearn.protocol.client import RobotClient
from rtlearn.protocol.schema import ControlError
from rtlearn.service import snapshots
from rtlearn.service.launch import DaemonProcess
from rtlearn.service.synthetic import synthetic_state, synthetic_stream

GP = {"learner": {"kind": "issgpr",
                  "issgpr": {"n_features": 200, "calib": [200, 1000], "fit_iters": 50}},
      # synthetic torques beyond the iiwa's limits (test_service_daemon.SMALL); the GP fits
      # this noise-free law to ~1e-2 N*m, below which the outlier screen would be armed
      # at the first wobble: every sample learned
      "guard": {"torque_margin": float("inf"), "sample_margin": float("inf"),
                "outlier_k": float("inf")}}


def calibrated(st) -> bool:
    cal = st["learner"]["calibration"]
    return cal["stage"] == cal["stages"] and not cal["fitting"]


def file_prediction(path, context: str, state) -> np.ndarray:
    """What `context` of a daemon snapshot predicts for `state`, by ISSGPR from the file."""
    meta, arrays = snapshots.read(path)
    i = meta["contexts"].index(context)
    learner = ISSGPR(ISSGPRConfig.from_dict(meta["learner"]))
    learner.set_network_state({k[len(f"ctx{i}."):]: v for k, v in arrays.items()
                               if k.startswith(f"ctx{i}.")})
    return learner.predict_one(features(state)).copy()


def test_the_daemon_serves_and_learns_with_kind_issgpr(tmp_path):
    probe = synthetic_state(0, payload=0.0)
    with DaemonProcess(tmp_path, GP) as d:
        st = d.status()
        assert st["learner"]["kind"] == "issgpr" and st["learner"]["calibration"]["stage"] == 0
        with RobotClient([d.endpoints["state"]], d.endpoints["prediction"]) as c:
            states = list(synthetic_stream(2 * CYCLE))
            preds = []
            for i in range(0, len(states), 20):  # at most 20 samples ahead of learning
                wait_learned(d, i)
                preds += send_all(c, states[i:i + 20])
            st = wait_status(d, calibrated)
            assert calibrated(st), st["learner"]
            assert sorted(p.seq for p in preds) == [s.seq for s in states]
            assert all(p.valid and np.isfinite(p.tau).all() for p in preds)
            by_seq = {p.seq: p for p in preds}
            err = np.array([((by_seq[s.seq].tau - s.tau) ** 2).mean() for s in states])
            first, last = err[:200].mean(), err[-CYCLE:].mean()  # the mean, then the GP
            print(f"prequential MSE: first 200 samples {first:.3g}, last cycle {last:.3g}")
            assert last < 0.01 * first, (first, last)
            with pytest.raises(ControlError, match="no learning rate"):
                d.request("options", lr=1e-3)
            # a payload context: "b" starts from the current model, and when the stream
            # comes back to "default" its model comes back whole, as it was when left
            d.request("save", path="before_b.rtsnap")
            before_b = d.snapshot_dir / "before_b.rtsnap"
            send_all(c, [synthetic_state(k, payload=4.0, context="b")
                         for k in range(2 * CYCLE, 2 * CYCLE + 1000)])
            wait_learned(d, 2 * CYCLE + 1000)
            (back,) = send_all(c, [probe_like(probe, 2 * CYCLE + 1000, context="default")])
            np.testing.assert_allclose(back.tau, file_prediction(before_b, "default", probe),
                                       rtol=1e-9, atol=1e-9)
            st = wait_status(d, lambda st: st["contexts"]["restored"] == 1)
            assert st["context"] == "default" and st["contexts_known"] == ["b", "default"]
            # a payload change is a surprise, not a divergence: nothing rolled back
            assert st["learning"]["rollbacks"] == 0
    snap = d.snapshot_dir / "latest.rtsnap"  # written at the stop
    meta, arrays = snapshots.read(snap)
    assert meta["kind"] == "issgpr"
    stage, window = arrays["memory.calib.counts"]
    assert stage == 2 and window >= 1000
    expected = file_prediction(snap, "default", probe)
    with DaemonProcess(tmp_path, GP, resume=True) as d:
        st = d.status()
        assert calibrated(st) and st["learner"]["steps"] > 0   # no new calibration
        kernel = st["learner"]["kernel"]
        with RobotClient([d.endpoints["state"]], d.endpoints["prediction"]) as c:
            (first,) = send_all(c, [probe_like(probe, 0)])
            np.testing.assert_allclose(first.tau, expected, rtol=1e-9, atol=1e-9)
            send_all(c, list(synthetic_stream(499, start_seq=1)))
        st = wait_learned(d, 500)
        assert calibrated(st) and st["learner"]["kernel"] == kernel
