"""The Redis backend beyond the shared persistence suite: the spec's key
layout, message expiry, queue versus pubsub fetches, the subscription
channel, raw commands (hostile values, pipelines), Sentinel failover, and
Redis killed and restarted under load.

Every test starts its own redis-server (redis_server.RedisServer) on a free
loopback port, so tests are independent and can stop or kill it. Writes are
asynchronous: conditions are polled (wait_until), never timed.
"""
import json
import os
import re
import subprocess
import threading
import time

import pytest
import redis

import mqttraw as R
from mqttraw import Publisher
from redis_server import RedisServer

NODE = "keepmq@127.0.0.1"
METRICS_TOPIC = f"$SYS/brokers/{NODE}/backends/metrics"
WAIT = 15.0
HEX32 = re.compile(rb"^[0-9a-f]{32}$")


class ExtraRedis(RedisServer):
    """A RedisServer with extra command-line arguments."""

    def __init__(self, dir, extra=(), port=None):
        self.extra = list(extra)
        super().__init__(dir, port=port)

    def _args(self):
        return super()._args() + self.extra


@pytest.fixture
def rsrv(tmpdir_path):
    srv = RedisServer(os.path.join(tmpdir_path, "redis"))
    yield srv
    srv.stop()


def pool(srv, name="pool1", **keys):
    lines = [f"backend.redis.{name}.server = 127.0.0.1:{srv.port}",
             f"backend.redis.{name}.pool_size = 2",
             f"backend.redis.{name}.retry_max_backoff = 500ms"]
    lines += [f"backend.redis.{name}.{k} = {v}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


def rule(point, n, action, topic=None, pool="pool1", **opts):
    r = {}
    if topic is not None:
        r["topic"] = topic
    r["action"] = {"function": action} if isinstance(action, str) else action
    r["pool"] = pool
    r.update(opts)
    return f"backend.redis.hook.{point}.{n} = {json.dumps(r)}\n"


SPEC_RULES = (
    rule("client.connected", 1, "on_client_connected")
    + rule("client.connected", 2, "on_subscribe_lookup")
    + rule("client.disconnected", 1, "on_client_disconnected")
    + rule("session.subscribed", 1, "on_message_fetch_for_queue", topic="queue/#")
    + rule("session.subscribed", 2, "on_message_fetch_for_pubsub", topic="pubsub/#")
    + rule("session.subscribed", 3, "on_retain_lookup")
    + rule("message.publish", 1, "on_message_publish", topic="#")
    + rule("message.publish", 2, "on_message_retain", topic="#")
    + rule("message.publish", 3, "on_retain_delete", topic="#")
    + rule("message.acked", 1, "on_message_acked_for_queue", topic="queue/#")
    + rule("message.acked", 2, "on_message_acked_for_pubsub", topic="pubsub/#")
)


def until(cond, timeout=WAIT, interval=0.1, what="condition"):
    """R.wait_until, but a Redis that is not (yet) reachable counts as false."""
    def safe():
        try:
            return cond()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                redis.exceptions.BusyLoadingError):
            return False
    return R.wait_until(safe, timeout=timeout, interval=interval, what=what)


def quit_(r):
    try:
        r.send(R.disconnect(version=r.version))
    except OSError:
        pass
    r.close()


def fields(h):
    return sorted(k.decode() for k in h)


def msg_hashes(c):
    out = []
    for k in c.scan_iter(match=b"mqtt:msg:*", count=1000):
        if c.type(k) == b"hash":
            out.append(c.hgetall(k))
    return sorted(out, key=lambda h: h[b"id"])


def payloads(pkts):
    return [p.payload for p in pkts]


def metrics(port):
    r = R.raw_connect(port, f"metrics-{time.time_ns()}")
    try:
        assert R.sub_ack(r, [(METRICS_TOPIC, 0)]) == [0]
        return json.loads(R.recv_publishes(r, 1, timeout=5)[0].payload)["redis"]
    finally:
        r.close()


# ---------------------------------------------------------------- key layout

