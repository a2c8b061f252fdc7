"""The issue-16 scenario, live over mosquitto: two poisoners, two lying voters and a free-rider among 13
active nodes. (The demo's model is wavelet:2,4,7: an update that moves its fixed wavelet map, such as
random weights, is refused as invalid at once; sign-flipped updates keep the map, so the votes catch them.)

Under the paper's rules the liars kept full rewards to the end while honest nodes were eliminated in
their place. With the outlier policy, the median quality rule and accountable voters: the liars are
unpaid from round 1 and eliminated as dissenters, the poisoners never enter an aggregate and are
eliminated as repeated outliers, the free-rider's first update (the global model back) is refused as
``no-training``, no honest node is eliminated, and the replica verifies with the third-party verifier (which recomputes dissenters and outliers from the votes).
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
    args = ["--agents", "15", "--standby", "2", "--processes", "2", "--rounds", "5", "--malicious", "5"]
    args += ["--behaviour", "sign-flip,sign-flip,lying-voter,lying-voter,free-ride", "--min-nodes", "6"]
    args += ["--dp", "off", "--batch", "128", "--lr", "0.4"]
    args += ["--elimination", "outlier", "--quality-rule", "median", "--accountable-voters"]
    text = finish(demo(out, mosquitto, *args))
    summary = json.loads((out / "summary.json").read_text())
    rounds = summary["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3, 4, 5], text
    poisoners, liars = {"node-01", "node-02"}, {"node-03", "node-04"}
    assert rounds[0]["invalid"] == {"node-05": "no-training"}, rounds[0]
    assert all(not r["invalid"] for r in rounds[1:]) and all(not r["rewards"].get("node-05") for r in rounds), rounds
    eliminated = {n: r["round"] for r in rounds for n in r["eliminated"]}
    for r in rounds:
        assert not poisoners & set(r["aggregated"]), r  # never in a global model
        assert not (poisoners | liars) & {n for n, v in r["rewards"].items() if v > 0}, r  # never paid
        assert liars - set(eliminated) <= set(r["dissenters"]), r  # every liar still in dissents, every round
    assert liars <= set(eliminated) and max(eliminated[n] for n in liars) <= 3, eliminated
    assert poisoners <= set(eliminated), eliminated
    assert set(eliminated) == poisoners | liars | {"node-05"}, f"honest eliminated: {set(eliminated) - poisoners - liars}"
    assert {r["eliminated_reason"] for r in rounds if set(r["eliminated"]) - set(r["invalid"])} <= {"dissenting-voter", "outlier"}
    assert rounds[-1]["accuracy"] > 0.9, rounds[-1]
    assert summary["chain"]["all_valid"] and summary["chain"]["same_head"], summary["chain"]
    replica = summary["replicas"][0]
    done = subprocess.run(
        [sys.executable, str(VERIFIER), replica], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0 and done.stdout.startswith("OK"), done.stdout + done.stderr
