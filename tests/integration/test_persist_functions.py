"""The shared persistence suite: the backends' built-in functions and raw
actions, end to end (an MQTT client does something, the store is read back).

Written once against the store adapter (persist_adapters.py): every backend
with an adapter runs this file unchanged. Functions are named as in the SQL
family and mapped with store.fn(); what a test observes through a raw action
is written with store.record() and read back with store.records(). Only
tests about raw SQL itself take the `sql_store` fixture (SQL backends only).
Writes are asynchronous, so the tests poll the store (wait_until) instead of
sleeping, and never assert on timing.

Fetch tests use clean sessions, so what a subscriber receives for messages
published before it subscribed can only come from on_message_fetch, never
from the broker's own session queue.
"""
import json
import random
import re
import time

import pytest

from mqttraw import (
    PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, SUBACK,
    ack, disconnect, drain_publishes, props, expect_skip, no_publish, publish, publish_ack,
    raw_connect, recv_publishes, sub_ack, subscribe, unsub_ack,
)

DEFAULT_NODE = "keepmq@127.0.0.1"
HEX32 = re.compile(r"^[0-9a-f]{32}$")
WAIT = 10.0


# ---------------------------------------------------------------- helpers

def wait_until(cond, timeout=WAIT, interval=0.05, what="condition"):
    """Polls cond() until it returns a true value (returned); fails after timeout
    with the last value seen."""
    end = time.time() + timeout
    last = None
    while True:
        try:
            last = cond()
        except Exception as e:  # a table not created yet, a locked file...
            last = e
        if last and not isinstance(last, Exception):
            return last
        if time.time() >= end:
            raise AssertionError(f"timed out waiting for {what}; last value: {last!r}")
        time.sleep(interval)


def fn(store, name):
    """The action of a built-in function named as in the SQL family."""
    return {"function": store.fn(name)}


def build_conf(store, rules, extra=""):
    """rules: (point, n, action[, topic[, opts]]) tuples; action is a raw action
    dict or a function name (as in the SQL family: mapped with store.fn()).
    Without a topic, rules of points that have one (message.*,
    session.subscribed/unsubscribed) get "#"."""
    text = store.conf()
    for r in rules:
        point, n, action = r[0], r[1], r[2]
        topic = r[3] if len(r) > 3 else (None if point.startswith("client.") or
                                         point == "session.created" else "#")
        opts = r[4] if len(r) > 4 else {}
        if isinstance(action, str):
            action = fn(store, action)
        text += store.rule(point, n, action, topic=topic, **opts)
    return text + extra


# function names as in the SQL family (build_conf maps them with store.fn)
FETCH_RULES = [
    ("message.publish", 1, "on_message_publish"),
    ("session.subscribed", 1, "on_message_fetch"),
    ("message.acked", 1, "on_message_acked"),
]


def as_bytes(v):
    if v is None:
        return None
    if isinstance(v, str):
        return v.encode()
    return bytes(v)


def as_text(v):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).decode()
    return v


def as_int(v):
    return None if v is None else int(v)


def quit_(r):
    """A clean DISCONNECT, then close."""
    try:
        r.send(disconnect(version=r.version))
    except OSError:
        pass
    r.close()


def publish_many(r, topic, payloads, qos=1, retain=False):
    """Pipelines PUBLISHes (packet ids 1..n) and waits for every PUBACK /
    completes every QoS 2 flow."""
    if qos == 0:
        for p in payloads:
            r.send(publish(topic, p, qos=0, retain=retain, version=r.version))
        return
    n = len(payloads)
    for i, p in enumerate(payloads):
        r.send(publish(topic, p, qos=qos, retain=retain, pid=i + 1, version=r.version))
    if qos == 1:
        got = {expect_skip(r, PUBACK, timeout=WAIT).pid for _ in range(n)}
        assert got == set(range(1, n + 1))
    else:
        for _ in range(n):
            rec = expect_skip(r, PUBREC, timeout=WAIT)
            r.send(ack(PUBREL, rec.pid, version=r.version))
        for _ in range(n):
            expect_skip(r, PUBCOMP, timeout=WAIT)


def wait_stored(store, n, what="stored messages"):
    return wait_until(lambda: len(store.messages()) >= n and store.messages(),
                      what=f"{n} {what}")


def assert_publish_order(store, got, want, publisher=lambda x: x[0]):
    """got == want, two lists in publish order. Where the store keeps only
    each publisher's order (store.messages_in_publish_order false), each
    publisher's items must be in order and all items there, once."""
    if store.messages_in_publish_order:
        assert got == want
        return

    def by(items):
        out = {}
        for x in items:
            out.setdefault(publisher(x), []).append(x)
        return out
    assert by(got) == by(want)
    assert len(got) == len(want)


def msgid_of(store, payload):
    rows = [m for m in store.messages() if m["payload"] == payload]
    assert len(rows) == 1, f"{payload!r} stored {len(rows)} times"
    return rows[0]["msgid"]


def payloads(pkts):
    return [p.payload for p in pkts]


def recv_upto(r, n, timeout=5.0):
    """Up to n PUBLISH packets (acknowledged) within timeout, then any that
    follow within 0.3 s: what arrived, without failing on a shortfall."""
    got = []
    deadline = time.time() + timeout
    while len(got) < n and time.time() < deadline:
        got += drain_publishes(r, quiet=min(0.2, max(0.01, deadline - time.time())),
                               limit=n - len(got))
    return got + drain_publishes(r, quiet=0.3)


def only_live(r, pub, topic, marker, qos=1):
    """Proves a subscription's fetch returned nothing: a live message
    published now (after SUBACK) is held until the fetch has answered, then
    delivered after whatever it fetched. So the first PUBLISH must be the
    marker, and nothing may follow it."""
    publish_ack(pub, topic, marker, qos=qos)
    got = recv_publishes(r, 1, timeout=WAIT)
    assert got[0].payload == marker, f"fetched {got[0].topic!r} {got[0].payload!r} again"
    extra = drain_publishes(r, quiet=0.3)
    assert not extra, f"unexpected deliveries: {[(p.topic, p.payload) for p in extra]}"


# ---------------------------------------------------------------- 1. clients

def test_client_connected_and_disconnected(broker_factory, store):
    b = broker_factory(conf=build_conf(store, [
        ("client.connected", 1, "on_client_connected"),
        ("client.disconnected", 1, "on_client_disconnected"),
    ]), workers=2)
    r = raw_connect(b.port, "cli-1")
    row = wait_until(lambda: {c["clientid"]: c for c in store.clients()}.get("cli-1"),
                     what="mqtt_client row")
    assert as_text(row["state"]) == "1"
    assert row["node"] == DEFAULT_NODE
    assert row["online_at"]
    assert row["offline_at"] is None
    first_online = row["online_at"]

    quit_(r)
    row = wait_until(lambda: [c for c in store.clients() if c["clientid"] == "cli-1"
                              and as_text(c["state"]) == "0"],
                     what="state 0 after disconnect")[0]
    assert row["offline_at"]
    assert row["online_at"] == first_online
    assert row["node"] == DEFAULT_NODE

    # an abnormal end (socket closed without DISCONNECT) counts as well
    r = raw_connect(b.port, "cli-1")
    wait_until(lambda: [c for c in store.clients() if c["clientid"] == "cli-1"
                        and as_text(c["state"]) == "1" and c["offline_at"] is None],
               what="state 1 and offline_at NULL after reconnect")
    r.close()
    wait_until(lambda: [c for c in store.clients() if c["clientid"] == "cli-1"
                        and as_text(c["state"]) == "0" and c["offline_at"]],
               what="state 0 after the socket closed")
    assert len(store.clients()) == 1, "one row per client id"


def test_client_node_name_from_config(broker_factory, store):
    b = broker_factory(conf=build_conf(store, [
        ("client.connected", 1, "on_client_connected"),
    ], extra="node.name = east7@10.1.2.3\n"), workers=1)
    r = raw_connect(b.port, "cli-node")
    row = wait_until(lambda: store.clients(), what="mqtt_client row")[0]
    assert row["clientid"] == "cli-node"
    assert row["node"] == "east7@10.1.2.3"
    r.close()


def test_client_takeover_leaves_online(broker_factory, store):
    b = broker_factory(conf=build_conf(store, [
        ("client.connected", 1, "on_client_connected"),
        ("client.connected", 2, store.record("conn_events", ev="c", clientid="${clientid}")),
        ("client.disconnected", 1, "on_client_disconnected"),
        ("client.disconnected", 2, store.record("conn_events", ev="d",
                                                clientid="${clientid}")),
    ]), workers=2)
    first = raw_connect(b.port, "dup-id")
    second = raw_connect(b.port, "dup-id")  # takes the session over
    assert first.closed(timeout=5), "the first connection was not closed by the takeover"

    def events():
        return sorted(e["ev"] for e in store.records("conn_events"))
    # every job of both connections has run (the raw rules run after the functions)
    wait_until(lambda: events() == ["c", "c", "d"], what="2 connected + 1 disconnected events")
    rows = store.clients()
    assert len(rows) == 1
    assert as_text(rows[0]["state"]) == "1", f"takeover left the client offline: {rows}"
    assert rows[0]["offline_at"] is None

    quit_(second)
    wait_until(lambda: as_text(store.clients()[0]["state"]) == "0", what="state 0 at the end")


def test_late_disconnect_from_other_node_keeps_online(broker_factory, store):
    """Two nodes share the store: the client moved from node a to node b, then
    its old connection on a ends. The row names b: it stays online."""
    rules = [
        ("client.connected", 1, "on_client_connected"),
        ("client.disconnected", 1, "on_client_disconnected"),
        ("client.disconnected", 2, store.record("conn_events", ev="d", clientid="${clientid}",
                                                node="${node}")),
    ]
    a = broker_factory(conf=build_conf(store, rules, extra="node.name = a@host\n"), workers=1)
    b = broker_factory(conf=build_conf(store, rules, extra="node.name = b@host\n"), workers=1)
    on_a = raw_connect(a.port, "mover")
    wait_until(lambda: [c for c in store.clients() if c["node"] == "a@host"], what="on a")
    on_b = raw_connect(b.port, "mover")
    wait_until(lambda: [c for c in store.clients() if c["node"] == "b@host"], what="on b")
    on_a.close()
    wait_until(lambda: [e for e in store.records("conn_events") if e["node"] == "a@host"],
               what="the disconnect on a processed")
    row = store.clients()[0]
    assert (as_text(row["state"]), row["node"], row["offline_at"]) == ("1", "b@host", None)
    quit_(on_b)
    wait_until(lambda: as_text(store.clients()[0]["state"]) == "0", what="offline from b")