def test_spec_key_layout(rsrv, broker_factory):
    """The spec's HGETALL examples read the same fields from keepmq's keys."""
    b = broker_factory(conf=pool(rsrv) + SPEC_RULES + "backend.redis.msg.expired_after = 600\n",
                       workers=2)
    c = rsrv.client()
    t = R.raw_connect(b.port, "test")
    R.wait_until(lambda: c.hget(b"mqtt:client:test", b"state") == b"1", timeout=WAIT,
                 what="mqtt:client:test state 1")
    h = c.hgetall(b"mqtt:client:test")
    assert fields(h) == ["offline_at", "online_at", "state"]
    assert h[b"offline_at"] == b"undefined"
    online = int(h[b"online_at"])
    assert abs(online - time.time()) < 300
    assert c.hget(f"mqtt:node:{NODE}".encode(), b"test") == h[b"online_at"]

    # a retained message and a QoS 1 message
    R.publish_ack(t, "topic", b"Hello world!", qos=1, retain=True)
    R.wait_until(lambda: c.exists(b"mqtt:retain:topic"), timeout=WAIT, what="mqtt:retain:topic")
    rh = c.hgetall(b"mqtt:retain:topic")
    assert fields(rh) == ["from", "id", "payload", "qos", "retain", "topic", "ts"]
    assert (rh[b"from"], rh[b"qos"], rh[b"topic"], rh[b"payload"]) == \
        (b"test", b"1", b"topic", b"Hello world!")
    assert HEX32.match(rh[b"id"])
    assert c.sismember(b"mqtt:index:retain", b"topic")

    R.publish_ack(t, "a/b", b"m1", qos=1)
    R.wait_until(lambda: c.zcard(b"mqtt:msg:a/b") == 1, timeout=WAIT, what="mqtt:msg:a/b")
    [(mid, score)] = c.zrange(b"mqtt:msg:a/b", 0, -1, withscores=True)
    assert score == 1.0, "the spec's zset score"
    mh = c.hgetall(b"mqtt:msg:" + mid)
    assert fields(mh) == ["from", "id", "payload", "qos", "retain", "topic", "ts"]
    assert (mh[b"id"], mh[b"from"], mh[b"qos"], mh[b"topic"], mh[b"retain"], mh[b"payload"]) == \
        (mid, b"test", b"1", b"a/b", b"0", b"m1")
    assert 0 < c.ttl(b"mqtt:msg:" + mid) <= 600
    assert 0 < c.ttl(b"mqtt:msg:a/b") <= 600
    assert c.sismember(b"mqtt:index:msg", b"a/b")
    # QoS 0 is not stored by on_message_publish; a retained clear deletes
    R.publish_ack(t, "a/b", b"q0", qos=0)
    R.publish_ack(t, "topic", b"", qos=1, retain=True)
    R.wait_until(lambda: not c.exists(b"mqtt:retain:topic"), timeout=WAIT,
                 what="retained cleared")
    assert not c.sismember(b"mqtt:index:retain", b"topic")
    assert c.zcard(b"mqtt:msg:a/b") == 1

    quit_(t)
    R.wait_until(lambda: c.hget(b"mqtt:client:test", b"state") == b"0", timeout=WAIT,
                 what="state 0")
    h = c.hgetall(b"mqtt:client:test")
    assert fields(h) == ["offline_at", "online_at", "state"]
    assert int(h[b"offline_at"]) >= online and h[b"online_at"] == str(online).encode()
    assert c.hget(f"mqtt:node:{NODE}".encode(), b"test") is None
    assert c.get(b"mqtt:owner:test") == NODE.encode()


def test_database_and_subscribe_lookup(rsrv, broker_factory):
    """`database` selects the database; on_subscribe_lookup reads the spec's
    HSET mqtt:sub:<clientid> topic qos."""
    c1 = redis.Redis(host="127.0.0.1", port=rsrv.port, db=3)
    c1.hset(b"mqtt:sub:test", mapping={b"topic1": b"1", b"topic2": b"2"})
    b = broker_factory(conf=pool(rsrv, database=3) + SPEC_RULES, workers=2)
    t = R.raw_connect(b.port, "test")
    R.wait_until(lambda: c1.hget(b"mqtt:client:test", b"state") == b"1", timeout=WAIT,
                 what="client row in database 3")
    assert rsrv.client().dbsize() == 0, "database 0 untouched"
    pub = R.raw_connect(b.port, "pub")
    # the subscription is made asynchronously: publish until it arrives
    got = []

    def delivered():
        R.publish_ack(pub, "topic2", b"x", qos=1)
        got.extend(R.drain_publishes(t, quiet=0.2))
        return got
    R.wait_until(delivered, timeout=WAIT, what="delivery through the stored subscription")
    assert got[0].topic == "topic2" and got[0].qos == 1


# ---------------------------------------------------------------- expiry

