"""Typed message bodies: one frozen dataclass per message kind, the only place bodies are read.

Every message travels as a signed envelope (``bpcv.envelope``) whose ``type`` names its kind and whose
``body`` is a JSON object. A kind's class turns itself into that object (``to_body``) and back
(``from_body``); ``from_body`` refuses a body with a missing, extra-typed or unknown-shaped field with
``Rejected("malformed", "<kind>: field '<name>' ...")``, so a field renamed on one side fails with
its name, at the receiver's door, instead of deep inside a handler.

``to_body`` writes exactly the bytes the protocol has always carried (docs/PROTOCOL.md), so chains
recorded before these classes existed still verify. Fields a receiver can do without have defaults
in ``from_body`` (a test or an older sender may omit them); the senders in this project always write
every field.

Use ``seal_message(identity, message, task, round)`` to send and ``read(envelope, Kind)`` to receive.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar, TypeVar

from bpcv.envelope import Envelope, seal
from bpcv.errors import BpcvError, Rejected
from bpcv.identity import Identity
from bpcv.task import TaskSpec
from bpcv.topics import TRAFFIC_KINDS

M = TypeVar("M", bound="Message")
_MISSING = object()


class _Body:
    """Reads one received body field by field, naming the kind and field in every refusal."""

    def __init__(self, kind: str, body: Mapping[str, Any]) -> None:
        if not isinstance(body, Mapping):
            raise Rejected("malformed", f"{kind}: body is not an object")
        self.kind, self.body = kind, body

    def _bad(self, name: str, what: str) -> Rejected:
        return Rejected("malformed", f"{self.kind}: field {name!r} {what}")

    def _get(self, name: str, default: Any) -> Any:
        value = self.body.get(name, _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                raise self._bad(name, "is missing")
            return default
        return value

    def text(self, name: str, default: Any = _MISSING) -> Any:
        """A string; with ``default=None`` the field may also be absent or null."""
        value = self._get(name, default)
        if value is None and default is None:
            return None
        if not isinstance(value, str):
            raise self._bad(name, f"is not a string: {value!r:.60}")
        return value

    def integer(self, name: str, default: Any = _MISSING) -> int:
        value = self._get(name, default)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._bad(name, f"is not an integer: {value!r:.60}")
        return value

    def number(self, name: str, default: Any = _MISSING) -> Any:
        """A finite number (as float); with ``default=None`` the field may also be absent or null."""
        value = self._get(name, default)
        if value is None and default is None:
            return None
        if not _is_number(value):
            raise self._bad(name, f"is not a finite number: {value!r:.60}")
        return float(value)

    def flag(self, name: str, default: Any = _MISSING) -> bool:
        value = self._get(name, default)
        if not isinstance(value, bool):
            raise self._bad(name, f"is not true/false: {value!r:.60}")
        return value

    def names(self, name: str, default: Any = _MISSING) -> list[str]:
        value = self._get(name, default)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._bad(name, "is not a list of strings")
        return list(value)

    def mapping(self, name: str, value_ok: Callable[[Any], bool], what: str, default: Any = _MISSING) -> dict:
        value = self._get(name, default)
        if not isinstance(value, Mapping) or not all(isinstance(k, str) and value_ok(v) for k, v in value.items()):
            raise self._bad(name, f"is not a map of node id to {what}")
        return dict(value)

    def resend_to(self) -> tuple[str, ...] | None:
        """The optional ``resend_to`` list (nodes asked again), None when absent."""
        return tuple(self.names("resend_to")) if "resend_to" in self.body else None

    def obj(self, name: str, default: Any = _MISSING) -> dict[str, Any]:
        value = self._get(name, default)
        if not isinstance(value, Mapping):
            raise self._bad(name, "is not an object")
        return dict(value)


MAX_MAGNITUDE = 1e15  # no score, reward, metric or epsilon this protocol carries comes near; bigger is hostile


def _is_number(value: Any) -> bool:
    """A finite int or float of at most MAX_MAGNITUDE: sums of them cannot overflow (a JSON integer with
    400 digits, or two scores of 1e308, would make ``float``/``math.fsum`` raise OverflowError)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE


def _is_optional_number(value: Any) -> bool:
    return value is None or _is_number(value)


def _is_names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


