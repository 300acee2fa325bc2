"""The daemon's TOML configuration: every key, its default and its meaning (docs/service.md
renders the same table). Unknown keys are errors, so a typo never silently keeps a default."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from rtlearn.protocol.schema import (DEFAULT_CONTROL_ENDPOINT, DEFAULT_PREDICTION_ENDPOINT,
                                     DEFAULT_STATE_ENDPOINT, MAX_LABEL)
from rtlearn.protocol.telemetry import DEFAULT_TELEMETRY_ENDPOINT
from rtlearn.service.realtime import cpu_plan
from rtlearn.service.contexts import RESTORES


# The daemon's defaults where they differ from LearnerConfig's (the library's, which the
# experiments and reference tests use). float32: the same learning on the lift within
# rounding, a step ~1.3x faster and half the state (docs/performance.md, "float32").
SERVICE_LEARNER_DEFAULTS = {"dtype": "float32"}


def _learner_default(key: str):
    from dataclasses import asdict

    from rtlearn.learner import LearnerConfig
    from rtlearn.learner.issgpr import ISSGPRConfig

    if key in SERVICE_LEARNER_DEFAULTS:
        return SERVICE_LEARNER_DEFAULTS[key]
    if key == "kind":
        return "mlp"
    if key == "issgpr":
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in ISSGPRConfig().to_dict().items() if k not in ISSGPR_FROM_LEARNER}
    value = getattr(LearnerConfig(), key)
    return list(value) if isinstance(value, tuple) else asdict(value) if key == "memory" else value


# ISSGPRConfig fields set from the robot or from the [learner] keys both kinds share
ISSGPR_FROM_LEARNER = ("n_joints", "n_inputs", "seed")


# section -> key -> (default, help). The single source of truth for defaults and docs.
SCHEMA: dict[str, dict[str, tuple[object, str]]] = {
    "endpoints": {
        "state": (DEFAULT_STATE_ENDPOINT, "SUB socket the daemon binds; robots publish states to it"),
        "prediction": (DEFAULT_PREDICTION_ENDPOINT, "XPUB socket the daemon binds for "
                       "predictions; it sees subscriptions and answers them with a hello"),
        "control": (DEFAULT_CONTROL_ENDPOINT, "REP socket for `rtlearn ctl`; must be loopback "
                    "(127.0.0.1, localhost, ::1, ipc://) unless [security] holds CURVE keys"),
    },
    # Passed to rtlearn.learner.LearnerConfig (defaults are its own); n_joints and n_inputs
    # come from the robot.
    "learner": {key: (_learner_default(key), text) for key, text in {
        "kind": "mlp (one MLP per joint, memory of learning rates) or issgpr (the peer: "
                "incremental sparse spectrum GP regression, docs/results.md \"I-SSGPR, the "
                "peer\"); batch_size and seed apply to both, issgpr to issgpr only, the "
                "others to mlp only",
        "hidden": "hidden layer widths of each joint's MLP",
        "optimizer": "metagd (memory of learning rates), gd, adam, sgd-hd, ... "
                     "(rtlearn.learner.OPTIMIZERS)",
        "lr": "base learning rate",
        "batch_size": "samples per learning step; each sample is learned from once",
        "normalize": "none, input or both: running standardisation of inputs / targets",
        "grad_clip": "gradient clip",
        "seed": "weight initialisation seed",
        "dtype": "float32 or float64: weights, gradients, optimizer and memory state "
                 "(docs/performance.md, \"Learning step\"); kind = mlp only",
        "memory": "table of rtlearn.learner.MemoryConfig fields (n_centres, beta, meta, key, "
                  "rate_min, rate_max, ...; docs/algorithm.md); lr0 is [learner] lr",
        "issgpr": "table of rtlearn.learner.issgpr.ISSGPRConfig fields: n_features (D, even), "
                  "forget (f per sample), calib (sample counts at which the kernel is fitted), "
                  "fit_points, fit_iters (docs/algorithm.md, \"I-SSGPR\"); kind = issgpr only",
    }.items()},
    "contexts": {
        "initial": ("default", "name of the context the daemon starts in"),
        "max_contexts": (32, "size limit of the bank of models; a new context in a full "
                         "bank evicts the least recently used idle one"),
        "restore": ("blend", "a labelled return to a stored context: 'blend' serves its output "
                    "layer blended with the continuing one by per-joint weights learned from "
                    "earlier returns (simulated arms: 0.4-0.8x the error of not restoring, "
                    "where reload ranged 0.3-2.4x); 'reload' restores "
                    "it as stored (the paper's reload: the larger gain where returns are "
                    "reliable, as on repeated lifts; docs/results.md section 5)"),
        "auto": (True, "find payload changes without labels (a change-point test on the "
                 "prediction residual) and switch to the best stored context or a new one; "
                 "acts only while no labelled packet came for label_quiet seconds"),
        "label_quiet": (5.0, "s without a labelled packet after which automatic contexts act "
                        "(labels and `ctl context` always win)"),
        "cusum_drift": (2.0, "k: shifts of the residual (its per-joint batch median, squared, "
                        "pooled) below e^k times their usual size are absorbed (log units, "
                        "per 10-sample batch)"),
        "cusum_threshold": (4.0, "h: alarm when the CUSUM exceeds it; a rise by rho is found "
                            "after ~h / (log rho - k) batches. Larger: fewer false alarms, "
                            "later detection"),
        "window": (200, "samples from a change's estimated onset until a change no stored "
                   "context explained opens a new context (or is dismissed if the model from "
                   "before it forecasts the second half no worse); 200 ms at 1 kHz (>= 20)"),
        "margin": (0.8, "at the alarm, a stored context is restored if its loss on the samples "
                   "since the onset (but the first 10) is below margin times that of the "
                   "served predictions "
                   "(0 < margin <= 1)"),
    },
    "snapshots": {
        "dir": ("snapshots", "directory of snapshots (relative to the working directory); "
                "control-socket paths are confined to it"),
        "file": ("latest.rtsnap", "periodic / shutdown snapshot file name inside dir (older "
                 "generations: FILE.1, FILE.2, ...); `--resume` reads the newest readable one"),
        "keep": (3, "generations of the snapshot file kept (>= 1), each written atomically"),
        "interval": (30.0, "seconds between periodic snapshots (0: only at shutdown)"),
    },
    "guard": {
        "explode_factor": (1e4, "a step whose loss exceeds this times the running loss "
                           "rolls the model back"),
        "good_every": (200, "learning steps between saved known-good states (rollback targets)"),
        "stream_timeout": (1.0, "s of silence after which a lower seq from a publisher without "
                           "stream id counts as a restarted stream, not as out-of-order"),
        "max_seq_jump": (100_000, "a seq more than this above the previous one (same stream) "
                         "resynchronises the stream (counted in resyncs), instead of counting "
                         "the gap as lost"),
        "resync_after": (3, "this many consecutive packets (each seq one above the last) "
                         "below the previous seq resynchronise the stream at the last of them; "
                         "the ones before are out_of_order"),
        "batch_queue": (64, "learning batches that may wait for the learning process; when "
                        "full the daemon stops reading until one is free (nothing is dropped)"),
        "log_interval": (5.0, "s between two log lines of one kind (counts are kept in status)"),
        "sample_margin": (2.0, "a sample whose measured torque or joint velocity is beyond this "
                          "times the robot's torque_limits / velocity_limits (any joint) is not "
                          "learned (learning.excluded); inf: no limit check"),
        "outlier_k": (20.0, "a sample whose residual (prediction - torque, any joint) departs "
                      "from its batch's median residual by more than this many robust "
                      "residual scales is not learned (learning.excluded); inf: off"),
        "torque_margin": (1.0, "a prediction beyond this times the robot's torque_limits (any "
                          "joint) is published with valid = false and zero torque; inf: no "
                          "limit check (non-finite predictions are always invalid)"),
    },
    "realtime": {
        "learning_cpus": ([-1], "CPUs of the learning process, as indices into the CPUs the "
                          "daemon may use (negative: from the end); [] = no pinning. With "
                          "fewer than 2 CPUs nothing is pinned. With several, the MLP's "
                          "joints are learned on one thread per CPU (bitwise the same)"),
        "serving_cpus": ([], "CPUs of the serving process (same indexing); [] = all the others. "
                         "Run the controller there too"),
        "priority": (0, "SCHED_FIFO priority (1-99) of the socket thread; 0 = normal "
                     "scheduling. Needs CAP_SYS_NICE or an RLIMIT_RTPRIO (else a warning)"),
        "spin": (0.0, "s after each packet during which the socket thread polls without "
                 "sleeping: with a stream at 1 kHz it never sleeps and keeps its core's caches "
                 "warm, at the price of that core. Only with a spare core for it: on 2 cores it "
                 "made the round trip worse (docs/performance.md)"),
    },
    "telemetry": {
        "enabled": (True, "publish the telemetry stream (docs/protocol.md, \"Telemetry socket\"; "
                    "`rtlearn top` shows it)"),
        "endpoint": (DEFAULT_TELEMETRY_ENDPOINT, "PUB socket the daemon binds for telemetry; "
                     "viewers connect a SUB"),
        "rate_hz": (20.0, "telemetry messages per second (0.1..200); built by the learning "
                    "process, never on the per-packet path"),
        "mcap": ("", "folder to record every accepted state, every prediction and the "
                 "telemetry into, one rtlearn-<date>-<time>.mcap per start (\"\": off; "
                 "docs/telemetry.md)"),
        "foxglove_port": (0, "TCP port of a live Foxglove WebSocket bridge on 127.0.0.1 with the "
                          "same channels as the MCAP file (0: off; needs the `foxglove` extra)"),
    },
    "security": {
        "curve_secret_key": ("", "Z85 secret key of the control socket (`rtlearn ctl keygen`); "
                             "required for a non-loopback control endpoint"),
        "curve_public_key": ("", "Z85 public key matching curve_secret_key"),
        "curve_clients": ([], "Z85 public keys allowed to connect (empty: any client that "
                          "knows the server key)"),
    },
}


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the key."""


