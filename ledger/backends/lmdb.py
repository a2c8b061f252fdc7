"""The LMDB block store: each write is one LMDB write transaction, so a killed process leaves the
last committed state (block, hash index and head together, or a whole fork switch).

Two LMDB rules are enforced here. A process killed inside a read transaction leaves its slot in the
lock file's reader table, and LMDB keeps every page that reader could see, so the file grows with
each write until the slot is cleared: the writer clears dead readers' slots before every write
(``reader_check``). And an environment must not be used in a process forked from the one that
opened it: a store refuses, naming both processes, and the child opens its own.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import lmdb

from ledger import schema
from ledger.errors import CorruptStore, LedgerError, UnknownParent
from ledger.store import BlockStore, HashedBlock

log = logging.getLogger(__name__)
DEFAULT_MAP_SIZE = 256 * 1024 * 1024


class LmdbStore(BlockStore):
    """Blocks in an LMDB environment (a folder). The map grows when full; a failed write writes nothing."""

    def __init__(self, path: Path | str, readonly: bool = False, map_size: int = DEFAULT_MAP_SIZE) -> None:
        self.path = Path(path)
        if readonly and not (self.path / "data.mdb").exists():
            raise CorruptStore(f"{self.path}: no LMDB replica here (data.mdb missing)")
        if not readonly:
            self.path.mkdir(parents=True, exist_ok=True)
        try:
            self._env = lmdb.open(
                str(self.path),
                map_size=map_size,
                subdir=True,
                readonly=readonly,
                max_dbs=0,
                lock=not readonly,
                metasync=True,
                sync=True,
            )
        except lmdb.Error as exc:
            raise CorruptStore(f"{self.path}: cannot open LMDB replica: {exc}") from exc
        self._pid = os.getpid()

    @property
    def env(self) -> lmdb.Environment:
        """The environment, in the process that opened it (LMDB environments must not cross fork())."""
        if os.getpid() != self._pid:
            raise LedgerError(
                f"{self.path}: this replica was opened in process {self._pid}, not in this one ({os.getpid()}): "
                "an LMDB environment must not be used after fork(); open the replica again in this process"
            )
        return self._env

    def _read(self, key: bytes) -> bytes | None:
        with self.env.begin() as txn:
            value = txn.get(key)
        return bytes(value) if value is not None else None

    def head(self) -> tuple[int, str] | None:
        value = self._read(schema.HEAD)
        return schema.decode_head(value) if value is not None else None

    def get(self, height: int) -> bytes | None:
        return self._read(schema.block_key(height))

    def height_of(self, block_hash: str) -> int | None:
        value = self._read(schema.hash_key(block_hash))
        return int.from_bytes(value, "big") if value is not None else None

    def get_side(self, block_hash: str) -> bytes | None:
        return self._read(schema.side_key(block_hash))

    def side_blocks(self) -> Iterator[HashedBlock]:
        with self.env.begin() as txn:
            cursor = txn.cursor()
            found = []
            if cursor.set_range(schema.SIDE_PREFIX):
                for key, value in cursor:
                    if not key.startswith(schema.SIDE_PREFIX):
                        break
                    found.append((key[len(schema.SIDE_PREFIX) :].hex(), bytes(value)))
        return iter(found)

    def _write(self, work: Callable[[lmdb.Transaction], None]) -> None:
        """Run ``work`` in one write transaction, growing the map and retrying when it is full; first
        clear the reader slots of dead processes, whose pages could otherwise never be reused."""
        env = self.env
        cleared = env.reader_check()
        if cleared:
            log.warning("%s: cleared %d reader slot(s) left by killed processes", self.path, cleared)
        while True:
            try:
                with env.begin(write=True) as txn:
                    work(txn)
                return
            except lmdb.MapFullError:
                new_size = env.info()["map_size"] * 2
                log.info("%s: LMDB map full, growing to %d bytes", self.path, new_size)
                env.set_mapsize(new_size)

    @staticmethod
    def _put_main(txn: lmdb.Transaction, height: int, block_hash: str, raw: bytes) -> None:
        txn.put(schema.block_key(height), raw)
        txn.put(schema.hash_key(block_hash), height.to_bytes(8, "big"))
        txn.put(schema.HEAD, schema.encode_head(height, block_hash))
        txn.delete(schema.side_key(block_hash))

    def append(self, height: int, block_hash: str, raw: bytes) -> None:
        def work(txn: lmdb.Transaction) -> None:
            head = txn.get(schema.HEAD)
            expected = schema.decode_head(bytes(head))[0] + 1 if head is not None else 0
            if height != expected:
                raise UnknownParent(f"{self.path}: block at height {height} does not extend head at {expected - 1}")
            self._put_main(txn, height, block_hash, raw)

        self._write(work)

    def put_side(self, block_hash: str, raw: bytes) -> None:
        def work(txn: lmdb.Transaction) -> None:
            if txn.get(schema.hash_key(block_hash)) is None:
                txn.put(schema.side_key(block_hash), raw)

        self._write(work)

    def switch(self, fork_height: int, orphaned: Sequence[HashedBlock], branch: Sequence[HashedBlock]) -> None:
        def work(txn: lmdb.Transaction) -> None:
            if not branch:
                raise UnknownParent("a fork switch needs a branch")
            head = txn.get(schema.HEAD)
            head_height = schema.decode_head(bytes(head))[0] if head is not None else -1
            if fork_height < 1 or head_height != fork_height + len(orphaned) - 1:
                raise UnknownParent(f"{self.path}: the main chain from {fork_height} is not the blocks to orphan")
            for offset, (block_hash, raw) in enumerate(orphaned):
                if txn.get(schema.hash_key(block_hash)) != (fork_height + offset).to_bytes(8, "big"):
                    raise UnknownParent(
                        f"{self.path}: block {block_hash[:16]}… is not at height {fork_height + offset}"
                    )
                txn.delete(schema.block_key(fork_height + offset))
                txn.delete(schema.hash_key(block_hash))
                txn.put(schema.side_key(block_hash), raw)
            for offset, (block_hash, raw) in enumerate(branch):
                self._put_main(txn, fork_height + offset, block_hash, raw)

        self._write(work)

    def close(self) -> None:
        self._env.close()
