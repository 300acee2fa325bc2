"""rtlearn bench: latency of the learning step (step) and of the running daemon (serve); a long
run under hostile input (soak); which kernel loops LLVM vectorised (loops)."""

import sys

from .output import write_json

HELP = "latency benchmarks (percentiles over thousands of steps)"


def add_arguments(p):
    p.add_argument("target", nargs="?",
                   choices=["step", "packet", "serve", "soak", "replay", "loops"],
                   default="step",
                   help="step: one learning step vs numpy/torch; packet: the daemon's "
                        "per-packet work alone; serve: the daemon on loopback; soak: the daemon "
                        "fed a simulated lift and hostile frames, memory and error over time; "
                        "replay: samples/s of `rtlearn fit` and of a full-speed replay through "
                        "the daemon on one log, and the learning step's share of each; "
                        "loops: which loops of the step's kernels LLVM vectorised (its remarks)")
    p.add_argument("--log", metavar="FILE",
                   help="replay: the log to fit and replay (default: a simulated lift of "
                        "--seconds)")
    p.add_argument("--dtype", choices=["float32", "float64"], action="append",
                   help="loops: the dtype(s) to compile for (default both)")
    p.add_argument("--steps", type=int, default=3000, help="timed learning steps (step)")
    p.add_argument("--warmup", type=int, default=200, help="untimed steps first (step)")
    p.add_argument("--cpus", type=int, default=1,
                   help="step: also time the step with the joints split over this many "
                        "threads (OnlineLearner.set_threads), in turns with one thread")
    p.add_argument("--profile", action="store_true",
                   help="step: time the parts of the step one by one instead (forward and "
                        "backward, each optimizer transform, the update), float64 and float32")
    p.add_argument("--ref-steps", type=int, default=1000,
                   help="timed steps of the numpy and torch twins (step; 20-30 ms each)")
    p.add_argument("--learner", choices=["mlp", "issgpr", "both"], default="mlp",
                   help="step: the MLP with memory (and its numpy/torch twins), the I-SSGPR "
                        "peer, or both in one run")
    p.add_argument("--features", type=int, metavar="D",
                   help="step: I-SSGPR's number of random features (default: ISSGPRConfig's)")
    p.add_argument("--seconds", type=float, default=60.0,
                   help="seconds at 1 kHz for the echo and for the daemon (serve), of the "
                        "run (soak, unless --minutes), of the simulated log (replay)")
    p.add_argument("--minutes", type=float, help="minutes of the run (soak)")
    p.add_argument("--hostile-rate", type=float, default=5.0,
                   help="hostile frames per second, the kinds in turn (soak)")
    p.add_argument("--block", type=float, default=1.0,
                   help="seconds per turn when echo and daemon take turns (serve)")
    p.add_argument("--replay", type=int, default=20_000,
                   help="samples sent as fast as the daemon takes them (serve)")
    p.add_argument("--transport", choices=["tcp", "ipc"], default="tcp", help="(serve)")
    p.add_argument("--config", metavar="FILE",
                   help="daemon config overrides, as for `rtlearn serve --config` "
                        "(serve, packet, soak)")
    p.add_argument("--json", metavar="PATH|-", help="write the results as JSON")


def _row(name, r):
    if r is None:
        return f"  {name:<22} (not installed)"
    cpu = f"  (CPU time p50 {r['cpu_p50']:.3f}  p99 {r['cpu_p99']:.3f})" if "cpu_p99" in r else ""
    return f"  {name:<22} p50 {r['p50']:.3f}  p99 {r['p99']:.3f}  max {r['max']:.3f} ms{cpu}"


def profile_summary(p: dict) -> str:
    names = list(next(iter(p.values())))
    lines = ["parts of the reference step, p50 / p99 ms (" + ", ".join(p) + ")"]
    for name in names:
        cells = "   ".join(f"{p[d][name]['p50']:.3f} / {p[d][name]['p99']:.3f}" for d in p)
        lines.append(f"  {name:<24} {cells}")
    totals = "   ".join(f"{sum(v['p50'] for v in p[d].values()):.3f}" for d in p)
    lines.append(f"  {'sum of the p50s':<24} {totals}")
    return "\n".join(lines)


