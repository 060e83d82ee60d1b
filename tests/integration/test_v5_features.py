"""MQTT 5 features: topic aliases both ways, Maximum Packet Size both ways,
message expiry, property passthrough (user properties, content type,
response topic, correlation data, payload format), subscription identifiers,
reason strings and Request Problem Information, and the DISCONNECT a broker
sends when it shuts down."""
import signal
import time

import pytest

import mqttraw as R


def connect(port, cid, version=5, **kw):
    return R.raw_connect(port, cid, version=version, **kw)


def watcher(port, filt, cid, version=5, qos=1, properties=None):
    r = connect(port, cid, version, properties=properties)
    assert R.sub_ack(r, [(filt, qos)]) == [qos]
    return r


def pub(r, topic, payload=b"", qos=1, pid=1, **props):
    """PUBLISH with properties (mqttraw names), completing its QoS flow."""
    return R.publish_ack(r, topic, payload, qos=qos, pid=pid,
                         properties=R.props(**props) if props else None)


# ---------------------------------------------------------------- topic aliases, client to server


def test_client_topic_aliases(broker_factory):
    b = broker_factory("mqtt.max_topic_alias = 5", workers=2)
    w = watcher(b.port, "ta/#", "ta-watch")
    r = R.Raw(b.port, version=5)
    assert r.connect("ta-pub").props["topic_alias_maximum"] == 5
    pub(r, "ta/x", b"a", pid=1, topic_alias=1)
    pub(r, "", b"b", pid=2, topic_alias=1)
    pub(r, "ta/y", b"c", pid=3, topic_alias=1)  # the alias now names another topic
    pub(r, "", b"d", pid=4, topic_alias=1)
    pub(r, "ta/z", b"e", pid=5, topic_alias=5)  # the highest allowed alias
    pub(r, "", b"f", qos=2, pid=6, topic_alias=5)
    pub(r, "", b"g", qos=0, topic_alias=1)
    pub(r, "ta/plain", b"h", pid=7)  # topic without alias leaves the aliases alone
    pub(r, "", b"i", pid=8, topic_alias=5)
    got = R.recv_publishes(w, 9)
    assert [(m.topic, m.payload) for m in got] == [
        ("ta/x", b"a"), ("ta/x", b"b"), ("ta/y", b"c"), ("ta/y", b"d"), ("ta/z", b"e"),
        ("ta/z", b"f"), ("ta/y", b"g"), ("ta/plain", b"h"), ("ta/z", b"i")]
    # the watcher allows no aliases: it never gets one
    assert not any("topic_alias" in m.props for m in got)
    r.close()
    # aliases belong to one network connection
    r = connect(b.port, "ta-pub", clean=False)
    r.send(R.publish("", b"x", qos=1, version=5, properties=R.props(topic_alias=1)))
    d = r.expect_disconnect(0x82)
    assert "reason_string" in d.props
    assert R.no_publish(w, 0.3)
    w.close()


@pytest.mark.parametrize("alias,topic,rc", [
    (0, "ta/x", 0x94),   # alias 0 is never valid
    (6, "ta/x", 0x94),   # above the advertised maximum
    (6, "", 0x94),
    (65535, "ta/x", 0x94),
    (3, "", 0x82),       # never set on this connection
], ids=["zero", "above-max", "above-max-empty", "65535", "unknown"])
def test_client_topic_alias_errors(broker_factory, alias, topic, rc):
    b = broker_factory("mqtt.max_topic_alias = 5", workers=1)
    w = watcher(b.port, "#", "tae-watch")
    r = connect(b.port, "tae-pub")
    pub(r, "ta/set", b"", pid=1, topic_alias=1)
    assert R.recv_publishes(w, 1)[0].topic == "ta/set"
    r.send(R.publish(topic, b"bad", qos=1, pid=2, version=5,
                     properties=R.props(topic_alias=alias)))
    r.expect_disconnect(rc)
    assert R.no_publish(w, 0.3)
    w.close()


