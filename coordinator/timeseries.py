"""The run's time series: every node's psutil samples and the round events, in SQLite in the run
folder (``metrics.sqlite``, WAL, an index on node and time). Opening it again after a restart keeps
everything already written."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from bpcv.sampler import Sample

SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    node TEXT NOT NULL, ts REAL NOT NULL, cpu_percent REAL NOT NULL, rss_bytes INTEGER NOT NULL,
    net_sent INTEGER NOT NULL, net_recv INTEGER NOT NULL, temperature_c REAL
);
CREATE INDEX IF NOT EXISTS samples_by_node_time ON samples (node, ts);
CREATE TABLE IF NOT EXISTS events (ts REAL NOT NULL, round INTEGER NOT NULL, kind TEXT NOT NULL, detail TEXT);
CREATE INDEX IF NOT EXISTS events_by_time ON events (ts);
"""


class TimeSeries:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)

    def add_sample(self, node: str, s: Sample) -> None:
        self._db.execute(
            "INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?, ?)",
            (node, s.ts, s.cpu_percent, s.rss_bytes, s.net_sent, s.net_recv, s.temperature_c),
        )

    def add_event(self, ts: float, round_no: int, kind: str, detail: dict[str, Any] | None = None) -> None:
        self._db.execute(
            "INSERT INTO events VALUES (?, ?, ?, ?)", (ts, round_no, kind, json.dumps(detail) if detail else None)
        )

    def samples(self, node: str | None = None) -> list[tuple[Any, ...]]:
        query = "SELECT node, ts, cpu_percent, rss_bytes, net_sent, net_recv, temperature_c FROM samples"
        rows = self._db.execute(
            query + (" WHERE node = ? ORDER BY ts" if node else " ORDER BY node, ts"), (node,) if node else ()
        )
        return list(rows)

    def events(self) -> list[tuple[Any, ...]]:
        return list(self._db.execute("SELECT ts, round, kind, detail FROM events ORDER BY ts"))

    def close(self) -> None:
        self._db.close()
