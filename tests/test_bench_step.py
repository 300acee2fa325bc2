"""The benchmark's numpy twin does the same step as the kernels (so the timings compare like
with like), and the bench command's JSON has the documented keys."""

import json

import numpy as np
import pytest

from rtlearn.benchmarks.step import numpy_step
from rtlearn.cli import main
from rtlearn.learner import LearnerConfig, MemoryConfig, OnlineLearner

SMALL = LearnerConfig(n_joints=3, n_inputs=5, hidden=(8, 4), optimizer="metagd", lr=0.01,
                      batch_size=10, normalize="none", memory=MemoryConfig())
PAPER = LearnerConfig(**{**SMALL.to_dict(), "memory": MemoryConfig.paper(n_centres=20, beta=0.05)})
SCALED = LearnerConfig(**{**SMALL.to_dict(), "memory": MemoryConfig.scaled()})


@pytest.mark.parametrize("cfg", [SMALL, PAPER, SCALED], ids=["default", "paper", "scaled"])
def test_numpy_twin_matches_the_kernels_step_for_step(cfg):
    rng = np.random.default_rng(0)
    learner, twin_learner = OnlineLearner(cfg), OnlineLearner(cfg)
    twin = numpy_step(twin_learner)
    for _ in range(15):
        X, Y = rng.normal(size=(10, 5)), rng.normal(scale=5.0, size=(10, 3))
        learner.learn_many(X, Y)
        twin(X, Y)
    flat = np.concatenate([t[j].ravel() for j in range(3) for t in twin.params])
    # The twin evaluates the window's kernels directly; the kernels go through node tables,
    # so every rate differs by up to E ptp(w) / 2 (E ~ 1e-7): updates agree to ~1e-7.
    assert cfg.memory.error_bound < 2e-7
    np.testing.assert_allclose(learner.net.theta.ravel(), flat, rtol=1e-6, atol=1e-8)
    assert not np.allclose(learner.net.theta, OnlineLearner(cfg).net.theta)


def test_bench_step_json_has_the_documented_keys(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["bench", "step", "--steps", "20", "--warmup", "2", "--ref-steps", "5",
                 "--cpus", "2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    timed = [result[k] for k in ("train_step_ms", "train_step_float32_ms", "train_step_paced_ms",
                                 "train_step_float32_paced_ms", "numpy_step_ms",
                                 "predict_one_ms")]
    timed += [result["parallel"]["float64"], result["parallel"]["float32"]]
    for r in timed:
        assert set(r) >= {"p50", "p99", "max", "n"}
        assert 0 < r["p50"] <= r["p99"] <= r["max"]
    assert result["train_step_ms"]["n"] == result["parallel"]["float32"]["n"] == 20
    assert result["numpy_step_ms"]["n"] == 5
    assert result["config"]["threads"] == {"float64": 1, "float64 x2": 2, "float32": 1,
                                           "float32 x2": 2}
    assert result["state_bytes"]["float32"] < 0.6 * result["state_bytes"]["float64"]
    assert "torch_step_ms" in result and "torch_step_float32_ms" in result
    text = capsys.readouterr().out
    assert "rtlearn float32" in text and "2 thr." in text
    assert "numpy twin" in text and "done" in text  # progress while it runs


def test_bench_step_issgpr_reports_its_step_and_predict_one(tmp_path, capsys):
    out = tmp_path / "gp.json"
    assert main(["bench", "step", "--learner", "issgpr", "--steps", "20", "--warmup", "2",
                 "--json", str(out)]) == 0
    gp = json.loads(out.read_text())["issgpr"]
    for key in ("train_step_ms", "train_step_paced_ms", "predict_one_ms"):
        assert 0 < gp[key]["p50"] <= gp[key]["p99"] <= gp[key]["max"]
    D = gp["config"]["n_features"]
    assert gp["state_bytes"] > 8 * D * D   # the Cholesky factor alone
    assert "I-SSGPR" in capsys.readouterr().out


def test_bench_loops_reports_llvms_verdict_per_kernel_loop(tmp_path, capsys):
    out = tmp_path / "loops.json"
    assert main(["bench", "loops", "--dtype", "float32", "--json", str(out)]) == 0
    rows = {(r["file"], r["source"]): r for r in json.loads(out.read_text())["float32"]}
    clip = rows[("optim.py", "for i in range(u.shape[0]):")]  # clip_by_value: a SIMD loop
    assert clip["widths"] and min(clip["widths"]) >= 8
    # the node-table gather goes through dot4, a call LLVM leaves scalar
    gather = [r for (f, src), r in rows.items() if f == "memory.py" and "dot4(" in src]
    assert gather and not gather[0]["widths"]
    assert "vectorised x16" in capsys.readouterr().out


def test_bench_step_profile_times_every_part_in_both_dtypes(tmp_path, capsys):
    out = tmp_path / "p.json"
    assert main(["bench", "step", "--profile", "--steps", "20", "--warmup", "2",
                 "--json", str(out)]) == 0
    prof = json.loads(out.read_text())["profile"]
    assert set(prof) == {"float64", "float32"}
    for parts in prof.values():
        assert {"forward + backward", "transform clip", "transform memory",
                "update theta -= u"} <= set(parts)
        assert all(p["n"] == 20 and p["p50"] > 0 for p in parts.values())
    assert "transform memory" in capsys.readouterr().out