@dataclass
class ServiceConfig:
    sections: dict = field(default_factory=dict)
    path: str | None = None

    def __getitem__(self, section: str) -> dict:
        return self.sections[section]

    def to_dict(self) -> dict:
        return {s: dict(v) for s, v in self.sections.items()}


def defaults() -> dict:
    return {s: {k: v[0] for k, v in keys.items()} for s, keys in SCHEMA.items()}


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> ServiceConfig:
    """Defaults, then the TOML file, then `overrides` ({section: {key: value}})."""
    sections = defaults()
    where = str(path) if path else "<defaults>"
    layers = []
    if path is not None:
        try:
            layers.append((where, tomllib.loads(Path(path).read_text())))
        except OSError as e:
            raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML ({e})") from None
    if overrides:
        layers.append(("<overrides>", overrides))
    for name, data in layers:
        for section, values in data.items():
            if section not in SCHEMA or not isinstance(values, dict):
                raise ConfigError(f"{name}: unknown section [{section}]; known: {', '.join(SCHEMA)}")
            for key, value in values.items():
                if key not in SCHEMA[section]:
                    raise ConfigError(f"{name}: unknown key {section}.{key}")
                default = SCHEMA[section][key][0]
                if not _same_kind(value, default):
                    raise ConfigError(f"{name}: {section}.{key} must be {type(default).__name__}, "
                                      f"got {value!r}")
                sections[section][key] = value
    cfg = ServiceConfig(sections, where)
    _validate(cfg, where)
    return cfg


