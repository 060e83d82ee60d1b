"""Authentication and authorisation: anonymous access, the password file
(made with the `keepmq passwd` command), password checks on the thread pool
(many at once, clients that go away meanwhile), and the ACL file (topic,
user and pattern rules, publish/subscribe/retained/will checks, load errors)."""
import base64
import hashlib
import os
import select
import socket
import stat
import subprocess
import time

import pytest

import mqttraw as R
from conftest import KEEPMQ_BIN
from mqttraw import CONNACK, PINGRESP, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, SUBACK

# users for the concurrency tests: distinct users, because a successful
# check is cached per user and later checks of the same user are quick;
# a high iteration count makes each check take a while
POOL_USERS = [f"user{i}" for i in range(4)]
POOL_ITER = 100000


# ---------------------------------------------------------------- helpers

def passwd(*args, stdin=None):
    """Runs `keepmq passwd ARGS`; returns the CompletedProcess."""
    return subprocess.run([KEEPMQ_BIN, "passwd", *args], input=stdin, capture_output=True,
                          timeout=60)


def hash_line(user, pw, iterations):
    """A password file line computed here, independently of keepmq, in the
    format auth.h documents: user:$pbkdf2-sha512$<iter>$<salt b64>$<dk b64>."""
    salt = os.urandom(16)
    dk = hashlib.pbkdf2_hmac("sha512", pw.encode(), salt, iterations, 64)
    return (f"{user}:$pbkdf2-sha512${iterations}$"
            f"{base64.b64encode(salt).decode()}${base64.b64encode(dk).decode()}\n")


@pytest.fixture(scope="module")
def pwfile(tmp_path_factory):
    """A password file shared by this module's brokers, made with the CLI
    (default iteration count): alice and bob."""
    path = str(tmp_path_factory.mktemp("pw") / "passwd")
    assert passwd("-c", path, "alice", "alice-pw").returncode == 0
    assert passwd(path, "bob", "bob pw with spaces").returncode == 0
    return path


@pytest.fixture(scope="module")
def pool_pwfile(pwfile):
    """alice and bob, plus the pool users, whose lines are computed by the
    test (an independent implementation of the format). A file of its own:
    unknown users are checked at the file's most common iteration count."""
    path = pwfile + "-pool"
    with open(path, "w") as f:
        f.write(open(pwfile).read())
        for u in POOL_USERS:
            f.write(hash_line(u, f"{u}-pw", POOL_ITER))
    return path


def refused_rc(version, v5, v3):
    return v5 if version == 5 else v3


def try_connect(port, version, cid, timeout=30.0, **kw):
    """CONNECT and return (Raw, CONNACK). The timeout is generous: password
    checks queue on the thread pool, and the sanitizer build is slow."""
    r = R.Raw(port, version=version)
    r.send(R.connect(cid, version=version, **kw))
    return r, r.expect(CONNACK, timeout)


def ping_ok(r, timeout=5.0):
    r.send(R.PINGREQ_BYTES)
    r.expect(PINGRESP, timeout)


# ---------------------------------------------------------------- anonymous access

@pytest.mark.parametrize("version", [3, 4, 5])
def test_anonymous_refused(broker_factory, pwfile, version):
    b = broker_factory(f"allow_anonymous = false\npassword_file = {pwfile}", workers=2)
    r, ack = try_connect(b.port, version, f"anon-{version}")
    assert ack.rc == refused_rc(version, 0x87, 5)
    assert r.closed()
    r, ack = try_connect(b.port, version, f"named-{version}", username="alice",
                         password="alice-pw")
    assert ack.rc == 0
    ping_ok(r)


def test_anonymous_allowed_by_default(broker_factory, pwfile):
    b = broker_factory(f"password_file = {pwfile}", workers=2)
    r, ack = try_connect(b.port, 4, "anon-ok")
    assert ack.rc == 0


