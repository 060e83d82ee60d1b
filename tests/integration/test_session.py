"""Sessions: clean start, persistent sessions and their offline queue,
redelivery of in-flight messages, queue limits and drop policies, session
expiry (MQTT 5 and the broker-wide MQTT 3 expiry), ordering, and resuming a
session from connections accepted by any I/O worker."""
import time

import pytest

import mqttraw as R
from clients import Client
from mqttraw import DISCONNECT, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, SUBACK


# ---------------------------------------------------------------- helpers

def sconnect(port, cid, version, clean=False, expiry=60, **kw):
    """Connects a raw client; persistent unless clean (v5: with a session
    expiry). Returns (Raw, CONNACK)."""
    r = R.Raw(port, version=version)
    if version == 5:
        props = R.props(session_expiry=expiry) if expiry is not None else None
        ack = r.connect(cid, clean=clean, properties=props, **kw)
    else:
        ack = r.connect(cid, clean=clean, **kw)
    assert ack.rc == 0, ack
    return r, ack


def subscribe(r, filters, version, pid=1):
    r.send(R.subscribe(pid, filters, version=version))
    ack = r.expect(SUBACK)
    assert all(rc < 0x80 for rc in ack.rcs), ack
    return ack


def leave(r, version):
    """A normal DISCONNECT (the session stays when it is persistent)."""
    r.send(R.disconnect(version))
    assert r.closed()


def publisher(port, cid="pub"):
    return R.raw_connect(port, cid, version=5)


def pub(p, topic, payload, qos=1, pid=1, retain=False):
    """Publishes from a raw v5 client and completes the QoS flow."""
    p.send(R.publish(topic, payload, qos=qos, pid=pid, retain=retain, version=5))
    if qos == 1:
        a = p.expect(PUBACK)
        assert a.rc == 0, a
    elif qos == 2:
        a = p.expect(PUBREC)
        assert a.rc == 0, a
        p.send(R.ack(PUBREL, pid, version=5))
        p.expect(PUBCOMP)


def pub_pipelined(p, topic, payloads_qos, first_pid=1, batch=30):
    """Sends many PUBLISHes from a raw v5 client, `batch` at a time without
    waiting between them (within the broker's Receive Maximum), completing
    each batch's QoS flows."""
    items = list(payloads_qos)
    for start in range(0, len(items), batch):
        data = bytearray()
        want = set()
        for k, (payload, qos) in enumerate(items[start:start + batch]):
            pid = first_pid + start + k
            data += R.publish(topic, payload, qos=qos, pid=pid, version=5)
            if qos:
                want.add(pid)
        p.send(bytes(data))
        while want:
            a = p.recv()
            assert a.rc == 0, a
            if a.type == PUBREC:
                p.send(R.ack(PUBREL, a.pid, version=5))
            elif a.type in (PUBACK, PUBCOMP):
                want.discard(a.pid)


def recv_publish(r, timeout=5.0):
    return r.expect(PUBLISH, timeout)


def ack_publish(r, m, version):
    if m.qos == 1:
        r.send(R.ack(PUBACK, m.pid, version=version))
    elif m.qos == 2:
        r.send(R.ack(PUBREC, m.pid, version=version))
        rel = r.expect(PUBREL)
        assert rel.pid == m.pid
        r.send(R.ack(PUBCOMP, m.pid, version=version))


def no_packet(r, timeout=0.5):
    try:
        p = r.recv(timeout)
    except TimeoutError:
        return True
    raise AssertionError(f"unexpected packet {p!r}")


# ---------------------------------------------------------------- clean start

