"""Robot descriptions: robots/<name>.toml parsed and validated into a RobotSpec.

A robot is data: its URDF, the joints we drive (in order), their limits, friction, the
end-effector link, a home pose and the payloads it can carry. Nothing else in rtlearn knows
which arm it is talking to. Any movable URDF joint *not* listed in `joints` (e.g. gripper
fingers) is turned into a fixed joint at zero, so PyBullet and Pinocchio see the same chain.
"""

from __future__ import annotations

import math
import tomllib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rtlearn.sources.base import RobotSpecError, UnknownPayloadError

ROBOTS_DIR = Path(__file__).resolve().parents[2] / "robots"
PYBULLET_SCHEME = "pybullet_data://"
PAYLOAD_LINK_PREFIX = "rtlearn_payload_"
MOVABLE = ("revolute", "continuous", "prismatic")


@dataclass(frozen=True, slots=True)
class Payload:
    """A rigid object held at the end effector.

    com: centre of mass in the end-effector link frame (m); inertia: principal moments about
    the centre of mass, axes aligned with the end-effector link frame (kg*m^2).
    """

    name: str
    mass: float
    com: np.ndarray
    inertia: np.ndarray
    description: str = ""


@dataclass(slots=True)
class RobotSpec:
    name: str
    file: Path
    urdf: Path
    joints: list[str]
    end_effector: str
    torque_limits: np.ndarray
    velocity_limits: np.ndarray
    home: np.ndarray
    viscous_friction: np.ndarray
    coulomb_friction: np.ndarray
    payloads: dict[str, Payload]
    bandwidth: float = 30.0          # closed-loop natural frequency of the tracking controller, rad/s
    tasks: dict[str, object] = field(default_factory=dict)
    source_text: str = ""            # the TOML itself, embedded in logs so they are self-describing

    @property
    def n_joints(self) -> int:
        return len(self.joints)

    def payload(self, name: str) -> Payload:
        try:
            return self.payloads[name]
        except KeyError:
            raise UnknownPayloadError(name, str(self.file), list(self.payloads)) from None

    def prepared_urdf(self) -> str:
        """The URDF as loaded by both PyBullet and Pinocchio.

        Unlisted movable joints become fixed; mesh paths become absolute (so the text can be
        written anywhere); each payload with mass gets a massless link fixed to the end effector
        at its centre of mass, whose mass the simulation sets when that payload is held —
        PyBullet cannot move a link's centre of mass at run time, but it can change a mass.
        """
        try:
            root = ET.parse(self.urdf).getroot()
        except (OSError, ET.ParseError) as e:
            raise RobotSpecError(self.file, "urdf", f"cannot read URDF {self.urdf}: {e}") from None
        links = {el.get("name") for el in root.findall("link")}
        if self.end_effector not in links:
            raise RobotSpecError(self.file, "end_effector",
                                 f"link {self.end_effector!r} not in {self.urdf}")
        movable = {}
        for el in root.findall("joint"):
            if el.get("type") in MOVABLE:
                movable[el.get("name")] = el
        for j in self.joints:
            if j not in movable:
                raise RobotSpecError(self.file, "joints",
                                     f"{j!r} is not a movable joint of {self.urdf}")
        for name, el in movable.items():
            if name not in self.joints:
                el.set("type", "fixed")
        base_dir = self.urdf.parent
        for mesh in root.iter("mesh"):
            fn = mesh.get("filename", "")
            # PyBullet resolves package:// against the URDF's folder; do the same, explicitly.
            rel = fn.removeprefix("package://")
            if rel and "://" not in rel and not Path(rel).is_absolute() and (base_dir / rel).exists():
                mesh.set("filename", str((base_dir / rel).resolve()))
        for p in self.payloads.values():
            if p.mass <= 0:
                continue
            link = ET.SubElement(root, "link", name=PAYLOAD_LINK_PREFIX + p.name)
            inertial = ET.SubElement(link, "inertial")
            ET.SubElement(inertial, "origin", xyz="0 0 0", rpy="0 0 0")
            ET.SubElement(inertial, "mass", value="0")
            ET.SubElement(inertial, "inertia", ixx="0", ixy="0", ixz="0", iyy="0", iyz="0", izz="0")
            joint = ET.SubElement(root, "joint", name=PAYLOAD_LINK_PREFIX + p.name + "_joint",
                                  type="fixed")
            ET.SubElement(joint, "parent", link=self.end_effector)
            ET.SubElement(joint, "child", link=PAYLOAD_LINK_PREFIX + p.name)
            ET.SubElement(joint, "origin", xyz=" ".join(repr(float(c)) for c in p.com), rpy="0 0 0")
        return ET.tostring(root, encoding="unicode")