# ---------------------------------------------------------------- 2. subscribe lookup

@pytest.mark.parametrize("point", ["client.connected", "session.created"])
def test_subscribe_lookup_subscribes_the_client(broker_factory, store, point):
    store.provision_sub("dev1", "cmd/dev1/#", 1)
    store.provision_sub("dev1", "exact/dev1", 0)
    store.provision_sub("dev-other", "cmd/dev1/#", 2)  # someone else's
    b = broker_factory(conf=build_conf(store, [
        (point, 1, "on_subscribe_lookup"),
        ("session.subscribed", 1, store.record("seen_subs", clientid="${clientid}",
                                               topic="${topic}", qos="${qos}"), "#"),
    ]), workers=2)
    dev = raw_connect(b.port, "dev1")
    seen = wait_until(lambda: len(store.records("seen_subs")) >= 2 and
                      store.records("seen_subs"),
                      what="session.subscribed rows for the provisioned subscriptions")
    assert sorted((r["clientid"], r["topic"], as_int(r["qos"])) for r in seen) == [
        ("dev1", "cmd/dev1/#", 1), ("dev1", "exact/dev1", 0)]

    pub = raw_connect(b.port, "dev-pub")
    publish_ack(pub, "cmd/dev1/reboot", b"r1", qos=2)
    publish_ack(pub, "cmd/dev1/a/b", b"r2", qos=0)
    publish_ack(pub, "exact/dev1", b"e1", qos=1)
    publish_ack(pub, "cmd/dev2/reboot", b"not-mine", qos=1)
    publish_ack(pub, "exact/dev1/sub", b"not-mine-either", qos=1)
    got = recv_publishes(dev, 3, timeout=WAIT)
    assert sorted((p.topic, p.payload, p.qos) for p in got) == [
        ("cmd/dev1/a/b", b"r2", 0),
        ("cmd/dev1/reboot", b"r1", 1),  # at most the stored QoS 1
        ("exact/dev1", b"e1", 0),       # stored QoS 0
    ]
    assert no_publish(dev, 0.3)
    # no other client was subscribed
    assert sorted(r["clientid"] for r in store.records("seen_subs")) == ["dev1", "dev1"]
    quit_(dev)
    quit_(pub)


def test_subscribe_lookup_fetches_and_gets_retained(broker_factory, store):
    """A provisioned subscription is a subscription like any: stored messages
    are fetched for it and the broker's retained messages are delivered."""
    store.provision_sub("dev9", "inbox/dev9/#", 1)
    b = broker_factory(conf=build_conf(store, FETCH_RULES + [
        ("client.connected", 1, "on_subscribe_lookup"),
    ]), workers=2)
    pub = raw_connect(b.port, "dev9-pub")
    publish_ack(pub, "inbox/dev9/a", b"queued1", qos=1)
    publish_ack(pub, "inbox/dev8/a", b"not-mine", qos=1)
    publish_ack(pub, "inbox/dev9/b", b"queued2", qos=2)
    publish_ack(pub, "inbox/dev9/cfg", b"retained", qos=1, retain=True)
    wait_stored(store, 4)
    dev = raw_connect(b.port, "dev9")
    got = recv_upto(dev, 3)
    # the retained message is also a stored message: delivered once, whether
    # by the broker's retained store or by the fetch
    assert sorted(payloads(got)) == [b"queued1", b"queued2", b"retained"], \
        [(p.topic, p.payload, p.retain) for p in got]
    assert [p for p in payloads(got) if p.startswith(b"queued")] == [b"queued1", b"queued2"]
    assert all(p.qos == 1 for p in got)
    last = msgid_of(store, b"retained")
    wait_until(lambda: store.positions("dev9") == {"inbox/dev9/#": last}, what="position")
    quit_(dev)
    # next connect: the subscription is made again, nothing is fetched twice
    dev = raw_connect(b.port, "dev9")
    got = recv_publishes(dev, 1, timeout=WAIT)
    assert [(p.payload, p.retain) for p in got] == [(b"retained", True)]
    publish_ack(pub, "inbox/dev9/c", b"live", qos=1)
    got = recv_publishes(dev, 1, timeout=WAIT) + drain_publishes(dev, quiet=0.3)
    assert payloads(got) == [b"live"]
    quit_(dev)
    quit_(pub)


def test_subscribe_lookup_without_rows_subscribes_nothing(broker_factory, store):
    store.provision_sub("someone", "x/#", 1)
    b = broker_factory(conf=build_conf(store, [
        ("client.connected", 1, "on_subscribe_lookup"),
        ("client.connected", 2, "on_client_connected"),
    ]), workers=1)
    c = raw_connect(b.port, "nobody")
    # the lookup ran before on_client_connected (same client, rule order)
    wait_until(lambda: store.clients(), what="mqtt_client row")
    pub = raw_connect(b.port, "p")
    publish_ack(pub, "x/1", b"m", qos=1)
    assert no_publish(c, 0.3)
    c.close()
    pub.close()


# ---------------------------------------------------------------- 3. on_message_publish

def test_message_publish_stores_qos1_and_qos2_only(broker_factory, store):
    b = broker_factory(conf=build_conf(store, [
        ("message.publish", 1, "on_message_publish"),
    ]), workers=2)
    pub = raw_connect(b.port, "pub-store")
    publish_ack(pub, "t/q0", b"zero", qos=0)
    publish_ack(pub, "t/q1", b"one", qos=1)
    publish_ack(pub, "t/q2", b"two", qos=2)
    publish_ack(pub, "t/ret-empty", b"", qos=1, retain=True)
    publish_ack(pub, "t/ret", b"kept", qos=1, retain=True)
    publish_ack(pub, "t/empty", b"", qos=1)  # empty but not retained: a message like any
    publish_ack(pub, "t/last", b"last", qos=1)
    rows = wait_until(lambda: any(m["payload"] == b"last" for m in store.messages())
                      and store.messages(), what="the last message stored")
    got = [(m["topic"], m["sender"], as_int(m["qos"]), as_int(m["retain"]), m["payload"])
           for m in rows]
    assert got == [
        ("t/q1", "pub-store", 1, 0, b"one"),
        ("t/q2", "pub-store", 2, 0, b"two"),
        ("t/ret", "pub-store", 1, 1, b"kept"),
        ("t/empty", "pub-store", 1, 0, b""),
        ("t/last", "pub-store", 1, 0, b"last"),
    ]
    for m in rows:
        assert HEX32.match(m["msgid"]), m["msgid"]
        assert m["node"] == (DEFAULT_NODE if store.has_msg_node else None)
        assert m["arrived"]
    ids = [m["msgid"] for m in rows]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    quit_(pub)


def test_message_publish_msgids_increase_in_publish_order(broker_factory, store):
    b = broker_factory(conf=build_conf(store, [
        ("message.publish", 1, "on_message_publish"),
    ]), workers=2)
    pub = raw_connect(b.port, "pub-order")
    n = 60
    publish_many(pub, "ord/ids", [str(i).encode() for i in range(n)], qos=1)
    rows = wait_stored(store, n)
    by_payload = {int(m["payload"]): m["msgid"] for m in rows}
    assert sorted(by_payload) == list(range(n))
    ids = [by_payload[i] for i in range(n)]
    for i in ids:
        assert HEX32.match(i), i
    assert all(a < b for a, b in zip(ids, ids[1:])), "msgids do not increase in publish order"
    quit_(pub)


def test_message_publish_binary_payloads_byte_exact(broker_factory, store):
    b = broker_factory(conf=build_conf(store, [
        ("message.publish", 1, "on_message_publish"),
    ]), workers=2)
    pub = raw_connect(b.port, "pub-bin")
    all_bytes = bytes(range(256))
    nuls = b"\x00" * 17
    mixed = b"a\x00b\x00\xff\xfe'\"\\\x00"
    big = random.Random(7).randbytes(100 * 1024)
    invalid_utf8 = b"\xc3\x28\xa0\xa1\xe2\x28\xa1\xf0\x28\x8c\xbc"
    sent = [all_bytes, nuls, mixed, big, invalid_utf8]
    for i, p in enumerate(sent):
        publish_ack(pub, f"bin/{i}", p, qos=1 + (i % 2))
    rows = wait_stored(store, len(sent))
    assert [m["topic"] for m in rows] == [f"bin/{i}" for i in range(len(sent))]
    for m, p in zip(rows, sent):
        assert as_bytes(m["payload"]) == p, f"{m['topic']}: payload differs (len " \
            f"{len(as_bytes(m['payload']))} vs {len(p)})"
    quit_(pub)


def test_message_publish_stores_wills(broker_factory, store):
    b = broker_factory(conf=build_conf(store, [
        ("message.publish", 1, "on_message_publish"),
    ]), workers=2)
    c = raw_connect(b.port, "will-cl", will=("wills/will-cl", b"gone\x00", 1, False))
    c.close()  # no DISCONNECT: the will is published
    row = wait_until(lambda: store.messages(), what="the will stored")[0]
    assert (row["topic"], row["sender"], as_int(row["qos"]), as_bytes(row["payload"])) == \
        ("wills/will-cl", "will-cl", 1, b"gone\x00")
    assert HEX32.match(row["msgid"])


# ---------------------------------------------------------------- 4. on_message_store

