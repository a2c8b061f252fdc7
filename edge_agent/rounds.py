"""What an agent holds of the round in progress: its number, roster and validation assignment, the
peers' updates that arrived, a manifest waiting for them, and what the agent itself published (the
same bytes are sent again when the coordinator asks)."""

from __future__ import annotations

from bpcv.codec import model_digest
from bpcv.messages import Manifest


class RoundState:
    """One agent's view of the current round; a new global model starts the next one."""

    def __init__(self) -> None:
        self.number = 0
        self.roster: list[str] = []
        self.assignment: dict[str, list[str]] = {}
        self.updates: dict[int, dict[str, tuple[str, bytes]]] = {}  # round -> peer -> (digest, blob)
        self.manifest: tuple[int, Manifest] | None = None  # (round, manifest) waiting for updates to score
        self.sent: dict[tuple[str, int], bytes] = {}  # (update|vote, round) -> what we published

    def start(self, round_no: int, roster: list[str], assignment: dict[str, list[str]]) -> None:
        """Round ``round_no`` begins: keep what peers sent for it (or later), forget the rest."""
        self.number = round_no
        self.roster = list(roster)
        self.assignment = dict(assignment)
        self.updates = {r: u for r, u in self.updates.items() if r >= round_no}
        self.sent = {k: v for k, v in self.sent.items() if k[1] >= round_no}
        self.manifest = None

    def in_window(self, round_no: int) -> bool:
        """Peers' messages are kept for this round and the next (a peer may be a little ahead)."""
        return self.number <= round_no <= self.number + 1

    def keep_update(self, round_no: int, peer: str, blob: bytes) -> None:
        self.updates.setdefault(round_no, {})[peer] = (model_digest(blob), blob)

    def to_score(self, node_id: str, listed: dict[str, str]) -> tuple[list[str], dict[str, bytes]]:
        """The peers ``node_id`` is assigned to score that the manifest lists: those whose listed update
        has not arrived (missing), and the blobs of those that have."""
        peers = [p for p in self.assignment.get(node_id, []) if p in listed and p != node_id]
        received = self.updates.get(self.number, {})
        missing = [p for p in peers if p not in received or received[p][0] != listed[p]]
        return missing, {p: received[p][1] for p in peers if p not in missing}
