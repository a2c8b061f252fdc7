"""The fuzzers' consortium and chain, made reproducibly from one committed seed string.

The committed corpus (tests/fuzz/corpus/) holds blocks and envelopes signed by this consortium's
keys, on top of this genesis. Both are a pure function of ``SEED``: every key is the Ed25519 key
whose 32-byte seed is SHA-256("<SEED>/<node id>"), and every envelope and block built here has a
fixed timestamp and a nonce derived from its own content, so ``python -m tests.fuzz.fuzz_decoders
seed`` writes the same bytes every time. Change ``SEED`` (or build with another one) and the genesis
hash and every key change with it: the committed blocks then no longer extend the genesis and reach
no validation at all, which is what ``tests/test_fuzz_corpus.py`` must notice.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any

from nacl.signing import SigningKey

from bpcv.envelope import Envelope, canonical_json, round_ts, seal
from bpcv.identity import Identity, check_node_id
from bpcv.poq import quality_scores, rank_nodes
from bpcv.task import TaskSpec
from ledger.block import HEADER_FIELDS, ZERO_HASH, Block, build_block, decode_block
from ledger.block import MAGIC as BLOCK_MAGIC
from ledger.block import VERSION as BLOCK_VERSION
from tests.helpers import Consortium

SEED = "bpcv-fuzz-corpus/v1"
TS = 1_700_000_000.0  # every envelope and block here carries this timestamp (validation ignores it)
AGENTS = ("node-01", "node-02", "node-03", "node-04")
TASK_ID = "t1"


def identity(node_id: str, seed: str = SEED) -> Identity:
    """The member ``node_id`` of the consortium made from ``seed``: its key is fixed by the two."""
    key_seed = hashlib.sha256(f"{seed}/{node_id}".encode()).digest()
    return Identity(check_node_id(node_id), SigningKey(key_seed))


def sealed(who: Identity, type: str, task: str, round_no: int, body: dict[str, Any], blobs=()) -> Envelope:
    """``bpcv.envelope.seal`` with a fixed timestamp and a content-derived nonce (so: reproducible)."""
    unsigned = {"body": body, "round": int(round_no), "sender": who.node_id, "task": task, "ts": round_ts(TS)}
    material = canonical_json({**unsigned, "type": type}) + b"".join(blobs)
    return seal(who, type, task, round_no, body, blobs, ts=TS, nonce=hashlib.sha256(material).hexdigest()[:24])


@dataclass
class Chain(Consortium):
    """The consortium of ``seed``: admin, requester, coordinator, four agents, the genesis, task ``t1``."""

    seed: str = SEED

    def member(self, node_id: str) -> Identity:
        """Any identity made from this chain's seed, registered or not (``node-99`` is not)."""
        return identity(node_id, self.seed)


def make_chain(seed: str = SEED) -> Chain:
    admin, requester, coordinator = (identity(n, seed) for n in ("admin", "requester", "coordinator"))
    agents = {n: identity(n, seed) for n in AGENTS}
    members = {"admin": admin, "requester": requester, "coordinator": coordinator, **agents}
    roles = {"admin": "admin", "requester": "requester", "coordinator": "coordinator"}
    body = {
        "chain": "main",
        "members": {
            n: {"key": m.public_key.hex(), "role": roles.get(n, "agent")} for n, m in sorted(members.items())
        },
        "params": {},
    }
    genesis = build_block(admin, 0, ZERO_HASH, "", 0, [sealed(admin, "genesis", "", 0, body).raw], ts=TS)
    task = TaskSpec(task_id=TASK_ID, coordinator="coordinator", nodes=len(AGENTS), min_nodes=2)
    task_env = sealed(requester, "task", TASK_ID, 0, task.to_body())
    return Chain(admin, requester, coordinator, agents, genesis, task, task_env, seed)


def scores() -> dict[str, dict[str, float]]:
    """Every agent scores every other; node-04 scores lowest, so the PoQ ranking is node-01, -02, -03, -04."""
    quality = {"node-01": 0.95, "node-02": 0.9, "node-03": 0.85, "node-04": 0.2}
    return {v: {t: q for t, q in quality.items() if t != v} for v in AGENTS}


