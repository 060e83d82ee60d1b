"""QoS 0/1/2 in both directions, checked packet by packet with the raw client:
packet ids of every acknowledgement, the QoS a subscriber receives, exactly
once for incoming QoS 2, the outgoing in-flight window (mqtt.max_inflight and
the MQTT 5 Receive Maximum), the incoming QoS 2 limit, per-publisher ordering
(also across I/O workers) and packet id allocation."""
import struct
import threading
import time

import pytest

import mqttraw as R

V = [4, 5]
V_ALL = [3, 4, 5]  # MQTT 3.1, 3.1.1 and 5.0


def vid(v):
    return f"v{v}"


def connect(port, cid, version, **kw):
    return R.raw_connect(port, cid, version=version, **kw)


def subscribe(r, filters, pid=1, properties=None):
    """filters: [(filter, options)]; returns the SUBACK codes."""
    return R.sub_ack(r, filters, pid=pid, properties=properties)


def expect_publish(r, timeout=None):
    return r.expect(R.PUBLISH, timeout)


def ack_of(r, ptype, pid):
    return R.ack(ptype, pid, version=r.version)


def check_ack(p, ptype, pid, version, rc=0):
    assert p.type == ptype, p
    assert p.pid == pid, f"ack for packet id {p.pid}, expected {pid}"
    assert p.rc == rc, f"reason {p.rc:#x}, expected {rc:#x}"
    if version != 5:
        assert len(p.body) == 2, f"MQTT 3 ack must be 2 bytes: {p.body!r}"
    if ptype == R.PUBREL:
        assert p.flags == 2
    else:
        assert p.flags == 0


class AutoSub(threading.Thread):
    """Reads a raw connection on a thread, acknowledging every QoS 1/2
    PUBLISH and PUBREL as a client must, and collects the PUBLISH packets."""

    def __init__(self, r):
        super().__init__(daemon=True)
        self.r = r
        self.got = []
        self.cond = threading.Condition()
        self.stop = False
        self.error = None
        self.start()

    def run(self):
        try:
            while not self.stop:
                try:
                    p = self.r.recv(0.1)
                except TimeoutError:
                    continue
                if p.type == R.PUBLISH:
                    if p.qos == 1:
                        self.r.send(ack_of(self.r, R.PUBACK, p.pid))
                    elif p.qos == 2:
                        self.r.send(ack_of(self.r, R.PUBREC, p.pid))
                    with self.cond:
                        self.got.append(p)
                        self.cond.notify_all()
                elif p.type == R.PUBREL:
                    self.r.send(ack_of(self.r, R.PUBCOMP, p.pid))
        except Exception as e:  # reported by wait()
            self.error = e
            with self.cond:
                self.cond.notify_all()

    def wait(self, n, timeout=10.0):
        end = time.time() + timeout
        with self.cond:
            while len(self.got) < n and self.error is None:
                left = end - time.time()
                if left <= 0:
                    break
                self.cond.wait(left)
            got = list(self.got)
        assert self.error is None, f"subscriber failed: {self.error!r}"
        assert len(got) >= n, f"received {len(got)} of {n} messages"
        return got

    def close(self):
        self.stop = True
        self.join(2)
        self.r.close()


def publish_windowed(r, topic, payloads, qos, window=16):
    """Publishes every payload, keeping at most `window` QoS 1/2 flows open
    (within the broker's Receive Maximum), and completes all of them."""
    open_ids = set()
    next_pid = 0

    def handle(p):
        if p.type == R.PUBACK:
            assert p.rc == 0, p
            open_ids.remove(p.pid)
        elif p.type == R.PUBREC:
            assert p.rc == 0, p
            r.send(ack_of(r, R.PUBREL, p.pid))
        elif p.type == R.PUBCOMP:
            assert p.rc == 0, p
            open_ids.remove(p.pid)
        else:
            raise AssertionError(f"unexpected packet {p!r}")

    for payload in payloads:
        while len(open_ids) >= window:
            handle(r.recv())
        pid = 0
        if qos:
            next_pid = next_pid % 65535 + 1
            pid = next_pid
            open_ids.add(pid)
        r.send(R.publish(topic, payload, qos=qos, pid=pid or 1, version=r.version))
    while open_ids:
        handle(r.recv())


