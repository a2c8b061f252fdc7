"""Verify a BPCV-FL replica with nothing but the Python standard library, `lmdb` and `pynacl`.

    python docs/verify_replica.py REPLICA_DIR [--genesis-hash HEX]

An independent implementation of docs/PROTOCOL.md ("Verifying a replica"), written from that text
alone and sharing no code with the project, so an auditor can read it in one sitting and run it on a
machine without BPCV-FL. Exit 0 and "OK height H head HASH" when the replica verifies; exit 2 and the
first bad height otherwise. It accepts exactly what the reference validator accepts, including the
leniencies PROTOCOL.md lists under "Known gaps".
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import statistics
import struct
import sys

import lmdb
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

BLOCK_FIELDS = ["height", "merkle_root", "prev_hash", "proposer", "rank", "round", "task", "ts", "tx_count"]
ENVELOPE_FIELDS = ["body", "nonce", "round", "sender", "task", "ts", "type"]
ROLES = {"admin", "coordinator", "requester", "agent", "broker"}
NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_ENVELOPE, MAX_HEADER, MAX_BLOBS = 16 * 1024 * 1024, 4 * 1024 * 1024, 64
# The task body (PROTOCOL.md, "The task"): field -> default; task_id and coordinator have none.
TASK_FIELDS = {
    "task_id": None, "coordinator": None, "chain": "main", "category": "classification", "dataset": "mnist",
    "model": "mlp:128", "rounds": 10, "time_limit_s": 3600.0, "target": None, "reward_per_round": 100.0,
    "nodes": 10, "min_nodes": 5, "local_epochs": 3, "batch_size": 32, "learning_rate": 0.2,
    "quality_rule": "mean", "join_timeout_s": 120.0, "join_window_s": 2.0, "update_timeout_s": 300.0,
    "vote_timeout_s": 120.0, "block_timeout_s": 15.0, "proposer_fallbacks": 2, "data": None,
    "strategy": "bpcv", "elimination": "lowest", "accountable_voters": False, "lr_decay": 1.0,
    "update_encoding": "float32", "committee": 0, "supervised": True, "dissent_rule": "distance",
}  # fmt: skip
ENCODINGS = {f"{kind}{layer}" for kind in ("float32", "float16", "int8") for layer in ("", "+deflate")}
COMMITTEE_SEED_DEPTH = 3  # PROTOCOL.md, "Validation committees"
ROUND_TX_ROLES = {
    "task": {"requester"},
    "vote": {"agent"},
    "result": {"coordinator"},
    "reward": {"coordinator"},
    "final": {"coordinator"},
    "evidence": {"agent", "coordinator"},
}
REWARD_SLACK = 1e-6
# PROTOCOL.md, "Outliers and dissenting voters"
OUTLIER_MADS, OUTLIER_SHARE, DISSENT_MADS, MAD_TO_SD = 3.0, 0.05, 3.0, 1.4826
DISSENT_FLOOR = {True: 0.2, False: 0.5}  # accuracy (higher is better) / MAE
DISSENT_FAR = {"distance": 1.0, "rank-aware": 2.0}  # how far past the limit ordering peers alike stops excusing


class Bad(Exception):
    pass


def strict_json(data: bytes):
    """JSON as the reference parses it: NaN/Infinity refused, the last of duplicate keys wins."""

    def refuse(name: str):
        raise Bad(f"JSON constant {name} is not allowed")

    return json.loads(data, parse_constant=refuse)


def signed_by(key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        VerifyKey(key).verify(message, signature)
        return True
    except (BadSignatureError, ValueError, TypeError):
        return False


# --- body fields, typed as PROTOCOL.md's tables give them ---------------------------------------------


def is_number(value) -> bool:
    """A finite JSON number; true/false are not numbers (a huge integer is not finite: OverflowError is Bad)."""
    try:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    except OverflowError:
        return False


def is_names(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def field(body: dict, name: str, ok, default=Bad):
    """body[name] if ``ok`` says it has the right type; ``default`` when absent (Bad: required)."""
    if name not in body:
        if default is Bad:
            raise Bad(f"field {name!r} is missing")
        return default
    value = body[name]
    if not ok(value):
        raise Bad(f"field {name!r} has the wrong type: {value!r:.60}")
    return value


def text(value) -> bool:
    return isinstance(value, str)


def text_or_null(value) -> bool:
    return value is None or isinstance(value, str)


def mapping_of(ok):
    return lambda value: isinstance(value, dict) and all(ok(v) for v in value.values())


# --- the two byte formats ---------------------------------------------------------------------------


def parse_block(raw: bytes) -> dict:
    """Block bytes -> header fields + "header_bytes", "txs", "signature", "hash".

    Header values must have the JSON types producers write (integers, strings, a number for ts), and
    tx_count must equal the number of transactions."""
    if raw[:5] != b"BPBK\x01":
        raise Bad("not a version-1 BPBK block")
    (hlen,) = struct.unpack_from(">I", raw, 5)
    header_bytes = raw[9 : 9 + hlen]
    header = strict_json(header_bytes)
    if not isinstance(header, dict) or sorted(header) != BLOCK_FIELDS:
        raise Bad("block header fields wrong")
    pos = 9 + hlen
    (ntx,) = struct.unpack_from(">I", raw, pos)
    pos += 4
    txs = []
    for _ in range(ntx):
        (n,) = struct.unpack_from(">I", raw, pos)
        if pos + 4 + n > len(raw) - 64:
            raise Bad("truncated transaction")
        txs.append(raw[pos + 4 : pos + 4 + n])
        pos += 4 + n
    if pos + 64 != len(raw):
        raise Bad("block length does not match its contents")
    for name in ("height", "rank", "round", "tx_count"):
        if type(header[name]) is not int or header[name] < 0:
            raise Bad(f"block header field {name} is not an integer >= 0")
    for name in ("merkle_root", "prev_hash", "proposer", "task"):
        if not isinstance(header[name], str):
            raise Bad(f"block header field {name} is not a string")
    if type(header["ts"]) not in (int, float) or not math.isfinite(header["ts"]):
        raise Bad("block header field ts is not a finite number")
    if header["tx_count"] != ntx:
        raise Bad(f"block header tx_count {header['tx_count']} but {ntx} transactions")
    header["ts"] = float(header["ts"])
    header.update(
        header_bytes=header_bytes, txs=txs, signature=raw[pos:], hash=hashlib.sha256(header_bytes).hexdigest()
    )
    return header


def parse_envelope(raw: bytes) -> dict:
    """Envelope bytes -> header fields + "signed" (what the signature covers), "signature", "digest"."""
    if len(raw) > MAX_ENVELOPE:
        raise Bad(f"envelope of {len(raw)} bytes > {MAX_ENVELOPE}")
    if len(raw) < 11 + 64 or raw[:4] != b"BPCV" or raw[4] not in (1, 2):
        raise Bad("not a version-1 or version-2 BPCV envelope")
    (hlen,) = struct.unpack_from(">I", raw, 5)
    end = len(raw) - 64
    if hlen > MAX_HEADER or 9 + hlen + 2 > end:
        raise Bad("envelope header length out of range")
    env = strict_json(raw[9 : 9 + hlen])
    if not isinstance(env, dict) or sorted(env) != ENVELOPE_FIELDS:
        raise Bad("envelope header fields wrong")
    if not (
        all(isinstance(env[n], str) for n in ("type", "task", "sender", "nonce"))
        and isinstance(env["round"], int)
        and isinstance(env["ts"], (int, float))
        and isinstance(env["body"], dict)
    ):
        raise Bad("envelope header field types wrong")
    pos = 9 + hlen
    (nblobs,) = struct.unpack_from(">H", raw, pos)
    pos += 2
    if nblobs > MAX_BLOBS:
        raise Bad(f"{nblobs} blobs > {MAX_BLOBS}")
    for _ in range(nblobs):
        if pos + 4 > end:
            raise Bad("truncated blob length")
        (n,) = struct.unpack_from(">I", raw, pos)
        pos += 4 + n
        if pos > end:
            raise Bad("truncated blob")
    if pos != end:
        raise Bad("envelope length does not match its contents")
    # version 2 signs a tagged SHA-256 of the bytes before the signature, version 1 those bytes
    signed = raw[:pos] if raw[4] == 1 else b"BPCV-envelope-v2 sha256:" + hashlib.sha256(raw[:pos]).digest()
    env.update(signed=signed, signature=raw[pos:], digest=hashlib.sha256(raw).hexdigest())
    return env


def merkle_root(txs: list[bytes]) -> str:
    level = [hashlib.sha256(b"\x00" + tx).digest() for tx in txs]
    if not level:
        return hashlib.sha256(b"").hexdigest()
    while len(level) > 1:
        paired = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        level = paired + ([level[-1]] if len(level) % 2 else [])
    return level[0].hex()


def node_id(value) -> str:
    if not isinstance(value, str) or not NODE_ID.match(value):
        raise Bad(f"invalid node id {value!r:.70}")
    return value


# --- the chain ----------------------------------------------------------------------------------------


class Chain:
    """What verification has learnt so far: members, tasks, rounds recorded, excluded proposers."""

    def __init__(self) -> None:
        self.members: dict[str, tuple[bytes, str]] = {}  # id -> (public key, role)
        self.tasks: dict[str, dict] = {}
        self.rounds: set[tuple[str, int]] = set()
        self.excluded: set[str] = set()
        self.hashes: list[str] = []  # of the blocks verified so far, in order

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
    body = env["body"]
    field(body, "chain", text)
    field(body, "params", lambda v: isinstance(v, dict), {})

    def member_ok(entry) -> bool:
        return isinstance(entry, dict) and isinstance(entry.get("key"), str) and isinstance(entry.get("role"), str)

    for node, entry in field(body, "members", mapping_of(member_ok)).items():
        if entry["role"] not in ROLES:
            raise Bad(f"genesis member {node} has an unknown role {entry['role']!r}")
        chain.members[node_id(node)] = (bytes.fromhex(entry["key"]), entry["role"])
    chain.open(block["txs"][0], {"admin"})
    chain.check_proposer(block, "admin")


def verify_registration(chain: Chain, block: dict) -> None:
    chain.check_proposer(block, "admin")
    if block["task"] or block["round"] or block["rank"] or not block["txs"]:
        raise Bad("a registration block has no task, round 0, rank 0 and at least one registration")
    admitted: dict[str, tuple[bytes, str]] = {}
    for raw in block["txs"]:
        env = chain.open(raw, {"admin"})  # signed by an admin known before this block
        if env["type"] != "register":
            raise Bad(f"a {env['type']} transaction in a registration block")
        body = env["body"]
        node, key_hex, role = (field(body, name, text) for name in ("node", "key", "role"))
        key = bytes.fromhex(key_hex)
        if node in chain.members or node in admitted or len(key) != 32 or role not in ROLES - {"admin"}:
            raise Bad(f"bad registration of {node}: a member already, a key not of 32 bytes, or a wrong role")
        admitted[node_id(node)] = (key, role)
    chain.members.update(admitted)  # known from the next block on


def read_task(body: dict) -> dict:
    """The task body with defaults filled in, checked as the reference's task rules check it."""
    unknown = sorted(set(body) - set(TASK_FIELDS))
    if unknown or "task_id" not in body or "coordinator" not in body:
        raise Bad(f"task: unknown fields {unknown} or task_id/coordinator missing")
    task = {**TASK_FIELDS, **body}
    for name in ("task_id", "coordinator", "chain"):
        node_id(task[name])
    if task["category"] not in ("classification", "regression") or task["quality_rule"] not in ("mean", "median"):
        raise Bad("task: unknown category or quality rule")
    if task["elimination"] not in ("lowest", "outlier", "none") or not isinstance(task["accountable_voters"], bool):
        raise Bad("task: unknown elimination policy, or accountable_voters not true/false")
    if task["dissent_rule"] not in DISSENT_FAR:
        raise Bad("task: unknown dissent_rule")
    for name in ("rounds", "nodes", "min_nodes", "local_epochs", "batch_size"):
        if not isinstance(task[name], int) or task[name] < 1:
            raise Bad(f"task: {name} must be a positive integer")
    if task["min_nodes"] > task["nodes"]:
        raise Bad("task: min_nodes > nodes")
    # a task on the devices' own data carries its input schema (an object whose category is the task's);
    # the schema's own fields are the devices' business: the chain's rules do not depend on them
    local, data = task["dataset"] == "local", task["data"]
    if local != isinstance(data, dict) or (local and data.get("category", "classification") != task["category"]):
        raise Bad('task: dataset "local" goes with a data schema of the task\'s category, and only it')
    for name in ("time_limit_s", "learning_rate", "join_timeout_s", "update_timeout_s", "vote_timeout_s"):
        if not float(task[name]) > 0:
            raise Bad(f"task: {name} must be > 0")
    if not 0 < float(task["lr_decay"]) <= 1:
        raise Bad("task: lr_decay must be in (0, 1]")
    if not float(task["block_timeout_s"]) > 0 or task["reward_per_round"] < 0:
        raise Bad("task: block_timeout_s must be > 0 and reward_per_round >= 0")
    if not isinstance(task["proposer_fallbacks"], int) or task["proposer_fallbacks"] < 0:
        raise Bad("task: proposer_fallbacks must be an integer >= 0")
    if task["update_encoding"] not in ENCODINGS:
        raise Bad("task: unknown update_encoding")
    if not isinstance(task["supervised"], bool) or (not task["supervised"] and task["strategy"] == "bpcv"):
        raise Bad("task: supervised not true/false, or false with the bpcv strategy")
    k = task["committee"]
    if type(k) is not int or not (k == 0 or k >= 3):
        raise Bad("task: committee must be 0 or an integer >= 3")
    return task


