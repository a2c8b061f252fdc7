"""`bpcv demo` as a newcomer runs it: the default embedded broker (amqtt, in its own process), a
coordinator and an agent pool, a short live task to the end, with the broker's traffic counters in
metrics.sqlite (published by the embedded broker's own plugin, ``ByteCounters``; the other live tests
use mosquitto)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from coordinator.timeseries import TimeSeries

pytestmark = pytest.mark.integration


def test_the_default_demo_runs_a_task_over_the_embedded_broker(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "bpcv_app.cli", "demo", "--out", str(out), "--agents", "3", "--standby", "0",
           "--processes", "1", "--rounds", "2", "--epochs", "1"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=420, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "embedded" in done.stdout, done.stdout  # it said which broker it started
    summary = json.loads((out / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [1, 2], done.stdout
    assert summary["chain"]["all_valid"] and summary["chain"]["same_head"], summary["chain"]
    store = TimeSeries(out / "metrics.sqlite", readonly=True)
    try:
        for counter in ("received", "sent"):
            values = [value for _ts, value in store.broker_bytes(counter)]
            assert len(values) >= 2 and values == sorted(values) and values[-1] > values[0], (counter, values)
    finally:
        store.close()