# ---------------------------------------------------------------- flows, one message at a time


@pytest.mark.parametrize("version", V_ALL, ids=vid)
def test_publisher_side_flows(broker, version):
    r = connect(broker.port, f"flows-pub-{version}", version)
    # QoS 0: no answer at all (the next packet is the PINGRESP)
    r.send(R.publish("flows/a", b"q0", qos=0, version=version))
    r.send(R.PINGREQ_BYTES)
    r.expect(R.PINGRESP)
    # QoS 1: PUBACK with the same id
    for pid in (0x1234, 1, 65535):
        r.send(R.publish("flows/a", b"q1", qos=1, pid=pid, version=version))
        check_ack(r.recv(), R.PUBACK, pid, version)
    # QoS 2: PUBREC, PUBREL, PUBCOMP with the same id
    for pid in (0xBEEF, 65535):
        r.send(R.publish("flows/a", b"q2", qos=2, pid=pid, version=version))
        check_ack(r.recv(), R.PUBREC, pid, version)
        r.send(ack_of(r, R.PUBREL, pid))
        check_ack(r.recv(), R.PUBCOMP, pid, version)
    # two QoS 2 flows interleaved
    r.send(R.publish("flows/a", b"x", qos=2, pid=10, version=version))
    r.send(R.publish("flows/a", b"y", qos=2, pid=11, version=version))
    check_ack(r.recv(), R.PUBREC, 10, version)
    check_ack(r.recv(), R.PUBREC, 11, version)
    r.send(ack_of(r, R.PUBREL, 11))
    check_ack(r.recv(), R.PUBCOMP, 11, version)
    r.send(ack_of(r, R.PUBREL, 10))
    check_ack(r.recv(), R.PUBCOMP, 10, version)
    assert r.silent(0.2)
    r.close()


@pytest.mark.parametrize("pub_v,sub_v", [(5, 4), (4, 5), (3, 5), (5, 3)],
                         ids=["v5-to-v4", "v4-to-v5", "v3.1-to-v5", "v5-to-v3.1"])
def test_subscriber_receives_min_of_publish_and_subscription_qos(broker, pub_v, sub_v):
    sub = connect(broker.port, "minqos-sub", sub_v)
    assert subscribe(sub, [("minqos/s0", 0), ("minqos/s1", 1), ("minqos/s2", 2)]) == [0, 1, 2]
    pub = connect(broker.port, "minqos-pub", pub_v)
    seen_pids = set()
    for pq in range(3):
        for sq in range(3):
            payload = f"p{pq}s{sq}".encode()
            R.publish_ack(pub, f"minqos/s{sq}", payload, qos=pq, pid=100 + pq)
            m = expect_publish(sub)
            want = min(pq, sq)
            assert (m.topic, m.payload, m.qos, m.dup, m.retain) == (
                f"minqos/s{sq}", payload, want, False, False)
            if want == 0:
                assert m.pid is None
                continue
            assert 1 <= m.pid <= 65535 and m.pid not in seen_pids
            seen_pids.add(m.pid)
            if want == 1:
                sub.send(ack_of(sub, R.PUBACK, m.pid))
            else:
                sub.send(ack_of(sub, R.PUBREC, m.pid))
                check_ack(sub.recv(), R.PUBREL, m.pid, sub_v)
                sub.send(ack_of(sub, R.PUBCOMP, m.pid))
    # every flow is complete: nothing is resent or left over
    assert sub.silent(0.3)
    sub.close()
    pub.close()