def committees(nodes: list[str], k: int, seed: str, task_id: str, round_no: int) -> dict[str, set[str]]:
    """Who each node scores (PROTOCOL.md, "Validation committees"): every other node when k is 0 or at least
    N - 1; else the k nodes after it in the order of SHA-256("bpcv-committee" 0 seed 0 task 0 round 0 node)."""
    unique = sorted(set(nodes))
    if k == 0 or k >= len(unique) - 1:
        return {n: set(unique) - {n} for n in unique}

    def draw(node: str) -> tuple[bytes, str]:
        return hashlib.sha256(f"bpcv-committee\x00{seed}\x00{task_id}\x00{round_no}\x00{node}".encode()).digest(), node

    order = sorted(unique, key=draw)
    return {n: {order[(i + j) % len(order)] for j in range(1, k + 1)} for i, n in enumerate(order)}


def peer_scores(votes: dict[str, dict[str, float]], ignore: list[str]) -> dict[str, dict[str, float]]:
    """target -> {voter: score}, without scores of oneself and without the voters in ``ignore``."""
    out: dict[str, dict[str, float]] = {}
    for voter in sorted(votes):
        if voter not in ignore:
            for target, score in votes[voter].items():
                if target != voter:
                    out.setdefault(target, {})[voter] = float(score)
    return out