def test_message_store_stores_qos0_too(broker_factory, store):
    b = broker_factory(conf=build_conf(store, [
        ("message.publish", 1, "on_message_store"),
    ]), workers=2)
    pub = raw_connect(b.port, "pub-all")
    publish_ack(pub, "s/0", b"q0", qos=0)
    publish_ack(pub, "s/1", b"q1", qos=1)
    publish_ack(pub, "s/2", b"q2", qos=2)
    publish_ack(pub, "s/0r", b"q0 retained", qos=0, retain=True)
    rows = wait_stored(store, 4)
    assert [(m["topic"], as_int(m["qos"]), as_int(m["retain"]), m["payload"], m["sender"])
            for m in rows] == [
        ("s/0", 0, 0, b"q0", "pub-all"),
        ("s/1", 1, 0, b"q1", "pub-all"),
        ("s/2", 2, 0, b"q2", "pub-all"),
        ("s/0r", 0, 1, b"q0 retained", "pub-all"),
    ]
    for m in rows:
        assert HEX32.match(m["msgid"])
    quit_(pub)


# ---------------------------------------------------------------- 5. retain / retain delete

def test_message_retain_upserts_and_retain_delete_deletes(broker_factory, store):
    b = broker_factory(conf=build_conf(store, [
        ("message.publish", 1, "on_message_retain"),
        ("message.publish", 2, "on_retain_delete"),
    ]), workers=2)
    pub = raw_connect(b.port, "pub-ret")

    def ret():
        return {r["topic"]: r for r in store.retained()}

    publish_ack(pub, "r/a", b"v1", qos=1, retain=True)
    row = wait_until(lambda: ret().get("r/a"), what="retained row r/a")
    assert as_bytes(row["payload"]) == b"v1"
    assert row["sender"] == "pub-ret"
    assert as_int(row["qos"]) == 1
    assert HEX32.match(row["msgid"])
    assert row["node"] == (DEFAULT_NODE if store.has_msg_node else None)
    first_id = row["msgid"]

    publish_ack(pub, "r/a", b"not retained", qos=1)  # no retain flag: ignored
    publish_ack(pub, "r/a", b"v2\x00bin", qos=2, retain=True)
    row = wait_until(lambda: ret().get("r/a") if as_bytes(ret()["r/a"]["payload"]) != b"v1"
                     else None, what="r/a replaced")
    assert as_bytes(row["payload"]) == b"v2\x00bin"
    assert as_int(row["qos"]) == 2
    assert row["msgid"] > first_id
    publish_ack(pub, "r/b", b"b1", qos=0, retain=True)
    wait_until(lambda: "r/b" in ret(), what="retained row r/b")
    rows = store.retained()
    assert sorted(r["topic"] for r in rows) == ["r/a", "r/b"], "one row per topic"
    assert as_bytes(ret()["r/a"]["payload"]) == b"v2\x00bin"

    publish_ack(pub, "r/a", b"", qos=1, retain=True)  # clears r/a
    wait_until(lambda: "r/a" not in ret(), what="r/a deleted")
    assert list(ret()) == ["r/b"]
    assert as_bytes(ret()["r/b"]["payload"]) == b"b1"
    quit_(pub)


# ---------------------------------------------------------------- 6. retain lookup

def test_retain_lookup_delivers_stored_retained(broker_factory, store):
    store.put_retained("look/a/1", b"one", qos=1)
    store.put_retained("look/a/2", b"two", qos=2)
    store.put_retained("look/b/x/y", b"three\x00", qos=0)
    store.put_retained("elsewhere/z", b"no", qos=1)
    b = broker_factory(conf=build_conf(store, [
        ("session.subscribed", 1, "on_retain_lookup"),
    ]), workers=2)

    cases = [
        ("look/a/1", [("look/a/1", b"one", 1)]),
        ("look/+/2", [("look/a/2", b"two", 1)]),
        ("look/#", [("look/a/1", b"one", 1), ("look/a/2", b"two", 1),
                    ("look/b/x/y", b"three\x00", 0)]),
        ("look/+/x/+", [("look/b/x/y", b"three\x00", 0)]),
        ("nothing/here", []),
    ]
    for i, (flt, want) in enumerate(cases):
        s = raw_connect(b.port, f"rl-{i}")
        assert sub_ack(s, [(flt, 1)]) == [1]
        if want:
            got = recv_publishes(s, len(want), timeout=WAIT)
            got += drain_publishes(s, quiet=0.3)
        else:
            # the lookup of a later subscription answers after this one
            store.put_retained(f"marker/{i}", b"m", qos=1)
            assert sub_ack(s, [(f"marker/{i}", 1)], pid=2) == [1]
            got = recv_publishes(s, 1, timeout=WAIT)
            assert got[0].topic == f"marker/{i}"
            got = got[1:] + drain_publishes(s, quiet=0.3)
        assert sorted((p.topic, p.payload, p.qos) for p in got) == want, flt
        assert all(p.retain for p in got), f"{flt}: retain flag missing"
        quit_(s)


def test_retain_lookup_does_not_duplicate_broker_retained(broker_factory, store):
    b = broker_factory(conf=build_conf(store, [
        ("message.publish", 1, "on_message_retain"),
        ("message.publish", 2, "on_retain_delete"),
        ("session.subscribed", 1, "on_retain_lookup"),
    ]), workers=2)
    pub = raw_connect(b.port, "held-pub")
    publish_ack(pub, "held/t", b"held", qos=1, retain=True)
    wait_until(lambda: [r for r in store.retained() if r["topic"] == "held/t"],
               what="held/t in the store")
    store.put_retained("held/other", b"from another node", qos=1)
    store.put_retained("zz/marker", b"marker", qos=1)

    for flt in ("held/t", "held/#", "#"):
        s = raw_connect(b.port, f"held-sub-{flt}")
        assert sub_ack(s, [(flt, 1)]) == [1]
        # a later subscription's lookup answers after the first one's
        assert sub_ack(s, [("zz/marker", 1)], pid=2) == [1]
        got = []
        while not any(p.topic == "zz/marker" for p in got):
            got += recv_publishes(s, 1, timeout=WAIT)
        got += drain_publishes(s, quiet=0.3)
        topics = sorted(p.topic for p in got)
        want = {"held/t": ["held/t", "zz/marker"],
                "held/#": ["held/other", "held/t", "zz/marker"],
                "#": ["held/other", "held/t", "zz/marker", "zz/marker"]}[flt]
        assert topics == want, f"{flt}: {[(p.topic, p.payload) for p in got]}"
        assert all(p.retain for p in got)
        assert [p.payload for p in got if p.topic == "held/t"] == [b"held"]
        quit_(s)
    quit_(pub)


def test_retain_lookup_after_restart_many_rows(broker_factory, store):
    """The broker's own retained store is memory: after a restart the
    retained messages come from the database (more than one page of them)."""
    conf = build_conf(store, [
        ("message.publish", 1, "on_message_retain"),
        ("message.publish", 2, "on_retain_delete"),
        ("session.subscribed", 1, "on_retain_lookup"),
    ])
    b = broker_factory(conf=conf, workers=2)
    pub = raw_connect(b.port, "many-pub")
    n = 520
    for k in range(0, n, 130):
        for i in range(k, k + 130):
            pub.send(publish(f"many/{i:04d}", f"r{i}".encode(), qos=1, retain=True, pid=i + 1))
        for _ in range(130):
            expect_skip(pub, PUBACK, timeout=WAIT)
    publish_ack(pub, "manyX/0", b"no", qos=1, retain=True)
    publish_ack(pub, "many/gone", b"x", qos=1, retain=True)
    publish_ack(pub, "many/gone", b"", qos=1, retain=True)
    quit_(pub)
    wait_until(lambda: len(store.retained()) == n + 1, what=f"{n + 1} retained rows")
    assert b.stop() == 0

    b2 = broker_factory(conf=conf, workers=2)
    s = raw_connect(b2.port, "many-sub")
    assert sub_ack(s, [("many/+", 1)]) == [1]
    got = recv_publishes(s, n, timeout=WAIT) + drain_publishes(s, quiet=0.3)
    assert sorted((p.topic, p.payload) for p in got) == \
        [(f"many/{i:04d}", f"r{i}".encode()) for i in range(n)]
    assert all(p.retain for p in got)
    quit_(s)


def test_retain_lookup_not_for_shared_subscriptions(broker_factory, store):
    """MQTT 5 (4.8.2): retained messages are not sent for a new shared
    subscription - from the broker's store or from the database."""
    store.put_retained("shr/t", b"stored retained", qos=1)
    store.put_retained("zz/marker", b"marker", qos=1)
    b = broker_factory(conf=build_conf(store, [
        ("session.subscribed", 1, "on_retain_lookup"),
    ]), workers=2)
    pub = raw_connect(b.port, "shr-pub")
    publish_ack(pub, "shr/held", b"broker retained", qos=1, retain=True)
    s = raw_connect(b.port, "shr-sub", version=5)
    assert sub_ack(s, [("$share/g/shr/#", 1)]) == [1]
    assert sub_ack(s, [("zz/marker", 1)], pid=2) == [1]
    got = recv_publishes(s, 1, timeout=WAIT) + drain_publishes(s, quiet=0.3)
    assert [(p.topic, p.payload) for p in got] == [("zz/marker", b"marker")]
    quit_(s)
    quit_(pub)


def test_retain_lookup_honours_retain_handling(broker_factory, store):
    """MQTT 5 Retain Handling: 2 = no retained messages at subscribe, 1 = only
    for a subscription that did not exist; the stored ones included."""
    store.put_retained("rh/t", b"stored retained", qos=1)
    store.put_retained("zz/marker", b"marker", qos=1)
    b = broker_factory(conf=build_conf(store, [
        ("session.subscribed", 1, "on_retain_lookup"),
    ]), workers=2)

    def marker_then_rest(s, pid):
        assert sub_ack(s, [("zz/marker", 1)], pid=pid) == [1]
        got = []
        while not any(p.topic == "zz/marker" for p in got):
            got += recv_publishes(s, 1, timeout=WAIT)
        return [(p.topic, p.payload) for p in got + drain_publishes(s, quiet=0.3)]

    s = raw_connect(b.port, "rh2-sub", version=5)
    assert sub_ack(s, [("rh/#", 1 | 0x20)]) == [1]  # retain handling 2
    rh2 = marker_then_rest(s, 2)
    quit_(s)

    s = raw_connect(b.port, "rh1-sub", version=5)
    assert sub_ack(s, [("rh/#", 1 | 0x10)]) == [1]  # retain handling 1, new: sent
    got = recv_publishes(s, 1, timeout=WAIT)
    assert [(p.topic, p.payload, p.retain) for p in got] == [("rh/t", b"stored retained", True)]
    assert sub_ack(s, [("rh/#", 1 | 0x10)], pid=2) == [1]  # exists: not sent
    rh1 = marker_then_rest(s, 3)
    quit_(s)
    assert rh2 == [("zz/marker", b"marker")], "retain handling 2"
    assert rh1 == [("zz/marker", b"marker")], "retain handling 1, existing subscription"


