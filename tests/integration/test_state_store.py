"""The broker's own state in SQLite (state.store = sqlite): persistent
sessions, their subscriptions, queued and in-flight messages, and retained
messages survive a restart and kill -9; in sync mode nothing a publisher got
PUBACK for is lost. The database is read back with Python's sqlite3 to check
what is (and is no longer) stored."""
import os
import sqlite3
import threading
import time

import pytest

from mqttraw import (PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, Raw, ack, drain_publishes,
                     no_publish, props, publish, publish_ack, raw_connect, recv_publishes,
                     sub_ack, unsub_ack, wait_until)


def conf(mode="async", extra=""):
    return f"state.store = sqlite\nstate.file = state.db\nstate.delivery_mode = {mode}\n{extra}"


def db_rows(b, sql, args=()):
    con = sqlite3.connect(os.path.join(b.tmpdir, "state.db"), timeout=10)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def restart(broker_factory, b, kill=False, **kw):
    """Stops b (SIGTERM, or kill -9) and starts a broker with the same
    configuration file on the same port."""
    if kill:
        b.kill9()
    elif b.returncode is None:
        assert b.stop() == 0, b.log()[-2000:]
    nb = broker_factory(start=False, **kw)
    nb.port, nb.conf_path = b.port, b.conf_path
    return nb.start()


def persistent(port, cid, version=4, **kw):
    if version == 5:
        kw.setdefault("properties", props(session_expiry=3600))
    return raw_connect(port, cid, version=version, clean=False, **kw)


@pytest.mark.parametrize("version", [4, 5])
def test_restart_keeps_session_subscriptions_and_queue(broker_factory, version):
    b = broker_factory(conf(), workers=2)
    r = persistent(b.port, "keeper", version)
    assert sub_ack(r, [("q/#", 1), ("q2/+", 2)]) == [1, 2]
    r.close()
    p = raw_connect(b.port, "pub")
    for i in range(5):
        publish_ack(p, "q/a", b"m%d" % i, qos=1, pid=i + 1)
    publish_ack(p, "q2/x", b"\x00binary\xff'; drop table x;--", qos=2, pid=9)
    p.close()
    wait_until(lambda: len(db_rows(b, "select * from keepmq_queue")) == 6, what="rows stored")

    b = restart(broker_factory, b, workers=2)
    r = Raw(b.port, version=version)
    ck = r.connect("keeper", clean=False,
                   **({"properties": props(session_expiry=3600)} if version == 5 else {}))
    assert ck.session_present
    got = recv_publishes(r, 6)
    assert [(m.topic, m.payload, m.qos) for m in got] == \
        [("q/a", b"m%d" % i, 1) for i in range(5)] + \
        [("q2/x", b"\x00binary\xff'; drop table x;--", 2)]
    # the restored subscriptions route new messages
    p = raw_connect(b.port, "pub2")
    publish_ack(p, "q2/y", b"live", qos=1)
    [m] = recv_publishes(r, 1)
    assert (m.topic, m.payload, m.qos) == ("q2/y", b"live", 1)
    drain_publishes(r)
    # acknowledged: nothing left in the store
    wait_until(lambda: db_rows(b, "select count(*) from keepmq_queue") == [(0,)],
               what="acknowledged rows deleted")
    assert db_rows(b, "select count(*) from keepmq_msg") == [(0,)]


def test_restart_keeps_retained_and_clears(broker_factory):
    b = broker_factory(conf(), workers=2)
    p = raw_connect(b.port, "pub", version=5)
    publish_ack(p, "r/keep", b"kept \x00 value", qos=1, retain=True,
                properties=props(content_type="text/x", user_property=[("k", "v")]))
    publish_ack(p, "r/gone", b"soon cleared", qos=1, retain=True, pid=2)
    publish_ack(p, "r/gone", b"", qos=1, retain=True, pid=3)
    p.close()
    wait_until(lambda: db_rows(b, "select topic from keepmq_retain") == [("r/keep",)],
               what="retained rows")
    b = restart(broker_factory, b, kill=True, workers=2)
    s = raw_connect(b.port, "s", version=5)
    sub_ack(s, [("r/#", 1)])
    [m] = recv_publishes(s, 1)
    assert (m.topic, m.payload, m.retain) == ("r/keep", b"kept \x00 value", True)
    assert m.props.get("content_type") == "text/x"
    assert m.props.get("user_property") == [("k", "v")]
    assert no_publish(s, 0.3)


