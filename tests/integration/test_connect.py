"""CONNECT and CONNACK: protocol versions, refusals, client ids, keep-alive,
idle timeout, session takeover (also across I/O workers) and what CONNACK
advertises. Mostly raw-socket tests: the exact reason codes and properties
are the feature."""
import socket
import struct
import threading
import time

import pytest

import mqttraw as R
from mqttraw import CONNACK, DISCONNECT, PINGRESP, PUBACK, SUBACK, PUBLISH


# ---------------------------------------------------------------- helpers

def connect_raw_flags(version, flags, client_id="c", keepalive=60, props=b"\x00", tail=b"",
                      name=None):
    """A CONNECT with hand-made flags; `tail` follows the client id."""
    if name is None:
        name = b"MQIsdp" if version == 3 else b"MQTT"
    body = R.s(name) + bytes([version, flags]) + struct.pack("!H", keepalive)
    if version == 5:
        body += props
    body += R.s(client_id) + tail
    return R.packet(R.CONNECT, 0, body)


def expect_closed_without_packet(r, timeout=3.0):
    """The broker closes the connection without sending anything first."""
    with pytest.raises(ConnectionError):
        p = r.recv(timeout)
        raise AssertionError(f"unexpected packet before close: {p!r}")


def roundtrip(port, r, topic, version):
    """r (a connected Raw) subscribes to topic; another client publishes a
    QoS 1 message there; r must receive it."""
    r.send(R.subscribe(7, [(topic, 1)], version=version))
    ack = r.expect(SUBACK)
    assert ack.rcs == [1]
    pub = R.raw_connect(port, "", version=5)
    pub.send(R.publish(topic, b"rt", qos=1, pid=3, version=5))
    assert pub.expect(PUBACK).rc == 0
    m = r.expect(PUBLISH)
    assert (m.topic, m.payload, m.qos) == (topic, b"rt", 1)
    r.send(R.ack(R.PUBACK, m.pid, version=version))
    pub.close()


def ping_ok(r, timeout=3.0):
    r.send(R.PINGREQ_BYTES)
    r.expect(PINGRESP, timeout)


# ---------------------------------------------------------------- basics

@pytest.mark.parametrize("version", [3, 4, 5])
def test_connect_basic_each_version(broker, version):
    r = R.Raw(broker.port, version=version)
    ack = r.connect(f"basic-v{version}", version=version)
    assert ack.rc == 0
    assert ack.session_present is False
    if version == 5:
        # a v5 CONNACK carries properties; v3 ones are exactly two bytes
        assert "maximum_packet_size" in ack.props
    else:
        assert len(ack.body) == 2
    ping_ok(r)
    roundtrip(broker.port, r, f"basic/v{version}", version)
    r.send(R.disconnect(version))
    assert r.closed()


def test_unsupported_protocol_level_v3_style(broker):
    for name, level in ((b"MQTT", 6), (b"MQTT", 2), (b"MQTT", 3), (b"MQIsdp", 4)):
        r = R.Raw(broker.port, version=4)
        r.send(connect_raw_flags(level, 0x02, "badlevel", name=name))
        ack = r.expect(CONNACK)
        # 3.1.1-style answer: two bytes, return code 1 (unacceptable protocol version)
        assert ack.body == b"\x00\x01", (name, level, ack)
        assert r.closed()


def test_unsupported_protocol_v5_looking(broker):
    # protocol level 5 but a protocol name that is not "MQTT": answered the v5 way
    r = R.Raw(broker.port, version=5)
    r.send(connect_raw_flags(5, 0x02, "badname", name=b"MQIsdp"))
    ack = r.expect(CONNACK)
    assert ack.rc == 0x84
    assert ack.session_present is False
    assert r.closed()


# ---------------------------------------------------------------- malformed and out-of-order packets

