"""Will messages: when they are published (abnormal ends, DISCONNECT 0x04,
takeover) and when not (normal DISCONNECT, reconnect within the will delay),
the will delay and its interaction with session expiry, QoS/retain and
MQTT 5 properties carried through, and wills the broker must refuse.

Negative checks ("no will") are made deterministic with a marker message:
a client owned by the same I/O worker as the will's client publishes the
marker after the will would have been published, so it cannot overtake it.
"""
import time

import pytest

import mqttraw as R
from mqttraw import CONNACK, DISCONNECT, PUBACK, SUBACK

NWORKERS = 2  # the `broker` fixture's worker count


# ---------------------------------------------------------------- helpers

def watcher(port, filters, cid="will-watch", version=5):
    """A raw client subscribed (QoS 2) to the given filters."""
    r = R.raw_connect(port, cid, version=version)
    r.send(R.subscribe(1, [(f, 2) for f in filters], version=version))
    ack = r.expect(SUBACK)
    assert all(rc < 0x80 for rc in ack.rcs), ack
    return r


def next_publish(w, timeout=5.0):
    return R.recv_publishes(w, 1, timeout=timeout)[0]


def with_will(port, cid, topic, payload=b"gone", qos=0, retain=False, version=5, props=None,
              will_props=None, clean=True, keepalive=60):
    r = R.Raw(port, version=version)
    kw = {}
    if version == 5:
        kw["properties"] = props
        kw["will_properties"] = will_props
    ack = r.connect(cid, clean=clean, keepalive=keepalive, will=(topic, payload, qos, retain), **kw)
    assert ack.rc == 0, ack
    return r


def marker_client(port, will_cid, nworkers=NWORKERS):
    """A client owned by the same worker as will_cid."""
    w = R.owner_worker(will_cid, nworkers)
    cid = R.client_id_on_worker(f"marker-{will_cid}", w, nworkers)
    return R.raw_connect(port, cid, version=5)


def assert_marker_first(w, marker, topic="marker/t"):
    """Publishes a marker; the next message the watcher gets must be it."""
    marker.send(R.publish(topic, b"marker", qos=1, pid=77, version=5))
    marker.expect(PUBACK)
    m = next_publish(w)
    assert (m.topic, m.payload) == (topic, b"marker"), f"got {m.topic} {m.payload!r} first"
    R.no_publish(w, 0.2)


# ---------------------------------------------------------------- abnormal ends

@pytest.mark.parametrize("version", [3, 4, 5])
def test_will_on_socket_drop(broker, version):
    w = watcher(broker.port, ["will/#"])
    c = with_will(broker.port, f"drop-{version}", f"will/drop/{version}", b"dropped", qos=2,
                  version=version)
    c.close()
    m = next_publish(w)
    assert (m.topic, m.payload, m.qos, m.retain) == (f"will/drop/{version}", b"dropped", 2, False)


@pytest.mark.parametrize("version", [4, 5])
def test_will_on_keepalive_timeout(broker, version):
    w = watcher(broker.port, ["will/#"])
    c = with_will(broker.port, f"ka-{version}", "will/ka", b"timed-out", qos=1, version=version,
                  keepalive=1)
    t0 = time.time()
    m = next_publish(w, timeout=5.0)
    assert (m.topic, m.payload, m.qos) == ("will/ka", b"timed-out", 1)
    assert time.time() - t0 >= 1.4  # not before 1.5 x keep-alive
    if version == 5:
        assert c.expect(DISCONNECT).rc == 0x8D
    assert c.closed()


@pytest.mark.parametrize("version", [4, 5])
def test_will_on_protocol_error(broker, version):
    w = watcher(broker.port, ["will/#"])
    c = with_will(broker.port, f"perr-{version}", "will/perr", b"violated", version=version)
    c.send(R.publish("bad/+/topic", b"x", version=version))  # wildcard in a topic name
    if version == 5:
        assert c.expect(DISCONNECT).rc == 0x90
    assert c.closed()
    m = next_publish(w)
    assert (m.topic, m.payload) == ("will/perr", b"violated")