def _resolve_urdf(text: str, toml_file: Path) -> Path:
    if text.startswith(PYBULLET_SCHEME):
        import pybullet_data

        path = Path(pybullet_data.getDataPath()) / text[len(PYBULLET_SCHEME):]
    else:
        # Relative to the robot file, never to the working directory; absolute from here on, so
        # the spec (and a log recorded from it) stays valid wherever the process goes next.
        path = (toml_file.parent / text).absolute()
    if not path.is_file():
        raise RobotSpecError(toml_file, "urdf", f"no such file: {path}")
    return path


class _Fields:
    """Typed access to a TOML table; every error names the file and the dotted field."""

    def __init__(self, file: Path, table: dict, prefix: str = ""):
        self.file, self.table, self.prefix = file, table, prefix

    def _err(self, key: str, reason: str) -> RobotSpecError:
        return RobotSpecError(self.file, self.prefix + key, reason)

    def get(self, key: str, kind, default=...):
        if key not in self.table:
            if default is ...:
                raise self._err(key, "missing")
            return default
        value = self.table[key]
        if kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise self._err(key, f"expected a finite number, got {value!r}")
            return float(value)
        if not isinstance(value, kind):
            raise self._err(key, f"expected {kind.__name__}, got {type(value).__name__}")
        return value

    def vector(self, key: str, n: int | None, default=..., positive=False, nonneg=False) -> np.ndarray:
        value = self.get(key, list, default)
        if value is default and default is not ...:
            return np.asarray(value, dtype=np.float64)
        if n is not None and len(value) != n:
            raise self._err(key, f"expected {n} numbers, got {len(value)}")
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise self._err(key, f"expected numbers, got {value!r}") from None
        if arr.ndim != 1 or not np.all(np.isfinite(arr)):
            raise self._err(key, f"expected finite numbers, got {value!r}")
        if positive and np.any(arr <= 0):
            raise self._err(key, "every value must be > 0")
        if nonneg and np.any(arr < 0):
            raise self._err(key, "every value must be >= 0")
        return arr

    def sub(self, key: str, default=...) -> "_Fields":
        return _Fields(self.file, self.get(key, dict, default), f"{self.prefix}{key}.")


def load_robot(name_or_path: str | Path) -> RobotSpec:
    """Load robots/<name>.toml, or a TOML file given by path; raise RobotSpecError on bad data."""
    path = Path(name_or_path)
    if not path.suffix == ".toml" and not path.exists():
        path = ROBOTS_DIR / f"{name_or_path}.toml"
    path = path.absolute()  # RobotSpec.file is recorded in logs, replayed from anywhere
    try:
        text = path.read_text()
    except OSError as e:
        raise RobotSpecError(path, None, f"cannot read robot description: {e.strerror}") from None
    return parse_robot(text, path)


def parse_robot(text: str, path: Path) -> RobotSpec:
    path = Path(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RobotSpecError(path, None, f"invalid TOML: {e}") from None
    f = _Fields(path, data)
    joints = f.get("joints", list)
    if not joints or not all(isinstance(j, str) for j in joints) or len(set(joints)) != len(joints):
        raise RobotSpecError(path, "joints", "expected a non-empty list of distinct joint names")
    n = len(joints)
    friction = f.sub("friction", {})
    control = f.sub("control", {})
    payloads = {}
    ptable = f.sub("payloads")
    if "none" not in ptable.table:
        raise RobotSpecError(path, "payloads.none", "missing (the empty-hand payload is required)")
    for pname in ptable.table:
        pf = ptable.sub(pname)
        payloads[pname] = Payload(
            name=pname,
            mass=_nonneg(pf, "mass"),
            com=pf.vector("com", 3),
            inertia=pf.vector("inertia", 3, nonneg=True),
            description=pf.get("description", str, ""),
        )
    spec = RobotSpec(
        name=f.get("name", str),
        file=path,
        urdf=_resolve_urdf(f.get("urdf", str), path),
        joints=joints,
        end_effector=f.get("end_effector", str),
        torque_limits=f.vector("torque_limits", n, positive=True),
        velocity_limits=f.vector("velocity_limits", n, positive=True),
        home=f.vector("home", n),
        viscous_friction=friction.vector("viscous", n, [0.0] * n, nonneg=True),
        coulomb_friction=friction.vector("coulomb", n, [0.0] * n, nonneg=True),
        payloads=payloads,
        bandwidth=control.get("bandwidth", float, 30.0),
        tasks=dict(f.get("tasks", dict, {})),
        source_text=text,
    )
    if spec.bandwidth <= 0:
        raise RobotSpecError(path, "control.bandwidth", "must be > 0")
    spec.prepared_urdf()  # checks joints and end effector against the URDF now, not mid-run
    return spec


def _nonneg(f: _Fields, key: str) -> float:
    v = f.get(key, float)
    if v < 0:
        raise f._err(key, "must be >= 0")
    return v