# ---------------------------------------------------------------- 7. fetch

def test_fetch_many_messages_in_order(broker_factory, store):
    b = broker_factory(conf=build_conf(store, FETCH_RULES), workers=2)
    pub = raw_connect(b.port, "fm-pub")
    n = 620  # more than one page of the fetch
    for k in range(0, n, 155):
        publish_many(pub, "fm/t", [f"{i:05d}".encode() for i in range(k, min(n, k + 155))])
    wait_stored(store, n)
    for flt in ("fm/t", "fm/#"):
        s = raw_connect(b.port, f"fm-sub-{flt}")
        assert sub_ack(s, [(flt, 1)]) == [1]
        got = recv_publishes(s, n, timeout=WAIT) + drain_publishes(s, quiet=0.3)
        assert [int(p.payload) for p in got] == list(range(n)), flt
        quit_(s)
    quit_(pub)


def test_fetch_exact_and_wildcard_filters(broker_factory, store):
    b = broker_factory(conf=build_conf(store, FETCH_RULES), workers=2)
    pub = raw_connect(b.port, "f-pub")
    msgs = [("a/b/c", b"m1"), ("a/b/c", b"m2"), ("a/x/c", b"m3"), ("a/b/d", b"m4"),
            ("a/b/c/d", b"m5"), ("z/z", b"m6"), ("a/b/c", b"m7"), ("b", b"m8")]
    for t, p in msgs:
        publish_ack(pub, t, p, qos=1)
    wait_stored(store, len(msgs))

    cases = {
        "a/b/c": [b"m1", b"m2", b"m7"],
        "a/+/c": [b"m1", b"m2", b"m3", b"m7"],
        "a/#": [b"m1", b"m2", b"m3", b"m4", b"m5", b"m7"],
        "#": [b"m1", b"m2", b"m3", b"m4", b"m5", b"m6", b"m7", b"m8"],
        "+/+": [b"m6"],
        "+": [b"m8"],
        "a/b/c/+": [b"m5"],
    }
    for i, (flt, want) in enumerate(cases.items()):
        s = raw_connect(b.port, f"f-sub-{i}")
        assert sub_ack(s, [(flt, 1)]) == [1]
        got = recv_publishes(s, len(want), timeout=WAIT)
        assert payloads(got) == want, f"{flt}: fetched {payloads(got)}"
        assert all(p.qos == 1 for p in got)
        extra = drain_publishes(s, quiet=0.3)
        assert not extra, f"{flt}: also fetched {payloads(extra)}"
        quit_(s)
    quit_(pub)


def test_multilevel_wildcard_matches_parent_level(broker_factory, store):
    """MQTT: "a/#" matches "a" itself (MQTT-4.7.1-2), so on_message_fetch and
    on_retain_lookup must return messages on the parent topic too."""
    store.put_retained("pl", b"retained parent", qos=1)
    store.put_retained("pl/c", b"retained child", qos=1)
    b = broker_factory(conf=build_conf(store, FETCH_RULES + [
        ("session.subscribed", 2, "on_retain_lookup"),
    ]), workers=2)
    pub = raw_connect(b.port, "pl-pub")
    publish_ack(pub, "pf", b"parent", qos=1)
    publish_ack(pub, "pf/c", b"child", qos=1)
    publish_ack(pub, "pf%", b"sibling", qos=1)
    wait_stored(store, 3)
    s = raw_connect(b.port, "pl-sub")
    assert sub_ack(s, [("pf/#", 1)]) == [1]
    fetched = recv_upto(s, 2)
    assert sub_ack(s, [("pl/#", 1)], pid=2) == [1]
    retained = recv_upto(s, 2)
    assert payloads(fetched) == [b"parent", b"child"], "on_message_fetch for pf/#"
    assert sorted(payloads(retained)) == [b"retained child", b"retained parent"], \
        "on_retain_lookup for pl/#"
    assert all(p.retain for p in retained)
    quit_(s)
    quit_(pub)


def test_fetch_then_ack_is_not_fetched_again(broker_factory, store):
    b = broker_factory(conf=build_conf(store, FETCH_RULES), workers=2)
    pub = raw_connect(b.port, "fa-pub")
    for t, p in [("a/b/c", b"m1"), ("a/x/c", b"m2"), ("a/b/c", b"m3")]:
        publish_ack(pub, t, p, qos=1)
    wait_stored(store, 3)

    s = raw_connect(b.port, "fa-sub")
    assert sub_ack(s, [("a/+/c", 1)]) == [1]
    assert payloads(recv_publishes(s, 3, timeout=WAIT)) == [b"m1", b"m2", b"m3"]
    # the position is keyed by the filter, and is the last acknowledged message
    m3 = msgid_of(store, b"m3")
    wait_until(lambda: store.positions("fa-sub") == {"a/+/c": m3},
               what="read position of a/+/c")

    # subscribing again to the same filter: nothing fetched again
    assert sub_ack(s, [("a/+/c", 1)], pid=2) == [1]
    only_live(s, pub, "a/y/c", b"live1")
    live1 = msgid_of(store, b"live1")
    wait_until(lambda: store.positions("fa-sub") == {"a/+/c": live1},
               what="read position moved by the live message")

    # reconnecting with a clean session: nothing fetched again
    quit_(s)
    s = raw_connect(b.port, "fa-sub", clean=True)
    assert sub_ack(s, [("a/+/c", 1)]) == [1]
    only_live(s, pub, "a/b/c", b"live2")
    live2 = msgid_of(store, b"live2")
    wait_until(lambda: store.positions("fa-sub") == {"a/+/c": live2}, what="position live2")

    # messages published while it is away are fetched when it comes back
    quit_(s)
    for t, p in [("a/b/c", b"away1"), ("a/q/c", b"away2"), ("a/q/d", b"not-matching")]:
        publish_ack(pub, t, p, qos=1)
    wait_until(lambda: len(store.messages()) == 8, what="8 stored")
    s = raw_connect(b.port, "fa-sub", clean=True)
    assert sub_ack(s, [("a/+/c", 1)]) == [1]
    assert payloads(recv_publishes(s, 2, timeout=WAIT)) == [b"away1", b"away2"]
    away2 = msgid_of(store, b"away2")
    wait_until(lambda: store.positions("fa-sub") == {"a/+/c": away2}, what="position away2")
    quit_(s)

    # and once more, after acknowledging those: nothing
    s = raw_connect(b.port, "fa-sub", clean=True)
    assert sub_ack(s, [("a/+/c", 1)]) == [1]
    only_live(s, pub, "a/b/c", b"live3")
    quit_(s)
    quit_(pub)


def test_fetch_positions_keyed_by_filter(broker_factory, store):
    b = broker_factory(conf=build_conf(store, FETCH_RULES), workers=2)
    pub = raw_connect(b.port, "fk-pub")
    for t, p in [("k/1/x", b"k1"), ("k/2/x", b"k2"), ("other", b"o1")]:
        publish_ack(pub, t, p, qos=1)
    wait_stored(store, 3)
    s = raw_connect(b.port, "fk-sub", version=5)
    assert sub_ack(s, [("k/#", 1)]) == [1]
    assert payloads(recv_publishes(s, 2, timeout=WAIT)) == [b"k1", b"k2"]
    assert sub_ack(s, [("#", 1)], pid=2) == [1]
    assert payloads(recv_publishes(s, 3, timeout=WAIT)) == [b"k1", b"k2", b"o1"]
    k2, o1 = msgid_of(store, b"k2"), msgid_of(store, b"o1")
    wait_until(lambda: store.positions("fk-sub") == {"k/#": k2, "#": o1},
               what="one position per filter")
    pos = store.positions("fk-sub")
    assert "k/2/x" not in pos and "other" not in pos, "keyed by message topic"
    quit_(s)

    # the other client's positions are its own
    s2 = raw_connect(b.port, "fk-sub2", version=5)
    assert sub_ack(s2, [("k/#", 1)]) == [1]
    assert payloads(recv_publishes(s2, 2, timeout=WAIT)) == [b"k1", b"k2"]
    quit_(s2)
    quit_(pub)


def test_fetch_respects_granted_qos(broker_factory, store):
    b = broker_factory(conf=build_conf(store, FETCH_RULES), workers=2)
    pub = raw_connect(b.port, "fq-pub")
    publish_ack(pub, "fq/t", b"two", qos=2)
    publish_ack(pub, "fq/t", b"one", qos=1)
    wait_stored(store, 2)
    s = raw_connect(b.port, "fq-sub")
    assert sub_ack(s, [("fq/t", 1)]) == [1]
    got = recv_publishes(s, 2, timeout=WAIT)
    assert [(p.payload, p.qos) for p in got] == [(b"two", 1), (b"one", 1)]
    quit_(s)
    s = raw_connect(b.port, "fq-sub2")
    assert sub_ack(s, [("fq/t", 2)]) == [2]
    got = recv_publishes(s, 2, timeout=WAIT)
    assert [(p.payload, p.qos) for p in got] == [(b"two", 2), (b"one", 1)]
    one = msgid_of(store, b"one")
    wait_until(lambda: store.positions("fq-sub2") == {"fq/t": one}, what="position")
    quit_(s)
    quit_(pub)


