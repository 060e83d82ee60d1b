/*
 * handle_connect.c - CONNECT: from the first packet to CONNACK.
 *
 * Steps, in order:
 *   1. decode; a malformed CONNECT gets a CONNACK with the reason when the
 *      client speaks MQTT 5, the v3 "unacceptable protocol version" code
 *      when its level is unknown, and a plain close otherwise;
 *   2. settle the client id (assign one for an empty id where allowed);
 *   3. if another worker owns that id, hand the socket over (see broker.h)
 *      and stop - the owner starts again at step 1 with the same bytes;
 *   4. authenticate: a password check runs on the thread pool, reading is
 *      paused meanwhile and resumes in connect_auth_done;
 *   5. check the will, take over or create the session, send CONNACK, then
 *      resend in-flight messages and start delivering.
 */
#include <errno.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker/broker.h"
#include "util/clock.h"
#include "util/log.h"

/* Reads the protocol level of a CONNECT that failed to decode, or -1. */
static int peek_level(const uint8_t *p, uint32_t len)
{
	uint32_t i = 1, mult = 1;
	while (i < len && i < 5) {
		if (!(p[i++] & 0x80))
			break;
		mult *= 128;
	}
	(void)mult;
	if (i + 2 > len)
		return -1;
	uint32_t nlen = (uint32_t)p[i] << 8 | p[i + 1];
	i += 2 + nlen;
	return i < len ? p[i] : -1;
}

static void refuse(conn *c, uint8_t version, uint8_t rc, const char *why)
{
	worker *w = c->w;
	STAT_INC(w, connack_refused);
	if (log_current_level >= LOG_DEBUG) {
		char peer[64];
		conn_peer_str(c, peer, sizeof(peer));
		log_debug("client %s: CONNECT refused: %s (0x%02x)", peer, why, rc);
	}
	c->version = version;
	if (version == MQTT_V5 && (c->flags & CF_PROBLEM_INFO) && why) {
		mqtt_props pr = {0};
		pr.present = MQTT_PF_REASON_STRING;
		pr.reason_string = mqtt_str_c(why);
		send_connack(c, false, rc, &pr);
	} else {
		send_connack(c, false, rc, NULL);
	}
	conn_shutdown(c, rc, false);
}

static void refuse_undecodable(conn *c, const uint8_t *p, uint32_t len, int rc)
{
	int level = peek_level(p, len);
	if (rc == MQTT_RC_MALFORMED_PACKET)
		STAT_INC(c->w, malformed);
	else
		STAT_INC(c->w, protocol_errors);
	static log_ratelimit rl;
	char peer[64];
	conn_peer_str(c, peer, sizeof(peer));
	log_ratelimited(&rl, 10000, LOG_NOTICE, "client %s: bad CONNECT (0x%02x %s)", peer, rc,
	                mqtt_rc_name((uint8_t)rc));
	if (level == MQTT_V5) {
		refuse(c, MQTT_V5, (uint8_t)rc, mqtt_rc_name((uint8_t)rc));
	} else if (rc == MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION) {
		/* the MQTT 3.1.1 answer to a level we do not speak */
		refuse(c, MQTT_V311, rc, NULL);
	} else {
		conn_shutdown(c, (uint8_t)rc, false);
	}
}

/* Makes up a client id that this worker owns, so no hand-off is needed. */
static void assign_client_id(worker *w, char out[40])
{
	for (;;) {
		uint8_t r[12];
		if (RAND_bytes(r, sizeof(r)) != 1) {
			uint64_t t = clock_mono_ns() ^ (uintptr_t)out;
			memcpy(r, &t, 8);
			memset(r + 8, (int)w->id, 4);
		}
		int n = snprintf(out, 40, "keepmq-");
		for (int i = 0; i < 12; i++)
			n += snprintf(out + n, (size_t)(40 - n), "%02x", r[i]);
		if (broker_owner(w->b, out, (size_t)n) == w->id)
			return;
	}
}

