"""Child process for tests/test_crash_safety.py: append blocks to an LMDB replica as fast as it can.

    python -m tests.crash_writer CHAIN_DIR BLOCKS_FILE

BLOCKS_FILE holds the genesis and then the blocks, each as a 4-byte big-endian length and the bytes.
Prints "ready <height>" once the replica is open (after re-verifying what is stored), then appends
every block it does not hold yet; the parent SIGKILLs it at a random moment.
"""

import struct
import sys
from pathlib import Path

from ledger.replica import Replica


def read_blocks(path: Path) -> list[bytes]:
    data, blocks, pos = path.read_bytes(), [], 0
    while pos < len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        blocks.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return blocks


def main() -> None:
    genesis, *blocks = read_blocks(Path(sys.argv[2]))
    replica = Replica.open(sys.argv[1], genesis)
    print("ready", replica.height, flush=True)
    for raw in blocks:
        replica.append(raw)
    replica.close()


if __name__ == "__main__":
    main()
