"""The run's time series: every node's psutil samples, the broker's traffic counters, the round events
and each agent's seconds per phase and bytes received by kind of each round (``RoundTimes``), in SQLite
in the run folder (``metrics.sqlite``, WAL, an index on node and time). Opening it again after a restart
keeps everything already written; readers (``bpcv report``, ``bpcv monitor``) may open it while the
coordinator writes."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import fields
from pathlib import Path
from typing import Any

from bpcv.messages import RoundTimes
from bpcv.sampler import Sample

# the replica height is live state (the monitor, the demo waiting for replicas to agree), not a series
SAMPLE_COLUMNS = tuple(f.name for f in fields(Sample) if f.name != "chain_height")
SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    node TEXT NOT NULL, ts REAL NOT NULL, pid INTEGER NOT NULL, cpu_percent REAL NOT NULL,
    rss_bytes INTEGER NOT NULL, net_sent INTEGER NOT NULL, net_recv INTEGER NOT NULL, temperature_c REAL,
    ledger_cpu_s REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_by_node_time ON samples (node, ts);
CREATE TABLE IF NOT EXISTS broker_traffic (ts REAL NOT NULL, counter TEXT NOT NULL, bytes INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS broker_traffic_by_time ON broker_traffic (counter, ts);
CREATE TABLE IF NOT EXISTS events (ts REAL NOT NULL, round INTEGER NOT NULL, kind TEXT NOT NULL, detail TEXT);
CREATE INDEX IF NOT EXISTS events_by_time ON events (ts);
CREATE TABLE IF NOT EXISTS round_times (
    node TEXT NOT NULL, round INTEGER NOT NULL, wall_s REAL NOT NULL, phase TEXT NOT NULL, seconds REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS round_received (
    node TEXT NOT NULL, round INTEGER NOT NULL, kind TEXT NOT NULL, bytes INTEGER NOT NULL
);
"""


class TimeSeries:
    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = path
        if readonly:
            if not path.is_file():
                raise FileNotFoundError(f"no time series at {path}")
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
            return
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # Each insert commits on its own; with WAL, NORMAL syncs at checkpoints instead of every commit (1 ms
        # a sample here, 50 samples a second at N = 50 on the coordinator's message thread). A crashed process
        # loses nothing; a power cut may lose the last samples, never the file (sqlite.org/wal.html).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def add_sample(self, node: str, s: Sample) -> None:
        columns = ", ".join(("node",) + SAMPLE_COLUMNS)
        self._db.execute(
            f"INSERT INTO samples ({columns}) VALUES ({', '.join('?' * (1 + len(SAMPLE_COLUMNS)))})",
            (node, *(getattr(s, c) for c in SAMPLE_COLUMNS)),
        )

    def add_broker_bytes(self, ts: float, counter: str, value: int) -> None:
        """A reading of the broker's cumulative ``received`` or ``sent`` byte counter ($SYS)."""
        self._db.execute("INSERT INTO broker_traffic VALUES (?, ?, ?)", (ts, counter, value))

    def add_event(self, ts: float, round_no: int, kind: str, detail: dict[str, Any] | None = None) -> None:
        self._db.execute(
            "INSERT INTO events VALUES (?, ?, ?, ?)", (ts, round_no, kind, json.dumps(detail) if detail else None)
        )

    def add_round_times(self, node: str, times: RoundTimes) -> None:
        """One agent's breakdown of one round (a phase row each; a round with no phase keeps its wall time)."""
        rows = [(node, times.round, times.wall_s, p, s) for p, s in times.seconds.items()]
        self._db.executemany("INSERT INTO round_times VALUES (?, ?, ?, ?, ?)", rows)
        received = [(node, times.round, kind, n) for kind, n in times.received.items()]
        self._db.executemany("INSERT INTO round_received VALUES (?, ?, ?, ?)", received)

    def round_times(self) -> list[tuple[str, RoundTimes]]:
        """Every (node, its round's times), by node and round; none in a file written before they existed."""
        try:
            rows = list(self._db.execute("SELECT node, round, wall_s, phase, seconds FROM round_times"))
        except sqlite3.OperationalError:  # no such table: an older run folder
            return []
        grouped: dict[tuple[str, int], RoundTimes] = {}
        for node, round_no, wall, phase, seconds in rows:
            grouped.setdefault((node, round_no), RoundTimes(round_no, wall, {})).seconds[phase] = seconds
        try:  # the bytes of a round with a phase (every round an agent handled a message in has one)
            for node, round_no, kind, nbytes in self._db.execute("SELECT node, round, kind, bytes FROM round_received"):
                if (node, round_no) in grouped:
                    grouped[node, round_no].received[kind] = nbytes
        except sqlite3.OperationalError:  # a run folder from before the bytes were counted
            pass
        return [(node, times) for (node, _), times in sorted(grouped.items())]

    def samples(self, node: str | None = None, since: float = 0.0) -> list[dict[str, Any]]:
        """Samples as dicts (node plus the Sample fields), by node then time."""
        query = f"SELECT node, {', '.join(SAMPLE_COLUMNS)} FROM samples WHERE ts >= ?"
        rows = self._db.execute(
            query + (" AND node = ? ORDER BY ts" if node else " ORDER BY node, ts"), (since, node) if node else (since,)
        )
        names = ("node",) + SAMPLE_COLUMNS
        return [dict(zip(names, row, strict=True)) for row in rows]

    def latest_samples(self) -> dict[str, dict[str, Any]]:
        """Each node's newest sample."""
        query = (
            f"SELECT node, {', '.join(SAMPLE_COLUMNS)} FROM samples s WHERE ts = "
            "(SELECT MAX(ts) FROM samples WHERE node = s.node)"
        )
        names = ("node",) + SAMPLE_COLUMNS
        return {row[0]: dict(zip(names, row, strict=True)) for row in self._db.execute(query)}

    def broker_bytes(self, counter: str) -> list[tuple[float, int]]:
        return list(self._db.execute("SELECT ts, bytes FROM broker_traffic WHERE counter = ? ORDER BY ts", (counter,)))

    def events(self) -> list[tuple[float, int, str, dict[str, Any]]]:
        rows = self._db.execute("SELECT ts, round, kind, detail FROM events ORDER BY ts")
        return [(ts, r, kind, json.loads(detail) if detail else {}) for ts, r, kind, detail in rows]

    def close(self) -> None:
        self._db.close()