def read_overrides(path: str | Path) -> dict:
    """The sections a TOML file sets, checked as `load_config` checks them (for tools that
    start a daemon on endpoints of their own: the file's [endpoints] are left out)."""
    load_config(path)
    data = tomllib.loads(Path(path).read_text())
    data.pop("endpoints", None)
    return data


def _same_kind(value, default) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return type(value) is type(default)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def is_loopback(endpoint: str) -> bool:
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    host = urlparse(endpoint).hostname or ""
    return host in ("127.0.0.1", "localhost", "::1")


def _validate(cfg: ServiceConfig, where: str) -> None:
    from rtlearn.protocol.client import endpoint_problem

    for name, endpoint in cfg["endpoints"].items():
        if problem := endpoint_problem(endpoint):
            raise ConfigError(f"{where}: endpoints.{name} {problem}")
    sec = cfg["security"]
    if not is_loopback(cfg["endpoints"]["control"]):
        if not (sec["curve_secret_key"] and sec["curve_public_key"]):
            raise ConfigError(f"{where}: endpoints.control {cfg['endpoints']['control']!r} is not "
                              "loopback: set security.curve_secret_key and curve_public_key "
                              "(`rtlearn ctl keygen`)")
    _validate_curve(sec, where)
    if cfg["learner"]["batch_size"] < 1 or cfg["guard"]["batch_queue"] < 2:
        raise ConfigError(f"{where}: learner.batch_size >= 1 and guard.batch_queue >= 2")
    try:
        learner_config(cfg, 7)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: [learner]: {e}") from None
    initial = cfg["contexts"]["initial"]
    if not 0 < len(initial) <= MAX_LABEL or not initial.isprintable():
        raise ConfigError(f"{where}: contexts.initial must be 1..{MAX_LABEL} printable characters "
                          "(a context label, docs/protocol.md)")
    if cfg["contexts"]["max_contexts"] < 1:
        raise ConfigError(f"{where}: contexts.max_contexts must be >= 1")
    if cfg["contexts"]["restore"] not in RESTORES:
        raise ConfigError(f"{where}: contexts.restore must be one of {', '.join(RESTORES)}, "
                          f"not {cfg['contexts']['restore']!r}")
    c = cfg["contexts"]
    if not (c["window"] >= 20 and 0 < c["margin"] <= 1 and c["cusum_drift"] > 0
            and c["cusum_threshold"] > 0 and c["label_quiet"] >= 0):
        raise ConfigError(f"{where}: contexts: window >= 20, 0 < margin <= 1, cusum_drift > 0, "
                          "cusum_threshold > 0, label_quiet >= 0")
    rt = cfg["realtime"]
    if not 0 <= rt["spin"] <= 1.0:
        raise ConfigError(f"{where}: realtime.spin must be 0..1 seconds")
    if not 0 <= rt["priority"] <= 99:
        raise ConfigError(f"{where}: realtime.priority must be 0 (off) or 1..99")
    for key in ("learning_cpus", "serving_cpus"):
        if any(type(i) is not int for i in rt[key]):
            raise ConfigError(f"{where}: realtime.{key} must be a list of integers")
    if set(rt["learning_cpus"]) & set(rt["serving_cpus"]):
        raise ConfigError(f"{where}: realtime.learning_cpus and serving_cpus overlap")
    try:
        serving, _ = cpu_plan(rt)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
    if rt["priority"] and rt["spin"] and serving is not None and len(serving) < 2:
        # a SCHED_FIFO thread that never sleeps would starve its CPU's ZeroMQ I/O thread
        raise ConfigError(f"{where}: realtime.priority with realtime.spin needs at least 2 "
                          "serving CPUs")
    if not (cfg["guard"]["sample_margin"] > 0 and cfg["guard"]["outlier_k"] > 0):
        raise ConfigError(f"{where}: guard.sample_margin and guard.outlier_k must be > 0 "
                          "(inf: off)")
    if not cfg["guard"]["torque_margin"] > 0:
        raise ConfigError(f"{where}: guard.torque_margin must be > 0 (inf: no limit check)")
    if cfg["guard"]["max_seq_jump"] < 1 or cfg["guard"]["resync_after"] < 2:
        raise ConfigError(f"{where}: guard.max_seq_jump >= 1 and guard.resync_after >= 2")
    tel = cfg["telemetry"]
    if not 0.1 <= tel["rate_hz"] <= 200:
        raise ConfigError(f"{where}: telemetry.rate_hz must be 0.1..200")
    if not 0 <= tel["foxglove_port"] <= 65535:
        raise ConfigError(f"{where}: telemetry.foxglove_port must be 0 (off) or a TCP port")
    if cfg["snapshots"]["keep"] < 1:
        raise ConfigError(f"{where}: snapshots.keep must be >= 1")
    if cfg["snapshots"]["interval"] < 0:
        raise ConfigError(f"{where}: snapshots.interval must be >= 0")
    if "/" in cfg["snapshots"]["file"] or cfg["snapshots"]["file"] in ("", ".", ".."):
        raise ConfigError(f"{where}: snapshots.file is a plain file name")