def test_fanout_stores_message_body_once(broker_factory):
    b = broker_factory(conf(), workers=2)
    for i in range(3):
        r = persistent(b.port, f"fan{i}")
        sub_ack(r, [("f/#", 1)])
        r.close()
    p = raw_connect(b.port, "pub")
    publish_ack(p, "f/1", b"x" * 1000, qos=1)
    wait_until(lambda: db_rows(b, "select count(*) from keepmq_queue") == [(3,)], what="3 rows")
    assert db_rows(b, "select count(*) from keepmq_msg") == [(1,)]


def test_unsubscribe_and_clean_start_remove_rows(broker_factory):
    b = broker_factory(conf(), workers=2)
    r = persistent(b.port, "c1")
    sub_ack(r, [("a/#", 1), ("b/#", 1)])
    wait_until(lambda: len(db_rows(b, "select * from keepmq_sub")) == 2, what="2 subs")
    unsub_ack(r, "a/#", pid=2)
    wait_until(lambda: db_rows(b, "select filter from keepmq_sub") == [("b/#",)],
               what="unsubscribed row removed")
    r.close()
    p = raw_connect(b.port, "pub")
    publish_ack(p, "b/1", b"queued", qos=1)
    wait_until(lambda: len(db_rows(b, "select * from keepmq_queue")) == 1, what="queued row")
    r = raw_connect(b.port, "c1", clean=True)
    wait_until(lambda: db_rows(b, "select count(*) from keepmq_session") == [(0,)],
               what="clean start removes the session")
    assert db_rows(b, "select count(*) from keepmq_sub") == [(0,)]
    assert db_rows(b, "select count(*) from keepmq_queue") == [(0,)]
    assert db_rows(b, "select count(*) from keepmq_msg") == [(0,)]
    # a clean session (3.1.1) is never stored
    r.close()
    assert db_rows(b, "select count(*) from keepmq_session") == [(0,)]


def test_session_expiry_counts_across_restart(broker_factory):
    b = broker_factory(conf(), workers=2)
    short = persistent(b.port, "short", 5, properties=props(session_expiry=2))
    sub_ack(short, [("e/#", 1)])
    long_ = persistent(b.port, "long", 5, properties=props(session_expiry=3600))
    sub_ack(long_, [("e/#", 1)])
    short.close()
    long_.close()
    wait_until(lambda: len(db_rows(b, "select * from keepmq_session where offline_at > 0")) == 2,
               what="both offline")
    assert b.stop() == 0
    time.sleep(2.5)
    b = restart(broker_factory, b, workers=2)
    assert "1 expired sessions removed" in b.log()
    r = Raw(b.port, version=5)
    assert not r.connect("short", clean=False, properties=props(session_expiry=60)).session_present
    r2 = Raw(b.port, version=5)
    assert r2.connect("long", clean=False, properties=props(session_expiry=60)).session_present


def test_qos2_exactly_once_across_restart(broker_factory):
    """A QoS 2 message whose PUBREC the broker got comes back as PUBREL with
    the same packet id; one sent but not yet PUBREC'd comes back as PUBLISH
    with the same packet id and DUP."""
    b = broker_factory(conf("sync"), workers=2)
    r = persistent(b.port, "q2")
    sub_ack(r, [("x/#", 2)])
    p = raw_connect(b.port, "pub")
    publish_ack(p, "x/1", b"first", qos=2, pid=1)
    publish_ack(p, "x/2", b"second", qos=2, pid=2)
    m1 = r.expect(PUBLISH)
    m2 = r.expect(PUBLISH)
    assert (m1.payload, m2.payload) == (b"first", b"second")
    r.send(ack(PUBREC, m1.pid))  # PUBREC for the first only
    rel = r.expect(PUBREL)
    assert rel.pid == m1.pid
    wait_until(lambda: db_rows(b, "select pid, state from keepmq_queue order by seq") ==
               [(m1.pid, 2), (m2.pid, 1)], what="packet ids stored")
    r.close()
    b = restart(broker_factory, b, kill=True, workers=2)
    r = Raw(b.port)
    assert r.connect("q2", clean=False).session_present
    again_rel = r.expect(PUBREL)
    again_pub = r.expect(PUBLISH)
    assert again_rel.pid == m1.pid
    assert (again_pub.pid, again_pub.dup, again_pub.payload) == (m2.pid, True, b"second")
    r.send(ack(PUBCOMP, m1.pid))
    r.send(ack(PUBREC, m2.pid))
    assert r.expect(PUBREL).pid == m2.pid
    r.send(ack(PUBCOMP, m2.pid))
    wait_until(lambda: db_rows(b, "select count(*) from keepmq_queue") == [(0,)],
               what="completed QoS 2 rows deleted")


