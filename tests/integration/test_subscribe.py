"""SUBSCRIBE and UNSUBSCRIBE: topic filter matching, per-entry SUBACK codes,
option replacement, unsubscribing, '$' topics, and the configuration that
limits subscriptions (wildcards off, mqtt.max_subscriptions), for MQTT 3.1.1
and 5.0, with subscribers spread over several I/O workers."""
import pytest

import mqttraw as R

VERSIONS = [4, 5]

# Topics published in the matching test, each with its own payload.
TOPICS = ["a", "a/b", "a/", "a/b/c", "ab", "b/a", "/x", "/", "a//c", "a/b/d", "a/b/c/d", "x"]

# filter -> the topics above it must match (written out by hand from MQTT 4.7,
# not computed, so the test cannot share a bug with a matcher)
MATCHES = {
    "a/+": {"a/b", "a/"},
    "a/#": {"a", "a/b", "a/", "a/b/c", "a/b/d", "a//c", "a/b/c/d"},
    "#": set(TOPICS),
    "+": {"a", "ab", "x"},
    "+/+": {"a/b", "a/", "b/a", "/x", "/"},
    "a/+/c": {"a/b/c", "a//c"},
    "+/#": set(TOPICS),
    "/+": {"/x", "/"},
    "a/b/#": {"a/b", "a/b/c", "a/b/d", "a/b/c/d"},
    "+/b/+": {"a/b/c", "a/b/d"},
    "a/b": {"a/b"},
    "a//c": {"a//c"},
}

MARK = "zzz/end"  # published last; every subscriber also subscribes to it


def rc_fail(version, v5rc):
    return v5rc if version == 5 else 0x80


def collect_until_mark(r, timeout=5.0):
    """PUBLISH topics received before the marker (messages from one publisher
    arrive in order, so the marker proves everything before it arrived)."""
    got = []
    while True:
        p = R.recv_publishes(r, 1, timeout)[0]
        if p.topic == MARK:
            return got
        got.append(p)


@pytest.mark.parametrize("version", VERSIONS)
def test_wildcard_matching(broker, version):
    subs = {}
    for i, f in enumerate(MATCHES):
        r = R.raw_connect(broker.port, f"match-{version}-{i}", version=version)
        assert R.sub_ack(r, [(f, 1), (MARK, 1)]) == [1, 1]
        subs[f] = r
    pub = R.raw_connect(broker.port, f"match-pub-{version}", version=version)
    for t in TOPICS:
        R.publish_ack(pub, t, ("payload of " + t).encode(), qos=1)
    R.publish_ack(pub, MARK, b"end", qos=1)
    for f, r in subs.items():
        got = collect_until_mark(r)
        topics = [p.topic for p in got]
        # exactly one copy of each matching message, and nothing else
        assert sorted(topics) == sorted(MATCHES[f]), f"filter {f!r} got {topics}"
        for p in got:
            assert p.payload == ("payload of " + p.topic).encode()
            assert p.qos == 1
        r.close()
    pub.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_several_filters_per_subscribe_each_with_its_own_code(broker, version):
    r = R.raw_connect(broker.port, f"multi-{version}", version=version)
    filters = [("m/a", 1), ("m/#/b", 0), ("m/c/+", 2), ("m+", 0), ("m/d/#", 0),
               ("#/m", 1), ("m/x+/y", 1), ("m/e", 0)]
    bad = rc_fail(version, 0x8F)
    assert R.sub_ack(r, filters, pid=7) == [1, bad, 2, bad, 0, bad, bad, 0]
    pub = R.raw_connect(broker.port, f"multi-pub-{version}", version=version)
    # the accepted entries work, each at its own QoS
    for t in ["m/a", "m/c/z", "m/d", "m/e", "m/q/b", "m/x/y"]:
        R.publish_ack(pub, t, t.encode(), qos=2)
    got = R.recv_publishes(r, 4)
    assert [(p.topic, p.qos) for p in got] == [("m/a", 1), ("m/c/z", 2), ("m/d", 0), ("m/e", 0)]
    # "m/q/b" and "m/x/y" would only match the refused filters
    R.no_publish(r, 0.3)
    r.close()
    pub.close()


