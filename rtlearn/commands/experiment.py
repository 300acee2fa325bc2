"""rtlearn experiment: reproduce the paper's experiments (docs/results.md)."""

import sys

from .output import write_json

HELP = ("reproduce the paper's experiments (rosenbrock, online-lift, digits, batch-id) and "
        "measure payload swaps (payload-swap, auto-context)")


def add_arguments(p):
    from rtlearn.experiments.runner import EXPERIMENTS
    p.add_argument("name", choices=list(EXPERIMENTS), help="; ".join(
        f"{k}: {v}" for k, v in EXPERIMENTS.items()))
    p.add_argument("--trials", type=int, default=None,
                   help="number of trials (seeds S, S+1, ...); default per experiment")
    p.add_argument("--seed", type=int, default=0, help="first trial's seed")
    p.add_argument("--quick", action="store_true", help="a tiny version (smoke test)")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (default min(trials, cpu count))")
    p.add_argument("--methods", help="online-lift: comma-separated methods (GD, MetaGD, Adam, "
                   "SGD-HD, Adam-HD, MetaGDMemAdam, 'GD residual', 'MetaGD residual', I-SSGPR, "
                   "'I-SSGPR residual') or "
                   "'all'; default GD,MetaGD. payload-swap: among GD, MetaGD, Adam, SGD-HD, "
                   "MetaGD-paper, I-SSGPR (the GP peer) (default all; GD always runs its "
                   "rate grid)")
    p.add_argument("--dtype", choices=["float32", "float64"], default=None,
                   help="online-lift: the MLP learners' dtype (default LearnerConfig's)")
    p.add_argument("--robot", default=None, help="payload-swap, auto-context: robot name or "
                   "TOML file (default kuka_iiwa)")
    p.add_argument("--task", default=None, help="payload-swap, auto-context: lift or sines "
                   "(default lift)")
    p.add_argument("--rates", default=None, help="payload-swap: comma-separated base rates "
                   "of the compared methods (default the daemon's, 0.001)")
    p.add_argument("--memory", default=None, metavar="K=V,...", help="payload-swap: "
                   "MemoryConfig fields replacing MetaGD's defaults, e.g. clip=10,n_centres=50 "
                   "(a design variant to compare)")
    p.add_argument("--cycles", type=int, default=None, help="payload-swap: payload cycles per "
                   "run (default 20 lift, 11 sines: >= 60 s); e.g. 100 sines for 10 minutes")
    p.add_argument("--restore", default=None, choices=("blend", "reload"),
                   help="payload-swap: how the labelled bank restores a context (the daemon's "
                        "[contexts] restore; default blend)")
    p.add_argument("--mnist", metavar="DIR", help="digits: use MNIST from the IDX files in DIR "
                   "(train-/t10k- images and labels, .gz or not) instead of sklearn's 8x8 digits")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run the trials on this Dask distributed cluster (e.g. "
                        "tcp://10.0.0.5:8786; extra `cluster`; docs/results.md) instead of "
                        "local worker processes")
    p.add_argument("--json", metavar="PATH|-", help="write the summary and per-trial results")
    p.add_argument("--plots", metavar="DIR", help="write PNG figures to DIR")


