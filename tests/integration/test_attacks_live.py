"""The issue-16 scenario, live over mosquitto: two poisoners and two lying voters among 12 active nodes.

Under the paper's rules the liars kept full rewards to the end while honest nodes were eliminated in
their place. With the outlier policy, the median quality rule and accountable voters: the liars are
unpaid from round 1 and eliminated as dissenters, the poisoners never enter an aggregate and are
eliminated as repeated outliers, no honest node is eliminated, and the replica verifies with the
third-party verifier (which recomputes dissenters and outliers from the votes).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_live_task import demo, finish

pytestmark = pytest.mark.integration
VERIFIER = Path(__file__).resolve().parents[2] / "docs" / "verify_replica.py"


def test_poisoners_and_lying_voters_are_caught_and_honest_nodes_kept(mosquitto, tmp_path):
    out = tmp_path / "run"
    args = ["--agents", "14", "--standby", "2", "--processes", "2", "--rounds", "5", "--malicious", "4"]
    args += ["--behaviour", "random-weights,random-weights,lying-voter,lying-voter", "--min-nodes", "6"]
    args += ["--dp", "off", "--batch", "128", "--lr", "0.4"]
    args += ["--elimination", "outlier", "--quality-rule", "median", "--accountable-voters"]
    text = finish(demo(out, mosquitto, *args))
    summary = json.loads((out / "summary.json").read_text())
    rounds = summary["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3, 4, 5], text
    poisoners, liars = {"node-01", "node-02"}, {"node-03", "node-04"}
    eliminated = {n: r["round"] for r in rounds for n in r["eliminated"]}
    for r in rounds:
        assert not poisoners & set(r["aggregated"]), r  # never in a global model
        assert not (poisoners | liars) & {n for n, v in r["rewards"].items() if v > 0}, r  # never paid
        assert liars - set(eliminated) <= set(r["dissenters"]), r  # every liar still in dissents, every round
    assert liars <= set(eliminated) and max(eliminated[n] for n in liars) <= 3, eliminated
    assert poisoners <= set(eliminated), eliminated
    assert set(eliminated) == poisoners | liars, f"honest nodes eliminated: {set(eliminated) - poisoners - liars}"
    assert {r["eliminated_reason"] for r in rounds if r["eliminated"]} <= {"dissenting-voter", "outlier"}
    assert rounds[-1]["accuracy"] > 0.9, rounds[-1]
    assert summary["chain"]["all_valid"] and summary["chain"]["same_head"], summary["chain"]
    replica = summary["replicas"][0]
    done = subprocess.run(
        [sys.executable, str(VERIFIER), replica], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0 and done.stdout.startswith("OK"), done.stdout + done.stderr