static void hand_off(conn *c, const uint8_t *p, uint32_t len, unsigned owner)
{
	worker *w = c->w;
	size_t rest_len;
	const uint8_t *rest = conn_rx_rest(&rest_len);
	handoff *ho = malloc(sizeof(*ho) + len + rest_len);
	inbox_item *it = calloc(1, sizeof(*it));
	if (!ho || !it) {
		free(ho);
		free(it);
		log_warning("cannot hand a connection over to worker %u: out of memory", owner);
		conn_abort(c, MQTT_RC_SERVER_UNAVAILABLE);
		return;
	}
	/* The socket itself moves: closing our poll handle unregisters it
	 * from this loop (and, being handed off, does not close it). */
	ho->fd = c->fd;
	ho->listener = c->listener;
	ho->peer = c->peer;
	ho->len = (uint32_t)(len + rest_len);
	memcpy(ho->data, p, len);
	if (rest_len)
		memcpy(ho->data + len, rest, rest_len);
	it->kind = INBOX_HANDOFF;
	it->ho = ho;
	c->flags |= CF_HANDED_OFF;
	conn_abort(c, MQTT_RC_SUCCESS);
	worker_post(w, owner, it);
	STAT_INC(w, handoffs);
}

void handle_handoff(worker *w, handoff *ho)
{
	/* the origin counted it against the listener; it still counts */
	conn *c = conn_new(w, ho->fd, ho->listener);
	if (!c) {
		close(ho->fd);
		atomic_fetch_sub(&w->b->listener_conns[ho->listener], 1);
		free(ho);
		return;
	}
	c->peer = ho->peer;
	if (conn_start(c, ho->data, ho->len))
		conn_abort(c, MQTT_RC_UNSPECIFIED_ERROR);
	free(ho);
}

static void finish(conn *c, const mqtt_connect *ck);

int handle_connect(conn *c, const uint8_t *p, uint32_t len)
{
	worker *w = c->w;
	broker *b = w->b;
	const broker_config *cfg = b->cfg;
	mqtt_packet pkt;
	int rc = mqtt_decode(p, len, 0, &pkt);
	if (rc) {
		refuse_undecodable(c, p, len, rc);
		return -1;
	}
	mqtt_connect *ck = &pkt.u.connect;
	c->version = ck->version;
	/* known before any refusal: a refused CONNACK must fit it too (its
	 * reason string is dropped if not, MQTT-3.2.2-19) */
	if (ck->version == MQTT_V5 && (ck->props.present & MQTT_PF_MAXIMUM_PACKET_SIZE))
		c->max_packet_out = ck->props.maximum_packet_size;
	if (ck->version == MQTT_V5 && (ck->props.present & MQTT_PF_REQUEST_PROBLEM_INFO) &&
	    !ck->props.request_problem_info)
		c->flags &= (uint8_t)~CF_PROBLEM_INFO;
	if (ck->client_id.len == 0) {
		bool allowed = cfg->allow_zero_length_clientid &&
		               (ck->version == MQTT_V5 || (ck->version == MQTT_V311 && ck->clean_start));
		if (!allowed) {
			refuse(c, ck->version, MQTT_RC_CLIENT_IDENTIFIER_NOT_VALID,
			       "empty client id not allowed");
			return -1;
		}
	} else if (ck->client_id.len > (uint64_t)cfg->max_clientid_len) {
		refuse(c, ck->version, MQTT_RC_CLIENT_IDENTIFIER_NOT_VALID, "client id too long");
		return -1;
	} else {
		unsigned owner = broker_owner(b, ck->client_id.p, ck->client_id.len);
		if (owner != w->id) {
			hand_off(c, p, len, owner);
			return -1;
		}
	}
	if (ck->version == MQTT_V5 && (ck->props.present & MQTT_PF_AUTH_METHOD)) {
		refuse(c, ck->version, MQTT_RC_BAD_AUTHENTICATION_METHOD,
		       "no authentication method is configured");
		return -1;
	}
	if (b->passwd && ck->has_username) {
		if (!ck->has_password) {
			STAT_INC(w, auth_failures);
			refuse(c, ck->version, MQTT_RC_BAD_USER_NAME_OR_PASSWORD, "password missing");
			return -1;
		}
		/* the check copies the packet: the decoded slices point into a
		 * read buffer that is reused before the check finishes */
		if (authz_check_password_async(c, ck, p, len) == 0) {
			c->state = CONN_AUTH;
			conn_read_stop(c);
			return -1;
		}
		refuse(c, ck->version, MQTT_RC_SERVER_UNAVAILABLE, "cannot start password check");
		return -1;
	}
	/* Without a password file nothing can vouch for a user name, so with
	 * anonymous access off every client is refused (as the startup warning
	 * says), not just those that leave the user name out. */
	if ((!ck->has_username || !b->passwd) && !cfg->allow_anonymous) {
		STAT_INC(w, auth_failures);
		refuse(c, ck->version, MQTT_RC_NOT_AUTHORIZED, "anonymous clients not allowed");
		return -1;
	}
	finish(c, ck);
	return c->state == CONN_ACTIVE ? 0 : -1;
}