class Message:
    """Base of every typed body. ``KIND`` is the envelope type it travels as."""

    KIND: ClassVar[str]

    def to_body(self) -> dict[str, Any]:
        """The JSON object this message travels as (the envelope's ``body``)."""
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_body(cls: type[M], body: Mapping[str, Any]) -> M:
        """The message a received body holds; Rejected("malformed") naming the bad or missing field."""
        raise NotImplementedError


def read(envelope: Envelope, kind: type[M]) -> M:
    """The typed body of a received envelope of ``kind``; Rejected if its type or body is wrong."""
    if envelope.type != kind.KIND:
        raise Rejected("wrong-type", f"{envelope.type!r} where {kind.KIND!r} was expected")
    return kind.from_body(envelope.body)


def seal_message(
    identity: Identity,
    message: Message,
    task: str = "",
    round_no: int = 0,
    blobs: tuple[bytes, ...] | list[bytes] = (),
    ts: float | None = None,
) -> Envelope:
    """Sign ``message`` as ``identity`` in an envelope of its kind."""
    return seal(identity, message.KIND, task, round_no, message.to_body(), blobs, ts=ts)


def _without(body: dict[str, Any], name: str, absent: Any) -> dict[str, Any]:
    """``body`` less the optional field ``name`` when it holds its absent value: bodies written before the
    field existed stay byte for byte what they were."""
    if body[name] == absent:
        del body[name]
    return body


def _resend_body(body: dict[str, Any], resend_to: tuple[str, ...] | None) -> dict[str, Any]:
    if resend_to is not None:
        body["resend_to"] = list(resend_to)
    else:
        del body["resend_to"]
    return body


# --- the consortium ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Genesis(Message):
    """The consortium: chain id, members ``{id: {"key": hex, "role": role}}`` and chain parameters."""

    KIND: ClassVar[str] = "genesis"
    chain: str
    members: dict[str, dict[str, str]]
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Genesis:
        b = _Body(cls.KIND, body)
        members = b.mapping(
            "members",
            lambda e: isinstance(e, Mapping) and isinstance(e.get("key"), str) and isinstance(e.get("role"), str),
            '{"key": hex, "role": role}',
        )
        return cls(b.text("chain"), {n: dict(e) for n, e in members.items()}, b.obj("params", {}))


@dataclass(frozen=True)
class Register(Message):
    """An admin admits one new member (in a registration block)."""

    KIND: ClassVar[str] = "register"
    node: str
    key: str  # the Ed25519 public key, hex
    role: str

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Register:
        b = _Body(cls.KIND, body)
        return cls(b.text("node"), b.text("key"), b.text("role"))


def seal_task(requester: Identity, task: TaskSpec, initial_weights: bytes | None = None) -> Envelope:
    """The requester's signed ``task`` envelope announcing ``task``; ``initial_weights`` (a model blob,
    ``bpcv.codec``) travels as its one blob: the coordinator starts from them instead of a fresh model."""
    blobs = [initial_weights] if initial_weights is not None else []
    return seal(requester, "task", task.task_id, 0, task.to_body(), blobs)


def read_task(envelope: Envelope) -> TaskSpec:
    """The task a requester's ``task`` envelope announces (``TaskSpec`` is the task's typed body)."""
    if envelope.type != "task":
        raise Rejected("wrong-type", f"{envelope.type!r} where 'task' was expected")
    try:
        return TaskSpec.from_body(envelope.body)
    except BpcvError as exc:
        raise Rejected("bad-task", str(exc)) from exc


# --- joining and leaving a task ---------------------------------------------------------------------


@dataclass(frozen=True)
class Join(Message):
    """An agent answers a task: its sample count and the privacy it claims (signed, so on record)."""

    KIND: ClassVar[str] = "join"
    num_samples: int
    dataset: str
    privacy: dict[str, Any]

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Join:
        b = _Body(cls.KIND, body)
        samples = b.integer("num_samples")
        if samples < 1:
            raise b._bad("num_samples", f"is not positive: {samples}")
        return cls(samples, b.text("dataset", ""), b.obj("privacy", {"mechanism": "unknown"}))


@dataclass(frozen=True)
class Leave(Message):
    """An agent stops contributing (e.g. its privacy budget is spent): leaving, not misbehaving."""

    KIND: ClassVar[str] = "leave"
    reason: str
    epsilon_spent: float | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Leave:
        b = _Body(cls.KIND, body)
        return cls(b.text("reason", "unspecified")[:100], b.number("epsilon_spent", None))


