"""Shared fixtures."""

import pytest

from ledger.backends.lmdb import LmdbStore
from ledger.backends.memory import MemoryStore
from tests.helpers import make_consortium


@pytest.fixture(params=["memory", "lmdb"])
def store(request, tmp_path):
    """Each block-store backend in turn: one contract, both stores."""
    s = MemoryStore() if request.param == "memory" else LmdbStore(tmp_path / "chain")
    yield s
    s.close()


@pytest.fixture()
def consortium(tmp_path):
    """A 3-agent consortium whose genesis and keys are written to tmp_path."""
    c = make_consortium(n_agents=3)
    (tmp_path / "genesis.bin").write_bytes(c.genesis.raw)
    for ident in [c.coordinator, *c.agents.values()]:
        ident.save(tmp_path / f"{ident.node_id}.key")
    return c, tmp_path
