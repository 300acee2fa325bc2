"""rtlearn bench: latency of the learning step (step) and of the running daemon (serve); a long
run under hostile input (soak)."""

import sys

from .output import write_json

HELP = "latency benchmarks (percentiles over thousands of steps)"


def add_arguments(p):
    p.add_argument("target", nargs="?", choices=["step", "packet", "serve", "soak", "replay"],
                   default="step",
                   help="step: one learning step vs numpy/torch; packet: the daemon's "
                        "per-packet work alone; serve: the daemon on loopback; soak: the daemon "
                        "fed a simulated lift and hostile frames, memory and error over time; "
                        "replay: samples/s of `rtlearn fit` and of a full-speed replay through "
                        "the daemon on one log, and the learning step's share of each")
    p.add_argument("--log", metavar="FILE",
                   help="replay: the log to fit and replay (default: a simulated lift of "
                        "--seconds)")
    p.add_argument("--steps", type=int, default=3000, help="timed learning steps (step)")
    p.add_argument("--warmup", type=int, default=200, help="untimed steps first (step)")
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


def run(args) -> int:
    if args.target in ("serve", "packet", "soak", "replay"):
        from rtlearn.service.bench import packet_summary, run_packet_bench, run_serve_bench
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
            result = run_step_bench(steps=args.steps, warmup=args.warmup)
            c = result["config"]
            print(f"learning step: {c['n_joints']} joints x MLP {c['hidden']}, batch "
                  f"{c['batch_size']}, {c['optimizer']} K={c['n_centres']} (window "
                  f"{c['window']}), {c['n_params']} parameters, {c['steps']} steps, state "
                  f"{result['state_bytes']} B", file=out)
            for key, name in [("train_step_ms", "rtlearn"),
                              ("train_step_paced_ms", "rtlearn, 1 per 10 ms"),
                              ("numpy_step_ms", "numpy"), ("torch_step_ms", "torch 1 thread"),
                              ("predict_one_ms", "predict_one")]:
                print(_row(name, result[key]), file=out)
            if result["torch_step_ms"]:
                ratio = result["torch_step_ms"]["p99"] / result["train_step_ms"]["p99"]
                print(f"  torch p99 / rtlearn p99 = {ratio:.1f}x", file=out)
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
