"""Hostile and broken clients: malformed packets (each answered with the
right MQTT 5 DISCONNECT reason or a plain MQTT 3 close, after which the
broker still serves other clients), random garbage, oversize headers,
SUBSCRIBE floods, slow readers, half-open and abandoned connections, and
the per-listener connection limit. The fixture fails a test if the broker
logged a sanitizer report or did not exit cleanly."""
import os
import random
import socket
import struct
import threading
import time

import pytest

import mqttraw as R
from mqttraw import packet, props, s, varint

# ---------------------------------------------------------------- the table

PID1 = struct.pack("!H", 1)


def v5props(version, raw=b""):
    """A v5 property block (raw bytes after the length), nothing for v3."""
    return varint(len(raw)) + raw if version == 5 else b""


# name -> (builder(version) -> bytes, v5 reason code, versions)
CASES = {
    "remaining-length-5-bytes": (
        lambda v: b"\x30\xff\xff\xff\xff\x7f", 0x81, (4, 5)),
    "remaining-length-not-minimal": (
        lambda v: b"\x30\x80\x00", 0x81, (4, 5)),
    "reserved-type-0": (
        lambda v: b"\x00\x00", 0x81, (4, 5)),
    "subscribe-flags-0": (
        lambda v: packet(R.SUBSCRIBE, 0, PID1 + v5props(v) + s("a") + b"\x00"), 0x81, (4, 5)),
    "subscribe-flags-3": (
        lambda v: packet(R.SUBSCRIBE, 3, PID1 + v5props(v) + s("a") + b"\x00"), 0x81, (4, 5)),
    "unsubscribe-flags-0": (
        lambda v: packet(R.UNSUBSCRIBE, 0, PID1 + v5props(v) + s("a")), 0x81, (4, 5)),
    "pubrel-flags-0": (
        lambda v: packet(R.PUBREL, 0, PID1), 0x81, (4, 5)),
    "puback-flags-2": (
        lambda v: packet(R.PUBACK, 2, PID1), 0x81, (4, 5)),
    "pingreq-flags-1": (
        lambda v: b"\xc1\x00", 0x81, (4, 5)),
    "pingreq-with-body": (
        lambda v: b"\xc0\x01\x00", 0x81, (4, 5)),
    "publish-qos-3": (
        lambda v: packet(R.PUBLISH, 6, s("t") + PID1 + v5props(v) + b"x"), 0x81, (4, 5)),
    "publish-qos0-dup": (
        lambda v: packet(R.PUBLISH, 8, s("t") + v5props(v) + b"x"), None, (4, 5)),
    "publish-topic-invalid-utf8": (
        lambda v: packet(R.PUBLISH, 0, s(b"a/\xff\xfe") + v5props(v) + b"x"), 0x81, (4, 5)),
    "publish-topic-overlong-utf8": (
        lambda v: packet(R.PUBLISH, 0, s(b"a\xc0\xaf") + v5props(v) + b"x"), 0x81, (4, 5)),
    "publish-topic-surrogate": (
        lambda v: packet(R.PUBLISH, 0, s(b"a\xed\xa0\x80") + v5props(v) + b"x"), 0x81, (4, 5)),
    "publish-topic-nul": (
        lambda v: packet(R.PUBLISH, 0, s(b"a\x00b") + v5props(v) + b"x"), 0x81, (4, 5)),
    "publish-topic-wildcard": (
        lambda v: packet(R.PUBLISH, 0, s("a/+") + v5props(v) + b"x"), 0x90, (4, 5)),
    "publish-topic-empty": (
        lambda v: packet(R.PUBLISH, 0, s("") + v5props(v) + b"x"), 0x90, (4, 5)),
    "publish-qos1-packet-id-0": (
        lambda v: packet(R.PUBLISH, 2, s("t") + b"\x00\x00" + v5props(v) + b"x"), 0x82, (4, 5)),
    "publish-qos2-packet-id-0": (
        lambda v: packet(R.PUBLISH, 4, s("t") + b"\x00\x00" + v5props(v) + b"x"), 0x82, (4, 5)),
    "subscribe-packet-id-0": (
        lambda v: packet(R.SUBSCRIBE, 2, b"\x00\x00" + v5props(v) + s("a") + b"\x00"), 0x82, (4, 5)),
    "subscribe-empty": (
        lambda v: packet(R.SUBSCRIBE, 2, PID1 + v5props(v)), 0x82, (4, 5)),
    "unsubscribe-empty": (
        lambda v: packet(R.UNSUBSCRIBE, 2, PID1 + v5props(v)), 0x82, (4, 5)),
    "subscribe-empty-filter": (
        lambda v: packet(R.SUBSCRIBE, 2, PID1 + v5props(v) + s("") + b"\x00"), 0x82, (4, 5)),
    "subscribe-options-reserved-bits": (
        lambda v: packet(R.SUBSCRIBE, 2, PID1 + v5props(v) + s("a") + b"\xc0"), 0x82, (4, 5)),
    "subscribe-options-v3-no-local": (
        lambda v: packet(R.SUBSCRIBE, 2, PID1 + s("a") + b"\x04"), None, (4,)),
    "subscribe-qos-3": (
        lambda v: packet(R.SUBSCRIBE, 2, PID1 + v5props(v) + s("a") + b"\x03"), 0x82, (4, 5)),
    "subscribe-retain-handling-3": (
        lambda v: packet(R.SUBSCRIBE, 2, PID1 + v5props(v) + s("a") + b"\x30"), 0x82, (5,)),
    "subscribe-filter-invalid-utf8": (
        lambda v: packet(R.SUBSCRIBE, 2, PID1 + v5props(v) + s(b"a\xff") + b"\x00"), 0x81, (4, 5)),
    "subscribe-second-entry-cut": (
        lambda v: packet(R.SUBSCRIBE, 2, PID1 + v5props(v) + s("a") + b"\x00" + s("b")), 0x81,
        (4, 5)),
    "subscribe-filter-length-beyond-packet": (
        lambda v: packet(R.SUBSCRIBE, 2, PID1 + v5props(v) + b"\x00\x10ab"), 0x81, (4, 5)),
    "publish-topic-length-beyond-packet": (
        lambda v: b"\x30\x03\x00\x05a", 0x81, (4, 5)),
    "puback-truncated": (
        lambda v: b"\x40\x01\x00", 0x81, (4, 5)),
    "pubrel-truncated": (
        lambda v: b"\x62\x01\x00", 0x81, (4, 5)),
    "v3-puback-trailing-bytes": (
        lambda v: packet(R.PUBACK, 0, PID1 + b"\x00"), None, (4,)),
    "v3-disconnect-with-body": (
        lambda v: b"\xe0\x01\x00", None, (4,)),
    "v3-auth-packet": (
        lambda v: b"\xf0\x00", None, (4,)),
    "v5-auth-unexpected": (
        lambda v: b"\xf0\x00", 0x82, (5,)),
    "v5-publish-props-length-beyond-packet": (
        lambda v: packet(R.PUBLISH, 0, s("t") + varint(10)), 0x81, (5,)),
    "v5-publish-duplicate-property": (
        lambda v: packet(R.PUBLISH, 0, s("t") + varint(4) + b"\x01\x01\x01\x01" + b"x"), 0x82, (5,)),
    "v5-publish-unknown-property": (
        lambda v: packet(R.PUBLISH, 0, s("t") + varint(2) + b"\x7f\x00" + b"x"), 0x81, (5,)),
    "v5-publish-property-not-allowed": (
        lambda v: packet(R.PUBLISH, 0, s("t") + props(session_expiry=5) + b"x"), 0x81, (5,)),
    "v5-publish-topic-alias-0": (
        lambda v: packet(R.PUBLISH, 0, s("t") + props(topic_alias=0) + b"x"), 0x94, (5,)),
    "v5-publish-topic-alias-too-big": (
        lambda v: packet(R.PUBLISH, 0, s("t") + props(topic_alias=65000) + b"x"), 0x94, (5,)),
    "v5-publish-unknown-alias": (
        lambda v: packet(R.PUBLISH, 0, s("") + props(topic_alias=3) + b"x"), 0x82, (5,)),
    "v5-subscription-id-0": (
        lambda v: R.subscribe(1, [("a", 0)], version=5, properties=props(subscription_id=0)),
        0x82, (5,)),
    "v5-disconnect-bad-reason": (
        lambda v: packet(R.DISCONNECT, 0, b"\x03\x00"), 0x82, (5,)),
    "v5-puback-bad-reason": (
        lambda v: packet(R.PUBACK, 0, PID1 + b"\x05\x00"), 0x82, (5,)),
    "second-connect": (
        lambda v: R.connect("again", version=v), 0x82, (4, 5)),
    "server-only-connack": (
        lambda v: b"\x20\x02\x00\x00" if v == 4 else b"\x20\x03\x00\x00\x00", 0x82, (4, 5)),
    "server-only-suback": (
        lambda v: packet(R.SUBACK, 0, PID1 + v5props(v) + b"\x00"), 0x82, (4, 5)),
    "server-only-unsuback": (
        lambda v: packet(R.UNSUBACK, 0, PID1 + (v5props(v) + b"\x00" if v == 5 else b"")), 0x82,
        (4, 5)),
    "server-only-pingresp": (
        lambda v: b"\xd0\x00", 0x82, (4, 5)),
}

