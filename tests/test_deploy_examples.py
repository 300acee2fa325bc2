"""docs/examples: every daemon config loads with the config loader, and the systemd unit
restarts a failed daemon with --resume (and not one that cannot start)."""

import configparser
import shlex
from argparse import ArgumentParser
from pathlib import Path

import pytest

from rtlearn.commands import serve
from rtlearn.service.config import is_loopback, load_config

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"
CONFIGS = sorted(EXAMPLES.glob("*.toml"))


def test_the_three_examples_are_there():
    assert {p.stem for p in CONFIGS} >= {"minimal", "real-arm-curve", "realtime"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_example_config_loads(path):
    cfg = load_config(path)
    assert cfg.path == str(path)


def test_the_real_arm_example_opens_control_to_the_network_with_curve_only():
    cfg = load_config(EXAMPLES / "real-arm-curve.toml")
    assert not is_loopback(cfg["endpoints"]["control"])
    assert is_loopback(cfg["endpoints"]["state"]) and is_loopback(cfg["endpoints"]["prediction"])
    sec = cfg["security"]
    assert sec["curve_secret_key"] and sec["curve_public_key"] and sec["curve_clients"]


def test_the_realtime_example_pins_and_raises_priority():
    rt = load_config(EXAMPLES / "realtime.toml")["realtime"]
    assert rt["priority"] > 0 and rt["serving_cpus"] and rt["learning_cpus"]


def test_the_systemd_unit_restarts_on_failure_with_resume():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(EXAMPLES / "rtlearn.service")
    service = unit["Service"]
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == "2"  # serve's "cannot start" status
    argv = shlex.split(service["ExecStart"])
    assert Path(argv[0]).name == "rtlearn" and argv[1] == "serve"
    parser = ArgumentParser()
    serve.add_arguments(parser)
    args = parser.parse_args(argv[2:])
    assert args.resume and args.config and args.robot
    assert unit["Install"]["WantedBy"] == "multi-user.target"
