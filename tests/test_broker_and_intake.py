"""The embedded broker (amqtt in-process) with real paho clients, and the intake's replay checks."""

import asyncio
import contextlib
import socket
import threading
import time

import pytest

from bpcv.envelope import seal
from bpcv.identity import Identity, Registry
from bpcv.intake import Intake, RateLimiter
from bpcv.mqtt import BrokerAddress, BrokerUnavailable, Bus
from bpcv.topics import BROKER_BYTES, broker_counter
from broker.embedded import EmbeddedBroker, packet_size
from broker.runner import free_port


@pytest.fixture()
def embedded():
    broker = EmbeddedBroker("127.0.0.1", free_port())
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    asyncio.run_coroutine_threadsafe(broker.start(), loop).result(timeout=10)
    yield BrokerAddress("127.0.0.1", broker.port)
    asyncio.run_coroutine_threadsafe(broker.stop(), loop).result(timeout=5)
    time.sleep(0.1)
    loop.call_soon_threadsafe(loop.stop)


def wait_until(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not pred() and time.monotonic() < deadline:
        time.sleep(0.02)
    return pred()


def test_publish_subscribe_retained_large_payload_and_last_will(embedded):
    got = []
    watcher = Bus("watcher", embedded, lambda t, p: got.append((t, p)), ["x/#", "status/+"])
    watcher.connect()
    sender = Bus("sender", embedded, lambda t, p: None, status_topic="status/sender")
    sender.connect()
    big = bytes(range(256)) * 4000  # ~1 MB, like a few models
    assert sender.publish("x/model", big)
    assert sender.publish("x/retained", b"keep", retain=True)
    assert wait_until(lambda: ("x/model", big) in got)
    late = []
    late_bus = Bus("late", embedded, lambda t, p: late.append((t, p)), ["x/retained"])
    late_bus.connect()
    assert wait_until(lambda: ("x/retained", b"keep") in late)
    sender._client._sock.close()  # abrupt loss: the broker must publish the will
    assert wait_until(lambda: ("status/sender", b"offline") in got, timeout=10)
    watcher.close()
    late_bus.close()


def test_a_kept_retained_message_is_published_again_after_a_reconnect(embedded):
    """A broker that restarts without its store loses retained messages: a kept one comes back when its
    keeper reconnects. Cleared here by another client, the way a restart loses it."""
    keeper = Bus("keeper", embedded, lambda t, p: None)
    keeper.connect()

    def retained_seen() -> list[bytes]:
        seen: list[bytes] = []
        late = Bus("late", embedded, lambda t, p: seen.append(p), ["tasks/t1"])
        late.connect()
        time.sleep(0.5)
        late.close()
        return seen

    keeper.keep_retained("tasks/t1", b"announcement")
    assert wait_until(lambda: retained_seen() == [b"announcement"])
    other = Bus("other", embedded, lambda t, p: None)
    other.connect()
    assert other.publish("tasks/t1", b"", retain=True)  # the broker has no retained message now
    assert retained_seen() == []
    keeper._client._sock.close()  # a dropped connection: paho reconnects
    assert wait_until(lambda: retained_seen() == [b"announcement"], timeout=20)
    keeper.keep_retained("tasks/t1", b"")  # cleared, and no longer kept
    assert wait_until(lambda: retained_seen() == [], timeout=5)
    keeper.close()
    other.close()


def test_embedded_broker_counts_its_traffic_under_sys(embedded):
    """Cumulative bytes received and sent under $SYS every second (bpcv report's bytes per round, read
    by the coordinator through ``broker_counter``); a client that publishes into $SYS is cut off."""
    counters: dict[str, list[int]] = {"received": [], "sent": []}
    topics: set[str] = set()

    def on_message(topic: str, payload: bytes) -> None:
        topics.add(topic)
        counters[broker_counter(topic)].append(int(payload))

    watcher = Bus("traffic-watcher", embedded, on_message, list(BROKER_BYTES))
    watcher.connect()
    forger = Bus("forger", embedded, lambda t, p: None)
    forger.connect()
    forger.publish("$SYS/broker/load/bytes/sent", b"1", wait=2)
    sender = Bus("sender", embedded, lambda t, p: None)
    sender.connect()
    assert wait_until(lambda: counters["received"], timeout=3)
    before = counters["received"][-1]
    payload = bytes(300_000)
    assert sender.publish("x/blob", payload)
    assert wait_until(lambda: counters["received"][-1] >= before + len(payload), timeout=4)
    assert 1 not in counters["sent"] and counters["sent"] == sorted(counters["sent"])
    assert topics == {"$SYS/broker/bytes/received", "$SYS/broker/bytes/sent"}  # mosquitto's names
    for bus in (watcher, forger, sender):
        bus.close()


def test_garbage_and_broken_packets_close_only_their_own_connection(embedded):
    """One bad client (not MQTT at all, a CONNECT cut short, a PUBLISH before CONNECT, a client-id
    takeover) does not stop the broker serving the others."""
    got = []
    watcher = Bus("watcher", embedded, lambda t, p: got.append(p), ["x/#"])
    watcher.connect()
    for junk in (
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        bytes([0x10, 0x7F]) + b"\x00\x04MQ",  # a CONNECT announcing 127 bytes, then the line drops
        bytes([0x30, 0x05]) + b"\x00\x01xhi",  # PUBLISH before CONNECT
        bytes([0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]),  # a remaining length longer than MQTT allows
    ):
        with socket.create_connection((embedded.host, embedded.port), timeout=5) as raw:
            raw.sendall(junk)
            raw.shutdown(socket.SHUT_WR)
            raw.settimeout(1)  # a broker may also just wait for more
            with contextlib.suppress(OSError):
                while raw.recv(4096):
                    pass
    assert watcher.publish("x/after", b"still serving")
    first = Bus("device", embedded, lambda t, p: None)
    first.connect()
    twin = Bus("device", embedded, lambda t, p: None)  # the same client id: takes the session over
    twin.connect()
    first.close()
    twin.close()
    sender = Bus("sender", embedded, lambda t, p: None)
    sender.connect()
    assert sender.publish("x/later", b"and after a takeover")
    assert wait_until(lambda: b"still serving" in got and b"and after a takeover" in got, timeout=20), got
    watcher.close()
    sender.close()


@pytest.mark.parametrize(
    ("remaining", "size"), [(0, 2), (127, 129), (128, 131), (16_383, 16_386), (16_384, 16_388), (300_010, 300_014)]
)
def test_a_packet_is_counted_with_its_header(remaining, size):
    assert packet_size(remaining) == size  # 1 byte type, 1-4 bytes of length (7 bits each), the rest


def test_the_coordinator_reads_both_brokers_traffic_counters():
    assert broker_counter("$SYS/broker/bytes/sent") == "sent"  # mosquitto
    assert broker_counter("$SYS/broker/load/bytes/received") == "received"  # amqtt
    assert broker_counter("$SYS/broker/uptime") is None and broker_counter("bpcv/v1/metrics/n1") is None


def test_missing_broker_is_a_clear_error():
    bus = Bus("lonely", BrokerAddress("127.0.0.1", free_port()), lambda t, p: None)
    with pytest.raises(BrokerUnavailable, match="no MQTT broker at mqtt://127.0.0.1"):
        bus.connect(timeout=1.0)


def test_intake_rejects_replays_wrong_round_and_topic_spoofing():
    alice, bob = Identity.generate("alice"), Identity.generate("bob")
    reg = Registry.from_body({n.node_id: {"key": n.public_key.hex(), "role": "agent"} for n in (alice, bob)})
    intake = Intake(reg, "me")
    vote = seal(alice, "vote", "t", 2, {})
    assert intake.open(vote.raw, ("agent",), "v", task="t", round_no=2, topic_sender="alice") is not None
    assert intake.open(vote.raw, ("agent",), "v", task="t", round_no=2) is None
    assert intake.open(seal(alice, "vote", "t", 1, {}).raw, ("agent",), "v", round_no=2) is None
    assert intake.open(seal(alice, "vote", "t", 2, {}).raw, ("agent",), "v", topic_sender="bob") is None
    assert intake.open(seal(alice, "vote", "x", 2, {}).raw, ("agent",), "v", task="t") is None
    assert dict(intake.rejected) == {"replay": 1, "wrong-round": 1, "sender-mismatch": 1, "wrong-task": 1}


def test_intake_rate_limits_a_flooding_sender_before_checking_signatures():
    alice, bob = Identity.generate("alice"), Identity.generate("bob")
    reg = Registry.from_body({n.node_id: {"key": n.public_key.hex(), "role": "agent"} for n in (alice, bob)})
    now = [0.0]
    intake = Intake(reg, "me", limiter=RateLimiter(rate=10, burst=20, clock=lambda: now[0]))
    flood = [seal(alice, "vote", "t", 1, {}).raw for _ in range(100)]
    opened = [intake.open(raw, ("agent",), "v/alice", topic_sender="alice") for raw in flood]
    assert sum(e is not None for e in opened) == 20 and intake.rejected["rate-limited"] == 80
    assert intake.open(seal(bob, "vote", "t", 1, {}).raw, ("agent",), "v/bob", topic_sender="bob") is not None
    now[0] += 1.0  # ten more tokens a second later
    again = [
        intake.open(seal(alice, "vote", "t", 1, {}).raw, ("agent",), "v/alice", topic_sender="alice") for _ in range(15)
    ]
    assert sum(e is not None for e in again) == 10


def test_listener_of_reads_the_secure_config(tmp_path):
    from bpcv.errors import ConfigError
    from broker.secure import listener_of

    conf = tmp_path / "mosquitto.conf"
    conf.write_text("user x\nlistener 8883 broker.example\ncafile /x\n")
    assert listener_of(conf) == ("broker.example", 8883)
    conf.write_text("listener 1883\n")
    assert listener_of(conf) == ("", 1883)
    conf.write_text("allow_anonymous false\n")
    with pytest.raises(ConfigError, match="no listener line"):
        listener_of(conf)
    with pytest.raises(ConfigError, match="cannot read"):
        listener_of(tmp_path / "missing.conf")


def test_every_connection_sends_small_packets_at_once(embedded, tmp_path):
    """TCP_NODELAY on the client's socket, and mosquitto told to set it on its side: with Nagle's algorithm
    a QoS 1 publish waited for its PUBACK behind the peer's delayed ACK (docs/SCALE.md)."""
    from broker.runner import render_mosquitto_conf
    from broker.secure import render_secure_conf

    bus = Bus("quick", embedded, lambda t, p: None)
    bus.connect()
    sock = bus._client.socket()  # paho's socket: the option is not visible from the broker's side
    assert sock is not None and sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    bus.close()
    for conf in (render_mosquitto_conf("127.0.0.1", 1883), render_secure_conf(tmp_path, "127.0.0.1", 8883)):
        assert "\nset_tcp_nodelay true\n" in conf