def test_client_topic_alias_when_disabled(broker_factory):
    b = broker_factory("mqtt.max_topic_alias = 0", workers=1)
    r = R.Raw(b.port, version=5)
    ack = r.connect("tad-pub")
    assert "topic_alias_maximum" not in ack.props  # absent means 0
    r.send(R.publish("ta/x", b"", qos=0, version=5, properties=R.props(topic_alias=1)))
    r.expect_disconnect(0x94)


# ---------------------------------------------------------------- topic aliases, server to client


class AliasTable:
    """The client side of server-to-client aliases: resolves each PUBLISH."""

    def __init__(self, maximum):
        self.maximum = maximum
        self.map = {}

    def resolve(self, m):
        alias = m.props.get("topic_alias")
        if alias is None:
            assert m.topic, "empty topic without alias"
            return m.topic
        assert 1 <= alias <= self.maximum, f"alias {alias} above our maximum {self.maximum}"
        if m.topic:
            self.map[alias] = m.topic
            return m.topic
        assert alias in self.map, f"alias {alias} used before it was set"
        return self.map[alias]


def test_server_topic_aliases(broker):
    sub = connect(broker.port, "sa-sub", properties=R.props(topic_alias_maximum=2))
    assert R.sub_ack(sub, [("sa/#", 1)]) == [1]
    p = connect(broker.port, "sa-pub", version=4)
    topics = ["sa/one", "sa/one", "sa/two", "sa/two", "sa/three", "sa/one", "sa/three", "sa/two"]
    for i, t in enumerate(topics):
        R.publish_ack(p, t, f"{i}".encode(), qos=1 if i % 2 else 0, pid=i + 1)
    got = R.recv_publishes(sub, len(topics))
    wire = [(m.topic, m.props.get("topic_alias")) for m in got]
    assert wire == [
        ("sa/one", 1), ("", 1),       # first: topic + alias; then the alias alone
        ("sa/two", 2), ("", 2),
        ("sa/three", None),           # no alias left: the full topic, every time
        ("", 1),
        ("sa/three", None),
        ("", 2)]
    assert [m.payload for m in got] == [f"{i}".encode() for i in range(len(topics))]
    sub.close()
    p.close()


def test_server_topic_aliases_reset_on_new_connection(broker):
    props = R.props(topic_alias_maximum=3, session_expiry=60)
    sub = connect(broker.port, "sar-sub", properties=props)
    assert R.sub_ack(sub, [("sar/#", 1)]) == [1]
    p = connect(broker.port, "sar-pub", version=4)
    for i in range(3):
        R.publish_ack(p, "sar/t", f"{i}".encode(), qos=1, pid=i + 1)
    table = AliasTable(3)
    first = [sub.expect(R.PUBLISH) for _ in range(3)]  # never acknowledged
    assert [table.resolve(m) for m in first] == ["sar/t"] * 3
    assert first[1].topic == ""  # the alias alone was used
    sub.close()
    # the resent messages and a new one must not rely on the old mapping
    sub = R.Raw(broker.port, version=5)
    assert sub.connect("sar-sub", clean=False, properties=props).session_present
    R.publish_ack(p, "sar/t", b"3", qos=1, pid=9)
    table = AliasTable(3)
    got = R.recv_publishes(sub, 4)
    assert [table.resolve(m) for m in got] == ["sar/t"] * 4
    assert [m.payload for m in got] == [b"0", b"1", b"2", b"3"]
    assert [m.dup for m in got] == [True, True, True, False]
    sub.close()
    p.close()


def test_server_alias_not_spent_on_discarded_message(broker):
    # a message too big for the client is not sent: the alias it would have
    # set must not be used later as if the client knew it
    sub = connect(broker.port, "sad-sub",
                  properties=R.props(topic_alias_maximum=1, maximum_packet_size=100))
    assert R.sub_ack(sub, [("sad/#", 0)]) == [0]
    p = connect(broker.port, "sad-pub", version=4)
    for payload in (b"x" * 200, b"small", b"again", b"y" * 200, b"last"):
        R.publish_ack(p, "sad/t", payload, qos=1)
    got = R.recv_publishes(sub, 3)
    table = AliasTable(1)
    assert [(table.resolve(m), m.payload) for m in got] == [
        ("sad/t", b"small"), ("sad/t", b"again"), ("sad/t", b"last")]
    assert [(m.topic, m.props.get("topic_alias")) for m in got] == [
        ("sad/t", 1), ("", 1), ("", 1)]
    assert R.no_publish(sub, 0.2)
    sub.close()
    p.close()


