"""Shared subscriptions ($share/<group>/<filter> and $queue/<filter>): each
message goes to exactly one member of each group, members may live on any
I/O worker, online members are preferred over offline persistent ones, the
pick strategies, and the SUBSCRIBE errors (malformed filters, no-local,
shared subscriptions disabled)."""
import time

import pytest

import mqttraw as R

VERSIONS = [4, 5]


def collect_group(members, n, timeout=8.0):
    """Reads from every member until n messages arrived in total; then checks
    that no member gets anything more. Returns a list of payload lists, one
    per member."""
    got = [[] for _ in members]
    deadline = time.time() + timeout
    while sum(len(g) for g in got) < n:
        if time.time() > deadline:
            raise AssertionError(f"group received {sum(len(g) for g in got)} of {n} messages")
        for i, m in enumerate(members):
            for p in R.drain_publishes(m, quiet=0.02):
                got[i].append(p.payload.decode())
    for m in members:
        R.no_publish(m, 0.1)
    return got


def watch_disconnect(port, cid):
    """A client subscribed to the broker's $SYS event for cid disconnecting.
    The event is published while the broker handles the disconnection, so
    once it arrives the session's subscriptions are settled."""
    w = R.raw_connect(port, f"watch-{cid}", version=5)
    assert R.sub_ack(w, [(f"$SYS/brokers/+/clients/{cid}/disconnected", 0)]) == [0]
    return w


def wait_disconnected(watcher):
    p = R.recv_publishes(watcher, 1)[0]
    assert p.topic.endswith("/disconnected")
    watcher.close()


def assert_each_once(got, expected):
    flat = [x for g in got for x in g]
    assert sorted(flat) == sorted(expected), "every message exactly once in the group"


def publish_n(pub, topic, n, prefix="m", qos=1):
    for i in range(n):
        R.publish_ack(pub, topic, f"{prefix}{i}".encode(), qos=qos, pid=i + 1)
    return [f"{prefix}{i}" for i in range(n)]


@pytest.mark.parametrize("version", VERSIONS)
def test_share_distributes_within_group_and_every_group_gets_all(broker, version):
    g = [R.raw_connect(broker.port, f"sg-{version}-{i}", version=version) for i in range(3)]
    h = [R.raw_connect(broker.port, f"sh-{version}-{i}", version=version) for i in range(2)]
    for m in g:
        assert R.sub_ack(m, [("$share/g/job/+", 1)]) == [1]
    for m in h:
        assert R.sub_ack(m, [("$share/h/job/#", 1)]) == [1]
    pub = R.raw_connect(broker.port, f"s-pub-{version}", version=version)
    msgs = publish_n(pub, "job/a", 30)
    got_g = collect_group(g, 30)
    got_h = collect_group(h, 30)
    assert_each_once(got_g, msgs)
    assert_each_once(got_h, msgs)
    # round robin (the default) over members that are all online: equal shares
    assert [len(x) for x in got_g] == [10, 10, 10]
    assert [len(x) for x in got_h] == [15, 15]
    for c in g + h + [pub]:
        c.close()


def test_share_and_plain_subscription_of_one_client(broker):
    r = R.raw_connect(broker.port, "mixed", version=5)
    assert R.sub_ack(r, [("$share/g/mx", 1), ("mx", 1)]) == [1, 1]
    other = R.raw_connect(broker.port, "mixed-other", version=5)
    assert R.sub_ack(other, [("$share/g/mx", 1)]) == [1]
    pub = R.raw_connect(broker.port, "mixed-pub", version=5)
    msgs = publish_n(pub, "mx", 10)
    # the plain subscription gets everything, the shared one its share on top
    got = collect_group([r, other], 20)
    assert sorted(got[0] + got[1]) == sorted(msgs + msgs)
    assert sorted(set(got[0])) == sorted(msgs)
    for c in (r, other, pub):
        c.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_queue_form_is_one_group(broker, version):
    q = [R.raw_connect(broker.port, f"q-{version}-{i}", version=version) for i in range(2)]
    for m in q:
        assert R.sub_ack(m, [("$queue/qt/x", 1)]) == [1]
    pub = R.raw_connect(broker.port, f"q-pub-{version}", version=version)
    msgs = publish_n(pub, "qt/x", 20)
    got = collect_group(q, 20)
    assert_each_once(got, msgs)
    assert [len(x) for x in got] == [10, 10]
    for c in q + [pub]:
        c.close()


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_members_on_different_workers(broker_factory, workers):
    b = broker_factory(workers=workers)
    ids = [cids[0] for cids in R.ids_per_worker(f"sw{workers}", workers)]
    members = [R.raw_connect(b.port, cid, version=5 if i % 2 else 4) for i, cid in enumerate(ids)]
    for m in members:
        assert R.sub_ack(m, [("$share/wk/w/#", 1)]) == [1]
    # one publisher per worker too
    pubs = [R.raw_connect(b.port, cids[0], version=5)
            for cids in R.ids_per_worker(f"swpub{workers}", workers)]
    expected = []
    for j, p in enumerate(pubs):
        expected += publish_n(p, f"w/{j}", 6 * workers, prefix=f"p{j}-")
    got = collect_group(members, len(expected))
    assert_each_once(got, expected)
    assert all(len(x) == 6 * workers for x in got), [len(x) for x in got]
    for c in members + pubs:
        c.close()


