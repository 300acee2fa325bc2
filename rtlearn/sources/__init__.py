"""Joint-state sources: robot descriptions, PyBullet simulation, Pinocchio dynamics, logs,
ROS 2 bags and the real-arm bridge, all behind the JointSource interface of `base`."""

from rtlearn.sources.base import (InputFileError, JointSource, LogFormatError,
                                  RobotSpecError, SourceError, UnknownPayloadError)
from rtlearn.sources.robot import Payload, RobotSpec, load_robot

__all__ = ["InputFileError", "JointSource", "LogFormatError", "Payload",
           "RobotSpec", "RobotSpecError", "SourceError", "UnknownPayloadError", "load_robot"]
