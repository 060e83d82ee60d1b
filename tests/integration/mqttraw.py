"""A minimal MQTT client over a raw socket, for tests that need exact bytes.

It is written independently of keepmq's C codec, from the specifications, so
the two check each other. Encoders build packets from plain arguments (or
take raw bytes to send malformed ones); `recv_packet` reads one whole packet
and `parse` decodes the fields tests assert on (reason codes, properties).
"""
import socket
import struct
import threading
import time

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = range(8, 16)

# property id -> type: b byte, h two-byte int, i four-byte int, v varint,
# s UTF-8 string, d binary data, p string pair
PROPS = {
    0x01: ("payload_format", "b"), 0x02: ("message_expiry", "i"), 0x03: ("content_type", "s"),
    0x08: ("response_topic", "s"), 0x09: ("correlation_data", "d"),
    0x0B: ("subscription_id", "v"), 0x11: ("session_expiry", "i"),
    0x12: ("assigned_client_id", "s"), 0x13: ("server_keepalive", "h"),
    0x15: ("auth_method", "s"), 0x16: ("auth_data", "d"),
    0x17: ("request_problem_info", "b"), 0x18: ("will_delay", "i"),
    0x19: ("request_response_info", "b"), 0x1A: ("response_info", "s"),
    0x1C: ("server_reference", "s"), 0x1F: ("reason_string", "s"),
    0x21: ("receive_maximum", "h"), 0x22: ("topic_alias_maximum", "h"),
    0x23: ("topic_alias", "h"), 0x24: ("maximum_qos", "b"), 0x25: ("retain_available", "b"),
    0x26: ("user_property", "p"), 0x27: ("maximum_packet_size", "i"),
    0x28: ("wildcard_sub_available", "b"), 0x29: ("sub_id_available", "b"),
    0x2A: ("shared_sub_available", "b"),
}
PROP_IDS = {name: (pid, t) for pid, (name, t) in PROPS.items()}


def varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            b |= 0x80
        out.append(b)
        if not n:
            return bytes(out)


def s(text):
    """A length-prefixed string (str is UTF-8 encoded, bytes sent as is)."""
    if isinstance(text, str):
        text = text.encode()
    return struct.pack("!H", len(text)) + text


def props(**kw):
    """Encodes a property block. Repeatable properties take lists
    (user_property=[("k","v")], subscription_id=[1,2])."""
    out = bytearray()
    for name, value in kw.items():
        pid, t = PROP_IDS[name]
        values = value if isinstance(value, list) else [value]
        for v in values:
            out.append(pid)
            if t == "b":
                out.append(v)
            elif t == "h":
                out += struct.pack("!H", v)
            elif t == "i":
                out += struct.pack("!I", v)
            elif t == "v":
                out += varint(v)
            elif t in ("s", "d"):
                out += s(v)
            elif t == "p":
                out += s(v[0]) + s(v[1])
    return varint(len(out)) + bytes(out)


def packet(ptype, flags, body):
    return bytes([(ptype << 4) | flags]) + varint(len(body)) + body


def connect(client_id="", version=4, clean=True, keepalive=60, username=None, password=None,
            will=None, properties=None, will_properties=None):
    """will = (topic, payload, qos, retain)."""
    name = b"MQIsdp" if version == 3 else b"MQTT"
    flags = 0x02 if clean else 0
    if will:
        flags |= 0x04 | (will[2] << 3) | (0x20 if will[3] else 0)
    if username is not None:
        flags |= 0x80
    if password is not None:
        flags |= 0x40
    body = s(name) + bytes([version, flags]) + struct.pack("!H", keepalive)
    if version == 5:
        body += properties if properties is not None else props()
    body += s(client_id)
    if will:
        if version == 5:
            body += will_properties if will_properties is not None else props()
        body += s(will[0]) + s(will[1])
    if username is not None:
        body += s(username)
    if password is not None:
        body += s(password)
    return packet(CONNECT, 0, body)


def publish(topic, payload=b"", qos=0, retain=False, dup=False, pid=1, version=4, properties=None):
    if isinstance(payload, str):
        payload = payload.encode()
    flags = (qos << 1) | (1 if retain else 0) | (8 if dup else 0)
    body = s(topic)
    if qos:
        body += struct.pack("!H", pid)
    if version == 5:
        body += properties if properties is not None else props()
    return packet(PUBLISH, flags, body + payload)


def ack(ptype, pid, version=4, rc=None, properties=None):
    body = struct.pack("!H", pid)
    if version == 5 and (rc is not None or properties is not None):
        body += bytes([rc or 0])
        if properties is not None:
            body += properties
    return packet(ptype, 2 if ptype == PUBREL else 0, body)