# ---------------------------------------------------------------- maximum packet size


def test_client_maximum_packet_size(broker):
    # the PUBLISH the broker would send is 2 + 2 + 5 (topic) + 2 (id) + 1
    # (empty properties) + payload bytes: payload 88 makes exactly 100
    sub = connect(broker.port, "mps-sub",
                  properties=R.props(maximum_packet_size=100, receive_maximum=1))
    assert R.sub_ack(sub, [("mps/#", 1)]) == [1]
    p = connect(broker.port, "mps-pub")
    plan = [("small0", 0, b"s" * 10), ("big0", 0, b"B" * 200), ("a", 1, b"a" * 20),
            ("big1", 1, b"B" * 89), ("exact", 1, b"e" * 88), ("big2", 1, b"B" * 5000),
            ("b", 1, b"b")]
    for i, (_, q, payload) in enumerate(plan):
        R.publish_ack(p, "mps/t", payload, qos=q, pid=i + 1)
    want = [payload for name, _, payload in plan if not name.startswith("big")]
    # receive maximum 1: had a discarded QoS 1 message stayed in the window,
    # nothing after it would arrive
    got = R.recv_publishes(sub, len(want))
    assert [m.payload for m in got] == want
    assert R.no_publish(sub, 0.3)
    # properties count too: a user property pushes a fitting payload over
    pub(p, "mps/t", b"e" * 80, pid=20, user_property=[("k", "v" * 20)])
    pub(p, "mps/t", b"ok", pid=21)
    assert [m.payload for m in R.recv_publishes(sub, 1)] == [b"ok"]
    sub.close()
    p.close()


def test_client_maximum_packet_size_strips_reason_string(broker):
    # a DISCONNECT with its reason string would exceed 20 bytes: the broker
    # drops the optional string rather than break the limit
    r = connect(broker.port, "mps-rs", properties=R.props(maximum_packet_size=20))
    r.send(R.publish("", b"", qos=0, version=5, properties=R.props(topic_alias=3)))
    d = r.expect_disconnect(0x82)
    assert "reason_string" not in d.props
    # the same error with room for the string
    r = connect(broker.port, "mps-rs2", properties=R.props(maximum_packet_size=200))
    r.send(R.publish("", b"", qos=0, version=5, properties=R.props(topic_alias=3)))
    d = r.expect_disconnect(0x82)
    assert d.props.get("reason_string")


def test_server_maximum_packet_size_advertised_and_enforced(broker_factory):
    b = broker_factory("mqtt.max_packet_size = 2KB", workers=1)
    r = R.Raw(b.port, version=5)
    assert r.connect("mps-srv").props["maximum_packet_size"] == 2048
    R.publish_ack(r, "mps/x", b"x" * 2000, qos=1)
    r.send(R.publish("mps/x", b"x" * 2048, qos=1, pid=2, version=5))
    d = r.expect_disconnect(0x95)
    assert "reason_string" in d.props


# ---------------------------------------------------------------- message expiry


def test_message_expiry_for_offline_session(broker):
    props = R.props(session_expiry=60)
    sub = connect(broker.port, "exp-sub", properties=props)
    assert R.sub_ack(sub, [("exp/#", 1)]) == [1]
    sub.close()
    p = connect(broker.port, "exp-pub")
    pub(p, "exp/t", b"short", pid=1, message_expiry=1)
    pub(p, "exp/t", b"long", pid=2, message_expiry=60)
    pub(p, "exp/t", b"forever", pid=3)
    pub(p, "exp/t", b"short0", qos=0, message_expiry=1)
    time.sleep(1.3)  # the one-second messages expire meanwhile
    sub = R.Raw(broker.port, version=5)
    assert sub.connect("exp-sub", clean=False, properties=props).session_present
    got = R.recv_publishes(sub, 2)
    assert [m.payload for m in got] == [b"long", b"forever"]
    # the remaining lifetime is forwarded, decreased by the time spent queued
    assert 1 <= got[0].props["message_expiry"] <= 59
    assert "message_expiry" not in got[1].props
    assert R.no_publish(sub, 0.3)
    sub.close()
    p.close()


