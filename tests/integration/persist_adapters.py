"""Store adapters for the shared persistence suite.

The persistence tests (test_persist_*.py) are written once, against this
interface; each backend adds one adapter class here and its name to
ADAPTERS, and the whole suite runs against it. An adapter knows how to point
a broker at its store, how to name the backend's functions, how to write a
raw action that records events, and how to read the store back in the spec's
column names (the SQL family's table columns; other backends map their own
layout onto them):

    name                    the <db> of backend.<db>.* ("sqlite", "redis")
    family                  "sql" for the SQL family (raw {"sql": [...]}
                            actions, tables); tests that are about SQL itself
                            take the `sql_store` fixture, which only runs
                            the adapters of that family
    messages_in_publish_order
                            True when messages() lists the messages of
                            different publishers in publish order too (SQLite:
                            rows in write order, one connection writing jobs in
                            the order they were published); False when only
                            each publisher's own messages are (Redis: msgid
                            order, exact for one publisher but only to the
                            millisecond across publishers, see ${msgid} in
                            docs/persistence.md)
    has_msg_node            True when stored messages and retained messages
                            keep the publishing node (SQL: the node column;
                            Redis stores no node: messages()/retained()
                            report None)
    conf(pool="pool1", **keys)
                            the backend.<db>.<pool>.* lines for the broker
                            (connection settings, plus the given pool keys)
    rule(point, n, action, topic=None, pool="pool1", **opts)
                            one backend.<db>.hook.<point>.<n> line
    fn(name)                the backend's name of a built-in function named
                            as in the SQL family: identity for SQL; Redis:
                            on_message_fetch -> on_message_fetch_for_pubsub,
                            on_message_acked -> on_message_acked_for_pubsub
    record(table, **cols)   a raw action (the dict that goes in "action")
                            that appends one record per event to `table`,
                            with these columns; each value is a ${var}
                            placeholder (clientid, username, peerhost, node,
                            topic, qos, msgid, payload, retain, timestamp) or
                            a literal string without spaces. SQL: creates the
                            table now if needed and returns {"sql": [insert]};
                            Redis: {"commands": ["XADD keepmq:test:<table> *
                            col1 v1 col2 v2 ..."]} (a stream)
    records(table)          the records of `table` in insertion order, as
                            dicts column -> str (None for an SQL NULL), the
                            column "payload" as bytes
    failing_action()        a raw action that fails for good on every event
                            (SQL: an insert into a table that does not exist;
                            Redis: HSET with a missing argument, which Redis
                            refuses when it runs)
    clients()               mqtt_client rows (dicts: clientid, state, node,
                            online_at, offline_at (None while online))
    messages()              mqtt_msg rows, oldest first (msgid, topic, sender,
                            node, qos, retain, payload as bytes, arrived)
    retained()              mqtt_retain rows by topic (topic, msgid, sender,
                            node, qos, payload as bytes, arrived)
    positions(clientid)     {filter: msgid}: the client's read positions
    provision_sub(cid, topic, qos)   a subscription the operator provisioned
                            (SQL: a row of mqtt_sub; Redis: mqtt:sub:<cid>)
    put_retained(topic, payload, qos=1, msgid=None)
                            a retained message written by someone else
    ensure_schema()         creates the tables (as keepmq would) so a test can
                            provision rows before the first broker start
                            (no-op where there is no schema)
    unavailable()           context manager: the store refuses writes while
                            inside, with an error the broker retries (SQLite:
                            another connection holds an exclusive lock;
                            Redis: min-replicas-to-write 1 without replicas,
                            so every write fails with NOREPLICAS), and
                            accepts them again after
    close()                 optional: called by the fixture after the test
                            (and after its brokers have stopped), e.g. to
                            stop a server the adapter started

SQL family only (the `sql_store` fixture):
    query(sql, *args)       rows of any query
    execute(sql, *args)     a statement

SQLite only (the filesystem under the database file; run as root; the
`file_store` fixture runs the adapters that have these):
    small_filesystem(size="16m")    context manager: mounts a tmpfs of that
                            size and moves the store onto it (enter it before
                            conf()); yields the mount point. At exit it is made
                            writable again and unmounted, always (lazily if a
                            process still holds a file there).
    filesystem_outage(kind) context manager, inside small_filesystem: "full"
                            fills the filesystem (the broker's writes fail
                            with SQLITE_FULL) and at exit grows it (remount
                            with 4x the size); "readonly" remounts it
                            read-only and read-write again at exit (Linux
                            refuses that, EBUSY, while any process holds a
                            file there open for writing)

The Redis adapter starts its own redis-server (redis_server.py) on the first
conf() or read, in the test's temporary directory, and stops it in close().
Where keepmq's Redis backend keeps things (the adapter reads them back):
    mqtt:client:<cid>       hash state, online_at, offline_at ("undefined"
                            while online)
    mqtt:owner:<cid>        the node of the client's last connection
    mqtt:msg:<msgid>        hash id, from, qos, topic, retain, payload, ts
    mqtt:msg:<topic>        sorted set of the topic's msgids
    mqtt:retain:<topic>     hash id, from, qos, topic, retain, payload, ts
    mqtt:index:retain       set of retained topics
    mqtt:acked:<cid>:<filter>   the msgid last acknowledged under the filter
    mqtt:sub:<cid>          hash filter -> qos (provisioned)
"""

