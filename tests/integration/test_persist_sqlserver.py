"""The MySQL and PostgreSQL backends beyond the shared suite: the spec's
example queries, outages of the server itself, payloads in text columns and
typed raw parameters.

Each test runs against MariaDB 10.11 and PostgreSQL 15 (sql_servers.py: one
server of each per pytest process, a fresh database per test, the broker
logged in as a user that is not an administrator). Restarting the server
or killing the broker's connections only touches this test's work: tests
run one at a time.
"""
import base64
import os
import re
import time

import pytest

import mqttraw as R
from mqttraw import Publisher
from persist_adapters import MySQLStore, PgStore

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
WAIT = 20.0
NODE = "keepmq@127.0.0.1"


@pytest.fixture(params=["mysql", "pgsql"])
def srv_store(request, tmpdir_path):
    from conftest import _adapter
    return _adapter(request, tmpdir_path)


@pytest.fixture(params=["pgsql"])
def pg_store(request, tmpdir_path):
    from conftest import _adapter
    return _adapter(request, tmpdir_path)


def shipped_rules(db):
    """The hook lines of etc/backends/<db>.conf, as shipped."""
    with open(os.path.join(ROOT, "etc", "backends", f"{db}.conf")) as f:
        return "".join(ln for ln in f if ln.startswith(f"backend.{db}.hook."))


def admin_rows(store, sql):
    """Rows of a query run as the database's administrator, as tuples
    (MySQL: root, whose double quotes are strings as in the spec)."""
    c = store.srv.admin(store._ensure()["database"])
    try:
        cur = c.cursor()
        cur.execute(sql)
        names = [d[0] for d in cur.description]
        return names, cur.fetchall()
    finally:
        c.close()


def stored_payloads(store, topic="load/t"):
    return [bytes(r["payload"]) for r in
            store._table_rows("select payload from mqtt_msg where topic = ? order by id", topic)]


# ---------------------------------------------------------------- the spec's examples

