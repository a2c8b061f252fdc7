"""One small MQTT client per service (paho-mqtt 2.x, by composition).

Callbacks never do work: every message is handed to ``on_message`` which only enqueues. Subscriptions
are made in ``on_connect`` so a reconnect resubscribes. The node's retained status topic carries
``online`` and is the last will (``offline``) for when the connection drops.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bpcv.envelope import DEFAULT_MAX_BYTES
from bpcv.errors import BpcvError, ConfigError

log = logging.getLogger(__name__)


class BrokerUnavailable(BpcvError):
    """The broker could not be reached in time."""


@dataclass(frozen=True)
class TlsFiles:
    """TLS material for a broker connection: the CA to trust, and this node's client certificate."""

    ca: str
    cert: str = ""
    key: str = ""


@dataclass(frozen=True)
class BrokerAddress:
    host: str = "127.0.0.1"
    port: int = 1883
    tls: TlsFiles | None = None

    @classmethod
    def parse(cls, url: str, tls: TlsFiles | None = None) -> BrokerAddress:
        """``mqtt://host:port`` (plain), ``mqtts://host:port`` (TLS, needs ``tls``) or ``host:port``."""
        parsed = urlparse(url if "://" in url else f"mqtt://{url}")
        if parsed.scheme not in ("mqtt", "tcp", "mqtts", "ssl") or not parsed.hostname:
            raise ConfigError(f"broker URL {url!r}: expected mqtt://HOST:PORT or mqtts://HOST:PORT")
        secure = parsed.scheme in ("mqtts", "ssl")
        try:
            port = parsed.port or (8883 if secure else 1883)
        except ValueError as exc:
            raise ConfigError(f"broker URL {url!r}: bad port") from exc
        if secure and (tls is None or not tls.ca):
            raise ConfigError(f"broker URL {url!r} is TLS: give the consortium CA (tls_ca) and this node's certificate")
        if not secure and tls is not None and tls.ca:
            raise ConfigError(f"TLS files are set but broker URL {url!r} is plain: use mqtts://")
        for path in (tls.ca, tls.cert, tls.key) if secure and tls else ():
            if path and not Path(path).is_file():
                raise ConfigError(f"TLS file {path} does not exist")
        return cls(parsed.hostname, port, tls if secure else None)

    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def _send_small_packets_at_once(_client: object, _userdata: object, sock: object) -> None:
    """TCP_NODELAY on the client's socket. With Nagle's algorithm a small write (an acknowledgement, the tail
    of a model) waits until the peer acknowledges the previous one, which the peer's delayed ACK holds back
    for up to 40 ms: a QoS 1 publish then waits that long for its PUBACK (docs/SCALE.md)."""
    with contextlib.suppress(OSError, AttributeError):  # a Unix socket or a websocket wrapper: leave it
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[attr-defined]


