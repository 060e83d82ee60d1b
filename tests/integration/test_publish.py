"""PUBLISH from clients: what is refused and how (MQTT 5 reason codes, MQTT 3
closes), payloads delivered byte-exact, packet size limits, the payload format
indicator, and the subscription options that shape delivery (no local,
overlapping subscriptions, retain as published)."""
import pytest

import mqttraw as R

V = [4, 5]
V_ALL = [3, 4, 5]  # MQTT 3.1, 3.1.1 and 5.0


def vid(v):
    return f"v{v}"


def connect(port, cid, version, **kw):
    return R.raw_connect(port, cid, version=version, **kw)


def watcher(port, filt, cid, version=5, qos=2):
    """A subscriber that should (or should not) see what gets through."""
    r = connect(port, cid, version)
    assert R.sub_ack(r, [(filt, qos)]) == [qos]
    return r


def send_ignoring_reset(r, data):
    """Sends data the broker may refuse half-way (it closes as soon as it has
    seen enough); a reset while sending is expected then."""
    try:
        r.sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


# ---------------------------------------------------------------- invalid topics


@pytest.mark.parametrize("topic", ["wild/+", "wild/#", "+", "#", "wild/+/x"])
@pytest.mark.parametrize("version", V_ALL, ids=vid)
def test_wildcard_in_publish_topic_refused(broker, version, topic):
    w = watcher(broker.port, "#", f"wild-watch-{version}")
    r = connect(broker.port, f"wild-{version}", version)
    r.send(R.publish(topic, b"x", qos=1, version=version))
    d = r.expect_disconnect(0x90)
    if version == 5:
        assert "reason_string" in d.props  # the client learns why
    assert R.no_publish(w, 0.3)
    w.close()


def test_empty_topic_v3_closes(broker):
    w = watcher(broker.port, "#", "empty-watch")
    r = connect(broker.port, "empty-v3", 4)
    r.send(R.publish("", b"x", qos=0))
    r.expect_disconnect(None)
    assert R.no_publish(w, 0.3)
    w.close()


def test_empty_topic_without_alias_v5_refused(broker):
    r = connect(broker.port, "empty-v5", 5)
    r.send(R.publish("", b"x", qos=1, version=5))
    pkts = r.read_until_close()
    assert len(pkts) == 1 and pkts[0].type == R.DISCONNECT, pkts
    # MQTT 5 calls it a protocol error; 0x90 (topic name invalid) is also an error
    assert pkts[0].rc in (0x82, 0x90), hex(pkts[0].rc)


@pytest.mark.parametrize("version", V, ids=vid)
def test_topic_with_too_many_levels_refused(broker_factory, version):
    b = broker_factory("mqtt.max_topic_levels = 3", workers=2)
    w = watcher(b.port, "#", f"levels-watch-{version}")
    r = connect(b.port, f"levels-{version}", version)
    # exactly three levels (empty levels count) are fine
    for t in ("a/b/c", "x//", "/y/"):
        R.publish_ack(r, t, b"ok", qos=1)
    got = R.recv_publishes(w, 3)
    assert [m.topic for m in got] == ["a/b/c", "x//", "/y/"]
    r.send(R.publish("a/b/c/d", b"no", qos=1, version=version))
    r.expect_disconnect(0x90)
    r2 = connect(b.port, f"levels2-{version}", version)
    r2.send(R.publish("x///", b"no", qos=0, version=version))
    r2.expect_disconnect(0x90)
    assert R.no_publish(w, 0.3)
    w.close()