def test_v5_suback_codes_for_invalid_filters_keep_connection(broker):
    r = R.raw_connect(broker.port, "badfilters", version=5)
    for i, f in enumerate(["a/#/b", "a+", "+a/b", "a/b#", "##", "a/++", "#/"]):
        assert R.sub_ack(r, [(f, 0), ("ok/topic", 0)], pid=i + 1) == [0x8F, 0], f
    r.send(R.PINGREQ_BYTES)
    r.expect(R.PINGRESP)
    r.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_resubscribe_replaces_qos(broker, version):
    r = R.raw_connect(broker.port, f"resub-{version}", version=version)
    pub = R.raw_connect(broker.port, f"resub-pub-{version}", version=version)
    for pid, qos in enumerate([0, 2, 1, 0, 2], start=1):
        assert R.sub_ack(r, [("re/+", qos)], pid=pid) == [qos]
        R.publish_ack(pub, "re/x", f"at {qos}".encode(), qos=2, pid=pid)
        got = R.recv_publishes(r, 1)
        assert (got[0].payload, got[0].qos) == (f"at {qos}".encode(), qos)
        # one subscription, replaced - not a second copy
        R.no_publish(r, 0.2)
    r.close()
    pub.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_overlapping_filters_give_one_copy_at_highest_qos(broker, version):
    r = R.raw_connect(broker.port, f"overlap-{version}", version=version)
    assert R.sub_ack(r, [("ov/+", 0), ("ov/#", 1), ("ov/a", 0)]) == [0, 1, 0]
    pub = R.raw_connect(broker.port, f"overlap-pub-{version}", version=version)
    R.publish_ack(pub, "ov/a", b"x", qos=2)
    got = R.recv_publishes(r, 1)
    assert got[0].qos == 1
    R.no_publish(r, 0.3)
    r.close()
    pub.close()


def test_v5_subscription_identifiers_of_every_matching_filter(broker):
    r = R.raw_connect(broker.port, "subids", version=5)
    assert R.sub_ack(r, [("si/+", 1)], pid=1, properties=R.props(subscription_id=11)) == [1]
    assert R.sub_ack(r, [("si/#", 1)], pid=2, properties=R.props(subscription_id=22)) == [1]
    assert R.sub_ack(r, [("si/b", 1)], pid=3) == [1]
    pub = R.raw_connect(broker.port, "subids-pub", version=5)
    R.publish_ack(pub, "si/a", b"1", qos=1)
    R.publish_ack(pub, "si/b", b"2", qos=1)
    R.publish_ack(pub, "si/a/c", b"3", qos=1)
    a, b, c = R.recv_publishes(r, 3)
    assert sorted(a.props["subscription_id"]) == [11, 22]
    assert sorted(b.props["subscription_id"]) == [11, 22]
    assert c.props["subscription_id"] == [22]
    r.close()
    pub.close()


def test_v5_unsubscribe_reason_codes_and_no_more_messages(broker):
    r = R.raw_connect(broker.port, "unsub5", version=5)
    assert R.sub_ack(r, [("u/a", 1), ("u/+/x", 1), ("u/keep", 1)]) == [1, 1, 1]
    un = R.unsub_ack(r, ["u/a", "u/never", "u/+/x", "u/a"], pid=9)
    assert un.rcs == [0x00, 0x11, 0x00, 0x11]
    pub = R.raw_connect(broker.port, "unsub5-pub", version=5)
    R.publish_ack(pub, "u/a", b"gone", qos=1)
    R.publish_ack(pub, "u/b/x", b"gone", qos=1)
    R.publish_ack(pub, "u/keep", b"kept", qos=1)
    got = R.recv_publishes(r, 1)
    assert (got[0].topic, got[0].payload) == ("u/keep", b"kept")
    R.no_publish(r, 0.3)
    r.close()
    pub.close()