def test_spec_example_queries(broker_factory, srv_store):
    """The spec's scenarios with the shipped rules: its example queries (in
    each database's own quoting) return the rows and columns it shows."""
    store = srv_store
    q = '"' if store.name == "mysql" else "'"
    store.ensure_schema()
    # the spec's own inserts for client 'test' (it provisions mqtt_sub)
    store.execute("insert into mqtt_sub(clientid, topic, qos) values('test', 'test_topic1', 1)")
    store.execute("insert into mqtt_sub(clientid, topic, qos) values('test', 'test_topic2', 2)")
    b = broker_factory(conf=store.conf() + shipped_rules(store.name), workers=2)

    t = R.raw_connect(b.port, "test", clean=False)
    names, rows = R.wait_until(
        lambda: (lambda r: r if r[1] else None)(
            admin_rows(store, f"select * from mqtt_client where clientid = {q}test{q}")),
        timeout=WAIT, what="the client row")
    assert names == ["id", "clientid", "state", "node", "online_at", "offline_at", "created"]
    row = dict(zip(names, rows[0]))
    assert (str(row["state"]), row["node"], row["offline_at"]) == ("1", NODE, None)
    assert row["online_at"] is not None and row["created"] is not None

    names, rows = admin_rows(store, f"select * from mqtt_sub where clientid = {q}test{q}")
    assert names == ["id", "clientid", "topic", "qos", "created"]
    assert [(r[1], r[2], r[3]) for r in rows] == [("test", "test_topic1", 1),
                                                  ("test", "test_topic2", 2)]
    # on_subscribe_lookup subscribed 'test' to them
    other = R.raw_connect(b.port, "other")

    def delivered():
        R.publish_ack(other, "test_topic1", b"to-test", qos=1)
        try:
            return R.recv_publishes(t, 1, timeout=0.5)
        except TimeoutError:
            return None
    R.wait_until(delivered, timeout=WAIT, what="'test' receives on its provisioned subscription")

    R.publish_ack(t, "hello", b"hello", qos=1)
    R.publish_ack(t, "world", b"world", qos=1)
    R.publish_ack(t, "retain", b"www", qos=1, retain=True)
    names, rows = R.wait_until(
        lambda: (lambda r: r if len(r[1]) == 3 else None)(
            admin_rows(store, f"select * from mqtt_msg where sender = {q}test{q} order by id")),
        timeout=WAIT, what="test's three messages")
    assert set(names) == {"id", "msgid", "topic", "sender", "node", "qos", "retain", "payload",
                          "arrived"}
    msgs = [dict(zip(names, r)) for r in rows]
    assert [(m["topic"], bytes(m["payload"]), m["qos"], m["retain"], m["node"])
            for m in msgs] == [("hello", b"hello", 1, 0, NODE), ("world", b"world", 1, 0, NODE),
                               ("retain", b"www", 1, 1, NODE)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", m["msgid"]) for m in msgs)
    assert msgs[0]["msgid"] < msgs[1]["msgid"] < msgs[2]["msgid"]

    names, rows = R.wait_until(
        lambda: (lambda r: r if r[1] else None)(
            admin_rows(store, f"select * from mqtt_retain where topic = {q}retain{q}")),
        timeout=WAIT, what="the retained row")
    assert names == ["id", "topic", "msgid", "sender", "node", "qos", "payload", "arrived"]
    ret = dict(zip(names, rows[0]))
    assert (ret["topic"], ret["msgid"], ret["sender"], ret["qos"], bytes(ret["payload"])) == \
        ("retain", msgs[2]["msgid"], "test", 1, b"www")

    # a subscriber acknowledges under its filter; the older text's
    # session.unsubscribed rule deletes the acknowledgement row again
    s = R.raw_connect(b.port, "reader", clean=False)
    assert R.sub_ack(s, [("hello", 1)]) == [1]
    got = R.recv_publishes(s, 1, timeout=WAIT)
    assert got[0].payload == b"hello"
    R.wait_until(lambda: store.positions("reader") == {"hello": msgs[0]["msgid"]},
                 timeout=WAIT, what="the read position")
    names, rows = admin_rows(store, f"select * from mqtt_acked where clientid = {q}reader{q}")
    assert rows and dict(zip(names, rows[0]))["mid"] == msgs[0]["id"]
    R.unsub_ack(s, ["hello"], pid=7)
    R.wait_until(lambda: store.positions("reader") == {}, timeout=WAIT,
                 what="the acknowledgement deleted at unsubscribe")

    t.send(R.disconnect())
    t.close()
    R.wait_until(lambda: str(store.clients()[0]["state"]) == "0", timeout=WAIT,
                 what="state 0")
    names, rows = admin_rows(store, f"select * from mqtt_client where clientid = {q}test{q}")
    row = dict(zip(names, rows[0]))
    assert str(row["state"]) == "0" and row["offline_at"] is not None
    assert row["offline_at"] >= row["online_at"]
    other.close()
    s.close()


# ---------------------------------------------------------------- outages

def load_conf(store, mode):
    return (store.conf(retry_max_backoff="500ms")
            + store.rule("message.publish", 1, {"function": "on_message_publish"},
                         topic="load/#")
            + f"backend.{store.name}.delivery_mode = {mode}\n")


def finish_load(store, pub, min_after=100):
    acked = pub.stop(min_after=min_after)
    R.wait_until(lambda: len(stored_payloads(store)) >= len(acked), timeout=60, interval=0.2,
                 what=f"{len(acked)} messages stored")
    assert stored_payloads(store) == acked, "missing, duplicated or out of order"
    return acked


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_server_restart_mid_load_loses_nothing(broker_factory, srv_store, mode):
    """The database server is restarted while a client publishes: every
    acknowledged message is stored at the end, once, in publish order."""
    store = srv_store
    b = broker_factory(conf=load_conf(store, mode), workers=2)
    pub = Publisher(b.port)
    pub.start()
    R.wait_until(lambda: len(stored_payloads(store)) >= 100, timeout=WAIT,
                 what="load under way")
    store.srv.stop()
    if mode == "async":  # acknowledged while the server is away
        n = len(pub.acked)
        R.wait_until(lambda: len(pub.acked) >= n + 50, timeout=WAIT,
                     what="PUBACKs during the outage")
    else:
        time.sleep(0.5)  # the publisher waits for its PUBACK meanwhile
    store.srv.start()
    finish_load(store, pub)
    assert "reconnecting" in b.log() or "cannot connect" in b.log() or "retrying" in b.log()


def broker_sessions(store):
    """Ids of the broker's own connections to the server."""
    if store.name == "mysql":
        _, rows = admin_rows(store, "select id from information_schema.processlist "
                                    "where user = 'keepmq'")
    else:
        _, rows = admin_rows(store, "select pid from pg_stat_activity "
                                    "where application_name = 'keepmq'")
    return [r[0] for r in rows]


def kill_sessions(store):
    ids = broker_sessions(store)
    for i in ids:
        try:
            if store.name == "mysql":
                c = store.srv.admin()
                try:
                    c.cursor().execute(f"kill connection {int(i)}")
                finally:
                    c.close()
            else:
                admin_rows(store, f"select pg_terminate_backend({int(i)})")
        except Exception:  # already gone
            pass
    return len(ids)


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_connections_killed_mid_load_lose_nothing(broker_factory, srv_store, mode):
    """The server kills the broker's connections (KILL CONNECTION,
    pg_terminate_backend) three times while a client publishes: the broker
    reconnects and retries, and nothing acknowledged is lost or doubled."""
    store = srv_store
    b = broker_factory(conf=load_conf(store, mode), workers=2)
    pub = Publisher(b.port)
    pub.start()
    killed = 0
    for round_ in range(3):
        R.wait_until(lambda: len(stored_payloads(store)) >= 100 * (round_ + 1), timeout=WAIT,
                     what=f"load under way ({round_})")
        R.wait_until(lambda: broker_sessions(store), timeout=WAIT,
                     what="the broker connected again")
        killed += kill_sessions(store) > 0
    assert killed == 3
    finish_load(store, pub)
    assert "reconnecting" in b.log(), b.log()[-2000:]


def test_idle_connections_timed_out_by_the_server_lose_nothing(broker_factory, srv_store):
    """The server closes idle connections after 1 s (MySQL wait_timeout,
    PostgreSQL idle_session_timeout): after a quiet spell the next messages
    find dead connections, which are replaced, and are stored."""
    store = srv_store
    store._ensure()
    if store.name == "mysql":
        on, off = "set global wait_timeout = 1", "set global wait_timeout = 28800"
    else:
        on = "alter role keepmq set idle_session_timeout = '1s'"
        off = "alter role keepmq reset idle_session_timeout"
    c = store.srv.admin()
    try:
        c.cursor().execute(on)
        b = broker_factory(conf=load_conf(store, "sync"), workers=2)
        first = R.raw_connect(b.port, "idle-1")
        sent = []
        for i in range(20):
            sent.append(b"a-%d" % i)
            R.publish_ack(first, "load/t", sent[-1], qos=1, pid=i + 1)
        assert stored_payloads(store) == sent  # sync: stored before the PUBACK
        R.wait_until(lambda: not broker_sessions(store), timeout=WAIT, interval=0.2,
                     what="the server to close the idle connections")
        for i in range(20):
            sent.append(b"b-%d" % i)
            R.publish_ack(first, "load/t", sent[-1], qos=1, pid=i + 1)
        assert stored_payloads(store) == sent
        first.close()
    finally:
        c.cursor().execute(off)
        c.close()


# ---------------------------------------------------------------- payloads and types

SPEC_TABLES = {
    # the spec's tables as printed, payload columns text; plus what keepmq
    # needs that they lack (docs/backends/<db>.md says so): the node columns
    # of PostgreSQL's mqtt_msg/mqtt_retain and mqtt_acked.msgid
    "pgsql": [
        "create table mqtt_msg (id SERIAL primary key, msgid character varying(60), "
        "sender character varying(100), topic character varying(200), qos integer, "
        "retain integer, payload text, arrived timestamp without time zone)",
        "create table mqtt_retain(id SERIAL primary key, topic character varying(200), "
        "msgid character varying(60), sender character varying(100), qos integer, "
        "payload text, arrived timestamp without time zone, UNIQUE (topic))",
        "create table mqtt_acked (id SERIAL primary key, clientid character varying(100), "
        "topic character varying(100), mid integer, created timestamp without time zone, "
        "UNIQUE (clientid, topic))",
        "alter table mqtt_msg add column node character varying(100)",
        "alter table mqtt_retain add column node character varying(100)",
        "alter table mqtt_acked add column msgid character varying(64)",
    ],
    "mysql": [
        "create table mqtt_msg (id int(11) unsigned NOT NULL AUTO_INCREMENT, "
        "msgid varchar(100) DEFAULT NULL, topic varchar(1024) NOT NULL, "
        "sender varchar(1024) DEFAULT NULL, node varchar(60) DEFAULT NULL, "
        "qos int(11) NOT NULL DEFAULT '0', retain tinyint(2) DEFAULT NULL, payload text, "
        "arrived datetime NOT NULL, PRIMARY KEY (id)) ENGINE=InnoDB DEFAULT CHARSET=utf8",
        "create table mqtt_retain (id int(11) unsigned NOT NULL AUTO_INCREMENT, "
        "topic varchar(200) DEFAULT NULL, msgid varchar(60) DEFAULT NULL, "
        "sender varchar(100) DEFAULT NULL, node varchar(100) DEFAULT NULL, "
        "qos int(2) DEFAULT NULL, payload text, "
        "arrived timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP, PRIMARY KEY (id), "
        "UNIQUE KEY mqtt_retain_key (topic)) ENGINE=InnoDB DEFAULT CHARSET=utf8",
        "create table mqtt_acked (id int(11) unsigned NOT NULL AUTO_INCREMENT, "
        "clientid varchar(200) DEFAULT NULL, topic varchar(200) DEFAULT NULL, "
        "mid int(200) DEFAULT NULL, created timestamp NULL DEFAULT NULL, PRIMARY KEY (id), "
        "UNIQUE KEY mqtt_acked_key (clientid,topic)) ENGINE=InnoDB DEFAULT CHARSET=utf8",
        "alter table mqtt_acked add column msgid varchar(64)",
    ],
}

BINARY = b"\x00\xff\xfe binary \x00 'quote' \\ \x80"


def test_base64_payloads_in_the_spec_text_columns(broker_factory, srv_store):
    """An operator who keeps the spec's text payload columns sets
    payload_encoding = base64 and create_tables = off: binary payloads are
    stored as base64 text and come back as the same bytes, fetched and
    retained."""
    store = srv_store
    store._ensure()
    for stmt in SPEC_TABLES[store.name]:
        store.execute(stmt, translate=False)
    conf = (store.conf(payload_encoding="base64", create_tables="off")
            + store.rule("message.publish", 1, {"function": "on_message_publish"}, topic="#")
            + store.rule("message.publish", 2, {"function": "on_message_retain"}, topic="#")
            + store.rule("session.subscribed", 1, {"function": "on_message_fetch"}, topic="#")
            + store.rule("session.subscribed", 2, {"function": "on_retain_lookup"}, topic="#")
            + store.rule("message.acked", 1, {"function": "on_message_acked"}, topic="#"))
    b = broker_factory(conf=conf, workers=2)
    p = R.raw_connect(b.port, "b64-pub")
    R.publish_ack(p, "b64/m", BINARY, qos=1)
    R.publish_ack(p, "b64/r", BINARY + b"r", qos=1, retain=True)
    R.wait_until(lambda: len(store.messages()) == 2, timeout=WAIT, what="two rows")
    assert [m["payload"] for m in store.messages()] == [
        base64.b64encode(BINARY).decode(), base64.b64encode(BINARY + b"r").decode()]
    R.wait_until(lambda: store.retained(), timeout=WAIT, what="the retained row")
    s = R.raw_connect(b.port, "b64-sub", clean=False)
    assert R.sub_ack(s, [("b64/#", 1)]) == [1]
    got = R.recv_publishes(s, 2, timeout=WAIT) + R.drain_publishes(s, quiet=0.5)
    # both stored messages (the retained one once: fetch and retained
    # lookup deliver one message id once), as bytes again
    assert sorted(x.payload for x in got) == sorted([BINARY, BINARY + b"r"])
    s.close()
    p.close()


def test_pgsql_raw_parameters_take_their_column_type(broker_factory, pg_store):
    """PostgreSQL: a value bound into a jsonb, timestamptz, bytea or smallint
    column of a raw action is read as that type (text format for all but
    bytea, which gets the bytes as they are)."""
    store = pg_store
    store.ensure_schema()
    store.execute("create table j (doc jsonb, at timestamptz, raw bytea, q smallint)",
                  translate=False)
    conf = store.conf() + store.rule("message.publish", 1, {"sql": [
        "insert into j(doc, at, raw, q) values(${payload}, "
        "to_timestamp(${timestamp} / 1000.0), ${payload}, ${qos})"]}, topic="json/#")
    b = broker_factory(conf=conf, workers=2)
    p = R.raw_connect(b.port, "json-pub")
    doc = b'{"a": [1, "it\'s"], "b": null}'
    R.publish_ack(p, "json/1", doc, qos=1)
    p.close()
    rows = R.wait_until(lambda: store.query(
        "select doc->'a'->>0 as a0, doc->'a'->>1 as a1, jsonb_typeof(doc->'b') as b, raw, q, "
        "extract(epoch from now() - at) as age from j"), timeout=WAIT, what="the row")
    r = rows[0]
    assert (r["a0"], r["a1"], r["b"]) == ("1", "it's", "null")
    assert bytes(r["raw"]) == doc
    assert r["q"] == 1
    assert abs(float(r["age"])) < 600


# ---------------------------------------------------------------- TLS

def test_tls_verified_and_refused_with_the_wrong_ca(broker_factory, srv_store, tmpdir_path):
    """ssl = on with ssl.verify and the CA that signed the server's
    certificate: the broker's connections are encrypted (MySQL: its account
    may log in over TLS only; PostgreSQL: pg_stat_ssl says so). With a CA
    that did not sign it, the connection is refused and nothing is written."""
    import sql_servers as S
    store = srv_store
    d = store._ensure()
    conf = store.conf(**{"ssl": "on", "ssl.verify": "on",
                         "ssl.cacertfile": store.srv.tls["ca.pem"]})
    if store.name == "mysql":
        c = store.srv.admin()
        try:
            c.cursor().execute("create user if not exists 'keepmq_tls'@'127.0.0.1' "
                               "identified by 'keepmq-pw' require ssl")
            c.cursor().execute("grant all privileges on `kmqt%`.* to 'keepmq_tls'@'127.0.0.1'")
        finally:
            c.close()
        conf = conf.replace(f".user = {d['user']}", ".user = keepmq_tls")
        assert ".user = keepmq_tls" in conf
    rules = store.rule("message.publish", 1, {"function": "on_message_publish"}, topic="tls/#")
    b = broker_factory(conf=conf + rules, workers=2)
    p = R.raw_connect(b.port, "tls-pub")
    for i in range(5):
        R.publish_ack(p, "tls/a", b"m%d" % i, qos=1, pid=i + 1)
    R.wait_until(lambda: stored_payloads(store, "tls/a") == [b"m%d" % i for i in range(5)],
                 timeout=WAIT, what="the messages stored over TLS")
    if store.name == "pgsql":
        _, rows = admin_rows(store, "select s.ssl, s.version from pg_stat_ssl s join "
                                    "pg_stat_activity a using (pid) "
                                    "where a.application_name = 'keepmq'")
        assert rows and all(r[0] for r in rows), rows
    p.close()
    b.stop()

    other = S.make_tls_files(os.path.join(tmpdir_path, "other-ca"))  # a stranger's CA
    b2 = broker_factory(conf=conf.replace(store.srv.tls["ca.pem"], other["ca.pem"]) + rules,
                        workers=2)
    p = R.raw_connect(b2.port, "tls-pub2")
    R.publish_ack(p, "tls/b", b"never", qos=1)
    R.wait_until(lambda: "certificate" in b2.log().lower(), timeout=WAIT,
                 what="the certificate refused in the log")
    assert stored_payloads(store, "tls/b") == []
    p.close()


# ---------------------------------------------------------------- fetch after async writes

def test_fetch_waits_for_writes_queued_on_other_connections(broker_factory, srv_store):
    """async mode, pool_size 2: the publisher's messages are written by one
    connection, behind a raw action that sleeps; a subscriber whose jobs go
    to the other connection subscribes right after the PUBACKs. Its fetch
    waits for the writes queued before it, so it gets every message (they
    reached no live subscription: missed by the fetch, they would be lost to
    it for good once its read position moved past them)."""
    store = srv_store
    pub_id = next(f"fb-pub-{i}" for i in range(100) if R.owner_worker(f"fb-pub-{i}", 2) == 0)
    sub_id = next(f"fb-sub-{i}" for i in range(100) if R.owner_worker(f"fb-sub-{i}", 2) == 1)
    nap = "do sleep(0.4)" if store.name == "mysql" else "select pg_sleep(0.4)"
    conf = (store.conf()
            + store.rule("message.publish", 1, {"sql": [nap]}, topic="fb/#")
            + store.rule("message.publish", 2, {"function": "on_message_publish"}, topic="fb/#")
            + store.rule("session.subscribed", 1, {"function": "on_message_fetch"}, topic="#")
            + store.rule("message.acked", 1, {"function": "on_message_acked"}, topic="#"))
    b = broker_factory(conf=conf, workers=2)
    p = R.raw_connect(b.port, pub_id)
    sent = [b"fb-%d" % i for i in range(3)]
    for i, m in enumerate(sent):
        R.publish_ack(p, "fb/t", m, qos=1, pid=i + 1)
    assert stored_payloads(store, "fb/t") == []  # still behind the naps
    s = R.raw_connect(b.port, sub_id, clean=False)
    assert R.sub_ack(s, [("fb/#", 1)]) == [1]
    got = R.recv_publishes(s, 3, timeout=WAIT)
    assert [x.payload for x in got] == sent
    s.close()
    p.close()
