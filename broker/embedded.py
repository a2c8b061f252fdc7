"""A small MQTT 3.1.1 broker on asyncio: the zero-setup default when mosquitto is not installed.

Supports what the system uses: QoS 0 and 1 (QoS 2 accepted from publishers and delivered at QoS 1),
retained messages, ``+``/``#`` wildcards, last will, keepalive, client-id takeover, and a maximum
packet size. Sessions are always clean (nothing is persisted). No authentication: it listens on
loopback by default and is for demos and tests; use mosquitto (``broker/``) for a real fleet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from dataclasses import dataclass, field

log = logging.getLogger(__name__)
DEFAULT_MAX_PACKET = 64 * 1024 * 1024
SYS_INTERVAL_S = 1.0  # how often the $SYS byte counters are published (mosquitto: sys_interval)
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14


class ProtocolError(Exception):
    """The client broke the protocol; its connection is closed."""


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching: ``+`` is one level, a trailing ``#`` the rest (and the parent level)."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    f_levels, t_levels = topic_filter.split("/"), topic.split("/")
    for i, f in enumerate(f_levels):
        if f == "#":
            return True
        if i >= len(t_levels) or (f != "+" and f != t_levels[i]):
            return False
    return len(f_levels) == len(t_levels)


def valid_filter(topic_filter: str) -> bool:
    levels = topic_filter.split("/")
    return bool(topic_filter) and all(
        (lv == "#" and i == len(levels) - 1) or lv == "+" or ("#" not in lv and "+" not in lv)
        for i, lv in enumerate(levels)
    )


def encode_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_string(s: str) -> bytes:
    data = s.encode()
    return struct.pack(">H", len(data)) + data


def packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([(kind << 4) | flags]) + encode_length(len(body)) + body


class Reader:
    """Cursor over a packet body."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ProtocolError("packet shorter than its fields")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u16(self) -> int:
        return struct.unpack(">H", self.take(2))[0]

    def string(self) -> str:
        try:
            return self.take(self.u16()).decode()
        except UnicodeDecodeError as exc:
            raise ProtocolError("string is not UTF-8") from exc

    def rest(self) -> bytes:
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return out


@dataclass
class Session:
    client_id: str
    writer: asyncio.StreamWriter
    keepalive: int
    will: tuple[str, bytes, int, bool] | None
    subscriptions: dict[str, int] = field(default_factory=dict)
    outbox: asyncio.Queue = field(default_factory=asyncio.Queue)
    next_id: int = 0

    def packet_id(self) -> int:
        self.next_id = self.next_id % 65535 + 1
        return self.next_id

    def send(self, data: bytes) -> None:
        self.outbox.put_nowait(data)