TABLE = [(name, v) for name, (_, _, versions) in CASES.items() for v in versions]


def read_until_closed(r, timeout=3.0):
    """All bytes the server sends until it closes the connection; fails if it
    stays open for timeout."""
    data = bytes(r.buf)
    r.buf.clear()
    deadline = time.time() + timeout
    while True:
        left = deadline - time.time()
        assert left > 0, "the broker did not close the connection"
        r.sock.settimeout(left)
        try:
            chunk = r.sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


@pytest.mark.parametrize("name,version", TABLE, ids=[f"{n}-v{v}" for n, v in TABLE])
def test_malformed_packet(broker, name, version):
    build, rc5, _ = CASES[name]
    r = R.raw_connect(broker.port, f"bad-{version}", version=version)
    assert R.sub_ack(r, [("bad/x", 1)]) == [1]  # a session with state to clean up
    r.send(build(version))
    data = read_until_closed(r)
    if version == 5:
        expected = rc5 if rc5 is not None else 0x82
        r.buf += data
        p = r.recv(0.1)
        assert p.type == R.DISCONNECT, p
        assert p.rc == expected, f"DISCONNECT reason {p.rc:#x}, expected {expected:#x}"
        assert not r.buf, "nothing after DISCONNECT"
    else:
        assert data == b"", f"MQTT 3 gets a plain close, got {data!r}"
    r.close()
    # the broker serves a fresh client, and the session is gone
    R.roundtrip(broker.port, version, tag=name)
    again = R.Raw(broker.port, version=version)
    assert again.connect(f"bad-{version}", clean=False).session_present is False
    again.close()


