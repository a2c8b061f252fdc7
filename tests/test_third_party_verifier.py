"""docs/verify_replica.py, the verifier written from docs/PROTOCOL.md with only lmdb and pynacl,
agrees with `bpcv chain verify` on good replicas (registration, stand-in, equivocation evidence,
final model) and finds the same first bad height on tampered or rule-breaking ones."""

import ast
import subprocess
import sys
from pathlib import Path

import lmdb
import pytest

from bpcv.committee import assign
from bpcv.envelope import seal
from bpcv.identity import Identity
from bpcv.messages import seal_message
from ledger import schema
from ledger.backends.lmdb import LmdbStore
from ledger.block import build_block
from ledger.inspect import verify_replica
from ledger.replica import Replica
from tests.helpers import honest_scores, make_consortium, round_block

VERIFIER = Path(__file__).resolve().parent.parent / "docs" / "verify_replica.py"


def third_party(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(VERIFIER), str(path)], capture_output=True, text=True, timeout=60)


def test_the_verifier_imports_only_the_standard_library_lmdb_and_pynacl():
    imported = set()
    for node in ast.walk(ast.parse(VERIFIER.read_text())):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported - set(sys.stdlib_module_names) == {"lmdb", "nacl"}


@pytest.fixture
def rich_chain(tmp_path):
    """A replica with a registration, a stand-in block, an equivocation proven on chain and a final round."""
    c = make_consortium()
    path = tmp_path / "chain"
    replica = Replica.open(path, c.genesis.raw)
    newcomer = Identity.generate("node-05")
    reg = seal(c.admin, "register", "", 0, {"node": "node-05", "key": newcomer.public_key.hex(), "role": "agent"})
    replica.append(build_block(c.admin, 1, replica.head_hash, "", 0, [reg.raw]).raw)
    scores = honest_scores(list(c.agents), bad="node-04")
    first = round_block(c, 2, replica.head_hash, 1, scores, True, ts=100.0)
    twin = round_block(c, 2, replica.head_hash, 1, scores, True, ts=100.5)
    replica.append(first.raw)
    replica.append(twin.raw)
    [proof] = replica.pending_evidence()
    evidence = seal_message(c.agents["node-03"], proof.evidence(), "t1", 2)
    replica.append(round_block(c, 3, replica.head_hash, 2, scores, False, extra_txs=(evidence.raw,)).raw)
    # node-01 is excluded now, so place 1 of the eligible ranking is node-03
    replica.append(round_block(c, 4, replica.head_hash, 3, scores, False, rank=1, proposer="node-03", final=True).raw)
    assert replica.state.excluded == {"node-01"} and replica.height == 4
    replica.close()
    return c, path


def test_agrees_with_bpcv_chain_verify_on_a_good_replica(rich_chain):
    _, path = rich_chain
    done = third_party(path)
    ours = verify_replica(path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == ["OK", "height", "4", "head", ours.head_hash]


@pytest.mark.parametrize("height,offset", [(1, 40), (2, 200), (3, -10), (4, 500)])
def test_a_flipped_byte_is_found_at_the_same_height(rich_chain, height, offset):
    _, path = rich_chain
    with LmdbStore(path) as store:
        raw = bytearray(store.get(height))
    raw[offset] ^= 0x01
    with lmdb.open(str(path), subdir=True) as env, env.begin(write=True) as txn:  # a failing disk, below the store
        txn.put(schema.block_key(height), bytes(raw))
    done = third_party(path)
    assert done.returncode == 2 and f"height {height}:" in done.stdout, done.stdout
    with pytest.raises(Exception) as ours:
        verify_replica(path)
    assert ours.value.height == height


@pytest.mark.parametrize("breach", ["wrong-stand-in", "excluded-proposer", "greedy-reward"])
def test_rule_breaking_blocks_written_past_validation_are_refused(rich_chain, breach):
    c, path = rich_chain
    scores = honest_scores(list(c.agents), bad="node-04")
    with LmdbStore(path) as store:
        head_height, head_hash = store.head()
        kwargs = {
            "wrong-stand-in": {"rank": 1, "proposer": "node-04"},  # place 1 is node-03 now
            "excluded-proposer": {"rank": 0, "proposer": "node-01"},
            "greedy-reward": {"rewards": {"node-02": 150.0}},
        }[breach]
        bad = round_block(c, head_height + 1, head_hash, 9, scores, False, **kwargs)
        store.append(bad.height, bad.hash, bad.raw)  # straight into LMDB, as an attacker with disk access
    done = third_party(path)
    assert done.returncode == 2 and f"height {head_height + 1}:" in done.stdout, done.stdout


@pytest.mark.parametrize("fields", [{"lr_decay": 0.9}, {"update_encoding": "float16+deflate"}, {"committee": 3}])
def test_a_task_with_an_optional_field_is_read_by_both_verifiers(tmp_path, fields):
    # such fields travel only when set: a verifier that did not know one would refuse the task
    c = make_consortium(n_agents=6, **fields)
    assert c.task.to_body().items() >= fields.items()
    path = tmp_path / "chain"
    replica = Replica.open(path, c.genesis.raw)
    agents, seed = list(c.agents), replica.head_hash
    scores = {
        v: {t: 0.9 - 0.01 * i for i, t in enumerate(agents) if t in peers}
        for v, peers in assign(agents, c.task.committee, seed, "t1", 1).items()
    }
    committee = (seed, agents) if c.task.committee else None
    replica.append(round_block(c, 1, replica.head_hash, 1, scores, True, committee=committee).raw)
    replica.close()
    done = third_party(path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split()[:3] == ["OK", "height", "1"] and verify_replica(path).height == 1
    if committee:  # a vote outside its committee, written straight into LMDB, is refused at its height by both
        voter = agents[0]
        outsider = next(a for a in agents if a != voter and a not in scores[voter])
        stretched = {**scores, voter: {**scores[voter], outsider: 0.5}}
        with LmdbStore(path) as store:
            head_hash = store.head()[1]
            bad = round_block(c, 2, head_hash, 2, stretched, False, committee=(head_hash, agents))
            store.append(bad.height, bad.hash, bad.raw)
        done = third_party(path)
        assert done.returncode == 2 and "height 2: a vote scores a node outside" in done.stdout, done.stdout
        with pytest.raises(Exception, match="outside its committee") as ours:
            verify_replica(path)
        assert ours.value.height == 2