@pytest.mark.parametrize("version", V_ALL, ids=vid)
def test_unacknowledged_resent_with_dup_on_reconnect(broker, version):
    cid = f"resend-{version}"
    kw = {"clean": False}
    if version == 5:
        kw["properties"] = R.props(session_expiry=60)
    sub = connect(broker.port, cid, version, **kw)
    assert subscribe(sub, [("resend/#", 2)]) == [2]
    pub = connect(broker.port, f"resend-pub-{version}", 5)
    R.publish_ack(pub, "resend/a", b"one", qos=1, pid=1)
    R.publish_ack(pub, "resend/b", b"two", qos=2, pid=2)
    R.publish_ack(pub, "resend/c", b"three", qos=2, pid=3)
    a, b, c = expect_publish(sub), expect_publish(sub), expect_publish(sub)
    assert [(x.payload, x.qos, x.dup) for x in (a, b, c)] == [
        (b"one", 1, False), (b"two", 2, False), (b"three", 2, False)]
    assert len({a.pid, b.pid, c.pid}) == 3
    # c gets as far as PUBREL; a and b are never acknowledged
    sub.send(ack_of(sub, R.PUBREC, c.pid))
    check_ack(sub.recv(), R.PUBREL, c.pid, version)
    sub.close()

    sub = R.Raw(broker.port, version=version)
    ack = sub.connect(cid, **kw)
    # MQTT 3.1's CONNACK has no session present flag
    assert ack.rc == 0 and ack.session_present == (version != 3)
    a2, b2 = expect_publish(sub), expect_publish(sub)
    assert (a2.pid, a2.payload, a2.qos, a2.dup) == (a.pid, b"one", 1, True)
    assert (b2.pid, b2.payload, b2.qos, b2.dup) == (b.pid, b"two", 2, True)
    check_ack(sub.recv(), R.PUBREL, c.pid, version)
    sub.send(ack_of(sub, R.PUBACK, a.pid))
    sub.send(ack_of(sub, R.PUBREC, b.pid))
    check_ack(sub.recv(), R.PUBREL, b.pid, version)
    sub.send(ack_of(sub, R.PUBCOMP, b.pid))
    sub.send(ack_of(sub, R.PUBCOMP, c.pid))
    assert sub.silent(0.3)
    sub.close()
    # everything was acknowledged: a third connection gets nothing again
    sub = R.Raw(broker.port, version=version)
    assert sub.connect(cid, **kw).session_present == (version != 3)
    assert sub.silent(0.3)
    sub.close()
    pub.close()


# ---------------------------------------------------------------- exactly once for incoming QoS 2


@pytest.mark.parametrize("version", V_ALL, ids=vid)
def test_incoming_qos2_resend_before_pubrel_is_routed_once(broker, version):
    sub = connect(broker.port, f"eo-sub-{version}", 4)
    assert subscribe(sub, [("eo/#", 2)]) == [2]
    pub = connect(broker.port, f"eo-pub-{version}", version)
    pub.send(R.publish("eo/x", b"exactly-once", qos=2, pid=42, version=version))
    check_ack(pub.recv(), R.PUBREC, 42, version)
    for _ in range(3):  # the publisher did not see PUBREC and resends
        pub.send(R.publish("eo/x", b"exactly-once", qos=2, pid=42, dup=True, version=version))
        check_ack(pub.recv(), R.PUBREC, 42, version)
    got = R.drain_publishes(sub, quiet=0.4)
    assert [(m.topic, m.payload) for m in got] == [("eo/x", b"exactly-once")]
    pub.send(ack_of(pub, R.PUBREL, 42))
    check_ack(pub.recv(), R.PUBCOMP, 42, version)
    # the id is released: the same id now starts a new message
    pub.send(R.publish("eo/x", b"second", qos=2, pid=42, version=version))
    check_ack(pub.recv(), R.PUBREC, 42, version)
    pub.send(ack_of(pub, R.PUBREL, 42))
    check_ack(pub.recv(), R.PUBCOMP, 42, version)
    got = R.recv_publishes(sub, 1)
    assert got[0].payload == b"second"
    assert R.no_publish(sub, 0.3)
    sub.close()
    pub.close()


def test_incoming_dup_flag_not_forwarded(broker):
    sub = connect(broker.port, "dupfwd-sub", 5)
    assert subscribe(sub, [("dupfwd/#", 2)]) == [2]
    pub = connect(broker.port, "dupfwd-pub", 4)
    # a first copy that arrives with DUP set (the client's earlier attempt was lost)
    pub.send(R.publish("dupfwd/1", b"a", qos=1, pid=1, dup=True))
    check_ack(pub.recv(), R.PUBACK, 1, 4)
    pub.send(R.publish("dupfwd/2", b"b", qos=2, pid=2, dup=True))
    check_ack(pub.recv(), R.PUBREC, 2, 4)
    pub.send(ack_of(pub, R.PUBREL, 2))
    check_ack(pub.recv(), R.PUBCOMP, 2, 4)
    got = R.recv_publishes(sub, 2)
    assert [(m.payload, m.qos, m.dup) for m in got] == [(b"a", 1, False), (b"b", 2, False)]
    sub.close()
    pub.close()


