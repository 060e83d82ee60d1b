"""Retained messages: storing, replacing and clearing them, delivery on
subscribe through exact and wildcard filters, the retain flag, MQTT 5 Retain
Handling and Retain As Published, shared subscriptions, $SYS, QoS
downgrade, mqtt.max_retained_messages, and a large store meeting a small
session queue."""
import pytest

import mqttraw as R

VERSIONS = [4, 5]


def fresh(port, cid, version=4):
    return R.raw_connect(port, cid, version=version)


def retained_on_subscribe(port, cid, flt, version=4, qos=1, expect=None, options=None):
    """Subscribes a new client to flt and returns {topic: packet} of what
    arrives. With expect=n, waits for n messages then checks no more come."""
    r = fresh(port, cid, version)
    opts = qos if options is None else options
    assert R.sub_ack(r, [(flt, opts)]) == [qos]
    if expect is None:
        got = R.drain_publishes(r, quiet=0.3)
    else:
        got = R.recv_publishes(r, expect)
        R.no_publish(r, 0.2)
    r.close()
    out = {}
    for p in got:
        assert p.topic not in out, f"retained {p.topic} delivered twice"
        out[p.topic] = p
    return out


@pytest.mark.parametrize("version", VERSIONS)
def test_set_replace_clear(broker, version):
    pub = fresh(broker.port, f"rpub-{version}", version)
    R.publish_ack(pub, "ret/t", b"one", qos=1, retain=True)
    got = retained_on_subscribe(broker.port, f"rs1-{version}", "ret/t", version, expect=1)
    assert got["ret/t"].payload == b"one" and got["ret/t"].retain
    R.publish_ack(pub, "ret/t", b"two", qos=1, retain=True)
    got = retained_on_subscribe(broker.port, f"rs2-{version}", "ret/t", version, expect=1)
    assert got["ret/t"].payload == b"two"
    # a non-retained publish does not replace the retained message
    R.publish_ack(pub, "ret/t", b"live", qos=1, retain=False)
    got = retained_on_subscribe(broker.port, f"rs3-{version}", "ret/t", version, expect=1)
    assert got["ret/t"].payload == b"two"
    # an empty retained payload clears it
    R.publish_ack(pub, "ret/t", b"", qos=1, retain=True)
    assert retained_on_subscribe(broker.port, f"rs4-{version}", "ret/t", version) == {}
    assert retained_on_subscribe(broker.port, f"rs5-{version}", "ret/#", version) == {}
    # and it can be set again afterwards
    R.publish_ack(pub, "ret/t", b"three", qos=0, retain=True)
    R.publish_ack(pub, "sync", b"", qos=1)  # same connection: the QoS 0 one was handled first
    got = retained_on_subscribe(broker.port, f"rs6-{version}", "ret/t", version, expect=1)
    assert got["ret/t"].payload == b"three"
    pub.close()


def test_clearing_a_topic_that_was_never_retained_is_harmless(broker):
    pub = fresh(broker.port, "rclear-pub", 5)
    R.publish_ack(pub, "never/set/here", b"", qos=1, retain=True)
    R.publish_ack(pub, "keep/me", b"k", qos=1, retain=True)
    R.publish_ack(pub, "keep", b"", qos=1, retain=True)  # parent of a retained topic
    got = retained_on_subscribe(broker.port, "rclear-sub", "#", 5, expect=1)
    assert got["keep/me"].payload == b"k"
    pub.close()


RETAINED = ["a", "a/b", "a/b/c", "x/b", "b", "/b", "a/"]
FILTERS = {
    "#": set(RETAINED),
    "+/b": {"a/b", "x/b", "/b"},
    "a/#": {"a", "a/b", "a/b/c", "a/"},
    "a/+": {"a/b", "a/"},
    "+": {"a", "b"},
    "a/b": {"a/b"},
    "+/+/+": {"a/b/c"},
    "a/b/#": {"a/b", "a/b/c"},
    "nothing/#": set(),
}


