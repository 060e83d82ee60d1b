"""$SYS topics (src/broker/sys.c): node name and version, uptime, connection
count, message counters, per-client connected/disconnected events, the
node.name setting, broker.sys_interval = 0, and that clients cannot write
into $SYS."""
import json
import subprocess
import time

import pytest

import mqttraw as R
from conftest import KEEPMQ_BIN

NODE = "keepmq@127.0.0.1"  # the default node.name
CONF = "broker.sys_interval = 1s"


class Sys:
    """A client subscribed to $SYS/#, keeping the latest payload per topic."""

    def __init__(self, port, cid="sys-watch", flt="$SYS/#", version=5):
        self.r = R.raw_connect(port, cid, version=version)
        assert R.sub_ack(self.r, [(flt, 0)]) == [0]
        self.latest = {}
        self.log = []

    def pump(self, quiet=0.05):
        for p in R.drain_publishes(self.r, quiet=quiet, limit=500):
            self.latest[p.topic] = p.payload.decode()
            self.log.append(p)

    def value(self, topic, pred=lambda v: True, timeout=4.0):
        """Waits until topic's latest payload satisfies pred; returns it."""
        def ok():
            self.pump()
            v = self.latest.get(topic)
            return v is not None and pred(v)
        R.wait_until(ok, timeout=timeout, what=f"{topic} to satisfy the condition "
                     f"(latest {self.latest.get(topic)!r})")
        return self.latest[topic]

    def event(self, topic, timeout=4.0):
        """Waits for a message on topic arriving after the last call; returns
        its JSON."""
        seen = len(self.log)
        R.wait_until(lambda: self.pump() or any(p.topic == topic for p in self.log[seen:]),
                     timeout=timeout, what=f"an event on {topic}")
        p = next(p for p in self.log[seen:] if p.topic == topic)
        return json.loads(p.payload)

    def close(self):
        self.r.close()


def stat(name, node=NODE):
    return f"$SYS/brokers/{node}/{name}"


def test_node_version_and_uptime(broker_factory):
    b = broker_factory(conf=CONF, workers=2)
    s = Sys(b.port)
    assert s.value("$SYS/brokers") == NODE
    version = subprocess.run([KEEPMQ_BIN, "--version"], capture_output=True, text=True).stdout
    assert version.strip() == "keepmq " + s.value(stat("version"))
    assert s.value(stat("sysdescr"))
    up = int(s.value(stat("uptime")))
    assert 0 <= up < 60
    # uptime is republished and grows
    s.value(stat("uptime"), lambda v: int(v) > up, timeout=4)
    dt = s.value(stat("datetime"))
    assert time.strptime(dt, "%Y-%m-%dT%H:%M:%SZ")
    s.close()


def test_sys_messages_are_retained_for_late_subscribers(broker_factory):
    b = broker_factory(conf=CONF, workers=2)
    first = Sys(b.port)
    first.value(stat("version"))  # published once, at start-up
    first.close()
    late = R.raw_connect(b.port, "late", version=4)
    assert R.sub_ack(late, [(stat("version"), 0), ("$SYS/brokers", 0)]) == [0, 0]
    got = R.recv_publishes(late, 2)
    assert {p.topic for p in got} == {stat("version"), "$SYS/brokers"}
    assert all(p.retain for p in got)
    late.close()


def test_connection_count_follows_clients(broker_factory):
    b = broker_factory(conf=CONF, workers=2)
    s = Sys(b.port)
    s.value(stat("stats/connections/count"), lambda v: v == "1")
    clients = [R.raw_connect(b.port, f"cc-{i}", version=4 + i % 2) for i in range(5)]
    s.value(stat("stats/connections/count"), lambda v: v == "6")
    for c in clients[:3]:
        c.close()
    s.value(stat("stats/connections/count"), lambda v: v == "3")
    sessions = s.value(stat("stats/sessions/count"), lambda v: v == "3")
    assert sessions == "3"
    for c in clients[3:]:
        c.close()
    s.close()


def test_subscription_and_retained_counts(broker_factory):
    b = broker_factory(conf=CONF, workers=2)
    s = Sys(b.port)  # its own $SYS/# subscription counts
    s.value(stat("stats/subscriptions/count"), lambda v: v == "1")
    c = R.raw_connect(b.port, "subs", version=5)
    assert R.sub_ack(c, [("a", 0), ("b/#", 0), ("$share/g/c", 0)]) == [0, 0, 0]
    s.value(stat("stats/subscriptions/count"), lambda v: v == "4")
    s.value(stat("stats/subscriptions/shared/count"), lambda v: v == "1")
    before = int(s.value(stat("stats/retained/count")))
    R.publish_ack(c, "ret/x", b"1", qos=1, retain=True)
    s.value(stat("stats/retained/count"), lambda v: int(v) == before + 1)
    c.close()
    s.close()