# --- one round ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GlobalModel(Message):
    """The round's global model (the envelope's one blob) and roster. ``committee_seed``: with validation
    committees, the hash of the coordinator's chain head that draws who scores whom over the roster
    (``bpcv.committee``); None when every node scores every peer.

    ``resend_to`` is set when the coordinator asks those nodes again for their update."""

    KIND: ClassVar[str] = "global"
    roster: list[str]
    model_digest: str
    resend_to: tuple[str, ...] | None = None
    committee_seed: str | None = None

    def to_body(self) -> dict[str, Any]:
        return _without(_resend_body(asdict(self), self.resend_to), "committee_seed", None)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> GlobalModel:
        b = _Body(cls.KIND, body)
        return cls(
            b.names("roster"),
            b.text("model_digest"),
            b.resend_to(),
            b.text("committee_seed", None),
        )


@dataclass(frozen=True)
class Update(Message):
    """An agent's local model (the envelope's one blob) with its digest and the privacy spent so far.
    ``val_scores`` (local-data tasks): the metrics of the global model the agent received this round on
    its own validation split."""

    KIND: ClassVar[str] = "update"
    digest: str
    num_samples: int
    epsilon_spent: float | None = None
    val_scores: dict[str, float] | None = None

    def to_body(self) -> dict[str, Any]:
        return _without(asdict(self), "val_scores", None)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Update:
        b = _Body(cls.KIND, body)
        val = b.mapping("val_scores", _is_number, "a finite number", {}) if "val_scores" in body else None
        return cls(
            b.text("digest"),
            b.integer("num_samples"),
            b.number("epsilon_spent", None),
            {m: float(v) for m, v in val.items()} if val is not None else None,
        )


@dataclass(frozen=True)
class Manifest(Message):
    """The updates accepted for validation: node -> digest. ``resend_to``: voters asked again."""

    KIND: ClassVar[str] = "manifest"
    updates: dict[str, str]
    resend_to: tuple[str, ...] | None = None

    def to_body(self) -> dict[str, Any]:
        return _resend_body(asdict(self), self.resend_to)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Manifest:
        b = _Body(cls.KIND, body)
        return cls(b.mapping("updates", lambda d: isinstance(d, str), "a digest"), b.resend_to())


@dataclass(frozen=True)
class Vote(Message):
    """An agent's signed scores of its assigned peers' updates, with the digests of the models scored."""

    KIND: ClassVar[str] = "vote"
    scores: dict[str, float]
    metric: str = ""
    digests: dict[str, str] = field(default_factory=dict)
    epsilon_spent: float | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Vote:
        b = _Body(cls.KIND, body)
        scores = b.mapping("scores", _is_number, "a finite number")
        return cls(
            {n: float(s) for n, s in scores.items()},
            b.text("metric", ""),
            b.mapping("digests", lambda d: isinstance(d, str), "a digest", {}),
            b.number("epsilon_spent", None),
        )