def test_expiry_per_rule_and_index_cleaning(rsrv, broker_factory):
    """expired_time (per rule) overrides msg.expired_after; ids of expired
    messages leave the topic's set; a fetch still finds what is left."""
    conf = (pool(rsrv) + "backend.redis.msg.expired_after = 0\n"
            + rule("message.publish", 1, "on_message_publish", topic="short/#", expired_time=1)
            + rule("message.publish", 2, "on_message_publish", topic="long/#")
            + rule("session.subscribed", 1, "on_message_fetch_for_pubsub", topic="#"))
    b = broker_factory(conf=conf, workers=2)
    c = rsrv.client()
    pub = R.raw_connect(b.port, "pub")
    R.publish_ack(pub, "short/x", b"old", qos=1)
    R.publish_ack(pub, "long/x", b"kept", qos=1)
    R.wait_until(lambda: c.zcard(b"mqtt:msg:short/x") == 1 and c.zcard(b"mqtt:msg:long/x") == 1,
                 timeout=WAIT, what="both stored")
    [old] = c.zrange(b"mqtt:msg:short/x", 0, -1)
    [kept] = c.zrange(b"mqtt:msg:long/x", 0, -1)
    assert 0 < c.ttl(b"mqtt:msg:" + old) <= 1
    assert 3000 < c.ttl(b"mqtt:msg:" + kept) <= 3600, "<= 0 takes the default 3600"
    R.wait_until(lambda: not c.exists(b"mqtt:msg:" + old), timeout=WAIT, interval=0.2,
                 what="the short message expired")
    # a publish after the expiry trims the set of the ids older than expiry
    R.publish_ack(pub, "short/x", b"new", qos=1)
    R.wait_until(lambda: c.zcard(b"mqtt:msg:short/x") == 1 and
                 c.zrange(b"mqtt:msg:short/x", 0, -1) != [old], timeout=WAIT,
                 what="the expired id trimmed from mqtt:msg:short/x")
    s = R.raw_connect(b.port, "sub")
    assert R.sub_ack(s, [("short/#", 1)]) == [1]
    assert payloads(R.recv_publishes(s, 1, timeout=WAIT)) == [b"new"]
    assert R.no_publish(s, 0.5)


def test_position_at_an_expired_message_still_finds_later(rsrv, broker_factory):
    conf = (pool(rsrv) + rule("message.publish", 1, "on_message_publish", topic="#")
            + rule("session.subscribed", 1, "on_message_fetch_for_pubsub", topic="#")
            + rule("message.acked", 1, "on_message_acked_for_pubsub", topic="#"))
    b = broker_factory(conf=conf, workers=2)
    c = rsrv.client()
    s = R.raw_connect(b.port, "reader", clean=True)
    assert R.sub_ack(s, [("pubsub/t", 1)]) == [1]
    pub = R.raw_connect(b.port, "pub")
    R.publish_ack(pub, "pubsub/t", b"a", qos=1)
    assert payloads(R.recv_publishes(s, 1, timeout=WAIT)) == [b"a"]
    R.wait_until(lambda: c.get(b"mqtt:acked:reader:pubsub/t"), timeout=WAIT, what="position")
    pos = c.get(b"mqtt:acked:reader:pubsub/t")
    quit_(s)
    for p in (b"b", b"c"):
        R.publish_ack(pub, "pubsub/t", p, qos=1)
    R.wait_until(lambda: c.zcard(b"mqtt:msg:pubsub/t") == 3, timeout=WAIT, what="3 stored")
    # the message the position names expires (as EXPIRE would remove it)
    c.delete(b"mqtt:msg:" + pos)
    c.zrem(b"mqtt:msg:pubsub/t", pos)
    s = R.raw_connect(b.port, "reader", clean=True)
    assert R.sub_ack(s, [("pubsub/t", 1)]) == [1]
    assert payloads(R.recv_publishes(s, 2, timeout=WAIT)) == [b"b", b"c"]
    assert R.no_publish(s, 0.5)


def test_fetch_skips_and_removes_ids_whose_hash_expired(rsrv, broker_factory):
    conf = (pool(rsrv) + rule("message.publish", 1, "on_message_publish", topic="#")
            + rule("session.subscribed", 1, "on_message_fetch_for_queue", topic="#"))
    b = broker_factory(conf=conf, workers=1)
    c = rsrv.client()
    pub = R.raw_connect(b.port, "pub")
    for p in (b"1", b"2", b"3"):
        R.publish_ack(pub, "q/t", p, qos=1)
    R.wait_until(lambda: c.zcard(b"mqtt:msg:q/t") == 3, timeout=WAIT, what="3 stored")
    ids = c.zrange(b"mqtt:msg:q/t", 0, -1)
    c.delete(b"mqtt:msg:" + ids[1])  # expired behind the set's back
    s = R.raw_connect(b.port, "s")
    assert R.sub_ack(s, [("q/#", 1)]) == [1]
    assert payloads(R.recv_publishes(s, 2, timeout=WAIT)) == [b"1", b"3"]
    R.wait_until(lambda: c.zrange(b"mqtt:msg:q/t", 0, -1) == [ids[0], ids[2]], timeout=WAIT,
                 what="the missing id removed from the set")