def median_and_sd(values: list[float]) -> tuple[float, float]:
    middle = statistics.median(values)
    return middle, MAD_TO_SD * statistics.median([abs(v - middle) for v in values])


def twice_the_rank(values: list[float]) -> list[int]:
    """2 x each value's average rank from 0: (number smaller) x 2 + (number equal) - 1."""
    return [2 * sum(w < v for w in values) + sum(w == v for w in values) - 1 for v in values]


def orders_alike(mine: list[float], theirs: list[float]) -> bool:
    """Spearman's correlation > 0, from the sign of the integer covariance of the (doubled) ranks."""
    if len(mine) < 3:
        return False
    a, b = twice_the_rank(mine), twice_the_rank(theirs)
    n = len(a)
    return n * sum(a[i] * b[i] for i in range(n)) - sum(a) * sum(b) > 0


def find_dissenters(votes: dict[str, dict[str, float]], higher_is_better: bool, rule: str) -> list[str]:
    """Voters whose median distance from the other voters' median score is too large, unless (rule
    rank-aware) within twice the limit and ordering the peers as the others' medians do; sorted."""
    by_target = peer_scores(votes, [])
    distance, alike = {}, {}
    for voter in votes:
        gaps, mine, theirs = [], [], []
        for scores in by_target.values():
            if voter in scores and len(scores) > 1:
                others = statistics.median([x for v, x in scores.items() if v != voter])
                gap = abs(scores[voter] - others)
                gaps.append(gap if higher_is_better else gap / max(abs(others), 1e-12))
                mine.append(scores[voter])
                theirs.append(others)
        if gaps:
            distance[voter] = statistics.median(gaps)
            alike[voter] = orders_alike(mine, theirs)
    if len(distance) < 3:
        return []
    middle, sd = median_and_sd(list(distance.values()))
    limit = max(middle + DISSENT_MADS * sd, DISSENT_FLOOR[higher_is_better])
    far = DISSENT_FAR[rule] * limit
    return sorted(v for v in distance if distance[v] > limit and (distance[v] > far or not alike[v]))


