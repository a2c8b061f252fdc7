"""The worked examples of docs/PROTOCOL.md, built from the layout that page documents.

    python docs/protocol_examples.py           print the examples section (Markdown)
    python docs/protocol_examples.py --check   exit 1 unless docs/PROTOCOL.md holds exactly that section
    python docs/protocol_examples.py --write   rewrite that section of docs/PROTOCOL.md

Like docs/verify_replica.py this uses only the Python standard library and pynacl and shares no code
with the project: every byte below is assembled from the tables of PROTOCOL.md, so the examples
check the document, not the project against itself. tests/test_protocol_examples.py feeds the
bytes to the project's decoders and validators, and fails when the page and this output differ.

Everything is reproducible: keys come from fixed seeds (seed = SHA-256 of "bpcv-example/" + node id),
timestamps and nonces are fixed, and Ed25519 signatures are deterministic.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from pathlib import Path

from nacl.signing import SigningKey

DOC = Path(__file__).resolve().parent / "PROTOCOL.md"
BEGIN = "<!-- protocol_examples.py: begin (generated; edit docs/protocol_examples.py, then run it with --write) -->"
END = "<!-- protocol_examples.py: end -->"

CHAIN = "example"
ZERO_HASH = "00" * 32
GENESIS_TS, REGISTRATION_TS, VOTE_TS = 1700000000.0, 1700000060.5, 1700000123.4567
GENESIS_NONCE = "000102030405060708090a0b"
VOTE_NONCE = "0c0d0e0f1011121314151617"
REGISTER_NONCE = "18191a1b1c1d1e1f20212223"
MEMBERS = {"admin": "admin", "node-01": "agent", "node-02": "agent"}
NEWCOMER = ("node-03", "agent")


# --- the layout, as PROTOCOL.md gives it ------------------------------------------------------------


def seed(node_id: str) -> bytes:
    return hashlib.sha256(f"bpcv-example/{node_id}".encode()).digest()


def key(node_id: str) -> SigningKey:
    return SigningKey(seed(node_id))


def public_hex(node_id: str) -> str:
    return bytes(key(node_id).verify_key).hex()


def canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def ms(ts: float) -> float:
    """A timestamp as written: rounded to the millisecond (Python round(ts, 3))."""
    return round(float(ts), 3)


def envelope(signer: str, kind: str, task: str, round_no: int, body: dict, ts: float, nonce: str) -> bytes:
    """magic, version 2, hlen, canonical JSON header, nblobs (0 here), and the Ed25519 signature of the tag
    b"BPCV-envelope-v2 sha256:" + SHA-256 of all before it."""
    header = canonical_json(
        {"body": body, "nonce": nonce, "round": round_no, "sender": signer, "task": task, "ts": ms(ts), "type": kind}
    )
    signed = b"BPCV" + b"\x02" + struct.pack(">I", len(header)) + header + struct.pack(">H", 0)
    return signed + key(signer).sign(b"BPCV-envelope-v2 sha256:" + hashlib.sha256(signed).digest()).signature


def merkle_root(txs: list[bytes]) -> str:
    level = [hashlib.sha256(b"\x00" + tx).digest() for tx in txs]
    if not level:
        return hashlib.sha256(b"").hexdigest()
    while len(level) > 1:
        paired = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        level = paired + ([level[-1]] if len(level) % 2 else [])
    return level[0].hex()


def block(proposer: str, height: int, prev_hash: str, task: str, round_no: int, rank: int, ts: float, txs: list[bytes]):
    """magic, version, hlen, canonical JSON header, ntx, (length + tx)*, the proposer's signature of the header."""
    header = canonical_json(
        {
            "height": height,
            "merkle_root": merkle_root(txs),
            "prev_hash": prev_hash,
            "proposer": proposer,
            "rank": rank,
            "round": round_no,
            "task": task,
            "ts": ms(ts),
            "tx_count": len(txs),
        }
    )
    body = b"".join(struct.pack(">I", len(tx)) + tx for tx in txs)
    raw = b"BPBK" + b"\x01" + struct.pack(">I", len(header)) + header + struct.pack(">I", len(txs)) + body
    return raw + key(proposer).sign(header).signature


def header_of(raw: bytes) -> bytes:
    (hlen,) = struct.unpack_from(">I", raw, 5)
    return raw[9 : 9 + hlen]


def block_hash(raw: bytes) -> str:
    """A block's hash: SHA-256 of its header bytes (not of the whole block)."""
    return hashlib.sha256(header_of(raw)).hexdigest()


# --- the examples -----------------------------------------------------------------------------------