def subscribe(pid, filters, version=4, properties=None):
    """filters: list of (filter, options byte)."""
    body = struct.pack("!H", pid)
    if version == 5:
        body += properties if properties is not None else props()
    for f, o in filters:
        body += s(f) + bytes([o])
    return packet(SUBSCRIBE, 2, body)


def unsubscribe(pid, filters, version=4, properties=None):
    body = struct.pack("!H", pid)
    if version == 5:
        body += properties if properties is not None else props()
    for f in filters:
        body += s(f)
    return packet(UNSUBSCRIBE, 2, body)


def disconnect(version=4, rc=None, properties=None):
    if version == 5 and (rc is not None or properties is not None):
        body = bytes([rc or 0]) + (properties if properties is not None else b"")
        return packet(DISCONNECT, 0, body)
    return packet(DISCONNECT, 0, b"")


PINGREQ_BYTES = bytes([PINGREQ << 4, 0])


class Packet:
    def __init__(self, ptype, flags, body):
        self.type, self.flags, self.body = ptype, flags, body
        self.props = {}

    def __repr__(self):
        return f"Packet(type={self.type}, flags={self.flags:#x}, fields={self.__dict__})"


def _read_varint(buf, i):
    mult, val = 1, 0
    while True:
        b = buf[i]
        i += 1
        val += (b & 0x7F) * mult
        if not b & 0x80:
            return val, i
        mult *= 128


def _read_props(buf, i):
    n, i = _read_varint(buf, i)
    end = i + n
    out = {}
    while i < end:
        pid = buf[i]
        i += 1
        name, t = PROPS[pid]
        if t == "b":
            v = buf[i]; i += 1
        elif t == "h":
            v = struct.unpack_from("!H", buf, i)[0]; i += 2
        elif t == "i":
            v = struct.unpack_from("!I", buf, i)[0]; i += 4
        elif t == "v":
            v, i = _read_varint(buf, i)
        elif t in ("s", "d"):
            ln = struct.unpack_from("!H", buf, i)[0]
            v = bytes(buf[i + 2:i + 2 + ln]); i += 2 + ln
            if t == "s":
                v = v.decode()
        else:
            l1 = struct.unpack_from("!H", buf, i)[0]
            k = bytes(buf[i + 2:i + 2 + l1]).decode(); i += 2 + l1
            l2 = struct.unpack_from("!H", buf, i)[0]
            v = (k, bytes(buf[i + 2:i + 2 + l2]).decode()); i += 2 + l2
        if name in ("user_property", "subscription_id"):
            out.setdefault(name, []).append(v)
        else:
            out[name] = v
    return out, end


def parse(p, version):
    """Decodes the fields of a packet sent by the server."""
    b = p.body
    if p.type == CONNACK:
        p.session_present = bool(b[0] & 1)
        p.rc = b[1]
        if version == 5 and len(b) > 2:
            p.props, _ = _read_props(b, 2)
    elif p.type == PUBLISH:
        p.qos = (p.flags >> 1) & 3
        p.retain = bool(p.flags & 1)
        p.dup = bool(p.flags & 8)
        tl = struct.unpack_from("!H", b, 0)[0]
        p.topic = bytes(b[2:2 + tl]).decode()
        i = 2 + tl
        p.pid = None
        if p.qos:
            p.pid = struct.unpack_from("!H", b, i)[0]
            i += 2
        if version == 5:
            p.props, i = _read_props(b, i)
        p.payload = bytes(b[i:])
    elif p.type in (PUBACK, PUBREC, PUBREL, PUBCOMP):
        p.pid = struct.unpack_from("!H", b, 0)[0]
        p.rc = b[2] if len(b) > 2 else 0
        if version == 5 and len(b) > 3:
            p.props, _ = _read_props(b, 3)
    elif p.type in (SUBACK, UNSUBACK):
        p.pid = struct.unpack_from("!H", b, 0)[0]
        i = 2
        if version == 5:
            p.props, i = _read_props(b, i)
        p.rcs = list(b[i:])
    elif p.type in (DISCONNECT, AUTH):
        p.rc = b[0] if b else 0
        if version == 5 and len(b) > 1:
            p.props, _ = _read_props(b, 1)
    return p