void connect_auth_done(conn *c, uint8_t *copy, uint32_t len, bool ok)
{
	if (c->state != CONN_AUTH) {
		free(copy);
		return;
	}
	mqtt_packet pkt;
	if (mqtt_decode(copy, len, 0, &pkt)) { /* decoded fine before: cannot happen */
		free(copy);
		conn_abort(c, MQTT_RC_UNSPECIFIED_ERROR);
		return;
	}
	c->state = CONN_NEW;
	if (!ok) {
		STAT_INC(c->w, auth_failures);
		refuse(c, pkt.u.connect.version, MQTT_RC_BAD_USER_NAME_OR_PASSWORD,
		       "bad user name or password");
		free(copy);
		return;
	}
	finish(c, &pkt.u.connect);
	free(copy);
	if (c->state != CONN_ACTIVE)
		return;
	conn_process_input(c);
	if (c->state == CONN_ACTIVE && conn_read_start(c))
		conn_abort(c, MQTT_RC_UNSPECIFIED_ERROR);
}

/* Validates the will and builds its message. Returns 0 or a reason code. */
static int make_will(conn *c, const mqtt_connect *ck, mqtt_str cid, kmq_msg **out)
{
	const broker_config *cfg = c->w->b->cfg;
	*out = NULL;
	if (!ck->will)
		return 0;
	if (!mqtt_topic_name_valid(ck->will_topic) ||
	    mqtt_topic_levels(ck->will_topic) > (uint32_t)cfg->max_topic_levels)
		return MQTT_RC_TOPIC_NAME_INVALID;
	/* $SYS belongs to the broker: a will may not write there any more than
	 * a PUBLISH may (handle_publish.c) */
	if (ck->will_topic.len >= 5 && memcmp(ck->will_topic.p, "$SYS/", 5) == 0)
		return MQTT_RC_NOT_AUTHORIZED;
	uint8_t qos = ck->will_qos;
	bool retain = ck->will_retain;
	if (qos > cfg->max_qos_allowed) {
		if (ck->version == MQTT_V5)
			return MQTT_RC_QOS_NOT_SUPPORTED;
		qos = (uint8_t)cfg->max_qos_allowed;
	}
	if (retain && !cfg->retain_available) {
		if (ck->version == MQTT_V5)
			return MQTT_RC_RETAIN_NOT_SUPPORTED;
		retain = false;
	}
	if (c->w->b->acl) {
		mqtt_str user = ck->username;
		if (!acl_check(c->w->b->acl, cid, ck->has_username ? &user : NULL, ck->will_topic,
		               ACL_WRITE))
			return MQTT_RC_NOT_AUTHORIZED;
	}
	if (ck->version == MQTT_V5 && (ck->will_props.present & MQTT_PF_PAYLOAD_FORMAT) &&
	    ck->will_props.payload_format == 1 &&
	    !mqtt_utf8_valid(ck->will_payload.p, ck->will_payload.len))
		return MQTT_RC_PAYLOAD_FORMAT_INVALID;
	msg_init mi = {
		.topic = ck->will_topic,
		.payload = ck->will_payload,
		.qos = qos,
		.retain = retain,
		.origin = cid,
		.origin_user = ck->has_username ? ck->username : MQTT_STR_NULL,
		.props = ck->version == MQTT_V5 ? &ck->will_props : NULL,
		.now_ms = clock_wall_ms(),
	};
	*out = msg_new(&mi);
	return *out ? 0 : MQTT_RC_SERVER_UNAVAILABLE;
}