def test_message_expiry_while_queued_behind_full_window(broker_factory):
    b = broker_factory("mqtt.max_inflight = 1", workers=2)
    sub = connect(b.port, "expq-sub")
    assert R.sub_ack(sub, [("expq/#", 1)]) == [1]
    p = connect(b.port, "expq-pub")
    pub(p, "expq/t", b"first", pid=1)
    first = sub.expect(R.PUBLISH)  # holds the only window slot
    pub(p, "expq/t", b"dies", pid=2, message_expiry=1)
    pub(p, "expq/t", b"lives", pid=3, message_expiry=30)
    time.sleep(1.3)
    sub.send(R.ack(R.PUBACK, first.pid, version=5))
    got = R.recv_publishes(sub, 1)
    assert got[0].payload == b"lives"
    assert 1 <= got[0].props["message_expiry"] <= 29
    assert R.no_publish(sub, 0.3)
    sub.close()
    p.close()


def test_live_message_expiry_forwarded(broker):
    sub = watcher(broker.port, "expl/#", "expl-sub")
    v3 = watcher(broker.port, "expl/#", "expl-v3", version=4)
    p = connect(broker.port, "expl-pub")
    pub(p, "expl/t", b"x", pid=1, message_expiry=100)
    m = R.recv_publishes(sub, 1)[0]
    assert 99 <= m.props["message_expiry"] <= 100
    assert R.recv_publishes(v3, 1)[0].payload == b"x"
    for c in (sub, v3, p):
        c.close()


def test_retained_message_expiry(broker):
    p = connect(broker.port, "expr-pub")
    R.publish_ack(p, "expr/short", b"short", qos=1, retain=True, pid=1,
                  properties=R.props(message_expiry=1))
    R.publish_ack(p, "expr/keep", b"keep", qos=1, retain=True, pid=2)
    early = connect(broker.port, "expr-early")
    assert R.sub_ack(early, [("expr/#", 1)]) == [1]
    got = sorted(R.recv_publishes(early, 2), key=lambda m: m.topic)
    assert [(m.topic, m.retain) for m in got] == [("expr/keep", True), ("expr/short", True)]
    assert got[1].props["message_expiry"] == 1
    early.close()
    time.sleep(1.2)
    late = connect(broker.port, "expr-late")
    assert R.sub_ack(late, [("expr/#", 1)]) == [1]
    got = R.drain_publishes(late, quiet=0.4)
    assert [(m.topic, m.payload) for m in got] == [("expr/keep", b"keep")]
    late.close()
    p.close()


# ---------------------------------------------------------------- property passthrough


def test_user_properties_passthrough(broker):
    sub = watcher(broker.port, "up/#", "up-sub")
    v3 = watcher(broker.port, "up/#", "up-v3", version=4)
    p = connect(broker.port, "up-pub")
    ups = [("a", "1"), ("b", "2"), ("a", "3"), ("a", "1"), ("\u00fcn\u00ef", "c\u00f6d\u00e9"),
           ("", ""), ("z", "")]
    pub(p, "up/t", b"payload", pid=1, user_property=ups)
    pub(p, "up/t", b"none", pid=2)
    got = R.recv_publishes(sub, 2)
    assert got[0].props["user_property"] == ups  # order and duplicates kept
    assert "user_property" not in got[1].props
    assert [m.payload for m in R.recv_publishes(v3, 2)] == [b"payload", b"none"]
    for c in (sub, v3, p):
        c.close()