@pytest.mark.parametrize("version", VERSIONS)
def test_delivered_on_subscribe_exact_and_wildcard(broker, version):
    pub = fresh(broker.port, f"rw-pub-{version}", version)
    for t in RETAINED:
        R.publish_ack(pub, t, ("r:" + t).encode(), qos=1, retain=True)
    for i, (f, want) in enumerate(FILTERS.items()):
        got = retained_on_subscribe(broker.port, f"rw-{version}-{i}", f, version,
                                    expect=len(want))
        assert set(got) == want, f"filter {f!r}"
        for t, p in got.items():
            assert p.payload == ("r:" + t).encode()
            assert p.retain, "a retained message sent on subscribe has the retain flag"
    pub.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_retain_flag_clear_on_live_delivery(broker, version):
    sub = fresh(broker.port, f"live-sub-{version}", version)
    assert R.sub_ack(sub, [("lv/#", 1)]) == [1]
    pub = fresh(broker.port, f"live-pub-{version}", version)
    R.publish_ack(pub, "lv/a", b"x", qos=1, retain=True)
    R.publish_ack(pub, "lv/b", b"y", qos=1, retain=False)
    a, b = R.recv_publishes(sub, 2)
    assert (a.topic, a.retain) == ("lv/a", False)
    assert (b.topic, b.retain) == ("lv/b", False)
    # but a new subscription gets it flagged
    sub2 = fresh(broker.port, f"live-sub2-{version}", version)
    assert R.sub_ack(sub2, [("lv/#", 1)]) == [1]
    got = R.recv_publishes(sub2, 1)
    assert (got[0].topic, got[0].retain) == ("lv/a", True)
    for c in (sub, sub2, pub):
        c.close()


def test_v5_retain_handling(broker):
    pub = fresh(broker.port, "rh-pub", 5)
    R.publish_ack(pub, "rh/x", b"kept", qos=1, retain=True)
    r = fresh(broker.port, "rh-sub", 5)
    # 0: sent on every SUBSCRIBE, new or not
    assert R.sub_ack(r, [("rh/+", 0x01)], pid=1) == [1]
    assert R.recv_publishes(r, 1)[0].payload == b"kept"
    assert R.sub_ack(r, [("rh/+", 0x01)], pid=2) == [1]
    assert R.recv_publishes(r, 1)[0].retain
    # 1: only when the subscription is new
    assert R.sub_ack(r, [("rh/#", 0x11)], pid=3) == [1]
    assert R.recv_publishes(r, 1)[0].payload == b"kept"
    assert R.sub_ack(r, [("rh/#", 0x11)], pid=4) == [1]
    R.no_publish(r, 0.3)
    # 2: never
    assert R.sub_ack(r, [("rh/x", 0x21)], pid=5) == [1]
    R.no_publish(r, 0.3)
    R.unsub_ack(r, ["rh/x"], pid=6)
    assert R.sub_ack(r, [("rh/x", 0x21)], pid=7) == [1]
    R.no_publish(r, 0.3)
    # after an unsubscribe, retain handling 1 counts as new again
    R.unsub_ack(r, ["rh/#"], pid=8)
    assert R.sub_ack(r, [("rh/#", 0x11)], pid=9) == [1]
    assert R.recv_publishes(r, 1)[0].payload == b"kept"
    r.close()
    pub.close()


