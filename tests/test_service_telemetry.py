"""The telemetry stream, its MCAP recording and the Foxglove bridge, against a real daemon
subprocess on loopback: every number checked against what the test itself sent and received
(predictions, states), against `ctl status`, or against the file read back with the `mcap`
reader."""

from __future__ import annotations

import json
import time

import msgpack
import numpy as np
import pytest
import zmq

from rtlearn.protocol.client import RobotClient
from rtlearn.protocol.schema import ProtocolError, encode_state
from rtlearn.protocol.telemetry import decode_telemetry, encode_telemetry
from rtlearn.service.launch import DaemonProcess, free_tcp_port
from rtlearn.service.synthetic import synthetic_stream

from test_service_daemon import SMALL, send_all, wait_learned

N = 7


class Viewer:
    """A SUB on the telemetry socket keeping every message, in order."""

    def __init__(self, endpoint: str):
        self.sock = zmq.Context.instance().socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(endpoint)
        self.messages: list[dict] = []

    def read(self, timeout: float = 10.0) -> dict:
        assert self.sock.poll(int(timeout * 1000)), "no telemetry message"
        msg = decode_telemetry(self.sock.recv())
        self.messages.append(msg)
        return msg

    def until(self, done, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            msg = self.read()
            if done(msg) or time.monotonic() > deadline:
                return msg

    def close(self) -> None:
        self.sock.close(linger=0)


def labelled_stream(count: int):
    """First half labelled light (payload 0), second half heavy (payload 3)."""
    half = count // 2
    return [*synthetic_stream(half, context="light"),
            *synthetic_stream(count - half, start_seq=half, payload=3.0, context="heavy")]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A daemon with telemetry (50 Hz) and MCAP recording, fed 3000 labelled states plus
    three malformed frames and two duplicates; everything the test saw, then the stopped
    daemon's workdir."""
    work = tmp_path_factory.mktemp("telemetry")
    cfg = {**SMALL, "telemetry": {"rate_hz": 50.0, "mcap": str(work / "rec")}}
    states = labelled_stream(3000)
    with DaemonProcess(work, cfg) as d:
        viewer = Viewer(d.telemetry_endpoint)
        first = viewer.read()  # connected before anything is learned
        with RobotClient([d.endpoints["state"]], d.endpoints["prediction"]) as client:
            preds = send_all(client, states[:1500])
            for _ in range(3):
                client.publish_frame(b"\xc1 not msgpack")
            for s in states[1498:1500]:
                client.publish_frame(encode_state(s, client.stream))  # seq not above the last
            preds += send_all(client, states[1500:])
        status = wait_learned(d, len(states))
        last = viewer.until(lambda m: m["counters"]["samples"] == len(states)
                            and m["window"]["samples"] == 0)
        status = d.status()  # nothing learned since: the same model as the last message
        viewer.close()
    return {"first": first, "messages": viewer.messages, "last": last, "status": status,
            "states": states, "preds": preds, "work": work}


def test_counters_match_what_was_sent_and_the_status(run):
    c, st = run["last"]["counters"], run["status"]
    assert c["received"] == 3005 == st["packets"]["received"]
    assert c["predicted"] == 3000 == len(run["preds"])
    assert c["rejected"] == {"malformed": 3, "out_of_order": 1, "duplicate_seq": 1}
    assert c["rejected"] == st["packets"]["rejected"]
    assert c["rejected_total"] == 5
    assert c["samples"] == 3000 and c["steps"] == st["learning"]["steps"]
    assert c["deadline_misses"] == st["learning"]["deadline_misses"]
    assert c["rollbacks"] == st["learning"]["rollbacks"] == 0
    assert c["excluded"] == st["learning"]["excluded"]
    assert run["first"]["counters"]["received"] == 0


def test_messages_are_numbered_and_their_windows_partition_the_stream(run):
    """No message lost, and summed over all messages, the per-window means and RMS errors
    give back the sums over every (state, prediction) pair the test itself saw."""
    msgs = run["messages"]
    assert [m["seq"] for m in msgs] == list(range(msgs[0]["seq"], msgs[0]["seq"] + len(msgs)))
    assert sum(m["window"]["samples"] for m in msgs) == 3000
    Y = np.array([s.tau for s in run["states"]])
    P = np.array([p.tau for p in run["preds"]])
    assert [p.seq for p in run["preds"]] == [s.seq for s in run["states"]]
    windows = [m for m in msgs if m["window"]["samples"]]
    w = np.array([m["window"]["samples"] for m in windows])[:, None]
    rms = np.array([m["error"]["rms"] for m in windows])
    meas = np.array([m["torque"]["measured_mean"] for m in windows])
    pred = np.array([m["torque"]["predicted_mean"] for m in windows])
    np.testing.assert_allclose((rms ** 2 * w).sum(0), ((P - Y) ** 2).sum(0), rtol=1e-9)
    np.testing.assert_allclose((meas * w).sum(0), Y.sum(0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose((pred * w).sum(0), P.sum(0), rtol=1e-9, atol=1e-9)
    last = run["last"]["torque"]
    np.testing.assert_array_equal(last["measured_last"], Y[-1])
    np.testing.assert_array_equal(last["predicted_last"], P[-1])
    # an idle window says so instead of repeating old numbers
    assert run["last"]["error"]["rms"] == [None] * N
    np.testing.assert_allclose(run["last"]["error"]["recent_rms"],
                               np.sqrt(run["status"]["prequential"]["recent_mse_per_joint"]))


def test_rates_per_layer_and_joint_are_the_learners(run):
    lr, st = run["last"]["lr"], run["status"]
    assert lr["optimizer"] == "memory" and lr["layers"] == 3  # hidden [32, 32] + output
    rates = np.array([lr["weights"], lr["biases"]])
    assert rates.shape == (2, N, 3)
    # the status gives the mean over all groups of the same model
    assert rates.mean() == pytest.approx(st["learner"]["rates"]["memory"], rel=1e-12)
    assert np.ptp(rates) > 0  # per-group numbers, not one number repeated


def test_context_switches_are_reported_in_order(run):
    ctx = run["last"]["contexts"]
    assert run["last"]["context"] == "heavy" == run["status"]["context"]
    assert [(s["from"], s["to"], s["outcome"], s["by"]) for s in ctx["recent"]] == [
        ("default", "light", "created", "label"), ("light", "heavy", "created", "label")]
    assert ctx["switches"] == run["status"]["contexts"]["switches"] == 2
    assert sorted(ctx["known"]) == sorted(run["status"]["contexts_known"])


def test_latency_percentiles_cover_the_last_packets(run):
    lat, st = run["last"]["latency_ms"], run["status"]["latency_ms"]
    assert lat["count"] == 1000
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"] <= st["max"]
    assert run["last"]["step_ms"]["count"] == 100


def test_the_mcap_recording_holds_every_state_prediction_and_message(run):
    from mcap.reader import make_reader

    files = list((run["work"] / "rec").glob("rtlearn-*.mcap"))
    assert len(files) == 1
    with open(files[0], "rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        channels = {c.topic: c for c in summary.channels.values()}
        assert set(channels) == {"/rtlearn/joint_state", "/rtlearn/prediction",
                                 "/rtlearn/telemetry"}
        for c in channels.values():
            assert c.message_encoding == "json"
            assert summary.schemas[c.schema_id].encoding == "jsonschema"
        by_topic: dict[str, list] = {t: [] for t in channels}
        for _, channel, message in reader.iter_messages():
            by_topic[channel.topic].append(json.loads(message.data))
    states, preds = by_topic["/rtlearn/joint_state"], by_topic["/rtlearn/prediction"]
    assert len(states) == len(preds) == 3000
    assert [m["seq"] for m in states] == [s.seq for s in run["states"]]
    np.testing.assert_array_equal([m["tau"] for m in states], [s.tau for s in run["states"]])
    np.testing.assert_array_equal([m["q"] for m in states], [s.q for s in run["states"]])
    assert [m["context"] for m in states] == [s.context for s in run["states"]]
    np.testing.assert_array_equal([m["tau"] for m in preds], [p.tau for p in run["preds"]])
    assert all(m["valid"] for m in preds)
    # the daemon's own messages: at least those the viewer got, up to its stop
    tel_seqs = [m["seq"] for m in by_topic["/rtlearn/telemetry"]]
    assert set(m["seq"] for m in run["messages"]) <= set(tel_seqs)
    assert tel_seqs == sorted(tel_seqs)


def test_decode_refuses_another_schema_and_bad_values(run):
    msg = {k: v for k, v in run["last"].items() if k not in ("v", "kind", "schema")}
    assert decode_telemetry(encode_telemetry(msg))["seq"] == msg["seq"]
    raw = msgpack.unpackb(encode_telemetry(msg))
    with pytest.raises(ProtocolError, match="version"):
        decode_telemetry(msgpack.packb({**raw, "schema": 2}))
    with pytest.raises(ProtocolError, match="missing_field"):
        decode_telemetry(msgpack.packb({k: v for k, v in raw.items() if k != "counters"}))
    bad = json.loads(json.dumps(raw))
    bad["error"]["rms"][0] = float("nan")
    with pytest.raises(ProtocolError, match="bad_value"):
        decode_telemetry(msgpack.packb(bad))
    bad["error"]["rms"] = [0.0] * (N - 1)
    with pytest.raises(ProtocolError, match="bad_length"):
        decode_telemetry(msgpack.packb(bad))


def test_a_taken_telemetry_endpoint_refuses_the_start(tmp_path):
    import subprocess
    import sys

    from rtlearn.service.launch import to_toml

    port = free_tcp_port()
    ctx = zmq.Context.instance()
    taken = ctx.socket(zmq.PUB)
    taken.bind(f"tcp://127.0.0.1:{port}")
    try:
        cfg = {"learner": {"hidden": [8]}, "telemetry": {"endpoint": f"tcp://127.0.0.1:{port}"},
               "endpoints": {k: f"ipc://{tmp_path}/{k}" for k in ("state", "prediction",
                                                                   "control")},
               "snapshots": {"dir": str(tmp_path / "snaps")}}
        (tmp_path / "d.toml").write_text(to_toml(cfg))
        done = subprocess.run([sys.executable, "-m", "rtlearn.cli", "serve", "--config",
                               str(tmp_path / "d.toml")], capture_output=True, text=True,
                              timeout=120)
    finally:
        taken.close(linger=0)
    assert done.returncode == 2
    assert f"cannot bind the telemetry socket to tcp://127.0.0.1:{port}" in done.stderr
    assert not (tmp_path / "snaps").exists()


def read_mcap(path) -> dict[str, list[dict]]:
    """topic -> the decoded JSON messages, in log order (the `mcap` reader)."""
    from mcap.reader import make_reader

    out: dict[str, list] = {}
    with open(path, "rb") as f:
        reader = make_reader(f)
        for c in reader.get_summary().channels.values():
            out[c.topic] = []
        for _, channel, message in reader.iter_messages(log_time_order=True):
            out[channel.topic].append(json.loads(message.data))
    return out


def test_record_mcap_holds_the_states_and_the_daemons_predictions_and_telemetry(tmp_path):
    import subprocess
    import sys

    bind = f"ipc://{tmp_path}/record.sock"
    states = list(synthetic_stream(1500, context="light"))
    with DaemonProcess(tmp_path / "d", {**SMALL, "telemetry": {"rate_hz": 50.0}}) as d:
        rec = subprocess.Popen([sys.executable, "-m", "rtlearn.cli", "record",
                                str(tmp_path / "r.npz"), "--bind", bind, "--count", "1500",
                                "--mcap", str(tmp_path / "r.mcap"),
                                "--predictions", d.endpoints["prediction"],
                                "--telemetry", d.telemetry_endpoint],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            with RobotClient([d.endpoints["state"], bind], d.endpoints["prediction"],
                             handshake_timeout=60) as client:
                assert client.ready
                time.sleep(0.5)  # the recorder's own SUBs have joined the daemon by now
                preds = send_all(client, states)
            out, err = rec.communicate(timeout=60)
        finally:
            if rec.poll() is None:
                rec.kill()
    assert rec.returncode == 0, err
    got = read_mcap(tmp_path / "r.mcap")
    assert set(got) == {"/rtlearn/joint_state", "/rtlearn/prediction", "/rtlearn/telemetry"}
    assert len(got["/rtlearn/joint_state"]) == 1500
    np.testing.assert_array_equal([m["qd"] for m in got["/rtlearn/joint_state"]],
                                  [s.qd for s in states])
    # every prediction the robot got, as the robot got it
    recorded = {m["seq"]: m["tau"] for m in got["/rtlearn/prediction"]}
    assert len(recorded) == len(got["/rtlearn/prediction"]) == 1500
    for p in preds:
        assert recorded[p.seq] == p.tau.tolist()
    tel = got["/rtlearn/telemetry"]
    assert len(tel) >= 2 and "v" not in tel[0]
    assert [m["seq"] for m in tel] == list(range(tel[0]["seq"], tel[0]["seq"] + len(tel)))


def test_the_foxglove_bridge_serves_the_channels_to_a_websocket_client(tmp_path):
    pytest.importorskip("foxglove", reason="the Foxglove bridge is the optional "
                                           "`foxglove` extra (the test extra has it)")
    ws_client = pytest.importorskip("websockets.sync.client",
                                    reason="the test's WebSocket client (test extra)")
    port = free_tcp_port()
    with DaemonProcess(tmp_path, {**SMALL, "telemetry": {"foxglove_port": port}}) as d:
        with ws_client.connect(f"ws://127.0.0.1:{port}", subprotocols=["foxglove.sdk.v1"],
                               open_timeout=10) as ws:
            channels = {}
            while "/rtlearn/prediction" not in channels or "/rtlearn/telemetry" not in channels:
                m = json.loads(ws.recv(timeout=10))
                if m["op"] == "advertise":
                    channels.update({c["topic"]: c for c in m["channels"]})
            assert set(channels) == {"/rtlearn/joint_state", "/rtlearn/prediction",
                                     "/rtlearn/telemetry"}
            assert all(c["encoding"] == "json" and c["schemaEncoding"] == "jsonschema"
                       for c in channels.values())
            ws.send(json.dumps({"op": "subscribe", "subscriptions": [
                {"id": 1, "channelId": channels["/rtlearn/telemetry"]["id"]},
                {"id": 2, "channelId": channels["/rtlearn/prediction"]["id"]}]}))
            time.sleep(0.5)  # the subscriptions reach the daemon's bridge
            with RobotClient([d.endpoints["state"]], d.endpoints["prediction"]) as client:
                preds = send_all(client, synthetic_stream(200))
            got: dict[int, list] = {1: [], 2: []}
            deadline = time.monotonic() + 30
            while len(got[2]) < 200 and time.monotonic() < deadline:
                frame = ws.recv(timeout=10)
                if isinstance(frame, bytes) and frame[0] == 1:  # message data
                    sub = int.from_bytes(frame[1:5], "little")
                    got[sub].append(json.loads(frame[13:]))
    assert [m["seq"] for m in got[2]] == [p.seq for p in preds]
    assert [m["tau"] for m in got[2]] == [p.tau.tolist() for p in preds]
    assert got[1] and got[1][-1]["robot"] == "kuka_iiwa"


def test_record_mcap_into_a_missing_folder_refuses_before_recording(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "rtlearn.cli", "record", str(tmp_path / "r.npz"),
                           "--bind", f"ipc://{tmp_path}/r.sock", "--count", "1",
                           "--mcap", str(tmp_path / "missing" / "r.mcap")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--mcap" in done.stderr and "No such file or directory" in done.stderr
    assert not (tmp_path / "r.npz").exists()