import contextlib
import datetime
import errno
import json
import os
import random
import re
import sqlite3
import subprocess
import time

PLACEHOLDER = re.compile(r"\$\{[a-z_]+\}")


def _is_placeholder(v):
    return isinstance(v, str) and PLACEHOLDER.fullmatch(v) is not None



def rule_line(db, point, n, action, topic, pool, opts):
    """One backend.<db>.hook.<point>.<n> line (every adapter's rule())."""
    r = {}
    if topic is not None:
        r["topic"] = topic
    r["action"] = action
    r["pool"] = pool
    r.update(opts)
    return f"backend.{db}.hook.{point}.{n} = {json.dumps(r)}\n"


class _SqlAdapter:
    """What the SQL adapters share: rule(), fn(), failing_action(), and
    record() and records() on their execute() and query();
    column_type(col) gives the type of a record table's column."""

    def rule(self, point, n, action, topic=None, pool="pool1", **opts):
        return rule_line(self.name, point, n, action, topic, pool, opts)

    def fn(self, name):
        return name

    def failing_action(self):
        return {"sql": ["insert into keepmq_no_such_table(topic) values(${topic})"]}

    def record(self, table, **cols):
        """{"sql": [insert into table(cols) values(...)]}; the table is
        created now if it does not exist."""
        assert cols, "record() needs at least one column"
        self.ensure_schema()
        defs = ", ".join(f"{c} {self.column_type(c)}".rstrip() for c in cols)
        self.execute(f"create table if not exists {table} ({defs})")
        vals = []
        for v in cols.values():
            if _is_placeholder(v):
                vals.append(v)
            else:
                vals.append("'" + str(v).replace("'", "''") + "'")
        return {"sql": [f"insert into {table}({', '.join(cols)}) values({', '.join(vals)})"]}

    def records(self, table):
        out = []
        for r in self.query(f"select * from {table} order by rowid"):
            d = {}
            for k, v in r.items():
                if v is None:
                    d[k] = None
                elif k == "payload":
                    d[k] = v.encode() if isinstance(v, str) else bytes(v)
                elif isinstance(v, (bytes, bytearray, memoryview)):
                    d[k] = bytes(v).decode("utf-8", "surrogateescape")
                else:
                    d[k] = str(v)
            out.append(d)
        return out