@dataclass(frozen=True)
class Result(Message):
    """What the coordinator decided in a round; recorded on the chain beside the votes it lists.

    ``excluded`` were left out of this round's aggregate; ``eliminated`` is the node removed from the task
    for ``eliminated_reason`` (lowest-quality, outlier or dissenting-voter; None when none is), ``invalid``
    those removed for an invalid update; ``dissenters`` the voters whose votes did not count. ``votes`` and ``records`` are the digests of the round's votes and of its
    reward/final records."""

    KIND: ClassVar[str] = "result"
    ranking: list[str]
    votes: list[str]
    records: list[str]
    global_digest: str
    proposer: str | None = None
    quality: dict[str, float] = field(default_factory=dict)
    aggregated: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    eliminated: str | None = None
    eliminated_reason: str | None = None
    invalid: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    admitted: list[str] = field(default_factory=list)
    next_roster: list[str] = field(default_factory=list)
    epsilon_spent: dict[str, float | None] = field(default_factory=dict)
    metric: str = ""
    value: float | None = None
    final: bool = False
    other_metrics: dict[str, float | None] = field(default_factory=dict)  # regression: {"rmse": ...}
    dissenters: list[str] = field(default_factory=list)  # voters whose votes did not count (accountable voters)
    committee_seed: str | None = None  # with validation committees: the global model's seed ...
    validated: list[str] = field(default_factory=list)  # ... and its roster, from which replicas redraw who scored whom

    def to_body(self) -> dict[str, Any]:
        body = _without(_without(asdict(self), "other_metrics", {}), "dissenters", [])
        return _without(_without(body, "committee_seed", None), "validated", [])

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Result:
        b = _Body(cls.KIND, body)
        return cls(
            ranking=b.names("ranking"),
            votes=b.names("votes"),
            records=b.names("records"),
            global_digest=b.text("global_digest"),
            proposer=b.text("proposer", None),
            quality={n: float(q) for n, q in b.mapping("quality", _is_number, "a finite number", {}).items()},
            aggregated=b.names("aggregated", []),
            excluded=b.names("excluded", []),
            eliminated=b.text("eliminated", None),
            eliminated_reason=b.text("eliminated_reason", None),
            invalid=b.mapping("invalid", lambda r: isinstance(r, str), "a reason", {}),
            dropped=b.names("dropped", []),
            admitted=b.names("admitted", []),
            next_roster=b.names("next_roster", []),
            epsilon_spent=b.mapping("epsilon_spent", _is_optional_number, "a number or null", {}),
            metric=b.text("metric", ""),
            value=b.number("value", None),
            final=b.flag("final", False),
            other_metrics=b.mapping("other_metrics", _is_optional_number, "a number or null", {}),
            dissenters=b.names("dissenters", []),
            committee_seed=b.text("committee_seed", None),
            validated=b.names("validated", []),
        )


@dataclass(frozen=True)
class Reward(Message):
    """The round's reward split: node -> amount."""

    KIND: ClassVar[str] = "reward"
    rewards: dict[str, float]

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Reward:
        b = _Body(cls.KIND, body)
        return cls({n: float(v) for n, v in b.mapping("rewards", _is_number, "a finite number").items()})


@dataclass(frozen=True)
class Final(Message):
    """The final global model's digest and metric, on the last round."""

    KIND: ClassVar[str] = "final"
    model_digest: str
    metric: str = ""
    value: float | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Final:
        b = _Body(cls.KIND, body)
        return cls(b.text("model_digest"), b.text("metric", ""), b.number("value", None))


@dataclass(frozen=True)
class Abort(Message):
    """The coordinator ends the task without committing the round (quorum lost)."""

    KIND: ClassVar[str] = "abort"
    reason: str

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Abort:
        return cls(_Body(cls.KIND, body).text("reason"))


@dataclass(frozen=True)
class WantBlock(Message):
    """The coordinator lacks the round's block: whoever holds it publishes it again."""

    KIND: ClassVar[str] = "want-block"

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> WantBlock:
        _Body(cls.KIND, body)
        return cls()


# --- the chain ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncRequest(Message):
    """A replica that is behind asks for the blocks from height ``start`` on."""

    KIND: ClassVar[str] = "sync"
    start: int

    def to_body(self) -> dict[str, Any]:
        return {"from": self.start}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> SyncRequest:
        b = _Body(cls.KIND, body)
        start = b.integer("from")
        if start < 1:
            raise b._bad("from", f"is below 1: {start}")
        return cls(start)


@dataclass(frozen=True)
class Evidence(Message):
    """Proof that ``accused`` signed two block headers at one height on one parent (hex headers, sigs)."""

    KIND: ClassVar[str] = "evidence"
    accused: str
    headers: list[str]
    signatures: list[str]

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Evidence:
        b = _Body(cls.KIND, body)
        headers, signatures = b.names("headers"), b.names("signatures")
        if len(headers) != 2 or len(signatures) != 2:
            raise Rejected("malformed", "evidence needs two headers and two signatures")
        return cls(b.text("accused"), headers, signatures)


# --- monitoring ---------------------------------------------------------------------------------------

SAMPLE_FIELDS = (
    "ts",
    "pid",
    "cpu_percent",
    "rss_bytes",
    "net_sent",
    "net_recv",
    "temperature_c",
    "ledger_cpu_s",
    "chain_height",
)
SAMPLE_FIELDS_ADDED_LATER = ("chain_height",)  # a sample without them is an older node's, and still read