@pytest.mark.parametrize("version", V_ALL, ids=vid)
def test_publish_to_sys_refused(broker, version):
    w = watcher(broker.port, "$SYS/test/#", f"sys-watch-{version}")
    r = connect(broker.port, f"sys-pub-{version}", version)
    rc = 0x87 if version == 5 else 0
    r.send(R.publish("$SYS/test/x", b"fake", qos=1, pid=3, version=version))
    p = r.expect(R.PUBACK)
    assert (p.pid, p.rc) == (3, rc)
    r.send(R.publish("$SYS/test/x", b"fake", qos=2, pid=4, version=version))
    p = r.expect(R.PUBREC)
    assert (p.pid, p.rc) == (4, rc)
    if version != 5:
        r.send(R.ack(R.PUBREL, 4))
        assert r.expect(R.PUBCOMP).pid == 4
    r.send(R.publish("$SYS/test/x", b"fake", qos=0, version=version))
    r.send(R.publish("$SYS/test/y", b"fake", qos=1, retain=True, pid=5, version=version))
    assert r.expect(R.PUBACK).rc == rc
    # the connection is still fine and nothing reached $SYS subscribers
    r.send(R.PINGREQ_BYTES)
    r.expect(R.PINGRESP)
    assert R.no_publish(w, 0.3)
    # nor was anything retained
    w2 = connect(broker.port, f"sys-watch2-{version}", 5)
    assert R.sub_ack(w2, [("$SYS/test/#", 1)]) == [1]
    assert R.no_publish(w2, 0.3)
    for c in (w, w2, r):
        c.close()


def test_subscription_identifier_in_client_publish_refused(broker):
    # only the server may put a Subscription Identifier in a PUBLISH (MQTT-3.3.4-6)
    w = watcher(broker.port, "psid/#", "psid-watch")
    r = connect(broker.port, "psid-pub", 5)
    r.send(R.publish("psid/x", b"x", qos=1, version=5, properties=R.props(subscription_id=5)))
    r.expect_disconnect(0x82)
    assert R.no_publish(w, 0.3)
    w.close()


# ---------------------------------------------------------------- features turned off


@pytest.mark.parametrize("maxq", [0, 1])
@pytest.mark.parametrize("version", V_ALL, ids=vid)
def test_qos_above_max_qos_allowed(broker_factory, version, maxq):
    b = broker_factory(f"mqtt.max_qos_allowed = {maxq}", workers=2)
    w = watcher(b.port, "maxq/#", f"maxq-watch-{version}", qos=maxq)
    r = R.Raw(b.port, version=version)
    ack = r.connect(f"maxq-{version}")
    assert ack.rc == 0
    if version == 5:
        assert ack.props["maximum_qos"] == maxq
    # subscriptions are granted at most the maximum
    assert R.sub_ack(r, [("maxq/own", 2)]) == [maxq]
    R.publish_ack(r, "maxq/a", b"ok", qos=maxq)
    m = R.recv_publishes(w, 1)[0]
    assert (m.payload, m.qos) == (b"ok", maxq)
    r.send(R.publish("maxq/a", b"too high", qos=maxq + 1, version=version))
    d = r.expect_disconnect(0x9B)
    if version == 5:
        assert "reason_string" in d.props
    assert R.no_publish(w, 0.3)
    w.close()


@pytest.mark.parametrize("version", V, ids=vid)
def test_retain_when_retain_not_available(broker_factory, version):
    b = broker_factory("mqtt.retain_available = false", workers=2)
    w = watcher(b.port, "noret/#", f"noret-watch-{version}")
    r = R.Raw(b.port, version=version)
    ack = r.connect(f"noret-{version}")
    assert ack.rc == 0
    if version == 5:
        assert ack.props["retain_available"] == 0
    R.publish_ack(r, "noret/a", b"plain", qos=1)
    assert R.recv_publishes(w, 1)[0].payload == b"plain"
    r.send(R.publish("noret/a", b"kept?", qos=0, retain=True, version=version))
    r.expect_disconnect(0x9A)
    assert R.no_publish(w, 0.3)
    # and nothing was retained
    w2 = connect(b.port, f"noret-late-{version}", 5)
    assert R.sub_ack(w2, [("noret/#", 1)]) == [1]
    assert R.no_publish(w2, 0.3)
    w.close()
    w2.close()