# ---------------------------------------------------------------- queue vs pubsub

def test_queue_is_one_to_one_and_pubsub_many_to_many(rsrv, broker_factory):
    b = broker_factory(conf=pool(rsrv) + SPEC_RULES, workers=2)
    c = rsrv.client()
    pub = R.raw_connect(b.port, "pub")
    for i in range(3):
        R.publish_ack(pub, "queue/jobs", b"job%d" % i, qos=1)
        R.publish_ack(pub, "pubsub/news", b"news%d" % i, qos=1)
    R.wait_until(lambda: c.zcard(b"mqtt:msg:queue/jobs") == 3 and
                 c.zcard(b"mqtt:msg:pubsub/news") == 3, timeout=WAIT, what="6 stored")

    # queue: the first subscriber gets the jobs, its acks consume them
    w1 = R.raw_connect(b.port, "worker1")
    assert R.sub_ack(w1, [("queue/#", 1)]) == [1]
    assert payloads(R.recv_publishes(w1, 3, timeout=WAIT)) == [b"job0", b"job1", b"job2"]
    R.wait_until(lambda: c.zcard(b"mqtt:msg:queue/jobs") == 0, timeout=WAIT,
                 what="acked jobs deleted")
    assert not [h for h in msg_hashes(c) if h[b"topic"] == b"queue/jobs"]
    w2 = R.raw_connect(b.port, "worker2")
    assert R.sub_ack(w2, [("queue/#", 1)]) == [1]
    assert R.no_publish(w2, 0.5), "a consumed job was delivered twice"

    # pubsub: both readers get every message, each from its own position
    r1 = R.raw_connect(b.port, "reader1")
    r2 = R.raw_connect(b.port, "reader2")
    for r in (r1, r2):
        assert R.sub_ack(r, [("pubsub/#", 1)]) == [1]
        assert payloads(R.recv_publishes(r, 3, timeout=WAIT)) == [b"news0", b"news1", b"news2"]
    R.wait_until(lambda: c.get(b"mqtt:acked:reader1:pubsub/#") and
                 c.get(b"mqtt:acked:reader2:pubsub/#"), timeout=WAIT, what="positions")
    assert c.zcard(b"mqtt:msg:pubsub/news") == 3, "pubsub acks keep the messages"
    quit_(r1)
    R.publish_ack(pub, "pubsub/news", b"news3", qos=1)
    assert payloads(R.recv_publishes(r2, 1, timeout=WAIT)) == [b"news3"]  # live
    R.wait_until(lambda: c.get(b"mqtt:acked:reader2:pubsub/#") ==
                 c.zrange(b"mqtt:msg:pubsub/news", -1, -1)[0], timeout=WAIT,
                 what="reader2's position at news3")
    r1 = R.raw_connect(b.port, "reader1")
    assert R.sub_ack(r1, [("pubsub/#", 1)]) == [1]
    assert payloads(R.recv_publishes(r1, 1, timeout=WAIT)) == [b"news3"]
    assert R.no_publish(r1, 0.5), "reader1 got messages before its position again"


def test_ack_never_moves_a_position_back(rsrv, broker_factory):
    conf = (pool(rsrv) + rule("message.acked", 1, "on_message_acked_for_pubsub", topic="#"))
    b = broker_factory(conf=conf, workers=1)
    c = rsrv.client()
    c.set(b"mqtt:acked:late:t/#", b"ffffffffffffffffffffffffffffffff")
    s = R.raw_connect(b.port, "late")
    assert R.sub_ack(s, [("t/#", 1)]) == [1]
    pub = R.raw_connect(b.port, "pub")
    R.publish_ack(pub, "t/1", b"x", qos=1)
    R.recv_publishes(s, 1, timeout=WAIT)
    R.wait_until(lambda: metrics(b.port)["rules"][0]["success"] >= 1, timeout=WAIT,
                 interval=0.3, what="the ack written")
    assert c.get(b"mqtt:acked:late:t/#") == b"ffffffffffffffffffffffffffffffff"


