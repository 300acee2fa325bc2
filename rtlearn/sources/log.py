"""The rtlearn log format (version 1) and its replay source.

A log is one NumPy .npz archive (a zip of .npy arrays, DEFLATE-compressed; the .npy headers
carry dtype and byte order, so logs are portable). Members:

  header   uint8: UTF-8 JSON {"format": "rtlearn-log", "version": 1, "robot": name,
           "joints": [...], "n_joints": n, "count": N, "contexts": [labels...],
           "robot_toml": the robot description's text, "robot_file": its absolute path when
           recorded (a relative `urdf` in the text resolves against that file's directory),
           "meta": {free-form: task, seed, ...}}
  seq      int64 (N,)      strictly increasing
  t        float64 (N,)    s since stream start
  q qd tau float64 (N, n)
  qdd      float64 (N, n)  only if some packet has one; NaN rows are packets without
  context  int16 (N,)      index into header.contexts, -1 for none

Writes go to a temporary file renamed into place, so a crash never leaves half a log. The
temporary file is created when the writer is, so a path that cannot be written fails before
anything is recorded; if the final write still fails, the data goes to the system's temporary
directory and the error says where.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from rtlearn.protocol.state import JointState
from rtlearn.sources.base import JointSource, LogFormatError, LogPathError, RobotSpecError, paced
from rtlearn.sources.robot import RobotSpec, parse_robot

FORMAT = "rtlearn-log"
VERSION = 1
VECTORS = ("q", "qd", "tau")


class LogWriter:
    """Accumulates JointStates in growing arrays and writes the log on close(); discard()
    instead leaves nothing behind. LogPathError at once for a path that cannot be a log."""

    def __init__(self, path: str | Path, robot: RobotSpec, meta: dict | None = None):
        self.path = Path(path)
        if self.path.suffix != ".npz":
            raise LogPathError(self.path, None, "an rtlearn log is a NumPy .npz archive: name "
                                                f"it {self.path.stem}.npz")
        if self.path.is_dir():
            raise LogPathError(self.path, None, "is a directory: give a file name ending .npz")
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp",
                                       dir=self.path.parent)
        except OSError as e:
            raise LogPathError(self.path, None, f"cannot write a log there: {e.strerror} "
                                                f"({self.path.parent})") from None
        os.close(fd)
        self._tmp = Path(tmp)
        self.robot = robot
        self.meta = dict(meta or {})
        n = robot.n_joints
        self._cap, self._len = 4096, 0
        self._seq = np.empty(self._cap, np.int64)
        self._t = np.empty(self._cap)
        self._vec = {k: np.empty((self._cap, n)) for k in (*VECTORS, "qdd")}
        self._ctx = np.empty(self._cap, np.int16)
        self._contexts: list[str] = []
        self._has_qdd = False
        self.closed = False

    def __len__(self) -> int:
        return self._len

    def append(self, s: JointState) -> None:
        if self._len == self._cap:
            self._grow()
        i = self._len
        self._seq[i], self._t[i] = s.seq, s.t
        for k in VECTORS:
            self._vec[k][i] = getattr(s, k)
        if s.qdd is None:
            self._vec["qdd"][i] = np.nan
        else:
            self._vec["qdd"][i] = s.qdd
            self._has_qdd = True
        if s.context is None:
            self._ctx[i] = -1
        else:
            if s.context not in self._contexts:
                self._contexts.append(s.context)
            self._ctx[i] = self._contexts.index(s.context)
        self._len += 1

    def _grow(self) -> None:
        self._cap *= 2
        self._seq = np.resize(self._seq, self._cap)
        self._t = np.resize(self._t, self._cap)
        self._ctx = np.resize(self._ctx, self._cap)
        for k, a in self._vec.items():
            grown = np.empty((self._cap, a.shape[1]))
            grown[: self._len] = a[: self._len]
            self._vec[k] = grown

    def discard(self) -> None:
        """Close without writing anything."""
        self.closed = True
        self._tmp.unlink(missing_ok=True)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        arrays = self._arrays()
        try:
            with open(self._tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)
            os.replace(self._tmp, self.path)
        except OSError as e:
            self._tmp.unlink(missing_ok=True)
            rescue = Path(tempfile.gettempdir()) / f"rtlearn-rescued-{os.getpid()}-{self.path.name}"
            with open(rescue, "wb") as fh:
                np.savez_compressed(fh, **arrays)
            raise LogPathError(self.path, None, f"could not be written ({e.strerror}); the "
                                                f"{self._len} recorded packets are in {rescue}"
                               ) from None

    def _arrays(self) -> dict:
        m = self._len
        header = {"format": FORMAT, "version": VERSION, "robot": self.robot.name,
                  "joints": self.robot.joints, "n_joints": self.robot.n_joints, "count": m,
                  "contexts": self._contexts, "robot_toml": self.robot.source_text,
                  "robot_file": str(self.robot.file),
                  "meta": {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **self.meta}}
        arrays = {"header": np.frombuffer(json.dumps(header).encode(), np.uint8),
                  "seq": self._seq[:m], "t": self._t[:m], "context": self._ctx[:m]}
        arrays.update({k: self._vec[k][:m] for k in VECTORS})
        if self._has_qdd:
            arrays["qdd"] = self._vec["qdd"][:m]
        return arrays

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_log(path: str | Path, robot: RobotSpec, states, meta: dict | None = None) -> int:
    """Write an iterable of JointStates; returns how many."""
    with LogWriter(path, robot, meta) as w:
        for s in states:
            w.append(s)
    return len(w)


def read_log(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Load and validate a log: (header, arrays). Raises LogFormatError naming file and field."""
    path = Path(path)
    if path.is_dir():  # what a bag directory without its metadata.yaml looks like here
        raise LogFormatError(path, None, "a directory without metadata.yaml: not a ROS 2 bag "
                             "(a bag directory holds metadata.yaml beside its .mcap or .db3 "
                             "files) and not an rtlearn log (a .npz file)")
    try:
        with np.load(path, allow_pickle=False) as z:
            members = set(z.files)
            if "header" not in members:
                raise LogFormatError(path, "header", "missing: not an rtlearn log")
            arrays = {k: z[k] for k in members}
    except LogFormatError:
        raise
    except FileNotFoundError:
        raise LogFormatError(path, None, "no such file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise LogFormatError(path, None, f"corrupt or truncated log ({type(e).__name__}: {e})") from None
    try:
        header = json.loads(arrays.pop("header").tobytes().decode())
    except (ValueError, UnicodeDecodeError) as e:
        raise LogFormatError(path, "header", f"not valid JSON: {e}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise LogFormatError(path, "header.format", f"expected {FORMAT!r}")
    if header.get("version") != VERSION:
        raise LogFormatError(path, "header.version",
                             f"unsupported version {header.get('version')!r} (this rtlearn reads {VERSION})")
    for key, kind in (("count", int), ("n_joints", int), ("contexts", list), ("robot_toml", str)):
        if not isinstance(header.get(key), kind):
            raise LogFormatError(path, f"header.{key}", f"missing or not {kind.__name__}")
    if not isinstance(header.get("robot_file", ""), str):
        raise LogFormatError(path, "header.robot_file", "not str")
    m, n = header["count"], header["n_joints"]
    shapes = {"seq": (m,), "t": (m,), "context": (m,), **{k: (m, n) for k in VECTORS}}
    if "qdd" in arrays:
        shapes["qdd"] = (m, n)
    for key, shape in shapes.items():
        if key not in arrays:
            raise LogFormatError(path, key, "missing")
        if arrays[key].shape != shape:
            raise LogFormatError(path, key, f"expected shape {shape}, got {arrays[key].shape}")
    for key in ("t", *VECTORS):
        if not np.all(np.isfinite(arrays[key])):
            raise LogFormatError(path, key, "contains NaN or Inf")
    if m > 1 and np.any(np.diff(arrays["seq"]) <= 0):
        raise LogFormatError(path, "seq", "not strictly increasing")
    ctx = arrays["context"]
    if np.any((ctx < -1) | (ctx >= len(header["contexts"]))):
        raise LogFormatError(path, "context", "index outside header.contexts")
    return header, arrays


def logged_robot(header: dict, path: Path) -> RobotSpec:
    """The robot embedded in a log's header. Its relative paths resolve against the robot file's
    directory as recorded, else (robot file moved, or a log older than header.robot_file)
    against the log's own directory; if neither holds the URDF, the error names both paths."""
    text = header["robot_toml"]
    places = [Path(header["robot_file"])] if header.get("robot_file") else []
    tried = []
    for place in places + [path]:
        try:
            return parse_robot(text, place)
        except RobotSpecError as e:
            if e.field != "urdf":
                raise
            tried.append(e.reason)
    raise LogFormatError(path, "header.robot_toml",
                         f"cannot find the robot's URDF ({'; '.join(tried)}); "
                         "pass the robot explicitly (--robot)")


class LogSource(JointSource):
    """Replays a log. speed=None: as fast as the consumer takes it; speed=1.0: at the recorded
    pace (absolute deadlines from the time stamps); 2.0: twice as fast."""

    def __init__(self, path: str | Path, speed: float | None = None, robot: RobotSpec | None = None):
        self.path = Path(path)
        self.header, self.arrays = read_log(self.path)
        self.robot = robot or logged_robot(self.header, self.path)
        if self.robot.n_joints != self.header["n_joints"]:
            raise LogFormatError(self.path, "header.n_joints",
                                 f"{self.header['n_joints']} joints but robot {self.robot.name} has "
                                 f"{self.robot.n_joints}")
        self.speed = speed

    def __len__(self) -> int:
        return self.header["count"]

    def __iter__(self) -> Iterator[JointState]:
        return paced(self._states(), self.speed)

    def _states(self) -> Iterator[JointState]:
        a, contexts = self.arrays, self.header["contexts"]
        qdd = a.get("qdd")
        for i in range(len(self)):
            acc = None if qdd is None or np.isnan(qdd[i, 0]) else qdd[i].copy()
            c = int(a["context"][i])
            yield JointState(seq=int(a["seq"][i]), t=float(a["t"][i]), q=a["q"][i].copy(),
                             qd=a["qd"][i].copy(), qdd=acc, tau=a["tau"][i].copy(),
                             context=contexts[c] if c >= 0 else None)
