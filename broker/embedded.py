"""The zero-setup broker when mosquitto is not installed: amqtt, a maintained asyncio MQTT 3.1.1 broker,
run in this process on loopback (anonymous, clean sessions, nothing persisted).

It stands in for mosquitto in demos and tests: QoS 0/1/2, retained messages, wildcards, last will,
keepalive and client-id takeover are amqtt's. It publishes its cumulative traffic counters every second
under ``$SYS/broker/load/bytes/`` (mosquitto: ``$SYS/broker/bytes/``; the coordinator reads both).
Unlike mosquitto (``max_packet_size`` in our configs) amqtt has no packet-size cap, so it is for
loopback only; a real fleet uses mosquitto (``broker/runner.py``, ``broker/secure.py``).
Why amqtt and not our own: docs/DECISIONS.md (issue #17, benchmarks/broker_compare.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)
SYS_INTERVAL_S = 1  # how often the $SYS counters are published (mosquitto: sys_interval; amqtt: whole seconds)


def amqtt_config(host: str, port: int) -> dict[str, Any]:
    """amqtt's broker configuration: one plain TCP listener, anonymous clients, $SYS every second, and
    no per-packet logging plugins (amqtt's defaults log every packet)."""
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            "amqtt.plugins.sys.broker.BrokerSysPlugin": {"sys_interval": SYS_INTERVAL_S},
        },
    }


class EmbeddedBroker:
    """amqtt serving MQTT on ``host:port`` in the running event loop, between ``start`` and ``stop``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.host, self.port = host, port
        self._broker: Any = None

    async def start(self) -> None:
        from amqtt.broker import Broker  # imported here: `bpcv` commands that need no broker skip it

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