def z85_key_error(key) -> str | None:
    """Why `key` is not a Z85-encoded CURVE key (40 characters for 32 bytes), or None."""
    from zmq.utils import z85

    if not isinstance(key, str) or len(key) != 40:
        return "must be a 40-character Z85 key (`rtlearn ctl keygen`)"
    try:
        z85.decode(key.encode("ascii"))
    except (KeyError, UnicodeEncodeError, ValueError):
        return "holds characters outside the Z85 alphabet"
    return None


def _validate_curve(sec: dict, where: str) -> None:
    """The control socket's keys: each decodes, the public key is the secret key's, and
    client keys only come with server keys (an unusable setup is an error, not a silent
    server nobody can reach)."""
    import zmq

    secret, public = sec["curve_secret_key"], sec["curve_public_key"]
    for key, value in (("curve_secret_key", secret), ("curve_public_key", public)):
        if value and (why := z85_key_error(value)):
            raise ConfigError(f"{where}: security.{key} {why}")
    for value in sec["curve_clients"]:
        if why := z85_key_error(value):
            raise ConfigError(f"{where}: security.curve_clients: {value!r} {why}")
    if public and not secret:
        raise ConfigError(f"{where}: security.curve_public_key without curve_secret_key")
    if secret:
        derived = zmq.curve_public(secret.encode()).decode()
        if not public:
            raise ConfigError(f"{where}: security.curve_secret_key without curve_public_key; "
                              f"the public key of this secret key is \"{derived}\"")
        if public != derived:
            raise ConfigError(f"{where}: security.curve_public_key is not the public key of "
                              f"curve_secret_key (that would be \"{derived}\")")
    elif sec["curve_clients"]:
        raise ConfigError(f"{where}: security.curve_clients needs the server's "
                          "curve_secret_key and curve_public_key")