def test_malformed_connect_v5_gets_connack_then_close(broker):
    # reserved flag bit 0 set: malformed (0x81)
    r = R.Raw(broker.port, version=5)
    r.send(connect_raw_flags(5, 0x03, "mal-1"))
    ack = r.expect(CONNACK)
    assert ack.rc == 0x81
    assert r.closed()
    # the same property twice: protocol error (0x82)
    dup = b"\x11" + struct.pack("!I", 10)
    r = R.Raw(broker.port, version=5)
    r.send(connect_raw_flags(5, 0x02, "mal-2", props=R.varint(10) + dup + dup))
    ack = r.expect(CONNACK)
    assert ack.rc == 0x82
    assert r.closed()
    # authentication data without an authentication method: protocol error
    r = R.Raw(broker.port, version=5)
    r.send(connect_raw_flags(5, 0x02, "mal-3", props=R.props(auth_data=b"xx")))
    assert r.expect(CONNACK).rc == 0x82
    assert r.closed()
    # property values the spec forbids: protocol errors
    for bad in (R.props(receive_maximum=0), R.props(maximum_packet_size=0),
                R.props(request_problem_info=2), R.props(request_response_info=2)):
        r = R.Raw(broker.port, version=5)
        r.send(connect_raw_flags(5, 0x02, "mal-4", props=bad))
        assert r.expect(CONNACK).rc == 0x82, bad
        assert r.closed()
    # a truncated body (the remaining length covers only part of the fields)
    r = R.Raw(broker.port, version=5)
    r.send(R.packet(R.CONNECT, 0, R.s("MQTT") + bytes([5, 2])))
    assert r.expect(CONNACK).rc == 0x81
    assert r.closed()
    # the broker is unharmed
    R.raw_connect(broker.port, "mal-after", version=5).close()


@pytest.mark.parametrize("version", [3, 4])
def test_malformed_connect_v3_is_closed_without_connack(broker, version):
    flags = 0x02 | (0x01 if version == 4 else 0)
    # 3.1.1: reserved bit; 3.1 has no reserved bit, use will QoS 3 instead
    if version == 3:
        flags = 0x02 | 0x04 | (3 << 3)
    r = R.Raw(broker.port, version=version)
    r.send(connect_raw_flags(version, flags, "mal-v3", tail=R.s("w/t") + R.s("x")))
    expect_closed_without_packet(r)
    # truncated body
    r = R.Raw(broker.port, version=version)
    r.send(R.packet(R.CONNECT, 0, R.s("MQTT" if version == 4 else "MQIsdp") + bytes([version])))
    expect_closed_without_packet(r)


@pytest.mark.parametrize("version", [4, 5])
def test_inconsistent_will_flags(broker, version):
    cases = [
        0x02 | (1 << 3),           # will QoS without the will flag
        0x02 | 0x20,               # will retain without the will flag
        0x02 | 0x04 | (3 << 3),    # will QoS 3
    ]
    for flags in cases:
        tail = b""
        if flags & 0x04:
            tail = (b"\x00" if version == 5 else b"") + R.s("will/t") + R.s("bye")
        r = R.Raw(broker.port, version=version)
        r.send(connect_raw_flags(version, flags, "willflags", tail=tail))
        if version == 5:
            assert r.expect(CONNACK).rc == 0x81, hex(flags)
            assert r.closed()
        else:
            expect_closed_without_packet(r)


def test_password_without_username(broker):
    # 3.1.1 forbids it (MQTT-3.1.2-22): close without CONNACK
    r = R.Raw(broker.port, version=4)
    r.send(connect_raw_flags(4, 0x02 | 0x40, "pwonly4", tail=R.s("secret")))
    expect_closed_without_packet(r)
    # MQTT 5 allows a password without a user name
    r = R.Raw(broker.port, version=5)
    r.send(connect_raw_flags(5, 0x02 | 0x40, "pwonly5", tail=R.s("secret")))
    assert r.expect(CONNACK).rc == 0
    ping_ok(r)


@pytest.mark.parametrize("version", [4, 5])
def test_first_packet_not_connect_closes(broker, version):
    for first in (R.PINGREQ_BYTES, R.publish("x/y", b"p", version=version),
                  R.subscribe(1, [("x/#", 0)], version=version)):
        r = R.Raw(broker.port, version=version)
        r.send(first)
        expect_closed_without_packet(r)


