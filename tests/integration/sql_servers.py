"""Private MariaDB 10.11 and PostgreSQL 15 servers on loopback (the SQL store
adapters' tests). Both classes have the same API:

    srv = MariaDBServer(dir)    # install-db into dir/data if absent, start on a free port
    srv = PostgresServer(dir)   # initdb (as user postgres) into dir/data if absent, start
    srv.host, srv.port          # "127.0.0.1" and the TCP port
    srv.socket                  # MariaDB: the socket file; PostgreSQL: the socket directory
    srv.admin(database=None)    # root / postgres connection over the socket, autocommit
    srv.restart()               # stop, then start again on the same port and data
    srv.kill9()                 # SIGKILL (start() brings it back, with crash recovery)
    srv.stop(); srv.start(); srv.alive(); srv.log()

    shared_mariadb(), shared_postgres()  # one each per pytest process, in a fresh /tmp
    stop_shared()                        # dir; stopped and removed at exit or by this
    new_mysql_database(srv), new_pg_database(srv)  # -> dict(host, port, user, password,
        # database): a fresh database kmqt_* for the broker account keepmq/keepmq-pw,
        # not an administrator (MariaDB: `kmqt%`.* only, so SET GLOBAL read_only=1 stops it)
    drop_database(kind, srv, name)       # kind "mysql"/"mariadb" or "pg"/"postgres"

root/postgres log in over the unix socket only; TCP needs a password.
"""
import atexit
import contextlib
import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import psycopg2
import pymysql

MARIADBD = os.environ.get("KEEPMQ_MARIADBD", "/usr/sbin/mariadbd")
MARIADB_INSTALL_DB = os.environ.get("KEEPMQ_MARIADB_INSTALL_DB", "/usr/bin/mariadb-install-db")
PG_BIN = os.environ.get("KEEPMQ_PG_BIN", "/usr/lib/postgresql/15/bin")
USER, PASSWORD = "keepmq", "keepmq-pw"


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _read(path, start=0):
    try:
        with open(path, "rb") as f:
            f.seek(start)
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _sock_dir(srv):
    """srv.dir, or a short directory under /tmp (srv.sock_tmp, removed by
    stop_shared) when a socket path in srv.dir would exceed the 107 bytes a
    unix socket address holds."""
    srv.sock_tmp = None if len(srv.dir) < 80 else tempfile.mkdtemp(prefix="kmq-sock-")
    return srv.sock_tmp or srv.dir


def _run(args, log, what, timeout=300):
    with open(log, "ab") as f:
        r = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                           timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{what} failed (status {r.returncode}); log:\n{_read(log)[-3000:]}")


def make_tls_files(dir, owner=None):
    """A CA and a server certificate for 127.0.0.1 (CN and IP SAN) signed by
    it, in dir: ca.pem, server.pem, server.key (and ca.key). Made once."""
    os.makedirs(dir, exist_ok=True)
    files = {k: os.path.join(dir, k) for k in ("ca.pem", "ca.key", "server.pem", "server.key")}
    if not os.path.exists(files["server.pem"]):
        log = os.path.join(dir, "openssl.log")
        _run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
              "-subj", "/CN=keepmq test CA", "-keyout", files["ca.key"], "-out", files["ca.pem"]],
             log, "openssl (CA)")
        csr = os.path.join(dir, "server.csr")
        _run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
              "-keyout", files["server.key"], "-out", csr], log, "openssl (request)")
        ext = os.path.join(dir, "san.ext")
        with open(ext, "w") as f:
            f.write("subjectAltName = IP:127.0.0.1\n")
        _run(["openssl", "x509", "-req", "-in", csr, "-CA", files["ca.pem"], "-CAkey",
              files["ca.key"], "-CAcreateserial", "-days", "30", "-extfile", ext,
              "-out", files["server.pem"]], log, "openssl (sign)")
        os.chmod(files["server.key"], 0o600)
        if owner is not None:
            for k in ("server.pem", "server.key"):
                os.chown(files[k], owner.pw_uid, owner.pw_gid)
    return files