@pytest.mark.parametrize("how", ["disconnect", "drop"])
def test_member_that_leaves_stops_receiving(broker, how):
    members = [R.raw_connect(broker.port, f"leave-{i}", version=5) for i in range(3)]
    for m in members:
        assert R.sub_ack(m, [("$share/lv/lt", 1)]) == [1]
    pub = R.raw_connect(broker.port, "leave-pub", version=5)
    msgs = publish_n(pub, "lt", 9, "a")
    got = collect_group(members, 9)
    assert_each_once(got, msgs)
    assert [len(x) for x in got] == [3, 3, 3]
    watcher = watch_disconnect(broker.port, "leave-1")
    gone = members.pop(1)
    if how == "disconnect":
        gone.send(R.disconnect(5))
        assert gone.closed()
    gone.close()
    wait_disconnected(watcher)
    msgs = publish_n(pub, "lt", 20, "b")
    got = collect_group(members, 20)
    assert_each_once(got, msgs)
    assert all(got), "both remaining members get messages"
    for c in members + [pub]:
        c.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_offline_persistent_member_only_gets_messages_when_nobody_is_online(broker, version):
    def persistent(cid):
        if version == 5:
            return R.raw_connect(broker.port, cid, version=5, clean=False,
                                 properties=R.props(session_expiry=300))
        return R.raw_connect(broker.port, cid, version=4, clean=False)

    a = persistent(f"off-a-{version}")
    assert R.sub_ack(a, [("$share/off/ot", 1)]) == [1]
    bee = R.raw_connect(broker.port, f"off-b-{version}", version=version)
    assert R.sub_ack(bee, [("$share/off/ot", 1)]) == [1]
    a.send(R.disconnect(version))
    assert a.closed()
    a.close()
    pub = R.raw_connect(broker.port, f"off-pub-{version}", version=version)
    # A is offline: the online member B gets every message
    first = publish_n(pub, "ot", 10, "online")
    got = R.recv_publishes(bee, 10)
    assert [p.payload.decode() for p in got] == first
    # B leaves (clean session: its membership ends); A is the only member
    watcher = watch_disconnect(broker.port, f"off-b-{version}")
    bee.send(R.disconnect(version))
    assert bee.closed()
    bee.close()
    wait_disconnected(watcher)
    second = publish_n(pub, "ot", 5, "offline")
    a = persistent(f"off-a-{version}")
    got = R.recv_publishes(a, 5)
    assert [p.payload.decode() for p in got] == second
    R.no_publish(a, 0.2)
    a.close()
    pub.close()