def step_summary(r: dict) -> str:
    c = r["config"]
    lines = [f"learning step: {c['n_joints']} joints x MLP {c['hidden']}, batch "
             f"{c['batch_size']}, {c['optimizer']} K={c['n_centres']} (window {c['window']}), "
             f"{c['n_params']} parameters, {c['steps']} steps ({c['ref_steps']} for numpy and "
             f"torch), state {r['state_bytes']['float64']} B in float64, "
             f"{r['state_bytes']['float32']} B in float32"]
    rows = [("train_step_ms", "rtlearn float64"), ("train_step_float32_ms", "rtlearn float32")]
    for dtype in ("float64", "float32") if "parallel" in r else ():
        threads = c["threads"][f"{dtype} x{c['cpus']}"]
        rows.append((("parallel", dtype), f"rtlearn {dtype} {threads} thr."))
    rows += [("train_step_paced_ms", "float64, 1 per 10 ms"),
             ("train_step_float32_paced_ms", "float32, 1 per 10 ms"),
             ("numpy_step_ms", "numpy float64"), ("torch_step_ms", "torch float64 1 thr."),
             ("torch_step_float32_ms", "torch float32 1 thr."),
             ("predict_one_ms", "predict_one float64")]
    for key, name in rows:
        lines.append(_row(name, r[key[0]][key[1]] if isinstance(key, tuple) else r[key]))
    if "parallel" in r:
        h = r["parallel"]["handoff"]
        lines.append(f"  hand-off round trip p50 / p99: thread {h['thread_ms']['p50'] * 1e3:.0f} / "
                     f"{h['thread_ms']['p99'] * 1e3:.0f} us, process (pipe) "
                     f"{h['process_ms']['p50'] * 1e3:.0f} / {h['process_ms']['p99'] * 1e3:.0f} us")
    for dtype, ours, theirs in (("float64", "train_step_ms", "torch_step_ms"),
                                ("float32", "train_step_float32_ms", "torch_step_float32_ms")):
        if r[theirs]:
            lines.append(f"  torch / rtlearn, {dtype}: p50 "
                         f"{r[theirs]['p50'] / r[ours]['p50']:.1f}x, p99 "
                         f"{r[theirs]['p99'] / r[ours]['p99']:.1f}x")
    load = r["load_average"]
    lines.append(f"  load average (1 min) {load['before'][0]:.2f} before, "
                 f"{load['after'][0]:.2f} after; {r['machine']['cpus_available']} CPUs")
    return "\n".join(lines)


def run(args) -> int:
    if args.target in ("serve", "packet", "soak", "replay"):
        from rtlearn.benchmarks.serve import packet_summary, run_packet_bench, run_serve_bench
        from rtlearn.service.config import ConfigError, read_overrides
        try:
            overrides = read_overrides(args.config) if args.config else None
        except ConfigError as e:
            print(f"rtlearn bench: {e}", file=sys.stderr)
            return 2
    if args.target == "packet":
        result = run_packet_bench(overrides)
        print(packet_summary(result), file=sys.stderr if args.json == "-" else sys.stdout)
    elif args.target == "soak":
        from rtlearn.benchmarks.soak import report, run_soak
        seconds = args.minutes * 60 if args.minutes is not None else args.seconds
        result = run_soak(seconds, hostile_rate=args.hostile_rate, config=overrides)
        print(report(result), file=sys.stderr if args.json == "-" else sys.stdout)
    elif args.target == "replay":
        from rtlearn.benchmarks.replay import run_replay_bench
        result = run_replay_bench(args.log, args.seconds, overrides)
    elif args.target == "loops":
        from rtlearn.benchmarks.loops import loop_table, report
        result = {dtype: loop_table(dtype) for dtype in args.dtype or ("float32", "float64")}
        print(report(result), file=sys.stderr if args.json == "-" else sys.stdout)
    elif args.target == "serve":
        result = run_serve_bench(seconds=args.seconds, block=args.block,
                                 replay_samples=args.replay, transport=args.transport,
                                 config=overrides)
    else:
        from rtlearn.benchmarks.step import run_issgpr_bench, run_step_bench
        # with --json - the JSON owns stdout
        out = sys.stderr if args.json == "-" else sys.stdout
        result = {}
        if args.learner in ("mlp", "both"):
            if args.cpus < 1:
                print("rtlearn bench: --cpus must be >= 1", file=sys.stderr)
                return 2
            if args.profile:
                from rtlearn.benchmarks.step import profile_step
                result = {"profile": profile_step(steps=args.steps, warmup=args.warmup)}
                print(profile_summary(result["profile"]), file=out)
                write_json(result, args.json)
                return 0
            result = run_step_bench(steps=args.steps, warmup=args.warmup, cpus=args.cpus,
                                    ref_steps=args.ref_steps,
                                    say=lambda text: print(text, file=out, flush=True))
            print(step_summary(result), file=out)
        if args.learner in ("issgpr", "both"):
            from rtlearn.learner.issgpr import ISSGPRConfig
            config = ISSGPRConfig() if args.features is None else \
                ISSGPRConfig(n_features=args.features)
            gp = result["issgpr"] = run_issgpr_bench(steps=args.steps, warmup=args.warmup,
                                                     config=config)
            c = gp["config"]
            print(f"I-SSGPR: {c['n_joints']} joints, D = {c['n_features']} features, batch "
                  f"{c['batch_size']}, forget {c['forget']}, {c['steps']} steps, state "
                  f"{gp['state_bytes']} B, calibration {gp['calibration_s']:.2f} s (once)",
                  file=out)
            for key, name in [("train_step_ms", "I-SSGPR"),
                              ("train_step_paced_ms", "I-SSGPR, 1 per 10 ms"),
                              ("predict_one_ms", "I-SSGPR predict_one")]:
                print(_row(name, gp[key]), file=out)
    write_json(result, args.json)
    return 0