@pytest.mark.parametrize("version", [3, 4, 5])
def test_clean_start_discards_session(broker, version):
    cid = f"clean-{version}"
    r, ack = sconnect(broker.port, cid, version)
    assert ack.session_present is False
    subscribe(r, [("clean/t", 1)], version)
    leave(r, version)
    p = publisher(broker.port)
    pub(p, "clean/t", b"while-away")
    # reconnect with a clean start: no session, no queued message, no subscription
    r, ack = sconnect(broker.port, cid, version, clean=True, expiry=0)
    assert ack.session_present is False
    no_packet(r, 0.3)
    pub(p, "clean/t", b"after", pid=2)
    no_packet(r)
    # and a clean session is not kept either
    leave(r, version)
    r, ack = sconnect(broker.port, cid, version)
    assert ack.session_present is False


# ---------------------------------------------------------------- persistent sessions

@pytest.mark.parametrize("version", [3, 4, 5])
def test_persistent_session_keeps_subscriptions_and_queues(broker, version):
    cid = f"persist-{version}"
    r, ack = sconnect(broker.port, cid, version)
    subscribe(r, [("p/0", 0), ("p/1", 1), ("p/2", 2)], version)
    leave(r, version)
    p = publisher(broker.port)
    pub(p, "p/1", b"one", qos=1, pid=1)
    pub(p, "p/0", b"zero", qos=0)
    pub(p, "p/2", b"two", qos=2, pid=2)
    pub(p, "p/1", b"one-b", qos=1, pid=3)
    r, ack = sconnect(broker.port, cid, version)
    # MQTT 3.1 has no session present flag (its CONNACK byte is unused)
    assert ack.session_present is (version != 3)
    got = [(m.topic, m.payload, m.qos, m.dup) for m in R.recv_publishes(r, 4)]
    assert got == [("p/1", b"one", 1, False), ("p/0", b"zero", 0, False),
                   ("p/2", b"two", 2, False), ("p/1", b"one-b", 1, False)]
    R.no_publish(r, 0.3)
    # the subscriptions are still there
    pub(p, "p/2", b"live", qos=2, pid=4)
    m = R.recv_publishes(r, 1)[0]
    assert (m.topic, m.payload, m.qos) == ("p/2", b"live", 2)


@pytest.mark.parametrize("version", [4, 5])
def test_offline_qos0_not_queued_when_disabled(broker_factory, version):
    b = broker_factory("mqtt.mqueue_store_qos0 = false", workers=2)
    cid = f"noq0-{version}"
    r, _ = sconnect(b.port, cid, version)
    subscribe(r, [("q0/#", 1)], version)
    leave(r, version)
    # a publisher owned by the subscriber's worker: its messages are routed
    # to the session before the PUBLISH is acknowledged (from another worker
    # they could still be on their way when the subscriber reconnects)
    p = publisher(b.port, R.client_id_on_worker("noq0-pub", R.owner_worker(cid, 2), 2))
    pub(p, "q0/a", b"qos0-dropped", qos=0)
    pub(p, "q0/b", b"qos1-kept", qos=1, pid=1)
    r, ack = sconnect(b.port, cid, version)
    assert ack.session_present is True
    m = recv_publish(r)
    assert (m.topic, m.payload) == ("q0/b", b"qos1-kept")
    ack_publish(r, m, version)
    no_packet(r)
    # online, QoS 0 is delivered as usual
    pub(p, "q0/c", b"online", qos=0)
    m = recv_publish(r)
    assert (m.payload, m.qos) == (b"online", 0)