class _Server:
    """srv.tls: the CA (ca.pem) that signed the server's certificate; both
    servers offer TLS, which clients may use or not."""
    name = "?"

    def __init__(self, dir, port=None):
        self.dir = os.path.abspath(dir)
        os.makedirs(self.dir, exist_ok=True)
        self.data = os.path.join(self.dir, "data")
        self.host = "127.0.0.1"
        self.fixed_port = port is not None
        self.port = port if port is not None else _free_port()
        self._prepare()
        self.start()

    def start(self, timeout=60.0):
        """Starts the server (if it is not running) and waits until an admin
        connection works. A port taken in the meantime is replaced by another
        free one, unless it was given (or the server ran before)."""
        if self.alive():
            return self
        for attempt in range(5):
            mark = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
            if self._launch(timeout) and self._wait_admin(timeout):
                self.fixed_port = True  # from now on restart() keeps it
                return self
            self.kill9()
            new = _read(self.log_path, mark)
            if self.fixed_port or "Address already in use" not in new:
                break
            self.port = _free_port()
        raise RuntimeError(f"{self.name} did not start on port {self.port}; log:\n"
                           f"{self.log()[-3000:]}")

    def _wait_admin(self, timeout):
        end = time.time() + timeout
        while time.time() < end:
            if not self.alive():
                return False
            try:
                self.admin().close()
                return True
            except (pymysql.err.MySQLError, psycopg2.Error):
                time.sleep(0.05)
        return False

    def log(self):
        return _read(self.log_path)

    def restart(self):
        self.stop()
        return self.start()