@pytest.mark.parametrize("version", [3, 4, 5])
def test_second_connect_is_protocol_error(broker, version):
    r = R.raw_connect(broker.port, f"twice-{version}", version=version)
    r.send(R.connect(f"twice-{version}", version=version))
    if version == 5:
        d = r.expect(DISCONNECT)
        assert d.rc == 0x82
        assert "reason_string" in d.props
        assert r.closed()
    else:
        expect_closed_without_packet(r)


def test_auth_packet_without_method_is_protocol_error(broker):
    r = R.raw_connect(broker.port, "auth-pkt", version=5)
    r.send(R.packet(R.AUTH, 0, bytes([0x18]) + R.props(auth_method="SCRAM-SHA-1")))
    d = r.expect(DISCONNECT)
    assert d.rc == 0x82
    assert r.closed()
    # in 3.1.1 packet type 15 is reserved: the connection is closed
    r = R.raw_connect(broker.port, "auth-pkt-v4", version=4)
    r.send(R.packet(R.AUTH, 0, b""))
    expect_closed_without_packet(r)


def test_connect_with_authentication_method_refused(broker):
    r = R.Raw(broker.port, version=5)
    ack = r.connect("authm", properties=R.props(auth_method="SCRAM-SHA-256", auth_data=b"n,,"))
    assert ack.rc == 0x8C
    assert r.closed()


# ---------------------------------------------------------------- client identifiers

def test_v5_empty_client_id_is_assigned(broker):
    r1 = R.Raw(broker.port, version=5)
    ack1 = r1.connect("", clean=True, properties=R.props(session_expiry=60))
    assert ack1.rc == 0
    cid = ack1.props["assigned_client_id"]
    assert cid and cid.startswith("keepmq-")
    r2 = R.Raw(broker.port, version=5)
    ack2 = r2.connect("")
    assert ack2.rc == 0
    assert ack2.props["assigned_client_id"] != cid
    # the assigned id names a real session: it can be resumed
    r1.send(R.subscribe(1, [("assigned/t", 1)], version=5))
    r1.expect(SUBACK)
    r1.send(R.disconnect(5))
    assert r1.closed()
    r3 = R.Raw(broker.port, version=5)
    ack3 = r3.connect(cid, clean=False, properties=R.props(session_expiry=60))
    assert ack3.rc == 0 and ack3.session_present is True
    # the client sent an id this time: nothing is assigned
    assert "assigned_client_id" not in ack3.props
    r2.send(R.publish("assigned/t", b"to-assigned", qos=1, pid=5, version=5))
    r2.expect(PUBACK)
    m = r3.expect(PUBLISH)
    assert m.payload == b"to-assigned"


def test_v311_empty_client_id_rules(broker):
    # clean session 1: accepted
    r = R.Raw(broker.port, version=4)
    ack = r.connect("", clean=True)
    assert ack.rc == 0 and len(ack.body) == 2
    ping_ok(r)
    # clean session 0: identifier rejected (2)
    r = R.Raw(broker.port, version=4)
    ack = r.connect("", clean=False)
    assert ack.rc == 2
    assert r.closed()
    # MQTT 3.1 requires an id
    r = R.Raw(broker.port, version=3)
    ack = r.connect("", clean=True)
    assert ack.rc == 2
    assert r.closed()


def test_zero_length_client_id_disallowed(broker_factory):
    b = broker_factory("mqtt.allow_zero_length_clientid = false", workers=2)
    r = R.Raw(b.port, version=5)
    ack = r.connect("")
    assert ack.rc == 0x85
    assert "assigned_client_id" not in ack.props
    assert r.closed()
    r = R.Raw(b.port, version=4)
    assert r.connect("", clean=True).rc == 2
    assert r.closed()
    R.raw_connect(b.port, "named", version=4).close()


def test_client_id_too_long(broker_factory):
    b = broker_factory("mqtt.max_clientid_len = 23", workers=2)
    ok = "x" * 23
    too_long = "y" * 24
    for version in (3, 4, 5):
        r = R.Raw(b.port, version=version)
        ack = r.connect(too_long)
        assert ack.rc == (0x85 if version == 5 else 2), version
        if version == 5:
            assert "reason_string" in ack.props
        assert r.closed()
        R.raw_connect(b.port, ok, version=version).close()


# ---------------------------------------------------------------- keep-alive and idle timeout