# ---------------------------------------------------------------- raw commands

HOSTILE_IDS = ["sp ace", "crlf\r\n*1\r\n$8\r\nFLUSHALL\r\n", "q'u\"o`te", "${clientid}", "ü-ñ"]


def test_hostile_values_stay_one_argument(rsrv, broker_factory):
    conf = (pool(rsrv)
            + rule("client.connected", 1, {"commands": ["SET conn:${clientid} ${clientid}"]})
            + rule("message.publish", 1,
                   {"commands": ["HSET pub:${clientid} topic ${topic} payload ${payload} "
                                 "both ${clientid}|${topic}"]}, topic="#"))
    b = broker_factory(conf=conf, workers=2)
    c = rsrv.client()
    c.set(b"canary", b"alive")
    payload = bytes(range(256)) + b" SET canary dead\r\n"
    for cid in HOSTILE_IDS:
        r = R.raw_connect(b.port, cid)
        R.publish_ack(r, "t/" + cid, payload, qos=1)
        quit_(r)
    for cid in HOSTILE_IDS:
        k = cid.encode()
        R.wait_until(lambda: c.exists(b"pub:" + k), timeout=WAIT, what=f"pub:{cid!r}")
        assert c.get(b"conn:" + k) == k
        assert c.hgetall(b"pub:" + k) == {b"topic": b"t/" + k, b"payload": payload,
                                          b"both": k + b"|t/" + k}
    assert c.get(b"canary") == b"alive"
    assert c.dbsize() == 1 + 2 * len(HOSTILE_IDS)


def test_command_list_runs_in_order_and_stops_at_an_error(rsrv, broker_factory):
    conf = (pool(rsrv)
            + rule("message.publish", 1,
                   {"commands": ["RPUSH seq:${topic} first", "HSET onlykey",
                                 "RPUSH seq:${topic} never"]}, topic="step/#")
            + rule("message.publish", 2,
                   {"commands": ["pipeline", "RPUSH pipe:${topic} a", "HSET onlykey",
                                 "RPUSH pipe:${topic} b"]}, topic="pipe/#")
            + "broker.sys_interval = 1s\n")
    b = broker_factory(conf=conf, workers=1)
    c = rsrv.client()
    pub = R.raw_connect(b.port, "pub")
    R.publish_ack(pub, "step/1", b"x", qos=1)
    R.publish_ack(pub, "pipe/1", b"x", qos=1)

    def failed():
        m = {r["rule"].split(".hook.")[1]: r for r in metrics(b.port)["rules"]}
        return m["message.publish.1"]["failed"] == 1 and m["message.publish.2"]["failed"] == 1
    R.wait_until(failed, timeout=WAIT, interval=0.3, what="both actions failed once")
    assert c.lrange(b"seq:step/1", 0, -1) == [b"first"], "the list stops at its error"
    assert c.lrange(b"pipe:pipe/1", 0, -1) == [b"a", b"b"], "a pipeline sends every command"


@pytest.mark.parametrize("cmd,words", [
    ("${topic} key value", ["command name must be literal"]),
    ("SUBSCRIBE ch", ["SUBSCRIBE", "not allowed"]),
    ("multi", ["MULTI", "not allowed"]),
    ("SET a  b", ["exactly one space"]),
    ("SET a ${nosuch}", ["unknown variable", "nosuch"]),
    ("SET a ${topic", ["without"]),
])
def test_bad_commands_refused_at_load(tmpdir_path, cmd, words):
    path = os.path.join(tmpdir_path, "bad.conf")
    with open(path, "w") as f:
        f.write("backend.redis.pool1.server = 127.0.0.1:6399\n")
        f.write("# a comment\n")
        f.write(rule("message.publish", 7, {"commands": ["SET ok 1", cmd]}, topic="#"))
    from conftest import KEEPMQ_BIN
    p = subprocess.run([KEEPMQ_BIN, "-c", path, "--check-config"], capture_output=True, text=True,
                       timeout=20)
    assert p.returncode != 0
    err = p.stderr + p.stdout
    assert f"{path}:3" in err and "backend.redis.hook.message.publish.7" in err, err
    assert "command 2" in err, err
    for w in words:
        assert w in err, err


