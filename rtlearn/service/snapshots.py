"""Daemon snapshots: the bank of context models, the shared memories and the counters, in one
versioned state file written atomically (rtlearn.learner.state_io: temp file, fsync, rename,
fsync of the directory), so a crash or `kill -9` leaves the previous snapshot intact."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from rtlearn.learner import LearnerConfig, StateFileError
from rtlearn.learner.state_io import load_state, save_state

KIND = "rtlearn-daemon-snapshot"
VERSION = 1


class SnapshotPathError(ValueError):
    """A path outside the snapshot directory, or not a plain relative file name."""


def confined(directory: str | Path, name: str) -> Path:
    """`name` resolved inside `directory`; symlinks and '..' may not lead out of it."""
    base = Path(directory).resolve()
    if not name or Path(name).is_absolute() or "\x00" in name:
        raise SnapshotPathError(f"snapshot path {name!r} must be relative to the snapshot directory")
    path = (base / name).resolve()
    if os.path.commonpath([base, path]) != str(base) or path == base:
        raise SnapshotPathError(f"snapshot path {name!r} leaves the snapshot directory")
    return path


def capture(learner, bank, counters: dict) -> tuple[dict, dict]:
    """(meta, arrays) of the whole learning state; call with the learner idle."""
    models = bank.all_models(learner)
    names = sorted(models)
    arrays = {f"memory.{k}": v for k, v in learner.memory_state().items()}
    for i, name in enumerate(names):
        arrays.update({f"ctx{i}.{k}": v for k, v in models[name].items()})
    arrays["counters"] = np.array([learner.n_steps, learner.n_samples], dtype=np.int64)
    meta = {"learner": json.loads(json.dumps(learner.config.to_dict())), "contexts": names,
            "current": bank.current, "counters": counters}
    return meta, arrays


def write(path: Path, meta: dict, arrays: dict) -> None:
    save_state(path, KIND, VERSION, meta, arrays)


def read(path: Path) -> tuple[dict, dict]:
    """(meta, arrays); raises StateFileError for a missing, corrupt or foreign file."""
    meta, arrays = load_state(path, KIND, (VERSION,))
    try:
        names = meta["contexts"]
        if meta["current"] not in names:
            raise KeyError("current")
        LearnerConfig.from_dict(meta["learner"])
    except (KeyError, TypeError, ValueError) as e:
        raise StateFileError(f"{path}: inconsistent snapshot header ({e})") from None
    return meta, arrays


def restore(meta: dict, arrays: dict, learner, bank) -> None:
    """Load a snapshot read by `read` into an idle learner built with the same config."""
    if LearnerConfig.from_dict(meta["learner"]) != learner.config:
        raise StateFileError("snapshot was made with another learner configuration: "
                             f"{meta['learner']}")
    models = {name: {k[len(f"ctx{i}."):]: v for k, v in arrays.items() if k.startswith(f"ctx{i}.")}
              for i, name in enumerate(meta["contexts"])}
    try:
        bank.replace(models, meta["current"], learner)
        learner.set_memory_state({k[7:]: v for k, v in arrays.items() if k.startswith("memory.")},
                                 transfer=False)
    except (KeyError, ValueError) as e:
        raise StateFileError(f"snapshot does not fit this learner ({e})") from None
    learner.n_steps, learner.n_samples = (int(v) for v in arrays["counters"])
