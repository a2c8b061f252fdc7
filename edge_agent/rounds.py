"""What an agent holds of the round in progress: its number, roster, whom it is to score, the
peers' updates that arrived, a manifest waiting for them, what the agent itself published (the
same bytes are sent again when the coordinator asks), and the clock of where its rounds' time goes."""

from __future__ import annotations

import time
from collections import Counter

from bpcv.codec import model_digest
from bpcv.committee import assign
from bpcv.messages import Manifest
from bpcv.task import TaskSpec
from edge_agent.round_clock import RoundClock

# Requests for one message after which the agent says it is being lost on the way: an MQTT 3.1.1 broker
# acknowledges a message over its ``message_size_limit`` and drops it, so an acknowledgement is no
# proof of delivery; the coordinator's request naming us is.
LOST_AFTER = 3
# A request handled this soon after we sent was made before our message could arrive (it waited in
# the agent's queue while it trained): it is neither answered nor counted. Real requests come 8 s apart.
RESEND_GRACE_S = 2.0


class RoundState:
    """One agent's view of the current round; a new global model starts the next one."""

    def __init__(self) -> None:
        self.number = 0
        self.roster: list[str] = []
        self.peers: list[str] | None = None  # whom this node scores this round; None: every peer listed
        self.updates: dict[int, dict[str, tuple[str, bytes]]] = {}  # round -> peer -> (digest, blob)
        self.manifest: tuple[int, Manifest] | None = None  # (round, manifest) waiting for updates to score
        self.sent: dict[tuple[str, int], bytes] = {}  # (update|vote, round) -> what we published
        self.sent_at: dict[tuple[str, int], float] = {}  # (update|vote, round) -> when (monotonic)
        self.asked: Counter[tuple[str, int]] = Counter()  # (update|vote, round) -> requests to send it again
        self.clock = RoundClock()  # where the agent's rounds go, phase by phase (kept across rounds)

    def start(
        self, round_no: int, roster: list[str], task: TaskSpec, node_id: str, committee_seed: str | None = None
    ) -> None:
        """Round ``round_no`` begins: keep what peers sent for it (or later), forget the rest. Whom ``node_id``
        scores: every peer, or (a task with committees) its committee drawn over the roster from the global
        model's ``committee_seed`` (none without a seed)."""
        self.number = round_no
        self.roster = list(roster)
        if not task.supervised:  # plain federated learning: nobody scores anybody
            self.peers = []
        elif not task.committee:
            self.peers = None
        else:
            drawn = assign(roster, task.committee, committee_seed, task.task_id, round_no) if committee_seed else {}
            self.peers = drawn.get(node_id, [])
        self.updates = {r: u for r, u in self.updates.items() if r >= round_no}
        self.sent = {k: v for k, v in self.sent.items() if k[1] >= round_no}
        self.sent_at = {k: t for k, t in self.sent_at.items() if k[1] >= round_no}
        self.asked = Counter({k: n for k, n in self.asked.items() if k[1] >= round_no})
        self.manifest = None

    def in_window(self, round_no: int, behind: int = 0) -> bool:
        """Peers' messages are kept for this round and the next (a peer may be a little ahead), and, with
        ``behind``, for that many rounds before (a vote for a block still being proposed)."""
        return self.number - behind <= round_no <= self.number + 1

    def keep_update(self, round_no: int, peer: str, blob: bytes) -> None:
        self.updates.setdefault(round_no, {})[peer] = (model_digest(blob), blob)

    def to_score(self, node_id: str, listed: dict[str, str]) -> tuple[list[str], dict[str, tuple[str, bytes]]]:
        """The peers ``node_id`` is to score that the manifest lists (every one, or those of its committee):
        those whose listed update has not arrived (missing), and the (digest, blob) of those that have."""
        peers = [p for p in (listed if self.peers is None else self.peers) if p in listed and p != node_id]
        received = self.updates.get(self.number, {})
        missing = [p for p in peers if p not in received or received[p][0] != listed[p]]
        return missing, {p: received[p] for p in peers if p not in missing}

    def to_score_early(self, round_no: int, node_id: str, peer: str) -> tuple[str, bytes] | None:
        """The (digest, blob) of ``peer``'s update of this round when ``node_id`` will score it and has sent
        its own. Scoring it as it arrives, while slower peers still train, readies the vote soon after the
        manifest (which may still leave it out: then the score goes unused)."""
        if round_no != self.number or ("update", round_no) not in self.sent or peer == node_id:
            return None
        if peer not in (self.roster if self.peers is None else self.peers):
            return None
        return self.updates.get(round_no, {}).get(peer)

    def record_sent(self, kind: str, round_no: int, raw: bytes) -> None:
        """We published ``raw`` as our ``kind`` of ``round_no`` (sent again, byte for byte, when asked)."""
        self.sent[(kind, round_no)] = raw
        self.sent_at[(kind, round_no)] = time.monotonic()

    def to_send_again(self, kind: str, round_no: int, node_id: str, resend_to: tuple[str, ...] | None) -> bytes | None:
        """What ``node_id`` published as ``kind`` in ``round_no``, when the coordinator's request names it
        (the request is counted); None when it does not, nothing was published, or the request is older
        than what we sent (handled within RESEND_GRACE_S of sending)."""
        raw = self.sent.get((kind, round_no))
        if raw is None or node_id not in (resend_to or ()):
            return None
        if time.monotonic() - self.sent_at[(kind, round_no)] < RESEND_GRACE_S:
            return None
        self.asked[(kind, round_no)] += 1
        return raw

    def lost(self, kind: str, round_no: int) -> str | None:
        """Why our ``kind`` of ``round_no`` looks lost on the way, once the coordinator has asked for it
        ``LOST_AFTER`` times; None before (and after: said once)."""
        if self.asked[(kind, round_no)] != LOST_AFTER:
            return None
        size = len(self.sent[(kind, round_no)])
        return (
            f"the coordinator has asked {LOST_AFTER} times for our round {round_no} {kind} ({size:,} bytes), so "
            "the broker acknowledged it but did not deliver it: a broker drops a message over its "
            "message_size_limit that way; check the broker's limit against the model's size"
        )

    def not_received(self, round_no: int, dropped: list[str], node_id: str) -> str | None:
        """Why the round's result leaves ``node_id`` out as dropped although it sent an update, or None."""
        raw = self.sent.get(("update", round_no))
        if raw is None or node_id not in dropped:
            return None
        asked = self.asked[("update", round_no)]
        return (
            f"dropped from round {round_no}: the coordinator never received our update ({len(raw):,} bytes, "
            f"sent {1 + asked} times)"
        )