def test_unknown_and_sql_only_keys_refused(tmpdir_path):
    from conftest import KEEPMQ_BIN
    path = os.path.join(tmpdir_path, "bad.conf")
    with open(path, "w") as f:
        f.write("backend.redis.pool1.server = 127.0.0.1:6399,127.0.0.1:6400\n")
    p = subprocess.run([KEEPMQ_BIN, "-c", path, "--check-config"], capture_output=True, text=True,
                       timeout=20)
    assert p.returncode != 0 and "sentinel" in p.stderr + p.stdout
    with open(path, "w") as f:
        f.write("backend.redis.pool1.server = 127.0.0.1:6399\n")
        f.write(rule("message.publish", 1, {"sql": ["insert into x values(1)"]}, topic="#"))
    p = subprocess.run([KEEPMQ_BIN, "-c", path, "--check-config"], capture_output=True, text=True,
                       timeout=20)
    assert p.returncode != 0 and "commands" in p.stderr + p.stdout


# ---------------------------------------------------------------- the channel

def channel_conf(srv, **keys):
    return (pool(srv, channel="mqtt_channel", **keys) + rule("client.connected", 1,
                                                            "on_subscribe_lookup")
            + "broker.sys_interval = 1s\n")


def svc_metrics(port):
    return metrics(port)["pools"]["pool1"]["service"]


def test_channel_subscribes_and_unsubscribes_online_clients(rsrv, broker_factory):
    b = broker_factory(conf=channel_conf(rsrv), workers=2)
    c = rsrv.client()
    R.wait_until(lambda: c.pubsub_numsub("mqtt_channel")[0][1] == 1, timeout=WAIT,
                 what="the broker subscribed to the channel")
    devs = [R.raw_connect(b.port, f"dev{i}") for i in range(4)]  # on both workers
    pub = R.raw_connect(b.port, "app")
    for i in range(4):
        # the spec's example sends qos as a string
        c.publish("mqtt_channel", json.dumps({"type": "subscribe", "topic": f"cmd/dev{i}",
                                              "clientid": f"dev{i}", "qos": "1"}))
    for i, d in enumerate(devs):
        got = []

        def arrived():
            R.publish_ack(pub, f"cmd/dev{i}", b"reboot", qos=1)
            got.extend(R.drain_publishes(d, quiet=0.2))
            return got
        R.wait_until(arrived, timeout=WAIT, what=f"dev{i} subscribed by the channel")
        assert got[0].topic == f"cmd/dev{i}" and got[0].qos == 1
        R.drain_publishes(d, quiet=0.3)
    c.publish("mqtt_channel", json.dumps({"type": "unsubscribe", "topic": "cmd/dev0",
                                          "clientid": "dev0"}))
    R.wait_until(lambda: svc_metrics(b.port)["channel_applied"] == 5, timeout=WAIT,
                 interval=0.3, what="5 events applied")
    # the unsubscribe is applied on dev0's worker before later traffic there
    probe = R.raw_connect(b.port, "probe")
    deadline = time.time() + WAIT
    while True:
        R.publish_ack(pub, "cmd/dev0", b"after", qos=1)
        if not R.drain_publishes(devs[0], quiet=0.3):
            break
        assert time.time() < deadline, "dev0 is still subscribed"
    probe.close()
    # an event for a client that is not online does nothing
    c.publish("mqtt_channel", json.dumps({"type": "subscribe", "topic": "x",
                                          "clientid": "nobody", "qos": 1}))
    R.wait_until(lambda: svc_metrics(b.port)["channel_events"] == 6, timeout=WAIT, interval=0.3,
                 what="6 events")
    assert not c.exists(b"mqtt:sub:nobody"), "channel_store is off"


def test_channel_malformed_events_counted(rsrv, broker_factory):
    b = broker_factory(conf=channel_conf(rsrv), workers=1)
    c = rsrv.client()
    R.wait_until(lambda: c.pubsub_numsub("mqtt_channel")[0][1] == 1, timeout=WAIT,
                 what="subscribed")
    bad = ["not json", "[1, 2]", '{"type": "subscribe"}',
           '{"type": "delete", "topic": "t", "clientid": "c"}',
           '{"type": "subscribe", "topic": "t", "clientid": "c", "qos": 3}',
           '{"type": "subscribe", "topic": "", "clientid": "c"}',
           '{"type": "subscribe", "topic": "t", "clientid": 5}',
           '{"type": "subscribe", "topic": "t", "clientid": "c", "qos": "x"}',
           '{"type": "subscribe", "type": "unsubscribe", "topic": "t", "clientid": "c"}']
    for m in bad:
        c.publish("mqtt_channel", m)
    c.publish("mqtt_channel", b"\xff\xfe\x00binary")
    R.wait_until(lambda: svc_metrics(b.port)["channel_malformed"] == len(bad) + 1,
                 timeout=WAIT, interval=0.3, what="every malformed event counted")
    m = svc_metrics(b.port)
    assert m["channel_applied"] == 0 and m["channel_events"] == len(bad) + 1
    assert "malformed event ignored" in b.log()
    assert R.roundtrip(b.port)


