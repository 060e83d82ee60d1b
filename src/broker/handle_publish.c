/*
 * handle_publish.c - PUBLISH from a client.
 *
 * Checks run cheapest first and each failure has its MQTT 5 answer: a
 * DISCONNECT for violations of what the broker advertised in CONNACK (QoS,
 * retain, topic alias range), an error reason in PUBACK/PUBREC for refusals
 * of one message (not authorised, invalid UTF-8 payload), so the client can
 * carry on. MQTT 3 has no error reasons: violations close the connection and
 * refused messages are acknowledged and dropped, as mosquitto does.
 *
 * QoS 2 is delivered on receipt ("method B" of the spec): the packet id is
 * remembered until PUBREL, and a resent PUBLISH with the same id is answered
 * with PUBREC but not routed again - exactly once.
 */
#include <stdlib.h>
#include <string.h>

#include "broker/broker.h"
#include "util/clock.h"
#include "util/log.h"

/* Resolves the topic from the topic alias property. Returns 0, or -1 after
 * closing the connection. */
static int resolve_alias(conn *c, const mqtt_publish *pb, mqtt_str *topic)
{
	const broker_config *cfg = c->w->b->cfg;
	if (!(pb->props.present & MQTT_PF_TOPIC_ALIAS)) {
		if (topic->len == 0) {
			conn_protocol_error(c, MQTT_RC_PROTOCOL_ERROR, "empty topic without topic alias");
			return -1;
		}
		return 0;
	}
	uint16_t a = pb->props.topic_alias;
	if (a == 0 || a > cfg->max_topic_alias) {
		conn_protocol_error(c, MQTT_RC_TOPIC_ALIAS_INVALID, "topic alias out of range");
		return -1;
	}
	if (topic->len) {
		if (!c->alias_in) {
			c->alias_in = calloc((size_t)cfg->max_topic_alias + 1, sizeof(char *));
			if (!c->alias_in) {
				conn_abort(c, MQTT_RC_UNSPECIFIED_ERROR);
				return -1;
			}
		}
		char *t = malloc(topic->len + 5);
		if (!t) {
			conn_abort(c, MQTT_RC_UNSPECIFIED_ERROR);
			return -1;
		}
		/* length-prefixed: topics may not contain NUL, but keep it explicit */
		memcpy(t, &topic->len, 4);
		memcpy(t + 4, topic->p, topic->len);
		t[4 + topic->len] = 0;
		free(c->alias_in[a]);
		c->alias_in[a] = t;
		return 0;
	}
	if (!c->alias_in || !c->alias_in[a]) {
		conn_protocol_error(c, MQTT_RC_PROTOCOL_ERROR, "unknown topic alias");
		return -1;
	}
	uint32_t len;
	memcpy(&len, c->alias_in[a], 4);
	*topic = (mqtt_str){(const uint8_t *)c->alias_in[a] + 4, len};
	return 0;
}

/* Refuses one message: MQTT 5 learns why in the ack; MQTT 3 gets a plain ack. */
static int refuse_message(conn *c, const mqtt_publish *pb, uint8_t rc)
{
	uint8_t r = c->version == MQTT_V5 ? rc : 0;
	if (pb->qos == 1)
		send_ack(c, MQTT_PUBACK, pb->packet_id, r);
	else if (pb->qos == 2)
		send_ack(c, MQTT_PUBREC, pb->packet_id, r); /* a later PUBREL still gets PUBCOMP */
	return 0;
}

int handle_publish(conn *c, const mqtt_packet *pkt)
{
	worker *w = c->w;
	const broker_config *cfg = w->b->cfg;
	session *s = c->s;
	const mqtt_publish *pb = &pkt->u.publish;
	mqtt_str topic = pb->topic;
	if (c->version == MQTT_V5) {
		/* the codec accepts it (servers send it); clients must not (MQTT-3.3.4-6) */
		if (pb->props.present & MQTT_PF_SUBSCRIPTION_ID) {
			conn_protocol_error(c, MQTT_RC_PROTOCOL_ERROR,
			                    "subscription identifier in a PUBLISH from a client");
			return -1;
		}
		if (resolve_alias(c, pb, &topic))
			return -1;
	} else if (topic.len == 0) {
		conn_protocol_error(c, MQTT_RC_TOPIC_NAME_INVALID, "empty topic");
		return -1;
	}
	if (pb->qos > cfg->max_qos_allowed) {
		conn_protocol_error(c, MQTT_RC_QOS_NOT_SUPPORTED, "QoS above the maximum");
		return -1;
	}
	if (pb->retain && !cfg->retain_available) {
		conn_protocol_error(c, MQTT_RC_RETAIN_NOT_SUPPORTED, "retain not available");
		return -1;
	}
	if (mqtt_topic_levels(topic) > (uint32_t)cfg->max_topic_levels) {
		conn_protocol_error(c, MQTT_RC_TOPIC_NAME_INVALID, "too many topic levels");
		return -1;
	}
	STAT_INC(w, msgs_in);
	STAT_INC(w, msgs_in_qos[pb->qos]);
	if (pb->qos == 2 && session_awaiting_has(s, pb->packet_id)) {
		/* a resend of a message we already routed */
		send_ack(c, MQTT_PUBREC, pb->packet_id, 0);
		return 0;
	}
	/* $SYS belongs to the broker */
	if (topic.len >= 5 && memcmp(topic.p, "$SYS/", 5) == 0) {
		STAT_INC(w, dropped_denied);
		return refuse_message(c, pb, MQTT_RC_NOT_AUTHORIZED);
	}
	if (!authz_may_publish(s, topic)) {
		STAT_INC(w, acl_denied);
		STAT_INC(w, dropped_denied);
		return refuse_message(c, pb, MQTT_RC_NOT_AUTHORIZED);
	}
	if (c->version == MQTT_V5 && (pb->props.present & MQTT_PF_PAYLOAD_FORMAT) &&
	    pb->props.payload_format == 1 && !mqtt_utf8_valid(pb->payload.p, pb->payload.len)) {
		STAT_INC(w, msgs_dropped);
		return refuse_message(c, pb, MQTT_RC_PAYLOAD_FORMAT_INVALID);
	}
	if (pb->qos == 2 && session_awaiting_add(s, pb->packet_id, worker_now(w))) {
		conn_protocol_error(c, MQTT_RC_RECEIVE_MAXIMUM_EXCEEDED,
		                    "too many QoS 2 messages awaiting PUBREL");
		return -1;
	}
	msg_init mi = {
		.topic = topic,
		.payload = pb->payload,
		.qos = pb->qos,
		.retain = pb->retain,
		.origin = {(const uint8_t *)s->client_id, s->cid_len},
		.origin_user = {(const uint8_t *)s->username, s->ulen},
		.props = c->version == MQTT_V5 ? &pb->props : NULL,
		.now_ms = clock_wall_ms(),
	};
	kmq_msg *msg = msg_new(&mi);
	if (!msg) {
		conn_abort(c, MQTT_RC_UNSPECIFIED_ERROR);
		return -1;
	}
	msgid_next(&w->ids, mi.now_ms, msg->id);
	store_publish_begin(c, msg);
	broker_publish(w, msg);
	uint64_t stored_seq = store_publish_end(w);
	if (c->state != CONN_ACTIVE) {
		msg_unref(&msg);
		return -1;
	}
	/* message.publish rules, and the PUBACK/PUBREC (held back in sync mode
	 * until the backends and the state store have committed) */
	int rc = hook_publish(c, msg, pb->packet_id, stored_seq);
	msg_unref(&msg);
	return rc;
}
