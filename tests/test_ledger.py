"""The chain: one contract suite for both stores, block validation rules, tamper detection in LMDB."""

import struct

import lmdb
import pytest

from bpcv.envelope import seal
from ledger import schema
from ledger.backends.lmdb import LmdbStore
from ledger.block import build_block, decode_block, merkle_root
from ledger.errors import CorruptStore, InvalidBlock, UnknownParent
from ledger.inspect import verify_replica
from ledger.replica import Replica, verify_store
from tests.helpers import honest_scores, make_consortium, round_block


def test_store_contract_append_get_head_and_order(store):
    assert store.head() is None and store.get(0) is None
    store.append(0, "aa" * 32, b"genesis")
    store.append(1, "bb" * 32, b"one")
    assert store.head() == (1, "bb" * 32)
    assert store.get(1) == b"one" and store.height_of("aa" * 32) == 0 and store.height_of("cc" * 32) is None
    with pytest.raises(UnknownParent):
        store.append(3, "dd" * 32, b"gap")
    assert store.head() == (1, "bb" * 32)


def test_lmdb_store_grows_when_the_map_is_full(tmp_path):
    store = LmdbStore(tmp_path / "small", map_size=64 * 1024)
    for h in range(40):
        store.append(h, f"{h:064x}", bytes(8000))
    assert store.head() == (39, f"{39:064x}")
    store.close()


def test_merkle_root_commits_to_order_and_content():
    txs = [b"a", b"b", b"c"]
    assert merkle_root(txs) != merkle_root([b"b", b"a", b"c"])
    assert merkle_root(txs) != merkle_root(txs + [b"c"])  # no duplicate-last ambiguity


def chain_of(c, replica, rounds):
    agents = list(c.agents)
    for r in range(1, rounds + 1):
        block = round_block(
            c, replica.height + 1, replica.head_hash, r, honest_scores(agents, bad=agents[-1]), include_task=(r == 1)
        )
        assert replica.append(block.raw) is not None
    return replica


def test_replica_accepts_valid_rounds_and_ignores_duplicates(tmp_path):
    c = make_consortium()
    replica = chain_of(c, Replica.open(tmp_path / "r", c.genesis.raw), 3)
    assert replica.height == 3 and replica.has_round("t1", 3)
    assert replica.append(replica.store.get(2)) is None
    replica.close()
    again = Replica.open(tmp_path / "r", c.genesis.raw)  # reopening replays and re-verifies
    assert again.height == 3
    again.close()


def test_proposer_must_be_the_poq_winner():
    c = make_consortium()
    replica = Replica.open(None, c.genesis.raw)
    scores = honest_scores(list(c.agents), bad="node-04")
    block = round_block(c, 1, replica.head_hash, 1, scores, include_task=True, proposer="node-04")
    with pytest.raises(InvalidBlock, match="at rank 0, but that place is node-01"):
        replica.append(block.raw)
    assert replica.height == 0


def test_block_rules_reject_unlisted_votes_wrong_round_and_foreign_signers():
    c = make_consortium()
    replica = Replica.open(None, c.genesis.raw)
    good = round_block(c, 1, replica.head_hash, 1, honest_scores(list(c.agents)), include_task=True)
    extra_vote = seal(c.agents["node-02"], "vote", "t1", 1, {"scores": {"node-01": 0.5}})
    tampered = build_block(c.agents[good.proposer], 1, good.prev_hash, "t1", 1, list(good.txs) + [extra_vote.raw])
    with pytest.raises(InvalidBlock, match="two votes|exactly those"):
        replica.append(tampered.raw)
    wrong_round = build_block(c.agents[good.proposer], 1, good.prev_hash, "t1", 2, list(good.txs))
    with pytest.raises(InvalidBlock):
        replica.append(wrong_round.raw)
    forged_result = seal(c.agents["node-01"], "result", "t1", 1, {})
    foreign = build_block(
        c.agents[good.proposer], 1, good.prev_hash, "t1", 1, list(good.txs[:-1]) + [forged_result.raw]
    )
    with pytest.raises(InvalidBlock, match="may not send"):
        replica.append(foreign.raw)
    replica.append(good.raw)
    replay = round_block(c, 2, replica.head_hash, 1, honest_scores(list(c.agents)), include_task=False)
    with pytest.raises(InvalidBlock, match="already on the chain"):
        replica.append(replay.raw)