def test_fetch_max_returned_count_pages_oldest_first(broker_factory, store):
    b = broker_factory(conf=build_conf(store, [
        ("message.publish", 1, "on_message_publish"),
        ("session.subscribed", 1, "on_message_fetch", "#",
         {"offline_opts": {"max_returned_count": 3}}),
        ("message.acked", 1, "on_message_acked"),
    ]), workers=2)
    pub = raw_connect(b.port, "mc-pub")
    sent = [f"p{i}".encode() for i in range(8)]
    for p in sent:
        # rows the filter's database range holds but the filter does not match
        publish_ack(pub, "mc/t/deeper", b"x-" + p, qos=1)
        publish_ack(pub, "mc/t", p, qos=1)
    wait_stored(store, 16)
    ids = {m["payload"]: m["msgid"] for m in store.messages()}

    s = raw_connect(b.port, "mc-sub")
    pid = 1
    for page in (sent[0:3], sent[3:6], sent[6:8]):
        assert sub_ack(s, [("mc/+", 1)], pid=pid) == [1]
        pid += 1
        got = recv_publishes(s, len(page), timeout=WAIT)
        assert payloads(got) == page, f"page {payloads(got)}, expected {page}"
        if len(page) == 3:
            # a fourth would arrive right behind the third
            assert no_publish(s, 0.3)
        wait_until(lambda: store.positions("mc-sub") == {"mc/+": ids[page[-1]]},
                   what=f"position after {page[-1]!r}")
    assert sub_ack(s, [("mc/+", 1)], pid=pid) == [1]
    only_live(s, pub, "mc/t", b"live")
    quit_(s)
    quit_(pub)


def test_fetch_max_returned_count_global_option(broker_factory, store):
    b = broker_factory(conf=build_conf(store, FETCH_RULES,
                                       extra=f"backend.{store.name}.max_returned_count = 2\n"),
                       workers=2)
    pub = raw_connect(b.port, "mg-pub")
    publish_many(pub, "mg/t", [b"a", b"b", b"c"], qos=1)
    wait_stored(store, 3)
    s = raw_connect(b.port, "mg-sub")
    assert sub_ack(s, [("mg/t", 1)]) == [1]
    assert payloads(recv_publishes(s, 2, timeout=WAIT)) == [b"a", b"b"]
    assert no_publish(s, 0.3)
    quit_(s)
    quit_(pub)


def test_fetch_time_range_excludes_older(broker_factory, store):
    b = broker_factory(conf=build_conf(store, [
        ("message.publish", 1, "on_message_publish"),
        ("session.subscribed", 1, "on_message_fetch", "#",
         {"offline_opts": {"time_range": "2s"}}),
        ("message.acked", 1, "on_message_acked"),
    ]), workers=2)
    pub = raw_connect(b.port, "tr-pub")
    publish_ack(pub, "tr/t", b"old1", qos=1)
    publish_ack(pub, "tr/u", b"old2", qos=1)
    wait_stored(store, 2)
    time.sleep(2.6)  # past the range
    publish_ack(pub, "tr/t", b"new1", qos=1)
    publish_ack(pub, "tr/u", b"new2", qos=1)
    wait_stored(store, 4)
    s = raw_connect(b.port, "tr-sub")
    assert sub_ack(s, [("tr/#", 1)]) == [1]
    got = recv_publishes(s, 2, timeout=WAIT)
    assert payloads(got) == [b"new1", b"new2"]
    assert no_publish(s, 0.3)
    quit_(s)
    quit_(pub)


def test_overlapping_filters_each_advance(broker_factory, store):
    b = broker_factory(conf=build_conf(store, FETCH_RULES), workers=2)
    pub = raw_connect(b.port, "ov-pub")
    s = raw_connect(b.port, "ov-sub")
    assert sub_ack(s, [("ov/#", 1), ("ov/+", 1), ("ov/x/#", 1)]) == [1, 1, 1]
    publish_ack(pub, "ov/1", b"o1", qos=1)
    got = recv_publishes(s, 1, timeout=WAIT) + drain_publishes(s, quiet=0.3)
    assert set(payloads(got)) == {b"o1"}
    o1 = wait_until(lambda: store.messages(), what="o1 stored")[0]["msgid"]
    # one acknowledgement moves every matching filter's position (not ov/x/#)
    wait_until(lambda: store.positions("ov-sub") == {"ov/#": o1, "ov/+": o1},
               what="both matching filters advanced")
    quit_(s)
    s = raw_connect(b.port, "ov-sub")
    assert sub_ack(s, [("ov/+", 1)]) == [1]
    only_live(s, pub, "ov/2", b"o2")
    quit_(s)
    quit_(pub)


def test_qos0_delivery_moves_read_position(broker_factory, store):
    b = broker_factory(conf=build_conf(store, FETCH_RULES), workers=2)
    pub = raw_connect(b.port, "z-pub")
    publish_many(pub, "z0/t", [b"a", b"b"], qos=1)
    wait_stored(store, 2)
    s = raw_connect(b.port, "z-sub")
    assert sub_ack(s, [("z0/t", 0)]) == [0]
    got = recv_publishes(s, 2, timeout=WAIT)
    assert [(p.payload, p.qos) for p in got] == [(b"a", 0), (b"b", 0)]
    bid = msgid_of(store, b"b")
    wait_until(lambda: store.positions("z-sub") == {"z0/t": bid},
               what="position moved by the QoS 0 delivery")
    quit_(s)
    s = raw_connect(b.port, "z-sub")
    assert sub_ack(s, [("z0/t", 0)]) == [0]
    only_live(s, pub, "z0/t", b"c")
    quit_(s)
    quit_(pub)


def test_resubscribe_does_not_duplicate_inflight(broker_factory, store):
    """A message in flight (delivered, not yet acknowledged) is also unread in
    the store: subscribing again must not deliver it a second time."""
    b = broker_factory(conf=build_conf(store, FETCH_RULES), workers=2)
    pub = raw_connect(b.port, "if-pub")
    s = raw_connect(b.port, "if-sub")
    assert sub_ack(s, [("if/t", 1)]) == [1]
    publish_ack(pub, "if/t", b"m1", qos=1)
    first = s.recv(WAIT)  # not acknowledged
    assert first.type == PUBLISH and first.payload == b"m1"
    wait_stored(store, 1)
    assert sub_ack(s, [("if/t", 1)], pid=2) == [1]
    publish_ack(pub, "if/t", b"live", qos=1)
    got = recv_publishes(s, 1, timeout=WAIT) + drain_publishes(s, quiet=0.3)
    assert payloads(got) == [b"live"], f"m1 delivered twice: {payloads(got)}"
    s.send(ack(PUBACK, first.pid))
    m1 = msgid_of(store, b"m1")
    live = msgid_of(store, b"live")
    wait_until(lambda: store.positions("if-sub") == {"if/t": max(m1, live)}, what="position")
    quit_(s)
    quit_(pub)


def test_clean_reconnect_keeps_positions_with_acked_delete(broker_factory, store):
    """The default rules bind on_acked_delete too: a clean session that ends
    (its subscriptions discarded, not unsubscribed) must keep its read
    positions, or every reconnect would fetch everything again."""
    b = broker_factory(conf=build_conf(store, FETCH_RULES + [
        ("session.unsubscribed", 1, "on_acked_delete"),
    ]), workers=2)
    pub = raw_connect(b.port, "cr-pub")
    publish_many(pub, "cr/t", [b"a", b"b"], qos=1)
    wait_stored(store, 2)
    for version in (4, 5):
        s = raw_connect(b.port, "cr-sub", version=version, clean=True)
        assert sub_ack(s, [("cr/#", 1)]) == [1]
        if version == 4:
            assert payloads(recv_publishes(s, 2, timeout=WAIT)) == [b"a", b"b"]
            bid = msgid_of(store, b"b")
            wait_until(lambda: store.positions("cr-sub") == {"cr/#": bid}, what="position")
        else:
            only_live(s, pub, "cr/t", b"live")
        if version == 4:
            quit_(s)
        else:
            s.close()  # an abnormal end this time
    s = raw_connect(b.port, "cr-sub", clean=True)
    assert sub_ack(s, [("cr/#", 1)]) == [1]
    only_live(s, pub, "cr/t", b"live2")
    quit_(s)
    quit_(pub)


def test_unacknowledged_messages_are_fetched_again(broker_factory, store):
    b = broker_factory(conf=build_conf(store, FETCH_RULES), workers=2)
    pub = raw_connect(b.port, "un-pub")
    publish_many(pub, "un/t", [b"a", b"b", b"c"], qos=1)
    wait_stored(store, 3)
    s = raw_connect(b.port, "un-sub")
    assert sub_ack(s, [("un/t", 1)]) == [1]
    first = s.recv(WAIT)
    assert first.type == PUBLISH and first.payload == b"a"
    s.send(ack(PUBACK, first.pid))  # only "a" is acknowledged
    rest = [s.recv(WAIT) for _ in range(2)]
    assert [p.payload for p in rest] == [b"b", b"c"]
    a = msgid_of(store, b"a")
    wait_until(lambda: store.positions("un-sub") == {"un/t": a}, what="position a")
    s.close()
    s = raw_connect(b.port, "un-sub", clean=True)
    assert sub_ack(s, [("un/t", 1)]) == [1]
    assert payloads(recv_publishes(s, 2, timeout=WAIT)) == [b"b", b"c"]
    assert no_publish(s, 0.3)
    quit_(s)
    quit_(pub)


def test_fetch_honours_no_local_and_subscription_id(broker_factory, store):
    """MQTT 5 subscription options apply to fetched messages as to live ones:
    No Local (the client's own messages are not sent back) and the
    Subscription Identifier."""
    b = broker_factory(conf=build_conf(store, FETCH_RULES), workers=2)
    me = raw_connect(b.port, "nl-me", version=5)
    other = raw_connect(b.port, "nl-other", version=5)
    publish_ack(me, "nl/t", b"mine", qos=1)
    publish_ack(other, "nl/t", b"theirs", qos=1)
    wait_stored(store, 2)
    quit_(me)
    me = raw_connect(b.port, "nl-me", version=5)
    assert sub_ack(me, [("nl/#", 1 | 0x04)], properties=props(subscription_id=7)) == [1]
    got = recv_publishes(me, 1, timeout=WAIT) + drain_publishes(me, quiet=0.3)
    assert all(p.props.get("subscription_id") == [7] for p in got), \
        [(p.payload, p.props) for p in got]
    assert payloads(got) == [b"theirs"], "No Local: own message fetched"
    quit_(me)
    quit_(other)