class Raw:
    """One raw connection. recv() returns a parsed Packet or raises
    TimeoutError; closed() tells whether the server closed the connection."""

    def __init__(self, port, host="127.0.0.1", version=4, timeout=5.0):
        self.version = version
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.timeout = timeout

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        remaining = deadline - time.time()
        if remaining <= 0:
            raise TimeoutError("no packet from the broker")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no packet from the broker")
        if not data:
            raise ConnectionError("connection closed by the broker")
        self.buf += data

    def recv(self, timeout=None):
        deadline = time.time() + (timeout if timeout is not None else self.timeout)
        while True:
            if len(self.buf) >= 2:
                i, mult, ln, ok = 1, 1, 0, False
                while i < len(self.buf) and i <= 4:
                    b = self.buf[i]
                    ln += (b & 0x7F) * mult
                    mult *= 128
                    i += 1
                    if not b & 0x80:
                        ok = True
                        break
                if ok and len(self.buf) >= i + ln:
                    first = self.buf[0]
                    body = bytes(self.buf[i:i + ln])
                    del self.buf[:i + ln]
                    return parse(Packet(first >> 4, first & 15, body), self.version)
            self._fill(deadline)

    def expect(self, ptype, timeout=None):
        p = self.recv(timeout)
        assert p.type == ptype, f"expected packet type {ptype}, got {p!r}"
        return p

    def closed(self, timeout=3.0):
        """True if the server closes the connection within timeout (any
        packets received before the close are discarded)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.time()))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return False
            except ConnectionResetError:
                return True
            if not data:
                return True
            self.buf += data
        return False

    def connect(self, client_id="", **kw):
        kw.setdefault("version", self.version)
        self.send(connect(client_id, **kw))
        return self.expect(CONNACK)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def raw_connect(port, client_id="", version=4, **kw):
    r = Raw(port, version=version)
    ack = r.connect(client_id, **kw)
    assert ack.rc == 0, f"CONNACK refused: {ack!r}"
    return r


# ---------------------------------------------------------------- helpers for
# tests that care which I/O worker owns a client id, and for waiting on a
# condition instead of sleeping.

_M64 = (1 << 64) - 1


def _rotl(x, b):
    return ((x << b) | (x >> (64 - b))) & _M64


def _siphash13(k0, k1, data):
    v0 = 0x736F6D6570736575 ^ k0
    v1 = 0x646F72616E646F6D ^ k1
    v2 = 0x6C7967656E657261 ^ k0
    v3 = 0x7465646279746573 ^ k1

    def rnd(v0, v1, v2, v3):
        v0 = (v0 + v1) & _M64; v1 = _rotl(v1, 13); v1 ^= v0; v0 = _rotl(v0, 32)
        v2 = (v2 + v3) & _M64; v3 = _rotl(v3, 16); v3 ^= v2
        v0 = (v0 + v3) & _M64; v3 = _rotl(v3, 21); v3 ^= v0
        v2 = (v2 + v1) & _M64; v1 = _rotl(v1, 17); v1 ^= v2; v2 = _rotl(v2, 32)
        return v0, v1, v2, v3

    n = len(data)
    whole = n - n % 8
    for i in range(0, whole, 8):
        m = int.from_bytes(data[i:i + 8], "little")
        v3 ^= m
        v0, v1, v2, v3 = rnd(v0, v1, v2, v3)
        v0 ^= m
    b = ((n & 0xFF) << 56) | int.from_bytes(data[whole:], "little")
    v3 ^= b
    v0, v1, v2, v3 = rnd(v0, v1, v2, v3)
    v0 ^= b
    v2 ^= 0xFF
    for _ in range(3):
        v0, v1, v2, v3 = rnd(v0, v1, v2, v3)
    return v0 ^ v1 ^ v2 ^ v3


def owner_worker(client_id, nworkers):
    """The I/O worker that owns a client id (keepmq's broker_owner():
    a SipHash-1-3 with fixed keys, modulo the number of workers)."""
    if nworkers <= 1:
        return 0
    if isinstance(client_id, str):
        client_id = client_id.encode()
    return _siphash13(0x6B6565706D712121, 0x776F726B65727321, client_id) % nworkers


def ids_per_worker(prefix, nworkers, per_worker=1):
    """Client ids `prefix-<n>`, per_worker of them owned by each worker, as a
    list of lists indexed by worker."""
    out = [[] for _ in range(nworkers)]
    i = 0
    while any(len(x) < per_worker for x in out):
        cid = f"{prefix}-{i}"
        w = owner_worker(cid, nworkers)
        if len(out[w]) < per_worker:
            out[w].append(cid)
        i += 1
    return out


def wait_until(cond, timeout=5.0, interval=0.02, what="condition"):
    """Polls cond() until it returns a true value (returned); fails after timeout."""
    end = time.time() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.time() >= end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------- helpers for
# the subscribe/retain/shared/sys/badinput tests: one call per exchange.

def _skipped(r):
    if not hasattr(r, "skipped"):
        r.skipped = []
    return r.skipped


def _next(r, timeout):
    """The next packet: first those expect_skip set aside, then the socket."""
    sk = _skipped(r)
    if sk:
        return sk.pop(0)
    return r.recv(timeout)


def expect_skip(r, ptype, timeout=None):
    """Returns the next packet of type ptype. Packets of other types that
    come first are set aside in r.skipped, where recv_publishes,
    drain_publishes and no_publish find them."""
    sk = _skipped(r)
    for i, p in enumerate(sk):
        if p.type == ptype:
            return sk.pop(i)
    deadline = time.time() + (timeout if timeout is not None else r.timeout)
    while True:
        p = r.recv(max(0.01, deadline - time.time()))
        if p.type == ptype:
            return p
        sk.append(p)


def sub_ack(r, filters, pid=1, properties=None):
    """SUBSCRIBE (filters: [(filter, options)] or one filter string at QoS 0)
    and return the SUBACK's reason codes."""
    if isinstance(filters, str):
        filters = [(filters, 0)]
    r.send(subscribe(pid, filters, version=r.version, properties=properties))
    p = expect_skip(r, SUBACK)
    assert p.pid == pid, f"SUBACK for packet id {p.pid}, expected {pid}"
    return p.rcs


