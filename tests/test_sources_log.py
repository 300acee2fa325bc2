"""Record -> replay round trips, ROS 2 bag import, and clear errors for bad files."""

import json
from pathlib import Path

import numpy as np
import pytest

from rtlearn.protocol.state import JointState
from rtlearn.sources.base import LogFormatError
from rtlearn.sources.filters import lag_seconds
from rtlearn.sources.log import LogSource, LogWriter, read_log, write_log
from rtlearn.sources.robot import ROBOTS_DIR, load_robot
from rtlearn.sources.rosbag import BagSource, is_bag
from rtlearn.sources.sim import SimSource


@pytest.fixture(scope="module")
def robot():
    return load_robot("kuka_iiwa")


@pytest.fixture(scope="module")
def sim_states(robot):
    with SimSource(robot, task="lift", payload="heavy", seed=3, noise=1.0) as src:
        return list(src)


def _same(a: JointState, b: JointState):
    assert (a.seq, a.t, a.context) == (b.seq, b.t, b.context)
    for f in ("q", "qd", "tau"):
        assert np.array_equal(getattr(a, f), getattr(b, f))
    assert (a.qdd is None) == (b.qdd is None)
    if a.qdd is not None:
        assert np.array_equal(a.qdd, b.qdd)


def test_record_replay_gives_identical_packets(tmp_path, robot, sim_states):
    path = tmp_path / "lift.npz"
    assert write_log(path, robot, sim_states, {"task": "lift"}) == len(sim_states)
    with LogSource(path) as replay:
        assert replay.robot.name == "kuka_iiwa" and replay.robot.joints == robot.joints
        assert replay.header["meta"]["task"] == "lift"
        back = list(replay)
    assert len(back) == len(sim_states)
    for a, b in zip(sim_states, back):
        _same(a, b)


def test_packets_without_acceleration_or_context_round_trip(tmp_path, robot, sim_states):
    states = [JointState(s.seq, s.t, s.q, s.qd, s.qdd if s.seq % 3 else None, s.tau,
                         None if s.seq % 5 == 0 else s.context) for s in sim_states[:300]]
    path = tmp_path / "mixed.npz"
    write_log(path, robot, states)
    for a, b in zip(states, LogSource(path)):
        _same(a, b)