@pytest.mark.parametrize("version", [4, 5])
def test_keepalive_timeout(broker, version):
    t0 = time.time()
    silent = R.raw_connect(broker.port, f"ka-silent-{version}", version=version, keepalive=1)
    pinger = R.raw_connect(broker.port, f"ka-ping-{version}", version=version, keepalive=1)
    got = None
    end = t0 + 5.0
    while time.time() < end:
        ping_ok(pinger)
        try:
            got = silent.recv(timeout=0.3)
            break
        except TimeoutError:
            continue
        except ConnectionError:
            got = "closed"
            break
    elapsed = time.time() - t0
    assert got is not None, "silent client not disconnected"
    # not before 1.5 times the keep-alive
    assert elapsed >= 1.4, elapsed
    if version == 5:
        assert got != "closed" and got.type == DISCONNECT and got.rc == 0x8D, got
        assert silent.closed()
    else:
        assert got == "closed", got
    # the client that pinged is still connected
    ping_ok(pinger)


def test_keepalive_zero_means_no_timeout(broker):
    r = R.raw_connect(broker.port, "ka-zero", version=4, keepalive=0)
    short = R.raw_connect(broker.port, "ka-short", version=4, keepalive=1)
    assert short.closed(timeout=4.0)
    ping_ok(r)


def test_server_keepalive(broker_factory):
    b = broker_factory("mqtt.server_keepalive = 1s", workers=2)
    t0 = time.time()
    r = R.Raw(b.port, version=5)
    ack = r.connect("srv-ka", keepalive=60)
    assert ack.rc == 0
    assert ack.props["server_keepalive"] == 1
    # an MQTT 3.1.1 client is not told anything and keeps its own keep-alive
    v3 = R.Raw(b.port, version=4)
    assert v3.connect("srv-ka-v3", keepalive=0).rc == 0
    d = r.expect(DISCONNECT, timeout=5.0)
    assert d.rc == 0x8D
    assert time.time() - t0 >= 1.4
    assert r.closed()
    ping_ok(v3)


def test_idle_timeout(broker_factory):
    b = broker_factory("mqtt.idle_timeout = 1s", workers=2)
    idle = socket.create_connection(("127.0.0.1", b.port))
    half = R.Raw(b.port, version=4)
    full = R.connect("idle-half", version=4)
    half.send(full[:7])
    good = R.raw_connect(b.port, "idle-good", version=4, keepalive=0)
    idle_raw = R.Raw.__new__(R.Raw)
    idle_raw.sock, idle_raw.buf, idle_raw.version, idle_raw.timeout = idle, bytearray(), 4, 5.0
    assert idle_raw.closed(timeout=4.0), "idle TCP connection not closed"
    assert half.closed(timeout=4.0), "half-sent CONNECT not closed"
    # a client whose CONNECT completed is not subject to the idle timeout
    ping_ok(good)


# ---------------------------------------------------------------- takeover

@pytest.mark.parametrize("version", [3, 4, 5])
def test_session_takeover(broker, version):
    cid = f"takeover-{version}"
    old = R.raw_connect(broker.port, cid, version=version)
    new = R.raw_connect(broker.port, cid, version=version)
    if version == 5:
        d = old.expect(DISCONNECT)
        assert d.rc == 0x8E
        assert old.closed()
    else:
        expect_closed_without_packet(old)
    ping_ok(new)
    roundtrip(broker.port, new, f"takeover/{version}", version)


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_takeover_across_workers(broker_factory, workers):
    b = broker_factory(workers=workers)
    ids = [cid for per in R.ids_per_worker(f"tw{workers}", workers, 2) for cid in per]
    olds = {}
    for i, cid in enumerate(ids):
        olds[cid] = R.raw_connect(b.port, cid, version=5 if i % 2 else 4)
    news = {}
    for i, cid in enumerate(ids):
        news[cid] = R.raw_connect(b.port, cid, version=4 if i % 2 else 5)
    for i, cid in enumerate(ids):
        old = olds[cid]
        if i % 2:
            assert old.expect(DISCONNECT).rc == 0x8E
        assert old.closed(), cid
    for i, cid in enumerate(ids):
        roundtrip(b.port, news[cid], f"tw/{cid}", 4 if i % 2 else 5)


