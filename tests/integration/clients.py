"""A synchronous wrapper around paho-mqtt (1.6) for tests.

`Client(port, ...)` connects and waits for CONNACK; received messages go to a
queue that `recv()` reads with a timeout; `subscribe`/`unsubscribe` wait for
their acknowledgement; `publish` waits until the QoS flow completes.
"""
import queue
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

VERSIONS = {3: mqtt.MQTTv31, 4: mqtt.MQTTv311, 5: mqtt.MQTTv5}


def publish_props(**kw):
    """Properties for a v5 PUBLISH: names as paho spells them
    (MessageExpiryInterval, ContentType, ResponseTopic, CorrelationData,
    UserProperty=[(k, v)], PayloadFormatIndicator)."""
    p = Properties(PacketTypes.PUBLISH)
    for k, v in kw.items():
        setattr(p, k, v)
    return p


def connect_props(**kw):
    p = Properties(PacketTypes.CONNECT)
    for k, v in kw.items():
        setattr(p, k, v)
    return p


class Client:
    def __init__(self, port, client_id="", version=5, clean=True, keepalive=60, username=None,
                 password=None, will=None, properties=None, will_properties=None,
                 host="127.0.0.1", wait=True, timeout=5.0):
        self.version = version
        kw = {"client_id": client_id, "protocol": VERSIONS[version]}
        if version != 5:
            kw["clean_session"] = clean
        self.c = mqtt.Client(**kw)
        self.messages = queue.Queue()
        self.connacks = queue.Queue()
        self.acks = queue.Queue()
        self.disconnected = threading.Event()
        self.disconnect_rc = None
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_unsubscribe = self._on_unsubscribe
        self.c.on_disconnect = self._on_disconnect
        if username is not None:
            self.c.username_pw_set(username, password)
        if will:
            topic, payload, qos, retain = will
            self.c.will_set(topic, payload, qos, retain, properties=will_properties)
        ckw = {}
        if version == 5:
            ckw["clean_start"] = clean
            if properties is not None:
                ckw["properties"] = properties
        self.c.connect(host, port, keepalive, **ckw)
        self.c.loop_start()
        self.connack = None
        if wait:
            self.connack = self.connacks.get(timeout=timeout)
            rc = self.connack[1]
            if (rc if isinstance(rc, int) else rc.value) != 0:
                raise ConnectionRefusedError(f"CONNACK {rc}")

    # callbacks run on paho's network thread
    def _on_connect(self, c, userdata, flags, rc, properties=None):
        self.connacks.put((flags, rc, properties))

    def _on_message(self, c, userdata, msg):
        self.messages.put(msg)

    def _on_subscribe(self, c, userdata, mid, granted, properties=None):
        self.acks.put(("suback", mid, granted))

    def _on_unsubscribe(self, c, userdata, mid, properties=None, reasons=None):
        self.acks.put(("unsuback", mid, reasons))

    def _on_disconnect(self, c, userdata, rc, properties=None):
        self.disconnect_rc = rc
        self.disconnected.set()

    @property
    def session_present(self):
        return bool(self.connack[0].get("session present"))

    def _wait_ack(self, kind, mid, timeout):
        end = time.time() + timeout
        while time.time() < end:
            try:
                k, m, data = self.acks.get(timeout=max(0.01, end - time.time()))
            except queue.Empty:
                break
            if k == kind and m == mid:
                return data
        raise TimeoutError(f"no {kind} for mid {mid}")

    def subscribe(self, topic, qos=0, timeout=5.0, options=None, properties=None):
        """Returns the granted QoS / reason codes (list)."""
        if self.version == 5:
            opts = options or SubscribeOptions(qos=qos)
            rc, mid = self.c.subscribe(topic, options=opts, properties=properties)
        else:
            rc, mid = self.c.subscribe(topic, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS
        granted = self._wait_ack("suback", mid, timeout)
        return [g if isinstance(g, int) else g.value for g in granted]

    def unsubscribe(self, topic, timeout=5.0):
        rc, mid = self.c.unsubscribe(topic)
        assert rc == mqtt.MQTT_ERR_SUCCESS
        return self._wait_ack("unsuback", mid, timeout)

    def publish(self, topic, payload=b"", qos=0, retain=False, properties=None, timeout=5.0):
        info = self.c.publish(topic, payload, qos, retain, properties=properties)
        info.wait_for_publish(timeout)
        assert info.is_published(), f"publish to {topic} not completed"
        return info

    def recv(self, timeout=5.0):
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError("no message received") from None

    def recv_n(self, n, timeout=10.0):
        end = time.time() + timeout
        out = []
        while len(out) < n:
            out.append(self.recv(max(0.01, end - time.time())))
        return out

    def no_message(self, timeout=0.5):
        try:
            m = self.messages.get(timeout=timeout)
        except queue.Empty:
            return True
        raise AssertionError(f"unexpected message on {m.topic}: {m.payload!r}")

    def disconnect(self, properties=None, reasoncode=None):
        if self.version == 5:
            self.c.disconnect(reasoncode=reasoncode, properties=properties)
        else:
            self.c.disconnect()
        self.disconnected.wait(5)
        self.c.loop_stop()

    def drop(self):
        """Closes the socket without DISCONNECT (an abnormal end)."""
        self.c.loop_stop()
        sock = self.c.socket()
        if sock:
            sock.close()