def test_no_anonymous_and_no_password_file_refuses_everyone(broker_factory):
    b = broker_factory("allow_anonymous = false", workers=2)
    for version in (4, 5):
        r, ack = try_connect(b.port, version, "a", username="someone", password="x")
        assert ack.rc == refused_rc(version, 0x87, 5)
        r, ack = try_connect(b.port, version, "b", username="someone")
        assert ack.rc == refused_rc(version, 0x87, 5)
        r, ack = try_connect(b.port, version, "c")
        assert ack.rc == refused_rc(version, 0x87, 5)


# ---------------------------------------------------------------- password checks

@pytest.mark.parametrize("version", [3, 4, 5])
def test_password_checks(broker_factory, pwfile, version):
    b = broker_factory(f"password_file = {pwfile}", workers=2)
    bad = refused_rc(version, 0x86, 4)
    r, ack = try_connect(b.port, version, "pw-ok", username="alice", password="alice-pw")
    assert ack.rc == 0
    ping_ok(r)
    r, ack = try_connect(b.port, version, "pw-ok2", username="bob", password="bob pw with spaces")
    assert ack.rc == 0
    for user, pw in (("alice", "wrong"), ("alice", "bob pw with spaces"), ("alice", ""),
                     ("mallory", "alice-pw"), ("ALICE", "alice-pw")):
        r, ack = try_connect(b.port, version, "pw-bad", username=user, password=pw)
        assert ack.rc == bad, (user, pw, ack)
        assert r.closed()
    # a user name without a password
    r, ack = try_connect(b.port, version, "pw-none", username="alice")
    assert ack.rc == bad
    assert r.closed()
    # a successful check is cached; the cache must not let a wrong password in
    r, ack = try_connect(b.port, version, "pw-again", username="alice", password="alice-pw")
    assert ack.rc == 0
    r, ack = try_connect(b.port, version, "pw-again2", username="alice", password="alice-pw2")
    assert ack.rc == bad


def test_authenticated_client_reads_pipelined_packets(broker_factory, pool_pwfile):
    """Packets sent right behind the CONNECT wait for the password check
    and are then handled in order."""
    b = broker_factory(f"password_file = {pool_pwfile}", workers=2)
    r = R.Raw(b.port, version=5)
    r.send(R.connect("pipelined", version=5, username="user0", password="user0-pw")
           + R.subscribe(1, [("pipe/t", 1)], version=5)
           + R.publish("pipe/t", b"self", qos=1, pid=2, version=5)
           + R.PINGREQ_BYTES)
    assert r.expect(CONNACK, 30).rc == 0
    assert r.expect(SUBACK).rcs == [1]
    got = {r.recv().type for _ in range(3)}
    assert got == {PUBLISH, PUBACK, PINGRESP}


def test_many_concurrent_authentications_keep_broker_responsive(broker_factory, pool_pwfile):
    # one worker: if a password check blocked it, nothing else would be served
    b = broker_factory(f"password_file = {pool_pwfile}", workers=1)
    pinger = R.raw_connect(b.port, "pinger", version=4)
    n = 20
    conns = []
    for i in range(n):
        r = R.Raw(b.port, version=5 if i % 2 else 4)
        user = POOL_USERS[i % len(POOL_USERS)]
        r.send(R.connect(f"many-{i}", version=r.version, username=user, password=f"{user}-pw"))
        conns.append(r)
    pending = set(range(n))
    acks = {}
    pings_while_pending = 0
    deadline = time.time() + 30
    while pending and time.time() < deadline:
        ping_ok(pinger)
        readable, _, _ = select.select([conns[i].sock for i in pending], [], [], 0)
        for i in list(pending):
            if conns[i].sock in readable:
                acks[i] = conns[i].recv()
                pending.discard(i)
        if pending:
            pings_while_pending += 1
            time.sleep(0.01)  # pacing: leave the CPU to the password checks
    assert not pending, f"no CONNACK for {sorted(pending)}"
    assert all(a.type == CONNACK and a.rc == 0 for a in acks.values()), acks
    # with checks on the worker thread, the first PINGRESP would only come
    # with (after) the CONNACKs of every CONNECT read before the PINGREQ
    assert pings_while_pending >= 2, pings_while_pending
    for r in conns:
        ping_ok(r)