def test_v3_unsuback_and_no_more_messages(broker):
    r = R.raw_connect(broker.port, "unsub3", version=4)
    assert R.sub_ack(r, [("u3/a", 1), ("u3/#", 0)]) == [1, 0]
    un = R.unsub_ack(r, ["u3/a"], pid=4)
    assert un.rcs == []  # MQTT 3.1.1 UNSUBACK is only the packet identifier
    assert len(un.body) == 2
    pub = R.raw_connect(broker.port, "unsub3-pub", version=4)
    R.publish_ack(pub, "u3/a", b"via #", qos=1)
    got = R.recv_publishes(r, 1)
    # still matched by "u3/#", now at its QoS 0 rather than 1
    assert (got[0].topic, got[0].qos) == ("u3/a", 0)
    # unsubscribing something never subscribed is still acknowledged
    assert R.unsub_ack(r, ["u3/never", "u3/#"], pid=5).pid == 5
    R.publish_ack(pub, "u3/a", b"none", qos=1)
    R.no_publish(r, 0.3)
    r.close()
    pub.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_dollar_topics_not_matched_by_leading_wildcards(broker, version):
    wild = R.raw_connect(broker.port, f"dollar-wild-{version}", version=version)
    assert R.sub_ack(wild, [("#", 0), ("+/x", 0), ("+/#", 0), ("+", 0)]) == [0, 0, 0, 0]
    exact = R.raw_connect(broker.port, f"dollar-exact-{version}", version=version)
    assert R.sub_ack(exact, [("$foo/#", 0), ("$foo/+", 0)]) == [0, 0]
    pub = R.raw_connect(broker.port, f"dollar-pub-{version}", version=version)
    R.publish_ack(pub, "$foo/x", b"d", qos=1)
    R.publish_ack(pub, "$foo", b"d0", qos=1)
    R.publish_ack(pub, "plain/x", b"p", qos=1)
    got = R.recv_publishes(exact, 2)
    assert [p.topic for p in got] == ["$foo/x", "$foo"]  # "$foo/#" matches its parent
    # the wildcard subscriber sees only the plain topic
    got = R.recv_publishes(wild, 1)
    assert got[0].topic == "plain/x"
    R.no_publish(wild, 0.3)
    R.no_publish(exact, 0.1)
    for c in (wild, exact, pub):
        c.close()