# ---------------------------------------------------------------- payloads


BINARY = bytes(range(256)) * 4 + b"\x00" * 17 + bytes(range(255, -1, -1))


@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("pub_v,sub_v", [(4, 5), (5, 4), (5, 5), (3, 4), (4, 3)],
                         ids=["v4v5", "v5v4", "v5v5", "v3.1v4", "v4v3.1"])
def test_binary_and_empty_payloads_byte_exact(broker, pub_v, sub_v, qos):
    sub = watcher(broker.port, "bin/#", f"bin-sub-{pub_v}{sub_v}{qos}", version=sub_v)
    pub = connect(broker.port, f"bin-pub-{pub_v}{sub_v}{qos}", pub_v)
    payloads = [BINARY, b"", b"\x00", b"\x00" * 1000, b"\xff\xfe\x00\x01", b""]
    for i, p in enumerate(payloads):
        R.publish_ack(pub, f"bin/{i}", p, qos=qos, pid=i + 1)
    got = R.recv_publishes(sub, len(payloads))
    assert [m.topic for m in got] == [f"bin/{i}" for i in range(len(payloads))]
    assert [m.payload for m in got] == payloads
    assert all(m.qos == qos and not m.retain for m in got)
    sub.close()
    pub.close()


def publish_of_size(topic, total, qos=1, version=5, pid=1):
    """A PUBLISH packet of exactly `total` bytes, fixed header included, and
    its payload."""
    n = total
    while True:
        payload = bytes([n % 251]) * n
        p = R.publish(topic, payload, qos=qos, pid=pid, version=version)
        if len(p) == total:
            return p, payload
        n -= len(p) - total


@pytest.mark.parametrize("version", V, ids=vid)
def test_large_payload_up_to_max_packet_size(broker_factory, version):
    limit = 300_000
    b = broker_factory(f"mqtt.max_packet_size = {limit}", workers=2)
    sub = watcher(b.port, "large/#", f"large-sub-{version}", version=4)
    r = R.Raw(b.port, version=version)
    ack = r.connect(f"large-{version}")
    if version == 5:
        assert ack.props["maximum_packet_size"] == limit
    exact, payload = publish_of_size("large/t", limit, version=version)
    r.send(exact)
    assert r.expect(R.PUBACK).pid == 1
    m = R.recv_publishes(sub, 1, timeout=10)[0]
    assert m.payload == payload
    # one byte more is refused, before the broker routes anything
    send_ignoring_reset(r, publish_of_size("large/t", limit + 1, pid=2, version=version)[0])
    r.expect_disconnect(0x95)
    assert R.no_publish(sub, 0.3)
    sub.close()


@pytest.mark.parametrize("version", V, ids=vid)
def test_oversize_header_closes_without_waiting_for_body(broker, version):
    r = connect(broker.port, f"huge-{version}", version)
    # only the fixed header of a 200 MB PUBLISH: the broker must decide from
    # it alone (it never gets the body)
    r.send(bytes([0x32]) + R.varint(200 * 1024 * 1024))
    # (a broker that waited for the body would leave it open: a timeout)
    d = r.expect_disconnect(0x95, timeout=3.0)
    if version == 5:
        assert "reason_string" in d.props
    # the broker keeps serving others
    assert R.roundtrip(broker.port, version=version, tag=f"huge{version}")


def test_oversize_connect_refused(broker_factory):
    b = broker_factory("mqtt.max_packet_size = 1KB", workers=1)
    r = R.Raw(b.port, version=5)
    send_ignoring_reset(r, R.connect("big-connect", version=5, will=("w", b"x" * 2000, 0, False)))
    pkts = r.read_until_close()
    # before CONNECT is accepted there is no session: either a refusing
    # CONNACK or a plain close, but never a successful one
    assert all(p.type != R.CONNACK or p.rc >= 0x80 for p in pkts), pkts


# ---------------------------------------------------------------- payload format indicator