@pytest.mark.parametrize("version", V, ids=vid)
def test_incoming_qos2_state_survives_reconnect(broker, version):
    """A publisher with a persistent session loses its connection after
    PUBREC and resends: still one copy. A clean start forgets the id."""
    cid = f"eo-persist-{version}"
    kw = {"clean": False}
    if version == 5:
        kw["properties"] = R.props(session_expiry=60)
    sub = connect(broker.port, f"eo-persist-sub-{version}", 4)
    assert subscribe(sub, [("eop/#", 2)]) == [2]
    pub = connect(broker.port, cid, version, **kw)
    pub.send(R.publish("eop/x", b"once", qos=2, pid=9, version=version))
    check_ack(pub.recv(), R.PUBREC, 9, version)
    pub.close()
    pub = R.Raw(broker.port, version=version)
    assert pub.connect(cid, **kw).session_present
    pub.send(R.publish("eop/x", b"once", qos=2, pid=9, dup=True, version=version))
    check_ack(pub.recv(), R.PUBREC, 9, version)
    pub.send(ack_of(pub, R.PUBREL, 9))
    check_ack(pub.recv(), R.PUBCOMP, 9, version)
    got = R.drain_publishes(sub, quiet=0.4)
    assert [m.payload for m in got] == [b"once"]
    # the same after PUBREC, but the client starts clean: the id is unknown
    pub.send(R.publish("eop/x", b"twice", qos=2, pid=10, version=version))
    check_ack(pub.recv(), R.PUBREC, 10, version)
    pub.close()
    pub = R.Raw(broker.port, version=version)
    assert not pub.connect(cid, clean=True).session_present
    pub.send(ack_of(pub, R.PUBREL, 10))
    check_ack(pub.recv(), R.PUBCOMP, 10, version, rc=0x92 if version == 5 else 0)
    assert [m.payload for m in R.recv_publishes(sub, 1)] == [b"twice"]
    sub.close()
    pub.close()


@pytest.mark.parametrize("version", V_ALL, ids=vid)
def test_pubrel_for_unknown_id_gets_pubcomp(broker, version):
    r = connect(broker.port, f"unknown-rel-{version}", version)
    r.send(ack_of(r, R.PUBREL, 777))
    p = r.recv()
    check_ack(p, R.PUBCOMP, 777, version, rc=0x92 if version == 5 else 0)
    # a PUBREL for an id whose flow already completed is unknown too
    r.send(R.publish("rel/x", b"", qos=2, pid=5, version=version))
    check_ack(r.recv(), R.PUBREC, 5, version)
    r.send(ack_of(r, R.PUBREL, 5))
    check_ack(r.recv(), R.PUBCOMP, 5, version)
    r.send(ack_of(r, R.PUBREL, 5))
    check_ack(r.recv(), R.PUBCOMP, 5, version, rc=0x92 if version == 5 else 0)
    r.send(R.PINGREQ_BYTES)
    r.expect(R.PINGRESP)
    r.close()


