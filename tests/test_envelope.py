"""The signed envelope: round trips, and every kind of bad input rejected with its reason."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpcv.envelope import decode, open_envelope, seal
from bpcv.errors import Rejected
from bpcv.identity import Identity, Registry

ALICE = Identity.generate("alice")
MALLORY = Identity.generate("mallory")
REGISTRY = Registry.from_body({"alice": {"key": ALICE.public_key.hex(), "role": "agent"}})

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(
    body=st.dictionaries(st.text(max_size=8), json_values, max_size=5),
    blobs=st.lists(st.binary(max_size=64), max_size=3),
    round_no=st.integers(0, 10**6),
)
def test_seal_then_open_round_trips(body, blobs, round_no):
    env = seal(ALICE, "vote", "task-1", round_no, body, blobs)
    opened = open_envelope(env.raw, REGISTRY)
    assert (opened.type, opened.task, opened.round, opened.sender) == ("vote", "task-1", round_no, "alice")
    assert opened.body == body and list(opened.blobs) == blobs
    assert opened.digest == env.digest


def test_a_flipped_byte_anywhere_breaks_the_signature_or_the_structure():
    env = seal(ALICE, "update", "t", 1, {"x": 1}, [b"\x01\x02\x03" * 10])
    for i in range(0, len(env.raw), 7):
        tampered = bytearray(env.raw)
        tampered[i] ^= 0x01
        with pytest.raises(Rejected) as info:
            open_envelope(bytes(tampered), REGISTRY)
        assert info.value.reason in ("bad-signature", "malformed", "unknown-sender")


def _version_1(env_raw: bytes, identity: Identity) -> bytes:
    """The same envelope as version 1 wrote it: the signature over the bytes themselves."""
    signed = env_raw[:4] + b"\x01" + env_raw[5:-64]
    return signed + identity.sign(signed)


def test_version_2_signs_a_tagged_digest_and_version_1_envelopes_stored_before_it_still_open():
    """Sealing signs b"BPCV-envelope-v2 sha256:" + SHA-256 of the bytes (a 407 kB update verifies 6x
    faster); envelopes of version 1 (signed over their bytes, as chains stored them) open as before; a
    signature does not carry over from one version to the other, nor to other blob bytes."""
    import hashlib

    from bpcv.identity import verify_signature

    env = seal(ALICE, "update", "t", 1, {"x": 1}, [bytes(range(256)) * 400])
    assert env.raw[4] == 2
    signed = env.raw[:-64]
    tagged = b"BPCV-envelope-v2 sha256:" + hashlib.sha256(signed).digest()
    assert verify_signature(ALICE.public_key, tagged, env.raw[-64:])
    assert not verify_signature(ALICE.public_key, signed, env.raw[-64:])
    old = _version_1(env.raw, ALICE)
    assert open_envelope(old, REGISTRY).blobs == env.blobs == open_envelope(env.raw, REGISTRY).blobs
    relabelled = [env.raw[:4] + b"\x01" + env.raw[5:], old[:4] + b"\x02" + old[5:]]
    middle = len(env.raw) // 2
    relabelled.append(env.raw[:middle] + bytes([env.raw[middle] ^ 1]) + env.raw[middle + 1 :])
    for raw in relabelled:
        with pytest.raises(Rejected, match="bad-signature"):
            open_envelope(raw, REGISTRY)
    with pytest.raises(Rejected, match="unsupported envelope version 3"):
        decode(env.raw[:4] + b"\x03" + env.raw[5:])


def test_signed_by_someone_else_is_a_bad_signature():
    forged = seal(Identity(ALICE.node_id, MALLORY.signing_key), "vote", "t", 1, {})
    with pytest.raises(Rejected, match="bad-signature"):
        open_envelope(forged.raw, REGISTRY)


def test_unknown_sender_and_wrong_role_are_named():
    with pytest.raises(Rejected, match="unknown-sender"):
        open_envelope(seal(MALLORY, "vote", "t", 1, {}).raw, REGISTRY)
    with pytest.raises(Rejected, match="wrong-role"):
        open_envelope(seal(ALICE, "result", "t", 1, {}).raw, REGISTRY, roles=("coordinator",))


def test_oversize_is_refused_before_decoding():
    env = seal(ALICE, "update", "t", 1, {}, [b"\0" * 5000])
    with pytest.raises(Rejected, match="oversize"):
        decode(env.raw, max_bytes=1000)


@pytest.mark.parametrize("raw", [b"", b"BPCV", b"XXXX" + b"\0" * 100, seal(ALICE, "v", "t", 1, {}).raw[:-70]])
def test_truncated_or_foreign_bytes_are_malformed(raw):
    with pytest.raises(Rejected, match="malformed"):
        decode(raw)


def test_typed_bodies_name_the_bad_field_and_refuse_numbers_that_could_overflow():
    from bpcv.messages import Result, Reward, Vote, read, seal_message

    good = Vote({"node-02": 0.5}, "accuracy", {"node-02": "ab"})
    env = seal_message(ALICE, good, "t", 1)
    assert read(env, Vote) == good and env.body == {
        "metric": "accuracy",
        "scores": {"node-02": 0.5},
        "digests": {"node-02": "ab"},
        "epsilon_spent": None,
    }  # the bytes the protocol has always carried
    for bad, field in (
        ({"metric": "accuracy"}, "'scores' is missing"),
        ({"scores": {"node-02": "high"}}, "'scores' is not a map"),
        ({"scores": {"node-02": 10**400}}, "'scores' is not a map"),  # float() of it would raise OverflowError
        ({"scores": {"a": 1e308, "b": 1e308}}, "'scores' is not a map"),  # their sum would overflow
        ({"scores": {"node-02": True}}, "'scores' is not a map"),
        ({"scores": {}, "epsilon_spent": "1"}, "'epsilon_spent' is not a finite number"),
    ):
        with pytest.raises(Rejected, match=f"vote: field {field}"):
            read(seal(ALICE, "vote", "t", 1, bad), Vote)
    with pytest.raises(Rejected, match="wrong-type"):
        read(env, Result)
    with pytest.raises(Rejected, match="reward: field 'rewards' is not a map"):
        Reward.from_body({"rewards": {"node-01": -(10**20)}})


def test_resend_to_is_written_only_when_asking_again_and_read_back():
    from bpcv.messages import GlobalModel, Manifest

    first, again = GlobalModel(["a"], "00"), GlobalModel(["a"], "00", ("a",))
    assert "resend_to" not in first.to_body() and again.to_body()["resend_to"] == ["a"]
    assert GlobalModel.from_body(first.to_body()) == first and GlobalModel.from_body(again.to_body()) == again
    with pytest.raises(Rejected, match="manifest: field 'resend_to' is not a list of strings"):
        Manifest.from_body({"updates": {}, "resend_to": "a"})