@pytest.mark.parametrize("version", [4, 5])
@pytest.mark.parametrize("abrupt", [False, True])
def test_inflight_qos1_redelivered_with_dup_before_queued(broker, version, abrupt):
    cid = f"inflight1-{version}-{abrupt}"
    r, _ = sconnect(broker.port, cid, version)
    subscribe(r, [("inf/#", 1)], version)
    p = publisher(broker.port)
    for i in range(3):
        pub(p, f"inf/{i}", f"m{i}".encode(), qos=1, pid=i + 1)
    first = [recv_publish(r) for _ in range(3)]
    assert [m.payload for m in first] == [b"m0", b"m1", b"m2"]
    assert not any(m.dup for m in first)
    # acknowledge only the middle one
    r.send(R.ack(PUBACK, first[1].pid, version=version))
    if abrupt:
        # a PINGREQ answered proves the PUBACK was handled; then wait until
        # the broker has seen the socket go (later messages must queue)
        events = R.ClientEvents(broker.port)
        r.send(R.PINGREQ_BYTES)
        r.expect(R.PINGRESP)
        r.close()
        events.wait(cid)
    else:
        leave(r, version)
    for i in range(3, 5):
        pub(p, f"inf/{i}", f"m{i}".encode(), qos=1, pid=i + 1)
    r, ack = sconnect(broker.port, cid, version)
    assert ack.session_present is True
    again = [recv_publish(r) for _ in range(4)]
    # unacknowledged ones first, with DUP and their original packet ids
    assert [(m.payload, m.dup) for m in again] == [
        (b"m0", True), (b"m2", True), (b"m3", False), (b"m4", False)]
    assert again[0].pid == first[0].pid and again[1].pid == first[2].pid
    for m in again:
        ack_publish(r, m, version)
    no_packet(r)


@pytest.mark.parametrize("version", [4, 5])
def test_inflight_resent_after_takeover(broker, version):
    """A new connection takes the session over while the old one still has
    unacknowledged messages: they go to the new connection with DUP."""
    cid = f"inflight-tk-{version}"
    old, _ = sconnect(broker.port, cid, version)
    subscribe(old, [("itk/#", 2)], version)
    p = publisher(broker.port)
    pub(p, "itk/1", b"one", qos=1, pid=1)
    pub(p, "itk/2", b"two", qos=2, pid=2)
    m1, m2 = recv_publish(old), recv_publish(old)
    assert (m1.payload, m2.payload) == (b"one", b"two")
    new, ack = sconnect(broker.port, cid, version)
    assert ack.session_present is True
    assert old.closed()
    again = [recv_publish(new), recv_publish(new)]
    assert [(m.payload, m.dup, m.pid) for m in again] == [
        (b"one", True, m1.pid), (b"two", True, m2.pid)]
    for m in again:
        ack_publish(new, m, version)
    no_packet(new)


@pytest.mark.parametrize("version", [4, 5])
def test_inflight_qos2_pubrel_and_publish_resent(broker, version):
    cid = f"inflight2-{version}"
    r, _ = sconnect(broker.port, cid, version)
    subscribe(r, [("inf2/#", 2)], version)
    p = publisher(broker.port)
    pub(p, "inf2/a", b"A", qos=2, pid=1)
    pub(p, "inf2/b", b"B", qos=2, pid=2)
    a = recv_publish(r)
    bb = recv_publish(r)
    assert (a.payload, bb.payload) == (b"A", b"B")
    # A: PUBREC sent, PUBREL received, PUBCOMP withheld. B: nothing sent.
    r.send(R.ack(PUBREC, a.pid, version=version))
    rel = r.expect(PUBREL)
    assert rel.pid == a.pid
    r.close()
    r, ack = sconnect(broker.port, cid, version)
    assert ack.session_present is True
    first = r.recv()
    assert first.type == PUBREL and first.pid == a.pid, first
    second = recv_publish(r)
    assert (second.payload, second.dup, second.pid) == (b"B", True, bb.pid)
    r.send(R.ack(PUBCOMP, a.pid, version=version))
    ack_publish(r, second, version)
    # exactly once: A is never sent again
    no_packet(r)
    # and the session carries on normally
    pub(p, "inf2/c", b"C", qos=2, pid=3)
    m = recv_publish(r)
    assert (m.payload, m.dup) == (b"C", False)
    ack_publish(r, m, version)