def quality_ranking(
    votes: dict[str, dict[str, float]], rule: str, higher_is_better: bool, ignore: list[str]
) -> tuple[dict[str, float], list[str]]:
    """Q of every scored node, unrounded (the mean, math.fsum / count, or the median of the scores it got
    from voters not in ``ignore``), and the ranking best first."""
    received = {t: list(s.values()) for t, s in peer_scores(votes, ignore).items()}
    combine = (lambda s: math.fsum(s) / len(s)) if rule == "mean" else statistics.median
    quality = {t: combine(s) for t, s in received.items()}
    sign = -1.0 if higher_is_better else 1.0
    return quality, sorted(quality, key=lambda n: (sign * quality[n], n))


def is_outlier(quality: dict[str, float], node: str, higher_is_better: bool) -> bool:
    if len(quality) < 3:
        return False
    middle, sd = median_and_sd(list(quality.values()))
    worse_by = (middle - quality[node]) if higher_is_better else (quality[node] - middle)
    return worse_by > max(OUTLIER_MADS * sd, OUTLIER_SHARE * abs(middle))


def read_vote(chain: Chain, vote: dict) -> dict[str, float]:
    body = vote["body"]
    scores = field(body, "scores", mapping_of(is_number))
    field(body, "metric", text, "")
    field(body, "digests", mapping_of(text), {})
    field(body, "epsilon_spent", lambda v: v is None or is_number(v), None)
    for target in scores:
        if chain.members.get(target, (b"", ""))[1] != "agent":
            raise Bad(f"vote of {vote['sender']} scores {target}, not a registered agent")
    return {t: float(s) for t, s in scores.items()}


