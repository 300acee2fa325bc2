"""What rtlearn.service needs of a learner (`Learner`), and the two kinds it serves
(`[learner] kind = "mlp" | "issgpr"`): the MLP stack with the memory of learning rates
(OnlineLearner) and the peer I-SSGPR (ISSGPR). The service talks to the protocol; the few
things that depend on how a kind lays out its model (`Kind`) are here, once, not as type
checks through the service.

Meaning of each part per kind (docs/service.md, "Learner kinds"):

| | mlp | issgpr |
|---|---|---|
| model copy (served) | weights + normalisers (ModelCopy) | features, weights, target means (ISSGPRModel) |
| network_state: one payload context | output layers + target normaliser + residual scale (scope="context"); everything (scope="all") | the whole model, kernel included, both scopes |
| memory_state: shared by contexts | the learning-rate memories | the calibration: stage and window |
| set_lr / set_memory_learning | base rate / freeze the memories | refused (ValueError): no rate |
| rates | per-group rates | none |
| guard.explode_factor | rolls back | not applied: exact least squares does not diverge |
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import replace
from typing import Protocol, runtime_checkable

import numpy as np

from .issgpr import ISSGPR, ISSGPRConfig, ISSGPRModel
from .learner import LearnerConfig, ModelCopy, OnlineLearner, blend_heads


@runtime_checkable
class Learner(Protocol):
    """The learner contract of docs/architecture.md, as the daemon uses it."""

    config: object
    resid: object          # rtlearn.learner.robust.ResidualScale, kept by the sample screen
    n_steps: int
    n_samples: int

    def predict_one(self, x: np.ndarray, model=None) -> np.ndarray: ...
    def predict_many(self, X: np.ndarray) -> np.ndarray: ...
    def learn_many(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray: ...
    def model_copy(self): ...
    def copy_model_into(self, out) -> None: ...
    def network_state(self) -> dict: ...
    def set_network_state(self, d: dict, scope: str = "all") -> None: ...
    def batch_loss(self, X: np.ndarray, Y: np.ndarray, d: dict | None = None) -> float: ...
    def memory_state(self) -> dict: ...
    def set_memory_state(self, d: dict, transfer: bool = True) -> None: ...
    def is_finite(self) -> bool: ...
    def set_lr(self, lr: float) -> None: ...
    def set_memory_learning(self, on: bool) -> None: ...
    def rates(self) -> dict: ...
    def layer_rates(self) -> tuple[str, np.ndarray]: ...
    def options(self) -> dict: ...
    def save(self, path) -> None: ...


class Kind(ABC):
    """How the service builds, warms up, serves and reports one kind of learner."""

    name: str
    config_type: type
    # whether a learning step can diverge (the daemon's guard.explode_factor): a gradient
    # step can; exact least squares cannot, and a large loss is then only a surprise in the
    # data (a new payload), which a rollback would make it unlearn
    diverges: bool = True

    @abstractmethod
    def make(self, config, daemon: bool = False) -> Learner:
        """A fresh learner; daemon=True: as the daemon runs it."""

    def config_from_dict(self, d: dict):
        """A config saved in a file (a snapshot's header)."""
        return self.config_type.from_dict(d)

    def resumes(self, saved, config) -> bool:
        """Whether a snapshot made with config `saved` resumes in a learner of `config`."""
        return saved == config

    def set_threads(self, learner: Learner, n: int) -> int:
        """Learn on up to n threads; returns the number used (1: this kind learns on one)."""
        return 1

    @abstractmethod
    def warm_up(self, learner: Learner, batch_size: int) -> None:
        """Compile or load every kernel of the learning step and of predict_one."""

    @abstractmethod
    def servable(self, state: dict):
        """The model copy that serves a parked context's network_state."""

    # whether a restored context can be served as a blend with the continuing model
    # (ContextBank: the restore's weights); a blend must be one model of this kind
    blends: bool = False

    @abstractmethod
    def restored(self, predictor: Learner, live, stored, weights=None):
        """What the learner makes of a restore (set_network_state(stored, "context") on a
        learner whose model is `live`, then, for a kind that blends, blend_context(live,
        weights)), as a model copy: served until it is published."""

    def status(self, learner: Learner) -> dict:
        return {"kind": self.name,
                "rates": {k: float(np.mean(v)) for k, v in learner.rates().items()}}


class MLPKind(Kind):
    name, config_type, blends = "mlp", LearnerConfig, True

    def make(self, config: LearnerConfig, daemon: bool = False) -> OnlineLearner:
        return OnlineLearner(config)

    def config_from_dict(self, d: dict) -> LearnerConfig:
        return LearnerConfig.from_saved(d)  # from before dtype: float64

    def resumes(self, saved: LearnerConfig, config: LearnerConfig) -> bool:
        """The same model up to the dtype (the arrays are cast, rounded)."""
        return replace(saved, dtype=config.dtype) == config

    def set_threads(self, learner: OnlineLearner, n: int) -> int:
        return learner.set_threads(n)

    def status(self, learner: OnlineLearner) -> dict:
        return {**super().status(learner), "threads": learner.threads}

    def warm_up(self, learner: OnlineLearner, batch_size: int) -> None:
        x = np.zeros((batch_size, learner.config.n_inputs))
        learner.learn_many(x, np.zeros((batch_size, learner.config.n_joints)))
        learner.is_finite()
        learner.predict_one(x[0], learner.model_copy())

    def servable(self, state: dict) -> ModelCopy:
        return ModelCopy(*(np.array(state[k]) for k in (
            "theta", "norm.x_mean", "norm.x_scale", "norm.y_mean", "norm.y_scale")))

    def restored(self, predictor: OnlineLearner, live: ModelCopy, stored: ModelCopy,
                 weights=None) -> ModelCopy:
        """The live hidden layers and input normaliser with the stored context's output
        layer and target normaliser (OnlineLearner.set_network_state, scope="context"),
        the output layer blended with the live one by `weights` (blend_context)."""
        head = predictor.net.head
        theta = live.theta.copy()
        theta.reshape(-1)[head] = stored.theta.reshape(-1)[head]
        y_mean, y_scale = stored.y_mean.copy(), stored.y_scale.copy()
        if weights is not None:
            blend_heads(theta, y_mean, y_scale, live.theta, live.y_mean, live.y_scale, weights,
                        int(predictor.net.dims[-2]))
        return ModelCopy(theta, live.x_mean.copy(), live.x_scale.copy(), y_mean, y_scale)


class ISSGPRKind(Kind):
    name, config_type, diverges = "issgpr", ISSGPRConfig, False

    def make(self, config: ISSGPRConfig, daemon: bool = False) -> ISSGPR:
        # in the daemon a kernel fit must not hold up learning for seconds
        return ISSGPR(config, background_fit=daemon)

    def warm_up(self, learner: ISSGPR, batch_size: int) -> None:
        c = learner.config
        learner.set_hyperparameters(np.zeros(c.n_inputs), np.ones(c.n_inputs), 1.0, 0.1,
                                    np.zeros(c.n_joints))
        x = np.zeros((batch_size, c.n_inputs))
        learner.learn_many(x, np.zeros((batch_size, c.n_joints)))
        learner.is_finite()
        learner.predict_one(x[0], learner.model_copy())

    def servable(self, state: dict) -> ISSGPRModel:
        return ISSGPRModel(*(np.array(state[k]) for k in ("P", "c", "W", "y_mean")))

    def restored(self, predictor: ISSGPR, live: ISSGPRModel, stored: ISSGPRModel,
                 weights=None) -> ISSGPRModel:
        """A context is the whole model: the stored one."""
        return ISSGPRModel(stored.P.copy(), stored.c.copy(), stored.W.copy(),
                           stored.y_mean.copy())

    def status(self, learner: ISSGPR) -> dict:
        c, n = learner.config, learner.config.n_inputs
        signal, noise = (float(v) for v in learner.hyper[2 * n:])
        return {**super().status(learner), "features": c.n_features, "forget": c.forget,
                "calibration": {"stage": learner.stage, "stages": len(c.calib),
                                "at_samples": list(c.calib), "window": learner.calib_fill,
                                "fitting": learner.fitting},
                "kernel": {"signal": signal, "noise": noise} if learner.stage else None}


KINDS: dict[str, Kind] = {k.name: k for k in (MLPKind(), ISSGPRKind())}


def kind_of(obj) -> Kind:
    """The kind of a learner, of a learner config, or named ("mlp", "issgpr")."""
    if isinstance(obj, str):
        if obj not in KINDS:
            raise ValueError(f"unknown learner kind {obj!r}; choose from {sorted(KINDS)}")
        return KINDS[obj]
    config = getattr(obj, "config", obj)
    for kind in KINDS.values():
        if isinstance(config, kind.config_type):
            return kind
    raise TypeError(f"not a learner or learner config: {type(obj).__name__}")
