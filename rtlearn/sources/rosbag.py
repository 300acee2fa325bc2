"""Import of ROS 2 bags (MCAP or sqlite3 storage) carrying sensor_msgs/msg/JointState, with the
pure-Python `rosbags` package (no ROS install).

Mapping: the robot's joints are picked out of each message by name (other joints are
ignored); position -> q, velocity -> qd, effort -> tau. Time is the message header stamp, or
the bag's receive time when the stamp is zero, relative to the first message. A bag never
carries acceleration: qdd is estimated with the causal filter of `filters` (lag (window-1)/2
samples). A message without velocity gets qd from the same filter on position.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from rtlearn.protocol.state import JointState
from rtlearn.sources.base import JointSource, LogFormatError, paced
from rtlearn.sources.filters import DEFAULT_WINDOW, CausalDerivative
from rtlearn.sources.robot import RobotSpec

MSGTYPE = "sensor_msgs/msg/JointState"


def is_bag(path: str | Path) -> bool:
    """A ROS 2 bag directory (metadata.yaml inside) or one of its .mcap / .db3 files."""
    path = Path(path)
    return (path / "metadata.yaml").is_file() or path.suffix in (".mcap", ".db3")


class BagSource(JointSource):
    def __init__(self, path: str | Path, robot: RobotSpec, topic: str | None = None,
                 window: int = DEFAULT_WINDOW, context: str | None = None,
                 speed: float | None = None):
        from rosbags.rosbag2 import Reader
        from rosbags.typesys import Stores, get_typestore

        path = Path(path)
        self.path = path.parent if path.is_file() else path
        self.robot, self.window, self.context, self.speed = robot, window, context, speed
        self._typestore = get_typestore(Stores.ROS2_HUMBLE)
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except Exception as e:  # rosbags raises several unrelated types for a bad bag
            raise LogFormatError(self.path, None, f"cannot open ROS 2 bag: {e}") from None
        found = [c for c in self._reader.connections if c.msgtype == MSGTYPE]
        topics = sorted({c.topic for c in found})
        if not topics:
            self.close()
            raise LogFormatError(self.path, "topic", f"no {MSGTYPE} topic in the bag")
        if topic is None:
            if len(topics) > 1:
                self.close()
                raise LogFormatError(self.path, "topic", f"several {MSGTYPE} topics, choose one: {topics}")
            topic = topics[0]
        if topic not in topics:
            self.close()
            raise LogFormatError(self.path, "topic", f"{topic!r} not among {topics}")
        self.topic = topic
        self._connections = [c for c in found if c.topic == topic]

    def __iter__(self) -> Iterator[JointState]:
        return paced(self._states(), self.speed)

    def _states(self) -> Iterator[JointState]:
        n = self.robot.n_joints
        acc = CausalDerivative(n, self.window)
        vel = CausalDerivative(n, self.window)
        index_cache: dict[tuple[str, ...], np.ndarray] = {}
        t0 = None
        seq = 0
        try:
            messages = self._reader.messages(connections=self._connections)
            for _, stamp_ns, raw in messages:
                msg = self._typestore.deserialize_cdr(raw, MSGTYPE)
                names = tuple(msg.name)
                idx = index_cache.get(names)
                if idx is None:
                    missing = [j for j in self.robot.joints if j not in names]
                    if missing:
                        raise LogFormatError(self.path, "name",
                                             f"message {seq} lacks joints {missing}")
                    idx = index_cache[names] = np.array([names.index(j) for j in self.robot.joints])
                stamp = msg.header.stamp
                t_abs = stamp.sec + 1e-9 * stamp.nanosec if (stamp.sec or stamp.nanosec) else 1e-9 * stamp_ns
                t0 = t_abs if t0 is None else t0
                t = t_abs - t0
                q = self._field(msg.position, "position", idx, seq, required=True)
                tau = self._field(msg.effort, "effort", idx, seq, required=True)
                qd = self._field(msg.velocity, "velocity", idx, seq, required=False)
                if qd is None:
                    qd = vel.update(t, q)
                yield JointState(seq=seq, t=t, q=q, qd=qd, qdd=acc.update(t, qd), tau=tau,
                                 context=self.context)
                seq += 1
        except LogFormatError:
            raise
        except Exception as e:  # truncated chunk, bad CDR, ...
            raise LogFormatError(self.path, None, f"corrupt bag after {seq} messages: {e}") from None

    def _field(self, values, name: str, idx: np.ndarray, seq: int, required: bool):
        values = np.asarray(values, dtype=np.float64)
        if len(values) == 0 and not required:
            return None
        if len(values) <= idx.max():
            raise LogFormatError(self.path, name, f"message {seq} has {len(values)} values")
        out = values[idx]
        if not np.all(np.isfinite(out)):
            raise LogFormatError(self.path, name, f"message {seq} has NaN or Inf")
        return out

    def close(self) -> None:
        reader, self._reader = getattr(self, "_reader", None), None
        if reader is not None:
            reader.close()
