"""Ed25519 identities (pynacl): key files, signing, and the registry of consortium members."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from bpcv.errors import ConfigError

NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ROLES = ("admin", "coordinator", "requester", "agent", "broker")


def check_node_id(node_id: str) -> str:
    """Return ``node_id`` if it is a valid id (also a valid single MQTT topic level), else raise."""
    if not NODE_ID.match(node_id):
        raise ConfigError(f"invalid node id {node_id!r}: use 1-64 letters, digits, '_', '.', '-'")
    return node_id


@dataclass(frozen=True)
class Identity:
    """A node id with its private signing key."""

    node_id: str
    signing_key: SigningKey

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte detached Ed25519 signature of ``message``."""
        return self.signing_key.sign(message).signature

    @classmethod
    def generate(cls, node_id: str) -> Identity:
        return cls(check_node_id(node_id), SigningKey.generate())

    def save(self, path: Path) -> None:
        """Write ``node_id`` and the hex seed, readable by the owner only (mode 0600)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{self.node_id}\n{bytes(self.signing_key).hex()}\n")

    @classmethod
    def load(cls, path: Path) -> Identity:
        try:
            lines = Path(path).read_text().split()
            node_id, seed_hex = lines[0], lines[1]
            seed = bytes.fromhex(seed_hex)
        except (OSError, IndexError, ValueError) as exc:
            raise ConfigError(f"cannot read key file {path}: {exc or 'expected node id and hex seed'}") from exc
        if len(seed) != 32:
            raise ConfigError(f"key file {path}: seed must be 32 bytes, got {len(seed)}")
        return cls(check_node_id(node_id), SigningKey(seed))


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``message`` by ``public_key``."""
    try:
        VerifyKey(public_key).verify(message, signature)
        return True
    except (BadSignatureError, ValueError, TypeError):
        return False


@dataclass(frozen=True)
class Member:
    """A registered consortium member."""

    node_id: str
    public_key: bytes
    role: str


class Registry:
    """The consortium members: those of the genesis, then those admitted by admin-signed registrations."""

    def __init__(self, members: dict[str, Member]) -> None:
        self._members = dict(members)

    @classmethod
    def from_body(cls, members: dict[str, dict[str, str]]) -> Registry:
        """Build from the genesis body's ``members`` mapping ``{id: {"key": hex, "role": role}}``."""
        out: dict[str, Member] = {}
        for node_id, entry in members.items():
            role = entry["role"]
            if role not in ROLES:
                raise ConfigError(f"member {node_id}: unknown role {role!r}")
            out[node_id] = Member(check_node_id(node_id), bytes.fromhex(entry["key"]), role)
        return cls(out)

    def get(self, node_id: str) -> Member | None:
        return self._members.get(node_id)

    def add(self, member: Member) -> None:
        """Admit a new member (a registration on the chain); an id is never reassigned."""
        check_node_id(member.node_id)
        if member.node_id in self._members:
            raise ConfigError(f"member {member.node_id} is already registered")
        if member.role not in ROLES:
            raise ConfigError(f"member {member.node_id}: unknown role {member.role!r}")
        self._members[member.node_id] = member

    def remove(self, *node_ids: str) -> None:
        """Undo registrations (a fork switch stepping back over a registration block)."""
        for node_id in node_ids:
            del self._members[node_id]

    def replace_with(self, other: Registry) -> None:
        """Take ``other``'s members, keeping this object (holders of it see the change)."""
        self._members = dict(other._members)

    def ids(self, role: str | None = None) -> list[str]:
        return sorted(m.node_id for m in self._members.values() if role is None or m.role == role)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._members