def test_dollar_sys_matched_by_sys_filter_not_by_hash(broker_factory):
    b = broker_factory(conf="broker.sys_interval = 1s", workers=2)
    sys_sub = R.raw_connect(b.port, "sys-sub", version=5)
    assert R.sub_ack(sys_sub, [("$SYS/#", 0)]) == [0]
    first = R.recv_publishes(sys_sub, 1)[0]
    assert first.topic.startswith("$SYS/brokers")
    wild = R.raw_connect(b.port, "sys-wild", version=5)
    assert R.sub_ack(wild, [("#", 0), ("+/brokers/#", 0)]) == [0, 0]
    R.no_publish(wild, 0.3)  # no retained $SYS either
    # wait for a live (not retained) $SYS publication after "#" subscribed
    R.drain_publishes(sys_sub, quiet=0.05)
    live = R.wait_until(lambda: [p for p in R.drain_publishes(sys_sub, quiet=0.1, limit=50)
                                 if not p.retain], timeout=4, what="a live $SYS message")
    assert live[0].topic.startswith("$SYS/brokers/")
    R.no_publish(wild, 0.3)
    sys_sub.close()
    wild.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_wildcard_subscription_disabled(broker_factory, version):
    b = broker_factory(conf="mqtt.wildcard_subscription = false", workers=2)
    r = R.Raw(b.port, version=version)
    ack = r.connect(f"nowild-{version}")
    assert ack.rc == 0
    if version == 5:
        assert ack.props.get("wildcard_sub_available") == 0
    bad = rc_fail(version, 0xA2)
    assert R.sub_ack(r, [("w/+", 1), ("w/exact", 1), ("#", 0), ("w/#", 0)]) == [bad, 1, bad, bad]
    pub = R.raw_connect(b.port, f"nowild-pub-{version}", version=version)
    R.publish_ack(pub, "w/other", b"no", qos=1)
    R.publish_ack(pub, "w/exact", b"yes", qos=1)
    got = R.recv_publishes(r, 1)
    assert (got[0].topic, got[0].payload) == ("w/exact", b"yes")
    R.no_publish(r, 0.2)
    r.close()
    pub.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_max_subscriptions(broker_factory, version):
    b = broker_factory(conf="mqtt.max_subscriptions = 3", workers=2)
    r = R.raw_connect(b.port, f"maxsub-{version}", version=version)
    quota = rc_fail(version, 0x97)
    assert R.sub_ack(r, [("s/1", 0), ("s/2", 0), ("s/3", 0), ("s/4", 0)], pid=1) == [0, 0, 0, quota]
    assert R.sub_ack(r, [("s/5", 1)], pid=2) == [quota]
    # re-subscribing a filter already held is an update, not a new one
    assert R.sub_ack(r, [("s/2", 1), ("s/6", 0)], pid=3) == [1, quota]
    pub = R.raw_connect(b.port, f"maxsub-pub-{version}", version=version)
    for t in ["s/1", "s/2", "s/3", "s/4", "s/5", "s/6"]:
        R.publish_ack(pub, t, t.encode(), qos=1)
    got = R.recv_publishes(r, 3)
    assert [(p.topic, p.qos) for p in got] == [("s/1", 0), ("s/2", 1), ("s/3", 0)]
    R.no_publish(r, 0.2)
    # room again after an unsubscribe
    R.unsub_ack(r, ["s/1"], pid=4)
    assert R.sub_ack(r, [("s/4", 0), ("s/5", 0)], pid=5) == [0, quota]
    # the limit is per client: another client has its own
    other = R.raw_connect(b.port, f"maxsub-other-{version}", version=version)
    assert R.sub_ack(other, [("s/1", 0), ("s/2", 0), ("s/3", 0)]) == [0, 0, 0]
    for c in (r, pub, other):
        c.close()