@pytest.mark.parametrize("version", [4, 5])
def test_queued_beyond_inflight_window_after_reconnect(broker_factory, version):
    """With max_inflight 2, the rest waits in the queue; after reconnect the
    window refills in order as acks arrive."""
    b = broker_factory("mqtt.max_inflight = 2", workers=2)
    cid = f"window-{version}"
    r, _ = sconnect(b.port, cid, version)
    subscribe(r, [("w/#", 1)], version)
    leave(r, version)
    p = publisher(b.port)
    for i in range(6):
        pub(p, "w/t", f"{i}".encode(), qos=1, pid=i + 1)
    r, ack = sconnect(b.port, cid, version)
    assert ack.session_present
    got = []
    m1, m2 = recv_publish(r), recv_publish(r)
    no_packet(r, 0.3)  # the window is full
    pending = [m1, m2]
    while pending:
        m = pending.pop(0)
        got.append(m.payload)
        r.send(R.ack(PUBACK, m.pid, version=version))
        if len(got) + len(pending) < 6:
            pending.append(recv_publish(r))
    assert got == [f"{i}".encode() for i in range(6)]


@pytest.mark.parametrize("version", [4, 5])
def test_incoming_qos2_state_survives_reconnect(broker, version):
    """A QoS 2 PUBLISH acknowledged with PUBREC, then the client goes before
    PUBREL: resending it (DUP) on the resumed session is not a new message;
    the PUBREL then completes the exchange."""
    cid = f"in-qos2-{version}"
    sub = R.raw_connect(broker.port, f"in-qos2-sub-{version}", version=4)
    subscribe(sub, [("inq2/#", 1)], 4)
    r, _ = sconnect(broker.port, cid, version)
    r.send(R.publish("inq2/t", b"once", qos=2, pid=11, version=version))
    assert r.expect(PUBREC).pid == 11
    r.close()
    m = recv_publish(sub)
    assert m.payload == b"once"
    ack_publish(sub, m, 4)
    r, ack = sconnect(broker.port, cid, version)
    assert ack.session_present
    r.send(R.publish("inq2/t", b"once", qos=2, pid=11, dup=True, version=version))
    assert r.expect(PUBREC).pid == 11
    r.send(R.ack(PUBREL, 11, version=version))
    assert r.expect(PUBCOMP).pid == 11
    no_packet(sub)  # delivered exactly once
    # the id is free again: a new message with it is a new message
    r.send(R.publish("inq2/t", b"again", qos=2, pid=11, version=version))
    assert r.expect(PUBREC).pid == 11
    r.send(R.ack(PUBREL, 11, version=version))
    r.expect(PUBCOMP)
    assert recv_publish(sub).payload == b"again"


# ---------------------------------------------------------------- queue limits

def sys_dropped_value(sysc, timeout=5.0):
    m = sysc.recv(timeout)
    return int(m.payload)


@pytest.mark.parametrize("policy,survivors", [
    ("drop_oldest", [3, 4, 5, 6, 7]),
    ("drop_newest", [0, 1, 2, 3, 4]),
])
def test_mqueue_limit_and_drop_policy(broker_factory, policy, survivors):
    b = broker_factory(f"mqtt.max_mqueue_len = 5\nmqtt.mqueue_drop = {policy}\n"
                       "broker.sys_interval = 1s", workers=2)
    watch = Client(b.port, "sys-watch", version=4)
    watch.subscribe("$SYS/brokers/+/metrics/messages/dropped", qos=0)
    # the retained value (if published yet) is the starting point
    try:
        before = int(watch.recv(1.5).payload)
    except TimeoutError:
        before = 0
    cid = f"mq-{policy}"
    r, _ = sconnect(b.port, cid, 4)
    subscribe(r, [("mq/#", 1)], 4)
    leave(r, 4)
    p = publisher(b.port)
    for i in range(8):
        pub(p, "mq/t", f"{i}".encode(), qos=1, pid=i + 1)
    # the drops show in $SYS within a couple of publication intervals
    seen = []

    def dropped_enough():
        try:
            v = int(watch.recv(0.5).payload)
        except TimeoutError:
            return False
        seen.append(v)
        return v >= before + 3

    R.wait_until(dropped_enough, timeout=5.0, what=f"dropped >= {before + 3} (saw {seen})")
    r, ack = sconnect(b.port, cid, 4)
    assert ack.session_present
    got = []
    for _ in range(5):
        m = recv_publish(r)
        got.append(int(m.payload))
        ack_publish(r, m, 4)
    assert got == survivors
    no_packet(r)
    watch.disconnect()


