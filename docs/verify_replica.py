"""Verify a BPCV-FL replica with nothing but the Python standard library, `lmdb` and `pynacl`.

    python docs/verify_replica.py REPLICA_DIR [--genesis-hash HEX]

An independent implementation of docs/PROTOCOL.md ("Verifying a replica"), written from that text
alone and sharing no code with the project, so an auditor can read it in one sitting and run it on a
machine without BPCV-FL. Exit 0 and "OK height H head HASH" when the replica verifies; exit 2 and the
first bad height otherwise.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import struct
import sys

import lmdb
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

BLOCK_FIELDS = ["height", "merkle_root", "prev_hash", "proposer", "rank", "round", "task", "ts", "tx_count"]
ENVELOPE_FIELDS = ["body", "nonce", "round", "sender", "task", "ts", "type"]
ROUND_TX_ROLES = {
    "task": {"requester"},
    "vote": {"agent"},
    "result": {"coordinator"},
    "reward": {"coordinator"},
    "final": {"coordinator"},
    "evidence": {"agent", "coordinator"},
}


class Bad(Exception):
    pass


def strict_json(data: bytes):
    def refuse(name: str):
        raise Bad(f"JSON constant {name} is not allowed")

    return json.loads(data.decode("ascii"), parse_constant=refuse)


def signed_by(key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        VerifyKey(key).verify(message, signature)
        return True
    except (BadSignatureError, ValueError):
        return False


def parse_block(raw: bytes) -> dict:
    """Block bytes -> header fields + "header_bytes", "txs", "signature", "hash"."""
    if raw[:5] != b"BPBK\x01":
        raise Bad("not a version-1 BPBK block")
    (hlen,) = struct.unpack_from(">I", raw, 5)
    header_bytes = raw[9 : 9 + hlen]
    header = strict_json(header_bytes)
    if sorted(header) != BLOCK_FIELDS:
        raise Bad("block header fields wrong")
    pos = 9 + hlen
    (ntx,) = struct.unpack_from(">I", raw, pos)
    pos += 4
    txs = []
    for _ in range(ntx):
        (n,) = struct.unpack_from(">I", raw, pos)
        txs.append(raw[pos + 4 : pos + 4 + n])
        pos += 4 + n
    if pos + 64 != len(raw):
        raise Bad("block length does not match its contents")
    header.update(
        header_bytes=header_bytes, txs=txs, signature=raw[pos:], hash=hashlib.sha256(header_bytes).hexdigest()
    )
    return header


def parse_envelope(raw: bytes) -> dict:
    """Envelope bytes -> header fields + "signed", "signature", "digest"."""
    if raw[:5] != b"BPCV\x01":
        raise Bad("not a version-1 BPCV envelope")
    (hlen,) = struct.unpack_from(">I", raw, 5)
    env = strict_json(raw[9 : 9 + hlen])
    if sorted(env) != ENVELOPE_FIELDS or not isinstance(env["body"], dict):
        raise Bad("envelope header fields wrong")
    pos = 9 + hlen
    (nblobs,) = struct.unpack_from(">H", raw, pos)
    pos += 2
    for _ in range(nblobs):
        (n,) = struct.unpack_from(">I", raw, pos)
        pos += 4 + n
    if pos + 64 != len(raw):
        raise Bad("envelope length does not match its contents")
    env.update(signed=raw[:pos], signature=raw[pos:], digest=hashlib.sha256(raw).hexdigest())
    return env


def merkle_root(txs: list[bytes]) -> str:
    level = [hashlib.sha256(b"\x00" + tx).digest() for tx in txs]
    if not level:
        return hashlib.sha256(b"").hexdigest()
    while len(level) > 1:
        paired = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        level = paired + ([level[-1]] if len(level) % 2 else [])
    return level[0].hex()


class Chain:
    """What verification has learnt so far: members, tasks, rounds recorded, excluded proposers."""

    def __init__(self) -> None:
        self.members: dict[str, tuple[bytes, str]] = {}  # id -> (public key, role)
        self.tasks: dict[str, dict] = {}
        self.rounds: set[tuple[str, int]] = set()
        self.excluded: set[str] = set()

    def open(self, raw: bytes, roles: set[str]) -> dict:
        env = parse_envelope(raw)
        member = self.members.get(env["sender"])
        if member is None or member[1] not in roles:
            raise Bad(f"{env['type']} from {env['sender']}, who is not a member allowed to send it")
        if not signed_by(member[0], env["signed"], env["signature"]):
            raise Bad(f"signature of {env['sender']} on a {env['type']} does not verify")
        return env

    def check_proposer(self, block: dict, role: str) -> None:
        member = self.members.get(block["proposer"])
        if member is None or member[1] != role:
            raise Bad(f"proposer {block['proposer']} is not a registered {role}")
        if not signed_by(member[0], block["header_bytes"], block["signature"]):
            raise Bad("proposer signature does not verify")


def verify_genesis(chain: Chain, block: dict) -> None:
    if block["height"] != 0 or block["prev_hash"] != "00" * 32 or len(block["txs"]) != 1:
        raise Bad("genesis must be height 0, previous hash zero, one transaction")
    env = parse_envelope(block["txs"][0])
    if env["type"] != "genesis":
        raise Bad("the genesis transaction is not of type genesis")
    for node, entry in env["body"]["members"].items():
        chain.members[node] = (bytes.fromhex(entry["key"]), entry["role"])
    chain.open(block["txs"][0], {"admin"})
    chain.check_proposer(block, "admin")


def verify_registration(chain: Chain, block: dict) -> None:
    chain.check_proposer(block, "admin")
    if block["task"] or block["round"] or block["rank"] or not block["txs"]:
        raise Bad("a registration block has no task, round 0, rank 0 and at least one registration")
    for raw in block["txs"]:
        env = chain.open(raw, {"admin"})
        body = env["body"]
        key = bytes.fromhex(body["key"])
        if env["type"] != "register" or body["node"] in chain.members or len(key) != 32 or body["role"] == "admin":
            raise Bad(f"bad registration of {body.get('node')}")
        chain.members[body["node"]] = (key, body["role"])


def quality_ranking(votes: dict[str, dict[str, float]], rule: str, higher_is_better: bool) -> list[str]:
    received: dict[str, list[float]] = {}
    for voter in sorted(votes):
        for target, score in votes[voter].items():
            if target != voter:
                received.setdefault(target, []).append(float(score))
    combine = statistics.fmean if rule == "mean" else statistics.median
    quality = {t: combine(s) for t, s in received.items()}
    sign = -1.0 if higher_is_better else 1.0
    return sorted(quality, key=lambda n: (sign * quality[n], n))


def verify_evidence(chain: Chain, env: dict, excluded: set[str]) -> str:
    body = env["body"]
    accused = body["accused"]
    member = chain.members.get(accused)
    if member is None or member[1] != "agent" or accused in excluded:
        raise Bad(f"evidence against {accused}, not an agent or already excluded")
    headers = [bytes.fromhex(h) for h in body["headers"]]
    signatures = [bytes.fromhex(s) for s in body["signatures"]]
    if len(headers) != 2 or len(signatures) != 2:
        raise Bad("evidence needs two headers and two signatures")
    a, b = (strict_json(h) for h in headers)
    if headers[0] == headers[1] or sorted(a) != BLOCK_FIELDS or sorted(b) != BLOCK_FIELDS:
        raise Bad("evidence needs two different block headers")
    if not (
        a["proposer"] == b["proposer"] == accused and (a["height"], a["prev_hash"]) == (b["height"], b["prev_hash"])
    ):
        raise Bad("evidence headers are not one proposer's, at one height on one parent")
    if not all(signed_by(member[0], h, s) for h, s in zip(headers, signatures, strict=True)):
        raise Bad("evidence headers are not signed by the accused")
    return accused


def verify_round_block(chain: Chain, block: dict) -> None:
    chain.check_proposer(block, "agent")
    envs: dict[str, list[dict]] = {kind: [] for kind in ROUND_TX_ROLES}
    for raw in block["txs"]:
        kind = parse_envelope(raw)["type"]
        if kind not in ROUND_TX_ROLES:
            raise Bad(f"transaction type {kind} is not allowed in a round block")
        env = chain.open(raw, ROUND_TX_ROLES[kind])
        if kind != "evidence" and env["task"] != block["task"]:
            raise Bad("a transaction is for another task")
        envs[kind].append(env)
    task_id, round_no = block["task"], block["round"]
    task = chain.tasks.get(task_id)
    if envs["task"]:
        if task is not None or len(envs["task"]) != 1 or envs["task"][0]["body"]["task_id"] != task_id:
            raise Bad("task transaction repeated or for another task")
        task = envs["task"][0]["body"]
    if task is None:
        raise Bad(f"task {task_id} is not on the chain")
    if (task_id, round_no) in chain.rounds:
        raise Bad(f"round {round_no} of {task_id} is recorded twice")
    if len(envs["result"]) != 1:
        raise Bad("a round block holds exactly one result")
    result = envs["result"][0]
    if result["sender"] != task["coordinator"] or result["round"] != round_no:
        raise Bad("the result is not from the task's coordinator for this round")

    votes: dict[str, dict[str, float]] = {}
    for vote in envs["vote"]:
        scores = vote["body"]["scores"]
        if vote["round"] != round_no or vote["sender"] in votes:
            raise Bad(f"vote of {vote['sender']} is for another round, or repeated")
        for target, score in scores.items():
            if chain.members.get(target, (b"", ""))[1] != "agent" or not isinstance(score, (int, float)):
                raise Bad(f"vote of {vote['sender']} scores a non-agent or a non-number")
            if not math.isfinite(score):
                raise Bad(f"vote of {vote['sender']} has a non-finite score")
        votes[vote["sender"]] = scores
    if sorted(result["body"]["votes"]) != sorted(v["digest"] for v in envs["vote"]):
        raise Bad("the votes are not exactly those the result lists")
    higher = {"classification": True, "regression": False}[task["category"]]
    ranking = quality_ranking(votes, task["quality_rule"], higher)
    if not ranking or result["body"]["ranking"] != ranking:
        raise Bad(f"the votes rank {ranking}, the result says {result['body']['ranking']}")
    if result["body"].get("eliminated_reason") == "lowest-quality" and result["body"]["eliminated"] != ranking[-1]:
        raise Bad("the eliminated node is not the lowest-quality one")
    eligible = [n for n in ranking if n not in chain.excluded]
    if not 0 <= block["rank"] < len(eligible) or eligible[block["rank"]] != block["proposer"]:
        raise Bad(f"proposer {block['proposer']} is not at place {block['rank']} of the PoQ ranking {eligible}")

    records = envs["reward"] + envs["final"]
    if sorted(result["body"]["records"]) != sorted(r["digest"] for r in records) or len(envs["reward"]) != 1:
        raise Bad("the reward/final records are not exactly those the result lists")
    if any(r["sender"] != task["coordinator"] or r["round"] != round_no for r in records):
        raise Bad("a record is not from the task's coordinator for this round")
    rewards = envs["reward"][0]["body"]["rewards"]
    if any(n not in ranking or not (isinstance(v, (int, float)) and v >= 0) for n, v in rewards.items()):
        raise Bad("rewards go to unranked nodes or are negative")
    if sum(rewards.values()) > task["reward_per_round"] * (1 + 1e-6) + 1e-6:
        raise Bad("rewards exceed the task's reward per round")
    final = bool(result["body"]["final"])
    if len(envs["final"]) != int(final):
        raise Bad("a final-model record belongs in exactly the final round")
    if final and envs["final"][0]["body"]["model_digest"] != result["body"]["global_digest"]:
        raise Bad("the final model digest is not the round's global model")

    newly_excluded: set[str] = set()
    for env in envs["evidence"]:
        newly_excluded.add(verify_evidence(chain, env, chain.excluded | newly_excluded))
    chain.tasks[task_id] = task
    chain.rounds.add((task_id, round_no))
    chain.excluded |= newly_excluded


def verify(path: str, genesis_hash: str | None = None) -> tuple[int, str]:
    env = lmdb.open(path, readonly=True, lock=False, subdir=True)
    with env.begin() as txn:
        head = txn.get(b"meta:head")
        if head is None:
            raise Bad("empty replica: no meta:head")
        head_height, head_hash = struct.unpack(">Q", head[:8])[0], head[8:40].hex()
        chain, prev = Chain(), "00" * 32
        for height in range(head_height + 1):
            raw = txn.get(b"blk:" + struct.pack(">Q", height))
            try:
                if raw is None:
                    raise Bad("missing")
                block = parse_block(bytes(raw))
                if block["height"] != height or block["prev_hash"] != prev:
                    raise Bad("height or previous hash does not chain")
                if merkle_root(block["txs"]) != block["merkle_root"] or len(block["txs"]) != block["tx_count"]:
                    raise Bad("Merkle root or transaction count does not match")
                if txn.get(b"hash:" + bytes.fromhex(block["hash"])) != struct.pack(">Q", height):
                    raise Bad("the hash index does not point at this block")
                if height == 0:
                    verify_genesis(chain, block)
                    if genesis_hash and block["hash"] != genesis_hash:
                        raise Bad(f"genesis {block['hash']} is not the consortium's {genesis_hash}")
                elif chain.members.get(block["proposer"], (b"", ""))[1] == "admin":
                    verify_registration(chain, block)
                else:
                    verify_round_block(chain, block)
            except (Bad, KeyError, TypeError, ValueError, IndexError, struct.error) as exc:
                raise Bad(f"height {height}: {exc}") from exc
            prev = block["hash"]
    env.close()
    if prev != head_hash:
        raise Bad(f"height {head_height}: meta:head does not name the last block")
    return head_height, head_hash


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print(__doc__)
        return 2
    genesis_hash = argv[argv.index("--genesis-hash") + 1] if "--genesis-hash" in argv else None
    try:
        height, head = verify(argv[0], genesis_hash)
    except (Bad, lmdb.Error) as exc:
        print(f"INVALID {argv[0]}: {exc}")
        return 2
    print(f"OK height {height} head {head}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