def test_many_subscribers_on_four_workers_all_receive(broker_factory):
    b = broker_factory(workers=4)
    ids = R.ids_per_worker("fan", 4, per_worker=4)
    subs = []
    for w, cids in enumerate(ids):
        for k, cid in enumerate(cids):
            version = 5 if k % 2 else 4
            r = R.raw_connect(b.port, cid, version=version)
            # exact and wildcard filters, alternating
            f = "fan/out/data" if k < 2 else "fan/+/data"
            assert R.sub_ack(r, [(f, 1)]) == [1]
            subs.append(r)
    pubs = [R.raw_connect(b.port, cids[0] + "-pub", version=5) for cids in ids]
    n = 25
    for i in range(n):
        for j, p in enumerate(pubs):
            R.publish_ack(p, "fan/out/data", f"{j}:{i}".encode(), qos=1, pid=i + 1)
    for r in subs:
        got = R.recv_publishes(r, n * len(pubs), timeout=8)
        payloads = [p.payload.decode() for p in got]
        assert sorted(payloads) == sorted(f"{j}:{i}" for j in range(len(pubs)) for i in range(n))
        # each publisher's messages arrive in the order they were sent
        for j in range(len(pubs)):
            seq = [int(x.split(":")[1]) for x in payloads if x.startswith(f"{j}:")]
            assert seq == list(range(n))
    for c in subs + pubs:
        c.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_hundreds_of_entries_in_one_subscribe_and_unsubscribe(broker, version):
    r = R.raw_connect(broker.port, f"wide-{version}", version=version)
    filters = []
    for i in range(300):
        if i % 7 == 3:
            filters.append((f"wide/{i}/#/x", 1))  # invalid
        else:
            filters.append((f"wide/{i}/+" if i % 2 else f"wide/{i}", i % 3))
    bad = rc_fail(version, 0x8F)
    want = [bad if i % 7 == 3 else i % 3 for i in range(300)]
    assert R.sub_ack(r, filters, pid=300) == want
    pub = R.raw_connect(broker.port, f"wide-pub-{version}", version=version)
    R.publish_ack(pub, "wide/298", b"a", qos=2)
    R.publish_ack(pub, "wide/299/z", b"b", qos=2)
    got = R.recv_publishes(r, 2)
    assert [(p.topic, p.qos) for p in got] == [("wide/298", 298 % 3), ("wide/299/z", 299 % 3)]
    un = R.unsub_ack(r, [f for f, _ in filters] + ["wide/none"], pid=301)
    if version == 5:
        assert un.rcs == [0x11 if i % 7 == 3 else 0 for i in range(300)] + [0x11]
    R.publish_ack(pub, "wide/298", b"c", qos=1)
    R.no_publish(r, 0.3)
    r.close()
    pub.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_too_many_levels_in_a_filter(broker_factory, version):
    b = broker_factory(conf="mqtt.max_topic_levels = 5", workers=2)
    r = R.raw_connect(b.port, f"levels-{version}", version=version)
    bad = rc_fail(version, 0x8F)
    assert R.sub_ack(r, [("a/b/c/d/e", 0), ("a/b/c/d/e/f", 0), ("+/+/+/+/#", 0),
                         ("+/+/+/+/+/#", 0)]) == [0, bad, 0, bad]
    r.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_subscribe_pipelined_with_connect_on_every_worker(broker_factory, version):
    """CONNECT, SUBSCRIBE and PUBLISH in one write: when the accepting worker
    does not own the client id, the bytes after CONNECT travel with the
    socket to the owner and must all be handled there."""
    b = broker_factory(workers=4)
    for w, cids in enumerate(R.ids_per_worker(f"pipe{version}", 4, per_worker=3)):
        for cid in cids:
            r = R.Raw(b.port, version=version)
            topic = f"pipe/{cid}"
            r.send(R.connect(cid, version=version)
                   + R.subscribe(1, [(topic, 1)], version=version)
                   + R.publish(topic, b"self", qos=1, pid=2, version=version)
                   + R.PINGREQ_BYTES)
            assert r.expect(R.CONNACK).rc == 0
            assert R.expect_skip(r, R.SUBACK).rcs == [1]
            assert R.expect_skip(r, R.PUBACK).pid == 2
            R.expect_skip(r, R.PINGRESP)
            got = R.recv_publishes(r, 1)
            assert (got[0].topic, got[0].payload) == (topic, b"self")
            r.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_granted_qos_capped_by_max_qos_allowed(broker_factory, version):
    b = broker_factory(conf="mqtt.max_qos_allowed = 1", workers=2)
    r = R.raw_connect(b.port, f"maxqos-{version}", version=version)
    assert R.sub_ack(r, [("mq/a", 2), ("mq/b", 1), ("mq/c", 0)]) == [1, 1, 0]
    pub = R.raw_connect(b.port, f"maxqos-pub-{version}", version=version)
    R.publish_ack(pub, "mq/a", b"x", qos=1)
    assert R.recv_publishes(r, 1)[0].qos == 1
    r.close()
    pub.close()


def test_v5_subscription_identifiers_disabled(broker_factory):
    b = broker_factory(conf="mqtt.subscription_identifiers = false", workers=2)
    r = R.Raw(b.port, version=5)
    ack = r.connect("nosubid")
    assert ack.props.get("sub_id_available") == 0
    assert R.sub_ack(r, [("plain", 0)]) == [0]  # without an identifier: fine
    r.send(R.subscribe(2, [("x", 0)], version=5, properties=R.props(subscription_id=3)))
    p = r.recv()
    assert (p.type, p.rc) == (R.DISCONNECT, 0xA1)
    assert r.closed()
