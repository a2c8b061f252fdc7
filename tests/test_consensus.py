"""PoQ consensus on a replica: proposer fallback, equivocation evidence, fork choice, registration,
reward and final-model records, and the store operations fork choice needs (both backends)."""

import itertools

import pytest

from bpcv.envelope import seal
from bpcv.identity import Identity
from bpcv.messages import seal_message
from ledger.block import build_block
from ledger.errors import InvalidBlock, UnknownParent
from ledger.replica import Replica, preferred, verify_store
from tests.helpers import honest_scores, make_consortium, round_block


def test_store_contract_side_blocks_and_atomic_switch(store):
    for h, name in enumerate(["g", "a1", "a2"]):
        store.append(h, f"{h:064x}", name.encode())
    store.put_side("b1" * 32, b"b1")
    assert store.get_side("b1" * 32) == b"b1" and dict(store.side_blocks()) == {"b1" * 32: b"b1"}
    with pytest.raises(UnknownParent):  # the blocks to orphan must be exactly the main chain from the fork on
        store.switch(1, [(f"{1:064x}", b"a1")], [("b1" * 32, b"b1")])
    assert store.head() == (2, f"{2:064x}")
    store.switch(1, [(f"{1:064x}", b"a1"), (f"{2:064x}", b"a2")], [("b1" * 32, b"b1"), ("b2" * 32, b"b2")])
    assert store.head() == (2, "b2" * 32) and store.get(1) == b"b1" and store.height_of("b1" * 32) == 1
    assert store.height_of(f"{1:064x}") is None and store.get_side(f"{1:064x}") == b"a1"
    assert store.get_side("b1" * 32) is None  # now on the main chain


def test_next_ranked_node_may_propose_and_nobody_else():
    c = make_consortium()
    replica = Replica.open(None, c.genesis.raw)
    scores = honest_scores(list(c.agents), bad="node-04")  # ranking node-01, node-02, node-03, node-04
    fallback = round_block(c, 1, replica.head_hash, 1, scores, include_task=True, rank=1)
    assert fallback.proposer == "node-02"
    wrong = round_block(c, 1, replica.head_hash, 1, scores, include_task=True, rank=1, proposer="node-03")
    with pytest.raises(InvalidBlock, match="rank 1, but that place is node-02"):
        replica.append(wrong.raw)
    too_far = round_block(c, 1, replica.head_hash, 1, scores, include_task=True, rank=4, proposer="node-04")
    with pytest.raises(InvalidBlock, match="that place is nobody"):
        replica.append(too_far.raw)
    assert replica.append(fallback.raw).status == "head"


def test_fork_choice_longer_then_lower_rank_then_lower_hash():
    c = make_consortium()
    base = Replica.open(None, c.genesis.raw)
    scores = honest_scores(list(c.agents), bad="node-04")
    winner = round_block(c, 1, base.head_hash, 1, scores, include_task=True, rank=0)
    stand_in = round_block(c, 1, base.head_hash, 1, scores, include_task=True, rank=1)
    assert preferred([winner], [stand_in]) and not preferred([stand_in], [winner])
    assert preferred([stand_in, winner], [winner])  # longer wins whatever the ranks

    # the winner arriving after its stand-in replaces it; the stand-in is kept on the side
    replica = Replica.open(None, c.genesis.raw)
    replica.append(stand_in.raw)
    switched = replica.append(winner.raw)
    assert switched.status == "reorg" and [b.hash for b in switched.orphaned] == [stand_in.hash]
    assert replica.head_hash == winner.hash and replica.store.get_side(stand_in.hash) == stand_in.raw
    assert replica.append(stand_in.raw) is None  # already held
    # the other order ends in the same place
    other = Replica.open(None, c.genesis.raw)
    other.append(winner.raw)
    assert other.append(stand_in.raw).status == "side" and other.head_hash == winner.hash


