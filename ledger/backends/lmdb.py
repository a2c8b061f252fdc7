"""The LMDB block store: each append is one write transaction (block, hash index and head together)."""

from __future__ import annotations

import logging
from pathlib import Path

import lmdb

from ledger import schema
from ledger.errors import CorruptStore, UnknownParent
from ledger.store import BlockStore

log = logging.getLogger(__name__)
DEFAULT_MAP_SIZE = 256 * 1024 * 1024


class LmdbStore(BlockStore):
    """Blocks in an LMDB environment (a folder). The map grows when full; a failed append writes nothing."""

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

    def head(self) -> tuple[int, str] | None:
        with self._env.begin() as txn:
            value = txn.get(schema.HEAD)
        return schema.decode_head(value) if value is not None else None

    def get(self, height: int) -> bytes | None:
        with self._env.begin() as txn:
            value = txn.get(schema.block_key(height))
        return bytes(value) if value is not None else None

    def height_of(self, block_hash: str) -> int | None:
        with self._env.begin() as txn:
            value = txn.get(schema.hash_key(block_hash))
        return int.from_bytes(value, "big") if value is not None else None

    def append(self, height: int, block_hash: str, raw: bytes) -> None:
        while True:
            try:
                self._append_once(height, block_hash, raw)
                return
            except lmdb.MapFullError:
                new_size = self._env.info()["map_size"] * 2
                log.info("%s: LMDB map full, growing to %d bytes", self.path, new_size)
                self._env.set_mapsize(new_size)

    def _append_once(self, height: int, block_hash: str, raw: bytes) -> None:
        with self._env.begin(write=True) as txn:
            head = txn.get(schema.HEAD)
            expected = schema.decode_head(head)[0] + 1 if head is not None else 0
            if height != expected:
                raise UnknownParent(f"{self.path}: block at height {height} does not extend head at {expected - 1}")
            txn.put(schema.block_key(height), raw)
            txn.put(schema.hash_key(block_hash), height.to_bytes(8, "big"))
            txn.put(schema.HEAD, schema.encode_head(height, block_hash))

    def close(self) -> None:
        self._env.close()
