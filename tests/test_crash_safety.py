"""SIGKILL during block commits, in a loop: the replica always verifies and never loses a committed block.

A child process appends blocks to a real LMDB replica as fast as it can; half the blocks make it
switch forks (a rank-1 stand-in first, then the PoQ winner for the same height, which replaces it in
one write transaction). The parent kills it with SIGKILL at a random moment, verifies the replica
with `bpcv chain verify`'s code, checks the height never went down, and starts the child again.
"""

import random
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ledger.inspect import verify_replica
from tests.helpers import honest_scores, make_consortium, round_block

pytestmark = pytest.mark.slow  # 60 child processes killed in a loop, minutes on a busy machine: CI stage 2

REPO = Path(__file__).resolve().parent.parent
KILLS = 60
ROUNDS = 400


def write_blocks(path: Path) -> tuple[list[str], list[str]]:
    """Genesis and, per round, a stand-in then the winner; returns the winners' and the stand-ins' hashes."""
    c = make_consortium(n_agents=5)
    scores = honest_scores(list(c.agents), bad="node-05")
    chunks, winners, stand_ins, prev = [c.genesis.raw], [], [], c.genesis.hash
    for r in range(1, ROUNDS + 1):
        stand_in = round_block(c, r, prev, r, scores, r == 1, rank=1)
        winner = round_block(c, r, prev, r, scores, r == 1, rank=0)
        chunks += [stand_in.raw, winner.raw]
        winners.append(winner.hash)
        stand_ins.append(stand_in.hash)
        prev = winner.hash
    path.write_bytes(b"".join(struct.pack(">I", len(b)) + b for b in chunks))
    return winners, stand_ins


def test_sigkill_in_a_loop_never_leaves_a_replica_that_fails_verify(tmp_path):
    winners, stand_ins = write_blocks(tmp_path / "blocks.bin")
    chain = tmp_path / "chain"
    rng = random.Random(7)
    kills, last_height, heights = 0, 0, []
    while kills < KILLS:
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.crash_writer", str(chain), str(tmp_path / "blocks.bin")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        ready = child.stdout.readline()
        assert ready.startswith("ready"), child.stderr.read()
        time.sleep(rng.uniform(0.0, 0.02))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        if child.returncode == -signal.SIGKILL:
            kills += 1
        report = verify_replica(chain)  # raises InvalidBlock naming the height if anything is broken
        assert report.height >= last_height, "a committed block was lost"
        if report.height:  # the head is that height's winner, or its stand-in when killed before the switch
            assert report.head_hash in (winners[report.height - 1], stand_ins[report.height - 1])
        last_height = report.height
        heights.append(report.height)
        if report.height == ROUNDS and child.returncode == 0:
            break
    assert kills >= 50, f"only {kills} kills"
    assert len(set(heights)) >= 5, heights  # kills landed at several points of the chain's growth
    child = subprocess.run(
        [sys.executable, "-m", "tests.crash_writer", str(chain), str(tmp_path / "blocks.bin")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert child.returncode == 0, child.stderr
    final = verify_replica(chain)
    assert final.height == ROUNDS and final.head_hash == winners[-1]
