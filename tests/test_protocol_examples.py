"""docs/PROTOCOL.md's worked examples cannot rot: the hex printed there is exactly what
docs/protocol_examples.py builds from the documented layout (stdlib + pynacl, no project code), and
the project's own decoders and validators accept those bytes and refuse them with one byte flipped."""

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from bpcv.envelope import canonical_json, decode, open_envelope
from bpcv.errors import Rejected
from bpcv.identity import Identity
from bpcv.poq import quality_scores, rank_nodes
from ledger.block import ZERO_HASH, build_block, decode_block
from ledger.errors import CorruptStore, InvalidBlock
from ledger.replica import Replica
from ledger.validate import validate_block, validate_genesis

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _load_generator():
    spec = importlib.util.spec_from_file_location("protocol_examples", DOCS / "protocol_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()
EX = gen.examples()


def flipped(raw: bytes, offset: int) -> bytes:
    out = bytearray(raw)
    out[offset] ^= 0x01
    return bytes(out)


def identity(node_id: str) -> Identity:
    return Identity(node_id, SigningKey(gen.seed(node_id)))


# (a) the page holds exactly what the generator builds


def test_protocol_md_holds_exactly_the_generated_examples():
    assert gen.section_of((DOCS / "PROTOCOL.md").read_text()) == gen.render(), (
        "docs/PROTOCOL.md's examples differ from docs/protocol_examples.py: run it with --write and review"
    )


def test_one_changed_hex_digit_in_the_page_is_caught():
    """The check above can fail: one hex digit of the vote's signature changed in the page's text."""
    text = (DOCS / "PROTOCOL.md").read_text()
    sig_hex = EX["vote"][-64:][:32].hex()
    assert text.count(sig_hex) == 1
    changed = sig_hex[:-1] + ("0" if sig_hex[-1] != "0" else "1")
    assert gen.section_of(text.replace(sig_hex, changed)) != gen.render()


def test_the_generator_imports_only_the_standard_library_and_pynacl():
    imported = set()
    for node in ast.walk(ast.parse((DOCS / "protocol_examples.py").read_text())):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported - set(sys.stdlib_module_names) == {"nacl"}


# (b) the project accepts the documented bytes, and refuses them with one byte flipped


@pytest.fixture
def genesis_state():
    return validate_genesis(decode_block(EX["genesis"]))


def test_the_project_accepts_the_genesis_and_its_hash_is_that_of_the_header(genesis_state):
    block = decode_block(EX["genesis"])
    assert block.hash == gen.block_hash(EX["genesis"]) == genesis_state.head_hash
    assert block.header_bytes == gen.header_of(EX["genesis"])
    assert genesis_state.chain_id == gen.CHAIN and genesis_state.height == 0
    assert {n: genesis_state.registry.get(n).role for n in genesis_state.registry.ids()} == gen.MEMBERS


def test_the_project_opens_the_vote(genesis_state):
    env = open_envelope(EX["vote"], genesis_state.registry, roles=("agent",))
    assert (env.type, env.sender, env.task, env.round, env.ts) == ("vote", "node-01", "t1", 1, 1700000123.457)
    assert env.body["scores"] == {"node-02": 0.9125} and env.blobs == ()
    assert decode(EX["vote"]).digest == gen.hashlib.sha256(EX["vote"]).hexdigest()


def test_the_project_accepts_the_registration_block(genesis_state):
    block = decode_block(EX["registration"])
    effects = validate_block(block, genesis_state)
    [member] = effects.members
    assert (member.node_id, member.role, member.public_key.hex()) == ("node-03", "agent", gen.public_hex("node-03"))
    replica = Replica.open(None, EX["genesis"])
    replica.append(EX["registration"])
    assert replica.height == 1 and replica.head_hash == gen.block_hash(EX["registration"])
    assert replica.state.registry.get("node-03").role == "agent"


def test_the_project_builds_the_same_bytes_from_the_same_inputs():
    """The documented layout is the project's: its block builder and JSON encoder give the same bytes."""
    admin = identity("admin")
    assert admin.public_key.hex() == gen.public_hex("admin")
    assert build_block(admin, 0, ZERO_HASH, "", 0, [EX["genesis_tx"]], ts=gen.GENESIS_TS).raw == EX["genesis"]
    height1 = build_block(admin, 1, gen.block_hash(EX["genesis"]), "", 0, [EX["register"]], ts=gen.REGISTRATION_TS)
    assert height1.raw == EX["registration"]
    for name in ("vote", "genesis_tx", "register"):
        header = gen.header_of(EX[name])
        assert canonical_json(json.loads(header)) == header


def _offset(raw: bytes, marker: bytes) -> int:
    assert raw.count(marker) == 1
    return raw.index(marker)


@pytest.mark.parametrize(
    "where,reason",
    [("nonce", "bad-signature"), ("signature", "bad-signature"), ("magic", "malformed"), ("hlen", "malformed")],
)
def test_a_vote_with_one_byte_flipped_is_refused(genesis_state, where, reason):
    raw = EX["vote"]
    offset = {"nonce": _offset(raw, b"0c0d0e0f"), "signature": len(raw) - 1, "magic": 0, "hlen": 8}[where]
    with pytest.raises(Rejected) as refused:
        open_envelope(flipped(raw, offset), genesis_state.registry, roles=("agent",))
    assert refused.value.reason == reason


@pytest.mark.parametrize(
    "where,message",
    [
        ("header ts", "signature"),
        ("transaction", "Merkle root"),
        ("signature", "signature"),
        ("version", "BPBK"),
    ],
)
def test_a_registration_block_with_one_byte_flipped_is_refused(genesis_state, where, message):
    raw = EX["registration"]
    offset = {
        "header ts": _offset(raw, b'"ts":1700000060.5,"tx_count"') + 6,
        "transaction": _offset(raw, b"18191a1b"),
        "signature": len(raw) - 1,
        "version": 4,
    }[where]
    with pytest.raises((InvalidBlock, CorruptStore), match=message):
        validate_block(decode_block(flipped(raw, offset)), genesis_state)


@pytest.mark.parametrize("where", ["member key", "header prev_hash", "signature"])
def test_a_genesis_with_one_byte_flipped_is_refused(where):
    raw = EX["genesis"]
    offset = {
        "member key": _offset(raw, gen.public_hex("node-02").encode()),
        "header prev_hash": _offset(raw, b'"prev_hash":"0000') + 14,
        "signature": len(raw) - 1,
    }[where]
    with pytest.raises((InvalidBlock, CorruptStore)):
        validate_genesis(decode_block(flipped(raw, offset)))


def test_the_third_party_verifier_accepts_the_example_chain(tmp_path):
    replica = Replica.open(tmp_path / "chain", EX["genesis"])
    replica.append(EX["registration"])
    replica.close()
    genesis_hash = gen.block_hash(EX["genesis"])
    done = subprocess.run(
        [sys.executable, str(DOCS / "verify_replica.py"), str(tmp_path / "chain"), "--genesis-hash", genesis_hash],
        capture_output=True,
        text=True,
        timeout=60,
    )
    head = gen.block_hash(EX["registration"])
    assert done.returncode == 0 and done.stdout.split() == ["OK", "height", "1", "head", head], done.stdout
    assert done.stderr == ""


# the page's worked numbers for proof of quality


def test_ranking_uses_unrounded_quality_and_ties_in_the_rounded_values_can_reorder():
    votes = {"node-03": {"node-01": 0.9000001, "node-02": 0.9000004}}
    quality = quality_scores(votes, "mean")
    assert rank_nodes(quality, "accuracy") == ["node-02", "node-01"]
    rounded = {n: round(q, 6) for n, q in quality.items()}
    assert rounded == {"node-01": 0.9, "node-02": 0.9}
    assert rank_nodes(rounded, "accuracy") == ["node-01", "node-02"]


def test_mean_is_the_correctly_rounded_sum_over_the_count_and_an_even_median_averages_the_middle_two():
    votes = {v: {"node-09": s} for v, s in (("node-01", 0.1), ("node-02", 0.2), ("node-03", 0.3))}
    assert quality_scores(votes, "mean")["node-09"] == 0.19999999999999998 != (0.1 + 0.2 + 0.3) / 3
    two = {"node-01": {"node-09": 0.2}, "node-02": {"node-09": 0.1}}
    assert quality_scores(two, "median")["node-09"] == 0.15000000000000002