@pytest.mark.parametrize("version", [4, 5])
def test_retained_will_visible_to_later_subscriber(broker, version):
    c = with_will(broker.port, f"ret-{version}", f"will/ret/{version}", b"last words", qos=1,
                  retain=True, version=version)
    c.close()
    # the will is published when the broker notices; then it is retained
    def retained_seen():
        r = R.raw_connect(broker.port, f"late-{version}", version=5)
        r.send(R.subscribe(1, [(f"will/ret/{version}", 2)], version=5))
        r.expect(SUBACK)
        try:
            m = next_publish(r, timeout=0.3)
        except TimeoutError:
            r.close()
            return None
        r.close()
        return m

    m = R.wait_until(retained_seen, timeout=5.0, what="retained will")
    assert (m.payload, m.qos, m.retain) == (b"last words", 1, True)


# ---------------------------------------------------------------- normal ends

@pytest.mark.parametrize("version", [3, 4, 5])
def test_no_will_on_normal_disconnect(broker, version):
    w = watcher(broker.port, ["will/#", "marker/#"])
    cid = f"normal-{version}"
    c = with_will(broker.port, cid, "will/normal", b"should not", version=version)
    c.send(R.disconnect(version, rc=0 if version == 5 else None))
    assert c.closed()
    assert_marker_first(w, marker_client(broker.port, cid))


def test_will_on_disconnect_with_will_message(broker):
    w = watcher(broker.port, ["will/#"])
    c = with_will(broker.port, "dww", "will/dww", b"asked for", qos=1)
    c.send(R.disconnect(5, rc=0x04))
    assert c.closed()
    m = next_publish(w)
    assert (m.topic, m.payload, m.qos) == ("will/dww", b"asked for", 1)


def test_will_on_disconnect_with_error_reason(broker):
    # a client-sent error reason is not a normal disconnection: the will goes out
    w = watcher(broker.port, ["will/#"])
    c = with_will(broker.port, "dwerr", "will/dwerr", b"client error")
    c.send(R.disconnect(5, rc=0x80))
    assert c.closed()
    assert next_publish(w).payload == b"client error"


# ---------------------------------------------------------------- will delay

def test_will_delay_publishes_after_delay(broker):
    w = watcher(broker.port, ["will/#"])
    c = with_will(broker.port, "delay1", "will/delay", b"late", props=R.props(session_expiry=60),
                  will_props=R.props(will_delay=1))
    t0 = time.time()
    c.close()
    m = next_publish(w, timeout=5.0)
    assert (m.topic, m.payload) == ("will/delay", b"late")
    assert time.time() - t0 >= 0.9, "published before the will delay"


def test_will_delay_cancelled_by_reconnect(broker):
    w = watcher(broker.port, ["will/#", "marker/#"])
    # the control's will delay runs on the same worker and starts later, so
    # when it is published the test client's delay has passed as well
    ids = R.ids_per_worker("wdc", NWORKERS, 2)[0]
    cid, control = ids
    events = R.ClientEvents(broker.port)
    c = with_will(broker.port, cid, "will/cancel", b"must not", props=R.props(session_expiry=60),
                  will_props=R.props(will_delay=1))
    k = with_will(broker.port, control, "will/control", b"control",
                  props=R.props(session_expiry=60), will_props=R.props(will_delay=1))
    c.close()
    events.wait(cid)
    c2 = R.Raw(broker.port, version=5)
    ack = c2.connect(cid, clean=False, properties=R.props(session_expiry=60))
    assert ack.rc == 0 and ack.session_present
    k.close()
    m = next_publish(w, timeout=5.0)
    assert (m.topic, m.payload) == ("will/control", b"control"), m
    R.no_publish(w, 0.3)
    # the resumed connection has no will any more: a normal end stays quiet
    c2.send(R.disconnect(5))
    assert c2.closed()
    assert_marker_first(w, marker_client(broker.port, cid))


