/*
 * handle_acks.c - PUBACK, PUBREC, PUBREL and PUBCOMP from a client.
 *
 * Acks for packet ids the session does not know are ignored (PUBACK,
 * PUBCOMP) or answered so the client can finish (PUBREC gets PUBREL 0x92,
 * PUBREL gets PUBCOMP 0x92 in MQTT 5): after a reconnect a client may
 * legitimately ack something the broker already dropped.
 */
#include "broker/broker.h"
#include "util/log.h"

int handle_puback(conn *c, const mqtt_packet *pkt)
{
	if (session_ack(c->s, pkt->u.ack.packet_id, MQTT_PUBACK, pkt->u.ack.rc))
		log_debug("client %s: PUBACK for unknown packet id %u", c->s->client_id,
		          pkt->u.ack.packet_id);
	return 0;
}

int handle_pubrec(conn *c, const mqtt_packet *pkt)
{
	session_ack(c->s, pkt->u.ack.packet_id, MQTT_PUBREC, pkt->u.ack.rc);
	return 0;
}

int handle_pubcomp(conn *c, const mqtt_packet *pkt)
{
	if (session_ack(c->s, pkt->u.ack.packet_id, MQTT_PUBCOMP, pkt->u.ack.rc))
		log_debug("client %s: PUBCOMP for unknown packet id %u", c->s->client_id,
		          pkt->u.ack.packet_id);
	return 0;
}

int handle_pubrel(conn *c, const mqtt_packet *pkt)
{
	bool known = session_awaiting_remove(c->s, pkt->u.ack.packet_id);
	return send_ack(c, MQTT_PUBCOMP, pkt->u.ack.packet_id,
	                known ? 0 : MQTT_RC_PACKET_IDENTIFIER_NOT_FOUND);
}