def test_takeover_storm_leaves_exactly_one_connection(broker_factory):
    b = broker_factory(workers=3)
    cid = "storm"
    n = 12
    conns = [R.Raw(b.port, version=5 if i % 2 else 4) for i in range(n)]
    # other clients keep working while the takeovers are in flight
    stop = threading.Event()
    errors = []

    def bystander(k):
        try:
            r = R.raw_connect(b.port, f"bystander-{k}", version=4)
            r.send(R.subscribe(1, [(f"by/{k}", 1)]))
            r.expect(SUBACK)
            i = 0
            while not stop.is_set():
                i += 1
                r.send(R.publish(f"by/{k}", f"{i}", qos=1, pid=i % 60000 + 1))
                got = set()
                while len(got) < 2:  # our PUBACK and our own message back
                    p = r.recv(5)
                    if p.type == PUBACK:
                        got.add("ack")
                    elif p.type == PUBLISH:
                        assert p.payload == f"{i}".encode()
                        r.send(R.ack(R.PUBACK, p.pid))
                        got.add("msg")
            r.close()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"bystander {k}: {e!r}")

    threads = [threading.Thread(target=bystander, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for i, c in enumerate(conns):
        c.send(R.connect(cid, version=5 if i % 2 else 4))
    for c in conns:
        ack = c.expect(CONNACK)
        assert ack.rc == 0

    closed = set()

    def all_but_one_closed():
        for k, c in enumerate(conns):
            if k not in closed and c.closed(timeout=0.01):
                closed.add(k)
        return len(closed) >= n - 1

    R.wait_until(all_but_one_closed, timeout=5.0, what="taken-over connections to close")
    stop.set()
    for t in threads:
        t.join(10)
    assert not errors, errors
    assert len(closed) == n - 1
    survivor = [c for k, c in enumerate(conns) if k not in closed][0]
    ping_ok(survivor)
    assert not survivor.closed(timeout=0.3)


def test_connections_work_while_taken_over_connection_is_stuck(broker_factory):
    """The taken-over connection cannot flush (its peer does not read), so it
    stays closing; the new owner of the id and everybody else carry on."""
    b = broker_factory("mqtt.max_pending_bytes = 64KB", workers=2)
    victim = socket.socket()
    victim.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    victim.connect(("127.0.0.1", b.port))
    vr = R.Raw.__new__(R.Raw)
    vr.sock, vr.buf, vr.version, vr.timeout = victim, bytearray(), 5, 5.0
    assert vr.connect("stuck", version=5).rc == 0
    vr.send(R.subscribe(1, [("flood/#", 0)], version=5))
    vr.expect(SUBACK)
    # fill the victim's socket and the broker's send buffer; it reads nothing
    pub = R.raw_connect(b.port, "flooder", version=4)
    payload = b"z" * 60000
    for i in range(80):
        pub.send(R.publish("flood/x", payload, qos=0))
    pub.send(R.publish("flood/x", b"end", qos=1, pid=9))
    pub.expect(PUBACK, timeout=10)
    # take the id over
    new = R.raw_connect(b.port, "stuck", version=5)
    ping_ok(new)
    roundtrip(b.port, new, "after/stuck", 5)
    for k in range(4):
        r = R.raw_connect(b.port, f"other-{k}", version=4)
        roundtrip(b.port, r, f"after/other/{k}", 4)
        r.close()
    victim.close()


# ---------------------------------------------------------------- CONNACK properties

def test_response_information(broker_factory):
    b = broker_factory("mqtt.response_information = resp/", workers=2)
    r = R.Raw(b.port, version=5)
    ack = r.connect("ri-1", properties=R.props(request_response_info=1))
    assert ack.props["response_info"] == "resp/"
    r = R.Raw(b.port, version=5)
    ack = r.connect("ri-2")
    assert "response_info" not in ack.props
    r = R.Raw(b.port, version=5)
    ack = r.connect("ri-3", properties=R.props(request_response_info=0))
    assert "response_info" not in ack.props


def test_response_information_not_configured(broker):
    r = R.Raw(broker.port, version=5)
    ack = r.connect("ri-none", properties=R.props(request_response_info=1))
    assert ack.rc == 0
    assert "response_info" not in ack.props


def test_request_problem_information(broker_factory):
    b = broker_factory("mqtt.max_clientid_len = 23", workers=2)
    long_id = "p" * 30
    # default (1): the refused CONNACK explains itself
    r = R.Raw(b.port, version=5)
    ack = r.connect(long_id)
    assert ack.rc == 0x85 and "reason_string" in ack.props
    # 0: no reason string on the refused CONNACK
    r = R.Raw(b.port, version=5)
    ack = r.connect(long_id, properties=R.props(request_problem_info=0))
    assert ack.rc == 0x85 and "reason_string" not in ack.props
    # 0: a refused PUBLISH is acknowledged without a reason string or user
    # properties (MUST NOT on packets other than PUBLISH/CONNACK/DISCONNECT)
    r = R.Raw(b.port, version=5)
    assert r.connect("rpi0", properties=R.props(request_problem_info=0)).rc == 0
    r.send(R.publish("$SYS/forbidden", b"x", qos=1, pid=4, version=5))
    a = r.expect(PUBACK)
    assert a.rc == 0x87
    assert "reason_string" not in a.props and "user_property" not in a.props
    # and the DISCONNECT for a protocol error carries no reason string either
    r.send(R.connect("rpi0", version=5))
    d = r.expect(DISCONNECT)
    assert d.rc == 0x82 and "reason_string" not in d.props


def test_connack_default_properties(broker):
    r = R.Raw(broker.port, version=5)
    ack = r.connect("defaults")
    assert ack.rc == 0
    p = ack.props
    # everything is available: the "not available" properties are absent
    for absent in ("maximum_qos", "retain_available", "wildcard_sub_available",
                   "shared_sub_available", "sub_id_available", "server_keepalive",
                   "response_info", "assigned_client_id", "session_expiry", "reason_string"):
        assert absent not in p, absent
    assert p["receive_maximum"] == 32
    assert p["maximum_packet_size"] == 1024 * 1024


def test_connack_advertises_configured_limits(broker_factory):
    b = broker_factory("\n".join([
        "mqtt.max_packet_size = 4KB",
        "mqtt.max_inflight = 7",
        "mqtt.max_topic_alias = 3",
        "mqtt.max_qos_allowed = 1",
        "mqtt.retain_available = false",
        "mqtt.wildcard_subscription = false",
        "mqtt.shared_subscription = false",
        "mqtt.subscription_identifiers = false",
    ]), workers=2)
    r = R.Raw(b.port, version=5)
    ack = r.connect("limits")
    assert ack.rc == 0
    p = ack.props
    assert p["maximum_packet_size"] == 4096
    assert p["receive_maximum"] == 7
    assert p["topic_alias_maximum"] == 3
    assert p["maximum_qos"] == 1
    assert p["retain_available"] == 0
    assert p["wildcard_sub_available"] == 0
    assert p["shared_sub_available"] == 0
    assert p["sub_id_available"] == 0
    # and the limits hold
    r.send(R.subscribe(1, [("a/#", 1), ("$share/g/a/b", 1), ("a/b", 2)], version=5))
    assert r.expect(SUBACK).rcs == [0xA2, 0x9E, 1]
    r.send(R.publish("a/b", b"r", qos=1, retain=True, pid=2, version=5))
    assert r.expect(DISCONNECT).rc == 0x9A
    r = R.raw_connect(b.port, "limits-qos", version=5)
    r.send(R.publish("a/b", b"q", qos=2, pid=2, version=5))
    assert r.expect(DISCONNECT).rc == 0x9B
    r = R.raw_connect(b.port, "limits-size", version=5)
    r.send(R.publish("a/b", b"s" * 5000, qos=0, version=5))
    assert r.expect(DISCONNECT).rc == 0x95
    r = R.raw_connect(b.port, "limits-alias", version=5)
    r.send(R.publish("a/b", b"x", qos=0, version=5, properties=R.props(topic_alias=4)))
    assert r.expect(DISCONNECT).rc == 0x94
    r = R.raw_connect(b.port, "limits-subid", version=5)
    r.send(R.subscribe(3, [("a/c", 0)], version=5, properties=R.props(subscription_id=[5])))
    assert r.expect(DISCONNECT).rc == 0xA1
    # the v3.1.1 view of the same limits: QoS 2 subscriptions granted QoS 1
    r = R.raw_connect(b.port, "limits-v4", version=4)
    r.send(R.subscribe(1, [("a/d", 2)]))
    assert r.expect(SUBACK).rcs == [1]


def test_connack_session_expiry_capped(broker_factory):
    b = broker_factory("mqtt.session_expiry_interval = 30s", workers=2)
    r = R.Raw(b.port, version=5)
    ack = r.connect("cap-1", properties=R.props(session_expiry=3600))
    assert ack.props["session_expiry"] == 30
    r = R.Raw(b.port, version=5)
    ack = r.connect("cap-2", properties=R.props(session_expiry=10))
    assert "session_expiry" not in ack.props


def test_connack_respects_client_maximum_packet_size(broker_factory):
    b = broker_factory("mqtt.max_clientid_len = 23", workers=2)
    # room for the CONNACK: accepted as usual
    r = R.Raw(b.port, version=5)
    ack = r.connect("mps-ok", properties=R.props(maximum_packet_size=64))
    assert ack.rc == 0
    ping_ok(r)
    # a refused CONNACK drops its reason string to fit
    r = R.Raw(b.port, version=5)
    ack = r.connect("m" * 30, properties=R.props(maximum_packet_size=8))
    assert ack.rc == 0x85
    assert "reason_string" not in ack.props
    assert r.closed()
    # no CONNACK with the broker's properties fits in 8 bytes: the broker must
    # not send a larger one; it closes the connection instead of leaving the
    # client waiting
    r = R.Raw(b.port, version=5)
    r.send(R.connect("mps-tiny", version=5, properties=R.props(maximum_packet_size=8)))
    expect_closed_without_packet(r)
    # and nothing of that half-started session lingers
    r = R.Raw(b.port, version=5)
    ack = r.connect("mps-tiny", clean=False, properties=R.props(session_expiry=60))
    assert ack.rc == 0 and ack.session_present is False


@pytest.mark.parametrize("workers", [2, 3])
def test_packets_pipelined_behind_connect(broker_factory, workers):
    """CONNECT and the packets after it arrive in one write (and split in
    awkward places); when the id belongs to another worker, the bytes after
    the CONNECT travel with the hand-off."""
    b = broker_factory(workers=workers)
    for k, cid in enumerate(c for per in R.ids_per_worker(f"pipe{workers}", workers, 2)
                            for c in per):
        version = 5 if k % 2 else 4
        data = (R.connect(cid, version=version)
                + R.subscribe(1, [(f"pipe/{cid}", 1)], version=version)
                + R.publish(f"pipe/{cid}", b"to-myself", qos=1, pid=2, version=version)
                + R.PINGREQ_BYTES)
        r = R.Raw(b.port, version=version)
        if k % 3 == 0:
            r.send(data)
        else:
            cut = 5 if k % 3 == 1 else len(R.connect(cid, version=version)) + 3
            r.send(data[:cut])
            time.sleep(0.05)  # let the first part be read on its own
            r.send(data[cut:])
        assert r.expect(CONNACK).rc == 0
        assert r.expect(SUBACK).rcs == [1]
        got = {}
        for _ in range(3):
            p = r.recv()
            got[p.type] = p
        assert set(got) == {PUBLISH, PUBACK, PINGRESP}, got
        assert got[PUBLISH].payload == b"to-myself"
        r.close()


def test_sigterm_as_soon_as_clients_can_connect(broker_factory):
    """Once the port accepts connections a SIGTERM is a clean shutdown
    (exit status 0), not the default action that kills the process."""
    for _ in range(5):
        b = broker_factory(workers=4, expect_start=False)
        deadline = time.time() + 20
        while True:
            assert b.alive(), b.log()
            try:
                socket.create_connection(("127.0.0.1", b.port), timeout=1).close()
                break
            except OSError:
                assert time.time() < deadline, "broker did not start"
        assert b.stop() == 0, b.log()
        assert "keepmq stopped" in b.log()