def test_equivocation_is_detected_proven_on_chain_and_excludes_the_proposer():
    c = make_consortium()
    replica = Replica.open(None, c.genesis.raw)
    scores = honest_scores(list(c.agents), bad="node-04")
    first = round_block(c, 1, replica.head_hash, 1, scores, include_task=True, ts=1000.0)
    twin = round_block(c, 1, replica.head_hash, 1, scores, include_task=True, ts=1000.5)
    replica.append(first.raw)
    replica.append(twin.raw)
    assert replica.head_hash == min(first.hash, twin.hash)  # same rank: the lower hash wins, everywhere
    [proof] = replica.pending_evidence()
    assert proof.accused == "node-01"

    evidence = seal_message(c.agents["node-02"], proof.evidence(), "t1", 2)
    # round 2: node-01 is again the PoQ winner, but the block carrying the evidence excludes it from then on
    block2 = round_block(c, 2, replica.head_hash, 2, scores, False, rank=0, extra_txs=(evidence.raw,))
    replica.append(block2.raw)
    assert replica.state.excluded == {"node-01"} and replica.pending_evidence() == []
    by_excluded = round_block(c, 3, replica.head_hash, 3, scores, False, rank=0)
    with pytest.raises(InvalidBlock, match="proposer node-01 at rank 0, but that place is node-02"):
        replica.append(by_excluded.raw)
    replica.append(round_block(c, 3, replica.head_hash, 3, scores, False, rank=0, proposer="node-02").raw)
    assert verify_store(replica.store).height == 3

    # evidence that proves nothing is refused
    fake = dict(proof.evidence().to_body(), signatures=[first.signature.hex(), first.signature.hex()])
    bad = seal(c.agents["node-03"], "evidence", "t1", 4, fake)
    other = Replica.open(None, c.genesis.raw)
    other.append(first.raw)
    with pytest.raises(InvalidBlock, match="not signed by node-01"):
        other.append(round_block(c, 2, other.head_hash, 2, scores, False, extra_txs=(bad.raw,)).raw)


def test_reward_and_final_records_are_checked():
    c = make_consortium()
    replica = Replica.open(None, c.genesis.raw)
    scores = honest_scores(list(c.agents), bad="node-04")
    block = round_block(c, 1, replica.head_hash, 1, scores, include_task=True, final=True)
    no_records = build_block(c.agents["node-01"], 1, replica.head_hash, "t1", 1, list(block.txs[:-2]))
    with pytest.raises(InvalidBlock, match="reward/final records"):
        replica.append(no_records.raw)
    greedy = round_block(c, 1, replica.head_hash, 1, scores, include_task=True, rewards={"node-01": 100.5})
    with pytest.raises(InvalidBlock, match="exceed the task's 100.0 per round"):
        replica.append(greedy.raw)
    stranger = round_block(c, 1, replica.head_hash, 1, scores, include_task=True, rewards={"requester": 1.0})
    with pytest.raises(InvalidBlock, match="for ranked nodes"):
        replica.append(stranger.raw)
    assert replica.append(block.raw).status == "head"


def test_registration_block_admits_a_member_signed_by_an_admin():
    c = make_consortium()
    replica = Replica.open(None, c.genesis.raw)
    newcomer = Identity.generate("node-99")
    body = {"node": "node-99", "key": newcomer.public_key.hex(), "role": "agent"}
    forged = seal(c.agents["node-01"], "register", "", 0, body)
    with pytest.raises(InvalidBlock, match="registration 0"):
        replica.append(build_block(c.admin, 1, replica.head_hash, "", 0, [forged.raw]).raw)
    signed = seal(c.admin, "register", "", 0, body)
    replica.append(build_block(c.admin, 1, replica.head_hash, "", 0, [signed.raw]).raw)
    assert replica.state.registry.get("node-99").public_key == newcomer.public_key
    again = seal(c.admin, "register", "", 0, body)
    with pytest.raises(InvalidBlock, match="already a member"):
        replica.append(build_block(c.admin, 2, replica.head_hash, "", 0, [again.raw]).raw)
    assert verify_store(replica.store).height == 1


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_main_chain_depends_on_the_blocks_held_not_their_order(order):
    c = make_consortium()
    scores = honest_scores(list(c.agents), bad="node-04")
    g = Replica.open(None, c.genesis.raw).head_hash
    a1 = round_block(c, 1, g, 1, scores, True, rank=1)
    b1 = round_block(c, 1, g, 1, scores, True, rank=0)
    a2 = round_block(c, 2, a1.hash, 2, scores, False)
    blocks = [a1, b1, a2]
    replica = Replica.open(None, c.genesis.raw)
    pending = [blocks[i] for i in order]
    while pending:  # a child offered before its parent is refused; offer it again later, as sync would
        block = pending.pop(0)
        try:
            replica.append(block.raw)
        except UnknownParent:
            pending.append(block)
    assert replica.height == 2 and replica.head_hash == a2.hash  # the longer branch, though a1 is a stand-in
