"""``bpcv monitor``: a live terminal view of a fleet and its running task, from the broker.

It subscribes to what every member publishes anyway — status (retained online/offline), signed psutil
samples, the rounds' manifests, votes and results (never the models, except one global model per
round) — verifies each signature against the consortium's genesis, and redraws a table every second:
per node its status, CPU, RSS, temperature, ledger CPU and last vote; above it, the round's progress.

``FleetView`` is the pure state (messages in, rows out); ``run_monitor`` is the MQTT and terminal side.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from bpcv.envelope import Envelope
from bpcv.errors import Rejected
from bpcv.identity import ROLES, Registry
from bpcv.intake import Intake, RateLimiter
from bpcv.messages import GlobalModel, Manifest, Result, Sample, read
from bpcv.mqtt import Bus
from bpcv.topics import Topics

log = logging.getLogger(__name__)
STALE_S = 5.0  # a node whose last sample is older than this shows as silent


@dataclass
class NodeRow:
    node: str
    status: str = "?"
    sample: Sample | None = None
    seen: float = 0.0  # when its last sample arrived (monotonic)
    last_vote: tuple[int, float] | None = None  # (round, wall time)
    role_in_round: str = ""


@dataclass
class RoundProgress:
    task: str = ""
    round: int = 0
    roster: list[str] = field(default_factory=list)
    updates: int | None = None  # accepted for validation (from the manifest)
    votes: set[str] = field(default_factory=set)
    result: Result | None = None
    started: float = 0.0


class FleetView:
    """What the monitor knows, updated message by message."""

    def __init__(self, topics: Topics) -> None:
        self.topics = topics
        self.nodes: dict[str, NodeRow] = {}
        self.progress = RoundProgress()
        self.history: list[str] = []  # one line per decided round

    def row(self, node: str) -> NodeRow:
        return self.nodes.setdefault(node, NodeRow(node))

    def on_status(self, node: str, payload: bytes) -> None:
        self.row(node).status = payload.decode(errors="replace")[:16] or "?"

    def on_sample(self, node: str, sample: Sample, now: float) -> None:
        row = self.row(node)
        row.sample, row.seen = sample, now
        if row.status == "?":
            row.status = "online"

    def behind(self, nodes: Iterable[str], height: int, now: float) -> list[str]:
        """The nodes among ``nodes`` still reporting (not silent) whose chain replica is below ``height``."""
        rows = [self.nodes[n] for n in nodes if n in self.nodes]
        return sorted(r.node for r in rows if r.sample and r.sample.chain_height < height and now - r.seen <= STALE_S)

    def on_global(self, env: Envelope, message: GlobalModel, now: float) -> None:
        if (env.task, env.round) == (self.progress.task, self.progress.round):
            return  # the coordinator asking again
        self.progress = RoundProgress(env.task, env.round, list(message.roster), started=now)

    def on_manifest(self, env: Envelope, message: Manifest) -> None:
        if (env.task, env.round) == (self.progress.task, self.progress.round):
            self.progress.updates = len(message.updates)

    def on_vote(self, env: Envelope) -> None:
        self.row(env.sender).last_vote = (env.round, env.ts)
        if (env.task, env.round) == (self.progress.task, self.progress.round):
            self.progress.votes.add(env.sender)

    def on_result(self, env: Envelope, result: Result) -> None:
        if (env.task, env.round) == (self.progress.task, self.progress.round):
            self.progress.result = result
        value = result.value
        line = f"round {env.round}: {result.metric or 'metric'} {value:.4f}" if value is not None else ""
        line += f", eliminated {result.eliminated or '-'}, proposer {result.proposer or '-'}"
        if not self.history or not self.history[-1].startswith(f"round {env.round}:"):
            self.history.append(line)

    def progress_line(self, now: float) -> str:
        p = self.progress
        if not p.task:
            return "no round seen yet (waiting for a task's global model)"
        head = f"task {p.task} · round {p.round} · {now - p.started:.0f}s · roster {len(p.roster)}"
        if p.result is not None:
            return f"{head} · decided"
        if p.updates is None:
            return f"{head} · training (updates coming in)"
        return f"{head} · validating: {len(p.votes)}/{p.updates} votes"

    def rows(self, now: float) -> list[dict[str, str]]:
        """The table, one dict of display strings per node."""
        out = []
        in_round = set(self.progress.roster)
        for node in sorted(self.nodes):
            r = self.nodes[node]
            s = r.sample
            silent = s is not None and now - r.seen > STALE_S
            vote = "-"
            if r.last_vote:
                vote = f"round {r.last_vote[0]} at {time.strftime('%H:%M:%S', time.localtime(r.last_vote[1]))}"
            out.append(
                {
                    "node": node,
                    "status": r.status + (" (silent)" if silent else ""),
                    "round": "active" if node in in_round else "",
                    "cpu": f"{s.cpu_percent:.0f}%" if s else "-",
                    "rss": f"{s.rss_bytes / 2**20:.0f} MiB" if s else "-",
                    "temp": f"{s.temperature_c:.0f}°C" if s and s.temperature_c is not None else "-",
                    "ledger": f"#{s.chain_height} {s.ledger_cpu_s:.2f}s" if s else "-",
                    "last_vote": vote,
                }
            )
        return out


class MonitorClient:
    """Routes verified messages into a FleetView."""

    def __init__(self, view: FleetView, intake: Intake) -> None:
        self.view, self.intake = view, intake

    def subscriptions(self) -> list[str]:
        base = self.view.topics.base
        return [
            self.view.topics.all_status(),
            self.view.topics.all_metrics(),
            f"{base}/tasks/+/round/+/global",
            f"{base}/tasks/+/round/+/manifest",
            f"{base}/tasks/+/round/+/vote/+",
            f"{base}/tasks/+/round/+/result",
        ]

    def handle(self, topic: str, payload: bytes, now: float) -> None:
        try:
            levels = self.view.topics.parse(topic)
        except ValueError:
            return
        if levels[0] == "nodes" and len(levels) == 3:
            if levels[2] == "status":
                self.view.on_status(levels[1], payload)
            elif levels[2] == "metrics":
                env = self.intake.open(payload, ROLES, topic, topic_sender=levels[1])
                if env is not None and env.type == Sample.KIND:
                    try:
                        self.view.on_sample(levels[1], read(env, Sample), now)
                    except Rejected as exc:
                        self.intake.reject(exc, topic)
            return
        if levels[0] != "tasks" or len(levels) < 5 or levels[2] != "round" or not payload:
            return  # not a round message, or an agent clearing its retained vote
        kind = levels[4]
        sender = levels[5] if kind == "vote" and len(levels) == 6 else None
        env = self.intake.open(payload, ("agent",) if sender else ("coordinator",), topic, topic_sender=sender)
        if env is None or env.type != kind:
            return
        try:
            if kind == "global":
                self.view.on_global(env, read(env, GlobalModel), now)
            elif kind == "manifest":
                self.view.on_manifest(env, read(env, Manifest))
            elif kind == "vote":
                self.view.on_vote(env)
            elif kind == "result":
                self.view.on_result(env, read(env, Result))
        except Rejected as exc:
            self.intake.reject(exc, topic)


def render(view: FleetView, now: float):  # noqa: ANN201 - a rich renderable
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(expand=True, title=view.progress_line(now), title_justify="left")
    for name, justify in (
        ("node", "left"),
        ("status", "left"),
        ("in round", "left"),
        ("CPU", "right"),
        ("RSS", "right"),
        ("temp", "right"),
        ("chain, ledger CPU", "right"),
        ("last vote", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in view.rows(now):
        style = "red" if r["status"].startswith("offline") or "silent" in r["status"] else None
        table.add_row(
            r["node"], r["status"], r["round"], r["cpu"], r["rss"], r["temp"], r["ledger"], r["last_vote"], style=style
        )
    recent = Text("\n".join(view.history[-5:]) or "no round decided yet", style="dim")
    return Group(table, recent)


def run_monitor(
    bus_factory: Callable[[Callable[[str, bytes], None], list[str]], Bus],
    registry: Registry,
    base_topic: str,
    duration: float | None = None,
    live: bool = True,
) -> FleetView:
    """Watch until interrupted (or ``duration`` seconds); redraw every second when ``live``, else print
    one table at the end. Returns the final view."""
    from rich.console import Console
    from rich.live import Live

    inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
    view = FleetView(Topics(base_topic))
    client = MonitorClient(view, Intake(registry, "monitor", limiter=RateLimiter(rate=50, burst=500)))
    bus = bus_factory(lambda t, p: inbox.put((t, p)), client.subscriptions())
    bus.connect()
    console = Console()
    screen = Live(render(view, time.monotonic()), console=console, refresh_per_second=2) if live else None
    deadline = time.monotonic() + duration if duration else None
    next_draw = 0.0
    if screen is not None:
        screen.start()
    try:
        while deadline is None or time.monotonic() < deadline:
            try:
                topic, payload = inbox.get(timeout=0.2)
                client.handle(topic, payload, time.monotonic())
            except queue.Empty:
                pass
            if screen is not None and time.monotonic() >= next_draw:
                screen.update(render(view, time.monotonic()))
                next_draw = time.monotonic() + 1.0
    except KeyboardInterrupt:
        pass
    finally:
        if screen is not None:
            screen.stop()
        bus.close()
    if screen is None:
        console.print(render(view, time.monotonic()))
    return view