def test_v5_retain_as_published(broker):
    rap = fresh(broker.port, "rap-on", 5)
    assert R.sub_ack(rap, [("rap/#", 0x09)]) == [1]  # QoS 1 + Retain As Published
    plain = fresh(broker.port, "rap-off", 5)
    assert R.sub_ack(plain, [("rap/#", 0x01)]) == [1]
    pub = fresh(broker.port, "rap-pub", 5)
    R.publish_ack(pub, "rap/r", b"1", qos=1, retain=True)
    R.publish_ack(pub, "rap/n", b"2", qos=1, retain=False)
    a, b = R.recv_publishes(rap, 2)
    assert (a.topic, a.retain, b.topic, b.retain) == ("rap/r", True, "rap/n", False)
    a, b = R.recv_publishes(plain, 2)
    assert (a.topic, a.retain, b.topic, b.retain) == ("rap/r", False, "rap/n", False)
    for c in (rap, plain, pub):
        c.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_not_delivered_to_shared_subscriptions(broker, version):
    pub = fresh(broker.port, f"rshare-pub-{version}", version)
    R.publish_ack(pub, "sh/r", b"retained", qos=1, retain=True)
    r = fresh(broker.port, f"rshare-{version}", version)
    assert R.sub_ack(r, [("$share/g/sh/#", 1), ("$queue/sh/r", 1)]) == [1, 1]
    R.no_publish(r, 0.4)
    # the shared subscriptions themselves work
    R.publish_ack(pub, "sh/r", b"live", qos=1)
    got = R.recv_publishes(r, 2)
    assert [p.payload for p in got] == [b"live", b"live"]  # one per group
    # while an ordinary subscription gets the retained message
    assert R.sub_ack(r, [("sh/#", 1)], pid=2) == [1]
    got = R.recv_publishes(r, 1)
    assert (got[0].payload, got[0].retain) == (b"retained", True)
    r.close()
    pub.close()


def test_sys_retained_not_matched_by_hash(broker_factory):
    b = broker_factory(conf="broker.sys_interval = 1s", workers=2)
    pub = fresh(b.port, "rsys-pub", 4)
    R.publish_ack(pub, "user/topic", b"u", qos=1, retain=True)
    got = retained_on_subscribe(b.port, "rsys-sys", "$SYS/#", 4)
    assert any(t.endswith("/version") for t in got), sorted(got)
    got = retained_on_subscribe(b.port, "rsys-hash", "#", 4, expect=1)
    assert set(got) == {"user/topic"}
    got = retained_on_subscribe(b.port, "rsys-plus", "+/brokers/#", 4)
    assert got == {}
    pub.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_qos_downgraded_to_subscription(broker, version):
    pub = fresh(broker.port, f"rq-pub-{version}", version)
    R.publish_ack(pub, "q/two", b"2", qos=2, retain=True)
    R.publish_ack(pub, "q/one", b"1", qos=1, retain=True)
    R.publish_ack(pub, "q/zero", b"0", qos=0, retain=True)
    R.publish_ack(pub, "sync", b"", qos=1)
    for sq in (0, 1, 2):
        got = retained_on_subscribe(broker.port, f"rq-{version}-{sq}", "q/+", version, qos=sq,
                                    expect=3)
        assert got["q/two"].qos == min(2, sq)
        assert got["q/one"].qos == min(1, sq)
        assert got["q/zero"].qos == 0
    pub.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_max_retained_messages(broker_factory, version):
    b = broker_factory(conf="mqtt.max_retained_messages = 2", workers=2)
    pub = fresh(b.port, f"rmax-pub-{version}", version)
    for t in ["m/1", "m/2", "m/3"]:
        R.publish_ack(pub, t, t.encode(), qos=1, retain=True)
    got = retained_on_subscribe(b.port, f"rmax-a-{version}", "m/#", version, expect=2)
    assert set(got) == {"m/1", "m/2"}
    # existing ones can still be updated
    R.publish_ack(pub, "m/2", b"updated", qos=1, retain=True)
    got = retained_on_subscribe(b.port, f"rmax-b-{version}", "m/#", version, expect=2)
    assert got["m/2"].payload == b"updated"
    # clearing one makes room for another topic
    R.publish_ack(pub, "m/1", b"", qos=1, retain=True)
    R.publish_ack(pub, "m/3", b"third", qos=1, retain=True)
    got = retained_on_subscribe(b.port, f"rmax-c-{version}", "m/#", version, expect=2)
    assert {t: p.payload for t, p in got.items()} == {"m/2": b"updated", "m/3": b"third"}
    pub.close()


