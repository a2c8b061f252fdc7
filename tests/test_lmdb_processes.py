"""LMDB across processes (reliability case): a reader process killed inside a read transaction does
not make a replica grow without bound, and a replica opened before fork() is not used in the child.
Real LMDB replicas, a real killed process and a real fork."""

import os
import signal
import subprocess
import sys

import pytest

from ledger.backends.lmdb import LmdbStore
from ledger.errors import LedgerError
from ledger.inspect import verify_replica
from ledger.replica import Replica
from tests.helpers import honest_scores, make_consortium, round_block

ROUNDS = 200
# A foreign reader (py-lmdb's defaults, as `mdb_stat` or a script would open it) that takes a reader
# slot, starts a read transaction, says so, and waits to be killed.
READER = """
import sys, time, lmdb
env = lmdb.open(sys.argv[1], readonly=True, lock=True)
txn = env.begin()
txn.get(b"head")
print("reading", flush=True)
time.sleep(60)
"""


@pytest.fixture(scope="module")
def chain():
    """A genesis and ROUNDS valid round blocks."""
    c = make_consortium(n_agents=4)
    scores = honest_scores(list(c.agents), bad="node-04")
    blocks, prev = [], c.genesis.hash
    for r in range(1, ROUNDS + 1):
        block = round_block(c, r, prev, r, scores, r == 1)
        blocks.append(block.raw)
        prev = block.hash
    return c.genesis.raw, blocks


def replica_size(path, genesis: bytes, blocks: list[bytes], killed_reader: bool) -> int:
    """Bytes of the replica's data file after appending ``blocks``, with or without a reader killed
    inside its read transaction after the first ten."""
    replica = Replica.open(path, genesis)
    for raw in blocks[:10]:
        replica.append(raw)
    if killed_reader:
        reader = subprocess.Popen([sys.executable, "-c", READER, str(path)], stdout=subprocess.PIPE, text=True)
        assert reader.stdout.readline().strip() == "reading"
        reader.send_signal(signal.SIGKILL)
        reader.wait()
    for raw in blocks[10:]:
        replica.append(raw)
    assert replica.height == len(blocks)
    replica.close()
    return (path / "data.mdb").stat().st_size


def test_a_reader_killed_mid_transaction_does_not_make_the_replica_grow(chain, tmp_path):
    genesis, blocks = chain
    alone = replica_size(tmp_path / "alone", genesis, blocks, killed_reader=False)
    after_kill = replica_size(tmp_path / "killed", genesis, blocks, killed_reader=True)
    # Without clearing the dead reader's slot the file grows by the pages of every later write (about
    # 3x here); cleared, it is the same file.
    assert after_kill <= 1.2 * alone, (after_kill, alone)
    assert verify_replica(tmp_path / "killed").height == ROUNDS


def test_a_replica_opened_before_fork_is_refused_in_the_child_and_still_verifies(chain, tmp_path):
    genesis, blocks = chain
    path = tmp_path / "chain"
    replica = Replica.open(path, genesis)
    for raw in blocks[:20]:
        replica.append(raw)
    pid = os.fork()
    if pid == 0:  # the child: the inherited replica refuses to read or write; one it opens itself works
        code = 1
        try:
            replica.block_at(20)
        except LedgerError as exc:
            if "after fork()" in str(exc):
                replica.close()  # releases the child's copies of the handles, nothing of the parent's
                with LmdbStore(path, readonly=True) as own:
                    code = 0 if own.head() is not None and own.head()[0] == 20 else 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    for raw in blocks[20:40]:
        replica.append(raw)
    replica.close()
    assert verify_replica(path).height == 40
