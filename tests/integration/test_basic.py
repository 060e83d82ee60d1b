"""Basic end-to-end checks: the broker starts, accepts both protocol
families and routes messages between clients on different workers."""
import mqttraw as R
from clients import Client


def test_qos1_roundtrip_v311_and_v5(broker):
    sub = Client(broker.port, "sub-basic", version=4)
    assert sub.subscribe("basic/#", qos=1) == [1]
    pub = Client(broker.port, "pub-basic", version=5)
    pub.publish("basic/a", b"hello", qos=1)
    m = sub.recv()
    assert (m.topic, m.payload, m.qos) == ("basic/a", b"hello", 1)
    pub.disconnect()
    sub.disconnect()


def test_many_client_ids_spread_over_workers(broker):
    # ids hash to different owner workers: messages must cross workers
    subs = [Client(broker.port, f"spread-{i}", version=4) for i in range(8)]
    for i, s in enumerate(subs):
        s.subscribe(f"spread/{i}", qos=1)
    pubs = [Client(broker.port, f"spread-pub-{i}", version=5) for i in range(8)]
    for i, p in enumerate(pubs):
        p.publish(f"spread/{(i + 3) % 8}", f"m{i}".encode(), qos=1)
    for i, s in enumerate(subs):
        m = s.recv()
        assert m.payload == f"m{(i - 3) % 8}".encode()
    for c in subs + pubs:
        c.disconnect()


def test_raw_connect_v5_connack_properties(broker):
    r = R.Raw(broker.port, version=5)
    ack = r.connect("", version=5)
    assert ack.rc == 0
    assert ack.props["assigned_client_id"].startswith("keepmq-")
    assert ack.props["maximum_packet_size"] == 1024 * 1024
    assert ack.props["receive_maximum"] == 32
    assert ack.props["topic_alias_maximum"] == 64
    r.send(R.PINGREQ_BYTES)
    r.expect(R.PINGRESP)
    r.close()
