"""Robot descriptions: malformed TOML files give errors naming the file and the field."""

import re
from pathlib import Path

import numpy as np
import pytest

from rtlearn.sources.base import RobotSpecError, UnknownPayloadError
from rtlearn.sources.robot import ROBOTS_DIR, load_robot

KUKA = (ROBOTS_DIR / "kuka_iiwa.toml").read_text()


def test_every_shipped_robot_loads():
    for path in sorted(ROBOTS_DIR.glob("*.toml")):
        robot = load_robot(path)
        n = robot.n_joints
        assert robot.torque_limits.shape == robot.home.shape == (n,)
        assert "none" in robot.payloads and robot.payloads["none"].mass == 0


def test_kuka_payloads_are_the_documented_ones():
    robot = load_robot("kuka_iiwa")
    assert {k: p.mass for k, p in robot.payloads.items()} == {"none": 0.0, "light": 1.5, "heavy": 4.0}


def _sub(pattern, repl):
    out, count = re.subn(pattern, repl, KUKA, count=1, flags=re.M)
    assert count == 1, pattern
    return out


@pytest.mark.parametrize("text, field", [
    (_sub(r"^end_effector = .*$", ""), "end_effector"),
    (_sub(r"^end_effector = .*$", 'end_effector = "no_such_link"'), "end_effector"),
    (_sub(r"^torque_limits = .*$", "torque_limits = [1.0, 2.0]"), "torque_limits"),
    (_sub(r"^velocity_limits = .*$", 'velocity_limits = [1, 1, 1, 1, 1, 1, "fast"]'), "velocity_limits"),
    (_sub(r"^home = .*$", "home = [0, 0, 0, 0, 0, 0, -1e999]"), "home"),
    (_sub(r'"lbr_iiwa_joint_1"', '"elbow"'), "joints"),
    (_sub(r'"lbr_iiwa_joint_1", "lbr_iiwa_joint_2"', '"lbr_iiwa_joint_2", "lbr_iiwa_joint_1"'), "joints"),
    (_sub(r"^urdf = .*$", 'urdf = "missing/robot.urdf"'), "urdf"),
    (_sub(r"^mass = 1.5$", "mass = -1.5"), "payloads.light.mass"),
    (_sub(r"^com = \[0.0, 0.0, 0.10\]$", "com = [0.0, 0.10]"), "payloads.light.com"),
    (_sub(r"^\[payloads.none\]$", "[payloads.empty]"), "payloads.none"),
    (_sub(r"^viscous = .*$", "viscous = [0.8, 0.8, 0.5, 0.5, 0.3, 0.2, -0.2]"), "friction.viscous"),
    (_sub(r"^bandwidth = .*$", "bandwidth = 0.0"), "control.bandwidth"),
])
def test_malformed_robot_file_names_file_and_field(tmp_path, text, field):
    path = tmp_path / "broken_arm.toml"
    path.write_text(text)
    with pytest.raises(RobotSpecError) as err:
        from rtlearn.sources.dynamics import Dynamics  # joint order is checked against Pinocchio
        Dynamics(load_robot(path))
    assert err.value.field == field
    assert str(err.value).startswith(f"{path}: field '{field}'")


def test_invalid_toml_syntax_and_missing_file(tmp_path):
    path = tmp_path / "syntax.toml"
    path.write_text("name = \n")
    with pytest.raises(RobotSpecError, match=r"syntax\.toml: invalid TOML"):
        load_robot(path)
    with pytest.raises(RobotSpecError, match=r"nowhere\.toml: cannot read"):
        load_robot(tmp_path / "nowhere.toml")


def test_unknown_payload_error_names_file_and_choices():
    robot = load_robot("kuka_iiwa")
    with pytest.raises(UnknownPayloadError) as err:
        robot.payload("piano")
    msg = str(err.value)
    assert msg.startswith(str(Path(robot.file))) and "'payloads'" in msg
    assert "'piano'" in msg and "heavy" in msg


def test_unlisted_joints_are_fixed_and_payload_links_added():
    robot = load_robot("franka_panda")
    urdf = robot.prepared_urdf()
    assert 'name="panda_finger_joint1" type="fixed"' in urdf
    assert 'name="rtlearn_payload_heavy"' in urdf and 'name="rtlearn_payload_none"' not in urdf
    assert np.all(robot.torque_limits > 0)
