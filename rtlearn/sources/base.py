"""The joint-state contract shared by every source (see docs/architecture.md) and the errors
sources raise on bad input. Every error message names the file and the field at fault."""

from __future__ import annotations

from abc import ABC, abstractmethod
import time
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

from rtlearn.protocol.state import JointState

if TYPE_CHECKING:
    from rtlearn.sources.robot import RobotSpec


class SourceError(Exception):
    """Base class of every error raised by rtlearn.sources."""


class InputFileError(SourceError, ValueError):
    """A file (robot TOML, log, bag) is missing, malformed or inconsistent.

    `path` and `field` are kept as attributes so callers can report them; the message
    always starts with "<path>: field '<field>': ..." when a field is at fault.
    """

    def __init__(self, path, field: str | None, reason: str):
        self.path = str(path)
        self.field = field
        self.reason = reason
        where = f"{self.path}: field '{field}'" if field else self.path
        super().__init__(f"{where}: {reason}")


class RobotSpecError(InputFileError):
    """A robots/*.toml file is malformed or disagrees with its URDF."""


class LogFormatError(InputFileError):
    """A recorded log or ROS 2 bag is corrupt, truncated or of an unknown format."""


class LogPathError(InputFileError):
    """A log cannot be written where asked (no such directory, not writable, not .npz), or
    its final write failed (the message then says where the data went instead)."""


class UnknownPayloadError(SourceError, KeyError):
    """A payload name that the robot description does not define."""

    def __init__(self, name: str, robot_file: str, known: list[str]):
        self.name = name
        self.path = robot_file
        msg = f"{robot_file}: field 'payloads': unknown payload {name!r}; known: {', '.join(known)}"
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


class JointSource(ABC):
    """Simulation, log replay, ROS 2 bag and real-arm bridge all look like this to a consumer."""

    robot: "RobotSpec"

    @abstractmethod
    def __iter__(self) -> Iterator[JointState]: ...

    def set_payload(self, name: str) -> None:
        """Live payload swap; only a simulation can do it."""
        raise NotImplementedError(f"{type(self).__name__} cannot change its payload")

    def close(self) -> None:
        """Release sockets, files and physics clients; safe to call twice."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def paced(states: Iterable[JointState], speed: float | None) -> Iterator[JointState]:
    """Deliver states at `speed` times their time stamps (absolute deadlines, so sleep
    overshoot never accumulates); speed None: as fast as the consumer takes them."""
    if not speed:
        yield from states
        return
    start = time.perf_counter()
    t0 = None
    for s in states:
        t0 = s.t if t0 is None else t0
        delay = start + (s.t - t0) / speed - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        yield s
