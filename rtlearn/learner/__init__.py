"""The learner: per-joint MLPs, optimizers as composable transforms, the learning-rate memory."""

from .learner import LearnerConfig, OnlineLearner
from .memory import MemoryConfig, authors_memory, memory, predict_rates
from .optim import (OPTIMIZERS, adam, clip, constant, hypergradient, make_optimizer,
                    scale_key)
from .state_io import StateFileError
from .transform import Optimizer, Transform, chain

__all__ = ["LearnerConfig", "OnlineLearner", "MemoryConfig", "authors_memory", "memory",
           "predict_rates", "OPTIMIZERS", "adam", "clip", "constant", "hypergradient",
           "make_optimizer", "scale_key",
           "StateFileError", "Optimizer", "Transform", "chain"]
