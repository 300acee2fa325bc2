"""The sim / replay command line, offline (--no-publish): record -> replay -> record."""

import numpy as np

from rtlearn.cli import main
from rtlearn.sources.log import read_log


def test_sim_record_then_replay_record_is_identical(tmp_path, capsys):
    first, second = tmp_path / "sim.npz", tmp_path / "replayed.npz"
    assert main(["sim", "--task", "lift", "--payload", "heavy", "--seed", "5", "--noise", "1",
                 "--speed", "max", "--no-publish", "--record", str(first)]) == 0
    assert main(["replay", str(first), "--speed", "max", "--no-publish", "--record", str(second)]) == 0
    h1, a1 = read_log(first)
    h2, a2 = read_log(second)
    assert h1["meta"]["payload"] == ["heavy"] and h1["meta"]["seed"] == 5
    assert h1["contexts"] == h2["contexts"] == ["none", "heavy"]
    assert set(a1) == set(a2)
    for k in a1:
        assert np.array_equal(a1[k], a2[k]), k
    assert "packets" in capsys.readouterr().out


def test_bad_inputs_exit_with_a_message(tmp_path, capsys):
    assert main(["sim", "--payload", "anvil", "--no-publish", "--speed", "max"]) == 2
    assert "field 'payloads'" in capsys.readouterr().err
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"\x00" * 100)
    assert main(["replay", str(junk), "--no-publish"]) == 2
    assert "junk.npz" in capsys.readouterr().err