def round_block(
    c: Chain,
    *,
    round_no: int = 1,
    height: int = 1,
    prev_hash: str | None = None,
    include_task: bool = True,
    rank: int = 0,
    proposer: str | None = None,
    final: bool = False,
    votes: dict[str, dict[str, float]] | None = None,
    vote_from_coordinator: bool = False,
    drop_vote: bool = False,
    rewards: dict[str, float] | None = None,
    ranking: list[str] | None = None,
    final_record: bool | None = None,
    extra_txs: tuple[bytes, ...] = (),
) -> Block:
    """A round block on ``c``'s genesis, valid unless one of the keyword arguments bends one rule:

    ``vote_from_coordinator`` adds a vote signed by the coordinator, ``drop_vote`` leaves out a vote the
    result lists, ``rewards`` / ``ranking`` override the result's, ``final_record`` adds (or not) the
    final-model record independent of ``final``."""
    votes = scores() if votes is None else votes
    vote_envs = [
        sealed(c.agents[v], "vote", TASK_ID, round_no, {"metric": "accuracy", "scores": s, "digests": {}})
        for v, s in sorted(votes.items())
    ]
    if vote_from_coordinator:
        vote_envs.append(sealed(c.coordinator, "vote", TASK_ID, round_no, {"metric": "accuracy", "scores": {}}))
    order = rank_nodes(quality_scores(votes, c.task.quality_rule), "accuracy")
    split = {order[0]: 60.0, order[1]: 40.0} if rewards is None else rewards
    records = [sealed(c.coordinator, "reward", TASK_ID, round_no, {"rewards": split})]
    if final if final_record is None else final_record:
        records.append(sealed(c.coordinator, "final", TASK_ID, round_no, {"model_digest": "ab" * 32}))
    body = {
        "ranking": order if ranking is None else ranking,
        "proposer": order[0],
        "votes": sorted(v.digest for v in vote_envs),
        "records": sorted(r.digest for r in records),
        "eliminated": order[-1],
        "eliminated_reason": "lowest-quality",
        "final": final,
        "global_digest": "ab" * 32,
    }
    result = sealed(c.coordinator, "result", TASK_ID, round_no, body)
    included = vote_envs[1:] if drop_vote else vote_envs
    txs = ([c.task_env.raw] if include_task else []) + [v.raw for v in included] + [result.raw]
    txs += [r.raw for r in records] + list(extra_txs)
    who = c.member(proposer or order[rank])
    prev = c.genesis.hash if prev_hash is None else prev_hash
    return build_block(who, height, prev, TASK_ID, round_no, txs, ts=TS, rank=rank)


def registration_block(c: Chain, node_id: str = "node-05", signer: Identity | None = None) -> Block:
    """An admin-proposed block admitting ``node_id`` as an agent; ``signer`` signs the registration."""
    new = c.member(node_id)
    reg = sealed(signer or c.admin, "register", "", 0, {"node": node_id, "key": new.public_key.hex(), "role": "agent"})
    return build_block(c.admin, 1, c.genesis.hash, "", 0, [reg.raw], ts=TS)


def equivocation_evidence(c: Chain, accused: str, sender: str) -> Envelope:
    """An ``evidence`` transaction: two different headers ``accused`` signed at height 1 on the genesis."""
    first = round_block(c, proposer=accused)
    second = round_block(c, proposer=accused, include_task=False)
    body = {
        "accused": accused,
        "headers": [first.header_bytes.hex(), second.header_bytes.hex()],
        "signatures": [first.signature.hex(), second.signature.hex()],
    }
    return sealed(c.agents[sender], "evidence", "", 0, body)


def resign(block: Block, signer: Identity, **header: Any) -> Block:
    """``block`` with header fields changed (e.g. ``merkle_root``) and signed again by ``signer``:
    a tampered block that still carries a valid proposer signature. Raw layout: ledger/block.py."""
    fields = {
        "height": block.height,
        "merkle_root": block.merkle_root,
        "prev_hash": block.prev_hash,
        "proposer": block.proposer,
        "rank": block.rank,
        "round": block.round,
        "task": block.task,
        "ts": block.ts,
        "tx_count": len(block.txs),
        **header,
    }
    assert sorted(fields) == list(HEADER_FIELDS), sorted(fields)
    header_bytes = canonical_json(fields)
    parts = [BLOCK_MAGIC, bytes([BLOCK_VERSION]), struct.pack(">I", len(header_bytes)), header_bytes]
    parts.append(struct.pack(">I", len(block.txs)))
    for tx in block.txs:
        parts += [struct.pack(">I", len(tx)), tx]
    parts.append(signer.sign(header_bytes))
    return decode_block(b"".join(parts))


def flip_last_byte(raw: bytes) -> bytes:
    """``raw`` with its last byte changed: for a block or an envelope, a broken signature."""
    return raw[:-1] + bytes([raw[-1] ^ 0x01])