def test_remaining_length_5_bytes_with_largest_packet_size(broker_factory):
    # with the default limit the 4th length byte already means "too large";
    # with the largest limit only the 5th byte tells: malformed
    b = broker_factory(conf="mqtt.max_packet_size = 268435460", workers=2)
    r = R.raw_connect(b.port, "len5", version=5)
    r.send(b"\x30\xff\xff\xff\xff\x7f")
    p = r.recv()
    assert (p.type, p.rc) == (R.DISCONNECT, 0x81)
    assert r.closed()
    R.roundtrip(b.port, 5)


@pytest.mark.parametrize("data", [
    R.publish("t", b"x"),                         # first packet not CONNECT
    b"\x10\xff\xff\xff\xff\x7f",                   # CONNECT with a 5-byte length
    # not MQTT at all ('G' reads as PUBACK, 'E' as a length of 69 bytes)
    b"GET / HTTP/1.1\r\nHost: example.org\r\nUser-Agent: test\r\nAccept: */*\r\n"
    b"Connection: close\r\n\r\n",
    R.packet(R.CONNECT, 0, s("MQTT") + b"\x09\x02\x00\x3c" + s("x")),  # unknown level
    R.packet(R.CONNECT, 0, s("MQTT") + b"\x04\x03\x00\x3c" + s("x")),  # reserved flag
    R.packet(R.CONNECT, 1, s("MQTT") + b"\x04\x02\x00\x3c" + s("x")),  # header flags
], ids=["publish-first", "connect-len5", "http", "bad-level", "connect-reserved",
        "connect-flags"])
def test_bad_first_packet(broker, data):
    r = R.Raw(broker.port)
    r.send(data)
    got = read_until_closed(r)
    # at most a refusing CONNACK, never a session
    if got:
        assert got[0] >> 4 == R.CONNACK and got[3] != 0, got
    r.close()
    R.roundtrip(broker.port)


