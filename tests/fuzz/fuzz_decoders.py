"""Coverage-guided fuzzing (atheris / libFuzzer) of every decoder that reads bytes from the network or disk.

    .venv/bin/pip install atheris                        # or: pip install -e ".[fuzz]"
    .venv/bin/python -m tests.fuzz.fuzz_decoders seed    # (re)write the seed corpus (same bytes every time)
    .venv/bin/python -m tests.fuzz.fuzz_decoders report  # how far each corpus entry gets (no atheris needed)
    .venv/bin/python -m tests.fuzz.fuzz_decoders block tests/fuzz/corpus/block -max_total_time=600

Targets: ``envelope`` (decode + signature check), ``model`` (tensor codec with expected shapes),
``vote`` (envelope decode, the typed vote body, its scores against the registry), ``block``
(``Replica.append`` on a fresh replica of the fuzz chain: block decode, then ``validate_block`` for
a block that extends the genesis). The consortium, its genesis and so the corpus are fixed by the
seed string in tests/fuzz/fixtures.py; ``seed OTHER`` writes the seeds for the chain of another
seed string (the corpus test must then fail: nothing reaches ``validate_block``).

A target may only refuse input with the project's own error types (``Rejected`` for messages,
``LedgerError`` for blocks); anything else is a crash that libFuzzer reports with the input that
caused it. Each target returns an ``Outcome``: how far the input got and, when refused, why, so the
corpus test can count how many entries reach ``validate_block`` and how many it accepts.
Results of the committed runs: docs/BENCHMARKS.md.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"
TARGET_NAMES = ("envelope", "model", "vote", "block")

# How far an input got, in order. Messages stop at "refused" or "accepted"; a block is "undecodable",
# "unknown-parent" (decoded, but not a child of the replica's head: validate_block never sees it),
# "invalid" (validate_block raised InvalidBlock) or "accepted" (validated and stored).
REFUSED, UNDECODABLE, UNKNOWN_PARENT = "refused", "undecodable", "unknown-parent"
INVALID, ACCEPTED = "invalid", "accepted"


# validate_block's refusals that come before (or are) the proposer's signature check
_BEFORE_SIGNATURE = re.compile(
    r"^(height |previous hash |Merkle root "
    r"|proposer '.*' is not a registered|proposer \S+ has role|proposer signature )"
)


@dataclass(frozen=True)
class Outcome:
    stage: str
    reason: str = ""  # the refusal's message, as raised

    @property
    def reached_validate_block(self) -> bool:
        return self.stage in (INVALID, ACCEPTED)

    @property
    def past_proposer_check(self) -> bool:
        """Validated past the frame (height, parent, Merkle root) and the proposer's registration and signature."""
        return self.stage == ACCEPTED or (self.stage == INVALID and not _BEFORE_SIGNATURE.match(self.reason))

    @property
    def kind(self) -> str:
        """The reason with node ids, numbers and hashes blanked, for counting refusals by kind."""
        text = re.sub(r"[0-9a-f]{16,}…?", "<hash>", self.reason)
        text = re.sub(r"\[[^\]]*\]", "[…]", text)
        text = re.sub(r"[0-9]+(\.[0-9]+)?", "N", text)
        return f"{self.stage}: {text}" if text else self.stage


def write_seeds(seed: str | None = None, corpus: Path = CORPUS) -> dict[str, int]:
    """(Re)write every ``seed-*`` file of the corpus from the fuzz chain; the fuzzer's own finds stay."""
    from tests.fuzz.fixtures import SEED

    files = seed_inputs(seed or SEED)
    written: dict[str, int] = {}
    for target in TARGET_NAMES:
        folder = corpus / target
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("seed-*"):
            old.unlink()
        for name, data in files[target].items():
            (folder / name).write_bytes(data)
        written[target] = len(files[target])
    return written


