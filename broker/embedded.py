"""The zero-setup broker when mosquitto is not installed: amqtt, a maintained asyncio MQTT 3.1.1 broker,
run in this process on loopback (anonymous, clean sessions, nothing persisted).

It stands in for mosquitto in demos and tests: QoS 0/1/2, retained messages, wildcards, last will,
keepalive and client-id takeover are amqtt's. ``ByteCounters``, a plugin of ours, publishes the
cumulative traffic counters every second under mosquitto's names, ``$SYS/broker/bytes/{received,sent}``
(amqtt's own $SYS plugin encodes every packet again to measure it: 1.94-2.0 broker CPU-s a round at
N = 50, k = 5 against 1.62-1.85 with ours; and it publishes under ``$SYS/broker/load/bytes/``).
Unlike mosquitto (``max_packet_size`` in our configs) amqtt has no packet-size cap, so it is for
loopback only; a real fleet uses mosquitto (``broker/runner.py``, ``broker/secure.py``).
Why amqtt and not our own: docs/DECISIONS.md (issue #17, benchmarks/broker_compare.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from amqtt.broker import Broker
from amqtt.plugins.base import BasePlugin

log = logging.getLogger(__name__)
SYS_INTERVAL_S = 1.0  # how often the $SYS byte counters are published (mosquitto: sys_interval)


def amqtt_config(host: str, port: int) -> dict[str, Any]:
    """amqtt's broker configuration: one plain TCP listener, anonymous clients, our byte counters, and
    none of amqtt's per-packet logging plugins (its defaults log every packet)."""
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            f"{__name__}.ByteCounters": {},
        },
    }


def packet_size(remaining_length: int) -> int:
    """Bytes on the wire of an MQTT packet whose remaining length is ``remaining_length``: one byte of
    type and flags, 1-4 bytes of length (7 bits each), then the rest."""
    length_bytes = 1
    while remaining_length >= 128**length_bytes and length_bytes < 4:
        length_bytes += 1
    return 1 + length_bytes + remaining_length


class ByteCounters(BasePlugin):  # type: ignore[misc, type-arg]
    """An amqtt plugin: counts the bytes of every packet received and sent, from its header's remaining
    length, and publishes both totals every SYS_INTERVAL_S under mosquitto's $SYS/broker/bytes/ names."""

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self.received = self.sent = 0
        self._task: asyncio.Task | None = None

    async def on_broker_post_start(self) -> None:
        self._task = asyncio.create_task(self._publish())

    async def on_broker_pre_shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def on_mqtt_packet_received(self, *, packet: Any, session: Any = None) -> None:
        self.received += packet_size(packet.fixed_header.remaining_length) if packet else 0

    async def on_mqtt_packet_sent(self, *, packet: Any, session: Any = None) -> None:
        self.sent += packet_size(packet.fixed_header.remaining_length) if packet else 0

    async def _publish(self) -> None:
        while True:
            await asyncio.sleep(SYS_INTERVAL_S)
            for name, value in (("received", self.received), ("sent", self.sent)):
                await self.context.broadcast_message(f"$SYS/broker/bytes/{name}", str(value).encode())


class EmbeddedBroker:
    """amqtt serving MQTT on ``host:port`` in the running event loop, between ``start`` and ``stop``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.host, self.port = host, port
        self._broker: Any = None

    async def start(self) -> None:
        for name in ("amqtt", "transitions"):  # both log every connection and state change at INFO
            logging.getLogger(name).setLevel(logging.WARNING)
        self._broker = Broker(amqtt_config(self.host, self.port))
        await self._broker.start()
        log.info("embedded MQTT broker (amqtt) listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        """Close every client connection and stop listening."""
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None


def run_embedded(host: str, port: int) -> None:
    """Run the embedded broker in this process until interrupted."""

    async def serve() -> None:
        broker = EmbeddedBroker(host, port)
        await broker.start()
        try:
            await asyncio.Event().wait()  # until cancelled (Ctrl-C, SIGTERM via asyncio.run's teardown)
        finally:
            await broker.stop()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