class SqliteStore(_SqlAdapter):
    name = "sqlite"
    family = "sql"
    messages_in_publish_order = True
    has_msg_node = True

    def __init__(self, tmpdir):
        self.dir = os.path.join(tmpdir, "store")
        os.makedirs(self.dir, exist_ok=True)
        self.path = os.path.join(self.dir, "keepmq.db")

    # ------------------------------------------------------------ broker side
    def conf(self, pool="pool1", **keys):
        lines = [f"backend.sqlite.{pool}.database = {self.path}",
                 f"backend.sqlite.{pool}.busy_timeout = 200ms"]
        for k, v in keys.items():
            lines.append(f"backend.sqlite.{pool}.{k} = {v}")
        return "\n".join(lines) + "\n"

    def column_type(self, col):
        """Untyped columns: values keep the type they are bound with."""
        return ""

    # ------------------------------------------------------------ store side
    def _conn(self):
        c = sqlite3.connect(self.path, timeout=10)
        c.row_factory = sqlite3.Row
        return c

    def query(self, sql, *args):
        if not os.path.exists(self.path):
            return []
        c = self._conn()
        try:
            return [dict(r) for r in c.execute(sql, args).fetchall()]
        finally:
            c.close()

    def execute(self, sql, *args):
        c = self._conn()
        try:
            c.execute(sql, args)
            c.commit()
        finally:
            c.close()

    def clients(self):
        return self.query("select clientid, state, node, online_at, offline_at from mqtt_client "
                          "order by id")

    def messages(self):
        rows = self.query("select msgid, topic, sender, node, qos, retain, payload, arrived "
                          "from mqtt_msg order by id")
        for r in rows:
            if isinstance(r["payload"], str):
                r["payload"] = r["payload"].encode()
        return rows

    def retained(self):
        rows = self.query("select topic, msgid, sender, node, qos, payload, arrived "
                          "from mqtt_retain order by topic")
        for r in rows:
            if isinstance(r["payload"], str):
                r["payload"] = r["payload"].encode()
        return rows

    def positions(self, clientid):
        return {r["topic"]: r["msgid"] for r in
                self.query("select topic, msgid from mqtt_acked where clientid = ?", clientid)}

    def ensure_schema(self):
        """Creates the tables (as keepmq would) so a test can provision rows
        before the first broker start."""
        root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
        with open(os.path.join(root, "etc", "sql", "sqlite.sql")) as f:
            schema = f.read()
        c = self._conn()
        try:
            c.executescript(schema)
            c.commit()
        finally:
            c.close()

    def provision_sub(self, clientid, topic, qos):
        self.ensure_schema()
        self.execute("insert into mqtt_sub(clientid, topic, qos) values(?, ?, ?)",
                     clientid, topic, qos)

    def put_retained(self, topic, payload, qos=1, msgid=None):
        self.ensure_schema()
        self.execute("insert into mqtt_retain(topic, msgid, sender, node, qos, payload, arrived) "
                     "values(?, ?, 'other-node-client', 'other@node', ?, ?, "
                     "datetime('now'))", topic, msgid, qos, payload)

    @contextlib.contextmanager
    def unavailable(self):
        """Another connection holds an exclusive lock: every write of the
        broker fails with SQLITE_BUSY (after busy_timeout) and is retried."""
        self.ensure_schema()
        c = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        try:
            c.execute("begin exclusive")
            yield
        finally:
            c.execute("rollback")
            c.close()

    @contextlib.contextmanager
    def small_filesystem(self, size="16m"):
        """Mounts a tmpfs of `size` and puts the database there; see the
        module docstring."""
        mnt = os.path.join(os.path.dirname(self.dir), "store-fs")
        os.makedirs(mnt, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "keepmq-test", mnt],
                       check=True, capture_output=True, text=True)
        self.fs_mount, self.fs_size = mnt, size
        self.path = os.path.join(mnt, "keepmq.db")
        try:
            yield mnt
        finally:
            subprocess.run(["mount", "-o", "remount,rw", mnt], capture_output=True)
            if subprocess.run(["umount", mnt], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", mnt], capture_output=True)

    @contextlib.contextmanager
    def filesystem_outage(self, kind="full"):
        """Breaks the filesystem of small_filesystem while inside: "full" or
        "readonly"; see the module docstring."""
        mnt = self.fs_mount
        if kind == "full":
            fd = os.open(os.path.join(mnt, "filler"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            try:
                for chunk in (1 << 20, 65536, 4096, 512, 1):
                    data = b"\0" * chunk
                    try:
                        while True:
                            os.write(fd, data)
                    except OSError as e:
                        if e.errno != errno.ENOSPC:
                            raise
            finally:
                os.close(fd)
            try:
                yield
            finally:
                m = re.fullmatch(r"(\d+)([kmg]?)", str(self.fs_size).lower())
                bigger = f"{int(m.group(1)) * 4}{m.group(2)}" if m else "256m"
                subprocess.run(["mount", "-o", f"remount,size={bigger}", mnt], check=True,
                               capture_output=True, text=True)
                self.fs_size = bigger
        elif kind == "readonly":
            p = subprocess.run(["mount", "-o", "remount,ro", mnt], capture_output=True, text=True)
            if p.returncode != 0:
                raise RuntimeError(f"cannot remount {mnt} read-only: {p.stderr.strip()}")
            try:
                yield
            finally:
                subprocess.run(["mount", "-o", "remount,rw", mnt], check=True,
                               capture_output=True, text=True)
        else:
            raise ValueError(f"unknown filesystem outage {kind!r}")


def _glob_escape(b):
    """b (bytes) as a literal in a Redis MATCH pattern."""
    out = bytearray()
    for ch in b:
        if ch in b"\\*?[]^-":
            out += b"\\"
        out.append(ch)
    return bytes(out)


def _text(v):
    if v is None:
        return None
    return bytes(v).decode("utf-8", "surrogateescape")


class RedisStore:
    """keepmq's Redis backend, on a redis-server of the test's own
    (redis_server.RedisServer), started on the first conf() or read and
    stopped by close()."""
    name = "redis"
    family = "redis"
    messages_in_publish_order = False
    has_msg_node = False
    FUNCTIONS = {"on_message_fetch": "on_message_fetch_for_pubsub",
                 "on_message_acked": "on_message_acked_for_pubsub"}
    STREAM = "keepmq:test:"

    def __init__(self, tmpdir):
        self.dir = os.path.join(tmpdir, "store")
        os.makedirs(self.dir, exist_ok=True)
        self.server = None
        self._client = None

    def _srv(self):
        if self.server is None:
            from redis_server import RedisServer
            self.server = RedisServer(self.dir)
        return self.server

    def _r(self):
        srv = self._srv()
        if self._client is None:
            self._client = srv.client()
        return self._client

    def close(self):
        if self._client is not None:
            try:
                self._client.close()
            except Exception:
                pass
            self._client = None
        if self.server is not None:
            self.server.stop()

    # ------------------------------------------------------------ broker side
    def conf(self, pool="pool1", **keys):
        srv = self._srv()
        lines = [f"backend.redis.{pool}.server = {srv.host}:{srv.port}",
                 f"backend.redis.{pool}.database = 0",
                 f"backend.redis.{pool}.pool_size = 2"]
        for k, v in keys.items():
            lines.append(f"backend.redis.{pool}.{k} = {v}")
        return "\n".join(lines) + "\n"

    def rule(self, point, n, action, topic=None, pool="pool1", **opts):
        return rule_line(self.name, point, n, action, topic, pool, opts)

    def fn(self, name):
        return self.FUNCTIONS.get(name, name)

    def record(self, table, **cols):
        assert cols, "record() needs at least one column"
        args = []
        for k, v in cols.items():
            v = str(v)
            assert v and " " not in v and " " not in k, (k, v)
            args += [k, v]
        return {"commands": [" ".join(["XADD", self.STREAM + table, "*"] + args)]}

    def records(self, table):
        out = []
        for _id, fields in self._r().xrange(self.STREAM + table, "-", "+"):
            d = {}
            for k, v in fields.items():
                k = _text(k)
                d[k] = bytes(v) if k == "payload" else _text(v)
            out.append(d)
        return out

    def failing_action(self):
        # wrong number of arguments: Redis answers an error when it runs
        return {"commands": ["HSET keepmq:test:onlyone"]}

    # ------------------------------------------------------------ store side
    def _scan(self, prefix, rest=b"*"):
        """The keys prefix + (glob rest), prefix taken literally."""
        return list(self._r().scan_iter(match=_glob_escape(prefix) + rest, count=1000))

    def _hashes(self, keys):
        """{key: hash} of those keys that are hashes (TYPE checked)."""
        r = self._r()
        p = r.pipeline(transaction=False)
        for k in keys:
            p.type(k)
        types = p.execute()
        keys = [k for k, t in zip(keys, types) if t == b"hash"]
        p = r.pipeline(transaction=False)
        for k in keys:
            p.hgetall(k)
        return {k: h for k, h in zip(keys, p.execute()) if h}

    def clients(self):
        prefix = b"mqtt:client:"
        hashes = self._hashes(self._scan(prefix))
        cids = sorted(k[len(prefix):] for k in hashes)
        owners = self._r().mget([b"mqtt:owner:" + c for c in cids]) if cids else []
        rows = []
        for cid, owner in zip(cids, owners):
            h = hashes[prefix + cid]
            off = _text(h.get(b"offline_at"))
            rows.append({"clientid": _text(cid), "state": _text(h.get(b"state")),
                         "node": _text(owner), "online_at": _text(h.get(b"online_at")),
                         "offline_at": None if off in (None, "undefined") else off})
        return rows

    def messages(self):
        rows = []
        for h in self._hashes(self._scan(b"mqtt:msg:")).values():
            if b"id" not in h:
                continue
            rows.append({"msgid": _text(h[b"id"]), "topic": _text(h.get(b"topic")),
                         "sender": _text(h.get(b"from")), "node": None,
                         "qos": _text(h.get(b"qos")), "retain": _text(h.get(b"retain")),
                         "payload": bytes(h.get(b"payload", b"")),
                         "arrived": _text(h.get(b"ts"))})
        rows.sort(key=lambda m: m["msgid"])
        return rows

    def retained(self):
        prefix = b"mqtt:retain:"
        rows = []
        for k, h in self._hashes(self._scan(prefix)).items():
            rows.append({"topic": _text(h.get(b"topic", k[len(prefix):])),
                         "msgid": _text(h.get(b"id")), "sender": _text(h.get(b"from")),
                         "node": None, "qos": _text(h.get(b"qos")),
                         "payload": bytes(h.get(b"payload", b"")),
                         "arrived": _text(h.get(b"ts"))})
        rows.sort(key=lambda r: r["topic"])
        return rows

    def positions(self, clientid):
        prefix = b"mqtt:acked:" + clientid.encode() + b":"
        keys = self._scan(prefix)
        vals = self._r().mget(keys) if keys else []
        return {_text(k[len(prefix):]): _text(v) for k, v in zip(keys, vals) if v is not None}

    def ensure_schema(self):
        pass

    def provision_sub(self, clientid, topic, qos):
        self._r().hset(f"mqtt:sub:{clientid}", topic, str(qos))

    def put_retained(self, topic, payload, qos=1, msgid=None):
        if msgid is None:
            # keepmq's shape: 48 bits of milliseconds, a sequence, an instance
            msgid = "%016x%016x" % ((int(time.time() * 1000) << 16) | random.getrandbits(16),
                                    random.getrandbits(64))
        r = self._r()
        r.hset(f"mqtt:retain:{topic}", mapping={
            "id": msgid, "from": "other-node-client", "qos": str(qos), "topic": topic,
            "retain": "1", "payload": payload, "ts": str(int(time.time()))})
        r.sadd("mqtt:index:retain", topic)

    @contextlib.contextmanager
    def unavailable(self):
        """Every write fails with NOREPLICAS (min-replicas-to-write 1 and no
        replica) until the exit; reads still work."""
        r = self._r()
        r.config_set("min-replicas-to-write", 1)
        try:
            yield
        finally:
            r.config_set("min-replicas-to-write", 0)



# ---------------------------------------------------------------- MySQL, PostgreSQL

_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _norm(v):
    """A column value as the SQLite adapter gives it: datetimes as UTC text
    'YYYY-MM-DD HH:MM:SS', binary as bytes."""
    if isinstance(v, datetime.datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    return v


class _ServerSqlStore(_SqlAdapter):
    """What the MySQL and PostgreSQL adapters share: a fresh database on the
    process's shared server (sql_servers.py) per test, dropped by close().

    The shared suite's SQL-family tests write their SQL in SQLite's words;
    query() and execute() translate the few that differ: `?` parameters,
    the types blob and integer, and rowid (each table created through
    execute() gets an auto-increment kmq_rowid column, which reads leave
    out)."""
    family = "sql"
    messages_in_publish_order = False  # pool_size 2: only per publisher
    has_msg_node = True
    user_key = "user"
    BLOB = "longblob"
    SERIAL = "bigint auto_increment primary key"

    def __init__(self, tmpdir):
        self.db = None
        self.srv = None

    def _ensure(self):
        if self.db is None:
            import sql_servers as S
            self.srv = self._server()
            self.db = self._new_database(self.srv)
        return self.db

    def close(self):
        if self.db is not None:
            import sql_servers as S
            try:
                S.drop_database(self.name, self.srv, self.db["database"])
            except Exception:
                pass
            self.db = None

    # ------------------------------------------------------------ broker side
    def conf(self, pool="pool1", **keys):
        d = self._ensure()
        lines = [f"backend.{self.name}.{pool}.server = {d['host']}:{d['port']}",
                 f"backend.{self.name}.{pool}.{self.user_key} = {d['user']}",
                 f"backend.{self.name}.{pool}.password = {d['password']}",
                 f"backend.{self.name}.{pool}.database = {d['database']}",
                 f"backend.{self.name}.{pool}.pool_size = 2"]
        for k, v in keys.items():
            lines.append(f"backend.{self.name}.{pool}.{k} = {v}")
        return "\n".join(lines) + "\n"

    def column_type(self, col):
        return self.BLOB if col == "payload" else "text"

    # ------------------------------------------------------------ store side
    def _translate(self, sql, has_args):
        s = re.sub(r"\bblob\b", self.BLOB, sql, flags=re.I)
        s = re.sub(r"\binteger\b", "bigint", s, flags=re.I)
        s = re.sub(r"\browid\b", "kmq_rowid", s, flags=re.I)
        s = re.sub(r"^(\s*create table(?: if not exists)? \w+\s*\()",
                   lambda m: m.group(1) + f"kmq_rowid {self.SERIAL}, ", s, flags=re.I)
        if has_args:
            s = s.replace("%", "%%").replace("?", "%s")
        return s

    def query(self, sql, *args):
        c = self._connect()
        try:
            cur = c.cursor()
            cur.execute(self._translate(sql, bool(args)), args or None)
            names = [d[0] for d in cur.description]
            return [{k: _norm(v) for k, v in zip(names, row) if k != "kmq_rowid"}
                    for row in cur.fetchall()]
        finally:
            c.close()

    def execute(self, sql, *args, translate=True):
        c = self._connect()
        try:
            c.cursor().execute(self._translate(sql, bool(args)) if translate else sql,
                               args or None)
        finally:
            c.close()

    def _table_rows(self, sql, *args):
        """query(), or [] while the table does not exist yet (keepmq creates
        it when its first connection opens)."""
        try:
            return self.query(sql, *args)
        except Exception as e:
            if getattr(e, "pgcode", None) == "42P01" or (e.args and e.args[0] == 1146):
                return []
            raise

    def clients(self):
        rows = self._table_rows("select clientid, state, node, online_at, offline_at "
                                "from mqtt_client order by id")
        for r in rows:
            r["state"] = None if r["state"] is None else str(r["state"])
        return rows

    def messages(self):
        return self._table_rows("select msgid, topic, sender, node, qos, retain, payload, "
                                "arrived from mqtt_msg order by msgid")

    def retained(self):
        return sorted(self._table_rows("select topic, msgid, sender, node, qos, payload, arrived "
                                       "from mqtt_retain"), key=lambda r: r["topic"].encode())

    def positions(self, clientid):
        return {r["topic"]: r["msgid"] for r in
                self._table_rows("select topic, msgid from mqtt_acked where clientid = ?",
                                 clientid)}

    def ensure_schema(self):
        with open(os.path.join(_ROOT, "etc", "sql", f"{self.name}.sql")) as f:
            schema = f.read()
        for stmt in schema.split(";\n"):
            if re.sub(r"--[^\n]*", "", stmt).strip():
                self.execute(stmt, translate=False)

    def provision_sub(self, clientid, topic, qos):
        self.ensure_schema()
        self.execute("insert into mqtt_sub(clientid, topic, qos) values(?, ?, ?)",
                     clientid, topic, qos)

    def put_retained(self, topic, payload, qos=1, msgid=None):
        self.ensure_schema()
        now = datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M:%S")
        self.execute("insert into mqtt_retain(topic, msgid, sender, node, qos, payload, arrived) "
                     "values(?, ?, 'other-node-client', 'other@node', ?, ?, ?)",
                     topic, msgid, qos, payload, now)


class MySQLStore(_ServerSqlStore):
    """keepmq's MySQL backend on MariaDB 10.11 (sql_servers.shared_mariadb),
    logged in as a user with privileges on its test databases only; the
    adapter reads and writes as root."""
    name = "mysql"

    def _server(self):
        import sql_servers as S
        return S.shared_mariadb()

    def _new_database(self, srv):
        import sql_servers as S
        return S.new_mysql_database(srv)

    def _connect(self):
        d = self._ensure()
        return self.srv.admin(d["database"])

    @contextlib.contextmanager
    def unavailable(self):
        """SET GLOBAL read_only: every write of the broker's user fails with
        error 1290 (which it retries); root still reads and writes."""
        self._ensure()
        a = self.srv.admin()
        try:
            a.cursor().execute("set global read_only = 1")
            yield
        finally:
            a.cursor().execute("set global read_only = 0")
            a.close()


class PgStore(_ServerSqlStore):
    """keepmq's PostgreSQL backend on PostgreSQL 15
    (sql_servers.shared_postgres); the broker and the adapter both log in as
    the database's owner, keepmq (not a superuser)."""
    name = "pgsql"
    user_key = "username"
    BLOB = "bytea"
    SERIAL = "bigserial primary key"

    def _server(self):
        import sql_servers as S
        return S.shared_postgres()

    def _new_database(self, srv):
        import sql_servers as S
        return S.new_pg_database(srv)

    def _connect(self):
        import psycopg2
        d = self._ensure()
        c = psycopg2.connect(host=d["host"], port=d["port"], user=d["user"],
                             password=d["password"], dbname=d["database"])
        c.autocommit = True
        return c

    @contextlib.contextmanager
    def unavailable(self):
        """INSERT, UPDATE and DELETE revoked from keepmq on every table:
        the broker's writes fail with insufficient_privilege (42501, which
        it retries); reads still work."""
        d = self._ensure()
        a = self.srv.admin(d["database"])
        try:
            a.cursor().execute("revoke insert, update, delete on all tables in schema public "
                               "from keepmq")
            yield
        finally:
            a.cursor().execute("grant insert, update, delete on all tables in schema public "
                               "to keepmq")
            a.close()


ADAPTERS = {"sqlite": SqliteStore, "redis": RedisStore, "mysql": MySQLStore, "pgsql": PgStore}