def test_request_response_properties_passthrough(broker):
    requester = connect(broker.port, "rr-requester")
    assert R.sub_ack(requester, [("rr/resp/requester", 1)]) == [1]
    responder = connect(broker.port, "rr-responder")
    assert R.sub_ack(responder, [("rr/req/#", 1)]) == [1]
    corr = b"\x00\xffcorr-7\x00"
    pub(requester, "rr/req/time", b'{"q": 1}', pid=1, payload_format=1,
        content_type="application/json; charset=utf-8", response_topic="rr/resp/requester",
        correlation_data=corr)
    req = R.recv_publishes(responder, 1)[0]
    assert req.payload == b'{"q": 1}'
    assert req.props["payload_format"] == 1
    assert req.props["content_type"] == "application/json; charset=utf-8"
    assert req.props["response_topic"] == "rr/resp/requester"
    assert req.props["correlation_data"] == corr
    pub(responder, req.props["response_topic"], b"\x01\x02", pid=1, payload_format=0,
        content_type="application/octet-stream", correlation_data=req.props["correlation_data"])
    resp = R.recv_publishes(requester, 1)[0]
    assert (resp.topic, resp.payload) == ("rr/resp/requester", b"\x01\x02")
    assert resp.props["correlation_data"] == corr
    assert resp.props["content_type"] == "application/octet-stream"
    assert resp.props["payload_format"] == 0
    assert "response_topic" not in resp.props
    requester.close()
    responder.close()


def test_response_topic_with_wildcard_refused(broker):
    r = connect(broker.port, "rr-bad")
    r.send(R.publish("rr/x", b"", qos=0, version=5, properties=R.props(response_topic="rr/+")))
    r.expect_disconnect(0x82)


# ---------------------------------------------------------------- subscription identifiers


def test_subscription_identifiers(broker):
    sub = connect(broker.port, "sid-sub")
    assert R.sub_ack(sub, [("sid/a/#", 1)], pid=1, properties=R.props(subscription_id=42)) == [1]
    assert R.sub_ack(sub, [("sid/+/b", 1)], pid=2, properties=R.props(subscription_id=7)) == [1]
    assert R.sub_ack(sub, [("sid/plain", 1)], pid=3) == [1]
    p = connect(broker.port, "sid-pub", version=4)

    def ids_for(topic, pid):
        R.publish_ack(p, topic, b"x", qos=1, pid=pid)
        m = R.recv_publishes(sub, 1)[0]
        assert m.topic == topic
        return sorted(m.props.get("subscription_id", []))

    assert ids_for("sid/a/b", 1) == [7, 42]
    assert ids_for("sid/a/c", 2) == [42]
    assert ids_for("sid/x/b", 3) == [7]
    assert ids_for("sid/plain", 4) == []
    # subscribing again replaces the identifier, or removes it
    assert R.sub_ack(sub, [("sid/a/#", 1)], pid=4, properties=R.props(subscription_id=268435455)) == [1]
    assert R.sub_ack(sub, [("sid/+/b", 1)], pid=5) == [1]
    assert ids_for("sid/a/b", 5) == [268435455]
    assert ids_for("sid/x/b", 6) == []
    # a retained message sent for a new subscription carries its identifier
    R.publish_ack(p, "sid/r/1", b"kept", qos=1, retain=True, pid=7)
    assert R.no_publish(sub, 0.2)  # no subscription matches it yet
    assert R.sub_ack(sub, [("sid/r/+", 1)], pid=6, properties=R.props(subscription_id=99)) == [1]
    m = R.recv_publishes(sub, 1)[0]
    assert (m.topic, m.retain, m.props["subscription_id"]) == ("sid/r/1", True, [99])
    assert R.no_publish(sub, 0.2)
    sub.close()
    p.close()


