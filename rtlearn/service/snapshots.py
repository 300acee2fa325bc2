"""Daemon snapshots: the bank of context models, the shared memories and the counters, in one
versioned state file written atomically (rtlearn.learner.state_io: temp file, fsync, rename,
fsync of the directory), so a crash or `kill -9` leaves the previous snapshot intact.

The daemon's own snapshot file keeps generations: FILE is the newest, FILE.1 the one before,
up to FILE.<keep-1>. Each is a complete file; rotation only renames, oldest first, so at any
instant the existing generations are complete and in age order (`--resume` takes the newest
readable one)."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np

from rtlearn.learner import StateFileError
from rtlearn.learner.api import kind_of
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
    """(meta, arrays) of the whole learning state; call with the learner idle. memory.*:
    what the contexts share (rtlearn.learner.api: the MLP's memories, I-SSGPR's
    calibration); ctx<i>.*: each context's network_state."""
    models = bank.all_models(learner)
    names = sorted(models)
    arrays = {f"memory.{k}": v for k, v in learner.memory_state().items()}
    for i, name in enumerate(names):
        arrays.update({f"ctx{i}.{k}": v for k, v in models[name].items()})
    arrays["counters"] = np.array([learner.n_steps, learner.n_samples], dtype=np.int64)
    meta = {"kind": kind_of(learner).name,
            "learner": json.loads(json.dumps(learner.config.to_dict())), "contexts": names,
            "current": bank.current, "counters": counters, "usage": bank.usage,
            "restore_weights": None if bank.weights is None else bank.weights.to_dict()}
    return meta, arrays


class SnapshotsExistError(ValueError):
    """A start without --resume where snapshots exist (it would overwrite them)."""


def generation(path: Path, i: int) -> Path:
    """Generation i of the snapshot file `path` (0: the file itself, the newest)."""
    path = Path(path)
    return path if i == 0 else path.with_name(f"{path.name}.{i}")


def generations(path: Path) -> list[Path]:
    """The existing generations of `path`, newest first."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = re.compile(re.escape(path.name) + r"(?:\.([1-9][0-9]*))?")
    found = []
    for p in path.parent.iterdir():
        m = pattern.fullmatch(p.name)
        if m and p.is_file():
            found.append((int(m.group(1) or 0), p))
    return [p for _, p in sorted(found)]


def write(path: Path, meta: dict, arrays: dict, keep: int = 1) -> None:
    """Write atomically; with keep > 1 the previous files move down one generation first
    (the oldest beyond `keep` is replaced), only once the new one is complete on disk."""
    path = Path(path)
    if keep <= 1:
        save_state(path, KIND, VERSION, meta, arrays)
        return
    new = path.with_name(f".{path.name}.new")
    save_state(new, KIND, VERSION, meta, arrays)  # complete and fsynced before any rename
    for i in range(keep - 1, 0, -1):
        if generation(path, i - 1).exists():
            os.replace(generation(path, i - 1), generation(path, i))
    os.replace(new, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_newest(path: Path) -> tuple[Path, dict, dict, list[tuple[str, str]]] | None:
    """The newest readable generation of `path`: (its path, meta, arrays, [(skipped newer
    path, why)]); None if there is none at all; StateFileError if none is readable."""
    skipped = []
    for p in generations(path):
        try:
            meta, arrays = read(p)
        except StateFileError as e:
            skipped.append((str(p), str(e)))
            continue
        return p, meta, arrays, skipped
    if skipped:
        raise StateFileError("no readable snapshot: " + "; ".join(why for _, why in skipped))
    return None


def move_aside(path: Path) -> Path | None:
    """Move every generation of `path` into a new directory `previous-<time>` beside them
    (nothing is deleted; `rtlearn ctl load previous-.../FILE` still reads them)."""
    found = generations(path)
    if not found:
        return None
    aside = Path(path).parent / time.strftime("previous-%Y%m%d-%H%M%S")
    n = 1
    while aside.exists():
        n += 1
        aside = aside.with_name(time.strftime("previous-%Y%m%d-%H%M%S") + f"-{n}")
    aside.mkdir()
    for p in found:
        os.replace(p, aside / p.name)
    _fsync_dir(aside)
    _fsync_dir(Path(path).parent)
    return aside


def read(path: Path) -> tuple[dict, dict]:
    """(meta, arrays); raises StateFileError for a missing, corrupt or foreign file."""
    meta, arrays = load_state(path, KIND, (VERSION,))
    try:
        names = meta["contexts"]
        if meta["current"] not in names:
            raise KeyError("current")
        learner_config(meta)
    except (KeyError, TypeError, ValueError) as e:
        raise StateFileError(f"{path}: inconsistent snapshot header ({e})") from None
    return meta, arrays


def learner_config(meta: dict):
    """The learner config a snapshot was made with (snapshots before kinds: mlp)."""
    return kind_of(meta.get("kind", "mlp")).config_from_dict(meta["learner"])


def read_model(path, robot_name: str) -> tuple[dict, dict]:
    """A model file to start from (`rtlearn fit --save`, `serve --load`, `fit --load`): any
    daemon snapshot, which holds the learner's configuration, the memories and every context
    of the bank. StateFileError for a missing, corrupt or foreign file or another robot's."""
    meta, arrays = read(Path(path))
    if meta.get("robot", robot_name) != robot_name:
        raise StateFileError(f"{path}: a model of robot {meta['robot']!r}, not of {robot_name!r}")
    return meta, arrays


def restore(meta: dict, arrays: dict, learner, bank) -> None:
    """Load a snapshot read by `read` into an idle learner built with the same config (for
    the mlp kind, up to the dtype: a float64 snapshot resumes in float32 and back, rounded)."""
    saved = learner_config(meta)
    if not kind_of(learner).resumes(saved, learner.config):
        theirs, ours = saved.to_dict(), learner.config.to_dict()
        diffs = "; ".join(f"{key}: {a!r} in the snapshot, {b!r} here"
                          for key, a, b in _differences(theirs, ours))
        raise StateFileError(f"snapshot was made with another learner configuration (kind "
                             f"{meta.get('kind', 'mlp')}; {diffs}). Set [learner] in the "
                             "config as the snapshot has it, or start with --fresh")
    models = {name: {k[len(f"ctx{i}."):]: v for k, v in arrays.items() if k.startswith(f"ctx{i}.")}
              for i, name in enumerate(meta["contexts"])}
    try:
        bank.replace(models, meta["current"], learner, meta.get("usage"),
                     meta.get("restore_weights"))
        learner.set_memory_state({k[7:]: v for k, v in arrays.items() if k.startswith("memory.")},
                                 transfer=False)
    except (KeyError, ValueError) as e:
        raise StateFileError(f"snapshot does not fit this learner ({e})") from None
    learner.n_steps, learner.n_samples = (int(v) for v in arrays["counters"])


def _differences(a: dict, b: dict, prefix: str = "learner.") -> list[tuple[str, object, object]]:
    """(dotted key, value in a, value in b) for every leaf where two config dicts differ."""
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differences(x, y, f"{prefix}{key}.")
        elif x != y:
            out.append((prefix + key, x, y))
    return out