def unsub_ack(r, filters, pid=1):
    """UNSUBSCRIBE and return the UNSUBACK packet (v5: .rcs has the codes)."""
    if isinstance(filters, str):
        filters = [filters]
    r.send(unsubscribe(pid, filters, version=r.version))
    p = expect_skip(r, UNSUBACK)
    assert p.pid == pid
    return p


def publish_ack(r, topic, payload=b"", qos=0, retain=False, pid=1, properties=None):
    """PUBLISH and complete its QoS flow. Returns the PUBACK (QoS 1), the
    PUBREC (QoS 2, after PUBREL/PUBCOMP) or None (QoS 0)."""
    r.send(publish(topic, payload, qos=qos, retain=retain, pid=pid, version=r.version,
                   properties=properties))
    if qos == 1:
        return expect_skip(r, PUBACK)
    if qos == 2:
        rec = expect_skip(r, PUBREC)
        r.send(ack(PUBREL, pid, version=r.version))
        expect_skip(r, PUBCOMP)
        return rec
    return None


def recv_publishes(r, n, timeout=5.0):
    """Receives n PUBLISH packets (acknowledging QoS 1/2) and returns them.
    Other packets are ignored. Raises TimeoutError with the count so far."""
    out = []
    deadline = time.time() + timeout
    while len(out) < n:
        try:
            p = _next(r, max(0.01, deadline - time.time()))
        except TimeoutError:
            raise TimeoutError(f"received {len(out)} of {n} PUBLISH packets") from None
        if _ack_incoming(r, p):
            out.append(p)
    return out


def _ack_incoming(r, p):
    """Acknowledges a packet from the server as a well-behaved client would
    (PUBACK, PUBREC, PUBCOMP for a PUBREL). True if it was a PUBLISH."""
    if p.type == PUBREL:
        r.send(ack(PUBCOMP, p.pid, version=r.version))
        return False
    if p.type != PUBLISH:
        return False
    if p.qos == 1:
        r.send(ack(PUBACK, p.pid, version=r.version))
    elif p.qos == 2:
        r.send(ack(PUBREC, p.pid, version=r.version))
    return True


def drain_publishes(r, quiet=0.3, limit=None):
    """Receives PUBLISH packets until none arrives for `quiet` seconds (or
    `limit` were received), acknowledging them. Returns them."""
    out = []
    while limit is None or len(out) < limit:
        try:
            p = _next(r, quiet)
        except TimeoutError:
            break
        if _ack_incoming(r, p):
            out.append(p)
    return out


def no_publish(r, timeout=0.3):
    """Asserts that no PUBLISH arrives within timeout (other packets ignored)."""
    deadline = time.time() + timeout
    while True:
        left = deadline - time.time()
        if left <= 0:
            return True
        try:
            p = _next(r, left)
        except TimeoutError:
            return True
        assert p.type != PUBLISH, f"unexpected PUBLISH {p.topic!r} {p.payload!r}"