def test_sync_kill9_loses_no_acknowledged_message(broker_factory):
    """Publishers send QoS 1 as fast as the broker acknowledges; an offline
    persistent subscriber and a retained topic per publisher collect them;
    kill -9 in the middle. After the restart every acknowledged message is
    delivered and every acknowledged retained value (or a later one) is
    there."""
    b = broker_factory(conf("sync"), workers=2)
    r = persistent(b.port, "collector")
    sub_ack(r, [("load/#", 1)])
    r.close()
    acked = {0: [], 1: []}
    stop = threading.Event()

    def publisher(k):
        try:
            p = raw_connect(b.port, f"loadpub{k}")
            i = 0
            while not stop.is_set():
                i += 1
                p.send(publish(f"load/{k}", b"%d:%d" % (k, i), qos=1, retain=True,
                               pid=(i % 65535) + 1))
                a = p.recv(2.0)
                if a.type == PUBACK:
                    acked[k].append(i)
        except (OSError, ConnectionError, TimeoutError):
            pass

    ts = [threading.Thread(target=publisher, args=(k,), daemon=True) for k in (0, 1)]
    for t in ts:
        t.start()
    wait_until(lambda: min(len(v) for v in acked.values()) >= 150, timeout=30,
               what="messages acknowledged under load")
    b.kill9()
    stop.set()
    for t in ts:
        t.join(5)
    b = restart(broker_factory, b, workers=2)
    r = Raw(b.port)
    assert r.connect("collector", clean=False).session_present
    got = drain_publishes(r, quiet=1.0)
    received = {(m.topic, m.payload) for m in got}
    for k, ids in acked.items():
        missing = [i for i in ids if (f"load/{k}", b"%d:%d" % (k, i)) not in received]
        assert not missing, f"publisher {k}: {len(missing)} acknowledged messages lost"
    s = raw_connect(b.port, "retained-check")
    sub_ack(s, [("load/#", 0)])
    got = {m.topic: int(m.payload.split(b":")[1]) for m in drain_publishes(s, quiet=0.5)}
    for k, ids in acked.items():
        assert got.get(f"load/{k}", 0) >= ids[-1], "an acknowledged retained value was lost"


def test_async_mode_acknowledges_before_writing(broker_factory):
    """async: the PUBACK does not wait for the store (it cannot: the store is
    locked by another writer here), and the rows arrive once it is free."""
    b = broker_factory(conf("async"), workers=1)
    r = persistent(b.port, "lazy")
    sub_ack(r, [("l/#", 1)])
    r.close()
    wait_until(lambda: len(db_rows(b, "select * from keepmq_sub")) == 1, what="sub stored")
    con = sqlite3.connect(os.path.join(b.tmpdir, "state.db"), timeout=10)
    con.execute("BEGIN EXCLUSIVE")
    try:
        p = raw_connect(b.port, "pub")
        t0 = time.time()
        for i in range(20):
            publish_ack(p, "l/x", b"%d" % i, qos=1, pid=i + 1)
        assert time.time() - t0 < 5  # generous: the store is blocked for the whole loop
    finally:
        con.rollback()
        con.close()
    wait_until(lambda: db_rows(b, "select count(*) from keepmq_queue") == [(20,)],
               what="rows written once the lock went")


def test_sync_mode_waits_for_the_store(broker_factory):
    """sync: while another process holds the database's write lock, a PUBLISH
    for a persistent session is not acknowledged; once released it is."""
    b = broker_factory(conf("sync"), workers=1)
    r = persistent(b.port, "waiter")
    sub_ack(r, [("w/#", 1)])
    r.close()
    wait_until(lambda: len(db_rows(b, "select * from keepmq_sub")) == 1, what="sub stored")
    con = sqlite3.connect(os.path.join(b.tmpdir, "state.db"), timeout=10)
    con.execute("BEGIN EXCLUSIVE")
    p = raw_connect(b.port, "pub")
    p.send(publish("w/1", b"held", qos=1, pid=7))
    with pytest.raises(TimeoutError):
        p.recv(1.0)
    # a message nobody persistent wants is acknowledged at once
    p.send(publish("other/1", b"free", qos=1, pid=8))
    con.rollback()
    con.close()
    a1 = p.recv(10.0)
    a2 = p.recv(10.0)
    # acknowledgements keep PUBLISH order
    assert (a1.pid, a2.pid) == (7, 8)
    assert db_rows(b, "select count(*) from keepmq_queue") == [(1,)]


def test_bad_state_configuration_names_file_line_key(broker_factory):
    b = broker_factory("state.store = oracle", start=False)
    b.expect_start = False
    b.start()
    b.returncode = b.proc.wait(10)
    assert b.returncode == 2
    log = b.log()
    assert "state.store" in log and '"oracle" is not a state store' in log
    assert f"{os.path.basename(b.conf_path)}:" in log or b.conf_path in log


