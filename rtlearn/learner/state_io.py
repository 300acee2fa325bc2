"""One versioned file for a whole state: an .npz archive with a JSON header.

Writes are atomic (temp file in the same directory, fsync, rename, fsync of the directory),
so a crash leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np


class StateFileError(ValueError):
    """A state file that is missing, unreadable, of another kind or of an unknown version."""


def save_state(path, kind: str, version: int, meta: dict, arrays: dict) -> Path:
    path = Path(path)
    header = json.dumps({"kind": kind, "version": version, "meta": meta})
    payload = {"__header__": np.frombuffer(header.encode(), dtype=np.uint8)}
    payload.update({k: np.asarray(v) for k, v in arrays.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return path


def load_state(path, kind: str, versions: tuple[int, ...]) -> tuple[dict, dict]:
    """Returns (meta, arrays); raises StateFileError naming the file and what is wrong."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise StateFileError(f"{path}: cannot read ({e.strerror})") from e
    if not raw.startswith(b"PK\x03\x04"):  # else numpy guesses a pickle and says so
        raise StateFileError(f"{path}: not a valid rtlearn state file (not an .npz archive: it "
                             f"starts with {raw[:8]!r})")
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise StateFileError(f"{path}: not a valid rtlearn state file ({e})") from e
    if "__header__" not in arrays:
        raise StateFileError(f"{path}: no header (not an rtlearn state file)")
    try:
        header = json.loads(arrays.pop("__header__").tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StateFileError(f"{path}: corrupt header ({e})") from e
    if header.get("kind") != kind:
        raise StateFileError(f"{path}: holds a {header.get('kind')!r}, expected {kind!r}")
    if header.get("version") not in versions:
        raise StateFileError(f"{path}: {kind} version {header.get('version')} "
                             f"not supported (supported: {versions})")
    return header.get("meta", {}), arrays
