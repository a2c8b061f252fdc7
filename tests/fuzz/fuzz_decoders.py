"""Coverage-guided fuzzing (atheris / libFuzzer) of every decoder that reads bytes from the network or disk.

    .venv/bin/pip install atheris                      # or: pip install -e ".[fuzz]"
    .venv/bin/python -m tests.fuzz.fuzz_decoders seed  # (re)write the seed corpus from valid messages
    .venv/bin/python -m tests.fuzz.fuzz_decoders envelope tests/fuzz/corpus/envelope -max_total_time=600

Targets: ``envelope`` (decode + signature check), ``model`` (tensor codec with expected shapes),
``vote`` (envelope + the vote's scores against a registry), ``block`` (block decode + full
validation on a replica). A target may only refuse input with the project's own error types
(``Rejected`` for messages, ``LedgerError`` for blocks); anything else is a crash that libFuzzer
reports with the input that caused it. Results of the committed runs: docs/BENCHMARKS.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"


def _fixtures():
    """A consortium, a valid vote, a valid model blob and a valid two-block chain (seed material)."""
    import numpy as np

    from bpcv.codec import encode_model
    from bpcv.envelope import seal
    from ledger.replica import Replica
    from tests.helpers import honest_scores, make_consortium, round_block

    c = make_consortium(n_agents=4)
    scores = honest_scores(list(c.agents), bad="node-04")
    block1 = round_block(c, 1, Replica.open(None, c.genesis.raw).head_hash, 1, scores, True)
    vote = seal(c.agents["node-01"], "vote", "t1", 1, {"metric": "accuracy", "scores": scores["node-01"]})
    blob = encode_model([np.ones((3, 2), np.float32), np.zeros((2,), np.float32)])
    return c, vote, blob, block1


def write_seeds() -> None:
    c, vote, blob, block1 = _fixtures()
    seeds = {"envelope": [vote.raw, c.task_env.raw], "model": [blob], "vote": [vote.raw], "block": [block1.raw]}
    for target, items in seeds.items():
        (CORPUS / target).mkdir(parents=True, exist_ok=True)
        for i, data in enumerate(items):
            (CORPUS / target / f"seed-{i}").write_bytes(data)
    print(f"seed corpus written under {CORPUS}")


def targets():
    """The fuzz targets as plain functions of bytes (also replayed over the corpus by the test suite)."""
    from bpcv.codec import decode_model
    from bpcv.envelope import decode, open_envelope
    from bpcv.errors import Rejected
    from ledger.errors import LedgerError
    from ledger.replica import Replica
    from ledger.validate import vote_scores

    c, _, _, _ = _fixtures()
    registry = Replica.open(None, c.genesis.raw).state.registry
    shapes = [(3, 2), (2,)]

    def envelope(data: bytes) -> None:
        try:
            open_envelope(data, registry)
        except Rejected:
            pass

    def model(data: bytes) -> None:
        try:
            decode_model(data, shapes)
        except Rejected:
            pass

    def vote(data: bytes) -> None:
        try:
            vote_scores(decode(data), registry)
        except Rejected:
            pass

    def block(data: bytes) -> None:
        replica = Replica.open(None, c.genesis.raw)
        try:
            replica.append(data)
        except LedgerError:
            pass

    return {"envelope": envelope, "model": model, "vote": vote, "block": block}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("seed", "envelope", "model", "vote", "block"):
        print(__doc__)
        sys.exit(2)
    if sys.argv[1] == "seed":
        write_seeds()
        return
    import atheris

    with atheris.instrument_imports():  # coverage feedback from the project's decoders
        import bpcv.codec  # noqa: F401
        import bpcv.envelope  # noqa: F401
        import ledger.block  # noqa: F401
        import ledger.replica  # noqa: F401
        import ledger.validate  # noqa: F401
    target = targets()[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