def test_unusable_state_file_refuses_to_start(broker_factory, tmpdir_path):
    blocker = os.path.join(tmpdir_path, "afile")
    open(blocker, "w").close()
    b = broker_factory(f"state.store = sqlite\nstate.file = {blocker}/sub/state.db",
                       start=False)
    b.expect_start = False
    b.start()
    b.returncode = b.proc.wait(10)
    assert b.returncode != 0
    assert "state store" in b.log() and "state.db" in b.log()


def test_full_filesystem_holds_sync_acks_then_loses_nothing(broker_factory, tmpdir_path):
    """The state store's filesystem fills up (a tmpfs, so this needs root,
    as CI has): sync PUBACKs wait, the broker retries, and once space is
    back every message is acknowledged and, after kill -9, delivered."""
    import errno
    import subprocess
    mnt = os.path.join(tmpdir_path, "fs")
    os.makedirs(mnt)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "keepmq-state-test", mnt],
                   check=True, capture_output=True, text=True)
    try:
        c = f"state.store = sqlite\nstate.file = {mnt}/state.db\nstate.delivery_mode = sync\n"
        b = broker_factory(c, workers=2)
        r = persistent(b.port, "fsub")
        sub_ack(r, [("big/#", 1)])
        r.close()
        wait_until(lambda: os.path.getsize(os.path.join(mnt, "state.db-wal")) > 0, what="wal")
        filler = os.path.join(mnt, "filler")
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        for chunk in (1 << 20, 65536, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC
        os.close(fd)
        p = raw_connect(b.port, "fpub")
        n = 40
        for i in range(n):  # 40 x 64 KiB: more than any space the WAL file already has
            p.send(publish("big/x", bytes([i]) * 65536, qos=1, pid=i + 1))
        wait_until(lambda: "state store: writing" in b.log(), timeout=20,
                   what="the broker tried to write and failed")
        with pytest.raises(TimeoutError):
            p.recv(0.5)  # nothing acknowledged while the writes fail
        os.unlink(filler)
        pids = sorted(p.expect(PUBACK, timeout=30).pid for _ in range(n))
        assert pids == list(range(1, n + 1))
        b = restart(broker_factory, b, kill=True, workers=2)
        r = Raw(b.port)
        assert r.connect("fsub", clean=False).session_present
        got = recv_publishes(r, n, timeout=20)
        assert [m.payload for m in got] == [bytes([i]) * 65536 for i in range(n)]
        assert b.stop() == 0
    finally:
        if subprocess.run(["umount", mnt], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", mnt], capture_output=True)


def test_state_metrics_on_sys(broker_factory):
    import json
    b = broker_factory(conf("sync", "broker.sys_interval = 1s\n"), workers=2)
    r = persistent(b.port, "metered")
    sub_ack(r, [("m/#", 1)])
    r.close()
    p = raw_connect(b.port, "pub")
    for i in range(10):
        publish_ack(p, "m/1", b"x", qos=1, pid=i + 1)
    s = raw_connect(b.port, "watch")
    sub_ack(s, [("$SYS/brokers/+/state/metrics", 0)])
    m = {}
    deadline = time.time() + 10
    while time.time() < deadline and m.get("ops", 0) < 12:
        [pkt] = recv_publishes(s, 1)
        m = json.loads(pkt.payload)
    # a session row, a subscription row, ten queued messages
    assert m["ops"] >= 12 and m["commits"] >= 1
    assert m["dropped"] == 0 and m["queued"] == 0


def test_restore_applies_a_lowered_queue_limit(broker_factory):
    b = broker_factory(conf(), workers=2)
    r = persistent(b.port, "lots")
    sub_ack(r, [("l/#", 1)])
    r.close()
    p = raw_connect(b.port, "pub")
    for i in range(10):
        publish_ack(p, "l/1", b"%d" % i, qos=1, pid=i + 1)
    wait_until(lambda: db_rows(b, "select count(*) from keepmq_queue") == [(10,)], what="10 rows")
    assert b.stop() == 0
    # the same state file (same directory), a smaller queue limit
    b2 = broker_factory(conf(extra="mqtt.max_mqueue_len = 4\n"), workers=2)
    assert "6 stored messages dropped" in b2.log()
    assert db_rows(b2, "select count(*) from keepmq_queue") == [(4,)]
    r = Raw(b2.port)
    assert r.connect("lots", clean=False).session_present
    got = drain_publishes(r, quiet=0.5)
    assert [m.payload for m in got] == [b"0", b"1", b"2", b"3"]
