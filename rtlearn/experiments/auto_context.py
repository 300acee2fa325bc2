"""auto-context: payload changes found without labels (issue 11).

Per trial (seed s): a simulated arm (`--robot`, any robot file with >= 3 payloads) runs
`--task` (lift, the default: pick and lift, the payload swapped at each grasp, ~3.5 s per
cycle; sines: seeded multi-sine motion, 6 s per cycle, payload swaps while moving) holding
one payload per segment: CHANGES + 1 segments of 1-2 cycles, STEADY of them >= 60 s long
with no change, the payload of each drawn at random among the others (so the run returns to
earlier payloads). Sensor noise 1.0, 1 kHz, batches of 10, each sample used once, the
daemon's default learner and [contexts] settings.

Modes, on the same stream:
  auto    unlabelled: the daemon's detector and selection (rtlearn.service.autocontext) over
          its context bank, each decided switch carried out before the next batch;
  oracle  the payload labels switch the same bank (payload_swap.run_bank);
  single  one model, no contexts (payload_swap.run_continue).
Scores: prequential MSE (mean over joints, (N*m)^2) of the served predictions:
  after_change  the 50 batches (500 ms) after each change, mean over changes;
  steady        the steady stretches from STEADY_SKIP_S after their change on.
The first batch after a change is predicted before any sample of the new payload exists, by
every mode alike (the oracle's label arrives with it, but its restored model has not seen the
swap's jolt either); `first_batch` is its share of the after_change window, and
single's first batch over single's window the lower bound of auto / single that no
label-free method can beat (it would need every later batch free of error).
Selection: each automatic context is named after the payload held in most of its batches;
`switch_purity` is the fraction of automatic switches into a context named after the payload
held then, `context_purity` the fraction of batches served by such a context.
Detection: a change is found by the first alarm within DETECT_S after it (delay: alarm -
change); alarms outside those windows are false alarms, per minute of that time; the
steady-stretch count is separate.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from rtlearn.learner import LearnerConfig, OnlineLearner
from rtlearn.service.autocontext import AutoContexts
from rtlearn.service.config import defaults
from rtlearn.service.contexts import ContextBank

from . import payload_swap as ps
from . import progress
from .evaluate import batched

DEFAULT_TRIALS = 10
CHANGES, STEADY = 24, 2
STEADY_CYCLES = {"lift": 19, "sines": 10}   # >= 60 s: lift cycles last 3.3-3.7 s
BATCH = ps.BATCH
DT = 1e-3
DETECT_S = 1.0
STEADY_SKIP_S = 5.0
AFTER = 50   # batches


def schedule(names: list[str], rng: np.random.Generator, task: str = "lift",
             changes: int = CHANGES, steady: int = STEADY,
             steady_cycles: int | None = None) -> tuple[list[str], list[int]]:
    """Payload per cycle, and the indices of the steady segments."""
    lengths = [int(rng.integers(1, 3)) for _ in range(changes + 1)]
    long = sorted(int(i) for i in rng.choice(np.arange(1, changes + 1), steady, replace=False))
    for i in long:
        lengths[i] = steady_cycles or STEADY_CYCLES[task]
    seq, payload = [], "none"
    for k, n in enumerate(lengths):
        if k:
            payload = str(rng.choice([p for p in names if p != payload]))
        seq += [payload] * n
    return seq, long


def run_auto(X, Y, settings: dict, cfg: LearnerConfig):
    """The daemon's learning loop on an unlabelled stream: per-batch served MSE, the alarms
    as [sample at the alarm, decision], the detections, the active context per batch."""
    learner = OnlineLearner(cfg)
    bank = ContextBank.configured(settings)
    auto = AutoContexts(settings, cfg.n_joints, cfg.n_inputs)
    losses, alarms, active = [], [], []
    for i, (xb, yb) in enumerate(batched(X, Y, BATCH)):
        P = learner.predict_many(xb)   # what the daemon serves before it learns the batch
        bank.settle(learner, xb, yb)
        learner.learn_many(xb, yb)
        progress.tick(len(xb))
        bank.learned(len(xb))
        losses.append(float(np.mean((P - yb) ** 2)))
        active.append(bank.current)
        seen = auto.counts["alarms"], auto.decided()
        decision = auto.after_batch(learner, bank, xb, yb, P, now=(i + 1) * BATCH * DT)
        if auto.counts["alarms"] > seen[0]:
            alarms.append([(i + 1) * BATCH, None])
        if auto.decided() > seen[1]:
            alarms[-1][1] = auto.recent[-1]["decision"]
        if decision is not None:
            auto.switch(learner, bank, decision["context"])
    return np.array(losses), alarms, list(auto.recent), active


def run_trial(seed: int, quick: bool = False, robot: str = "kuka_iiwa",
              task: str = "lift") -> dict:
    from rtlearn.sources.robot import load_robot

    spec = load_robot(robot)
    names = list(spec.payloads)
    if len(names) < 3:
        raise ValueError(f"{spec.file}: auto-context needs at least 3 payloads, "
                         f"the robot file has {len(names)}")
    seq, long = schedule(names, np.random.default_rng([seed, 11]), task,
                         *((3, 1, 4) if quick else (CHANGES, STEADY)))
    X, Y, ctx, _ = ps.simulate(spec, task, seq, seed)
    cfg = ps.learner_config("MetaGD", ps.DEFAULT_RATE, Y.shape[1], seed)
    settings = defaults()["contexts"]
    auto, alarms, detections, active = run_auto(X, Y, settings, cfg)
    oracle = ps.run_bank(X, Y, ctx, names, cfg)
    single, _ = ps.run_continue(X, Y, cfg)
    n = len(auto) * BATCH
    bounds = [0] + [k for k in range(1, n) if ctx[k] != ctx[k - 1]] + [n]
    changes = bounds[1:-1]
    steady = [(bounds[i] + int(STEADY_SKIP_S / DT), bounds[i + 1]) for i in long]
    return {"seed": seed, "robot": str(spec.file), "task": task, "samples": n,
            "truth": [names[int(c)] for c in ctx[:n:BATCH]],
            "active": [[b, c] for b, c in enumerate(active) if b == 0 or c != active[b - 1]],
            "changes": changes,
            "payloads": [names[int(ctx[b])] for b in bounds[:-1]], "steady": steady,
            "alarms": alarms, "detections": detections,
            "contexts": sorted(set(active)),
            "loss": {"auto": auto, "oracle": oracle, "single": single}}


def detection(trial: dict) -> dict:
    """Delays (ms, None = missed), false alarms (all, and those that switched) outside the
    DETECT_S after each change, and in the steady stretches."""
    det = int(DETECT_S / DT)
    changes, alarms = trial["changes"], trial["alarms"]
    delays = []
    for c in changes:
        hit = [a for a, _ in alarms if c <= a < c + det]
        delays.append((hit[0] - c) * DT * 1e3 if hit else None)
    false = [(a, d) for a, d in alarms if not any(c <= a < c + det for c in changes)]
    covered = sum(min(c + det, trial["samples"]) - c for c in changes)
    minutes = (trial["samples"] - covered) * DT / 60
    in_steady = [(a, d) for a, d in false if any(s <= a < e for s, e in trial["steady"])]
    steady_min = sum(e - s for s, e in trial["steady"]) * DT / 60
    return {"delays_ms": delays, "false": len(false), "minutes": minutes,
            "false_switched": sum(d not in (None, "dismissed") for _, d in false),
            "steady_false": len(in_steady), "steady_minutes": steady_min,
            "steady_false_switched": sum(d not in (None, "dismissed") for _, d in in_steady)}


def windows(trial: dict) -> dict:
    """Per mode: mean served MSE over the AFTER batches after each change (and the first
    batch's part of it), and over the steady stretches."""
    out = {}
    for mode, loss in trial["loss"].items():
        loss = np.asarray(loss)
        after = [loss[c // BATCH:c // BATCH + AFTER].mean() for c in trial["changes"]]
        first = [loss[c // BATCH] / AFTER for c in trial["changes"]]
        steady = [loss[s // BATCH:e // BATCH].mean() for s, e in trial["steady"]]
        out[mode] = {"after_change": float(np.mean(after)), "first_batch": float(np.mean(first)),
                     "steady": float(np.mean(steady))}
    return out


def purity(trial: dict) -> dict:
    """Automatic switches (and batches) into a context named after the payload then held, a
    context named after the payload held in most of its batches (module docstring)."""
    truth = trial["truth"]
    starts = trial["active"] + [[len(truth), None]]
    held = Counter()
    for (b, name), (e, _) in zip(starts, starts[1:]):
        held.update((name, p) for p in truth[b:e])
    named = {}
    for (name, p), k in sorted(held.items(), key=lambda x: -x[1]):
        named.setdefault(name, p)
    right = [named[name] == truth[b] for b, name in trial["active"][1:]]
    batches = sum(k for (name, p), k in held.items() if named[name] == p)
    return {"switches": len(right), "right": int(sum(right)),
            "batches_right": batches, "batches": len(truth)}


TARGETS = {"detection_delay_p90_ms": 150.0, "missed_changes": 0.05,
           "false_alarms_per_min_steady": 0.1, "after_change_auto_over_oracle": 1.25,
           "after_change_auto_over_single": 0.6, "steady_auto_over_oracle": 1.05}


def summarize(trials: list[dict]) -> dict:
    dets = [detection(t) for t in trials]
    wins = [windows(t) for t in trials]
    delays = [d for x in dets for d in x["delays_ms"]]
    found = np.array([d for d in delays if d is not None])
    minutes = sum(x["minutes"] for x in dets)
    steady_min = sum(x["steady_minutes"] for x in dets)
    modes = ("auto", "oracle", "single")
    after = {m: float(np.mean([w[m]["after_change"] for w in wins])) for m in modes}
    first = {m: float(np.mean([w[m]["first_batch"] for w in wins])) for m in modes}
    pure = [purity(t) for t in trials if "active" in t]
    steady = {m: float(np.mean([w[m]["steady"] for w in wins])) for m in modes}
    s = {"trials": len(trials), "robot": trials[0]["robot"], "task": trials[0]["task"],
         "changes": len(delays),
         "detection_delay_ms": {"p50": float(np.percentile(found, 50)) if len(found) else None,
                                "p90": float(np.percentile(found, 90)) if len(found) else None},
         "missed_changes": (len(delays) - len(found)) / max(len(delays), 1),
         "false_alarms_per_min": sum(x["false"] for x in dets) / minutes,
         "false_switches_per_min": sum(x["false_switched"] for x in dets) / minutes,
         "false_alarms_per_min_steady": sum(x["steady_false"] for x in dets) / steady_min,
         "false_switches_per_min_steady": sum(x["steady_false_switched"] for x in dets)
         / steady_min,
         "decisions": {k: sum(d["decision"].split(",")[0] == k for t in trials
                              for d in t["detections"])
                       for k in ("restored", "created", "dismissed")},
         "contexts_per_trial": float(np.mean([len(t["contexts"]) for t in trials])),
         "after_change_mse": after, "steady_mse": steady,
         "first_batch": {m: first[m] / after[m] for m in modes},
         "label_free_bound_over_single": first["single"] / after["single"],
         "switch_purity": sum(p["right"] for p in pure) / max(sum(p["switches"] for p in pure), 1),
         "context_purity": sum(p["batches_right"] for p in pure) / max(sum(p["batches"] for p in pure), 1)}
    ratios = {"detection_delay_p90_ms": s["detection_delay_ms"]["p90"],
              "missed_changes": s["missed_changes"],
              "false_alarms_per_min_steady": s["false_alarms_per_min_steady"],
              "after_change_auto_over_oracle": after["auto"] / after["oracle"],
              "after_change_auto_over_single": after["auto"] / after["single"],
              "steady_auto_over_oracle": steady["auto"] / steady["oracle"]}
    s["targets"] = {k: {"value": v, "target": TARGETS[k],
                        "met": v is not None and math.isfinite(v) and v <= TARGETS[k]}
                    for k, v in ratios.items()}
    return s


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def table(s: dict) -> str:
    d = s["detection_delay_ms"]
    out = [f"Automatic contexts, {s['robot']} / {s['task']}, {s['trials']} trials, {s['changes']} "
           f"payload changes", "",
           f"detection delay p50 {_ms(d['p50'])} ms, p90 {_ms(d['p90'])} ms; missed "
           f"{100 * s['missed_changes']:.1f} %",
           f"false alarms per minute: {s['false_alarms_per_min']:.2f} away from changes "
           f"({s['false_switches_per_min']:.2f} that switched), "
           f"{s['false_alarms_per_min_steady']:.2f} in the steady stretches "
           f"({s['false_switches_per_min_steady']:.2f} that switched)",
           f"decisions: {s['decisions']}; contexts per trial {s['contexts_per_trial']:.1f}",
           f"automatic switches into a context of the payload then held: "
           f"{100 * s['switch_purity']:.0f} %; batches served by one: "
           f"{100 * s['context_purity']:.0f} %",
           f"first batch after a change: {', '.join(f'{m} {100 * v:.0f} %' for m, v in s['first_batch'].items())} "
           f"of the 500 ms window; no label-free method gets auto / single below "
           f"{s['label_free_bound_over_single']:.2f}", "",
           "| prequential MSE, (N·m)² | auto | oracle | single |", "|---|---|---|---|"]
    for key, label in (("after_change_mse", "first 500 ms after a change"),
                       ("steady_mse", "steady stretches")):
        out.append(f"| {label} | " + " | ".join(f"{s[key][m]:.4g}" for m in
                                                 ("auto", "oracle", "single")) + " |")
    out += ["", "| target | value | bound | met |", "|---|---|---|---|"]
    for k, t in s["targets"].items():
        v = "-" if t["value"] is None else f"{t['value']:.3g}"
        out.append(f"| {k} | {v} | {t['target']:g} | {'yes' if t['met'] else 'no'} |")
    return "\n".join(out)


def plots(trials: list[dict], summary: dict, directory: str) -> list[str]:
    import os

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = trials[0]
    fig, ax = plt.subplots(figsize=(12, 3.6))
    for mode, loss in t["loss"].items():
        loss = np.asarray(loss)
        k = 50  # 0.5 s running mean
        smooth = np.convolve(loss, np.ones(k) / k, mode="same")
        ax.semilogy(np.arange(len(loss)) * BATCH * DT, smooth, lw=0.9, label=mode)
    for c in t["changes"]:
        ax.axvline(c * DT, color="k", lw=0.4, alpha=0.5)
    for a, d in t["alarms"]:
        ax.axvline(a * DT, color="r" if d not in (None, "dismissed") else "orange", lw=0.6,
                   ls=":")
    ax.set_xlabel("time (s); black: payload changes, red dotted: alarms that switched, "
                  "orange: dismissed")
    ax.set_ylabel("prequential MSE, 0.5 s mean")
    ax.legend(fontsize=8)
    ax.set_title(f"auto-context, trial 0: {os.path.basename(summary['robot'])} / "
                 f"{summary['task']}", fontsize=9)
    fig.tight_layout()
    name = os.path.basename(summary["robot"]).removesuffix(".toml")
    path = os.path.join(directory, f"auto_context_{name}_{summary['task']}.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