@pytest.mark.parametrize("version", V, ids=vid)
def test_unknown_and_mismatched_acks_are_ignored(broker_factory, version):
    b = broker_factory("mqtt.max_inflight = 1", workers=1)
    sub = connect(b.port, f"badack-sub-{version}", version)
    assert subscribe(sub, [("badack/#", 2)]) == [2]
    # acks for ids never sent: PUBACK and PUBCOMP are ignored, PUBREC answered
    sub.send(ack_of(sub, R.PUBACK, 4321))
    sub.send(ack_of(sub, R.PUBCOMP, 4322))
    sub.send(ack_of(sub, R.PUBREC, 4323))
    check_ack(sub.recv(), R.PUBREL, 4323, version, rc=0x92 if version == 5 else 0)
    pub = connect(b.port, f"badack-pub-{version}", 5)
    R.publish_ack(pub, "badack/1", b"first", qos=2, pid=1)
    R.publish_ack(pub, "badack/2", b"second", qos=1, pid=2)
    m = expect_publish(sub)
    assert (m.payload, m.qos) == (b"first", 2)
    # the window (1) is full; a PUBACK or PUBCOMP for the QoS 2 message is
    # the wrong ack at this point and must not free its slot
    sub.send(ack_of(sub, R.PUBACK, m.pid))
    sub.send(ack_of(sub, R.PUBCOMP, m.pid))
    assert sub.silent(0.3)
    sub.send(ack_of(sub, R.PUBREC, m.pid))
    check_ack(sub.recv(), R.PUBREL, m.pid, version)
    assert sub.silent(0.2)  # still in flight until PUBCOMP
    sub.send(ack_of(sub, R.PUBCOMP, m.pid))
    m2 = expect_publish(sub)
    assert (m2.payload, m2.qos, m2.dup) == (b"second", 1, False)
    sub.send(ack_of(sub, R.PUBACK, m2.pid))
    sub.send(ack_of(sub, R.PUBACK, m2.pid))  # a duplicate ack is ignored too
    sub.send(R.PINGREQ_BYTES)
    sub.expect(R.PINGRESP)
    sub.close()
    pub.close()


# ---------------------------------------------------------------- outgoing in-flight window


def run_window(port, sub, limit, total=10):
    """The subscriber has `limit` in flight: exactly that many QoS 1 messages
    arrive until it acks, then one more per ack, all in order."""
    pub = connect(port, f"window-pub-{time.time_ns()}", 5)
    for i in range(total):
        R.publish_ack(pub, "window/t", f"m{i}".encode(), qos=1, pid=i + 1)
    first = [expect_publish(sub) for _ in range(limit)]
    assert [m.payload for m in first] == [f"m{i}".encode() for i in range(limit)]
    assert len({m.pid for m in first}) == limit
    assert sub.silent(0.5)
    got = list(first)
    sub.send(ack_of(sub, R.PUBACK, first[0].pid))
    nxt = expect_publish(sub)
    assert nxt.payload == f"m{limit}".encode()
    assert nxt.pid not in {m.pid for m in first[1:]}
    got.append(nxt)
    assert sub.silent(0.3)
    for m in got[1:]:
        sub.send(ack_of(sub, R.PUBACK, m.pid))
    rest = R.recv_publishes(sub, total - limit - 1)
    got += rest
    assert [m.payload for m in got] == [f"m{i}".encode() for i in range(total)]
    assert all(m.qos == 1 and not m.dup for m in got)
    assert R.no_publish(sub, 0.2)
    pub.close()


@pytest.mark.parametrize("version", V, ids=vid)
def test_inflight_window_is_max_inflight(broker_factory, version):
    b = broker_factory("mqtt.max_inflight = 4", workers=2)
    sub = R.Raw(b.port, version=version)
    ack = sub.connect(f"window-sub-{version}")
    assert ack.rc == 0
    if version == 5:
        assert ack.props["receive_maximum"] == 4
    assert subscribe(sub, [("window/#", 1)]) == [1]
    run_window(b.port, sub, 4)
    sub.close()


@pytest.mark.parametrize("client_max,conf_max,expected", [(2, 10, 2), (100, 3, 3)])
def test_v5_receive_maximum_and_max_inflight_smaller_wins(broker_factory, client_max, conf_max,
                                                          expected):
    b = broker_factory(f"mqtt.max_inflight = {conf_max}", workers=2)
    sub = connect(b.port, "rm-sub", 5, properties=R.props(receive_maximum=client_max))
    assert subscribe(sub, [("window/#", 1)]) == [1]
    run_window(b.port, sub, expected)
    sub.close()