def read_result(body: dict) -> dict:
    """The result's fields with their types (PROTOCOL.md, "The round result"); absent optional ones default."""
    number_or_null = lambda v: v is None or is_number(v)
    return {
        "ranking": field(body, "ranking", is_names),
        "votes": field(body, "votes", is_names),
        "records": field(body, "records", is_names),
        "global_digest": field(body, "global_digest", text),
        "proposer": field(body, "proposer", text_or_null, None),
        "quality": field(body, "quality", mapping_of(is_number), {}),
        "aggregated": field(body, "aggregated", is_names, []),
        "excluded": field(body, "excluded", is_names, []),
        "eliminated": field(body, "eliminated", text_or_null, None),
        "eliminated_reason": field(body, "eliminated_reason", text_or_null, None),
        "invalid": field(body, "invalid", mapping_of(text), {}),
        "dropped": field(body, "dropped", is_names, []),
        "admitted": field(body, "admitted", is_names, []),
        "next_roster": field(body, "next_roster", is_names, []),
        "epsilon_spent": field(body, "epsilon_spent", mapping_of(number_or_null), {}),
        "metric": field(body, "metric", text, ""),
        "value": field(body, "value", number_or_null, None),
        "final": field(body, "final", lambda v: isinstance(v, bool), False),
        "dissenters": field(body, "dissenters", is_names, []),
        "committee_seed": field(body, "committee_seed", text_or_null, None),
        "validated": field(body, "validated", is_names, []),
    }


