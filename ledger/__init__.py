"""The proof-of-quality chain: block format, storage (LMDB or memory), validation, replicas."""
