"""The nemesis's short run (a fixed seed, one two-round task: faults through round 1, round 2 quiet) over a
real mosquitto, every agent its own OS process behind its own socat proxy: every invariant holds on
every replica afterwards. The long run (30 minutes, hundreds of faults) is experiments/nemesis/run.py
by hand; docs/RELIABILITY.md has its figures. What each invariant check catches is shown on broken
replicas in tests/test_nemesis_invariants.py."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
RUN = Path(__file__).resolve().parents[2] / "experiments" / "nemesis" / "run.py"


def test_a_task_under_random_faults_keeps_every_invariant(tmp_path):
    out = tmp_path / "nemesis"
    cmd = [
        sys.executable,
        str(RUN),
        "--minutes",
        "0",
        "--agents",
        "3",
        "--rounds",
        "2",
        "--seed",
        "7",
        "--out",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, check=False)
    summary = json.loads((out / "summary.json").read_text())
    assert done.returncode == 0 and summary["violations"] == [], done.stdout[-4000:]
    assert summary["tasks"] == summary["tasks_completed"] == 1, summary
    assert summary["faults"] >= 10 and len(summary["faults_by_kind"]) >= 5, summary  # the faults did happen
    checked = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if '"checked"' in line]
    assert checked[0]["rounds"] == 2 and checked[0]["height"] >= 1, checked  # its final round is on the chain
