"""The learner: per-joint MLPs, optimizers as composable transforms, the learning-rate memory."""

from .learner import LearnerConfig, OnlineLearner
from .memory import MemoryConfig, memory, predict_rates
from .optim import OPTIMIZERS, adam, clip, constant, hypergradient, make_optimizer
from .state_io import StateFileError
from .transform import Optimizer, Transform, chain

__all__ = ["LearnerConfig", "OnlineLearner", "MemoryConfig", "memory", "predict_rates",
           "OPTIMIZERS", "adam", "clip", "constant", "hypergradient", "make_optimizer",
           "StateFileError", "Optimizer", "Transform", "chain"]