static uint32_t session_expiry_for(const broker_config *cfg, const mqtt_connect *ck, bool *capped)
{
	uint64_t max_s = cfg->session_expiry_ms / 1000;
	*capped = false;
	if (ck->version != MQTT_V5)
		return ck->clean_start ? 0 : (max_s >= UINT32_MAX ? UINT32_MAX : (uint32_t)max_s);
	uint32_t want = (ck->props.present & MQTT_PF_SESSION_EXPIRY) ? ck->props.session_expiry : 0;
	if ((uint64_t)want > max_s) {
		*capped = true;
		return (uint32_t)max_s;
	}
	return want;
}

static void finish(conn *c, const mqtt_connect *ck)
{
	worker *w = c->w;
	broker *b = w->b;
	const broker_config *cfg = b->cfg;
	char assigned[40];
	mqtt_str cid = ck->client_id;
	bool was_assigned = false;
	if (cid.len == 0) {
		assign_client_id(w, assigned);
		cid = mqtt_str_c(assigned);
		was_assigned = true;
	}
	kmq_msg *will = NULL;
	int rc = make_will(c, ck, cid, &will);
	if (rc) {
		refuse(c, ck->version, (uint8_t)rc, "will rejected");
		return;
	}
	bool capped;
	uint32_t expiry = session_expiry_for(cfg, ck, &capped);

	session *s = hm_get(&w->sessions, cid.p, cid.len);
	bool present = false, created = false;
	if (s && s->c) {
		/* takeover: the old connection goes, with DISCONNECT 0x8E for v5 */
		conn *old = s->c;
		STAT_INC(w, takeovers);
		session_detach_for_takeover(s, ck->clean_start);
		/* the old connection ends here (its close later finds no session):
		 * report it, so $SYS connected/disconnected events stay paired */
		sys_client_event(w, s, old, false, MQTT_RC_SESSION_TAKEN_OVER);
		hook_client_event(s, old, HOOK_CLIENT_DISCONNECTED);
		old->will_suppress = true;
		conn_shutdown(old, MQTT_RC_SESSION_TAKEN_OVER, true);
	}
	if (s && ck->clean_start)
		session_destroy(&s);
	if (s) {
		present = true;
	} else if (!(s = session_new(w, cid))) {
		msg_unref(&will);
		refuse(c, ck->version, MQTT_RC_SERVER_UNAVAILABLE, "out of memory");
		return;
	} else {
		created = true;
	}
	bool was_persistent = s->persistent;
	s->version = ck->version;
	s->clean_start = ck->clean_start;
	s->expiry_s = expiry;
	s->persistent = expiry > 0;
	if (s->persistent != was_persistent)
		STAT_ADD(w, sessions_persistent, s->persistent ? 1 : -1);
	free(s->username);
	s->username = NULL;
	s->ulen = 0;
	if (ck->has_username) {
		s->username = malloc(ck->username.len + 1);
		if (s->username) {
			memcpy(s->username, ck->username.p, ck->username.len);
			s->username[ck->username.len] = 0;
			s->ulen = ck->username.len;
		}
	}
	store_session_sync(s, true);
	session_set_will(s, will, ck->version == MQTT_V5 && (ck->will_props.present & MQTT_PF_WILL_DELAY)
	                                  ? ck->will_props.will_delay
	                                  : 0);

	/* connection parameters */
	c->keepalive_ms = (uint32_t)ck->keepalive * 1000u;
	s->window = (uint16_t)cfg->max_inflight;
	mqtt_props pr = {0};
	if (ck->version == MQTT_V5) {
		const mqtt_props *cp = &ck->props;
		if ((cp->present & MQTT_PF_RECEIVE_MAXIMUM) && cp->receive_maximum < s->window)
			s->window = cp->receive_maximum;
		if (cp->present & MQTT_PF_MAXIMUM_PACKET_SIZE)
			c->max_packet_out = cp->maximum_packet_size;
		if (cp->present & MQTT_PF_TOPIC_ALIAS_MAXIMUM)
			c->alias_out_max = cp->topic_alias_maximum;
		if (capped) {
			pr.present |= MQTT_PF_SESSION_EXPIRY;
			pr.session_expiry = expiry;
		}
		/* advertise what session_awaiting_add enforces for incoming QoS 2:
		 * the smaller of max_inflight and max_awaiting_rel */
		int64_t rmax = cfg->max_inflight < cfg->max_awaiting_rel ? cfg->max_inflight
		                                                        : cfg->max_awaiting_rel;
		if (rmax < 65535) {
			pr.present |= MQTT_PF_RECEIVE_MAXIMUM;
			pr.receive_maximum = (uint16_t)rmax;
		}
		if (cfg->max_qos_allowed < 2) {
			pr.present |= MQTT_PF_MAXIMUM_QOS;
			pr.maximum_qos = (uint8_t)cfg->max_qos_allowed;
		}
		if (!cfg->retain_available) {
			pr.present |= MQTT_PF_RETAIN_AVAILABLE;
			pr.retain_available = 0;
		}
		pr.present |= MQTT_PF_MAXIMUM_PACKET_SIZE;
		pr.maximum_packet_size = (uint32_t)cfg->max_packet_size;
		if (was_assigned) {
			pr.present |= MQTT_PF_ASSIGNED_CLIENT_ID;
			pr.assigned_client_id = cid;
		}
		if (cfg->max_topic_alias) {
			pr.present |= MQTT_PF_TOPIC_ALIAS_MAXIMUM;
			pr.topic_alias_maximum = (uint16_t)cfg->max_topic_alias;
		}
		if (!cfg->wildcard_subscription) {
			pr.present |= MQTT_PF_WILDCARD_SUB_AVAILABLE;
			pr.wildcard_sub_available = 0;
		}
		if (!cfg->subscription_identifiers) {
			pr.present |= MQTT_PF_SUB_ID_AVAILABLE;
			pr.sub_id_available = 0;
		}
		if (!cfg->shared_subscription) {
			pr.present |= MQTT_PF_SHARED_SUB_AVAILABLE;
			pr.shared_sub_available = 0;
		}
		if (cfg->server_keepalive_ms) {
			pr.present |= MQTT_PF_SERVER_KEEPALIVE;
			pr.server_keepalive = (uint16_t)(cfg->server_keepalive_ms / 1000);
			c->keepalive_ms = pr.server_keepalive * 1000u;
		}
		if ((cp->present & MQTT_PF_REQUEST_RESPONSE_INFO) && cp->request_response_info &&
		    cfg->response_information && cfg->response_information[0]) {
			pr.present |= MQTT_PF_RESPONSE_INFO;
			pr.response_info = mqtt_str_c(cfg->response_information);
		}
	}
	if (s->window == 0)
		s->window = 1;
	c->state = CONN_ACTIVE;
	STAT_INC(w, connects);
	if (send_connack(c, present, MQTT_RC_SUCCESS, ck->version == MQTT_V5 ? &pr : NULL)) {
		/* No CONNACK fits the client's Maximum Packet Size (or we are out
		 * of memory): it cannot be served. Leave the session as a
		 * connection that never started would (no will) and close. */
		log_debug("client id %s: CONNACK not sent (larger than the client's maximum "
		          "packet size?): closing", s->client_id);
		session_detach(s, MQTT_RC_PACKET_TOO_LARGE, false);
		conn_abort(c, MQTT_RC_PACKET_TOO_LARGE);
		return;
	}
	if (log_current_level >= LOG_DEBUG) {
		char peer[64];
		conn_peer_str(c, peer, sizeof(peer));
		log_debug("client %s id %s connected (v%u, clean %d, keepalive %u, present %d)", peer,
		          s->client_id, ck->version, ck->clean_start, ck->keepalive, present);
	}
	session_attach(s, c);
	sys_client_event(w, s, c, true, 0);
	if (created)
		hook_client_event(s, c, HOOK_SESSION_CREATED);
	hook_client_event(s, c, HOOK_CLIENT_CONNECTED);
}