def test_will_delay_reconnect_with_clean_start_publishes(broker):
    w = watcher(broker.port, ["will/#"])
    events = R.ClientEvents(broker.port)
    c = with_will(broker.port, "wdclean", "will/wdclean", b"session ended",
                  props=R.props(session_expiry=60), will_props=R.props(will_delay=30))
    c.close()
    events.wait("wdclean")
    c2 = R.Raw(broker.port, version=5)
    ack = c2.connect("wdclean", clean=True)
    assert ack.rc == 0 and not ack.session_present
    # the old session ended with the clean start: its will goes out now
    m = next_publish(w, timeout=3.0)
    assert m.payload == b"session ended"


def test_will_published_at_session_end_before_delay(broker):
    w = watcher(broker.port, ["will/#"])
    c = with_will(broker.port, "wdexp", "will/wdexp", b"expired",
                  props=R.props(session_expiry=1), will_props=R.props(will_delay=60))
    t0 = time.time()
    c.close()
    m = next_publish(w, timeout=5.0)
    assert m.payload == b"expired"
    assert time.time() - t0 >= 0.9
    # the session is gone too
    r = R.Raw(broker.port, version=5)
    ack = r.connect("wdexp", clean=False, properties=R.props(session_expiry=60))
    assert ack.rc == 0 and ack.session_present is False


def test_will_delay_with_session_expiry_zero_is_immediate(broker):
    w = watcher(broker.port, ["will/#"])
    c = with_will(broker.port, "wdzero", "will/wdzero", b"now", will_props=R.props(will_delay=60))
    c.close()
    m = next_publish(w, timeout=3.0)
    assert m.payload == b"now"


# ---------------------------------------------------------------- properties

def test_will_properties_passed_through(broker):
    w = watcher(broker.port, ["will/#"])
    v4 = watcher(broker.port, ["will/#"], cid="will-watch-v4", version=4)
    wp = R.props(payload_format=1, message_expiry=120, content_type="text/plain",
                 response_topic="will/replies", correlation_data=b"\x00\x01corr",
                 user_property=[("a", "1"), ("b", "2"), ("a", "3")])
    c = with_will(broker.port, "wprops", "will/props", "héllo".encode(), qos=1, will_props=wp)
    c.close()
    m = next_publish(w)
    assert (m.topic, m.payload) == ("will/props", "héllo".encode())
    p = m.props
    assert p["payload_format"] == 1
    assert p["content_type"] == "text/plain"
    assert p["response_topic"] == "will/replies"
    assert p["correlation_data"] == b"\x00\x01corr"
    assert p["user_property"] == [("a", "1"), ("b", "2"), ("a", "3")]
    assert 100 <= p["message_expiry"] <= 120
    # the will delay itself is not a PUBLISH property
    assert "will_delay" not in p
    m4 = next_publish(v4)
    assert (m4.topic, m4.payload, m4.qos) == ("will/props", "héllo".encode(), 1)


def test_will_message_expiry_applies(broker):
    # a retained will whose expiry passes is no longer delivered
    c = with_will(broker.port, "wexp", "will/short", b"brief", retain=True,
                  will_props=R.props(message_expiry=1))
    w = watcher(broker.port, ["will/short"])
    c.close()
    assert next_publish(w).payload == b"brief"
    time.sleep(1.3)  # the message expiry is the feature under test
    late = watcher(broker.port, ["will/short"], cid="late-watch")
    R.no_publish(late, 0.3)


# ---------------------------------------------------------------- takeover

@pytest.mark.parametrize("version", [3, 4])
def test_will_on_takeover_v3(broker, version):
    w = watcher(broker.port, ["will/#"])
    c = with_will(broker.port, f"tk-{version}", "will/tk", b"taken over", version=version)
    c2 = R.raw_connect(broker.port, f"tk-{version}", version=version, clean=False)
    m = next_publish(w)
    assert m.payload == b"taken over"
    assert c.closed()
    c2.close()