def to_jsonable(x):
    import numpy as np
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items() if not str(k).startswith("_")}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return to_jsonable(x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def _robot_task_options(args) -> dict:
    from rtlearn.experiments.payload_swap import TASKS
    from rtlearn.sources.robot import load_robot
    options = {}
    if args.robot:
        spec = load_robot(args.robot)  # RobotSpecError names the file and the field
        if len(spec.payloads) < 3:
            raise ValueError(f"{spec.file}: {args.name} needs at least 3 payloads")
        options["robot"] = str(spec.file)
    if args.task:
        if args.task not in TASKS:
            raise ValueError(f"unknown task {args.task!r}; choose from {', '.join(TASKS)}")
        options["task"] = args.task
    return options


def _payload_swap_options(args) -> dict:
    """Checked before any worker starts: a bad option fails at once with a clear message."""
    from rtlearn.experiments import payload_swap as ps
    options = _robot_task_options(args)
    if args.rates:
        try:
            rates = tuple(float(r) for r in args.rates.split(","))
        except ValueError:
            raise ValueError(f"--rates: expected comma-separated numbers, got {args.rates!r}")
        if not all(0 < r < 1 for r in rates):
            raise ValueError("--rates: every base rate must be in (0, 1)")
        options["rates"] = rates
    if args.methods:
        names = tuple(m.strip() for m in args.methods.split(","))
        unknown = [m for m in names if m not in ps.METHODS]
        if unknown:
            raise ValueError(f"unknown payload-swap method(s) {', '.join(map(repr, unknown))};"
                             f" choose from {', '.join(ps.METHODS)}")
        options["methods"] = tuple(dict.fromkeys(("MetaGD", "GD") + names))
    if args.memory:
        from dataclasses import fields
        from rtlearn.learner import MemoryConfig
        types = {f.name: type(getattr(MemoryConfig(), f.name)) for f in fields(MemoryConfig)}
        memory = {}
        for item in args.memory.split(","):
            key, _, value = item.partition("=")
            key = key.strip()
            if key not in types or key == "lr0":
                raise ValueError(f"--memory: {key!r} is not a MemoryConfig field (lr0 is "
                                 f"--rates); fields: {', '.join(k for k in types if k != 'lr0')}")
            kind = types[key]
            try:
                memory[key] = (value.strip().lower() in ("1", "true", "yes") if kind is bool
                               else kind(value.strip()))
            except ValueError:
                raise ValueError(f"--memory: {key}={value!r} is not of type {kind.__name__}") from None
        MemoryConfig(**memory).validate()
        options["memory"] = memory
    if args.cycles is not None:
        if args.cycles < 2:
            raise ValueError("--cycles: at least 2 (one payload change)")
        options["cycles"] = args.cycles
    if args.restore is not None:
        options["restore"] = args.restore
    return options


def run(args) -> int:
    from .interrupt import interruptible
    # Ctrl-C / SIGTERM: the trial processes end quietly, one line instead of tracebacks
    return interruptible("experiment", lambda: _checked(args))


def _checked(args) -> int:
    own = {"online-lift": ("methods", "dtype"), "digits": ("mnist",),
           "payload-swap": ("methods", "robot", "task", "rates", "cycles", "memory", "restore"),
           "auto-context": ("robot", "task")}
    for opt in ("methods", "mnist", "robot", "task", "rates", "cycles", "memory", "dtype",
                "restore"):
        if getattr(args, opt) is not None and opt not in own.get(args.name, ()):
            where = " and ".join(k for k, v in own.items() if opt in v)
            print(f"--{opt} applies to {where} only", file=sys.stderr)
            return 2
    if args.name in ("payload-swap", "auto-context"):
        from rtlearn.sources.base import SourceError
        try:
            options = (_payload_swap_options if args.name == "payload-swap"
                       else _robot_task_options)(args)
        except (ValueError, SourceError) as e:
            print(f"rtlearn experiment {args.name}: {e}", file=sys.stderr)
            return 2
        return _run(args, options)
    options = {"methods": args.methods} if args.methods else {}
    if args.dtype:
        options["dtype"] = args.dtype
    if args.methods:
        from rtlearn.experiments.online_lift import method_names
        try:  # before any worker starts
            method_names(args.methods)
        except ValueError as e:
            print(f"rtlearn experiment online-lift: {e}", file=sys.stderr)
            return 2
    if args.mnist:
        from rtlearn.experiments.digits import read_mnist
        try:  # check the files before any worker starts
            for part in ("train", "test"):
                read_mnist(args.mnist, part)
        except (OSError, ValueError) as e:
            print(f"rtlearn experiment digits: {e}", file=sys.stderr)
            return 2
        options["mnist"] = args.mnist
    return _run(args, options)


def _run(args, options: dict) -> int:
    from rtlearn.experiments.runner import ClusterError, run_experiment
    try:
        # with --json - stdout is the JSON's: no progress lines at all
        result = run_experiment(args.name, args.trials, args.seed, args.quick, args.workers,
                                args.plots, progress=None if args.json == "-" else ...,
                                options=options, scheduler=args.scheduler)
    except ClusterError as e:
        print(f"rtlearn experiment {args.name}: {e}", file=sys.stderr)
        return 2
    return _finish(args, result)


def _finish(args, result) -> int:
    out = sys.stderr if args.json == "-" else sys.stdout  # with --json - the JSON owns stdout
    print(result["table"], file=out)
    for p in result.get("plots", []):
        print(f"figure: {p}", file=out)
    write_json(to_jsonable(result), args.json)
    return 0