def test_concurrent_authentications_across_workers(broker_factory, pool_pwfile):
    b = broker_factory(f"password_file = {pool_pwfile}", workers=3)
    ids = [c for per in R.ids_per_worker("auth-w", 3, 4) for c in per]
    conns = []
    for i, cid in enumerate(ids):
        r = R.Raw(b.port, version=5)
        user = ["alice", "user1"][i % 2]
        r.send(R.connect(cid, version=5, username=user,
                         password="alice-pw" if user == "alice" else "user1-pw"))
        conns.append(r)
    for r in conns:
        assert r.expect(CONNACK, timeout=20).rc == 0
    # the sessions work: each gets a message through its own subscription
    for i, r in enumerate(conns):
        r.send(R.subscribe(1, [(f"aw/{i}", 1)], version=5))
        r.expect(SUBACK)
    for i, r in enumerate(conns):
        conns[(i + 1) % len(conns)].send(R.publish(f"aw/{i}", f"{i}", qos=0, version=5))
    for i, r in enumerate(conns):
        m = R.recv_publishes(r, 1)[0]
        assert m.payload == f"{i}".encode()


def test_client_gone_during_password_check(broker_factory, pool_pwfile):
    """Clients that close (FIN or RST) right after their CONNECT, while the
    check is queued or running: the broker carries on, and the sanitizer
    build finds nothing (checked at teardown)."""
    b = broker_factory(f"password_file = {pool_pwfile}", workers=2)
    for i in range(6):
        user = POOL_USERS[i % len(POOL_USERS)]
        # wrong passwords are never cached: every such check is slow
        pw = "not-it" if i % 3 else f"{user}-pw"
        s = socket.create_connection(("127.0.0.1", b.port))
        s.sendall(R.connect(f"gone-{i}", version=5 if i % 2 else 4, username=user, password=pw))
        if i % 2:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()  # RST for the odd ones
    # still serving, password checks included (this one queues behind them)
    r, ack = try_connect(b.port, 5, "after-gone", username="alice", password="alice-pw")
    assert ack.rc == 0
    ping_ok(r)
    R.roundtrip(b.port, 4, "after-gone")


def test_idle_timeout_during_password_check(broker_factory, pool_pwfile):
    """A busy thread pool keeps CONNECTs waiting for their check; the idle
    timeout still ends those connections (some while their check is queued
    or running), and clients that need no check are served meanwhile."""
    b = broker_factory(f"password_file = {pool_pwfile}\nmqtt.idle_timeout = 100ms", workers=2)
    kept = []
    for i in range(8):
        user = POOL_USERS[i % len(POOL_USERS)]
        r = R.Raw(b.port, version=5)
        r.send(R.connect(f"idle-auth-{i}", version=5, username=user, password="not-it"))
        kept.append(r)
    anon = R.raw_connect(b.port, "anon-meanwhile", version=5)
    ping_ok(anon)
    # every one of them ends: refused after its check, or timed out before
    for r in kept:
        try:
            p = r.recv(timeout=15)
            assert p.type == CONNACK and p.rc == 0x86, p
        except ConnectionError:
            pass
        assert r.closed(timeout=5)
    ping_ok(anon)


def test_takeover_while_password_check_runs(broker_factory, pool_pwfile):
    b = broker_factory(f"password_file = {pool_pwfile}", workers=2)
    first = R.Raw(b.port, version=5)
    first.send(R.connect("auth-tk", version=5, username="user2", password="user2-pw"))
    second = R.Raw(b.port, version=5)
    second.send(R.connect("auth-tk", version=5, username="user3", password="user3-pw"))
    a1 = first.expect(CONNACK, timeout=20)
    a2 = second.expect(CONNACK, timeout=20)
    assert a1.rc == 0 and a2.rc == 0
    # whichever finished its check first was taken over by the other
    survivors = [r for r in (first, second) if not r.closed(timeout=1.0)]
    assert len(survivors) == 1
    ping_ok(survivors[0])