def test_will_on_takeover_v5_clean_start(broker):
    w = watcher(broker.port, ["will/#"])
    c = with_will(broker.port, "tk5c", "will/tk5c", b"clean", props=R.props(session_expiry=60),
                  will_props=R.props(will_delay=30))
    c2 = R.Raw(broker.port, version=5)
    ack = c2.connect("tk5c", clean=True)
    assert ack.rc == 0 and not ack.session_present
    assert c.expect(DISCONNECT).rc == 0x8E
    m = next_publish(w)
    assert m.payload == b"clean"


def test_will_on_takeover_v5_resume_without_delay(broker):
    w = watcher(broker.port, ["will/#"])
    c = with_will(broker.port, "tk5n", "will/tk5n", b"no delay", props=R.props(session_expiry=60))
    c2 = R.Raw(broker.port, version=5)
    ack = c2.connect("tk5n", clean=False, properties=R.props(session_expiry=60))
    assert ack.rc == 0 and ack.session_present
    assert c.expect(DISCONNECT).rc == 0x8E
    assert next_publish(w).payload == b"no delay"


def test_no_will_on_takeover_v5_resume_with_delay(broker):
    w = watcher(broker.port, ["will/#", "marker/#"])
    c = with_will(broker.port, "tk5d", "will/tk5d", b"must not", props=R.props(session_expiry=60),
                  will_props=R.props(will_delay=1))
    c2 = R.Raw(broker.port, version=5)
    ack = c2.connect("tk5d", clean=False, properties=R.props(session_expiry=60))
    assert ack.rc == 0 and ack.session_present
    assert c.expect(DISCONNECT).rc == 0x8E
    assert c.closed()
    assert_marker_first(w, marker_client(broker.port, "tk5d"))
    # nor later, when the delay has passed: the will was discarded, not delayed
    control = R.ids_per_worker("tk5d-ctl", NWORKERS, 1)[R.owner_worker("tk5d", NWORKERS)][0]
    k = with_will(broker.port, control, "will/control", b"control",
                  props=R.props(session_expiry=60), will_props=R.props(will_delay=1))
    k.close()
    m = next_publish(w, timeout=5.0)
    assert m.payload == b"control"


# ---------------------------------------------------------------- refused wills

def test_will_topic_with_wildcard_refused(broker):
    for topic in ("will/+", "will/#", ""):
        r = R.Raw(broker.port, version=5)
        r.send(R.connect("wildwill", version=5, will=(topic, b"x", 0, False)))
        ack = r.expect(CONNACK)
        assert ack.rc == 0x90, (topic, ack)
        assert r.closed()
        # MQTT 3.1.1 has no return code for it: the connection is closed
        r = R.Raw(broker.port, version=4)
        r.send(R.connect("wildwill", version=4, will=(topic, b"x", 0, False)))
        with pytest.raises(ConnectionError):
            p = r.recv(3)
            raise AssertionError(f"unexpected {p!r}")


def test_will_beyond_broker_limits(broker_factory):
    b = broker_factory("mqtt.max_qos_allowed = 1\nmqtt.retain_available = false", workers=2)
    r = R.Raw(b.port, version=5)
    assert r.connect("wq", will=("will/q", b"x", 2, False)).rc == 0x9B
    assert r.closed()
    r = R.Raw(b.port, version=5)
    assert r.connect("wr", will=("will/r", b"x", 0, True)).rc == 0x9A
    assert r.closed()
    # MQTT 3.1.1 clients are accepted and their will is downgraded
    w = watcher(b.port, ["will/#"])
    c = R.Raw(b.port, version=4)
    assert c.connect("wv4", will=("will/v4", b"down", 2, True)).rc == 0
    c.close()
    m = next_publish(w)
    assert (m.payload, m.qos, m.retain) == (b"down", 1, False)


def test_will_invalid_utf8_with_payload_format(broker):
    r = R.Raw(broker.port, version=5)
    ack = r.connect("wutf", will=("will/u", b"\xff\xfe", 0, False),
                    will_properties=R.props(payload_format=1))
    assert ack.rc == 0x99
    assert r.closed()
