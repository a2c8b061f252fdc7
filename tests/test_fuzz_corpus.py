"""Every input the fuzzer kept (tests/fuzz/corpus/) goes through its decoder again on each test run:
only the project's own refusal errors may come out (a regression net for past fuzz findings)."""

import pytest

from tests.fuzz.fuzz_decoders import CORPUS, targets

TARGETS = targets()


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_corpus_inputs_are_refused_cleanly_or_accepted(name):
    files = sorted((CORPUS / name).iterdir())
    assert files, f"no corpus for {name}"
    for path in files:
        TARGETS[name](path.read_bytes())
