"""The online learner: predict_one / learn_many, test-then-train (after river)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from ..kernels.optim import all_finite, copy_into
from .memory import MemoryConfig
from .network import MLPStack, Normalizer
from .optim import OPTIMIZERS, make_optimizer
from .parallel import JointShards, NotSeparable
from .robust import ResidualScale
from .state_io import load_state, save_state

STATE_KIND = "rtlearn-learner"
STATE_VERSION = 4   # 2: the normaliser counts split into norm.x_count / norm.y_count;
                    # 3: the residual scale of the outlier screen, resid.*;
                    # 4: config.dtype (files before it hold float64 learners)
DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class LearnerConfig:
    """Everything that defines a learner. Defaults: docs/algorithm.md, "Our defaults"."""

    n_joints: int = 7
    n_inputs: int = 21
    hidden: tuple = (128, 64, 32)
    optimizer: str = "metagd"
    lr: float = 1e-3
    batch_size: int = 10
    normalize: str = "both"       # "none" reproduces the paper (raw torques)
    loss: str = "mse"
    grad_clip: float = 10.0
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    hd_beta: float | None = None
    hd_per_group: bool = False
    seed: int = 0
    dtype: str = "float64"        # of weights, gradients, optimizer and memory state

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if isinstance(self.memory, dict):
            object.__setattr__(self, "memory", MemoryConfig.from_dict(self.memory))
        if self.memory.lr0 not in (MemoryConfig.lr0, self.lr):
            raise ValueError(f"memory lr0 ({self.memory.lr0:g}) is the learner's base rate: "
                             f"set lr instead")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose from {OPTIMIZERS}")
        if not (self.lr > 0 and self.grad_clip > 0):
            raise ValueError("lr and grad_clip must be > 0")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; choose from {', '.join(DTYPES)}")
        self.memory.validate()

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LearnerConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown learner config keys: {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def from_saved(cls, d: dict) -> "LearnerConfig":
        """From a config saved in a file: one written before `dtype` existed ran in float64,
        whatever today's default."""
        return cls.from_dict({"dtype": "float64", **d})


@dataclass
class ModelCopy:
    """What a prediction needs (weights and normalisers), copied out of a learner so that
    another thread or process can predict from it while the learner trains
    (rtlearn.service.learning)."""

    theta: np.ndarray
    x_mean: np.ndarray
    x_scale: np.ndarray
    y_mean: np.ndarray
    y_scale: np.ndarray

    def assign(self, theta, x_mean, x_scale, y_mean, y_scale) -> None:
        """Overwrite in place (no allocation; the weights without holding the GIL)."""
        copy_into(self.theta.reshape(-1), theta.reshape(-1))
        np.copyto(self.x_mean, x_mean)
        np.copyto(self.x_scale, x_scale)
        np.copyto(self.y_mean, y_mean)
        np.copyto(self.y_scale, y_scale)