@pytest.mark.parametrize("strategy", ["round_robin", "random", "hash_clientid", "hash_topic"])
def test_strategies_deliver_each_message_once(broker_factory, strategy):
    b = broker_factory(conf=f"mqtt.shared_subscription_strategy = {strategy}", workers=2)
    members = [R.raw_connect(b.port, f"st-{strategy}-{i}", version=5) for i in range(3)]
    for m in members:
        assert R.sub_ack(m, [("$share/st/s/#", 1)]) == [1]
    pubs = [R.raw_connect(b.port, f"st-pub-{strategy}-{j}", version=5) for j in range(4)]
    expected = []
    for j, p in enumerate(pubs):
        for i in range(12):
            topic = f"s/{i % 4}"
            payload = f"{j}|{topic}|{i}"
            R.publish_ack(p, topic, payload.encode(), qos=1, pid=i + 1)
            expected.append(payload)
    got = collect_group(members, len(expected))
    assert_each_once(got, expected)
    owner = {}
    for i, payloads in enumerate(got):
        for x in payloads:
            pubj, topic, _ = x.split("|")
            key = pubj if strategy == "hash_clientid" else topic
            owner.setdefault(key, set()).add(i)
    if strategy in ("hash_clientid", "hash_topic"):
        # one publisher's (one topic's) messages all go to one member
        assert all(len(v) == 1 for v in owner.values()), owner
    if strategy == "round_robin":
        assert [len(x) for x in got] == [16, 16, 16]
    for c in members + pubs:
        c.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_malformed_share_filters(broker, version):
    r = R.raw_connect(broker.port, f"badshare-{version}", version=version)
    bad = 0x8F if version == 5 else 0x80
    filters = ["$share/", "$share/g", "$share/g/", "$share//x", "$share/a+b/x", "$share/a#/x",
               "$queue/", "$share/g/a/#/b", "$share/g/a+"]
    for i, f in enumerate(filters):
        assert R.sub_ack(r, [(f, 1), ("good/one", 1)], pid=i + 1) == [bad, 1], f
    r.send(R.PINGREQ_BYTES)
    r.expect(R.PINGRESP)
    r.close()


def test_no_local_on_shared_subscription_is_a_protocol_error(broker):
    r = R.raw_connect(broker.port, "nolocal", version=5)
    r.send(R.subscribe(1, [("$share/g/nl", 0x05)], version=5))  # QoS 1 + No Local
    p = r.recv()
    assert p.type == R.DISCONNECT and p.rc == 0x82, p
    assert r.closed()
    # no-local on an ordinary subscription is fine
    r = R.raw_connect(broker.port, "nolocal2", version=5)
    assert R.sub_ack(r, [("nl", 0x05)]) == [1]
    R.publish_ack(r, "nl", b"own", qos=1)
    R.no_publish(r, 0.3)
    r.close()
    R.roundtrip(broker.port, 5)


@pytest.mark.parametrize("version", VERSIONS)
def test_shared_subscriptions_disabled(broker_factory, version):
    b = broker_factory(conf="mqtt.shared_subscription = false", workers=2)
    r = R.Raw(b.port, version=version)
    ack = r.connect(f"noshare-{version}")
    assert ack.rc == 0
    if version == 5:
        assert ack.props.get("shared_sub_available") == 0
    rc = 0x9E if version == 5 else 0x80
    assert R.sub_ack(r, [("$share/g/x", 1), ("$queue/x", 1), ("x", 1)]) == [rc, rc, 1]
    r.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_unsubscribe_shared_and_qos_downgrade(broker, version):
    a = R.raw_connect(broker.port, f"us-a-{version}", version=version)
    bee = R.raw_connect(broker.port, f"us-b-{version}", version=version)
    assert R.sub_ack(a, [("$share/u/ut", 0)]) == [0]
    assert R.sub_ack(bee, [("$share/u/ut", 2)]) == [2]
    pub = R.raw_connect(broker.port, f"us-pub-{version}", version=version)
    for i in range(4):
        R.publish_ack(pub, "ut", b"x", qos=2, pid=i + 1)
    assert [p.qos for p in R.recv_publishes(a, 2)] == [0, 0]
    assert [p.qos for p in R.recv_publishes(bee, 2)] == [2, 2]
    un = R.unsub_ack(a, ["$share/u/ut"], pid=3)
    if version == 5:
        assert un.rcs == [0]
    msgs = publish_n(pub, "ut", 6, "after")
    got = R.recv_publishes(bee, 6)
    assert [p.payload.decode() for p in got] == msgs
    R.no_publish(a, 0.2)
    for c in (a, bee, pub):
        c.close()


def test_resubscribing_a_shared_filter_updates_the_membership(broker):
    a = R.raw_connect(broker.port, "rs-a", version=5)
    bee = R.raw_connect(broker.port, "rs-b", version=5)
    assert R.sub_ack(a, [("$share/rs/t", 0)], pid=1) == [0]
    assert R.sub_ack(bee, [("$share/rs/t", 1)]) == [1]
    assert R.sub_ack(a, [("$share/rs/t", 2)], pid=2) == [2]  # same member, new QoS
    pub = R.raw_connect(broker.port, "rs-pub", version=5)
    for i in range(4):
        R.publish_ack(pub, "t", f"{i}".encode(), qos=2, pid=i + 1)
    got = collect_group([a, bee], 4)
    # still two members with two messages each (not three members)
    assert [len(x) for x in got] == [2, 2]
    for c in (a, bee, pub):
        c.close()