# ---------------------------------------------------------------- MQTT 5 session expiry

def test_session_expiry_zero_ends_at_disconnect(broker):
    r, _ = sconnect(broker.port, "exp0", 5, expiry=0)
    subscribe(r, [("exp0/t", 1)], 5)
    leave(r, 5)
    p = publisher(broker.port)
    pub(p, "exp0/t", b"x")
    r, ack = sconnect(broker.port, "exp0", 5, expiry=60)
    assert ack.session_present is False
    no_packet(r, 0.3)
    pub(p, "exp0/t", b"y", pid=2)
    no_packet(r)


def test_session_expiry_absent_means_zero(broker):
    r, _ = sconnect(broker.port, "exp-absent", 5, expiry=None)
    subscribe(r, [("expa/t", 1)], 5)
    r.close()  # even an abrupt end does not keep it
    r, ack = sconnect(broker.port, "exp-absent", 5, expiry=60)
    assert ack.session_present is False


def test_session_expiry_interval_elapses(broker):
    r, _ = sconnect(broker.port, "exp1", 5, expiry=1)
    subscribe(r, [("exp1/t", 1)], 5)
    r.close()
    p = publisher(broker.port)
    pub(p, "exp1/t", b"queued")
    # within the interval the session is there, with its queued message
    time.sleep(0.4)
    r, ack = sconnect(broker.port, "exp1", 5, expiry=1)
    assert ack.session_present is True
    m = recv_publish(r)
    assert m.payload == b"queued"
    ack_publish(r, m, 5)
    leave(r, 5)
    pub(p, "exp1/t", b"lost", pid=2)
    time.sleep(1.5)  # the expiry interval is the feature under test
    r, ack = sconnect(broker.port, "exp1", 5, expiry=60)
    assert ack.session_present is False
    no_packet(r, 0.3)
    pub(p, "exp1/t", b"after", pid=3)
    no_packet(r)


def test_session_expiry_capped_by_broker(broker_factory):
    b = broker_factory("mqtt.session_expiry_interval = 1s", workers=2)
    r, ack = sconnect(b.port, "capped", 5, expiry=3600)
    assert ack.props["session_expiry"] == 1
    subscribe(r, [("cap/t", 1)], 5)
    leave(r, 5)
    time.sleep(1.5)  # the capped interval is the feature under test
    r, ack = sconnect(b.port, "capped", 5, expiry=3600)
    assert ack.session_present is False


def test_disconnect_raising_expiry_from_zero_is_protocol_error(broker):
    r, _ = sconnect(broker.port, "raise0", 5, expiry=0)
    subscribe(r, [("raise/t", 1)], 5)
    r.send(R.disconnect(5, rc=0, properties=R.props(session_expiry=60)))
    d = r.expect(DISCONNECT)
    assert d.rc == 0x82
    assert r.closed()
    r, ack = sconnect(broker.port, "raise0", 5, expiry=60)
    assert ack.session_present is False


def test_disconnect_setting_expiry_to_zero_ends_session(broker):
    r, _ = sconnect(broker.port, "lower0", 5, expiry=60)
    subscribe(r, [("lower/t", 1)], 5)
    r.send(R.disconnect(5, rc=0, properties=R.props(session_expiry=0)))
    assert r.closed()
    r, ack = sconnect(broker.port, "lower0", 5, expiry=60)
    assert ack.session_present is False