def test_flipping_one_stored_byte_fails_verify_naming_the_height(tmp_path):
    c = make_consortium()
    path = tmp_path / "chain"
    chain_of(c, Replica.open(path, c.genesis.raw), 4).close()
    assert verify_replica(path).height == 4
    for offset in (20, 400, -10):  # in the header, in a transaction, in the signature
        env = lmdb.open(str(path))
        with env.begin(write=True) as txn:
            raw = bytearray(txn.get(schema.block_key(2)))
            raw[offset] ^= 0x01
            txn.put(schema.block_key(2), bytes(raw))
        env.close()
        with pytest.raises(InvalidBlock) as info:
            verify_replica(path)
        assert info.value.height == 2
        env = lmdb.open(str(path))
        with env.begin(write=True) as txn:
            raw[offset] ^= 0x01
            txn.put(schema.block_key(2), bytes(raw))
        env.close()
        assert verify_replica(path).height == 4


def test_verify_store_on_memory_and_decode_of_garbage():
    c = make_consortium()
    replica = chain_of(c, Replica.open(None, c.genesis.raw), 2)
    report = verify_store(replica.store)
    assert report.blocks == 3 and report.head_hash == replica.head_hash
    with pytest.raises(CorruptStore):
        decode_block(b"BPBK\x01garbage")


def with_header(raw: bytes, header: bytes) -> bytes:
    """``raw`` (a block) with its header bytes replaced, the length prefix kept consistent."""
    (hlen,) = struct.unpack_from(">I", raw, 5)
    return raw[:5] + struct.pack(">I", len(header)) + header + raw[9 + hlen :]


def test_hostile_header_numbers_and_task_field_types_are_refused_not_raised():
    """Found while specifying the protocol: these raised OverflowError/TypeError out of the validator."""
    c = make_consortium(n_agents=3)
    replica = Replica.open(None, c.genesis.raw)
    good = round_block(c, 1, c.genesis.hash, 1, honest_scores(list(c.agents)), include_task=True)
    header = good.header_bytes.replace(b'"height":1', b'"height":1e400')
    assert header != good.header_bytes
    with pytest.raises(InvalidBlock, match="height is not an integer"):
        replica.append(with_header(good.raw, header))
    wrong_task = seal(c.requester, "task", "t1", 0, {**c.task.to_body(), "reward_per_round": "lots"})
    block = build_block(c.agents["node-01"], 1, c.genesis.hash, "t1", 1, [wrong_task.raw], rank=0)
    with pytest.raises(InvalidBlock, match="task transaction: .*wrong type"):
        replica.append(block.raw)
    assert replica.height == 0


@pytest.mark.parametrize(
    "old,new,why",
    [
        (b'"tx_count":', b'"tx_count":9', "tx_count"),
        (b'"height":1', b'"height":"1"', "height is not an integer"),
        (b'"rank":0', b'"rank":0.0', "rank is not an integer"),
        (b'"round":1', b'"round":true', "round is not an integer"),
    ],
)
def test_a_header_field_of_another_type_or_a_wrong_tx_count_does_not_decode(old, new, why):
    c = make_consortium(n_agents=3)
    good = round_block(c, 1, c.genesis.hash, 1, honest_scores(list(c.agents)), include_task=True)
    header = good.header_bytes.replace(old, new, 1)
    if old == b'"tx_count":':  # the count is the field's whole value
        header = good.header_bytes.replace(b'"tx_count":%d' % len(good.txs), b'"tx_count":%d' % (len(good.txs) + 1))
    assert header != good.header_bytes and decode_block(with_header(good.raw, good.header_bytes)) == good
    with pytest.raises(CorruptStore, match=why):
        decode_block(with_header(good.raw, header))