def test_truncated_and_garbage_logs_name_the_file(tmp_path, robot, sim_states):
    good = tmp_path / "good.npz"
    write_log(good, robot, sim_states[:500])
    data = good.read_bytes()
    for name, content in (("cut.npz", data[: len(data) // 2]), ("junk.npz", b"not a log" * 10),
                          ("empty.npz", b"")):
        bad = tmp_path / name
        bad.write_bytes(content)
        with pytest.raises(LogFormatError, match=name):
            LogSource(bad)
    with pytest.raises(LogFormatError, match="no such file"):
        LogSource(tmp_path / "missing.npz")


def _rewrite(src, dst, edit):
    with np.load(src) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(arrays["header"].tobytes())
    edit(header, arrays)
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(dst, **arrays)


@pytest.mark.parametrize("field, edit", [
    ("'header.version'", lambda h, a: h.update(version=99)),
    ("'header.format'", lambda h, a: h.update(format="csv")),
    ("'q'", lambda h, a: a.pop("q")),
    ("'tau'", lambda h, a: a.update(tau=a["tau"][:, :3])),
    ("'seq'", lambda h, a: a.update(seq=a["seq"][::-1].copy())),
    ("'qd'", lambda h, a: a["qd"].__setitem__((5, 2), np.nan)),
    ("'context'", lambda h, a: a.update(context=np.full_like(a["context"], 9))),
])
def test_inconsistent_logs_name_file_and_field(tmp_path, robot, sim_states, field, edit):
    good = tmp_path / "good.npz"
    write_log(good, robot, sim_states[:50])
    bad = tmp_path / "bad.npz"
    _rewrite(good, bad, edit)
    with pytest.raises(LogFormatError, match=rf"bad\.npz: field {field.replace('.', '[.]')}"):
        read_log(bad)


def test_writer_grows_past_its_initial_capacity(tmp_path, robot, sim_states):
    path = tmp_path / "long.npz"
    states = sim_states + [JointState(s.seq + len(sim_states), s.t, s.q, s.qd, s.qdd, s.tau,
                                      s.context) for s in sim_states]
    with LogWriter(path, robot) as w:
        for s in states:
            w.append(s)
    header, arrays = read_log(path)
    assert header["count"] == len(states) > 4096
    assert np.array_equal(arrays["tau"], np.array([s.tau for s in states]))


# ---- ROS 2 bags -----------------------------------------------------------------------------

def _write_bag(path, storage, t, q, qd, tau, names, with_velocity=True, with_effort=True):
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    JS = ts.types["sensor_msgs/msg/JointState"]
    Header = ts.types["std_msgs/msg/Header"]
    Time = ts.types["builtin_interfaces/msg/Time"]
    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    with Writer(path, version=9, storage_plugin=plugin) as w:
        conn = w.add_connection("/joint_states", "sensor_msgs/msg/JointState", typestore=ts)
        w.add_connection("/other", "std_msgs/msg/Header", typestore=ts)
        for i, ti in enumerate(t):
            stamp_ns = int(round((100.0 + ti) * 1e9))
            msg = JS(header=Header(stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9),
                                   frame_id=""),
                     name=list(names), position=q[i],
                     velocity=qd[i] if with_velocity else np.zeros(0),
                     effort=tau[i] if with_effort else np.zeros(0))
            w.write(conn, stamp_ns, ts.serialize_cdr(msg, "sensor_msgs/msg/JointState"))


def _bag_signals(robot, m=400, dt=1e-3):
    # Constant jerk: the velocity is quadratic, so a least-squares slope over a window equals
    # the true acceleration at the window's mean time, i.e. lag_seconds() late.
    t = dt * np.arange(m)
    n = robot.n_joints
    jerk = np.linspace(1.0, 4.0, n)
    a0 = np.linspace(-2.0, 2.0, n)
    qdd = a0 + np.outer(t, jerk)
    qd = 0.3 + np.outer(t, a0) + 0.5 * np.outer(t**2, jerk)
    q = 0.1 + 0.3 * t[:, None] + 0.5 * np.outer(t**2, a0) + np.outer(t**3, jerk) / 6
    tau = np.sin(np.outer(t, np.arange(1, n + 1)))
    return t, q, qd, qdd, tau


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_ros2_bag_replays_with_the_right_values(tmp_path, robot, storage):
    t, q, qd, qdd, tau = _bag_signals(robot)
    # Extra joint and shuffled order: mapping is by name.
    names = ["gripper"] + robot.joints[::-1]
    pad = lambda x: np.c_[np.full(len(x), 9.9), x[:, ::-1]]  # noqa: E731
    bag = tmp_path / f"bag_{storage}"
    _write_bag(bag, storage, t, pad(q), pad(qd), pad(tau), names)
    assert is_bag(bag)
    with BagSource(bag, robot, window=15) as src:
        states = list(src)
    assert len(states) == len(t)
    assert [s.seq for s in states] == list(range(len(t)))
    assert np.allclose([s.t for s in states], t, atol=1e-9)
    assert np.array_equal(np.array([s.q for s in states]), q)
    assert np.array_equal(np.array([s.qd for s in states]), qd)
    assert np.array_equal(np.array([s.tau for s in states]), tau)
    est = np.array([s.qdd for s in states])
    lag = lag_seconds(15, 1e-3)
    expected = qdd - np.outer(np.full(len(t), lag), np.linspace(1.0, 4.0, robot.n_joints))
    assert np.allclose(est[14:], expected[14:], atol=1e-6)


def test_bag_without_velocity_estimates_it(tmp_path, robot):
    t, q, qd, qdd, tau = _bag_signals(robot)
    bag = tmp_path / "novel"
    _write_bag(bag, "mcap", t, q, qd, tau, robot.joints, with_velocity=False)
    states = list(BagSource(bag, robot, window=5))
    est = np.array([s.qd for s in states])
    # Slope of a cubic over 5 samples: delayed by 2 ms, plus a tiny curvature term.
    assert np.allclose(est[10:], qd[10:] - 2e-3 * qdd[10:], atol=1e-5)


def test_bad_bags_name_file_and_field(tmp_path, robot):
    t, q, qd, qdd, tau = _bag_signals(robot, m=20)
    bag = tmp_path / "noeffort"
    _write_bag(bag, "mcap", t, q, qd, tau, robot.joints, with_effort=False)
    with pytest.raises(LogFormatError, match=r"noeffort: field 'effort'"):
        list(BagSource(bag, robot))
    bag = tmp_path / "wrongnames"
    _write_bag(bag, "mcap", t, q, qd, tau, [f"j{i}" for i in range(7)])
    with pytest.raises(LogFormatError, match=r"wrongnames: field 'name'.*lbr_iiwa_joint_1"):
        list(BagSource(bag, robot))
    with pytest.raises(LogFormatError, match=r"wrongnames: field 'topic'"):
        BagSource(bag, robot, topic="/nope")
    notabag = tmp_path / "notabag"
    notabag.mkdir()
    (notabag / "metadata.yaml").write_text("rosbag2_bagfile_information: [")
    with pytest.raises(LogFormatError, match="notabag"):
        BagSource(notabag, robot)


def test_committed_streams_are_valid_lift_logs():
    streams = sorted((ROBOTS_DIR.parent / "streams").glob("kuka_lift_*.npz"))
    assert len(streams) >= 9
    assert sum(p.stat().st_size for p in streams) < 20e6
    for path in streams:
        header, arrays = read_log(path)
        payload = header["meta"]["payload"][0]
        assert header["count"] >= 3000 and header["robot"] == "kuka_iiwa"
        assert payload in path.name and header["contexts"][-1] == payload


# ---- robot files naming a relative URDF ------------------------------------------------------

@pytest.fixture
def relative_arm(tmp_path):
    """robots/arm.toml naming `kuka/model.urdf`, a copy of pybullet_data's KUKA beside it."""
    import shutil

    import pybullet_data

    robot_dir = tmp_path / "robots"
    shutil.copytree(Path(pybullet_data.getDataPath()) / "kuka_iiwa", robot_dir / "kuka")
    text = (ROBOTS_DIR / "kuka_iiwa.toml").read_text().replace(
        'urdf = "pybullet_data://kuka_iiwa/model.urdf"', 'urdf = "kuka/model.urdf"')
    assert 'urdf = "kuka/model.urdf"' in text
    (robot_dir / "arm.toml").write_text(text)
    return robot_dir


def test_log_of_a_relative_urdf_robot_replays_from_anywhere(tmp_path, relative_arm, monkeypatch,
                                                            sim_states):
    monkeypatch.chdir(tmp_path)
    robot = load_robot("robots/arm.toml")  # a relative TOML path too
    assert robot.file.is_absolute() and robot.urdf == relative_arm / "kuka" / "model.urdf"
    (tmp_path / "logs").mkdir()
    write_log("logs/run.npz", robot, sim_states[:200])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with LogSource(tmp_path / "logs" / "run.npz") as replay:
        assert replay.robot.urdf == relative_arm / "kuka" / "model.urdf"
        back = list(replay)
    for a, b in zip(sim_states, back):
        _same(a, b)
    from rtlearn.cli import main
    assert main(["replay", str(tmp_path / "logs" / "run.npz"), "--no-publish", "--speed", "max"]) == 0


def test_log_whose_robot_moved_resolves_beside_the_log_or_names_the_paths(tmp_path, relative_arm,
                                                                          sim_states):
    import shutil

    log = tmp_path / "run.npz"
    write_log(log, load_robot(relative_arm / "arm.toml"), sim_states[:50])
    moved = tmp_path / "moved"
    relative_arm.rename(moved)
    with pytest.raises(LogFormatError) as err:
        LogSource(log)
    msg = str(err.value)
    assert msg.startswith(f"{log}: field 'header.robot_toml'")
    assert str(relative_arm / "kuka" / "model.urdf") in msg and str(tmp_path / "kuka" / "model.urdf") in msg
    shutil.copytree(moved / "kuka", tmp_path / "kuka")  # shipped beside the log: found there
    assert LogSource(log).robot.urdf == tmp_path / "kuka" / "model.urdf"