def test_fetch_several_filters_in_one_subscribe(broker_factory, store):
    b = broker_factory(conf=build_conf(store, FETCH_RULES), workers=2)
    pub = raw_connect(b.port, "mf-pub")
    for t, p in [("mf/a", b"a1"), ("mf/b", b"b1"), ("mf/a", b"a2"), ("mf/c", b"c1"),
                 ("mf/b", b"b2")]:
        publish_ack(pub, t, p, qos=1)
    wait_stored(store, 5)
    s = raw_connect(b.port, "mf-sub", version=5)
    assert sub_ack(s, [("mf/a", 1), ("mf/b", 2)]) == [1, 2]
    got = recv_publishes(s, 4, timeout=WAIT) + drain_publishes(s, quiet=0.3)
    assert sorted(payloads(got)) == [b"a1", b"a2", b"b1", b"b2"]
    assert [p for p in payloads(got) if p.startswith(b"a")] == [b"a1", b"a2"]
    assert [p for p in payloads(got) if p.startswith(b"b")] == [b"b1", b"b2"]
    a2, b2 = msgid_of(store, b"a2"), msgid_of(store, b"b2")
    wait_until(lambda: store.positions("mf-sub") == {"mf/a": a2, "mf/b": b2}, what="positions")
    quit_(s)
    quit_(pub)


def test_shared_subscription_fetches_nothing(broker_factory, store):
    b = broker_factory(conf=build_conf(store, FETCH_RULES), workers=2)
    pub = raw_connect(b.port, "sh-pub")
    publish_ack(pub, "sh/t", b"stored", qos=1)
    wait_stored(store, 1)
    s = raw_connect(b.port, "sh-sub", version=5)
    assert sub_ack(s, [("$share/g1/sh/t", 1)]) == [1]
    publish_ack(pub, "sh/t", b"live", qos=1)
    got = recv_publishes(s, 1, timeout=WAIT) + drain_publishes(s, quiet=0.3)
    assert payloads(got) == [b"live"]
    # a group keeps no read position; a later acknowledgement of the same
    # client (its jobs run in order) shows the first one has been processed
    assert sub_ack(s, [("sh/other", 1)], pid=2) == [1]
    publish_ack(pub, "sh/other", b"other", qos=1)
    assert payloads(recv_publishes(s, 1, timeout=WAIT)) == [b"other"]
    other = wait_until(lambda: [m["msgid"] for m in store.messages()
                                if m["payload"] == b"other"], what="stored")[0]
    wait_until(lambda: store.positions("sh-sub").get("sh/other") == other, what="position")
    assert store.positions("sh-sub") == {"sh/other": other}
    quit_(s)
    quit_(pub)


# ---------------------------------------------------------------- 8. ordering

def test_fetch_then_live_in_order_without_duplicates(broker_factory, store):
    b = broker_factory(conf=build_conf(store, FETCH_RULES), workers=2)
    pub = raw_connect(b.port, "ord-pub")
    stored_n, live_n = 200, 60
    publish_many(pub, "ord/t", [f"{i:05d}".encode() for i in range(stored_n)], qos=1)
    wait_stored(store, stored_n)

    s = raw_connect(b.port, "ord-sub")
    s.send(subscribe(1, [("ord/t", 1)]))
    expect_skip(s, SUBACK, timeout=WAIT)
    # live messages right behind the SUBACK, while the fetch runs
    publish_many(pub, "ord/t", [f"{i:05d}".encode() for i in range(stored_n, stored_n + live_n)],
                 qos=1)
    got = recv_publishes(s, stored_n + live_n, timeout=WAIT)
    got += drain_publishes(s, quiet=0.3)
    seq = [int(p.payload) for p in got]
    dups = sorted({x for x in seq if seq.count(x) > 1})
    assert not dups, f"delivered twice: {dups[:20]}"
    assert seq == list(range(stored_n + live_n)), \
        f"out of order or missing: first bad index " \
        f"{next((i for i, (a, b_) in enumerate(zip(seq, range(10**9))) if a != b_), None)}"
    quit_(s)
    quit_(pub)


def test_fetch_wildcard_then_live_in_order(broker_factory, store):
    b = broker_factory(conf=build_conf(store, FETCH_RULES), workers=2)
    pub = raw_connect(b.port, "ordw-pub")
    n = 40
    for i in range(n):
        publish_ack(pub, f"ordw/{i % 3}", f"{i:05d}".encode(), qos=1)
    wait_stored(store, n)
    s = raw_connect(b.port, "ordw-sub")
    s.send(subscribe(1, [("ordw/+", 1)]))
    expect_skip(s, SUBACK, timeout=WAIT)
    for i in range(n, n + 20):
        s_topic = f"ordw/{i % 3}"
        pub.send(publish(s_topic, f"{i:05d}".encode(), qos=0))
    got = recv_publishes(s, n + 20, timeout=WAIT)
    got += drain_publishes(s, quiet=0.3)
    assert [int(p.payload) for p in got] == list(range(n + 20))
    quit_(s)
    quit_(pub)


# ---------------------------------------------------------------- 9. acked delete

def test_unsubscribe_deletes_read_position(broker_factory, store):
    b = broker_factory(conf=build_conf(store, FETCH_RULES + [
        ("session.unsubscribed", 1, "on_acked_delete"),
    ]), workers=2)
    pub = raw_connect(b.port, "ud-pub")
    publish_ack(pub, "u/1", b"u1", qos=1)
    publish_ack(pub, "v/1", b"v1", qos=1)
    wait_stored(store, 2)
    s = raw_connect(b.port, "ud-sub")
    assert sub_ack(s, [("u/#", 1), ("v/#", 1)]) == [1, 1]
    assert sorted(payloads(recv_publishes(s, 2, timeout=WAIT))) == [b"u1", b"v1"]
    u1, v1 = msgid_of(store, b"u1"), msgid_of(store, b"v1")
    wait_until(lambda: store.positions("ud-sub") == {"u/#": u1, "v/#": v1}, what="2 positions")
    unsub_ack(s, ["u/#"], pid=2)
    wait_until(lambda: store.positions("ud-sub") == {"v/#": v1}, what="u/# position deleted")
    # the position is forgotten: subscribing again fetches from the start
    assert sub_ack(s, [("u/#", 1)], pid=3) == [1]
    assert payloads(recv_publishes(s, 1, timeout=WAIT)) == [b"u1"]
    wait_until(lambda: store.positions("ud-sub") == {"u/#": u1, "v/#": v1}, what="back")
    quit_(s)
    quit_(pub)


# ---------------------------------------------------------------- 10. raw actions

def record_vars(store, table, cols):
    """store.record() of these variables (ts: ${timestamp})."""
    return store.record(table, **{c: "${timestamp}" if c == "ts" else "${" + c + "}"
                                  for c in cols})


def drive_every_hook_point(port):
    """The traffic of the raw-action tests: raw-sub (user alice) subscribes
    raw/# at QoS 1 and raw-sub0 raw/+ at QoS 0, raw-pub publishes a binary
    QoS 1 message and a retained QoS 2 one, both arrive, raw-sub
    unsubscribes, all three leave. Returns (t0, t1), wall-clock ms around
    it."""
    t0 = int(time.time() * 1000)
    sub = raw_connect(port, "raw-sub", username="alice", password="pw")
    assert sub_ack(sub, [("raw/#", 1)]) == [1]
    sub0 = raw_connect(port, "raw-sub0")
    assert sub_ack(sub0, [("raw/+", 0)]) == [0]
    pub = raw_connect(port, "raw-pub")
    publish_ack(pub, "raw/x", b"p\x00one", qos=1)
    publish_ack(pub, "raw/r", b"p-two", qos=2, retain=True)
    got = recv_publishes(sub, 2, timeout=WAIT)
    assert sorted(p.payload for p in got) == [b"p\x00one", b"p-two"]
    assert sorted(p.payload for p in recv_publishes(sub0, 2, timeout=WAIT)) == \
        [b"p\x00one", b"p-two"]
    unsub_ack(sub, ["raw/#"], pid=2)
    quit_(sub)
    quit_(sub0)
    quit_(pub)
    return t0, int(time.time() * 1000)