def roundtrip(port, version=4, tag="rt"):
    """A fresh subscriber and publisher exchange one QoS 1 message: proof that
    the broker still serves clients. Returns True or raises."""
    import os as _os
    topic = f"roundtrip/{tag}/{_os.getpid()}/{time.time_ns()}"
    s = raw_connect(port, f"{tag}-sub-{time.time_ns()}", version=version)
    p = raw_connect(port, f"{tag}-pub-{time.time_ns()}", version=version)
    try:
        assert sub_ack(s, [(topic, 1)]) == [1]
        publish_ack(p, topic, b"alive", qos=1)
        m = recv_publishes(s, 1)[0]
        assert (m.topic, m.payload) == (topic, b"alive")
    finally:
        s.close()
        p.close()
    return True


# ---------------------------------------------------------------- added helpers
# (appended for the publish/QoS/v5-feature tests; nothing above changed)

def client_id_on_worker(prefix, worker, nworkers):
    """The first id prefix-0, prefix-1, ... owned by `worker`."""
    i = 0
    while True:
        cid = f"{prefix}-{i}"
        if owner_worker(cid, nworkers) == worker:
            return cid
        i += 1


def _read_until_close(self, timeout=3.0):
    """Reads packets until the broker closes the connection; returns them.
    Raises TimeoutError if the connection is still open after timeout."""
    deadline = time.time() + timeout
    out = []
    while True:
        try:
            out.append(self.recv(max(0.0, deadline - time.time())))
        except (ConnectionError, OSError) as e:
            if isinstance(e, TimeoutError):
                raise
            return out


def _expect_disconnect(self, rc, timeout=3.0):
    """MQTT 5: the next packet is DISCONNECT with reason rc, then the broker
    closes. MQTT 3: the broker closes without sending anything. Returns the
    DISCONNECT packet (None for MQTT 3)."""
    pkts = self.read_until_close(timeout)
    if self.version == 5:
        assert pkts, "connection closed without DISCONNECT"
        assert len(pkts) == 1 and pkts[0].type == DISCONNECT, f"expected only DISCONNECT: {pkts!r}"
        assert pkts[0].rc == rc, f"DISCONNECT reason {pkts[0].rc:#x}, expected {rc:#x}"
        return pkts[0]
    assert pkts == [], f"MQTT 3 connection got packets before the close: {pkts!r}"
    return None


def _silent(self, timeout=0.5):
    """True if no packet arrives within timeout (a short wait proving a negative)."""
    try:
        p = self.recv(timeout)
    except TimeoutError:
        return True
    raise AssertionError(f"unexpected packet: {p!r}")


Raw.read_until_close = _read_until_close
Raw.expect_disconnect = _expect_disconnect
Raw.silent = _silent


class ClientEvents:
    """Watches the broker's $SYS client events
    ($SYS/brokers/<node>/clients/<id>/connected|disconnected; they need
    broker.sys_interval > 0, the default), so a test can wait until the
    broker has noticed that a connection ended instead of sleeping."""

    def __init__(self, port, client_id="sys-events-watch"):
        self.r = raw_connect(port, client_id, version=4)
        self.r.send(subscribe(1, [("$SYS/brokers/+/clients/+/+", 0)]))
        self.r.expect(SUBACK)
        self.seen = []

    def wait(self, client_id, event="disconnected", timeout=5.0):
        """Waits for (and consumes) the next `event` of client_id."""
        deadline = time.time() + timeout
        while True:
            for i, (cid, ev) in enumerate(self.seen):
                if cid == client_id and ev == event:
                    del self.seen[i]
                    return
            p = self.r.recv(max(0.01, deadline - time.time()))
            if p.type == PUBLISH:
                parts = p.topic.split("/")
                self.seen.append(("/".join(parts[4:-1]), parts[-1]))

    def close(self):
        self.r.close()


class Publisher(threading.Thread):
    """Publishes QoS 1 messages p-00000, p-00001, ... to load/t, each
    acknowledged before the next, until stop() (then at least `min_after`
    more after the call). `acked` lists the payloads acknowledged."""

    def __init__(self, port, cid="loader", topic="load/t"):
        super().__init__(daemon=True)
        self.port, self.cid, self.topic = port, cid, topic
        self.acked = []
        self.error = None
        self._stop_at = None

    def run(self):
        r = raw_connect(self.port, self.cid)
        try:
            i = 0
            while self._stop_at is None or len(self.acked) < self._stop_at:
                p = b"p-%05d" % i
                publish_ack(r, self.topic, p, qos=1, pid=i % 65535 + 1)
                self.acked.append(p)
                i += 1
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e
        finally:
            r.close()

    def stop(self, min_after=100):
        self._stop_at = len(self.acked) + min_after
        self.join(timeout=120)
        assert not self.is_alive(), "the publisher is stuck"
        assert self.error is None, self.error
        return self.acked