def test_many_overlapping_subscription_identifiers_all_delivered(broker):
    """Every matching subscription's identifier reaches the client (in one
    copy or spread over several), however many subscriptions overlap."""
    sub = connect(broker.port, "sid-many")
    filters = ["many/a/b", "many/+/b", "many/a/+", "many/#", "many/+/+", "+/a/b", "+/+/b",
               "+/a/#", "#", "+/#", "many/a/#", "+/+/+"]
    for i, f in enumerate(filters):
        assert R.sub_ack(sub, [(f, 1)], pid=i + 1,
                         properties=R.props(subscription_id=100 + i)) == [1]
    p = connect(broker.port, "sid-many-pub", version=4)
    R.publish_ack(p, "many/a/b", b"m", qos=1)
    got = R.drain_publishes(sub, quiet=0.4)
    assert got and all(m.payload == b"m" and m.qos == 1 for m in got)
    ids = [i for m in got for i in m.props.get("subscription_id", [])]
    assert sorted(set(ids)) == [100 + i for i in range(len(filters))]
    assert all(m.props.get("subscription_id") for m in got)
    sub.close()
    p.close()


def test_subscription_identifier_zero_is_protocol_error(broker):
    r = connect(broker.port, "sid-zero")
    r.send(R.subscribe(1, [("x/#", 0)], version=5, properties=R.props(subscription_id=0)))
    r.expect_disconnect(0x82)


def test_subscription_identifiers_disabled(broker_factory):
    b = broker_factory("mqtt.subscription_identifiers = false", workers=1)
    r = R.Raw(b.port, version=5)
    assert r.connect("sid-off").props["sub_id_available"] == 0
    assert R.sub_ack(r, [("sidoff/#", 1)], pid=1) == [1]  # without an identifier: fine
    r.send(R.subscribe(2, [("sidoff/x", 1)], version=5, properties=R.props(subscription_id=5)))
    d = r.expect_disconnect(0xA1)
    assert "reason_string" in d.props


# ---------------------------------------------------------------- reason strings


def test_request_problem_information_zero_suppresses_reason_strings(broker):
    # DISCONNECT for a protocol error: with a reason string by default...
    r = connect(broker.port, "rpi-1")
    r.send(R.publish("", b"", qos=0, version=5, properties=R.props(topic_alias=9)))
    assert r.expect_disconnect(0x82).props.get("reason_string")
    # ...and without when the client asked for no problem information
    r = connect(broker.port, "rpi-0", properties=R.props(request_problem_info=0))
    r.send(R.publish("", b"", qos=0, version=5, properties=R.props(topic_alias=9)))
    d = r.expect_disconnect(0x82)
    assert "reason_string" not in d.props
    # the same for a refusing CONNACK (an authentication method nobody offers)
    for rpi, has_string in ((1, True), (0, False)):
        r = R.Raw(broker.port, version=5)
        r.send(R.connect(f"rpi-auth-{rpi}", version=5,
                         properties=R.props(auth_method="SCRAM-SHA-1", request_problem_info=rpi)))
        ack = r.expect(R.CONNACK)
        assert ack.rc == 0x8C
        assert ("reason_string" in ack.props) == has_string
        assert r.closed()


# ---------------------------------------------------------------- shutdown


def test_shutdown_sends_server_shutting_down(broker_factory):
    b = broker_factory(workers=3)
    v5 = [connect(b.port, R.client_id_on_worker("shut-v5", w, 3)) for w in range(3)]
    v3 = connect(b.port, "shut-v3", version=4)
    # a client in the middle of receiving is told too
    busy = connect(b.port, "shut-busy", properties=R.props(receive_maximum=1))
    assert R.sub_ack(busy, [("shut/#", 1)]) == [1]
    p = connect(b.port, "shut-pub", version=4)
    for i in range(3):
        R.publish_ack(p, "shut/t", b"x", qos=1, pid=i + 1)
    busy.expect(R.PUBLISH)
    b.proc.send_signal(signal.SIGTERM)
    for r in v5 + [busy]:
        pkts = [x for x in r.read_until_close(timeout=10) if x.type != R.PUBLISH]
        assert [(x.type, x.rc) for x in pkts] == [(R.DISCONNECT, 0x8B)]
    assert v3.read_until_close(timeout=10) == []
    assert b.stop() == 0
    assert b.sanitizer_report() is None