class EmbeddedBroker:
    """Serve MQTT on ``host:port`` until stopped."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883, max_packet: int = DEFAULT_MAX_PACKET) -> None:
        self.host, self.port, self.max_packet = host, port, max_packet
        self.sessions: dict[str, Session] = {}
        self.retained: dict[str, tuple[bytes, int]] = {}
        self.bytes_received = self.bytes_sent = 0
        self._server: asyncio.base_events.Server | None = None
        self._sys_task: asyncio.Task | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve_client, self.host, self.port, limit=2**20)
        self.port = self._server.sockets[0].getsockname()[1]
        self._sys_task = asyncio.create_task(self._publish_sys())
        log.info("embedded MQTT broker listening on %s:%d", self.host, self.port)

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    async def _publish_sys(self) -> None:
        """Publish the traffic counters as mosquitto does: retained, under $SYS/broker/bytes/."""
        while True:
            await asyncio.sleep(SYS_INTERVAL_S)
            self._publish("$SYS/broker/bytes/received", str(self.bytes_received).encode(), 0, True)
            self._publish("$SYS/broker/bytes/sent", str(self.bytes_sent).encode(), 0, True)

    async def stop(self) -> None:
        """Stop listening and close every client connection."""
        if self._sys_task is not None:
            self._sys_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sys_task
        for session in list(self.sessions.values()):
            session.send(b"")
            session.writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _read_packet(self, reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
        first = (await reader.readexactly(1))[0]
        length, multiplier, header_bytes = 0, 1, 1
        for _ in range(4):
            byte = (await reader.readexactly(1))[0]
            header_bytes += 1
            length += (byte & 0x7F) * multiplier
            multiplier *= 128
            if not byte & 0x80:
                break
        else:
            raise ProtocolError("remaining length longer than 4 bytes")
        if length > self.max_packet:
            raise ProtocolError(f"packet of {length} bytes exceeds the {self.max_packet}-byte limit")
        body = await reader.readexactly(length)
        self.bytes_received += header_bytes + length
        return first >> 4, first & 0x0F, body

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session: Session | None = None
        writer_task = None
        clean = False
        try:
            kind, _flags, body = await asyncio.wait_for(self._read_packet(reader), timeout=10)
            if kind != CONNECT:
                raise ProtocolError("first packet is not CONNECT")
            session = self._connect(body, writer)
            if session is None:
                return
            writer_task = asyncio.create_task(self._write_loop(session))
            timeout = session.keepalive * 1.5 if session.keepalive else None
            while True:
                kind, flags, body = await asyncio.wait_for(self._read_packet(reader), timeout=timeout)
                if kind == DISCONNECT:
                    clean = True
                    return
                self._handle(session, kind, flags, body)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.TimeoutError):
            pass
        except ProtocolError as exc:
            log.warning("closing %s: %s", session.client_id if session else "client", exc)
        finally:
            if session is not None and self.sessions.get(session.client_id) is session:
                del self.sessions[session.client_id]
                if not clean and session.will is not None:
                    self._publish(*session.will)
            if writer_task is not None:
                session.send(b"")  # type: ignore[union-attr]
                await asyncio.gather(writer_task, return_exceptions=True)
            writer.close()

    async def _write_loop(self, session: Session) -> None:
        while True:
            data = await session.outbox.get()
            if not data:
                return
            session.writer.write(data)
            self.bytes_sent += len(data)
            await session.writer.drain()

    def _connect(self, body: bytes, writer: asyncio.StreamWriter) -> Session | None:
        r = Reader(body)
        name, level = r.string(), r.take(1)[0]
        if (name, level) not in (("MQTT", 4), ("MQIsdp", 3)):
            writer.write(packet(CONNACK, 0, b"\x00\x01"))  # unacceptable protocol version
            return None
        flags, keepalive = r.take(1)[0], r.u16()
        client_id = r.string() or f"anon-{id(writer):x}"
        will = None
        if flags & 0x04:
            will_topic, will_msg = r.string(), r.take(r.u16())
            will = (will_topic, will_msg, (flags >> 3) & 0x03, bool(flags & 0x20))
        old = self.sessions.get(client_id)
        if old is not None:
            old.will = None
            old.writer.close()
        session = Session(client_id, writer, keepalive, will)
        self.sessions[client_id] = session
        session.send(packet(CONNACK, 0, b"\x00\x00"))
        return session

    def _handle(self, session: Session, kind: int, flags: int, body: bytes) -> None:
        r = Reader(body)
        if kind == PUBLISH:
            qos, retain = (flags >> 1) & 0x03, bool(flags & 0x01)
            topic = r.string()
            if not topic or "+" in topic or "#" in topic:
                raise ProtocolError(f"invalid publish topic {topic!r}")
            pid = r.u16() if qos else 0
            if not topic.startswith("$"):  # the $SYS tree is the broker's own, as in mosquitto
                self._publish(topic, r.rest(), qos, retain)
            if qos == 1:
                session.send(packet(PUBACK, 0, struct.pack(">H", pid)))
            elif qos == 2:
                session.send(packet(PUBREC, 0, struct.pack(">H", pid)))
        elif kind == PUBREL:
            session.send(packet(PUBCOMP, 0, body[:2]))
        elif kind in (PUBACK, PUBREC, PUBCOMP):
            if kind == PUBREC:
                session.send(packet(PUBREL, 2, body[:2]))
        elif kind == SUBSCRIBE:
            pid = r.u16()
            granted, new_filters = [], []
            while r.pos < len(body):
                topic_filter, qos = r.string(), r.take(1)[0]
                if not valid_filter(topic_filter) or qos > 2:
                    granted.append(0x80)
                    continue
                session.subscriptions[topic_filter] = min(qos, 1)
                granted.append(min(qos, 1))
                new_filters.append(topic_filter)
            session.send(packet(SUBACK, 0, struct.pack(">H", pid) + bytes(granted)))
            for topic, (payload, qos) in list(self.retained.items()):
                matching = [session.subscriptions[f] for f in new_filters if topic_matches(f, topic)]
                if matching:
                    self._deliver(session, topic, payload, min(qos, max(matching)), retain=True)
        elif kind == UNSUBSCRIBE:
            pid = r.u16()
            while r.pos < len(body):
                session.subscriptions.pop(r.string(), None)
            session.send(packet(UNSUBACK, 0, struct.pack(">H", pid)))
        elif kind == PINGREQ:
            session.send(packet(PINGRESP, 0, b""))
        else:
            raise ProtocolError(f"unexpected packet type {kind}")

    def _publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        if retain:
            if payload:
                self.retained[topic] = (payload, min(qos, 1))
            else:
                self.retained.pop(topic, None)
        for session in list(self.sessions.values()):
            granted = [q for f, q in session.subscriptions.items() if topic_matches(f, topic)]
            if granted:
                self._deliver(session, topic, payload, min(qos, max(granted), 1), retain=False)

    def _deliver(self, session: Session, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        header = mqtt_string(topic) + (struct.pack(">H", session.packet_id()) if qos else b"")
        session.send(packet(PUBLISH, (qos << 1) | int(retain), header + payload))


def run_embedded(host: str, port: int, max_packet: int = DEFAULT_MAX_PACKET) -> None:
    """Run the embedded broker in this process until interrupted."""
    broker = EmbeddedBroker(host, port, max_packet)
    try:
        asyncio.run(broker.serve_forever())
    except KeyboardInterrupt:
        pass