def check_hook_rows(rows, t0, t1, username=lambda u: u):
    """The rows every hook point's raw action recorded in the raw-action
    tests (rows(table) -> dicts), once all are there; username() normalises
    an absent user name (SQL: NULL; Redis: empty)."""
    wait_until(lambda: len(rows("disconnected")) == 3 and len(rows("acked")) == 2
               and len(rows("unsubscribed")) == 1,
               what="every raw action ran")
    con = {r["clientid"]: r for r in rows("connected")}
    assert set(con) == {"raw-sub", "raw-sub0", "raw-pub"}
    assert con["raw-sub"]["username"] == "alice"
    assert username(con["raw-pub"]["username"]) is None
    for r in con.values():
        assert r["peerhost"] == "127.0.0.1"
        assert r["node"] == DEFAULT_NODE
        assert t0 - 60000 <= as_int(r["ts"]) <= t1 + 60000
    dis = {r["clientid"]: r for r in rows("disconnected")}
    assert set(dis) == {"raw-sub", "raw-sub0", "raw-pub"}
    assert dis["raw-sub"]["username"] == "alice"
    assert dis["raw-sub"]["peerhost"] == "127.0.0.1"

    sb = rows("subscribed")
    assert sorted((r["clientid"], r["topic"], as_int(r["qos"]), username(r["username"]))
                  for r in sb) == \
        [("raw-sub", "raw/#", 1, "alice"), ("raw-sub0", "raw/+", 0, None)]
    un = rows("unsubscribed")
    assert [(r["clientid"], r["topic"]) for r in un] == [("raw-sub", "raw/#")]

    pb = rows("publish")
    assert [(r["clientid"], r["topic"], as_int(r["qos"]), as_bytes(r["payload"]),
             as_int(r["retain"]), r["node"], r["peerhost"]) for r in pb] == [
        ("raw-pub", "raw/x", 1, b"p\x00one", 0, DEFAULT_NODE, "127.0.0.1"),
        ("raw-pub", "raw/r", 2, b"p-two", 1, DEFAULT_NODE, "127.0.0.1"),
    ]
    for r in pb:
        assert HEX32.match(r["msgid"]), r["msgid"]
        assert t0 - 60000 <= as_int(r["ts"]) <= t1 + 60000
    ids = {r["topic"]: r["msgid"] for r in pb}

    dl = rows("delivered")
    assert sorted((r["clientid"], r["topic"], r["msgid"], as_bytes(r["payload"])) for r in dl) == \
        sorted([(c, "raw/x", ids["raw/x"], b"p\x00one") for c in ("raw-sub", "raw-sub0")] +
               [(c, "raw/r", ids["raw/r"], b"p-two") for c in ("raw-sub", "raw-sub0")])
    # message.acked: PUBACK / PUBREC only; a QoS 0 delivery is never acknowledged
    ak = rows("acked")
    assert sorted((r["clientid"], r["topic"], r["msgid"]) for r in ak) == \
        sorted([("raw-sub", "raw/x", ids["raw/x"]), ("raw-sub", "raw/r", ids["raw/r"])])


def test_raw_action_on_every_hook_point(broker_factory, store):
    """The backend's own raw actions (store.record) run on every hook point
    with the point's variables, binary payloads byte-exact; an action's
    statements/commands all run, in order."""
    client_cols = ["clientid", "username", "peerhost", "node", "ts"]
    msg_cols = ["clientid", "username", "peerhost", "node", "topic", "qos", "msgid", "payload",
                "retain", "ts"]
    two_a = store.record("two_a", clientid="${clientid}", topic="${topic}")
    two_b = store.record("two_b", payload="${payload}", qos="${qos}")
    (raw_key,) = two_a
    two = {raw_key: two_a[raw_key] + two_b[raw_key]}
    b = broker_factory(conf=build_conf(store, [
        ("client.connected", 1, record_vars(store, "ev_connected", client_cols), None),
        ("client.disconnected", 1, record_vars(store, "ev_disconnected", client_cols), None),
        ("session.subscribed", 1, record_vars(store, "ev_subscribed",
                                              client_cols + ["topic", "qos"]), None),
        ("session.unsubscribed", 1, record_vars(store, "ev_unsubscribed",
                                                client_cols + ["topic"]), None),
        ("message.publish", 1, record_vars(store, "ev_publish", msg_cols), None),
        ("message.publish", 2, two, None),
        ("message.delivered", 1, record_vars(store, "ev_delivered",
                                             ["clientid", "topic", "qos", "msgid", "payload"]),
         None),
        ("message.acked", 1, record_vars(store, "ev_acked", ["clientid", "topic", "msgid"]),
         None),
    ]), workers=2)
    t0, t1 = drive_every_hook_point(b.port)

    def rows(point):
        return store.records(f"ev_{point}")

    check_hook_rows(rows, t0, t1, username=lambda u: u or None)

    # both statements / commands of one action ran
    assert store.records("two_a") == [
        {"clientid": "raw-pub", "topic": "raw/x"}, {"clientid": "raw-pub", "topic": "raw/r"}]
    assert [(r["payload"], as_int(r["qos"])) for r in store.records("two_b")] == \
        [(b"p\x00one", 1), (b"p-two", 2)]


# raw SQL: typed columns, NULLs, queries (SQL backends only)

RAW_COLS = ("point text, clientid text, username text, peerhost text, node text, topic text, "
            "qos integer, msgid text, payload blob, retain integer, ts integer")


def raw_insert(point, cols):
    names = ", ".join(["point"] + cols)
    vals = ", ".join([f"'{point}'"] + ["${timestamp}" if c == "ts" else "${" + c + "}"
                                       for c in cols])
    return {"sql": [f"insert into ev({names}) values({vals})"]}


def test_raw_sql_on_every_hook_point(broker_factory, sql_store):
    store = sql_store
    store.ensure_schema()
    store.execute(f"create table ev ({RAW_COLS})")
    store.execute("create table two_a (clientid text, topic text)")
    store.execute("create table two_b (payload blob, qos integer)")
    client_cols = ["clientid", "username", "peerhost", "node", "ts"]
    msg_cols = ["clientid", "username", "peerhost", "node", "topic", "qos", "msgid", "payload",
                "retain", "ts"]
    b = broker_factory(conf=build_conf(store, [
        ("client.connected", 1, raw_insert("connected", client_cols), None),
        ("client.disconnected", 1, raw_insert("disconnected", client_cols), None),
        ("session.subscribed", 1, raw_insert("subscribed", client_cols + ["topic", "qos"]), None),
        ("session.unsubscribed", 1, raw_insert("unsubscribed", client_cols + ["topic"]), None),
        ("message.publish", 1, raw_insert("publish", msg_cols), None),
        ("message.publish", 2, {"sql": [
            "insert into two_a(clientid, topic) values(${clientid}, ${topic})",
            "insert into two_b(payload, qos) values(${payload}, ${qos})"]}, None),
        ("message.delivered", 1, raw_insert("delivered", ["clientid", "topic", "qos", "msgid",
                                                          "payload"]), None),
        ("message.acked", 1, raw_insert("acked", ["clientid", "topic", "msgid"]), None),
    ]), workers=2)
    t0, t1 = drive_every_hook_point(b.port)

    def rows(point):
        return store.query("select * from ev where point = ? order by rowid", point)

    check_hook_rows(rows, t0, t1)

    # both statements of one action ran
    assert store.query("select clientid, topic from two_a order by rowid") == [
        {"clientid": "raw-pub", "topic": "raw/x"}, {"clientid": "raw-pub", "topic": "raw/r"}]
    assert [(as_bytes(r["payload"]), as_int(r["qos"]))
            for r in store.query("select payload, qos from two_b order by rowid")] == \
        [(b"p\x00one", 1), (b"p-two", 2)]


HOSTILE_CIDS = ["o'brien\"x", "'); drop table mqtt_msg; --", "back\\slash%_pct", "ünï-🙂-客户"]
HOSTILE_TOPIC = "q'uo\"te/'); drop table mqtt_msg; --/back\\sl%_/ünï🙂"
HOSTILE_PAYLOAD = b"\x00'); drop table mqtt_msg; --\x00\\%_\"'\xff\xfe" + "ünï".encode()


def test_hostile_values_stored_verbatim(broker_factory, store):
    b = broker_factory(conf=build_conf(store, [
        ("client.connected", 1, "on_client_connected"),
        ("message.publish", 1, "on_message_publish"),
        ("message.publish", 2, "on_message_retain"),
        ("message.publish", 3, store.record("hostile", clientid="${clientid}",
                                            topic="${topic}", payload="${payload}")),
        ("session.subscribed", 1, "on_message_fetch"),
        ("message.acked", 1, "on_message_acked"),
    ]), workers=2)
    for i, cid in enumerate(HOSTILE_CIDS):
        c = raw_connect(b.port, cid)
        publish_ack(c, HOSTILE_TOPIC, HOSTILE_PAYLOAD, qos=1, retain=(i == 0))
        publish_ack(c, f"plain/{i}", HOSTILE_PAYLOAD + bytes([i]), qos=2)
        quit_(c)
    n = 2 * len(HOSTILE_CIDS)
    rows = wait_stored(store, n)
    # four publishers, one after the other
    assert_publish_order(store, [(m["sender"], m["topic"], as_bytes(m["payload"]))
                                 for m in rows], [
        x for i, cid in enumerate(HOSTILE_CIDS)
        for x in ((cid, HOSTILE_TOPIC, HOSTILE_PAYLOAD),
                  (cid, f"plain/{i}", HOSTILE_PAYLOAD + bytes([i])))])
    raw = wait_until(lambda: len(store.records("hostile")) == n and store.records("hostile"),
                     what="raw rows")
    assert_publish_order(store, [(r["clientid"], r["topic"], as_bytes(r["payload"]))
                                 for r in raw],
                         [(m["sender"], m["topic"], as_bytes(m["payload"])) for m in rows])
    assert sorted(c["clientid"] for c in wait_until(
        lambda: len(store.clients()) == len(HOSTILE_CIDS) and store.clients(),
        what="client rows")) == sorted(HOSTILE_CIDS)
    ret = wait_until(lambda: store.retained(), what="retained row")
    assert [(r["topic"], r["sender"], as_bytes(r["payload"])) for r in ret] == \
        [(HOSTILE_TOPIC, HOSTILE_CIDS[0], HOSTILE_PAYLOAD)]
    # mqtt_msg is still there and intact
    assert len(store.messages()) == n

    # fetch and read positions with such a client id and filter
    flt = HOSTILE_TOPIC.rsplit("/", 1)[0] + "/+"
    s = raw_connect(b.port, HOSTILE_CIDS[1])
    assert sub_ack(s, [(flt, 1)]) == [1]
    got = recv_publishes(s, len(HOSTILE_CIDS), timeout=WAIT) + drain_publishes(s, quiet=0.3)
    assert [(p.topic, p.payload) for p in got] == [(HOSTILE_TOPIC, HOSTILE_PAYLOAD)] * 4
    last = [m["msgid"] for m in store.messages() if m["topic"] == HOSTILE_TOPIC][-1]
    wait_until(lambda: store.positions(HOSTILE_CIDS[1]) == {flt: last}, what="position")
    quit_(s)