def test_channel_store_applies_at_next_connect(rsrv, broker_factory):
    b = broker_factory(conf=channel_conf(rsrv, channel_store="on"), workers=2)
    c = rsrv.client()
    R.wait_until(lambda: c.pubsub_numsub("mqtt_channel")[0][1] == 1, timeout=WAIT,
                 what="subscribed")
    c.publish("mqtt_channel", json.dumps({"type": "subscribe", "topic": "cmd/offline",
                                          "clientid": "sleeper", "qos": 2}))
    c.publish("mqtt_channel", json.dumps({"type": "subscribe", "topic": "cmd/gone",
                                          "clientid": "sleeper", "qos": 1}))
    c.publish("mqtt_channel", json.dumps({"type": "unsubscribe", "topic": "cmd/gone",
                                          "clientid": "sleeper"}))
    R.wait_until(lambda: svc_metrics(b.port)["channel_stored"] == 3, timeout=WAIT,
                 interval=0.3, what="3 stored")
    assert c.hgetall(b"mqtt:sub:sleeper") == {b"cmd/offline": b"2"}
    s = R.raw_connect(b.port, "sleeper")
    pub = R.raw_connect(b.port, "app")
    got = []

    def arrived():
        R.publish_ack(pub, "cmd/offline", b"wake", qos=2)
        R.publish_ack(pub, "cmd/gone", b"no", qos=1)
        got.extend(R.drain_publishes(s, quiet=0.2))
        return got
    R.wait_until(arrived, timeout=WAIT, what="subscribed at connect")
    assert {p.topic for p in got} == {"cmd/offline"}


def test_channel_resubscribes_after_redis_restart(rsrv, broker_factory):
    b = broker_factory(conf=channel_conf(rsrv), workers=1)
    c = rsrv.client()
    R.wait_until(lambda: c.pubsub_numsub("mqtt_channel")[0][1] == 1, timeout=WAIT,
                 what="subscribed")
    rsrv.kill9()
    rsrv.start()
    c = rsrv.client()
    R.wait_until(lambda: c.pubsub_numsub("mqtt_channel")[0][1] == 1, timeout=WAIT,
                 what="subscribed again after the restart")
    d = R.raw_connect(b.port, "dev")
    c.publish("mqtt_channel", json.dumps({"type": "subscribe", "topic": "cmd/dev",
                                          "clientid": "dev", "qos": 0}))
    pub = R.raw_connect(b.port, "app")
    got = []

    def arrived():
        R.publish_ack(pub, "cmd/dev", b"hi", qos=0)
        got.extend(R.drain_publishes(d, quiet=0.2))
        return got
    R.wait_until(arrived, timeout=WAIT, what="subscribed through the new connection")
    R.wait_until(lambda: svc_metrics(b.port)["channel_reconnects"] >= 1, timeout=WAIT,
                 interval=0.3, what="the reconnect counted")
    assert svc_metrics(b.port)["channel_connected"] == 1
    assert "subscribing again" in b.log()


# ---------------------------------------------------------------- outages

def publish_stream(port, n, cid="loader", topic="load/t"):
    r = R.raw_connect(port, cid)
    acked = []
    try:
        for i in range(n):
            p = b"p-%05d" % i
            R.publish_ack(r, topic, p, qos=1, pid=i % 65535 + 1)
            acked.append(p)
    finally:
        r.close()
    return acked