def verify_evidence(chain: Chain, env: dict, excluded: set[str]) -> str:
    body = env["body"]
    accused = field(body, "accused", text)
    headers_hex, signatures_hex = field(body, "headers", is_names), field(body, "signatures", is_names)
    if len(headers_hex) != 2 or len(signatures_hex) != 2:
        raise Bad("evidence needs two headers and two signatures")
    member = chain.members.get(accused)
    if member is None or member[1] != "agent" or accused in excluded:
        raise Bad(f"evidence against {accused}, not an agent or already excluded")
    headers = [bytes.fromhex(h) for h in headers_hex]
    signatures = [bytes.fromhex(s) for s in signatures_hex]
    a, b = (strict_json(h) for h in headers)
    if not (isinstance(a, dict) and isinstance(b, dict) and sorted(a) == BLOCK_FIELDS == sorted(b)):
        raise Bad("evidence needs two block headers")
    if headers[0] == headers[1]:
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
        if task is not None or len(envs["task"]) != 1:
            raise Bad("task transaction repeated")
        task = read_task(envs["task"][0]["body"])
        if task["task_id"] != task_id:
            raise Bad("the task transaction names another task")
    if task is None:
        raise Bad(f"task {task_id} is not on the chain")
    if (task_id, round_no) in chain.rounds:
        raise Bad(f"round {round_no} of {task_id} is recorded twice")
    if len(envs["result"]) != 1:
        raise Bad("a round block holds exactly one result")
    if envs["result"][0]["sender"] != task["coordinator"] or envs["result"][0]["round"] != round_no:
        raise Bad("the result is not from the task's coordinator for this round")
    result = read_result(envs["result"][0]["body"])

    votes: dict[str, dict[str, float]] = {}
    for vote in envs["vote"]:
        if vote["round"] != round_no or vote["sender"] in votes:
            raise Bad(f"vote of {vote['sender']} is for another round, or repeated")
        votes[vote["sender"]] = read_vote(chain, vote)
    if sorted(result["votes"]) != sorted(v["digest"] for v in envs["vote"]):
        raise Bad("the votes are not exactly those the result lists")
    seed = result["committee_seed"]
    if not task["committee"] and (seed is not None or result["validated"]):
        raise Bad("the result records committees, but the task has none")
    if task["committee"]:
        if seed not in chain.hashes[-COMMITTEE_SEED_DEPTH:]:
            raise Bad("the committee seed is not one of the last block hashes")
        assigned = committees(result["validated"], task["committee"], seed, task_id, round_no)
        if any(voter not in assigned or set(scores) - assigned[voter] for voter, scores in votes.items()):
            raise Bad("a vote scores a node outside its voter's committee")
    higher = {"classification": True, "regression": False}[task["category"]]
    dissenters = find_dissenters(votes, higher, task["dissent_rule"]) if task["accountable_voters"] else []
    if result["dissenters"] != dissenters:
        raise Bad(f"the votes' dissenters are {dissenters}, the result says {result['dissenters']}")
    quality, ranking = quality_ranking(votes, task["quality_rule"], higher, dissenters)
    if not ranking or result["ranking"] != ranking:
        raise Bad(f"the votes rank {ranking}, the result says {result['ranking']}")
    reason, eliminated = result["eliminated_reason"], result["eliminated"]
    if reason == "lowest-quality" and eliminated != ranking[-1]:
        raise Bad("the eliminated node is not the lowest-quality one")
    if reason == "outlier" and (eliminated not in quality or not is_outlier(quality, eliminated, higher)):
        raise Bad(f"the eliminated node {eliminated} is not an outlier")
    if reason == "dissenting-voter" and eliminated not in dissenters:
        raise Bad(f"the eliminated node {eliminated} did not dissent in this round")
    eligible = [n for n in ranking if n not in chain.excluded]
    if not 0 <= block["rank"] < len(eligible) or eligible[block["rank"]] != block["proposer"]:
        raise Bad(f"proposer {block['proposer']} is not at place {block['rank']} of the PoQ ranking {eligible}")

    records = envs["reward"] + envs["final"]
    if sorted(result["records"]) != sorted(r["digest"] for r in records):
        raise Bad("the reward/final records are not exactly those the result lists")
    if any(r["sender"] != task["coordinator"] or r["round"] != round_no for r in records):
        raise Bad("a record is not from the task's coordinator for this round")
    if len(envs["reward"]) != 1:
        raise Bad("a round block holds exactly one reward record")
    rewards = field(envs["reward"][0]["body"], "rewards", mapping_of(is_number))
    finals = envs["final"]
    for env in finals:
        field(env["body"], "model_digest", text)
        field(env["body"], "metric", text, "")
        field(env["body"], "value", lambda v: v is None or is_number(v), None)
    if any(n not in ranking or v < 0 for n, v in rewards.items()):
        raise Bad("rewards go to unranked nodes or are negative")
    if any(rewards.get(n, 0) > 0 for n in dissenters):
        raise Bad("a dissenting voter is paid")
    total = 0.0
    for amount in rewards.values():  # left to right, in the order the body lists them
        total += float(amount)
    if total > task["reward_per_round"] * (1 + REWARD_SLACK) + REWARD_SLACK:
        raise Bad("rewards exceed the task's reward per round")
    if len(finals) != int(result["final"]):
        raise Bad("a final-model record belongs in exactly the final round")
    if finals and finals[0]["body"]["model_digest"] != result["global_digest"]:
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
                if merkle_root(block["txs"]) != block["merkle_root"]:
                    raise Bad("Merkle root does not match")
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
            except (Bad, KeyError, TypeError, ValueError, IndexError, ArithmeticError, struct.error) as exc:
                raise Bad(f"height {height}: {exc}") from exc
            prev = block["hash"]
            chain.hashes.append(prev)
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