class OnlineLearner:
    """One MLP per joint trained online; every batch is tested before it is trained on."""

    def __init__(self, config: LearnerConfig = LearnerConfig()):
        self.config = config
        c = config
        self.net = MLPStack(c.n_joints, c.n_inputs, c.hidden, c.batch_size, c.loss, c.seed,
                            np.dtype(c.dtype))
        self.norm = Normalizer(c.n_inputs, c.n_joints, c.normalize if c.loss == "mse" else
                               ("input" if c.normalize != "none" else "none"))
        self.optimizer = make_optimizer(c.optimizer, c.lr, c.grad_clip, c.memory, c.hd_beta,
                                        c.hd_per_group)
        self.opt_state = self.optimizer.init(self.net.theta.size, self.net.bounds,
                                             self.net.theta.dtype)
        self.resid = ResidualScale(c.n_joints)  # kept by the daemon's sample screen
        self.n_steps = 0
        self.n_samples = 0
        self._x1 = np.zeros((1, c.n_inputs))
        self._y1 = np.zeros((1, c.n_joints))
        self._xb = np.zeros((c.batch_size, c.n_inputs))
        self._yb = np.zeros((c.batch_size, c.n_joints))
        self._fill = 0
        self._shards: JointShards | None = None

    def set_threads(self, n: int) -> int:
        """Learn the joints on up to n threads (rtlearn.learner.parallel; bitwise the same
        result as one thread); returns the number used: 1 for one joint, or for an optimizer
        whose state couples the joints (sgd-hd / adam-hd with one rate for all)."""
        if self._shards is not None:
            self._shards.close()
            self._shards = None
        n = min(int(n), self.config.n_joints)
        if n > 1:
            try:
                self._shards = JointShards(self, n)
            except NotSeparable:
                n = 1
        return max(n, 1)

    def __getstate__(self):
        """Copies (copy.deepcopy, pickle) are single-threaded: threads do not copy."""
        return {**self.__dict__, "_shards": None}

    @property
    def threads(self) -> int:
        return 1 if self._shards is None else len(self._shards.shards)

    # -- river-style API --------------------------------------------------------------------
    def predict_one(self, x: np.ndarray, model: ModelCopy | None = None) -> np.ndarray:
        """Prediction for one sample; returns a view of an internal buffer (copy to keep it).

        With `model` (from model_copy / copy_model_into) it predicts from that copy instead
        of the live weights, so one thread can serve while another trains; only one thread
        may call predict_one at a time.
        """
        self._x1[0] = x
        if model is None:
            self.net.predict_into(self._x1, self.norm, self._y1)
        else:
            self.net.predict_into(self._x1, model, self._y1, model.theta)
        return self._y1[0]

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float64)
        out = np.zeros((X.shape[0], self.config.n_joints))
        self.net.predict_into(X, self.norm, out)
        return out

    def learn_many(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """One learning step on a batch of any number of rows up to batch_size (the gradient
        is the batch mean, so screened-out rows are simply left out). Returns per-joint loss
        measured before the update (a new array: callers keep loss histories)."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        Y = np.ascontiguousarray(Y, dtype=np.float64)
        if self._shards is not None:  # the same three lines, per shard of joints
            loss = self._shards.step(X, Y)
            self.norm.observe(X, Y)
        else:
            loss = self.net.loss_grad(X, Y, self.norm)
            self.norm.observe(X, Y)
            self.optimizer.step(self.net.theta.reshape(-1), self.net.grad.reshape(-1),
                                self.opt_state)
        self.n_steps += 1
        self.n_samples += X.shape[0]
        return loss.copy()

    def learn_one(self, x: np.ndarray, y: np.ndarray) -> np.ndarray | None:
        """Buffers one sample; when batch_size are in, learns on them and returns the loss."""
        self._xb[self._fill] = x
        self._yb[self._fill] = y
        self._fill += 1
        if self._fill < self.config.batch_size:
            return None
        self._fill = 0
        return self.learn_many(self._xb, self._yb)

    # -- live options and health ------------------------------------------------------------
    def model_copy(self) -> ModelCopy:
        n = self.norm
        return ModelCopy(self.net.theta.copy(), n.x_mean.copy(), n.x_scale.copy(),
                         n.y_mean.copy(), n.y_scale.copy())

    def copy_model_into(self, out: ModelCopy) -> None:
        """Refresh a ModelCopy in place (no allocation; the weights without holding the GIL)."""
        n = self.norm
        out.assign(self.net.theta, n.x_mean, n.x_scale, n.y_mean, n.y_scale)

    def is_finite(self) -> bool:
        return bool(all_finite(self.net.theta.reshape(-1)))

    def set_lr(self, lr: float) -> None:
        """New base rate: the constant rate, the hypergradient rate, or the memory's base
        rate, which scales every learned rate by the same factor (what the memory learned
        is relative to it)."""
        if not lr > 0:
            raise ValueError("lr must be > 0")
        for t, s in zip(self.optimizer.transforms, self.opt_state.states):
            for name in ("lr", "alpha"):
                if name in s:
                    s[name][...] = lr
            if "w" in s:
                s["w"] *= lr / s["lr0"][0]
                s["lr0"][0] = lr

    def set_memory_learning(self, on: bool) -> None:
        """Freeze (off) or resume (on) learning of the memories; predictions still use them."""
        for s in self.opt_state.states:
            if "learn" in s:
                s["learn"][0] = 1.0 if on else 0.0

    def options(self) -> dict:
        """The options set_lr and set_memory_learning change, as they stand: the base rate
        (the memory's or the constant one; for a hypergradient rate the configured one) and
        whether memories learn (None: no memory)."""
        lr, memory = self.config.lr, None
        for s in self.opt_state.states:
            if "lr0" in s:
                lr = float(s["lr0"][0])
            elif "lr" in s:
                lr = float(s["lr"][0])
            if "learn" in s:
                memory = bool(s["learn"][0] > 0)
        return {"lr": lr, "memory": memory}

    def rates(self) -> dict[str, np.ndarray]:
        """Current rate per group (memory: mean predicted rate; HD: alpha; constant: lr)."""
        out = {}
        for t, s in zip(self.optimizer.transforms, self.opt_state.states):
            for name in ("eta_mean", "alpha", "lr"):
                if name in s:
                    out[t.name] = s[name].copy()
        return out

    def layer_rates(self) -> tuple[str, np.ndarray]:
        """(name of the transform, its rates as (n_joints, n_layers, 2)): [joint, layer,
        0 for the weight matrix | 1 for the bias], the network's group order. The transform
        applied last wins; a single rate (constant, hypergradient) fills every group."""
        name, r = list(self.rates().items())[-1]
        shape = (self.config.n_joints, len(self.net.dims) - 1, 2)
        return name, np.broadcast_to(r, (int(np.prod(shape)),)).reshape(shape)

    # -- state: networks, memories, whole ---------------------------------------------------
    def network_state(self) -> dict[str, np.ndarray]:
        """Everything that belongs to one model (one payload context): a copy."""
        d = {"theta": self.net.theta}
        d.update({f"norm.{k}": v for k, v in self.norm.arrays().items()})
        d.update({f"resid.{k}": v for k, v in self.resid.arrays().items()})
        d.update({f"opt.{k}": v for k, v in self.optimizer.network_state(self.opt_state).items()})
        return {k: np.array(v, copy=True) for k, v in d.items()}

    def set_network_state(self, d: dict, scope: str = "all") -> None:
        """Load one model (a network_state); the memories are untouched, their per-step
        history is reset.

        scope="context" loads only what a payload context owns: every joint's output layer
        (weights, bias and their base-optimiser state), the target normaliser and the
        residual scale (the output layer's errors). The hidden
        layers and the input normaliser stay live: they describe the arm, which no payload
        changes, and have learned from every payload since (docs/service.md, "Contexts").
        """
        if scope not in ("all", "context"):
            raise ValueError(f"unknown scope {scope!r}")
        d = _upgrade(d)
        self._check_shape("theta", d["theta"], self.net.theta)
        for k, v in self.norm.arrays().items():
            self._check_shape(f"norm.{k}", d[f"norm.{k}"], v)
        for k, v in self.resid.arrays().items():
            self._check_shape(f"resid.{k}", d[f"resid.{k}"], v)
            np.copyto(v, d[f"resid.{k}"])
        opt = {k[4:]: v for k, v in d.items() if k.startswith("opt.")}
        if scope == "all":
            np.copyto(self.net.theta, d["theta"])
            for k, v in self.norm.arrays().items():
                np.copyto(v, d[f"norm.{k}"])
            self.optimizer.load(self.opt_state, opt, reset_history=True)
        else:
            idx = self.net.head
            self.net.theta.reshape(-1)[idx] = np.asarray(d["theta"]).reshape(-1)[idx]
            for k, v in self.norm.arrays().items():
                if k not in Normalizer.INPUT_KEYS:
                    np.copyto(v, d[f"norm.{k}"])
            for k, v in self.optimizer.network_state(self.opt_state).items():
                if k in opt and v.size == self.net.theta.size:  # per-parameter arrays
                    self._check_shape(f"opt.{k}", opt[k], v)
                    v.reshape(-1)[idx] = np.asarray(opt[k]).reshape(-1)[idx]
            self.optimizer.load(self.opt_state, {}, reset_history=True)
        self._fill = 0

    def context_predictions(self, X: np.ndarray, d: dict | None = None) -> np.ndarray:
        """Predictions (rows of X, joints) of the live model or, with `d`, of the live model
        with d's context part (scope="context") in place; changes nothing."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        out = np.zeros((X.shape[0], self.config.n_joints))
        if d is None:
            self.net.predict_into(X, self.norm, out)
        else:
            d = _upgrade(d)
            theta = self.net.theta.copy()
            idx = self.net.head
            theta.reshape(-1)[idx] = np.asarray(d["theta"]).reshape(-1)[idx]
            model = ModelCopy(theta, self.norm.x_mean, self.norm.x_scale,
                              np.asarray(d["norm.y_mean"]), np.asarray(d["norm.y_scale"]))
            self.net.predict_into(X, model, out, theta)
        return out

    def batch_loss(self, X: np.ndarray, Y: np.ndarray, d: dict | None = None) -> float:
        """Mean MSE over joints of a batch, predicted as `context_predictions` does."""
        return float(np.mean((self.context_predictions(X, d) - Y) ** 2))

    def blend_context(self, d: dict, w: np.ndarray) -> None:
        """Every joint's output layer becomes the one whose torque is w_j times the live
        layer's plus (1 - w_j) times that of d's context part, on the live hidden layers
        (in the live target normaliser; exact, as both are linear in the last hidden layer)."""
        d = _upgrade(d)
        blend_heads(self.net.theta, self.norm.y_mean, self.norm.y_scale, np.asarray(d["theta"]),
                    np.asarray(d["norm.y_mean"]), np.asarray(d["norm.y_scale"]), w,
                    int(self.net.dims[-2]))

    def memory_state(self) -> dict[str, np.ndarray]:
        """The learned rate state (memories, hypergradient rates): a copy."""
        return {k: v.copy() for k, v in self.optimizer.shared_state(self.opt_state).items()}

    def set_memory_state(self, d: dict, transfer: bool = True) -> None:
        """Load memories. transfer=True: as at the start of a new task (section 6: keep the
        memory values, reset the memory optimiser's moments); False: restore exactly."""
        if transfer:
            self.optimizer.transfer(self.opt_state, d)
        else:
            self.optimizer.load(self.opt_state, d, reset_history=False)

    @staticmethod
    def _check_shape(name, src, dst):
        if np.shape(src) != dst.shape:
            raise ValueError(f"state {name}: shape {np.shape(src)}, expected {dst.shape}")

    def save(self, path) -> None:
        arrays = {f"net.{k}": v for k, v in self.network_state().items()}
        arrays.update({f"opt.{k}": v for k, v in
                       self.optimizer.all_state(self.opt_state).items()})
        arrays["counters"] = np.array([self.n_steps, self.n_samples], dtype=np.int64)
        save_state(path, STATE_KIND, STATE_VERSION, {"config": _jsonable(self.config.to_dict())},
                   arrays)

    @classmethod
    def load(cls, path) -> "OnlineLearner":
        meta, arrays = load_state(path, STATE_KIND, (1, 2, 3, STATE_VERSION))
        learner = cls(LearnerConfig.from_saved(meta["config"]))
        learner.set_network_state({k[4:]: v for k, v in arrays.items() if k.startswith("net.")})
        learner.optimizer.load(learner.opt_state,
                               {k[4:]: v for k, v in arrays.items() if k.startswith("opt.")},
                               reset_history=False)
        learner.n_steps, learner.n_samples = (int(v) for v in arrays["counters"])
        return learner


def blend_heads(theta, y_mean, y_scale, theta_b, y_mean_b, y_scale_b, w, hidden: int) -> None:
    """In place: joint j's output layer (the last hidden + 1 entries of theta[j]) becomes
    the one that predicts, in raw units, w_j times its own forecast plus (1 - w_j) times that
    of theta_b's output layer with target normaliser (y_mean_b, y_scale_b); it stays in
    (y_mean, y_scale). y = m + s (h . a + c) is linear in (h, c), hence exact."""
    w = np.asarray(w, dtype=np.float64)[:, None]
    a = theta[:, -(hidden + 1):].astype(np.float64)
    b = np.asarray(theta_b)[:, -(hidden + 1):].astype(np.float64)
    s_a, s_b = y_scale[:, None], np.asarray(y_scale_b, dtype=np.float64)[:, None]
    out = w * s_a * a + (1.0 - w) * s_b * b
    out[:, -1] += (1.0 - w[:, 0]) * (np.asarray(y_mean_b) - y_mean)
    theta[:, -(hidden + 1):] = out / s_a


def _upgrade(d: dict) -> dict:
    """A version-1 model kept both normaliser counts in one array, norm.count; models before
    version 3 have no residual scale: the torques' own spread (the target normaliser's
    standard deviation) stands in for it, a lenient start the screen tightens within about
    half a second; without target statistics the screen starts from its first batch."""
    if "norm.count" not in d and "resid.scale" in d:
        return d
    d = dict(d)
    if "norm.count" in d:
        count = np.asarray(d.pop("norm.count"), dtype=np.float64)
        d["norm.x_count"], d["norm.y_count"] = count[:1].copy(), count[1:2].copy()
    if "resid.scale" not in d:
        seen = float(np.asarray(d["norm.y_count"])[0]) > 0
        d["resid.scale"] = np.array(d["norm.y_scale"], dtype=np.float64, copy=True)
        d["resid.count"] = np.array([1.0 if seen else 0.0])
    return d


def _jsonable(d):
    return json.loads(json.dumps(d))