def test_v5_error_reason_in_puback_or_pubrec_ends_the_flow(broker_factory):
    b = broker_factory("mqtt.max_inflight = 1", workers=1)
    sub = connect(b.port, "errack-sub", 5)
    assert subscribe(sub, [("errack/#", 2)]) == [2]
    pub = connect(b.port, "errack-pub", 4)
    for i, q in enumerate((2, 1, 1)):
        R.publish_ack(pub, "errack/t", f"{i}".encode(), qos=q, pid=i + 1)
    m = expect_publish(sub)
    assert (m.payload, m.qos) == (b"0", 2)
    # PUBREC with "unspecified error": no PUBREL, and the slot is free
    sub.send(R.ack(R.PUBREC, m.pid, version=5, rc=0x80))
    m = expect_publish(sub)
    assert (m.payload, m.qos) == (b"1", 1)
    sub.send(R.ack(R.PUBACK, m.pid, version=5, rc=0x83,  # implementation specific error
                   properties=R.props(reason_string="nope", user_property=[("k", "v")])))
    m = expect_publish(sub)
    assert m.payload == b"2"
    sub.send(R.ack(R.PUBACK, m.pid, version=5))
    assert sub.silent(0.3)
    sub.close()
    pub.close()


def test_v5_incoming_qos2_up_to_advertised_receive_maximum(broker_factory):
    """The Receive Maximum in CONNACK is a promise: a client that keeps to it
    is not disconnected, whatever the configured limits are."""
    b = broker_factory("mqtt.max_inflight = 10\nmqtt.max_awaiting_rel = 4", workers=1)
    r = R.Raw(b.port, version=5)
    ack = r.connect("rm-adv")
    rm = ack.props.get("receive_maximum", 65535)
    for pid in range(1, rm + 1):
        r.send(R.publish("rmadv/x", b"", qos=2, pid=pid, version=5))
        check_ack(r.recv(), R.PUBREC, pid, 5)
    r.send(R.publish("rmadv/x", b"", qos=2, pid=rm + 1, version=5))
    r.expect_disconnect(0x93)


@pytest.mark.parametrize("queued", [2, 0], ids=["queue", "no-queue"])
def test_resend_after_reconnect_respects_new_receive_maximum(broker, queued):
    cid = f"rm-shrink-{queued}"
    sub = connect(broker.port, cid, 5, clean=False,
                  properties=R.props(session_expiry=60, receive_maximum=5))
    assert subscribe(sub, [("shrink/#", 1)]) == [1]
    pub = connect(broker.port, f"rm-shrink-pub-{queued}", 4)
    total = 5 + queued  # 5 in flight, the rest queued behind them
    for i in range(total):
        R.publish_ack(pub, "shrink/t", f"{i}".encode(), qos=1, pid=i + 1)
    first = [expect_publish(sub) for _ in range(5)]
    assert [m.payload for m in first] == [f"{i}".encode() for i in range(5)]
    sub.close()
    sub = R.Raw(broker.port, version=5)
    assert sub.connect(cid, clean=False,
                       properties=R.props(session_expiry=60, receive_maximum=2)).session_present
    again = [expect_publish(sub) for _ in range(2)]
    assert [(m.payload, m.dup) for m in again] == [(b"0", True), (b"1", True)]
    # a QoS 0 message published now must not overtake the held-back ones
    R.publish_ack(pub, "shrink/t", b"late-qos0", qos=0)
    assert sub.silent(0.4), "more unacknowledged messages than the new Receive Maximum"
    got = list(again)
    for m in again:
        sub.send(ack_of(sub, R.PUBACK, m.pid))
    while len(got) < total + 1:
        m = expect_publish(sub)
        got.append(m)
        if m.qos:
            sub.send(ack_of(sub, R.PUBACK, m.pid))
    assert [m.payload for m in got] == [f"{i}".encode() for i in range(total)] + [b"late-qos0"]
    assert [m.pid for m in got[:5]] == [m.pid for m in first]  # same ids when resent
    assert all(m.dup for m in got[:5]) and not any(m.dup for m in got[5:])
    assert R.no_publish(sub, 0.2)
    sub.close()
    pub.close()