def test_messages_received_grows(broker_factory):
    b = broker_factory(conf=CONF, workers=2)
    s = Sys(b.port)
    base = int(s.value(stat("metrics/messages/received")))
    base1 = int(s.value(stat("metrics/messages/qos1/received")))
    pub = R.raw_connect(b.port, "counter-pub", version=5)
    for i in range(10):
        R.publish_ack(pub, f"count/{i}", b"x", qos=1, pid=i + 1)
    for i in range(3):
        R.publish_ack(pub, "count/q0", b"x", qos=0)
    s.value(stat("metrics/messages/received"), lambda v: int(v) >= base + 13)
    s.value(stat("metrics/messages/qos1/received"), lambda v: int(v) == base1 + 10)
    s.value(stat("metrics/packets/received"), lambda v: int(v) >= 13)
    s.value(stat("metrics/bytes/received"), lambda v: int(v) > 13 * 10)
    pub.close()
    s.close()


@pytest.mark.parametrize("version", [4, 5])
def test_client_connected_and_disconnected_events(broker_factory, version):
    b = broker_factory(conf=CONF, workers=2)
    s = Sys(b.port, flt="$SYS/brokers/+/clients/#")
    cid = f"evt-{version}"
    c = R.Raw(b.port, version=version)
    assert c.connect(cid, username="alice", keepalive=42).rc == 0
    local_port = c.sock.getsockname()[1]
    ev = s.event(stat(f"clients/{cid}/connected"))
    assert ev["clientid"] == cid
    assert ev["username"] == "alice"
    assert ev["ipaddress"] == f"127.0.0.1:{local_port}"
    assert ev["proto_ver"] == version
    assert ev["keepalive"] == 42
    assert ev["clean_start"] is True
    assert ev["connack"] == 0
    assert abs(ev["ts"] / 1000 - time.time()) < 60
    c.send(R.disconnect(version))
    ev = s.event(stat(f"clients/{cid}/disconnected"))
    assert ev["clientid"] == cid and ev["username"] == "alice"
    assert ev["ipaddress"] == f"127.0.0.1:{local_port}"
    assert ev["reason"] == "Success"
    c.close()
    # an abrupt close is reported with a different reason; no username is null
    d = R.raw_connect(b.port, cid, version=version)
    ev = s.event(stat(f"clients/{cid}/connected"))
    assert ev["username"] is None
    d.close()
    ev = s.event(stat(f"clients/{cid}/disconnected"))
    assert ev["reason"] != "Success"
    # events are not retained
    late = R.raw_connect(b.port, "late-evt", version=version)
    assert R.sub_ack(late, [("$SYS/brokers/+/clients/#", 0)]) == [0]
    R.no_publish(late, 0.3)
    late.close()
    s.close()


def test_node_name_changes_topics(broker_factory):
    b = broker_factory(conf=CONF + "\nnode.name = x@y", workers=2)
    s = Sys(b.port)
    assert s.value("$SYS/brokers") == "x@y"
    assert s.value(stat("version", "x@y"))
    s.value(stat("stats/connections/count", "x@y"), lambda v: v == "1")
    c = R.raw_connect(b.port, "named", version=4)
    s.event(stat("clients/named/connected", "x@y"))
    assert not any(t.startswith(f"$SYS/brokers/{NODE}/") for t in s.latest)
    c.close()
    s.close()


def test_sys_interval_zero_disables(broker_factory):
    b = broker_factory(conf="broker.sys_interval = 0", workers=2)
    s = R.raw_connect(b.port, "nosys", version=5)
    assert R.sub_ack(s, [("$SYS/#", 0)]) == [0]
    c = R.raw_connect(b.port, "nosys-client", version=5)
    c.send(R.disconnect(5))
    assert c.closed()
    R.no_publish(s, 0.5)
    s.close()