@pytest.mark.parametrize("how", ["disconnect", "drop"])
def test_retained_survive_publisher_leaving(broker, how):
    pub = fresh(broker.port, "rleave-pub", 5)
    R.publish_ack(pub, "leave/a", b"stays", qos=1, retain=True)
    if how == "disconnect":
        pub.send(R.disconnect(5))
        assert pub.closed()
    pub.close()
    # and a client with the same id coming back (clean) does not clear it
    again = fresh(broker.port, "rleave-pub", 5)
    again.close()
    got = R.wait_until(lambda: retained_on_subscribe(broker.port, "rleave-sub", "leave/#", 5),
                       what="the retained message")
    assert got["leave/a"].payload == b"stays"


def publish_many_retained(port, n, qos, payload=b"v"):
    """Publishes n retained messages bulk/<i/100>/<i> in one write and waits
    until the broker has handled them all."""
    pub = fresh(port, "bulk-pub", 5)
    data = bytearray()
    for i in range(n):
        data += R.publish(f"bulk/{i // 100}/{i}", payload, qos=qos, pid=i % 60000 + 1,
                          retain=True, version=5)
    pub.send(bytes(data))
    if qos:
        acks = 0
        while acks < n:
            if pub.recv(10).type == R.PUBACK:
                acks += 1
    R.publish_ack(pub, "bulk-sync", b"", qos=1)  # handled after everything before it
    return pub


def test_many_retained_to_hash_subscriber_bounded_by_queue(broker_factory):
    b = broker_factory(conf="mqtt.max_mqueue_len = 50\nmqtt.max_inflight = 10", workers=2)
    pub = publish_many_retained(b.port, 5000, 1, b"v" * 20)
    sub = fresh(b.port, "bulk-sub", 5)
    assert R.sub_ack(sub, [("#", 1)]) == [1]
    got = R.drain_publishes(sub, quiet=0.5)
    # 10 in flight + the newest 50 queued; the rest dropped, not buffered
    assert len(got) == 60
    assert len({p.topic for p in got}) == 60 and all(p.retain and p.qos == 1 for p in got)
    # the broker is fine and the store still holds everything
    other = fresh(b.port, "bulk-sub0", 5)
    assert R.sub_ack(other, [("bulk/7/+", 0)]) == [0]
    got = R.recv_publishes(other, 100)
    assert {p.topic for p in got} == {f"bulk/7/{i}" for i in range(700, 800)}
    R.roundtrip(b.port, 4)
    for c in (sub, pub, other):
        c.close()


def test_many_retained_qos0_all_delivered(broker_factory):
    b = broker_factory(workers=2)
    pub = publish_many_retained(b.port, 5000, 0)
    sub = fresh(b.port, "bulk0-sub", 4)
    assert R.sub_ack(sub, [("#", 0)]) == [0]
    got = R.recv_publishes(sub, 5000, timeout=10)
    assert len({p.topic for p in got}) == 5000
    R.no_publish(sub, 0.3)
    pub.close()
    sub.close()


def test_v5_retained_expiry_and_subscription_id(broker):
    pub = fresh(broker.port, "rexp-pub", 5)
    R.publish_ack(pub, "exp/short", b"s", qos=1, retain=True,
                  properties=R.props(message_expiry=2))
    R.publish_ack(pub, "exp/long", b"l", qos=1, retain=True,
                  properties=R.props(message_expiry=3600))
    r = fresh(broker.port, "rexp-sub", 5)
    assert R.sub_ack(r, [("exp/+", 1)], properties=R.props(subscription_id=77)) == [1]
    got = {p.topic: p for p in R.recv_publishes(r, 2)}
    assert got["exp/short"].props["message_expiry"] in (1, 2)
    assert 3590 <= got["exp/long"].props["message_expiry"] <= 3600
    assert all(p.props["subscription_id"] == [77] for p in got.values())
    r.close()
    # once expired, new subscribers no longer get it; the other stays
    n = [0]

    def expired():
        n[0] += 1
        return set(retained_on_subscribe(broker.port, f"rexp-{n[0]}", "exp/#", 5)) == {"exp/long"}
    R.wait_until(expired, timeout=5, interval=0.1, what="the retained message to expire")
    pub.close()