@dataclass(frozen=True)
class Sample(Message):
    """One psutil sample of a node's process (``bpcv.sampler`` takes them), on its metrics topic."""

    KIND: ClassVar[str] = "metrics"
    ts: float
    pid: int
    cpu_percent: float
    rss_bytes: int
    net_sent: int
    net_recv: int
    temperature_c: float | None
    ledger_cpu_s: float = 0.0
    chain_height: int = 0  # the node's replica's height: who is behind, and when a run's replicas agree

    def of_replica(self, cpu_s: float, height: int) -> Sample:
        """This sample as one node's: with its replica's ledger CPU seconds and height."""
        return replace(self, ledger_cpu_s=round(cpu_s, 4), chain_height=height)

    def sealed(self, identity: Identity) -> bytes:
        """The signed ``metrics`` envelope of this sample, as ``identity`` publishes it."""
        return seal_message(identity, self).raw

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Sample:
        b = _Body(cls.KIND, body)
        required = set(SAMPLE_FIELDS) - set(SAMPLE_FIELDS_ADDED_LATER)
        if not required <= set(body) <= set(SAMPLE_FIELDS):
            raise Rejected("malformed", f"metrics fields {sorted(body)}, expected {list(SAMPLE_FIELDS)}")
        for name in body:
            value = body[name]
            if value is None and name == "temperature_c":
                continue
            if not _is_number(value) or value < 0:
                raise b._bad(name, f"is not a finite non-negative number: {value!r}")
        b.integer("pid")
        b.integer("chain_height", 0)
        return cls(**body)


# Where an agent's rounds go (``edge_agent.round_clock``): training, scoring its peers and the global
# model, privacy accounting, encoding and signing what it sends, publishing its update and vote (until
# the broker acknowledges), verifying and decoding what it receives, the chain replica and its block
# proposals, and the rest of its message handling.
ROUND_PHASES = ("train", "score", "privacy", "sign", "send", "verify", "ledger", "protocol")


@dataclass(frozen=True)
class RoundTimes(Message):
    """One agent's seconds per phase in one round's window (a global model to the next) and the window's
    length; the rest of the window is waiting. On the agent's metrics topic, signed."""

    KIND: ClassVar[str] = "round-times"
    round: int
    wall_s: float
    seconds: dict[str, float]
    received: dict[str, int] = field(default_factory=dict)  # payload bytes received in the window, by traffic kind

    @property
    def waiting_s(self) -> float:
        return max(0.0, self.wall_s - sum(self.seconds.values()))

    def sealed(self, identity: Identity) -> bytes:
        return seal_message(identity, self, round_no=self.round).raw

    def to_body(self) -> dict[str, Any]:
        return _without(asdict(self), "received", {})

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> RoundTimes:
        b = _Body(cls.KIND, body)
        seconds = b.obj("seconds")
        if unknown := sorted(set(seconds) - set(ROUND_PHASES)):
            raise b._bad("seconds", f"names unknown phases {unknown} (known: {list(ROUND_PHASES)})")
        if bad := sorted(p for p, v in seconds.items() if not (_is_number(v) and v >= 0)):
            raise b._bad("seconds", f"holds no finite non-negative number of seconds for {bad}")
        received = b.obj("received", {})
        if unknown := sorted(set(received) - set(TRAFFIC_KINDS)):
            raise b._bad("received", f"names unknown kinds {unknown} (known: {list(TRAFFIC_KINDS)})")
        if bad := sorted(k for k, v in received.items() if not (type(v) is int and v >= 0)):
            raise b._bad("received", f"holds no non-negative whole number of bytes for {bad}")
        wall = b.number("wall_s")
        round_no = b.integer("round")
        if wall < 0 or round_no < 1:
            raise b._bad("wall_s" if wall < 0 else "round", "is out of range")
        return cls(round_no, wall, {p: float(v) for p, v in seconds.items()}, dict(received))


KINDS: dict[str, type[Message]] = {
    kind.KIND: kind
    for kind in (
        Genesis,
        Register,
        Join,
        Leave,
        GlobalModel,
        Update,
        Manifest,
        Vote,
        Result,
        Reward,
        Final,
        Abort,
        WantBlock,
        SyncRequest,
        Evidence,
        Sample,
        RoundTimes,
    )
}  # envelope type -> its body's class ("task" bodies are TaskSpec: read_task)
