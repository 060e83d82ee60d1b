/*
 * handle_misc.c - PINGREQ, DISCONNECT and AUTH from a client.
 */
#include "broker/broker.h"

int handle_pingreq(conn *c, const mqtt_packet *pkt) { return send_pingresp(c); }

int handle_disconnect(conn *c, const mqtt_packet *pkt)
{
	session *s = c->s;
	uint8_t rc = 0;
	if (c->version == MQTT_V5) {
		const mqtt_disconnect *d = &pkt->u.disconnect;
		rc = d->rc;
		if (d->props.present & MQTT_PF_SESSION_EXPIRY) {
			/* 3.14.2.2.2: from 0 at CONNECT to non-zero now is an error */
			if (s->expiry_s == 0 && d->props.session_expiry != 0) {
				conn_protocol_error(c, MQTT_RC_PROTOCOL_ERROR,
				                    "session expiry raised from 0 at DISCONNECT");
				return -1;
			}
			uint64_t max_s = c->w->b->cfg->session_expiry_ms / 1000;
			uint32_t e = d->props.session_expiry;
			if ((uint64_t)e > max_s)
				e = (uint32_t)max_s;
			bool was = s->persistent;
			s->expiry_s = e;
			s->persistent = e > 0;
			if (was != s->persistent)
				STAT_ADD(c->w, sessions_persistent, s->persistent ? 1 : -1);
			store_session_sync(s, true);
		}
	}
	/* Only 0x00 (normal disconnection) discards the will (MQTT-3.14.4-3,
	 * MQTT-3.1.2-10): 0x04 asks for it and error reasons (>= 0x80) are not
	 * a normal end, so both publish it. */
	c->will_suppress = rc == MQTT_RC_SUCCESS;
	conn_shutdown(c, rc, false);
	return -1;
}

int handle_auth(conn *c, const mqtt_packet *pkt)
{
	/* CONNECT refused every authentication method, so no exchange can be
	 * under way: an AUTH now is a protocol error (4.12). */
	conn_protocol_error(c, MQTT_RC_PROTOCOL_ERROR, "AUTH without an authentication method");
	return -1;
}
