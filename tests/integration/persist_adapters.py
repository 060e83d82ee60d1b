"""Store adapters for the shared persistence suite.

The persistence tests (test_persist_*.py) are written once, against this
interface; each backend adds one adapter class here and its name to
ADAPTERS, and the whole suite runs against it. An adapter knows how to point
a broker at its store and how to read the store back, in the spec's table
and column names:

    name                    the <db> of backend.<db>.* ("sqlite")
    conf(pool="pool1")      the backend.<db>.<pool>.* lines for the broker
    rule(point, n, action, topic=None, pool="pool1", **opts)
                            one backend.<db>.hook.<point>.<n> line
    clients()               mqtt_client rows (dicts: clientid, state, node,
                            online_at, offline_at)
    messages()              mqtt_msg rows, oldest first (msgid, topic, sender,
                            qos, retain, payload as bytes, arrived)
    retained()              mqtt_retain rows by topic
    positions(clientid)     {filter: msgid} from mqtt_acked
    provision_sub(cid, topic, qos)   a row of mqtt_sub (operators provision it)
    put_retained(topic, payload, qos=1, msgid=None)
                            a retained row written by someone else
    query(sql, *args)       rows of any query (raw-action tests)
    execute(sql, *args)     a statement (creating tables for raw actions)
    unavailable()           context manager: the store refuses writes while
                            inside (for SQLite: another connection holds an
                            exclusive lock), and accepts them again after

SQLite only (the filesystem under the database file; run as root):
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
"""
import contextlib
import errno
import os
import re
import subprocess
import sqlite3
import json


class SqliteStore:
    name = "sqlite"

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

    def rule(self, point, n, action, topic=None, pool="pool1", **opts):
        r = {}
        if topic is not None:
            r["topic"] = topic
        r["action"] = action
        r["pool"] = pool
        r.update(opts)
        return f"backend.sqlite.hook.{point}.{n} = {json.dumps(r)}\n"

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


ADAPTERS = {"sqlite": SqliteStore}
