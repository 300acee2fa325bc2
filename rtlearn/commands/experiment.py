"""rtlearn experiment: reproduce the paper's experiments (docs/results.md)."""

import sys

from .output import write_json

HELP = "reproduce the paper's experiments (rosenbrock, online-lift, digits, batch-id)"


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
                   "SGD-HD, Adam-HD, MetaGDMemAdam, 'GD residual', 'MetaGD residual') or "
                   "'all'; default GD,MetaGD")
    p.add_argument("--mnist", metavar="DIR", help="digits: use MNIST from the IDX files in DIR "
                   "(train-/t10k- images and labels, .gz or not) instead of sklearn's 8x8 digits")
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


def run(args) -> int:
    from rtlearn.experiments.runner import run_experiment
    if args.methods and args.name != "online-lift":
        print("--methods applies to online-lift only", file=sys.stderr)
        return 2
    if args.mnist and args.name != "digits":
        print("--mnist applies to digits only", file=sys.stderr)
        return 2
    options = {"methods": args.methods} if args.methods else {}
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
    result = run_experiment(args.name, args.trials, args.seed, args.quick, args.workers,
                            args.plots, options=options)
    out = sys.stderr if args.json == "-" else sys.stdout  # with --json - the JSON owns stdout
    print(result["table"], file=out)
    for p in result.get("plots", []):
        print(f"figure: {p}", file=out)
    write_json(to_jsonable(result), args.json)
    return 0
