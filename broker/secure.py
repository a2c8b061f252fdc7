"""The locked-down broker: ``bpcv broker init DIR`` writes a CA, the broker's certificate, one client
certificate per node, an ACL file and a mosquitto.conf with a TLS listener that requires a client
certificate from the consortium CA.

Access rules (mosquitto ACL; ``%u`` is the client certificate's CN, which is the node id):
- every member reads everything under the base topic (only members hold a certificate, so only
  members read the chain and the rounds);
- every member writes only its own topics: its join, update, vote, status, metrics and sync request,
  and new blocks (any agent may be a round's proposer; the blocks themselves are verified);
- the coordinator also writes the round's global model, manifest and result, and sync answers, and
  reads the broker's traffic counters ($SYS/broker/bytes/#);
- the requester also writes tasks;
- a site broker's bridge (its certificate's CN, e.g. ``site-1``) reads and writes everything under the
  base topic: it carries its site's devices, whose own write rules hold at the site broker.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bpcv.errors import ConfigError
from bpcv.identity import check_node_id
from bpcv.mqtt import TlsFiles
from bpcv.topics import DEFAULT_BASE
from broker.credentials import issue, make_ca
from broker.runner import DEFAULT_MAX_PACKET, file_owner

MAX_QUEUED_MESSAGES = 1000  # per client: a round's models and votes for a node that is briefly away
MAX_INFLIGHT_MESSAGES = 64


def render_acl(
    base: str = DEFAULT_BASE,
    coordinators: tuple[str, ...] = (),
    requesters: tuple[str, ...] = (),
    bridges: tuple[str, ...] = (),
) -> str:
    lines = [
        "# written by `bpcv broker init` (BPCV-FL); %u is the client certificate's CN = the node id",
        f"pattern read {base}/#",
        f"pattern write {base}/tasks/+/join/%u",
        f"pattern write {base}/tasks/+/round/+/update/%u",
        f"pattern write {base}/tasks/+/round/+/vote/%u",
        f"pattern write {base}/nodes/%u/status",
        f"pattern write {base}/nodes/%u/metrics",
        f"pattern write {base}/chain/+/sync/%u",
        f"pattern write {base}/chain/+/block",
    ]
    for node in coordinators:
        lines += [
            "",
            f"user {node}",
            f"topic write {base}/tasks/+/round/+/global",
            f"topic write {base}/tasks/+/round/+/manifest",
            f"topic write {base}/tasks/+/round/+/result",
            f"topic write {base}/chain/+/sync/+/blocks",
            "topic read $SYS/broker/bytes/#",
        ]
    for node in requesters:
        lines += ["", f"user {node}", f"topic write {base}/tasks/+"]
    for node in bridges:
        lines += ["", f"user {node}", f"topic readwrite {base}/#"]
    return "\n".join(lines) + "\n"


def render_secure_conf(folder: Path, host: str, port: int, max_packet: int = DEFAULT_MAX_PACKET) -> str:
    folder = folder.resolve()
    owner = file_owner(folder)
    return f"""# written by `bpcv broker init` (BPCV-FL): TLS, a client certificate from the consortium CA, ACLs.
# mosquitto started as root switches to the user owning these files (their keys are mode 0600):
# run `bpcv broker init` as the broker's service user.
user {owner}
per_listener_settings false
allow_anonymous false
listener {port} {host}
cafile {folder / "ca.crt"}
certfile {folder / "server.crt"}
keyfile {folder / "server.key"}
tls_version tlsv1.2
require_certificate true
use_identity_as_username true
acl_file {folder / "acl"}
persistence true
persistence_location {folder / "data"}/
autosave_interval 5
log_dest stderr
log_type error
log_type warning
log_type notice
# $SYS/broker/bytes/* every second: the run's traffic per round (bpcv report).
sys_interval 1
# Send small packets (acknowledgements) at once, not after the client's delayed ACK (docs/SCALE.md).
set_tcp_nodelay true
# Models travel to every peer: large messages, and room in flight and in queue for a round.
max_packet_size {max_packet}
max_inflight_messages {MAX_INFLIGHT_MESSAGES}
max_queued_messages {MAX_QUEUED_MESSAGES}
max_queued_bytes 268435456
persistent_client_expiration 1h
"""


@dataclass(frozen=True)
class Roster:
    agents: tuple[str, ...]
    coordinators: tuple[str, ...] = ("coordinator",)
    requesters: tuple[str, ...] = ("requester",)
    brokers: tuple[str, ...] = ()  # the broker runner's member id, which publishes the broker's metrics
    bridges: tuple[str, ...] = ()  # site brokers bridged to this one (mosquitto's bridge, docs/SCALE.md)

    def all(self) -> tuple[str, ...]:
        return self.agents + self.coordinators + self.requesters + self.brokers + self.bridges


def listener_of(conf: Path) -> tuple[str, int]:
    """The (host, port) of the ``listener`` line of a mosquitto.conf; ConfigError without one."""
    try:
        lines = conf.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read {conf}: {exc.strerror} (run `bpcv broker init` first)") from exc
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "listener" and parts[1].isdigit():
            return (parts[2] if len(parts) > 2 else ""), int(parts[1])
    raise ConfigError(f"{conf} has no listener line")


def client_tls_files(folder: Path, node: str) -> TlsFiles:
    """A node's TLS files in the folder `bpcv broker init` wrote."""
    client = folder / "clients" / node
    return TlsFiles(str(folder / "ca.crt"), f"{client}.crt", f"{client}.key")


def init_broker(
    folder: Path, roster: Roster, host: str = "127.0.0.1", port: int = 8883, server_names: tuple[str, ...] = ()
) -> Path:
    """Write the CA, server and client credentials, ACL and mosquitto.conf into ``folder``; return the conf."""
    if (folder / "ca.key").exists():
        raise ConfigError(f"{folder} already holds a CA; refusing to replace it (issue new nodes from it instead)")
    for node in roster.all():
        check_node_id(node)
    ca = make_ca()
    ca.write(folder, "ca")
    issue(ca, host, server_names=tuple(dict.fromkeys((host, "localhost", *server_names)))).write(folder, "server")
    for node in roster.all():
        issue(ca, node).write(folder / "clients", node)
    acl = render_acl(coordinators=roster.coordinators, requesters=roster.requesters, bridges=roster.bridges)
    (folder / "acl").write_text(acl)
    (folder / "data").mkdir(exist_ok=True)
    conf = folder / "mosquitto.conf"
    conf.write_text(render_secure_conf(folder, host, port))
    return conf