def test_incoming_qos2_beyond_receive_maximum_v5(broker_factory):
    b = broker_factory("mqtt.max_inflight = 4", workers=1)
    r = R.Raw(b.port, version=5)
    ack = r.connect("rm-in-v5")
    assert ack.props["receive_maximum"] == 4
    for pid in range(1, 5):
        r.send(R.publish("rmin/x", b"", qos=2, pid=pid, version=5))
        check_ack(r.recv(), R.PUBREC, pid, 5)
    # a resend of an unreleased id is not a new message
    r.send(R.publish("rmin/x", b"", qos=2, pid=2, dup=True, version=5))
    check_ack(r.recv(), R.PUBREC, 2, 5)
    # releasing one makes room for exactly one more
    r.send(R.ack(R.PUBREL, 1, version=5))
    check_ack(r.recv(), R.PUBCOMP, 1, 5)
    r.send(R.publish("rmin/x", b"", qos=2, pid=5, version=5))
    check_ack(r.recv(), R.PUBREC, 5, 5)
    r.send(R.publish("rmin/x", b"", qos=2, pid=6, version=5))
    r.expect_disconnect(0x93)
    r.close()


def test_incoming_qos2_beyond_max_awaiting_rel_v3(broker_factory):
    b = broker_factory("mqtt.max_awaiting_rel = 3", workers=1)
    r = connect(b.port, "rm-in-v3", 4)
    for pid in range(1, 4):
        r.send(R.publish("rmin/x", b"", qos=2, pid=pid))
        check_ack(r.recv(), R.PUBREC, pid, 4)
    r.send(R.publish("rmin/x", b"", qos=2, pid=4))
    r.expect_disconnect(None)
    r.close()


# ---------------------------------------------------------------- ordering


@pytest.mark.parametrize("workers", [1, 2, 3, 4], ids=lambda w: f"w{w}")
@pytest.mark.parametrize("qos", [0, 1, 2], ids=lambda q: f"qos{q}")
def test_one_publisher_order_kept_across_workers(broker_factory, workers, qos):
    b = broker_factory(workers=workers)
    n = 1000
    pub_cid = R.client_id_on_worker(f"ord-pub-{qos}", 0, workers)
    far_cid = R.client_id_on_worker(f"ord-far-{qos}", workers - 1, workers)
    near_cid = R.client_id_on_worker(f"ord-near-{qos}", 0, workers)
    subs = []
    for cid, v in ((far_cid, 4), (near_cid, 5)):
        r = connect(b.port, cid, v)
        assert subscribe(r, [("order/#", 2)]) == [2]
        subs.append(AutoSub(r))
    pub = connect(b.port, pub_cid, 5)
    payloads = [struct.pack("!I", i) + b"order" for i in range(n)]
    publish_windowed(pub, "order/seq", payloads, qos)
    for s in subs:
        got = s.wait(n)
        seq = [struct.unpack("!I", m.payload[:4])[0] for m in got]
        assert seq == list(range(n)), f"out of order or lost at {next((i for i, x in enumerate(seq) if x != i), None)}"
        assert all(m.qos == qos for m in got)
        if qos:
            assert not any(m.dup for m in got)
    for s in subs:
        s.close()
    pub.close()


def test_mixed_qos_from_one_publisher_keeps_order(broker_factory):
    # QoS 0 messages must not overtake QoS 1 messages waiting for window room
    b = broker_factory("mqtt.max_inflight = 1", workers=2)
    sub = connect(b.port, "mixed-sub", 5)
    assert subscribe(sub, [("mixed/#", 1)]) == [1]
    pub = connect(b.port, "mixed-pub", 4)
    qos_seq = [1, 0, 1, 0, 0, 1, 1, 0]
    for i, q in enumerate(qos_seq):
        R.publish_ack(pub, "mixed/t", f"{i}".encode(), qos=q, pid=i + 1)
    got = []
    while len(got) < len(qos_seq):
        m = expect_publish(sub)
        got.append(m)
        if m.qos == 1:
            sub.send(ack_of(sub, R.PUBACK, m.pid))
    assert [m.payload for m in got] == [f"{i}".encode() for i in range(len(qos_seq))]
    assert [m.qos for m in got] == qos_seq
    sub.close()
    pub.close()


# ---------------------------------------------------------------- packet ids


