/*
 * send.c - packets the broker sends: CONNACK, PUBLISH, the acks, SUBACK,
 * UNSUBACK, PINGRESP, DISCONNECT.
 *
 * PUBLISH is the hot one. It is encoded straight into the connection's
 * output buffer. For MQTT 5 it carries the forwarded properties, the
 * remaining message expiry, the subscription identifiers and, if the client
 * allows topic aliases, an alias: the first Topic Alias Maximum distinct
 * topics get one, and later messages on them send only the alias.
 * A packet larger than the client's Maximum Packet Size is not sent at all
 * (3.1.2.11.4); optional properties of other packets are dropped first.
 */
#include <stdlib.h>
#include <string.h>

#include "broker/broker.h"
#include "util/clock.h"

typedef struct alias_entry {
	uint16_t alias;
	uint32_t len;
	char topic[];
} alias_entry;

static hm_key alias_key(const void *v)
{
	const alias_entry *e = v;
	return (hm_key){e->topic, e->len};
}

/* Applies a client's packet size limit to a non-PUBLISH packet by dropping
 * its reason string and user properties. Returns false if it still does not fit. */
static bool fit(conn *c, mqtt_packet *pkt, mqtt_props *pr)
{
	if (!c->max_packet_out || mqtt_encoded_size(pkt, c->version) <= c->max_packet_out)
		return true;
	if (pr) {
		pr->present &= ~MQTT_PF_REASON_STRING;
		pr->user_props = MQTT_STR_NULL;
		pr->n_user_props = 0;
	}
	return mqtt_encoded_size(pkt, c->version) <= c->max_packet_out;
}

int send_connack(conn *c, bool present, uint8_t rc, const mqtt_props *props)
{
	mqtt_packet pkt = {.type = MQTT_CONNACK};
	pkt.u.connack.session_present = present && rc == 0;
	pkt.u.connack.rc = c->version == MQTT_V5 ? rc : (rc ? mqtt_rc_to_v3_connack(rc) : 0);
	if (props && c->version == MQTT_V5)
		pkt.u.connack.props = *props;
	if (!fit(c, &pkt, &pkt.u.connack.props))
		return -1;
	return conn_send_packet(c, &pkt);
}

static uint16_t alias_for(conn *c, mqtt_str topic, bool *is_new)
{
	*is_new = false;
	if (!c->alias_out) {
		c->alias_out = malloc(sizeof(hashmap));
		if (!c->alias_out)
			return 0;
		hm_init(c->alias_out, alias_key);
	}
	alias_entry *e = hm_get(c->alias_out, topic.p, topic.len);
	if (e)
		return e->alias;
	if (c->alias_out_next >= c->alias_out_max)
		return 0;
	e = malloc(sizeof(*e) + topic.len);
	if (!e)
		return 0;
	e->alias = (uint16_t)(c->alias_out_next + 1);
	e->len = topic.len;
	memcpy(e->topic, topic.p, topic.len);
	void *old;
	if (hm_put(c->alias_out, e, &old)) {
		free(e);
		return 0;
	}
	c->alias_out_next++;
	*is_new = true;
	return e->alias;
}

static void alias_forget(conn *c, mqtt_str topic)
{
	alias_entry *e = hm_remove(c->alias_out, topic.p, topic.len);
	free(e);
	c->alias_out_next--;
}

