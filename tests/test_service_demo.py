"""`rtlearn demo` end to end, shortened to one lift: every packet answered, nothing lost."""

from __future__ import annotations

import io

from rtlearn.service.demo import run_demo


def test_short_demo_answers_every_packet_and_reports_phases():
    out = io.StringIO()
    r = run_demo(seconds=3.5, transport="ipc", progress=False, learner={"hidden": [32, 32]},
                 out=out)
    assert r["predictions"] == r["packets"] > 3000
    assert r["daemon"]["packets"]["lost"] == 0
    assert r["daemon"]["packets"]["rejected_total"] == 0
    assert [p["payload"] for p in r["phases"]] == ["none"]
    assert r["daemon"]["contexts"]["created"] == 1          # default -> none
    text = out.getvalue()
    assert "prediction error per phase" in text and "0 lost" in text