def examples() -> dict[str, bytes]:
    """The example messages and blocks, by name: genesis_tx, genesis (the genesis.bin file), vote,
    register, registration (the block at height 1 holding the register transaction)."""
    members = {node: {"key": public_hex(node), "role": role} for node, role in MEMBERS.items()}
    genesis_tx = envelope(
        "admin", "genesis", "", 0, {"chain": CHAIN, "members": members, "params": {}}, GENESIS_TS, GENESIS_NONCE
    )
    genesis = block("admin", 0, ZERO_HASH, "", 0, 0, GENESIS_TS, [genesis_tx])
    vote_body = {
        "digests": {"node-02": hashlib.sha256(b"example model of node-02").hexdigest()},
        "epsilon_spent": None,
        "metric": "accuracy",
        "scores": {"node-02": 0.9125},
    }
    vote = envelope("node-01", "vote", "t1", 1, vote_body, VOTE_TS, VOTE_NONCE)
    node, role = NEWCOMER
    register_body = {"key": public_hex(node), "node": node, "role": role}
    register = envelope("admin", "register", "", 0, register_body, REGISTRATION_TS, REGISTER_NONCE)
    registration = block("admin", 1, block_hash(genesis), "", 0, 0, REGISTRATION_TS, [register])
    return {
        "genesis_tx": genesis_tx,
        "genesis": genesis,
        "vote": vote,
        "register": register,
        "registration": registration,
    }


# --- rendering --------------------------------------------------------------------------------------


def _hex_lines(offset: int, label: str, data: bytes, note: str = "") -> list[str]:
    """One field: offset, name, its bytes in hex, 32 bytes a line."""
    chunks = [data[i : i + 32].hex() for i in range(0, len(data), 32)] or [""]
    lines = [f"{offset:04x}  {label:<9} {chunks[0]}{'  ' + note if note else ''}".rstrip()]
    lines += [f"{'':<16}{c}" for c in chunks[1:]]
    return lines


def dump_envelope(raw: bytes) -> list[str]:
    (hlen,) = struct.unpack_from(">I", raw, 5)
    pos = 9 + hlen
    lines = _hex_lines(0, "magic", raw[0:4], '"BPCV"') + _hex_lines(4, "version", raw[4:5])
    lines += _hex_lines(5, "hlen", raw[5:9], f"= {hlen}") + _hex_lines(9, "header", raw[9:pos])
    lines += _hex_lines(pos, "nblobs", raw[pos : pos + 2], "= 0")
    lines += _hex_lines(pos + 2, "sig", raw[pos + 2 :])
    return lines


def dump_block(raw: bytes, tx_names: list[str]) -> list[str]:
    (hlen,) = struct.unpack_from(">I", raw, 5)
    pos = 9 + hlen
    (ntx,) = struct.unpack_from(">I", raw, pos)
    lines = _hex_lines(0, "magic", raw[0:4], '"BPBK"') + _hex_lines(4, "version", raw[4:5])
    lines += _hex_lines(5, "hlen", raw[5:9], f"= {hlen}") + _hex_lines(9, "header", raw[9:pos])
    lines += _hex_lines(pos, "ntx", raw[pos : pos + 4], f"= {ntx}")
    pos += 4
    for name in tx_names:
        (tlen,) = struct.unpack_from(">I", raw, pos)
        lines += _hex_lines(pos, "txlen", raw[pos : pos + 4], f"= {tlen}")
        lines += [f"{pos + 4:04x}  tx        ({tlen} bytes: the {name} envelope above, byte for byte)"]
        pos += 4 + tlen
    lines += _hex_lines(pos, "sig", raw[pos:], "(Ed25519 over the header bytes only)")
    return lines


def _fence(lines: list[str], lang: str = "text") -> list[str]:
    return [f"```{lang}", *lines, "```"]


FLOATS = [0.1, 0.9125, 100.0, 100.000001, 1e-07, 0.0001, 1e-05, 1e16, 123456789.0, -0.0, 1700000123.457]
INTS = [0, 100, -3]