class MariaDBServer(_Server):
    name = "mariadbd"

    def _prepare(self):
        self.socket = os.path.join(_sock_dir(self), "mysql.sock")
        self.log_path = os.path.join(self.dir, "mariadb.log")
        self.proc = None
        self.tls = make_tls_files(self.dir)
        if not os.path.isdir(os.path.join(self.data, "mysql")):
            _run([MARIADB_INSTALL_DB, "--no-defaults", f"--datadir={self.data}", "--user=root",
                  "--auth-root-authentication-method=socket", "--skip-test-db"],
                 os.path.join(self.dir, "install-db.log"), "mariadb-install-db")

    def _launch(self, timeout):
        self.proc = subprocess.Popen(
            [MARIADBD, "--no-defaults", "--user=root", f"--datadir={self.data}",
             f"--socket={self.socket}", f"--port={self.port}", "--bind-address=127.0.0.1",
             "--skip-name-resolve", "--innodb-buffer-pool-size=64M",
             "--innodb-flush-log-at-trx-commit=2", f"--log-error={self.log_path}",
             # Debian's packaged defaults (its 50-server.cnf, skipped by --no-defaults)
             "--character-set-server=utf8mb4", "--collation-server=utf8mb4_general_ci",
             f"--ssl-ca={self.tls['ca.pem']}", f"--ssl-cert={self.tls['server.pem']}",
             f"--ssl-key={self.tls['server.key']}",
             f"--pid-file={os.path.join(self.dir, 'mariadb.pid')}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            cwd=self.dir, start_new_session=True)
        return True

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def admin(self, database=None):
        return pymysql.connect(unix_socket=self.socket, user="root", database=database,
                               autocommit=True, connect_timeout=5)

    def stop(self, timeout=60.0):
        """SIGTERM and wait (SIGKILL after timeout)."""
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill9()

    def kill9(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _proc_state(pid):
    """(state letter, ppid, name) of a process, or None when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            head, rest = f.read().rsplit(")", 1)
        fields = rest.split()
        return fields[0], int(fields[1]), head.split("(", 1)[1]
    except (OSError, IndexError, ValueError):
        return None


class PostgresServer(_Server):
    name = "postgres"

    def _prepare(self):
        pw = pwd.getpwnam("postgres")
        self.socket = _sock_dir(self)
        self.log_path = os.path.join(self.dir, "postgres.log")
        for d in {self.dir, self.socket}:
            os.chown(d, pw.pw_uid, pw.pw_gid)
            os.chmod(d, 0o700)
            p = os.path.dirname(d)  # parents must be traversable by postgres
            while p != "/":
                mode = os.stat(p).st_mode
                if not mode & 0o001:
                    os.chmod(p, (mode & 0o7777) | 0o001)
                p = os.path.dirname(p)
        if not os.path.isfile(os.path.join(self.data, "PG_VERSION")):
            _run(["runuser", "-u", "postgres", "--", f"{PG_BIN}/initdb", "-D", self.data,
                  "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8"],
                 os.path.join(self.dir, "initdb.log"), "initdb")
            with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
                f.write("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
        self.tls = make_tls_files(self.dir, owner=pw)

    def _pg_ctl(self, *args, timeout=60.0):
        return subprocess.run(["runuser", "-u", "postgres", "--", f"{PG_BIN}/pg_ctl", "-D",
                               self.data, "-t", str(int(timeout)), *args],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=timeout + 30).returncode

    def _launch(self, timeout):
        opts = (f"-p {self.port} -k {self.socket} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
                f"-c ssl=on -c ssl_cert_file={self.tls['server.pem']} "
                f"-c ssl_key_file={self.tls['server.key']}")
        return self._pg_ctl("-l", self.log_path, "-w", "-o", opts, "start", timeout=timeout) == 0

    def pid(self):
        """The postmaster's pid (line 1 of data/postmaster.pid), or None."""
        try:
            with open(os.path.join(self.data, "postmaster.pid")) as f:
                return int(f.readline())
        except (OSError, ValueError):
            return None

    def alive(self):
        pid = self.pid()
        st = pid and _proc_state(pid)
        return bool(st) and st[0] not in "ZX" and st[2] == "postgres"

    def admin(self, database="postgres"):
        c = psycopg2.connect(host=self.socket, port=self.port, user="postgres",
                             dbname=database, connect_timeout=5)
        c.autocommit = True
        return c

    def stop(self, timeout=60.0):
        if self.alive() and self._pg_ctl("-m", "fast", "-w", "stop", timeout=timeout) != 0:
            self.kill9()

    def kill9(self):
        """SIGKILL to the postmaster and its children (a whole-server crash),
        then waits until they are reaped, not just zombies: a new postmaster
        refuses to start while the old pid exists (pg_ctl orphaned it, and a
        slowly reaping init, as in some VMs, makes this take a second or two)."""
        pid = self.pid()
        if not self.alive():
            return
        pids = [pid] + [int(p) for p in os.listdir("/proc")
                        if p.isdigit() and (_proc_state(p) or ("", 0))[1] == pid]
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        end = time.time() + 30
        while time.time() < end and any(_proc_state(p) for p in pids):
            time.sleep(0.02)


# ------------------------------------------------------- shared servers, databases
_lock = threading.RLock()
_shared = {}
_counter = itertools.count(1)


def _shared_server(cls, prefix):
    with _lock:
        srv = _shared.get(cls)
        if srv is None:
            if not _shared:
                atexit.register(stop_shared)
            d = tempfile.mkdtemp(prefix=prefix)
            try:
                srv = _shared[cls] = cls(d)
            except BaseException:
                shutil.rmtree(d, ignore_errors=True)
                raise
        return srv.start()


def shared_mariadb():
    return _shared_server(MariaDBServer, "keepmq-mariadb-")


def shared_postgres():
    return _shared_server(PostgresServer, "keepmq-pg-")


def stop_shared():
    with _lock:
        while _shared:
            _, srv = _shared.popitem()
            try:
                srv.stop()
            finally:
                for d in (srv.dir, srv.sock_tmp):
                    if d:
                        shutil.rmtree(d, ignore_errors=True)


def _new_name():
    return f"kmqt_{os.getpid()}_{next(_counter)}"


def new_mysql_database(srv):
    name = _new_name()
    with contextlib.closing(srv.admin()) as c, c.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        cur.execute(f"CREATE USER IF NOT EXISTS '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'")
        cur.execute(f"GRANT ALL PRIVILEGES ON `kmqt%`.* TO '{USER}'@'127.0.0.1'")
    return dict(host=srv.host, port=srv.port, user=USER, password=PASSWORD, database=name)


def new_pg_database(srv):
    name = _new_name()
    with contextlib.closing(srv.admin()) as c, c.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (USER,))
        if cur.fetchone() is None:
            cur.execute(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")
        cur.execute(f"CREATE DATABASE {name} OWNER {USER}")
    return dict(host=srv.host, port=srv.port, user=USER, password=PASSWORD, database=name)


def drop_database(kind, srv, name):
    """Drops a test database; PostgreSQL sessions still on it are terminated."""
    if not re.fullmatch(r"kmqt\w*", name):
        raise ValueError(f"not a test database: {name!r}")
    if kind in ("mysql", "mariadb"):
        sql = f"DROP DATABASE IF EXISTS `{name}`"
    elif kind in ("pg", "postgres", "postgresql"):
        sql = f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    else:
        raise ValueError(f"unknown database kind: {kind!r}")
    with contextlib.closing(srv.admin()) as c, c.cursor() as cur:
        cur.execute(sql)