def stored(c, topic=b"load/t"):
    ids = c.zrange(b"mqtt:msg:" + topic, 0, -1)
    out = []
    for i in ids:
        p = c.hget(b"mqtt:msg:" + i, b"payload")
        if p is not None:
            out.append(p)
    return out


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_redis_killed_and_restarted_mid_load_loses_nothing(broker_factory, tmpdir_path, mode):
    """Redis with appendfsync always (so Redis itself keeps what it
    confirmed) is killed -9 and restarted while a client publishes: every
    acknowledged message is in Redis at the end, once, in publish order."""
    srv = ExtraRedis(os.path.join(tmpdir_path, "redis-aof"),
                     extra=["--appendonly", "yes", "--appendfsync", "always"])
    try:
        conf = (pool(srv) + rule("message.publish", 1, "on_message_publish", topic="load/#")
                + f"backend.redis.delivery_mode = {mode}\n")
        b = broker_factory(conf=conf, workers=2)
        pub = Publisher(b.port)
        pub.start()
        c = srv.client()
        until(lambda: len(stored(c)) >= 100, what="load under way")
        srv.kill9()
        if mode == "async":  # acknowledged while Redis is away
            n = len(pub.acked)
            R.wait_until(lambda: len(pub.acked) >= n + 50, timeout=WAIT,
                         what="PUBACKs during the outage")
        else:
            time.sleep(0.5)  # the publisher waits for its PUBACK meanwhile
        srv.start()
        acked = pub.stop(min_after=100)
        c = srv.client()
        until(lambda: len(stored(c)) >= len(acked), timeout=60, interval=0.2,
              what=f"{len(acked)} messages stored after the restart")
        assert stored(c) == acked, "missing, duplicated or out of order"
        log = b.log()
        assert "backend redis pool1" in log and ("retrying" in log or "cannot connect" in log
                                                 or "reconnecting" in log), log[-2000:]
    finally:
        srv.stop()


# ---------------------------------------------------------------- sentinel

def write_sentinel_conf(path, master_port, port):
    with open(path, "w") as f:
        f.write(f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\n"
                f"dir {os.path.dirname(path)}\n"
                f"sentinel monitor mymaster 127.0.0.1 {master_port} 1\n"
                "sentinel down-after-milliseconds mymaster 1000\n"
                "sentinel failover-timeout mymaster 5000\n"
                "sentinel parallel-syncs mymaster 1\n")


def test_sentinel_failover_loses_nothing(broker_factory, tmpdir_path):
    from conftest import free_port
    base = os.path.join(tmpdir_path, "sentinel")
    master = ExtraRedis(os.path.join(base, "m"))
    replica = ExtraRedis(os.path.join(base, "r"),
                         extra=["--replicaof", "127.0.0.1", str(master.port)])
    sport = free_port()
    sdir = os.path.join(base, "s")
    os.makedirs(sdir, exist_ok=True)
    sconf = os.path.join(sdir, "sentinel.conf")
    write_sentinel_conf(sconf, master.port, sport)
    sent = subprocess.Popen(["/usr/bin/redis-server", sconf, "--sentinel",
                             "--logfile", os.path.join(sdir, "sentinel.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        sc = redis.Redis(host="127.0.0.1", port=sport)
        until(lambda: sc.execute_command("SENTINEL", "replicas", "mymaster"),
              timeout=WAIT, interval=0.2, what="the sentinel sees the replica")
        conf = (f"backend.redis.pool1.server = 127.0.0.1:{free_port()},127.0.0.1:{sport}\n"
                "backend.redis.pool1.sentinel = mymaster\n"
                "backend.redis.pool1.pool_size = 2\n"
                "backend.redis.pool1.retry_max_backoff = 500ms\n"
                + rule("message.publish", 1, "on_message_publish", topic="load/#"))
        b = broker_factory(conf=conf, workers=2)
        acked = publish_stream(b.port, 100, cid="before")
        mc = master.client()
        R.wait_until(lambda: len(stored(mc)) == 100, timeout=WAIT, what="100 on the master")
        # what Redis itself has not replicated when the master dies is lost
        # by Redis, not by keepmq: wait until the replica has it
        until(lambda: stored(replica.client()) == acked, timeout=30, interval=0.2,
              what="the replica in sync")
        master.kill9()
        # async: publishing goes on during the failover; the broker buffers
        r = R.raw_connect(b.port, "during")
        for i in range(100, 200):
            R.publish_ack(r, "load/t", b"p-%05d" % i, qos=1, pid=i)
            acked.append(b"p-%05d" % i)
        r.close()
        R.wait_until(lambda: sc.execute_command("SENTINEL", "get-master-addr-by-name",
                                                "mymaster")[1] == str(replica.port).encode(),
                     timeout=60, interval=0.2, what="the sentinel promoted the replica")
        rc = replica.client()
        try:
            until(lambda: len(stored(rc)) >= 200, timeout=60, interval=0.2,
                  what="200 messages on the new master")
        except AssertionError as e:
            raise AssertionError(f"{e}; stored {len(stored(rc))}; broker log:\n"
                                 f"{b.log()[-3000:]}") from None
        assert stored(rc) == acked
    finally:
        sent.terminate()
        sent.wait(timeout=10)
        for s in (master, replica):
            s.stop()