def render() -> str:
    ex = examples()
    g_header, r_header = header_of(ex["genesis"]), header_of(ex["registration"])
    vote_header = header_of(ex["vote"])
    out: list[str] = [BEGIN, "", "### Keys of the examples", ""]
    out += [
        "Each example member's Ed25519 seed is SHA-256 of the ASCII text `bpcv-example/` + its id (so",
        "`admin`'s seed is SHA-256(`bpcv-example/admin`)); Ed25519 signatures are deterministic, so every",
        "byte below is reproducible: `python docs/protocol_examples.py` prints this section again.",
        "",
        "| id | role | seed | public key |",
        "|---|---|---|---|",
    ]
    for node, role in [*MEMBERS.items(), NEWCOMER]:
        where = "genesis" if node in MEMBERS else "registered at height 1"
        out.append(f"| `{node}` | {role} ({where}) | `{seed(node).hex()}` | `{public_hex(node)}` |")

    out += ["", "### A vote envelope", ""]
    out += [
        f"`node-01` scores `node-02` in round 1 of task `t1`; the time {VOTE_TS} is written rounded to the",
        f"millisecond ({ms(VOTE_TS)!r}); the nonce is fixed. Header (the {len(vote_header)} ASCII bytes signed,",
        "with everything before the signature, through the tag and SHA-256 of version 2):",
        "",
    ]
    out += _fence([vote_header.decode()], "json")
    vote_digest = hashlib.sha256(ex["vote"]).hexdigest()
    out += ["", f"Bytes ({len(ex['vote'])}); digest (SHA-256 of all of them) `{vote_digest}`:", ""]
    out += _fence(dump_envelope(ex["vote"]))

    out += ["", "### The genesis block (the consortium's `genesis.bin`)", ""]
    out += [
        f"`genesis.bin` is the genesis block's bytes, exactly ({len(ex['genesis'])} bytes here). Its one",
        f"transaction is this `genesis` envelope ({len(ex['genesis_tx'])} bytes), signed by `admin`:",
        "",
    ]
    out += _fence([header_of(ex["genesis_tx"]).decode()], "json")
    out += ["", "Envelope bytes:", ""] + _fence(dump_envelope(ex["genesis_tx"]))
    out += ["", "The block header (signed by `admin`, the proposer):", ""]
    out += _fence([g_header.decode()], "json")
    out += ["", "Block bytes:", ""] + _fence(dump_block(ex["genesis"], ["genesis"]))
    out += [
        "",
        f"- Merkle root (one leaf): SHA-256(`00` ‖ genesis envelope) = `{merkle_root([ex['genesis_tx']])}`.",
        f"- **Genesis hash** = SHA-256 of the header bytes (offset 9, length hlen) = `{block_hash(ex['genesis'])}`.",
        f"- It is *not* SHA-256 of the file, which is `{hashlib.sha256(ex['genesis']).hexdigest()}`.",
    ]

    out += ["", "### A registration: transaction and block", ""]
    out += [
        "`admin` admits `node-03` as an agent: a `register` envelope (task `\"\"`, round 0) in a",
        "registration block at height 1 on the genesis (task `\"\"`, round 0, rank 0, proposer `admin`).",
        "",
    ]
    out += _fence([header_of(ex["register"]).decode()], "json")
    out += ["", f"Envelope bytes ({len(ex['register'])}):", ""] + _fence(dump_envelope(ex["register"]))
    out += ["", "Block header:", ""] + _fence([r_header.decode()], "json")
    out += ["", f"Block bytes ({len(ex['registration'])}):", ""] + _fence(dump_block(ex["registration"], ["register"]))
    out += [
        "",
        f"- Merkle root: SHA-256(`00` ‖ register envelope) = `{merkle_root([ex['register']])}`.",
        f"- Block hash: `{block_hash(ex['registration'])}`.",
    ]

    leaves = [b"a", b"b", b"c"]
    la, lb, lc = (hashlib.sha256(b"\x00" + x).digest() for x in leaves)
    ab = hashlib.sha256(b"\x01" + la + lb).digest()
    out += ["", "### A Merkle root of three transactions", ""]
    out += [
        "For transactions (here, for brevity, not envelopes) `61`, `62`, `63` (`a`, `b`, `c`):",
        "",
        f"- leaves: `{la.hex()}`, `{lb.hex()}`, `{lc.hex()}`;",
        f"- level 1: SHA-256(`01` ‖ leaf a ‖ leaf b) = `{ab.hex()}`, and leaf c carried up unchanged;",
        f"- root: SHA-256(`01` ‖ that ‖ leaf c) = `{merkle_root(leaves)}`.",
        f"- No transactions: SHA-256 of nothing = `{merkle_root([])}`.",
    ]

    out += ["", "### Numbers in canonical JSON", ""]
    out += ["| value | canonical JSON text |", "|---|---|"]
    out += [f"| float {v!r} | `{canonical_json(v).decode()}` |" for v in FLOATS]
    out += [f"| int {v!r} | `{canonical_json(v).decode()}` |" for v in INTS]
    out += [f"| round({VOTE_TS!r}, 3) | `{canonical_json(ms(VOTE_TS)).decode()}` |"]
    out += ["", END]
    return "\n".join(out)


def section_of(text: str) -> str | None:
    """The generated section of a PROTOCOL.md text (markers included), or None if it has none."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return None
    return text[start : end + len(END)]


def main(argv: list[str]) -> int:
    section = render()
    if not argv:
        print(section)
        return 0
    text = DOC.read_text()
    current = section_of(text)
    if argv[0] == "--check":
        if current != section:
            print(f"{DOC}: the examples section differs from `python docs/protocol_examples.py`", file=sys.stderr)
            return 1
        print("docs/PROTOCOL.md examples: up to date")
        return 0
    if argv[0] == "--write":
        if current is None:
            raise SystemExit(f"{DOC} has no examples section (markers {BEGIN!r} ... {END!r})")
        DOC.write_text(text.replace(current, section))
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