def seed_inputs(seed: str) -> dict[str, dict[str, bytes]]:
    """The seed corpus: valid messages and blocks of the fuzz chain, and one-rule mutations of them.

    An input named ``seed-accept-*`` must be accepted; one named ``seed-reject-*`` must be refused,
    a block by ``validate_block`` itself (tests/test_fuzz_corpus.py checks both)."""
    import numpy as np

    from bpcv.codec import encode_model
    from ledger.block import build_block
    from tests.fuzz import fixtures as fx

    c = fx.make_chain(seed)
    a1 = c.agents["node-01"]
    vote = fx.sealed(a1, "vote", "t1", 1, {"metric": "accuracy", "scores": fx.scores()["node-01"], "digests": {}})
    blob = encode_model([np.ones((3, 2), np.float32), np.zeros((2,), np.float32)])
    global_model = fx.sealed(c.coordinator, "global", "t1", 1, {"roster": list(c.agents)}, blobs=(blob,))
    good = fx.round_block(c)
    txs = list(good.txs)
    txs[1] = fx.flip_last_byte(txs[1])  # the first vote's signature
    bad_tx = build_block(a1, 1, c.genesis.hash, "t1", 1, txs, ts=fx.TS)
    blocks = {
        "seed-accept-round1": good,
        "seed-accept-fallback-rank1": fx.round_block(c, rank=1),
        "seed-accept-final-round": fx.round_block(c, final=True),
        "seed-accept-evidence": fx.round_block(
            c, extra_txs=(fx.equivocation_evidence(c, accused="node-03", sender="node-02").raw,)
        ),
        "seed-accept-registration": fx.registration_block(c),
        "seed-reject-merkle": fx.resign(good, a1, merkle_root="00" * 32),
        "seed-reject-rank": fx.round_block(c, rank=1, proposer="node-01"),
        "seed-reject-height": fx.round_block(c, height=2),
        "seed-reject-unregistered-proposer": fx.round_block(c, proposer="node-99"),
        "seed-reject-tx-signature": bad_tx,
        "seed-reject-no-task": fx.round_block(c, include_task=False),
        "seed-reject-missing-vote": fx.round_block(c, drop_vote=True),
        "seed-reject-ranking": fx.round_block(c, ranking=["node-02", "node-01", "node-03", "node-04"]),
        "seed-reject-vote-by-coordinator": fx.round_block(c, vote_from_coordinator=True),
        "seed-reject-rewards": fx.round_block(c, rewards={"node-01": 100.0, "node-02": 50.0}),
        "seed-reject-final-record": fx.round_block(c, final_record=True),
        "seed-reject-registration-by-agent": fx.registration_block(c, signer=a1),
    }
    raw_blocks = {name: b.raw for name, b in blocks.items()}
    raw_blocks["seed-reject-proposer-signature"] = fx.flip_last_byte(good.raw)
    bad_vote = fx.sealed(a1, "vote", "t1", 1, {"metric": "accuracy", "scores": {"node-99": 0.5}, "digests": {}})
    return {
        "envelope": {
            "seed-accept-vote": vote.raw,
            "seed-accept-task": c.task_env.raw,
            "seed-accept-global-with-blob": global_model.raw,
            "seed-reject-bad-signature": fx.flip_last_byte(vote.raw),
            "seed-reject-unknown-sender": fx.sealed(c.member("node-99"), "vote", "t1", 1, {"scores": {}}).raw,
        },
        "model": {
            "seed-accept-two-tensors": blob,
            "seed-reject-wrong-shape": encode_model([np.ones((2, 3), np.float32)]),
        },
        "vote": {"seed-accept-vote": vote.raw, "seed-reject-unknown-target": bad_vote.raw},
        "block": dict(sorted(raw_blocks.items())),
    }