def test_payload_format_indicator_invalid_utf8_refused(broker):
    sub = watcher(broker.port, "pfi/#", "pfi-sub", version=5)
    r = connect(broker.port, "pfi-pub", 5)
    bad = [b"\xff\xfe", b"abc\xc3", b"\xed\xa0\x80", b"\xc0\xaf"]
    for i, payload in enumerate(bad):
        r.send(R.publish("pfi/bad", payload, qos=1, pid=10 + i, version=5,
                         properties=R.props(payload_format=1)))
        p = r.expect(R.PUBACK)
        assert (p.pid, p.rc) == (10 + i, 0x99)
    r.send(R.publish("pfi/bad", b"\xff", qos=2, pid=20, version=5,
                     properties=R.props(payload_format=1)))
    p = r.expect(R.PUBREC)
    assert (p.pid, p.rc) == (20, 0x99)
    r.send(R.publish("pfi/bad", b"\xff", qos=0, version=5, properties=R.props(payload_format=1)))
    assert R.no_publish(sub, 0.3)
    # valid UTF-8 with the indicator, and anything without it, go through
    good = "h\u00e9llo \u2603 \U0001F600".encode()
    R.publish_ack(r, "pfi/good", good, qos=1, pid=30, properties=R.props(payload_format=1))
    R.publish_ack(r, "pfi/raw", b"\xff\xfe", qos=1, pid=31, properties=R.props(payload_format=0))
    R.publish_ack(r, "pfi/none", b"\xff\xfe", qos=1, pid=32)
    got = R.recv_publishes(sub, 3)
    assert [(m.topic, m.payload, m.props.get("payload_format")) for m in got] == [
        ("pfi/good", good, 1), ("pfi/raw", b"\xff\xfe", 0), ("pfi/none", b"\xff\xfe", None)]
    sub.close()
    r.close()


# ---------------------------------------------------------------- subscription options


def publish_own(r, topic, payload, pid):
    """QoS 1 PUBLISH from a client that may itself receive the message (the
    copy can arrive before the PUBACK); returns the payloads it received."""
    r.send(R.publish(topic, payload, qos=1, pid=pid, version=r.version))
    got = []
    while True:
        p = r.recv()
        if p.type == R.PUBACK:
            assert p.pid == pid
            break
        assert p.type == R.PUBLISH, p
        if p.qos:
            r.send(R.ack(R.PUBACK, p.pid, version=r.version))
        got.append(p.payload)
    return got + [m.payload for m in R.drain_publishes(r, quiet=0.3)]


def test_no_local(broker):
    a = connect(broker.port, "nl-a", 5)
    assert R.sub_ack(a, [("nl/#", 1 | 0x04)]) == [1]
    other = connect(broker.port, "nl-b", 5)
    assert publish_own(a, "nl/x", b"own", 1) == []
    R.publish_ack(other, "nl/x", b"other", qos=1, pid=1)
    assert [m.payload for m in R.recv_publishes(a, 1)] == [b"other"]
    # the same client id on another connection is the same client: still local
    a.close()
    a = connect(broker.port, "nl-a", 5, clean=False)
    assert R.sub_ack(a, [("nl/#", 1 | 0x04)]) == [1]
    assert publish_own(a, "nl/y", b"own-again", 2) == []
    # a second, overlapping subscription without no-local delivers own
    # messages again, once
    assert R.sub_ack(a, [("nl/x", 1)], pid=2) == [1]
    assert publish_own(a, "nl/x", b"own2", 3) == [b"own2"]
    assert publish_own(a, "nl/z", b"own3", 4) == []
    a.close()
    other.close()


def test_v3_subscriber_receives_its_own_messages(broker):
    a = connect(broker.port, "own-v3", 4)
    assert R.sub_ack(a, [("own/#", 1)]) == [1]
    assert publish_own(a, "own/x", b"mine", 1) == [b"mine"]
    a.close()