def random_case(rng):
    """One fuzz input: the bytes to send after CONNECT."""
    kind = rng.randrange(4)
    if kind == 0:  # pure noise
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
    valid = [
        R.publish("fz/a", b"payload", qos=1, pid=7, version=5, properties=props(
            message_expiry=10, content_type="x", user_property=[("k", "v")])),
        R.subscribe(3, [("fz/#", 0x2d), ("$share/g/fz", 1)], version=5,
                    properties=props(subscription_id=5)),
        R.unsubscribe(4, ["fz/#", "x"], version=5),
        R.ack(R.PUBREC, 9, version=5, rc=0x10, properties=props(reason_string="r")),
        R.disconnect(5, rc=0x04, properties=props(session_expiry=0)),
        R.publish("fz/b", b"p", qos=2, pid=8, version=4),
        R.subscribe(5, [("fz/+", 2)], version=4),
    ]
    base = bytearray(rng.choice(valid))
    if kind == 1:  # flip bits
        for _ in range(rng.randrange(1, 6)):
            i = rng.randrange(len(base))
            base[i] ^= 1 << rng.randrange(8)
    elif kind == 2:  # cut or extend
        if rng.random() < 0.5:
            base = base[:rng.randrange(1, len(base))]
        else:
            base += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 20)))
    else:  # random bytes overwritten
        for _ in range(rng.randrange(1, 4)):
            base[rng.randrange(len(base))] = rng.randrange(256)
    # sometimes several packets back to back
    if rng.random() < 0.3:
        base += rng.choice(valid)
    return bytes(base)


def send_and_finish(port, data):
    """Sends data on a fresh connection, half-closes, and reads until the
    broker closes: the broker has then handled every byte."""
    sk = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        sk.sendall(data)
        sk.shutdown(socket.SHUT_WR)
        while sk.recv(65536):
            pass
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        sk.close()


def sys_counter(port, name, pred, timeout=4.0):
    """Waits until $SYS/brokers/<node>/<name> satisfies pred; returns it."""
    w = R.raw_connect(port, f"sys-{name.replace('/', '-')}", version=5)
    assert R.sub_ack(w, [(f"$SYS/brokers/+/{name}", 0)]) == [0]
    seen = []

    def ok():
        seen.extend(int(p.payload) for p in R.drain_publishes(w, quiet=0.1))
        return seen and pred(seen[-1])
    R.wait_until(ok, timeout=timeout, what=f"{name} (seen {seen[-3:]})")
    w.close()
    return seen[-1]


@pytest.mark.parametrize("seed", [1, 2])
def test_random_garbage_after_connect_never_crashes(broker_factory, seed):
    broker = broker_factory(conf="broker.sys_interval = 1s", workers=2)
    rng = random.Random(seed)
    for i in range(200):
        version = rng.choice([4, 5])
        prefix = R.connect(f"fuzz-{seed}-{i % 7}", version=version) if rng.random() < 0.9 else b""
        send_and_finish(broker.port, prefix + random_case(rng))
        if i % 50 == 49:
            assert broker.alive()
            R.roundtrip(broker.port, version, tag=f"fuzz{i}")
    assert broker.alive()
    R.roundtrip(broker.port, 4)
    R.roundtrip(broker.port, 5)
    # the garbage did reach the decoder
    assert sys_counter(broker.port, "metrics/packets/malformed", lambda v: v > 20)
    assert sys_counter(broker.port, "metrics/packets/protocol_errors", lambda v: v > 0)


@pytest.mark.parametrize("version", [4, 5])
def test_oversize_header_closes_without_reading_body(broker_factory, version):
    b = broker_factory(conf="mqtt.max_packet_size = 1KB", workers=2)
    r = R.raw_connect(b.port, f"big-{version}", version=version)
    # the header announces 100000 bytes; the body is never sent
    r.send(b"\x30" + varint(100000) + s("t"))
    data = read_until_closed(r, timeout=3)
    if version == 5:
        r.buf += data
        p = r.recv(0.1)
        assert (p.type, p.rc) == (R.DISCONNECT, 0x95)
    else:
        assert data == b""
    # a packet just under the limit is fine
    ok = R.raw_connect(b.port, f"big-ok-{version}", version=version)
    assert R.sub_ack(ok, [("t", 1)]) == [1]
    R.publish_ack(ok, "t", b"x" * 900, qos=1)
    assert R.recv_publishes(ok, 1)[0].payload == b"x" * 900
    ok.close()
    # before CONNECT too
    r = R.Raw(b.port)
    r.send(b"\x10" + varint(50000))
    assert read_until_closed(r, timeout=3) == b""
    R.roundtrip(b.port, version)


