"""Every input the fuzzer kept (tests/fuzz/corpus/) goes through its target again on each test run:
only the project's own refusal errors may come out (a regression net for past fuzz findings), and
the block corpus must really reach ``validate_block`` on the fuzz chain (tests/fuzz/fixtures.py),
not stop at the decoder or at an unknown parent. Run with ``-rP`` to see the counts."""

import pytest

from ledger.errors import InvalidBlock
from ledger.validate import validate_block, validate_genesis
from tests.fuzz import fixtures as fx
from tests.fuzz.fuzz_decoders import ACCEPTED, INVALID, REFUSED, TARGET_NAMES, replay, summary


@pytest.mark.parametrize("name", TARGET_NAMES)
def test_corpus_inputs_are_refused_cleanly_or_accepted(name):
    outcomes = replay(name)  # anything but the project's own refusal errors fails here
    report = summary(outcomes)
    print(f"{name} corpus: {report}")
    seeds = {n: o for n, o in outcomes.items() if n.startswith("seed-")}
    assert seeds, f"no seed inputs for {name}: run python -m tests.fuzz.fuzz_decoders seed"
    refused = INVALID if name == "block" else REFUSED
    expected = {n: ACCEPTED if n.startswith("seed-accept-") else refused for n in seeds}
    wrong = {n: o for n, o in seeds.items() if o.stage != expected[n]}
    assert not wrong, f"seed inputs of {name} that did not end as their name says: {wrong}\n{report}"


def test_block_corpus_reaches_validate_block():
    outcomes = replay("block")
    report = summary(outcomes)
    print(f"block corpus: {report}")
    reached = sum(o.reached_validate_block for o in outcomes.values())
    accepted = sum(o.stage == ACCEPTED for o in outcomes.values())
    assert reached, f"no entry reached validate_block: the corpus is not signed for the fuzz chain\n{report}"
    deep = sum(o.past_proposer_check for o in outcomes.values())
    assert deep, f"no entry got past the proposer's signature check in validate_block\n{report}"
    print(f"reached validate_block: {reached} of {len(outcomes)}; accepted {accepted}; past the signature: {deep}")


def test_the_count_is_not_vacuous_on_a_chain_of_other_keys_no_block_reaches_validate_block():
    """The same corpus against the chain of another seed: nothing extends that genesis."""
    outcomes = replay("block", seed="another seed")
    assert not any(o.reached_validate_block for o in outcomes.values()), summary(outcomes)
    assert not any(o.stage == ACCEPTED for o in replay("envelope", seed="another seed").values())


def test_negative_control_a_tampered_block_is_refused_with_its_own_reason():
    c = fx.make_chain()
    state = validate_genesis(c.genesis)
    good = fx.round_block(c)
    validate_block(good, state.copy())  # the untampered block is valid: what follows is the tampering
    proposer = c.agents[good.proposer]

    merkle = fx.resign(good, proposer, merkle_root="00" * 32)  # re-signed: the signature still verifies
    with pytest.raises(InvalidBlock) as refused:
        validate_block(merkle, state.copy())
    assert refused.value.height == 1 and refused.value.reason == "Merkle root does not match the transactions"

    rank = fx.resign(good, proposer, rank=1)  # node-01 claims the fallback place, which is node-02's
    with pytest.raises(InvalidBlock) as refused:
        validate_block(rank, state.copy())
    assert refused.value.reason == "proposer node-01 at rank 1, but that place is node-02"