# ---------------------------------------------------------------- the passwd command

def test_passwd_command(tmp_path, broker_factory):
    path = str(tmp_path / "pw")
    res = passwd("-c", path, "alice", "a-pw")
    assert res.returncode == 0, res.stderr
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    lines = open(path).read().splitlines()
    assert len(lines) == 1 and lines[0].startswith("alice:$pbkdf2-sha512$")
    alice_line = lines[0]
    # a second call adds a user and leaves the others (and comments) alone
    with open(path, "a") as f:
        f.write("# operators\n")
    assert passwd(path, "bob", "b-pw").returncode == 0
    assert passwd(path, "carol", stdin=b"c-pw\n").returncode == 0  # password from a pipe
    lines = open(path).read().splitlines()
    assert lines[0] == alice_line
    assert "# operators" in lines
    assert [ln.split(":")[0] for ln in lines if not ln.startswith("#")] == ["alice", "bob", "carol"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # changing a password replaces that user's line only
    assert passwd(path, "bob", "b-pw-2").returncode == 0
    lines2 = open(path).read().splitlines()
    assert lines2[0] == alice_line and len(lines2) == len(lines)
    # -D removes a user; removing an absent one fails
    assert passwd("-D", path, "carol").returncode == 0
    res = passwd("-D", path, "carol")
    assert res.returncode != 0 and res.stderr
    lines = open(path).read().splitlines()
    assert [ln.split(":")[0] for ln in lines if not ln.startswith("#")] == ["alice", "bob"]
    assert lines[0] == alice_line
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # the broker agrees
    b = broker_factory(f"password_file = {path}", workers=2)
    for user, pw, rc in (("alice", "a-pw", 0), ("bob", "b-pw-2", 0), ("bob", "b-pw", 0x86),
                         ("carol", "c-pw", 0x86)):
        r, ack = try_connect(b.port, 5, f"cli-{user}", username=user, password=pw)
        assert ack.rc == rc, (user, pw)
    # -c starts the file again
    assert passwd("-c", path, "dave", "d-pw").returncode == 0
    lines = open(path).read().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dave:")


def test_passwd_command_usage_errors(tmp_path):
    path = str(tmp_path / "pw")
    assert passwd(path).returncode != 0  # no user
    assert passwd("-D", path, "x", "extra").returncode != 0
    assert passwd("-i", "5", path, "u", "p").returncode != 0  # too few iterations
    assert not os.path.exists(path) or open(path).read().strip() == ""


def test_bad_password_file_prevents_start(broker_factory, tmp_path):
    path = tmp_path / "pw"
    path.write_text("alice:$pbkdf2-sha512$20000$AAAA$BBBB\nbroken line\n")
    b = broker_factory(f"password_file = {path}", workers=2, expect_start=False)
    b.proc.wait(20)
    b.stop()
    assert b.returncode != 0
    assert f"{path}:" in b.log()


# ---------------------------------------------------------------- ACL

ACL = """\
# anonymous clients
topic read public/#
topic write anon/in

user alice
topic readwrite alice/#
topic read foo/#
topic deny foo/secret/#
topic write shared/in

user bob
topic read alice/status
topic write alice/cmd

user root
topic readwrite #

pattern readwrite clients/%c/#
pattern read users/%u/inbox
pattern write users/%u/outbox
"""


@pytest.fixture
def acl_broker(broker_factory, tmp_path):
    path = tmp_path / "acl"
    path.write_text(ACL)
    return broker_factory(f"acl_file = {path}", workers=2)


def rconnect(port, cid, user=None, version=5, **kw):
    return R.raw_connect(port, cid, version=version, username=user, **kw)


def sub_rcs(r, filters, pid=1):
    return R.sub_ack(r, filters, pid=pid)


@pytest.mark.parametrize("version", [4, 5])
def test_acl_publish(acl_broker, version):
    port = acl_broker.port
    root = rconnect(port, "root-sub", "root")
    assert sub_rcs(root, [("#", 1)]) == [1]
    alice = rconnect(port, f"alice-{version}", "alice", version=version)
    denied = refused_rc(version, 0x87, 0)
    # allowed
    alice.send(R.publish("alice/x", b"ok", qos=1, pid=1, version=version))
    assert alice.expect(PUBACK).rc == 0
    m = R.recv_publishes(root, 1)[0]
    assert (m.topic, m.payload) == ("alice/x", b"ok")
    # denied: read-only topic, denied subtree, unrelated topic; QoS 0, 1, 2
    alice.send(R.publish("foo/x", b"no", qos=1, pid=2, version=version))
    assert alice.expect(PUBACK).rc == denied
    alice.send(R.publish("foo/secret/x", b"no", qos=2, pid=3, version=version))
    rec = alice.expect(PUBREC)
    assert rec.rc == denied
    if version == 4:
        alice.send(R.ack(PUBREL, 3))
        assert alice.expect(PUBCOMP).pid == 3
    alice.send(R.publish("bar/x", b"no", qos=0, version=version))
    alice.send(R.publish("shared/in", b"write-only", qos=1, pid=4, version=version))
    assert alice.expect(PUBACK).rc == 0
    m = R.recv_publishes(root, 1)[0]
    assert m.topic == "shared/in"  # nothing denied came before it
    R.no_publish(root, 0.3)
    # the connection is still fine after refusals
    ping_ok(alice)


@pytest.mark.parametrize("version", [4, 5])
def test_acl_subscribe(acl_broker, version):
    port = acl_broker.port
    alice = rconnect(port, f"alice-s-{version}", "alice", version=version)
    denied = refused_rc(version, 0x87, 0x80)
    rcs = sub_rcs(alice, [("alice/#", 1), ("bar/#", 1), ("foo/secret/#", 1), ("foo/#", 1),
                          ("shared/in", 1), ("#", 0)])
    assert rcs == [1, denied, denied, 1, denied, 0]
    bob = rconnect(port, f"bob-{version}", "bob", version=version)
    assert sub_rcs(bob, [("alice/status", 1), ("alice/other", 1)]) == [1, denied]
    anon = rconnect(port, f"anon-{version}", None, version=version)
    assert sub_rcs(anon, [("public/news", 0), ("anon/in", 0)]) == [0, denied]


def test_acl_partial_filter_delivers_only_readable(acl_broker):
    port = acl_broker.port
    alice = rconnect(port, "alice-partial", "alice")
    assert sub_rcs(alice, [("#", 1)]) == [1]
    bob = rconnect(port, "bob-partial", "bob")
    assert sub_rcs(bob, [("alice/+", 1)]) == [1]
    root = rconnect(port, "root-pub", "root")
    topics = ["bar/a", "foo/a", "foo/secret/s", "alice/status", "alice/x", "public/p", "foo/b/c"]
    for i, t in enumerate(topics):
        R.publish_ack(root, t, t.encode(), qos=1, pid=i + 1)
    got = [m.topic for m in R.drain_publishes(alice, quiet=0.5)]
    assert got == ["foo/a", "alice/status", "alice/x", "foo/b/c"]
    got = [m.topic for m in R.drain_publishes(bob, quiet=0.3)]
    assert got == ["alice/status"]


def test_acl_patterns(acl_broker):
    port = acl_broker.port
    dev = rconnect(port, "dev1", None, version=4)
    assert sub_rcs(dev, [("clients/dev1/#", 1), ("clients/dev2/#", 1)]) == [1, 0x80]
    R.publish_ack(dev, "clients/dev1/state", b"mine", qos=1)
    m = R.recv_publishes(dev, 1)[0]
    assert m.topic == "clients/dev1/state"
    # %u: only for clients with that user name; anonymous clients never match
    bob = rconnect(port, "bob-pat", "bob")
    assert sub_rcs(bob, [("users/bob/inbox", 1), ("users/alice/inbox", 1),
                         ("users/bob/outbox", 1)]) == [1, 0x87, 0x87]
    bob.send(R.publish("users/bob/outbox", b"out", qos=1, pid=5, version=5))
    assert bob.expect(PUBACK).rc == 0
    bob.send(R.publish("users/bob/inbox", b"in", qos=1, pid=6, version=5))
    assert bob.expect(PUBACK).rc == 0x87
    anon = rconnect(port, "anon-pat", None)
    assert sub_rcs(anon, [("users/bob/inbox", 0), ("users//inbox", 0)]) == [0x87, 0x87]
    # a client id with wildcard characters gains nothing from %c
    wild = rconnect(port, "+", None)
    assert sub_rcs(wild, [("clients/+/x", 0), ("clients/dev1/x", 0)]) == [0x87, 0x87]


def test_acl_retained_respects_read(acl_broker):
    port = acl_broker.port
    root = rconnect(port, "root-ret", "root")
    for i, t in enumerate(["foo/r", "bar/r", "foo/secret/r", "alice/status", "alice/hidden"]):
        R.publish_ack(root, t, t.encode(), qos=1, retain=True, pid=i + 1)
    alice = rconnect(port, "alice-ret", "alice")
    assert sub_rcs(alice, [("#", 1)]) == [1]
    got = sorted(m.topic for m in R.drain_publishes(alice, quiet=0.5))
    assert got == ["alice/hidden", "alice/status", "foo/r"]
    bob = rconnect(port, "bob-ret", "bob")
    assert sub_rcs(bob, [("alice/#", 1)]) == [1]
    got = [m.topic for m in R.drain_publishes(bob, quiet=0.3)]
    assert got == ["alice/status"]
    anon = rconnect(port, "anon-ret", None)
    assert sub_rcs(anon, [("#", 0)]) == [0]
    assert R.drain_publishes(anon, quiet=0.3) == []


@pytest.mark.parametrize("version", [3, 4, 5])
def test_acl_will_topic_denied(acl_broker, version):
    port = acl_broker.port
    r, ack = try_connect(port, version, f"alice-w{version}", username="alice",
                         will=("bar/will", b"x", 0, False))
    assert ack.rc == refused_rc(version, 0x87, 5)
    assert r.closed()
    r, ack = try_connect(port, version, f"alice-w{version}", username="alice",
                         will=("alice/will", b"bye", 1, False))
    assert ack.rc == 0
    # and that will is delivered normally
    root = rconnect(port, f"root-w{version}", "root")
    assert sub_rcs(root, [("alice/will", 1)]) == [1]
    r.close()
    m = R.recv_publishes(root, 1)[0]
    assert m.payload == b"bye"


def test_acl_with_password_file(broker_factory, pwfile, tmp_path):
    """User rules apply to the authenticated user name."""
    path = tmp_path / "acl"
    path.write_text("user alice\ntopic readwrite alice/#\n")
    b = broker_factory(f"acl_file = {path}\npassword_file = {pwfile}", workers=2)
    r = R.raw_connect(b.port, "pwacl", version=5, username="alice", password="alice-pw")
    assert R.sub_ack(r, [("alice/#", 1), ("bob/#", 1)]) == [1, 0x87]


@pytest.mark.parametrize("text,line", [
    ("topic read a/b\nuser alice\ntopic sometimes x/y\n", 3),
    ("# comment\n\nfrobnicate a/b\n", 3),
    ("user bob\ntopic read a/#/b\n", 2),
    ("topic read ok/#\nuser\n", 2),
    ("pattern\n", 1),
])
def test_acl_file_errors_prevent_start(broker_factory, tmp_path, text, line):
    path = tmp_path / "acl"
    path.write_text(text)
    b = broker_factory(f"acl_file = {path}", workers=2, expect_start=False)
    b.proc.wait(20)
    b.stop()
    assert b.returncode != 0
    assert f"{path}:{line}:" in b.log(), b.log()


def test_acl_file_missing_prevents_start(broker_factory, tmp_path):
    path = tmp_path / "no-such-acl"
    b = broker_factory(f"acl_file = {path}", workers=2, expect_start=False)
    b.proc.wait(20)
    b.stop()
    assert b.returncode != 0
    assert str(path) in b.log()