def test_fetch_filters_with_sql_special_characters(broker_factory, store):
    """A wildcard filter is narrowed in the database by its literal prefix:
    %, _, quotes and backslashes in it are data, not patterns."""
    b = broker_factory(conf=build_conf(store, FETCH_RULES), workers=2)
    pub = raw_connect(b.port, "sp-pub")
    msgs = [("pc%/a", b"1"), ("pcX/a", b"no-pct"), ("pc%/b/c", b"2"), ("u_/a", b"3"),
            ("uX/a", b"no-us"), ("q'\\/a", b"4"), ("q'/a", b"no-q"), ("ü🙂/a", b"5"),
            ("ü/a", b"no-u")]
    for t, p in msgs:
        publish_ack(pub, t, p, qos=1)
    wait_stored(store, len(msgs))
    for i, (flt, want) in enumerate([("pc%/#", [b"1", b"2"]), ("u_/+", [b"3"]),
                                     ("q'\\/#", [b"4"]), ("ü🙂/+", [b"5"])]):
        s = raw_connect(b.port, f"sp-sub-{i}")
        assert sub_ack(s, [(flt, 1)]) == [1]
        got = recv_publishes(s, len(want), timeout=WAIT)
        assert payloads(got) == want, flt
        extra = drain_publishes(s, quiet=0.3)
        assert not extra, f"{flt}: also fetched {payloads(extra)}"
        quit_(s)
    quit_(pub)


def test_fetch_and_retain_lookup_filters_with_glob_characters(broker_factory, store):
    """*, ?, [...] and backslashes in a filter's literal part are data, not
    patterns (for stores that look keys up by glob pattern, e.g. Redis's
    MATCH), for on_message_fetch and for on_retain_lookup alike."""
    msgs = [("st*r/a", b"1"), ("stXr/a", b"no-star"), ("stXYr/a", b"no-star2"),
            ("q?/a", b"2"), ("qX/a", b"no-q"), ("b[ac]/a", b"3"), ("ba/a", b"no-br"),
            ("b[ac]x/a", b"no-br2"), ("bs\\/a", b"4"), ("bs/a", b"no-bs")]
    cases = [("st*r/#", [b"1"]), ("q?/+", [b"2"]), ("b[ac]/#", [b"3"]), ("bs\\/+", [b"4"])]
    b = broker_factory(conf=build_conf(store, FETCH_RULES), workers=2)
    pub = raw_connect(b.port, "gl-pub")
    for t, p in msgs:
        publish_ack(pub, t, p, qos=1)
    wait_stored(store, len(msgs))
    for i, (flt, want) in enumerate(cases):
        s = raw_connect(b.port, f"gl-sub-{i}")
        assert sub_ack(s, [(flt, 1)]) == [1]
        got = recv_publishes(s, len(want), timeout=WAIT)
        assert payloads(got) == want, flt
        extra = drain_publishes(s, quiet=0.3)
        assert not extra, f"{flt}: also fetched {payloads(extra)}"
        quit_(s)
    quit_(pub)
    assert b.stop() == 0

    # retained messages the broker does not hold: the lookup alone
    for t, p in msgs:
        store.put_retained(t, b"r-" + p, qos=1)
    b = broker_factory(conf=build_conf(store, [
        ("session.subscribed", 1, "on_retain_lookup"),
    ]), workers=2)
    for i, (flt, want) in enumerate(cases):
        s = raw_connect(b.port, f"gl-ret-{i}")
        assert sub_ack(s, [(flt, 1)]) == [1]
        got = recv_publishes(s, len(want), timeout=WAIT) + drain_publishes(s, quiet=0.3)
        assert [(p.payload, p.retain) for p in got] == [(b"r-" + w, True) for w in want], \
            f"{flt}: {[(p.topic, p.payload) for p in got]}"
        quit_(s)


# ---------------------------------------------------------------- 11. restart

def test_restart_keeps_rows_and_read_positions(broker_factory, store):
    conf = build_conf(store, FETCH_RULES + [
        ("client.connected", 1, "on_client_connected"),
        ("client.disconnected", 1, "on_client_disconnected"),
        ("message.publish", 2, "on_message_retain"),
    ])
    b = broker_factory(conf=conf, workers=2)
    pub = raw_connect(b.port, "rs-pub")
    publish_many(pub, "rs/t", [b"m1", b"m2", b"m3"], qos=1)
    publish_ack(pub, "rs/ret", b"kept", qos=1, retain=True)
    s = raw_connect(b.port, "rs-sub")
    assert sub_ack(s, [("rs/t", 1)]) == [1]
    assert payloads(recv_publishes(s, 3, timeout=WAIT)) == [b"m1", b"m2", b"m3"]
    m3 = msgid_of(store, b"m3")
    wait_until(lambda: store.positions("rs-sub") == {"rs/t": m3}, what="position m3")
    quit_(s)
    publish_many(pub, "rs/t", [b"m4", b"m5"], qos=1)
    quit_(pub)
    wait_stored(store, 6)
    wait_until(lambda: len(store.clients()) == 2 and
               all(as_text(c["state"]) == "0" for c in store.clients()),
               what="both clients offline")
    assert b.stop() == 0, b.log()[-2000:]

    before = store.messages()
    b2 = broker_factory(conf=conf, workers=2)
    assert store.messages() == before
    assert [r["topic"] for r in store.retained()] == ["rs/ret"]
    assert store.positions("rs-sub") == {"rs/t": m3}

    s = raw_connect(b2.port, "rs-sub")
    assert sub_ack(s, [("rs/t", 1)]) == [1]
    assert payloads(recv_publishes(s, 2, timeout=WAIT)) == [b"m4", b"m5"]
    assert no_publish(s, 0.3)
    m5 = msgid_of(store, b"m5")
    wait_until(lambda: store.positions("rs-sub") == {"rs/t": m5}, what="position m5")
    # ids minted after the restart still sort after the old ones
    pub = raw_connect(b2.port, "rs-pub")
    publish_ack(pub, "rs/t", b"m6", qos=1)
    assert payloads(recv_publishes(s, 1, timeout=WAIT)) == [b"m6"]
    wait_stored(store, 7)
    assert msgid_of(store, b"m6") > m5
    quit_(s)
    quit_(pub)


# ---------------------------------------------------------------- 12. rule topic filters

def test_rule_topic_filter_limits_the_rule(broker_factory, store):
    b = broker_factory(conf=build_conf(store, [
        ("message.publish", 1, "on_message_publish", "sensors/#"),
        ("session.subscribed", 1, store.record("subs_x", topic="${topic}"), "x/#"),
    ]), workers=2)
    pub = raw_connect(b.port, "tf-pub")
    for t in ["sensors/a", "other/a", "sensors/b/c", "sensorsX/a", "sensors", "a/sensors/b",
              "sensors/zz-last"]:
        publish_ack(pub, t, t.encode(), qos=1)
    wait_until(lambda: any(m["topic"] == "sensors/zz-last" for m in store.messages()),
               what="last message")
    assert [m["topic"] for m in store.messages()] == [
        "sensors/a", "sensors/b/c", "sensors", "sensors/zz-last"]

    s = raw_connect(b.port, "tf-sub")
    assert sub_ack(s, [("y/1", 0), ("x/1", 0), ("x/+", 0), ("xx/1", 0), ("x/zz-last", 0)]) == \
        [0, 0, 0, 0, 0]
    wait_until(lambda: any(r["topic"] == "x/zz-last" for r in store.records("subs_x")),
               what="last subscription")
    assert [r["topic"] for r in store.records("subs_x")] == ["x/1", "x/+", "x/zz-last"]
    quit_(s)
    quit_(pub)


# ---------------------------------------------------------------- 13. metrics

def test_metrics_published_and_consistent(broker_factory, store):
    b = broker_factory(conf=build_conf(store, [
        ("message.publish", 1, "on_message_publish"),
        ("message.publish", 2, store.failing_action()),
        ("client.connected", 1, "on_client_connected"),
    ], extra="broker.sys_interval = 1s\n"), workers=2)
    pub = raw_connect(b.port, "met-pub")
    publish_many(pub, "met/t", [b"x"] * 5, qos=1)
    publish_many(pub, "met/t", [b"y"] * 3, qos=0)
    publish_many(pub, "met/t", [b"z"] * 2, qos=2)
    wait_stored(store, 7)

    topic = f"$SYS/brokers/{DEFAULT_NODE}/backends/metrics"
    watch = raw_connect(b.port, "met-watch")
    assert sub_ack(watch, [(topic, 0)]) == [0]
    deadline = time.time() + WAIT
    last = None
    while time.time() < deadline:
        try:
            p = recv_publishes(watch, 1, timeout=max(0.1, deadline - time.time()))[0]
        except TimeoutError:
            break
        assert p.topic == topic
        last = json.loads(p.payload)
        rules = {r["rule"]: r for r in last[store.name]["rules"]}
        pubr = rules.get(f"backend.{store.name}.hook.message.publish.1")
        raw = rules.get(f"backend.{store.name}.hook.message.publish.2")
        con = rules.get(f"backend.{store.name}.hook.client.connected.1")
        if (pubr and pubr["success"] == 7 and raw and raw["failed"] + raw["success"] == 10
                and con and con["success"] >= 2):
            break
    assert last is not None, "no metrics message"
    be = last[store.name]
    rules = {r["rule"]: r for r in be["rules"]}
    pubr = rules[f"backend.{store.name}.hook.message.publish.1"]
    raw = rules[f"backend.{store.name}.hook.message.publish.2"]
    con = rules[f"backend.{store.name}.hook.client.connected.1"]
    assert pubr["action"] == store.fn("on_message_publish")
    assert pubr["pool"] == "pool1"
    # QoS 0 messages are not matched by on_message_publish
    assert (pubr["matched"], pubr["success"], pubr["failed"]) == (7, 7, 0), pubr
    assert raw["matched"] == 10 and raw["failed"] == 10 and raw["success"] == 0, raw
    assert con["matched"] == con["success"] >= 2, con
    for r in be["rules"]:
        assert r["matched"] == (r["success"] + r["failed"] + r["inflight"] + r["queuing"]
                                + r["dropped"]), r
    assert "pool1" in be["pools"]
    quit_(watch)
    quit_(pub)