@pytest.mark.parametrize("version", [4, 5])
def test_clients_cannot_publish_into_sys(broker_factory, version):
    b = broker_factory(conf=CONF, workers=2)
    s = Sys(b.port, version=version)
    s.value("$SYS/brokers")
    pub = R.raw_connect(b.port, f"sys-spoof-{version}", version=version)
    ack = R.publish_ack(pub, f"$SYS/brokers/{NODE}/version", b"fake", qos=1, retain=True)
    assert ack.rc == (0x87 if version == 5 else 0)
    R.publish_ack(pub, "$SYS/brokers", b"fake", qos=0, retain=True)
    R.publish_ack(pub, "sync", b"", qos=1)
    # nothing was stored or forwarded
    late = R.raw_connect(b.port, f"sys-late-{version}", version=version)
    assert R.sub_ack(late, [(stat("version"), 0), ("$SYS/brokers", 0)]) == [0, 0]
    got = R.recv_publishes(late, 2)
    assert b"fake" not in [p.payload for p in got]
    s.pump()
    assert all(p.payload != b"fake" for p in s.log)
    for c in (late, pub):
        c.close()
    s.close()


@pytest.mark.parametrize("version", [4, 5])
def test_will_cannot_write_into_sys(broker_factory, version):
    b = broker_factory(conf=CONF, workers=2)
    s = Sys(b.port)
    s.value("$SYS/brokers")
    c = R.Raw(b.port, version=version)
    ack = c.connect(f"sys-will-{version}", will=(f"$SYS/brokers/{NODE}/version", b"fake", 0, True))
    if ack.rc == 0:
        c.close()  # abrupt: the will would be published now
        s.event(stat(f"clients/sys-will-{version}/disconnected"))
    else:
        # refused as not authorised (v5 0x87, v3 5)
        assert ack.rc == (0x87 if version == 5 else 5)
        c.close()
    late = R.raw_connect(b.port, f"sys-will-late-{version}", version=version)
    assert R.sub_ack(late, [(stat("version"), 0)]) == [0]
    assert R.recv_publishes(late, 1)[0].payload != b"fake"
    s.pump()
    assert all(p.payload != b"fake" for p in s.log)
    late.close()
    s.close()


@pytest.mark.parametrize("version", [4, 5])
def test_takeover_reports_the_old_connection_disconnected(broker_factory, version):
    b = broker_factory(conf=CONF, workers=2)
    s = Sys(b.port, flt="$SYS/brokers/+/clients/#")
    cid = f"taken-{version}"
    old = R.raw_connect(b.port, cid, version=version, username="first")
    old_port = old.sock.getsockname()[1]
    s.event(stat(f"clients/{cid}/connected"))
    new = R.raw_connect(b.port, cid, version=version, username="second")
    new_port = new.sock.getsockname()[1]
    assert old.closed()
    # in order: the old connection ends, the new one starts
    s.pump()
    R.wait_until(lambda: s.pump() or len([p for p in s.log if cid in p.topic]) >= 3,
                 what="the takeover events")
    evs = [(p.topic.rsplit("/", 1)[1], json.loads(p.payload)) for p in s.log if cid in p.topic]
    assert [e[0] for e in evs] == ["connected", "disconnected", "connected"]
    gone, came = evs[1][1], evs[2][1]
    assert gone["ipaddress"] == f"127.0.0.1:{old_port}" and gone["username"] == "first"
    assert gone["reason"] == "Session taken over"
    assert came["ipaddress"] == f"127.0.0.1:{new_port}" and came["username"] == "second"
    new.close()
    s.close()


def test_client_watching_its_own_events_breaks_while_being_written(broker_factory):
    """A client subscribed to its own disconnected event: when the broker
    finds its socket broken while writing to it, the event must not be
    queued on the connection being closed (that once left a freed
    connection on the worker's list of connections to flush)."""
    import socket
    import struct
    import threading

    b = broker_factory(conf=CONF, workers=2)
    stop = threading.Event()
    errors = []

    def load():
        try:
            p = R.raw_connect(b.port, "load-pub", version=4)
            blob = b"".join(R.publish("load/x", b"y" * 200) for _ in range(200))
            while not stop.is_set():
                p.send(blob)
            p.close()
        except OSError as e:
            errors.append(e)

    t = threading.Thread(target=load)
    t.start()
    try:
        for i in range(80):
            w = R.Raw(b.port, version=5)
            w.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
            w.connect(f"self-watch-{i % 5}")
            w.send(R.subscribe(1, [("$SYS/brokers/+/clients/#", 0), ("load/#", 0)], version=5))
            R.wait_until(lambda: w.recv(2).type == R.SUBACK, what="SUBACK")
            w.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            w.sock.close()  # RST while the broker is busy writing to it
            assert b.alive(), f"broker died after {i + 1} broken watchers"
    finally:
        stop.set()
        t.join()
    assert not errors, errors
    R.roundtrip(b.port, 5)