int send_publish(conn *c, delivery *d)
{
	kmq_msg *m = d->msg;
	mqtt_packet pkt = {.type = MQTT_PUBLISH};
	mqtt_publish *p = &pkt.u.publish;
	p->qos = d->qos;
	p->dup = (d->flags & DLV_DUP) && d->qos > 0;
	p->retain = (d->flags & DLV_RETAIN) != 0;
	p->packet_id = d->qos ? d->pid : 0;
	p->topic = m->topic;
	p->payload = m->payload;
	uint32_t ids[1 + 8];
	bool new_alias = false;
	if (c->version == MQTT_V5) {
		mqtt_props *pr = &p->props;
		if (m->flags & MSG_F_PAYLOAD_FORMAT) {
			pr->present |= MQTT_PF_PAYLOAD_FORMAT;
			pr->payload_format = m->payload_format;
		}
		if (m->flags & MSG_F_EXPIRY) {
			pr->present |= MQTT_PF_MESSAGE_EXPIRY;
			pr->message_expiry = msg_remaining_expiry(m, clock_wall_ms());
		}
		if (m->content_type.len) {
			pr->present |= MQTT_PF_CONTENT_TYPE;
			pr->content_type = m->content_type;
		}
		if (m->response_topic.len) {
			pr->present |= MQTT_PF_RESPONSE_TOPIC;
			pr->response_topic = m->response_topic;
		}
		if (m->correlation_data.len) {
			pr->present |= MQTT_PF_CORRELATION_DATA;
			pr->correlation_data = m->correlation_data;
		}
		if (m->n_user_props) {
			pr->user_props = m->user_props;
			pr->n_user_props = m->n_user_props;
		}
		if (d->sub_id) {
			uint32_t n = 0;
			ids[n++] = d->sub_id;
			for (uint16_t i = 0; i < d->n_more && n < 9; i++)
				ids[n++] = d->more_ids[i];
			pr->sub_ids = ids;
			pr->n_sub_ids = n;
			pr->present |= MQTT_PF_SUBSCRIPTION_ID;
			pr->subscription_id = ids[0];
		}
		if (c->alias_out_max) {
			uint16_t a = alias_for(c, m->topic, &new_alias);
			if (a) {
				pr->present |= MQTT_PF_TOPIC_ALIAS;
				pr->topic_alias = a;
				if (!new_alias)
					p->topic = MQTT_STR_NULL;
			}
		}
	}
	size_t n = mqtt_encoded_size(&pkt, c->version);
	if (c->max_packet_out && n > c->max_packet_out) {
		if (new_alias) /* the client never saw it */
			alias_forget(c, m->topic);
		return 1;
	}
	uint8_t *out = conn_reserve(c, n);
	if (!out)
		return -1;
	mqtt_encode(&pkt, c->version, out);
	conn_commit(c, n);
	STAT_INC(c->w, msgs_out);
	STAT_INC(c->w, msgs_out_qos[d->qos]);
	d->flags |= DLV_SENT;
	return 0;
}

int send_ack(conn *c, uint8_t type, uint16_t pid, uint8_t rc)
{
	mqtt_packet pkt = {.type = type};
	pkt.u.ack.packet_id = pid;
	pkt.u.ack.rc = c->version == MQTT_V5 ? rc : 0;
	return conn_send_packet(c, &pkt);
}

int send_suback(conn *c, uint8_t type, uint16_t pid, const uint8_t *rcs, uint32_t n)
{
	mqtt_packet pkt = {.type = type};
	pkt.u.suback.packet_id = pid;
	pkt.u.suback.rcs = rcs;
	pkt.u.suback.count = n;
	return conn_send_packet(c, &pkt);
}

int send_pingresp(conn *c)
{
	mqtt_packet pkt = {.type = MQTT_PINGRESP};
	return conn_send_packet(c, &pkt);
}

int send_disconnect(conn *c, uint8_t rc, const char *reason)
{
	if (c->version != MQTT_V5)
		return 0;
	mqtt_packet pkt = {.type = MQTT_DISCONNECT};
	pkt.u.disconnect.rc = rc;
	if (reason) {
		pkt.u.disconnect.props.present = MQTT_PF_REASON_STRING;
		pkt.u.disconnect.props.reason_string = mqtt_str_c(reason);
	}
	if (!fit(c, &pkt, &pkt.u.disconnect.props))
		return -1;
	return conn_send_packet(c, &pkt);
}
