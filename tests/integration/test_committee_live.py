"""Validation committees, live over mosquitto: each agent scores only the k peers drawn for it from the
chain head's hash and receives only their updates (retained, so an agent pool's late subscriber still gets
them); every replica re-draws the committees and verifies, and so does the third-party verifier."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bpcv.committee import assign
from bpcv.envelope import decode
from bpcv.messages import Result, Vote, read
from ledger.backends.lmdb import LmdbStore
from ledger.block import decode_block
from tests.integration.test_live_task import demo, finish

pytestmark = pytest.mark.integration
VERIFIER = Path(__file__).resolve().parents[2] / "docs" / "verify_replica.py"


def test_a_task_with_committees_scores_each_update_k_times_and_every_replica_verifies(mosquitto, tmp_path):
    out = tmp_path / "run"
    args = ["--agents", "8", "--standby", "0", "--processes", "2", "--rounds", "2", "--committee", "3"]
    text = finish(demo(out, mosquitto, *args, "--dp", "off", "--min-nodes", "6"))
    summary = json.loads((out / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [1, 2], text
    assert summary["task"]["committee"] == 3
    assert summary["chain"]["all_valid"] and summary["chain"]["same_head"], summary["chain"]
    with LmdbStore(summary["replicas"][0], readonly=True) as store:
        blocks = [decode_block(store.get(h)) for h in (1, 2)]
    for block in blocks:
        envs = [decode(tx) for tx in block.txs]
        [result] = [read(e, Result) for e in envs if e.type == "result"]
        votes = {e.sender: read(e, Vote).scores for e in envs if e.type == "vote"}
        drawn = assign(result.validated, 3, result.committee_seed, block.task, block.round)
        assert result.committee_seed and len(result.validated) == 8, result
        gone = set(result.dropped) | set(result.invalid)  # a node whose update missed the round is not scored
        expected = {v: [p for p in peers if p not in gone] for v, peers in drawn.items()}
        assert len(votes) >= 6 and all(sorted(s) == expected[v] for v, s in votes.items()), (votes, drawn, gone)
        scored = [t for s in votes.values() for t in s]
        assert max(scored.count(t) for t in result.validated) == 3  # scored by its k judges, not by all 7 peers
    done = subprocess.run(
        [sys.executable, str(VERIFIER), summary["replicas"][0]],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.startswith("OK"), done.stdout + done.stderr