def learner_config(cfg: ServiceConfig, n_joints: int):
    """The LearnerConfig or ISSGPRConfig of [learner] (by its kind) for an arm of n_joints."""
    from rtlearn.learner import LearnerConfig
    from rtlearn.learner.issgpr import ISSGPRConfig

    lc = dict(cfg["learner"])
    kind, gp = lc.pop("kind"), lc.pop("issgpr")
    if kind == "issgpr":
        shared = set(gp) & set(ISSGPR_FROM_LEARNER)
        if shared:
            raise ValueError(f"issgpr: {sorted(shared)} come from the robot and [learner]")
        return ISSGPRConfig.from_dict({**gp, "n_joints": n_joints, "n_inputs": 3 * n_joints,
                                       "seed": lc["seed"]})
    if kind != "mlp":
        raise ValueError(f"kind must be \"mlp\" or \"issgpr\", not {kind!r}")
    lc["hidden"] = tuple(lc["hidden"])
    return LearnerConfig(n_joints=n_joints, n_inputs=3 * n_joints, **lc)


def toml_value(v) -> str:
    """A value as TOML (strings, numbers, booleans, lists, inline tables)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)  # JSON string escapes are valid TOML basic strings
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(e) for e in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {toml_value(e)}" for k, e in v.items()) + "}"
    return repr(v)


def render_markdown() -> str:
    """The configuration reference table of docs/service.md."""
    lines = []
    for section, keys in SCHEMA.items():
        lines += [f"### [{section}]", "", "| key | default | meaning |", "|---|---|---|"]
        for key, (default, text) in keys.items():
            lines.append(f"| `{key}` | `{toml_value(default)}` | {text} |")
        lines.append("")
    return "\n".join(lines)