def targets(seed: str | None = None) -> dict[str, Callable[[bytes], Outcome]]:
    """The fuzz targets as plain functions of bytes (also replayed over the corpus by the test suite)."""
    from bpcv.codec import decode_model
    from bpcv.envelope import decode, open_envelope
    from bpcv.errors import Rejected
    from bpcv.messages import Vote, read
    from bpcv.poq import vote_scores
    from ledger.block import decode_block
    from ledger.errors import CorruptStore, InvalidBlock, UnknownParent
    from ledger.replica import Replica
    from tests.fuzz.fixtures import SEED, make_chain

    genesis = make_chain(seed or SEED).genesis.raw
    registry = Replica.open(None, genesis).state.registry
    shapes = [(3, 2), (2,)]

    def envelope(data: bytes) -> Outcome:
        try:
            open_envelope(data, registry)
        except Rejected as exc:
            return Outcome(REFUSED, str(exc))
        return Outcome(ACCEPTED)

    def model(data: bytes) -> Outcome:
        try:
            decode_model(data, shapes)
        except Rejected as exc:
            return Outcome(REFUSED, str(exc))
        return Outcome(ACCEPTED)

    def vote(data: bytes) -> Outcome:
        try:
            vote_scores(read(decode(data), Vote), registry)
        except Rejected as exc:
            return Outcome(REFUSED, str(exc))
        return Outcome(ACCEPTED)

    def block(data: bytes) -> Outcome:
        try:
            decode_block(data)
        except CorruptStore as exc:
            return Outcome(UNDECODABLE, str(exc))
        replica = Replica.open(None, genesis)
        # Replica.append's contract: UnknownParent for a block that does not extend what it holds
        # (only the genesis here), else validate_block runs and InvalidBlock is its verdict.
        try:
            appended = replica.append(data)
        except UnknownParent as exc:
            return Outcome(UNKNOWN_PARENT, str(exc))
        except InvalidBlock as exc:
            return Outcome(INVALID, exc.reason)
        if appended is None or appended.status != "head" or replica.height != 1:
            raise AssertionError(f"a block that validated was not stored as the new head: {appended}")
        return Outcome(ACCEPTED)

    return {"envelope": envelope, "model": model, "vote": vote, "block": block}


def replay(target: str, corpus: Path = CORPUS, seed: str | None = None) -> dict[str, Outcome]:
    """Every corpus entry of ``target`` through its target: file name -> outcome."""
    run = targets(seed)[target]
    return {path.name: run(path.read_bytes()) for path in sorted((corpus / target).iterdir())}


def summary(outcomes: dict[str, Outcome]) -> str:
    """How many entries reached each stage, and the refusals counted by kind."""
    from collections import Counter

    stages = Counter(o.stage for o in outcomes.values())
    kinds = Counter(o.kind for o in outcomes.values() if o.stage != ACCEPTED)
    lines = [f"{len(outcomes)} entries; " + ", ".join(f"{s} {n}" for s, n in sorted(stages.items()))]
    if any(o.stage in (UNDECODABLE, UNKNOWN_PARENT, INVALID) for o in outcomes.values()):
        reached = sum(o.reached_validate_block for o in outcomes.values())
        deep = sum(o.past_proposer_check for o in outcomes.values())
        lines.append(f"reached validate_block: {reached}; of them past the proposer's signature check: {deep}")
    lines += [f"  {n:3d} x {k}" for k, n in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("seed", "report", *TARGET_NAMES):
        print(__doc__)
        sys.exit(2)
    if sys.argv[1] == "seed":
        written = write_seeds(sys.argv[2] if len(sys.argv) > 2 else None)
        print(f"seed corpus written under {CORPUS}: {written}")
        return
    if sys.argv[1] == "report":
        for name in TARGET_NAMES:
            print(f"{name}: {summary(replay(name))}")
        return
    import atheris

    with atheris.instrument_imports():  # coverage feedback from the project's decoders
        import bpcv.codec  # noqa: F401
        import bpcv.envelope  # noqa: F401
        import bpcv.messages  # noqa: F401
        import ledger.block  # noqa: F401
        import ledger.replica  # noqa: F401
        import ledger.validate  # noqa: F401
    target = targets()[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], lambda data: target(data) and None)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