class Bus:
    """A connected MQTT client for one node."""

    def __init__(
        self,
        client_id: str,
        broker: BrokerAddress,
        on_message: Callable[[str, bytes], None],
        subscriptions: Iterable[str] = (),
        status_topic: str | None = None,
        keepalive: int = 30,
        persistent: bool = False,
        max_payload: int = DEFAULT_MAX_BYTES,
    ) -> None:
        """``persistent``: a persistent session (clean_session off), so the broker keeps this node's
        subscriptions and queues its QoS 1 messages while it is briefly away. ``max_payload``: larger
        messages are not sent (every receiver refuses them, and a broker's ``max_packet_size``
        disconnects the sender, whose client then resends them on every reconnect, for ever)."""
        self.max_payload = max_payload
        self.client_id = client_id
        self.broker = broker
        self._on_message_cb = on_message
        self._subscriptions = list(subscriptions)
        self._status_topic = status_topic
        self._kept: dict[str, bytes] = {}  # retained messages published again on every reconnect
        self._connected = threading.Event()
        self._keepalive = keepalive
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311, clean_session=not persistent
        )
        client.max_inflight_messages_set(64)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(min_delay=1, max_delay=15)
        if broker.tls is not None:
            client.tls_set(ca_certs=broker.tls.ca, certfile=broker.tls.cert or None, keyfile=broker.tls.key or None)
        if status_topic:
            client.will_set(status_topic, b"offline", qos=1, retain=True)
        client.on_socket_open = _send_small_packets_at_once
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client

    def subscribe(self, topic: str) -> None:
        """Subscribe now and after every reconnect."""
        if topic not in self._subscriptions:
            self._subscriptions.append(topic)
            if self._connected.is_set():
                self._client.subscribe(topic, qos=1)

    def unsubscribe(self, topic: str) -> None:
        """Stop listening to ``topic`` (now and after reconnects)."""
        if topic in self._subscriptions:
            self._subscriptions.remove(topic)
            if self._connected.is_set():
                self._client.unsubscribe(topic)

    def keep_retained(self, topic: str, payload: bytes) -> None:
        """Publish ``payload`` retained on ``topic`` now and again after every reconnect, since a broker that
        restarted without its store has lost it; an empty payload clears it and stops keeping it."""
        if payload:
            self._kept[topic] = payload
        else:
            self._kept.pop(topic, None)
        if self._connected.is_set():
            self._client.publish(topic, payload, qos=1, retain=True)

    def connect(self, timeout: float = 30.0) -> None:
        """Connect (retrying until ``timeout``) and start the network thread."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._client.connect(self.broker.host, self.broker.port, keepalive=self._keepalive)
                break
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise BrokerUnavailable(f"{self.client_id}: no MQTT broker at {self.broker.url()}: {exc}") from exc
                time.sleep(0.5)
        self._client.loop_start()
        if not self._connected.wait(max(1.0, deadline - time.monotonic())):
            self._client.loop_stop()
            raise BrokerUnavailable(f"{self.client_id}: broker at {self.broker.url()} did not accept the connection")

    def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, wait: float | None = 30.0
    ) -> bool:
        """Publish; with QoS 1 and ``wait`` set, block until the broker acknowledged (True) or not. A
        payload over ``max_payload`` is not sent (False, with a log line saying why). An acknowledgement
        is not delivery: an MQTT 3.1.1 broker acknowledges a message over its ``message_size_limit``,
        then drops it."""
        if len(payload) > self.max_payload:
            log.error(
                "%s: not publishing %s bytes on %s: over the %s-byte message limit of every receiver",
                self.client_id,
                f"{len(payload):,}",
                topic,
                f"{self.max_payload:,}",
            )
            return False
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if qos == 0 or wait is None:
            return info.rc == mqtt.MQTT_ERR_SUCCESS
        try:
            info.wait_for_publish(timeout=wait)
        except (RuntimeError, ValueError) as exc:
            log.warning("%s: publish to %s failed: %s", self.client_id, topic, exc)
            return False
        return info.is_published()

    def close(self) -> None:
        """Publish ``offline`` and disconnect cleanly."""
        if self._status_topic and self._connected.is_set():
            self.publish(self._status_topic, b"offline", retain=True, wait=5.0)
        self._client.disconnect()
        self._client.loop_stop()

    # paho callbacks: run on the network thread, keep them short
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        if reason_code.is_failure:
            log.error("%s: broker refused connection: %s", self.client_id, reason_code)
            return
        for topic in self._subscriptions:
            client.subscribe(topic, qos=1)
        if self._status_topic:
            client.publish(self._status_topic, b"online", qos=1, retain=True)
        for topic, payload in list(self._kept.items()):
            client.publish(topic, payload, qos=1, retain=True)
        self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        self._connected.clear()
        if reason_code != 0:
            log.warning("%s: disconnected from broker (%s); reconnecting", self.client_id, reason_code)

    def _on_message(self, client, userdata, message) -> None:  # noqa: ANN001
        self._on_message_cb(message.topic, bytes(message.payload))