def test_disconnect_extending_expiry(broker):
    r, _ = sconnect(broker.port, "extend", 5, expiry=1)
    subscribe(r, [("ext/t", 1)], 5)
    r.send(R.disconnect(5, rc=0, properties=R.props(session_expiry=60)))
    assert r.closed()
    time.sleep(1.5)  # past the interval given at CONNECT
    r, ack = sconnect(broker.port, "extend", 5, expiry=60)
    assert ack.session_present is True


def test_v3_persistent_session_expires(broker_factory):
    b = broker_factory("mqtt.session_expiry_interval = 1s", workers=2)
    p = publisher(b.port)
    for version in (3, 4):
        cid = f"v3exp-{version}"
        r, _ = sconnect(b.port, cid, version)
        subscribe(r, [(f"v3exp/{version}", 1)], version)
        leave(r, version)
        pub(p, f"v3exp/{version}", b"kept")
        r, ack = sconnect(b.port, cid, version)
        assert ack.session_present is (version == 4)  # 3.1 has no such flag
        m = recv_publish(r)
        assert m.payload == b"kept"
        ack_publish(r, m, version)
        leave(r, version)
        pub(p, f"v3exp/{version}", b"lost")
    time.sleep(1.5)  # the configured expiry is the feature under test
    for version in (3, 4):
        r, ack = sconnect(b.port, f"v3exp-{version}", version)
        assert ack.session_present is False
        no_packet(r, 0.3)
        pub(p, f"v3exp/{version}", b"unsubscribed")
        no_packet(r, 0.3)


# ---------------------------------------------------------------- ordering

@pytest.mark.parametrize("version", [4, 5])
def test_order_through_persistent_session(broker, version):
    """One publisher's messages of all QoS levels reach a persistent
    subscriber in order: those queued while it was offline, then those
    published after it reconnected but before it read anything (they queue
    behind the in-flight window)."""
    cid = f"order-{version}"
    r, _ = sconnect(broker.port, cid, version)
    subscribe(r, [("ord/#", 2)], version)
    leave(r, version)
    p = publisher(broker.port, f"order-pub-{version}")
    n = 200
    pub_pipelined(p, "ord/t", [(f"{i}".encode(), i % 3) for i in range(n)])
    r, ack = sconnect(broker.port, cid, version)
    assert ack.session_present
    pub_pipelined(p, "ord/t", [(f"{i}".encode(), i % 3) for i in range(n, 2 * n)],
                  first_pid=n + 1)
    got = R.recv_publishes(r, 2 * n, timeout=20)
    assert [int(m.payload) for m in got] == list(range(2 * n))
    assert [m.qos for m in got] == [i % 3 for i in range(2 * n)]
    R.no_publish(r, 0.3)


# ---------------------------------------------------------------- workers

@pytest.mark.parametrize("workers", [2, 3, 4])
def test_session_resumed_from_any_worker(broker_factory, workers):
    b = broker_factory(workers=workers)
    ids = [c for per in R.ids_per_worker(f"resume{workers}", workers, 2) for c in per]
    p = publisher(b.port, "resume-pub")
    for i, cid in enumerate(ids):
        v = 5 if i % 2 else 4
        r, ack = sconnect(b.port, cid, v)
        assert ack.session_present is False
        subscribe(r, [(f"res/{cid}", 1)], v)
        r.close()
    pid = 1
    # several rounds: the kernel spreads the new connections over the
    # workers, so most resumptions arrive on a worker that is not the owner
    for rnd in range(3):
        for cid in ids:
            pub(p, f"res/{cid}", f"{cid}:{rnd}".encode(), pid=pid)
            pid += 1
        for i, cid in enumerate(ids):
            v = 5 if i % 2 else 4
            r, ack = sconnect(b.port, cid, v)
            assert ack.session_present is True, (cid, rnd)
            m = recv_publish(r)
            assert m.payload == f"{cid}:{rnd}".encode()
            ack_publish(r, m, v)
            no_packet(r, 0.05)
            r.close()