def test_packet_ids_wrap_and_skip_ids_still_in_flight(broker_factory):
    """More than 65535 QoS 1 messages to one subscriber that never acks its
    first message: ids stay in 1..65535, are never reused while in flight
    (the held one is skipped after the wrap) and nothing is lost or reordered."""
    n = 66000
    b = broker_factory("mqtt.max_inflight = 128\nmqtt.max_mqueue_len = 100000", workers=1)
    sub = connect(b.port, "wrap-sub", 4)
    assert subscribe(sub, [("wrap/#", 1)]) == [1]
    pub = connect(b.port, "wrap-pub", 4)
    result = {}

    def read_sub():
        s = sub.sock
        s.settimeout(15)
        buf = bytearray(sub.buf)
        in_flight = set()
        held = None
        seqs = []
        problems = []
        wrapped = False
        last = 0
        while len(seqs) < n:
            data = s.recv(1 << 20)
            if not data:
                problems.append("closed")
                break
            buf += data
            i, size, out = 0, len(buf), bytearray()
            while i + 2 <= size:
                j, ln, mult = i + 1, 0, 1
                while j < size:
                    c = buf[j]
                    j += 1
                    ln += (c & 127) * mult
                    mult *= 128
                    if not c & 128:
                        break
                else:
                    break
                if j + ln > size:
                    break
                assert buf[i] >> 4 == R.PUBLISH
                tl = (buf[j] << 8) | buf[j + 1]
                pid = (buf[j + 2 + tl] << 8) | buf[j + 3 + tl]
                seqs.append(int.from_bytes(buf[j + 4 + tl:j + ln], "big"))
                if not 1 <= pid <= 65535 or pid in in_flight:
                    problems.append((len(seqs), pid))
                if pid < last:
                    wrapped = True
                last = pid
                if held is None:
                    held = pid  # never acknowledged until the end
                    in_flight.add(pid)
                else:
                    out += bytes((R.PUBACK << 4, 2, pid >> 8, pid & 255))
                i = j + ln
            del buf[:i]
            if out:
                s.sendall(out)
        result.update(seqs=seqs, problems=problems, wrapped=wrapped, held=held)

    t = threading.Thread(target=read_sub, daemon=True)
    t.start()

    def drain_acks():
        s = pub.sock
        s.settimeout(15)
        left = n * 4
        while left > 0:
            data = s.recv(1 << 20)
            if not data:
                break
            left -= len(data)

    ta = threading.Thread(target=drain_acks, daemon=True)
    ta.start()
    # QoS 1 PUBLISH "wrap/t", packet id, 4-byte sequence number
    head = R.publish("wrap/t", b"\0\0\0\0", qos=1, pid=1)[:-6]
    chunk = bytearray()
    for k in range(n):
        chunk += head
        chunk += (k % 65535 + 1).to_bytes(2, "big")
        chunk += k.to_bytes(4, "big")
        if len(chunk) > 32768:
            pub.sock.sendall(chunk)
            chunk = bytearray()
    pub.sock.sendall(chunk)
    t.join(30)
    ta.join(5)
    assert not t.is_alive(), "subscriber did not receive every message"
    assert result["problems"] == [], result["problems"][:10]
    assert result["wrapped"], "packet ids never wrapped around"
    assert result["seqs"] == list(range(n))
    # the held message is still in flight; acking it frees its id
    sub.sock.settimeout(5)
    sub.buf = bytearray()
    sub.send(R.ack(R.PUBACK, result["held"]))
    sub.send(R.PINGREQ_BYTES)
    sub.expect(R.PINGRESP)
    sub.close()
    pub.close()


def test_large_messages_do_not_stall_the_window(broker_factory):
    # window of 1 and messages far bigger than a socket buffer (the write
    # completes asynchronously): each ack still releases the next message
    b = broker_factory("mqtt.max_inflight = 1", workers=2)
    sub = connect(b.port, R.client_id_on_worker("big-sub", 1, 2), 5)
    assert subscribe(sub, [("big/#", 1)]) == [1]
    pub = connect(b.port, R.client_id_on_worker("big-pub", 0, 2), 5)
    sizes = [10, 900_000, 3, 700_000, 0, 900_000, 1]
    payloads = [bytes([i + 1]) * sz for i, sz in enumerate(sizes)]
    for i, p in enumerate(payloads):
        R.publish_ack(pub, "big/t", p, qos=1 if i % 3 else 0, pid=i + 1)
    got = R.recv_publishes(sub, len(sizes), timeout=10)
    assert [len(m.payload) for m in got] == sizes
    assert [m.payload for m in got] == payloads
    assert R.no_publish(sub, 0.2)
    sub.close()
    pub.close()