def test_subscribe_flood_capped_while_others_are_served(broker_factory):
    b = broker_factory(conf="mqtt.max_subscriptions = 100", workers=2)
    pub = R.raw_connect(b.port, "flood-retainer", version=5)
    for i in range(200):
        R.publish_ack(pub, f"flood/r/{i}", b"retained", qos=1, retain=True, pid=i + 1)
    flooder = R.raw_connect(b.port, "flooder", version=5)
    n = 3000
    blob = bytearray()
    for i in range(n):
        f = "#" if i % 10 == 0 else f"flood/s/{i}"
        blob += R.subscribe(i % 65000 + 1, [(f, 0)], version=5)
    result = {"subacks": [], "publishes": 0, "error": None}

    def flood():
        try:
            flooder.send(bytes(blob))
            while len(result["subacks"]) < n:
                p = flooder.recv(20)
                if p.type == R.SUBACK:
                    result["subacks"].append(p.rcs[0])
                elif p.type == R.PUBLISH:
                    result["publishes"] += 1
        except Exception as e:  # reported by the main thread
            result["error"] = e

    t = threading.Thread(target=flood)
    t.start()
    # meanwhile another client's round trips keep working
    other = R.raw_connect(b.port, "flood-other", version=4)
    assert R.sub_ack(other, [("other/t", 1)]) == [1]
    rounds = 0
    while t.is_alive() or rounds < 5:
        other.send(R.PINGREQ_BYTES)
        R.expect_skip(other, R.PINGRESP, timeout=5)
        R.publish_ack(other, "other/t", b"x", qos=1, pid=rounds % 60000 + 1)
        assert R.recv_publishes(other, 1, timeout=5)[0].payload == b"x"
        rounds += 1
    t.join()
    assert result["error"] is None, result["error"]
    codes = result["subacks"]
    # 1 "#" + 99 distinct filters fit in the quota of 100; every later
    # distinct filter is refused, while re-subscribing "#" stays allowed
    assert codes.count(0) == 100 + (n // 10 - 1)
    assert codes.count(0x97) == n - codes.count(0)
    assert all(c == 0 for i, c in enumerate(codes) if i % 10 == 0)
    assert result["publishes"] > 0  # retained messages were sent for "#"
    R.roundtrip(b.port, 5)
    for c in (pub, flooder, other):
        c.close()


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_slow_reader_does_not_hurt_others(broker_factory):
    b = broker_factory(conf="mqtt.max_pending_bytes = 1MB\nbroker.sys_interval = 1s", workers=2)
    slow = R.Raw(b.port, version=4)
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    assert slow.connect("slow-reader").rc == 0
    assert R.sub_ack(slow, [("flow/#", 0)]) == [0]  # and never read again
    fast = R.raw_connect(b.port, "fast-reader", version=5)
    assert R.sub_ack(fast, [("flow/#", 0)]) == [0]
    pub = R.raw_connect(b.port, "flow-pub", version=5)
    payload = os.urandom(1000)
    batches, per = 30, 400
    for k in range(batches):
        blob = b"".join(R.publish(f"flow/{k}", payload, version=5) for _ in range(per))
        pub.send(blob)
        R.publish_ack(pub, "flow-sync", b"", qos=1, pid=k + 1)
        got = R.recv_publishes(fast, per, timeout=10)
        assert all(p.payload == payload and p.topic == f"flow/{k}" for p in got)
    # 12 MB went to the slow reader; the broker kept about 1 MB for it
    assert rss_kb(b.proc.pid) < 300 * 1024
    # most of it was dropped, and counted
    sys_counter(b.port, "metrics/messages/dropped/slow_reader", lambda v: v > batches * per // 2)
    R.roundtrip(b.port, 4)
    for c in (slow, fast, pub):
        c.close()


def test_half_open_connections_closed_after_idle_timeout(broker_factory):
    b = broker_factory(conf="mqtt.idle_timeout = 1s", workers=2)
    silent = socket.create_connection(("127.0.0.1", b.port))
    partial = socket.create_connection(("127.0.0.1", b.port))
    partial.sendall(R.connect("partial")[:7])
    active = R.raw_connect(b.port, "active-one", version=4, keepalive=0)
    start = time.time()
    for sk in (silent, partial):
        sk.settimeout(0.4)
        with pytest.raises(socket.timeout):
            sk.recv(1)  # still open at first
    for sk in (silent, partial):
        sk.settimeout(max(0.1, start + 4 - time.time()))
        assert sk.recv(1) == b"", "closed by the broker"
        sk.close()
    # a client that did CONNECT is not subject to it
    active.send(R.PINGREQ_BYTES)
    active.expect(R.PINGRESP)
    active.close()
    R.roundtrip(b.port)


def test_listener_max_connections(broker_factory):
    b = broker_factory(start=False, conf="listener.tcp.default.max_connections = 5", workers=2)
    with open(b.conf_path, "a") as f:
        f.write(f"listener.tcp.default = 127.0.0.1:{b.port}\n")
    b.start()  # the fixture's readiness probe connects once, then closes
    clients = []

    def connect_ok(cid):
        try:
            r = R.Raw(b.port, version=5)
            return r if r.connect(cid).rc == 0 else None
        except (ConnectionError, TimeoutError, OSError):
            return None

    for i in range(5):
        clients.append(R.wait_until(lambda: connect_ok(f"mc-{i}"), what=f"connection {i}"))
    sixth = R.Raw(b.port, version=5)
    sixth.send(R.connect("mc-6", version=5))
    assert read_until_closed(sixth) == b""
    sixth.close()
    for i, c in enumerate(clients):
        assert R.sub_ack(c, [(f"mc/{i}", 1)]) == [1]
        R.publish_ack(c, f"mc/{i}", b"x", qos=1)
        assert R.recv_publishes(c, 1)[0].payload == b"x"
    # a slot frees when a client leaves
    clients.pop().close()
    clients.append(R.wait_until(lambda: connect_ok("mc-again"), what="a free slot"))
    for c in clients:
        c.close()


def test_thousands_of_abandoned_connections(broker):
    rng = random.Random(3)
    linger_rst = struct.pack("ii", 1, 0)
    for i in range(3000):
        sk = socket.socket()
        sk.connect(("127.0.0.1", broker.port))
        kind = i % 4
        if kind == 1:
            sk.sendall(R.connect(f"ab-{i}")[:rng.randrange(1, 10)])
        elif kind == 2:
            sk.sendall(R.connect(f"ab-{i % 50}", version=5) + R.subscribe(1, [("ab/#", 1)], version=5))
        elif kind == 3:
            sk.sendall(R.connect(f"ab-{i % 50}", version=4, clean=False))
        if i % 2:
            sk.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_rst)  # RST
        sk.close()
        if i % 500 == 499:
            R.roundtrip(broker.port, tag=f"ab{i}")
    assert broker.alive()
    R.roundtrip(broker.port, 4)
    R.roundtrip(broker.port, 5)


def test_connection_slots_given_back_after_churn(broker_factory):
    """Abandoned, refused and handed-off connections must all give their
    listener slot back, or max_connections would slowly lock clients out."""
    b = broker_factory(start=False, workers=4,
                       conf="listener.tcp.default.max_connections = 10")
    with open(b.conf_path, "a") as f:
        f.write(f"listener.tcp.default = 127.0.0.1:{b.port}\n")
    b.start()
    linger_rst = struct.pack("ii", 1, 0)
    for i in range(400):
        sk = socket.socket()
        sk.connect(("127.0.0.1", b.port))
        if i % 3 == 0:
            sk.sendall(R.connect(f"churn-{i % 40}", version=4 + i % 2))
        elif i % 3 == 1:
            sk.sendall(R.connect(f"churn-{i % 40}", version=5) + R.subscribe(1, [("c/#", 1)], 5))
            sk.settimeout(5)
            try:
                sk.recv(1)  # CONNACK (or a refusal close): the broker took it
            except OSError:
                pass
        if i % 2:
            sk.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_rst)
        sk.close()

    # all 10 slots come back (closing is asynchronous: retry until they do)
    def ten_fit():
        held = []
        try:
            for k in range(10):
                r = R.Raw(b.port, version=5, timeout=2)
                held.append(r)
                if r.connect(f"slot-{k}").rc != 0:
                    return False
            for r in held:
                r.send(R.PINGREQ_BYTES)
                r.expect(R.PINGRESP)
            return True
        except (ConnectionError, TimeoutError, OSError):
            return False
        finally:
            for r in held:
                r.close()
    R.wait_until(ten_fit, timeout=8, interval=0.2, what="10 free connection slots")