def test_overlapping_subscriptions_v311_one_copy_at_highest_qos(broker):
    sub = connect(broker.port, "ov-v3", 4)
    assert R.sub_ack(sub, [("ov/#", 0), ("ov/+", 2), ("ov/a", 1)]) == [0, 2, 1]
    pub = connect(broker.port, "ov-v3-pub", 5)
    cases = [("ov/a", 2, 2), ("ov/a", 1, 1), ("ov/b", 2, 2), ("ov/b", 0, 0), ("ov/b/c", 2, 0)]
    for i, (topic, pq, want) in enumerate(cases):
        R.publish_ack(pub, topic, f"{i}".encode(), qos=pq, pid=i + 1)
        m = R.recv_publishes(sub, 1)[0]
        assert (m.topic, m.payload, m.qos) == (topic, f"{i}".encode(), want)
        assert R.no_publish(sub, 0.2), f"second copy of {topic}"
    sub.close()
    pub.close()


def test_overlapping_subscriptions_v5_one_copy_with_all_identifiers(broker):
    sub = connect(broker.port, "ov-v5", 5)
    assert R.sub_ack(sub, [("ov/#", 0)], pid=1, properties=R.props(subscription_id=1)) == [0]
    assert R.sub_ack(sub, [("ov/+", 2)], pid=2, properties=R.props(subscription_id=2)) == [2]
    assert R.sub_ack(sub, [("ov/a", 1)], pid=3) == [1]  # no identifier
    assert R.sub_ack(sub, [("+/a", 0)], pid=4, properties=R.props(subscription_id=268435455)) == [0]
    pub = connect(broker.port, "ov-v5-pub", 4)
    cases = [("ov/a", 2, 2, [1, 2, 268435455]), ("ov/b", 1, 1, [1, 2]), ("ov/b/c", 2, 0, [1]),
             ("x/a", 2, 0, [268435455])]
    for i, (topic, pq, want, ids) in enumerate(cases):
        R.publish_ack(pub, topic, f"{i}".encode(), qos=pq, pid=i + 1)
        m = R.recv_publishes(sub, 1)[0]
        assert (m.topic, m.qos) == (topic, want)
        assert sorted(m.props.get("subscription_id", [])) == ids
        assert R.no_publish(sub, 0.2), f"second copy of {topic}"
    sub.close()
    pub.close()


def test_retain_as_published(broker):
    rap = connect(broker.port, "rap-yes", 5)
    assert R.sub_ack(rap, [("rap/#", 1 | 0x08)]) == [1]
    plain = connect(broker.port, "rap-no", 5)
    assert R.sub_ack(plain, [("rap/#", 1)]) == [1]
    v3 = connect(broker.port, "rap-v3", 4)
    assert R.sub_ack(v3, [("rap/#", 1)]) == [1]
    pub = connect(broker.port, "rap-pub", 5)
    R.publish_ack(pub, "rap/r", b"retained", qos=1, retain=True, pid=1)
    R.publish_ack(pub, "rap/n", b"live", qos=1, pid=2)
    flags = {}
    for name, c in (("rap", rap), ("plain", plain), ("v3", v3)):
        flags[name] = [(m.payload, m.retain) for m in R.recv_publishes(c, 2)]
    assert flags["rap"] == [(b"retained", True), (b"live", False)]
    assert flags["plain"] == [(b"retained", False), (b"live", False)]
    assert flags["v3"] == [(b"retained", False), (b"live", False)]
    # the stored copy is sent with retain set to new subscriptions, RAP or not
    for i, opts in enumerate((1, 1 | 0x08)):
        late = connect(broker.port, f"rap-late-{i}", 5)
        assert R.sub_ack(late, [("rap/#", opts)]) == [1]
        m = R.recv_publishes(late, 1)[0]
        assert (m.topic, m.payload, m.retain) == ("rap/r", b"retained", True)
        assert R.no_publish(late, 0.2)
        late.close()
    for c in (rap, plain, v3, pub):
        c.close()
