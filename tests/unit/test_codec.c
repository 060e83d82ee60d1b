/*
 * test_codec.c - unit tests of the MQTT codec (src/mqtt/codec.c).
 *
 * Design
 * ------
 * Four kinds of test, each meant to fail on its own when a feature breaks:
 *   - round trips: every packet type for 3.1, 3.1.1 and 5, encoded, framed
 *     byte by byte, decoded and compared field by field; for v5 once with
 *     no properties, once with every property the type allows and once per
 *     allowed property on its own;
 *   - exact bytes: hand-assembled packets from the spec's layouts, to catch
 *     an encoder and decoder that agree with each other but not with the wire;
 *   - property rules from an independent copy of the spec's property table:
 *     each property alone in each packet type must decode if allowed and be
 *     Malformed if not, and twice must be a Protocol Error unless repeatable;
 *   - a table of bad packets, each with the reason code it must produce. The
 *     table gives only the body and computes the remaining length, so a typo
 *     there cannot masquerade as the malformation under test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "mqtt/mqtt.h"

#define S(lit)   ((mqtt_str){(const uint8_t *)(lit), sizeof(lit) - 1})
#define B(lit)   (const uint8_t *)(lit), sizeof(lit) - 1
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static const uint8_t versions[] = {MQTT_V31, MQTT_V311, MQTT_V5};

static void assert_str(mqtt_str want, mqtt_str got)
{
	assert_int_equal(want.len, got.len);
	if (want.len)
		assert_memory_equal(want.p, got.p, want.len);
}

/* ------------------------------------------------------------ independent property table */

#define CTX_WILL 16

static const uint8_t all_ids[] = {0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x11, 0x12, 0x13,
                                  0x15, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x1C, 0x1F, 0x21,
                                  0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A};

static bool allowed(unsigned ctx, uint8_t id)
{
	static const char *const tab[17] = {
	    [MQTT_CONNECT] = "\x11\x15\x16\x17\x19\x21\x22\x26\x27",
	    [MQTT_CONNACK] = "\x11\x12\x13\x15\x16\x1A\x1C\x1F\x21\x22\x24\x25\x26\x27\x28\x29\x2A",
	    [MQTT_PUBLISH] = "\x01\x02\x03\x08\x09\x0B\x23\x26",
	    [MQTT_PUBACK] = "\x1F\x26",
	    [MQTT_PUBREC] = "\x1F\x26",
	    [MQTT_PUBREL] = "\x1F\x26",
	    [MQTT_PUBCOMP] = "\x1F\x26",
	    [MQTT_SUBSCRIBE] = "\x0B\x26",
	    [MQTT_SUBACK] = "\x1F\x26",
	    [MQTT_UNSUBSCRIBE] = "\x26",
	    [MQTT_UNSUBACK] = "\x1F\x26",
	    [MQTT_DISCONNECT] = "\x11\x1C\x1F\x26",
	    [MQTT_AUTH] = "\x15\x16\x1F\x26",
	    [CTX_WILL] = "\x01\x02\x03\x08\x09\x18\x26",
	};
	return tab[ctx] && strchr(tab[ctx], id) != NULL;
}

static const unsigned prop_ctxs[] = {MQTT_CONNECT, MQTT_CONNACK,     MQTT_PUBLISH,  MQTT_PUBACK,
                                     MQTT_PUBREC,  MQTT_PUBREL,      MQTT_PUBCOMP,  MQTT_SUBSCRIBE,
                                     MQTT_SUBACK,  MQTT_UNSUBSCRIBE, MQTT_UNSUBACK, MQTT_DISCONNECT,
                                     MQTT_AUTH,    CTX_WILL};

/* Sets property id to a valid, distinctive value. ubuf holds user properties (>= 64 bytes). */
static void set_prop(mqtt_props *p, uint8_t id, uint8_t *ubuf)
{
	switch (id) {
	case 0x01:
		p->present |= MQTT_PF_PAYLOAD_FORMAT;
		p->payload_format = 1;
		break;
	case 0x02:
		p->present |= MQTT_PF_MESSAGE_EXPIRY;
		p->message_expiry = 3600;
		break;
	case 0x03:
		p->present |= MQTT_PF_CONTENT_TYPE;
		p->content_type = S("text/plain");
		break;
	case 0x08:
		p->present |= MQTT_PF_RESPONSE_TOPIC;
		p->response_topic = S("resp/topic");
		break;
	case 0x09:
		p->present |= MQTT_PF_CORRELATION_DATA;
		p->correlation_data = S("\x00\x01\xff");
		break;
	case 0x0B:
		p->present |= MQTT_PF_SUBSCRIPTION_ID;
		p->subscription_id = 268435455;
		break;
	case 0x11:
		p->present |= MQTT_PF_SESSION_EXPIRY;
		p->session_expiry = 0xFFFFFFFFu;
		break;
	case 0x12:
		p->present |= MQTT_PF_ASSIGNED_CLIENT_ID;
		p->assigned_client_id = S("auto-1");
		break;
	case 0x13:
		p->present |= MQTT_PF_SERVER_KEEPALIVE;
		p->server_keepalive = 120;
		break;
	case 0x15:
		p->present |= MQTT_PF_AUTH_METHOD;
		p->auth_method = S("SCRAM-SHA-1");
		break;
	case 0x16:
		p->present |= MQTT_PF_AUTH_DATA;
		p->auth_data = S("\x00\x10\x20");
		break;
	case 0x17:
		p->present |= MQTT_PF_REQUEST_PROBLEM_INFO;
		p->request_problem_info = 0;
		break;
	case 0x18:
		p->present |= MQTT_PF_WILL_DELAY;
		p->will_delay = 30;
		break;
	case 0x19:
		p->present |= MQTT_PF_REQUEST_RESPONSE_INFO;
		p->request_response_info = 1;
		break;
	case 0x1A:
		p->present |= MQTT_PF_RESPONSE_INFO;
		p->response_info = S("resp/");
		break;
	case 0x1C:
		p->present |= MQTT_PF_SERVER_REFERENCE;
		p->server_reference = S("b:1883");
		break;
	case 0x1F:
		p->present |= MQTT_PF_REASON_STRING;
		p->reason_string = S("because");
		break;
	case 0x21:
		p->present |= MQTT_PF_RECEIVE_MAXIMUM;
		p->receive_maximum = 65535;
		break;
	case 0x22:
		p->present |= MQTT_PF_TOPIC_ALIAS_MAXIMUM;
		p->topic_alias_maximum = 10;
		break;
	case 0x23:
		p->present |= MQTT_PF_TOPIC_ALIAS;
		p->topic_alias = 5;
		break;
	case 0x24:
		p->present |= MQTT_PF_MAXIMUM_QOS;
		p->maximum_qos = 1;
		break;
	case 0x25:
		p->present |= MQTT_PF_RETAIN_AVAILABLE;
		p->retain_available = 0;
		break;
	case 0x26: {
		size_t n = mqtt_user_prop_write(ubuf, S("k1"), S("v1"));
		n += mqtt_user_prop_write(ubuf + n, S("name"), S(""));
		n += mqtt_user_prop_write(ubuf + n, S("k1"), S("dup\xc3\xa9"));
		p->user_props = (mqtt_str){ubuf, (uint32_t)n};
		p->n_user_props = 3;
		break;
	}
	case 0x27:
		p->present |= MQTT_PF_MAXIMUM_PACKET_SIZE;
		p->maximum_packet_size = 1u << 20;
		break;
	case 0x28:
		p->present |= MQTT_PF_WILDCARD_SUB_AVAILABLE;
		p->wildcard_sub_available = 1;
		break;
	case 0x29:
		p->present |= MQTT_PF_SUB_ID_AVAILABLE;
		p->sub_id_available = 0;
		break;
	case 0x2A:
		p->present |= MQTT_PF_SHARED_SUB_AVAILABLE;
		p->shared_sub_available = 1;
		break;
	default:
		fail_msg("no such property %#x", id);
	}
}

static void fill_all(mqtt_props *p, unsigned ctx, uint8_t *ubuf)
{
	for (size_t i = 0; i < NELEM(all_ids); i++)
		if (allowed(ctx, all_ids[i]))
			set_prop(p, all_ids[i], ubuf);
}

static void assert_props(const mqtt_props *w, const mqtt_props *g)
{
	assert_int_equal(w->present, g->present);
	uint32_t f = w->present;
	if (f & MQTT_PF_PAYLOAD_FORMAT)
		assert_int_equal(w->payload_format, g->payload_format);
	if (f & MQTT_PF_MESSAGE_EXPIRY)
		assert_int_equal(w->message_expiry, g->message_expiry);
	if (f & MQTT_PF_CONTENT_TYPE)
		assert_str(w->content_type, g->content_type);
	if (f & MQTT_PF_RESPONSE_TOPIC)
		assert_str(w->response_topic, g->response_topic);
	if (f & MQTT_PF_CORRELATION_DATA)
		assert_str(w->correlation_data, g->correlation_data);
	if (w->sub_ids && w->n_sub_ids) {
		assert_int_equal(w->sub_ids[0], g->subscription_id);
		assert_int_equal(w->n_sub_ids, g->n_sub_ids);
	} else if (f & MQTT_PF_SUBSCRIPTION_ID) {
		assert_int_equal(w->subscription_id, g->subscription_id);
		assert_int_equal(1, g->n_sub_ids);
	}
	if (f & MQTT_PF_SESSION_EXPIRY)
		assert_int_equal(w->session_expiry, g->session_expiry);
	if (f & MQTT_PF_ASSIGNED_CLIENT_ID)
		assert_str(w->assigned_client_id, g->assigned_client_id);
	if (f & MQTT_PF_SERVER_KEEPALIVE)
		assert_int_equal(w->server_keepalive, g->server_keepalive);
	if (f & MQTT_PF_AUTH_METHOD)
		assert_str(w->auth_method, g->auth_method);
	if (f & MQTT_PF_AUTH_DATA)
		assert_str(w->auth_data, g->auth_data);
	if (f & MQTT_PF_REQUEST_PROBLEM_INFO)
		assert_int_equal(w->request_problem_info, g->request_problem_info);
	if (f & MQTT_PF_WILL_DELAY)
		assert_int_equal(w->will_delay, g->will_delay);
	if (f & MQTT_PF_REQUEST_RESPONSE_INFO)
		assert_int_equal(w->request_response_info, g->request_response_info);
	if (f & MQTT_PF_RESPONSE_INFO)
		assert_str(w->response_info, g->response_info);
	if (f & MQTT_PF_SERVER_REFERENCE)
		assert_str(w->server_reference, g->server_reference);
	if (f & MQTT_PF_REASON_STRING)
		assert_str(w->reason_string, g->reason_string);
	if (f & MQTT_PF_RECEIVE_MAXIMUM)
		assert_int_equal(w->receive_maximum, g->receive_maximum);
	if (f & MQTT_PF_TOPIC_ALIAS_MAXIMUM)
		assert_int_equal(w->topic_alias_maximum, g->topic_alias_maximum);
	if (f & MQTT_PF_TOPIC_ALIAS)
		assert_int_equal(w->topic_alias, g->topic_alias);
	if (f & MQTT_PF_MAXIMUM_QOS)
		assert_int_equal(w->maximum_qos, g->maximum_qos);
	if (f & MQTT_PF_RETAIN_AVAILABLE)
		assert_int_equal(w->retain_available, g->retain_available);
	if (f & MQTT_PF_MAXIMUM_PACKET_SIZE)
		assert_int_equal(w->maximum_packet_size, g->maximum_packet_size);
	if (f & MQTT_PF_WILDCARD_SUB_AVAILABLE)
		assert_int_equal(w->wildcard_sub_available, g->wildcard_sub_available);
	if (f & MQTT_PF_SUB_ID_AVAILABLE)
		assert_int_equal(w->sub_id_available, g->sub_id_available);
	if (f & MQTT_PF_SHARED_SUB_AVAILABLE)
		assert_int_equal(w->shared_sub_available, g->shared_sub_available);

	/* User properties: same entries in the same order, whatever the run's layout. */
	mqtt_user_prop_iter wi, gi;
	mqtt_str wk, wv, gk, gv;
	uint32_t n = 0;
	mqtt_user_prop_iter_init(&wi, w->user_props);
	mqtt_user_prop_iter_init(&gi, g->user_props);
	while (mqtt_user_prop_next(&wi, &wk, &wv)) {
		assert_true(mqtt_user_prop_next(&gi, &gk, &gv));
		assert_str(wk, gk);
		assert_str(wv, gv);
		n++;
	}
	assert_false(mqtt_user_prop_next(&gi, &gk, &gv));
	assert_int_equal(n, g->n_user_props);
	assert_false(g->user_props_mixed);
}

static void assert_no_props(const mqtt_props *g)
{
	assert_int_equal(g->present, 0);
	assert_int_equal(g->user_props.len, 0);
	assert_int_equal(g->n_user_props, 0);
	assert_int_equal(g->n_sub_ids, 0);
}

static void assert_packet(const mqtt_packet *w, const mqtt_packet *g, uint8_t v)
{
	const bool v5 = v == MQTT_V5;
	assert_int_equal(w->type, g->type);
#define PROPS(field)                                                                               \
	do {                                                                                       \
		if (v5)                                                                            \
			assert_props(&w->field, &g->field);                                        \
		else                                                                               \
			assert_no_props(&g->field);                                                \
	} while (0)

	switch (w->type) {
	case MQTT_CONNECT: {
		const mqtt_connect *a = &w->u.connect, *b = &g->u.connect;
		assert_int_equal(b->version, v);
		assert_str(v == MQTT_V31 ? S("MQIsdp") : S("MQTT"), b->protocol_name);
		assert_int_equal(a->clean_start, b->clean_start);
		assert_int_equal(a->will, b->will);
		assert_int_equal(a->has_username, b->has_username);
		assert_int_equal(a->has_password, b->has_password);
		assert_int_equal(a->keepalive, b->keepalive);
		assert_str(a->client_id, b->client_id);
		if (a->will) {
			assert_int_equal(a->will_qos, b->will_qos);
			assert_int_equal(a->will_retain, b->will_retain);
			assert_str(a->will_topic, b->will_topic);
			assert_str(a->will_payload, b->will_payload);
			PROPS(u.connect.will_props);
		} else {
			assert_int_equal(b->will_qos, 0);
			assert_false(b->will_retain);
			assert_no_props(&b->will_props);
		}
		if (a->has_username)
			assert_str(a->username, b->username);
		if (a->has_password)
			assert_str(a->password, b->password);
		PROPS(u.connect.props);
		break;
	}
	case MQTT_CONNACK:
		assert_int_equal(v == MQTT_V31 ? false : w->u.connack.session_present,
		                 g->u.connack.session_present);
		assert_int_equal(w->u.connack.rc, g->u.connack.rc);
		PROPS(u.connack.props);
		break;
	case MQTT_PUBLISH: {
		const mqtt_publish *a = &w->u.publish, *b = &g->u.publish;
		assert_int_equal(g->flags, (a->dup ? 8 : 0) | (a->qos << 1) | (a->retain ? 1 : 0));
		assert_int_equal(a->qos, b->qos);
		assert_int_equal(a->dup, b->dup);
		assert_int_equal(a->retain, b->retain);
		assert_int_equal(a->qos ? a->packet_id : 0, b->packet_id);
		assert_str(a->topic, b->topic);
		assert_str(a->payload, b->payload);
		PROPS(u.publish.props);
		break;
	}
	case MQTT_PUBACK:
	case MQTT_PUBREC:
	case MQTT_PUBREL:
	case MQTT_PUBCOMP:
		assert_int_equal(g->flags, w->type == MQTT_PUBREL ? 2 : 0);
		assert_int_equal(w->u.ack.packet_id, g->u.ack.packet_id);
		assert_int_equal(v5 ? w->u.ack.rc : 0, g->u.ack.rc);
		PROPS(u.ack.props);
		break;
	case MQTT_SUBSCRIBE:
	case MQTT_UNSUBSCRIBE:
		assert_int_equal(g->flags, 2);
		assert_int_equal(w->u.subscribe.packet_id, g->u.subscribe.packet_id);
		assert_int_equal(w->u.subscribe.count, g->u.subscribe.count);
		assert_str(w->u.subscribe.entries, g->u.subscribe.entries);
		PROPS(u.subscribe.props);
		break;
	case MQTT_SUBACK:
	case MQTT_UNSUBACK: {
		const mqtt_suback *a = &w->u.suback, *b = &g->u.suback;
		assert_int_equal(a->packet_id, b->packet_id);
		if (!v5 && w->type == MQTT_UNSUBACK) {
			assert_int_equal(b->count, 0);
		} else {
			assert_int_equal(a->count, b->count);
			for (uint32_t i = 0; i < a->count; i++)
				assert_int_equal(!v5 && a->rcs[i] >= 0x80 ? 0x80 : a->rcs[i],
				                 b->rcs[i]);
		}
		PROPS(u.suback.props);
		break;
	}
	case MQTT_DISCONNECT:
	case MQTT_AUTH:
		assert_int_equal(v5 ? w->u.disconnect.rc : 0, g->u.disconnect.rc);
		PROPS(u.disconnect.props);
		break;
	default:
		break;
	}
#undef PROPS
}

/*
 * Encodes, checks the size promise and that nothing is written past it,
 * frames every prefix (all incomplete) and the whole, decodes into a
 * garbage-filled struct and compares.
 */
static void roundtrip(const mqtt_packet *in, uint8_t v)
{
	static uint8_t buf[8192];
	size_t size = mqtt_encoded_size(in, v);
	assert_true(size + 1 <= sizeof(buf));
	memset(buf, 0xA5, sizeof(buf));
	size_t n = mqtt_encode(in, v, buf);
	assert_int_equal(n, size);
	assert_int_equal(buf[n], 0xA5);

	uint32_t plen;
	for (size_t k = 0; k < n; k++)
		assert_int_equal(mqtt_frame(buf, k, 0, &plen), MQTT_FRAME_INCOMPLETE);
	assert_int_equal(mqtt_frame(buf, n + 1, 0, &plen), MQTT_FRAME_OK);
	assert_int_equal(plen, n);
	assert_int_equal(mqtt_frame(buf, n, (uint32_t)n, &plen), MQTT_FRAME_OK);
	assert_int_equal(mqtt_frame(buf, n, (uint32_t)n - 1, &plen), MQTT_RC_PACKET_TOO_LARGE);

	mqtt_packet out;
	memset(&out, 0x5A, sizeof(out));
	int rc = mqtt_decode(buf, n, v, &out);
	if (rc)
		fail_msg("%s v%d: decode failed with %#x (%s)", mqtt_ptype_name(in->type), v, rc,
		         mqtt_rc_name((uint8_t)rc));
	assert_packet(in, &out, v);
}

/* Round trip without properties, with all allowed, and with each allowed one alone. */
static void roundtrip_props(mqtt_packet *p, mqtt_props *props, unsigned ctx, uint8_t v)
{
	static uint8_t ubuf[128];
	memset(props, 0, sizeof(*props));
	roundtrip(p, v);
	fill_all(props, ctx, ubuf);
	roundtrip(p, v);
	if (v != MQTT_V5) {
		memset(props, 0, sizeof(*props));
		return;
	}
	for (size_t i = 0; i < NELEM(all_ids); i++) {
		if (!allowed(ctx, all_ids[i]))
			continue;
		memset(props, 0, sizeof(*props));
		set_prop(props, all_ids[i], ubuf);
		if (all_ids[i] == MQTT_PROP_AUTHENTICATION_DATA)
			set_prop(props, MQTT_PROP_AUTHENTICATION_METHOD, ubuf);
		roundtrip(p, v);
	}
	memset(props, 0, sizeof(*props));
}

/* ------------------------------------------------------------ round trips */

static void test_rt_connect(void **state)
{
	(void)state;
	for (size_t i = 0; i < NELEM(versions); i++) {
		uint8_t v = versions[i];
		mqtt_packet p = {.type = MQTT_CONNECT};
		mqtt_connect *c = &p.u.connect;

		c->clean_start = true;
		c->keepalive = 60;
		c->client_id = S("client-1");
		roundtrip_props(&p, &c->props, MQTT_CONNECT, v);

		c->clean_start = false;
		c->keepalive = 0xFFFF;
		c->has_username = true;
		c->username = S("user\xe2\x82\xac");
		c->has_password = true;
		c->password = S("\x00pw\xff");
		roundtrip_props(&p, &c->props, MQTT_CONNECT, v);

		for (uint8_t q = 0; q <= 2; q++) {
			c->will = true;
			c->will_qos = q;
			c->will_retain = q == 1;
			c->will_topic = S("will/topic");
			c->will_payload = q == 2 ? S("") : S("bye\x00!");
			roundtrip_props(&p, &c->will_props, CTX_WILL, v);
			/* With will and connect properties at once. */
			if (v == MQTT_V5) {
				uint8_t ub1[128], ub2[128];
				fill_all(&c->props, MQTT_CONNECT, ub1);
				fill_all(&c->will_props, CTX_WILL, ub2);
				roundtrip(&p, v);
				memset(&c->props, 0, sizeof(c->props));
				memset(&c->will_props, 0, sizeof(c->will_props));
			}
		}

		/* Empty client id (3.1.1/5; 3.1 wanted 1..23 bytes, which is broker policy). */
		memset(c, 0, sizeof(*c));
		c->clean_start = true;
		c->client_id = S("");
		roundtrip(&p, v);

		/* Username only. */
		c->has_username = true;
		c->username = S("");
		roundtrip(&p, v);
	}

	/* v5 allows a password without a user name. */
	mqtt_packet p = {.type = MQTT_CONNECT};
	p.u.connect.client_id = S("x");
	p.u.connect.has_password = true;
	p.u.connect.password = S("secret");
	roundtrip(&p, MQTT_V5);
}

static void test_rt_connack(void **state)
{
	(void)state;
	for (size_t i = 0; i < NELEM(versions); i++) {
		uint8_t v = versions[i];
		mqtt_packet p = {.type = MQTT_CONNACK};
		p.u.connack.session_present = true;
		roundtrip_props(&p, &p.u.connack.props, MQTT_CONNACK, v);
		p.u.connack.session_present = false;
		p.u.connack.rc =
		    v == MQTT_V5 ? MQTT_RC_NOT_AUTHORIZED : MQTT_V3_REFUSED_NOT_AUTHORIZED;
		roundtrip_props(&p, &p.u.connack.props, MQTT_CONNACK, v);
		for (uint8_t rc = 0; rc <= 5 && v != MQTT_V5; rc++) {
			p.u.connack.rc = rc;
			roundtrip(&p, v);
		}
	}
}

static void test_rt_publish(void **state)
{
	(void)state;
	static uint8_t big[3000];
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)i;
	for (size_t i = 0; i < NELEM(versions); i++) {
		uint8_t v = versions[i];
		for (uint8_t q = 0; q <= 2; q++) {
			mqtt_packet p = {.type = MQTT_PUBLISH};
			mqtt_publish *pb = &p.u.publish;
			pb->qos = q;
			pb->packet_id = q ? (uint16_t)(0xFFFF - q) : 0;
			pb->topic = S("sensors/\xc3\xa9t\xc3\xa9/temp");
			pb->payload = S("21.5");
			roundtrip_props(&p, &pb->props, MQTT_PUBLISH, v);
			pb->retain = true;
			pb->dup = q > 0;
			pb->payload = S("");
			roundtrip(&p, v);
			/* A payload big enough for a two-byte remaining length. */
			pb->payload = (mqtt_str){big, sizeof(big)};
			roundtrip(&p, v);
			/* '$' topics and single-character levels are valid names. */
			pb->topic = S("$SYS/x");
			roundtrip(&p, v);
		}
	}

	/* v5: topic alias with an empty topic; several subscription identifiers. */
	static const uint32_t ids[] = {1, 300, 268435455};
	mqtt_packet p = {.type = MQTT_PUBLISH};
	p.u.publish.topic = S("");
	p.u.publish.props.present = MQTT_PF_TOPIC_ALIAS | MQTT_PF_SUBSCRIPTION_ID;
	p.u.publish.props.topic_alias = 65535;
	p.u.publish.props.sub_ids = ids;
	p.u.publish.props.n_sub_ids = 3;
	p.u.publish.payload = S("x");
	roundtrip(&p, MQTT_V5);
	/* The list with every other PUBLISH property around it. */
	static uint8_t ub[128];
	fill_all(&p.u.publish.props, MQTT_PUBLISH, ub);
	p.u.publish.props.sub_ids = ids;
	p.u.publish.props.n_sub_ids = 3;
	roundtrip(&p, MQTT_V5);
	/* Identifier order on the wire: 0x01, 0x0B x2, 0x23. */
	mqtt_packet q = {.type = MQTT_PUBLISH};
	q.u.publish.topic = S("t");
	q.u.publish.props.present = MQTT_PF_PAYLOAD_FORMAT | MQTT_PF_TOPIC_ALIAS;
	q.u.publish.props.payload_format = 1;
	q.u.publish.props.topic_alias = 2;
	q.u.publish.props.sub_ids = ids;
	q.u.publish.props.n_sub_ids = 2;
	static const uint8_t want[] = {0x30, 0x0E, 0x00, 0x01, 't',  0x0A, 0x01, 0x01,
	                               0x0B, 0x01, 0x0B, 0xAC, 0x02, 0x23, 0x00, 0x02};
	uint8_t out[32];
	assert_int_equal(mqtt_encoded_size(&q, MQTT_V5), sizeof(want));
	assert_int_equal(mqtt_encode(&q, MQTT_V5, out), sizeof(want));
	assert_memory_equal(out, want, sizeof(want));
}

static void test_rt_acks(void **state)
{
	(void)state;
	static const uint8_t types[] = {MQTT_PUBACK, MQTT_PUBREC, MQTT_PUBREL, MQTT_PUBCOMP};
	static const uint8_t errs[] = {MQTT_RC_NO_MATCHING_SUBSCRIBERS, MQTT_RC_QUOTA_EXCEEDED,
	                               MQTT_RC_PACKET_IDENTIFIER_NOT_FOUND,
	                               MQTT_RC_PACKET_IDENTIFIER_NOT_FOUND};
	for (size_t i = 0; i < NELEM(versions); i++) {
		for (size_t t = 0; t < NELEM(types); t++) {
			mqtt_packet p = {.type = types[t]};
			p.u.ack.packet_id = 0x1234;
			roundtrip_props(&p, &p.u.ack.props, types[t], versions[i]);
			if (versions[i] == MQTT_V5) {
				p.u.ack.rc = errs[t];
				roundtrip_props(&p, &p.u.ack.props, types[t], versions[i]);
			}
		}
	}
}

static void test_rt_subscribe(void **state)
{
	(void)state;
	static uint8_t ents[256];
	for (size_t i = 0; i < NELEM(versions); i++) {
		uint8_t v = versions[i];
		mqtt_packet p = {.type = MQTT_SUBSCRIBE};
		size_t n = 0;
		n += mqtt_sub_entry_write(ents + n, S("a/+/c"), 1, true);
		n += mqtt_sub_entry_write(ents + n, S("#"), 2, true);
		n += mqtt_sub_entry_write(ents + n, S("$share/g/x/#"), 0, true);
		uint8_t o5 = 2 | MQTT_SUBOPT_NO_LOCAL | MQTT_SUBOPT_RETAIN_AS_PUBLISHED |
		             (2 << MQTT_SUBOPT_RETAIN_HANDLING_SHIFT);
		if (v == MQTT_V5)
			n += mqtt_sub_entry_write(ents + n, S("v5/opts"), o5, true);
		p.u.subscribe.packet_id = 1;
		p.u.subscribe.entries = (mqtt_str){ents, (uint32_t)n};
		p.u.subscribe.count = v == MQTT_V5 ? 4 : 3;
		roundtrip_props(&p, &p.u.subscribe.props, MQTT_SUBSCRIBE, v);

		/* The iterator gives back what was written. */
		uint8_t buf[512];
		mqtt_packet d;
		size_t len = mqtt_encode(&p, v, buf);
		assert_int_equal(mqtt_decode(buf, len, v, &d), 0);
		mqtt_sub_iter it;
		mqtt_str f;
		uint8_t o;
		mqtt_sub_iter_init(&it, &d.u.subscribe, true);
		assert_true(mqtt_sub_next(&it, &f, &o));
		assert_true(mqtt_str_eq_c(f, "a/+/c"));
		assert_int_equal(o, 1);
		assert_true(mqtt_sub_next(&it, &f, &o));
		assert_true(mqtt_str_eq_c(f, "#"));
		assert_int_equal(o, 2);
		assert_true(mqtt_sub_next(&it, &f, &o));
		assert_true(mqtt_str_eq_c(f, "$share/g/x/#"));
		assert_int_equal(o, 0);
		if (v == MQTT_V5) {
			assert_true(mqtt_sub_next(&it, &f, &o));
			assert_true(mqtt_str_eq_c(f, "v5/opts"));
			assert_int_equal(o, o5);
		}
		assert_false(mqtt_sub_next(&it, &f, &o));
	}
}

static void test_rt_unsubscribe(void **state)
{
	(void)state;
	static uint8_t ents[128];
	for (size_t i = 0; i < NELEM(versions); i++) {
		uint8_t v = versions[i];
		mqtt_packet p = {.type = MQTT_UNSUBSCRIBE};
		size_t n = mqtt_sub_entry_write(ents, S("a/+"), 0xFF, false);
		assert_int_equal(n, mqtt_sub_entry_size(S("a/+"), false));
		n += mqtt_sub_entry_write(ents + n, S("$share/g/x"), 0, false);
		p.u.subscribe.packet_id = 65535;
		p.u.subscribe.entries = (mqtt_str){ents, (uint32_t)n};
		p.u.subscribe.count = 2;
		roundtrip_props(&p, &p.u.subscribe.props, MQTT_UNSUBSCRIBE, v);

		uint8_t buf[256];
		mqtt_packet d;
		size_t len = mqtt_encode(&p, v, buf);
		assert_int_equal(mqtt_decode(buf, len, v, &d), 0);
		mqtt_sub_iter it;
		mqtt_str f;
		uint8_t o = 77;
		mqtt_sub_iter_init(&it, &d.u.subscribe, false);
		assert_true(mqtt_sub_next(&it, &f, &o));
		assert_true(mqtt_str_eq_c(f, "a/+"));
		assert_int_equal(o, 0);
		assert_true(mqtt_sub_next(&it, &f, &o));
		assert_true(mqtt_str_eq_c(f, "$share/g/x"));
		assert_false(mqtt_sub_next(&it, &f, &o));
		/* Asking again after the end stays at the end. */
		assert_false(mqtt_sub_next(&it, &f, &o));
	}
}

static void test_rt_suback(void **state)
{
	(void)state;
	static const uint8_t rc3[] = {0, 1, 2, 0x80};
	static const uint8_t rc5[] = {0,    1,    2,    0x80, 0x83, 0x87,
	                              0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2};
	static const uint8_t urc5[] = {0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91};
	for (size_t i = 0; i < NELEM(versions); i++) {
		uint8_t v = versions[i];
		mqtt_packet p = {.type = MQTT_SUBACK};
		p.u.suback.packet_id = 7;
		p.u.suback.rcs = v == MQTT_V5 ? rc5 : rc3;
		p.u.suback.count = v == MQTT_V5 ? NELEM(rc5) : NELEM(rc3);
		roundtrip_props(&p, &p.u.suback.props, MQTT_SUBACK, v);
		/* v3 SUBACK: every v5 failure code is written as 0x80. */
		if (v != MQTT_V5) {
			p.u.suback.rcs = rc5;
			p.u.suback.count = NELEM(rc5);
			roundtrip(&p, v);
		}

		mqtt_packet u = {.type = MQTT_UNSUBACK};
		u.u.suback.packet_id = 8;
		u.u.suback.rcs = urc5;
		u.u.suback.count = NELEM(urc5);
		roundtrip_props(&u, &u.u.suback.props, MQTT_UNSUBACK, v);
	}
}

static void test_rt_ping_disconnect_auth(void **state)
{
	(void)state;
	for (size_t i = 0; i < NELEM(versions); i++) {
		uint8_t v = versions[i];
		mqtt_packet p = {.type = MQTT_PINGREQ};
		roundtrip(&p, v);
		p.type = MQTT_PINGRESP;
		roundtrip(&p, v);

		mqtt_packet d = {.type = MQTT_DISCONNECT};
		roundtrip_props(&d, &d.u.disconnect.props, MQTT_DISCONNECT, v);
		if (v == MQTT_V5) {
			d.u.disconnect.rc = MQTT_RC_DISCONNECT_WITH_WILL;
			roundtrip_props(&d, &d.u.disconnect.props, MQTT_DISCONNECT, v);
			d.u.disconnect.rc = MQTT_RC_SESSION_TAKEN_OVER;
			roundtrip(&d, v);

			mqtt_packet a = {.type = MQTT_AUTH};
			roundtrip_props(&a, &a.u.disconnect.props, MQTT_AUTH, v);
			a.u.disconnect.rc = MQTT_RC_CONTINUE_AUTHENTICATION;
			roundtrip_props(&a, &a.u.disconnect.props, MQTT_AUTH, v);
			a.u.disconnect.rc = MQTT_RC_REAUTHENTICATE;
			roundtrip(&a, v);
		}
	}
}

/* ------------------------------------------------------------ exact bytes */

static void assert_encodes(const mqtt_packet *p, uint8_t v, const uint8_t *want, size_t wlen)
{
	uint8_t buf[512];
	assert_int_equal(mqtt_encoded_size(p, v), wlen);
	assert_int_equal(mqtt_encode(p, v, buf), wlen);
	assert_memory_equal(buf, want, wlen);
}

static void test_bytes_connect(void **state)
{
	(void)state;
	mqtt_packet p = {.type = MQTT_CONNECT};
	p.u.connect.clean_start = true;
	p.u.connect.keepalive = 60;
	p.u.connect.client_id = S("abc");
	p.u.connect.has_username = true;
	p.u.connect.username = S("u");
	p.u.connect.has_password = true;
	p.u.connect.password = S("p");
	static const uint8_t v311[] = {0x10, 0x15, 0x00, 0x04, 'M',  'Q',  'T', 'T',
	                               0x04, 0xC2, 0x00, 0x3C, 0x00, 0x03, 'a', 'b',
	                               'c',  0x00, 0x01, 'u',  0x00, 0x01, 'p'};
	assert_encodes(&p, MQTT_V311, v311, sizeof(v311));

	mqtt_packet d;
	assert_int_equal(mqtt_decode(v311, sizeof(v311), 0, &d), 0);
	assert_int_equal(d.u.connect.version, MQTT_V311);
	assert_true(mqtt_str_eq_c(d.u.connect.protocol_name, "MQTT"));
	assert_true(mqtt_str_eq_c(d.u.connect.client_id, "abc"));
	assert_true(mqtt_str_eq_c(d.u.connect.username, "u"));
	assert_true(mqtt_str_eq_c(d.u.connect.password, "p"));
	assert_true(d.u.connect.clean_start);
	assert_int_equal(d.u.connect.keepalive, 60);

	/* 3.1 with a QoS 1 retained will. */
	mqtt_packet q = {.type = MQTT_CONNECT};
	q.u.connect.keepalive = 10;
	q.u.connect.client_id = S("c1");
	q.u.connect.will = true;
	q.u.connect.will_qos = 1;
	q.u.connect.will_retain = true;
	q.u.connect.will_topic = S("w");
	q.u.connect.will_payload = S("x");
	static const uint8_t v31[] = {0x10, 0x16, 0x00, 0x06, 'M',  'Q',  'I',  's',
	                              'd',  'p',  0x03, 0x2C, 0x00, 0x0A, 0x00, 0x02,
	                              'c',  '1',  0x00, 0x01, 'w',  0x00, 0x01, 'x'};
	assert_encodes(&q, MQTT_V31, v31, sizeof(v31));

	/* v5 with Session Expiry and an empty will property block. */
	q.u.connect.props.present = MQTT_PF_SESSION_EXPIRY;
	q.u.connect.props.session_expiry = 0x10;
	static const uint8_t v5[] = {0x10, 0x1B, 0x00, 0x04, 'M',  'Q',  'T',  'T',  0x05, 0x2C,
	                             0x00, 0x0A, 0x05, 0x11, 0x00, 0x00, 0x00, 0x10, 0x00, 0x02,
	                             'c',  '1',  0x00, 0x00, 0x01, 'w',  0x00, 0x01, 'x'};
	assert_encodes(&q, MQTT_V5, v5, sizeof(v5));
}

static void test_bytes_connack(void **state)
{
	(void)state;
	mqtt_packet p = {.type = MQTT_CONNACK};
	p.u.connack.props.present = MQTT_PF_ASSIGNED_CLIENT_ID | MQTT_PF_RECEIVE_MAXIMUM |
	                            MQTT_PF_TOPIC_ALIAS_MAXIMUM | MQTT_PF_MAXIMUM_QOS;
	p.u.connack.props.assigned_client_id = S("id");
	p.u.connack.props.receive_maximum = 20;
	p.u.connack.props.topic_alias_maximum = 10;
	p.u.connack.props.maximum_qos = 1;
	static const uint8_t v5[] = {0x20, 0x10, 0x00, 0x00, 0x0D, 0x12, 0x00, 0x02, 'i',
	                             'd',  0x21, 0x00, 0x14, 0x22, 0x00, 0x0A, 0x24, 0x01};
	assert_encodes(&p, MQTT_V5, v5, sizeof(v5));

	mqtt_packet d;
	assert_int_equal(mqtt_decode(v5, sizeof(v5), MQTT_V5, &d), 0);
	assert_int_equal(d.u.connack.props.receive_maximum, 20);
	assert_true(mqtt_str_eq_c(d.u.connack.props.assigned_client_id, "id"));

	p.u.connack.session_present = true;
	static const uint8_t v4[] = {0x20, 0x02, 0x01, 0x00};
	assert_encodes(&p, MQTT_V311, v4, sizeof(v4));
	/* 3.1 has no session present bit. */
	static const uint8_t v3[] = {0x20, 0x02, 0x00, 0x00};
	assert_encodes(&p, MQTT_V31, v3, sizeof(v3));

	/* A v5 CONNACK without a property length is accepted. */
	static const uint8_t shortf[] = {0x20, 0x02, 0x01, 0x00};
	assert_int_equal(mqtt_decode(shortf, sizeof(shortf), MQTT_V5, &d), 0);
	assert_true(d.u.connack.session_present);
	assert_int_equal(d.u.connack.props.present, 0);
	/* 3.1 ignores the first byte entirely. */
	static const uint8_t v31junk[] = {0x20, 0x02, 0xFF, 0x00};
	assert_int_equal(mqtt_decode(v31junk, sizeof(v31junk), MQTT_V31, &d), 0);
	assert_false(d.u.connack.session_present);
}

static void test_bytes_publish(void **state)
{
	(void)state;
	mqtt_packet p = {.type = MQTT_PUBLISH};
	p.u.publish.qos = 1;
	p.u.publish.packet_id = 7;
	p.u.publish.topic = S("a/b");
	p.u.publish.payload = S("hi");
	static const uint8_t v4[] = {0x32, 0x09, 0x00, 0x03, 'a', '/', 'b', 0x00, 0x07, 'h', 'i'};
	assert_encodes(&p, MQTT_V311, v4, sizeof(v4));

	mqtt_packet a = {.type = MQTT_PUBLISH};
	a.u.publish.retain = true;
	a.u.publish.topic = S("");
	a.u.publish.props.present = MQTT_PF_TOPIC_ALIAS;
	a.u.publish.props.topic_alias = 5;
	a.u.publish.payload = S("x");
	static const uint8_t v5[] = {0x31, 0x07, 0x00, 0x00, 0x03, 0x23, 0x00, 0x05, 'x'};
	assert_encodes(&a, MQTT_V5, v5, sizeof(v5));
	mqtt_packet d;
	assert_int_equal(mqtt_decode(v5, sizeof(v5), MQTT_V5, &d), 0);
	assert_int_equal(d.u.publish.topic.len, 0);
	assert_int_equal(d.u.publish.props.topic_alias, 5);
	assert_true(d.u.publish.retain);
	assert_true(mqtt_str_eq_c(d.u.publish.payload, "x"));

	/* Two subscription identifiers in a server's PUBLISH: both counted, the first kept. */
	static const uint8_t two[] = {0x30, 0x0B, 0x00, 0x01, 't', 0x05, 0x0B,
	                              0x02, 0x0B, 0x80, 0x01, 'p', 'q'};
	assert_int_equal(mqtt_decode(two, sizeof(two), MQTT_V5, &d), 0);
	assert_int_equal(d.u.publish.props.subscription_id, 2);
	assert_int_equal(d.u.publish.props.n_sub_ids, 2);
	assert_true(mqtt_str_eq_c(d.u.publish.payload, "pq"));
}

static void test_bytes_acks(void **state)
{
	(void)state;
	mqtt_packet p = {.type = MQTT_PUBACK};
	p.u.ack.packet_id = 42;
	static const uint8_t shortf[] = {0x40, 0x02, 0x00, 0x2A};
	assert_encodes(&p, MQTT_V5, shortf, sizeof(shortf));
	assert_encodes(&p, MQTT_V311, shortf, sizeof(shortf));
	p.u.ack.rc = MQTT_RC_NO_MATCHING_SUBSCRIBERS;
	static const uint8_t rconly[] = {0x40, 0x03, 0x00, 0x2A, 0x10};
	assert_encodes(&p, MQTT_V5, rconly, sizeof(rconly));
	/* v3 has no reason code: it is dropped. */
	assert_encodes(&p, MQTT_V311, shortf, sizeof(shortf));
	p.u.ack.props.present = MQTT_PF_REASON_STRING;
	p.u.ack.props.reason_string = S("x");
	static const uint8_t full[] = {0x40, 0x08, 0x00, 0x2A, 0x10, 0x04, 0x1F, 0x00, 0x01, 'x'};
	assert_encodes(&p, MQTT_V5, full, sizeof(full));
	/* Properties force the reason code to be written even when it is 0. */
	p.u.ack.rc = 0;
	p.type = MQTT_PUBREL;
	static const uint8_t rel[] = {0x62, 0x08, 0x00, 0x2A, 0x00, 0x04, 0x1F, 0x00, 0x01, 'x'};
	assert_encodes(&p, MQTT_V5, rel, sizeof(rel));

	/* The decoder accepts all three v5 forms. */
	mqtt_packet d;
	assert_int_equal(mqtt_decode(shortf, sizeof(shortf), MQTT_V5, &d), 0);
	assert_int_equal(d.u.ack.packet_id, 42);
	assert_int_equal(d.u.ack.rc, 0);
	assert_int_equal(mqtt_decode(rconly, sizeof(rconly), MQTT_V5, &d), 0);
	assert_int_equal(d.u.ack.rc, 0x10);
	assert_int_equal(d.u.ack.props.present, 0);
	static const uint8_t zero_rc[] = {0x50, 0x03, 0x00, 0x2A, 0x00};
	assert_int_equal(mqtt_decode(zero_rc, sizeof(zero_rc), MQTT_V5, &d), 0);
	assert_int_equal(d.type, MQTT_PUBREC);
	assert_int_equal(mqtt_decode(full, sizeof(full), MQTT_V5, &d), 0);
	assert_true(mqtt_str_eq_c(d.u.ack.props.reason_string, "x"));
	static const uint8_t empty_props[] = {0x70, 0x04, 0x00, 0x2A, 0x92, 0x00};
	assert_int_equal(mqtt_decode(empty_props, sizeof(empty_props), MQTT_V5, &d), 0);
	assert_int_equal(d.u.ack.rc, 0x92);

	/* 3.1 did not reserve the PUBREL flags (clients set DUP on resend). */
	static const uint8_t rel31[] = {0x6A, 0x02, 0x00, 0x01};
	assert_int_equal(mqtt_decode(rel31, sizeof(rel31), MQTT_V31, &d), 0);
	assert_int_equal(d.type, MQTT_PUBREL);
	assert_int_equal(mqtt_decode(rel31, sizeof(rel31), MQTT_V311, &d),
	                 MQTT_RC_MALFORMED_PACKET);
}

static void test_bytes_sub_unsub(void **state)
{
	(void)state;
	uint8_t ent[16];
	mqtt_packet p = {.type = MQTT_SUBSCRIBE};
	p.u.subscribe.packet_id = 1;
	p.u.subscribe.entries =
	    (mqtt_str){ent, (uint32_t)mqtt_sub_entry_write(ent, S("a"), 1, true)};
	p.u.subscribe.count = 1;
	p.u.subscribe.props.present = MQTT_PF_SUBSCRIPTION_ID;
	p.u.subscribe.props.subscription_id = 1;
	static const uint8_t v5[] = {0x82, 0x09, 0x00, 0x01, 0x02, 0x0B,
	                             0x01, 0x00, 0x01, 'a',  0x01};
	assert_encodes(&p, MQTT_V5, v5, sizeof(v5));
	static const uint8_t v4[] = {0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 'a', 0x01};
	assert_encodes(&p, MQTT_V311, v4, sizeof(v4));

	mqtt_packet s = {.type = MQTT_SUBACK};
	static const uint8_t rcs[] = {0x01, 0x87};
	s.u.suback.packet_id = 5;
	s.u.suback.rcs = rcs;
	s.u.suback.count = 2;
	static const uint8_t s4[] = {0x90, 0x04, 0x00, 0x05, 0x01, 0x80};
	assert_encodes(&s, MQTT_V311, s4, sizeof(s4));
	static const uint8_t s5[] = {0x90, 0x05, 0x00, 0x05, 0x00, 0x01, 0x87};
	assert_encodes(&s, MQTT_V5, s5, sizeof(s5));

	mqtt_packet u = {.type = MQTT_UNSUBACK};
	u.u.suback.packet_id = 7;
	u.u.suback.rcs = rcs;
	u.u.suback.count = 1;
	static const uint8_t u4[] = {0xB0, 0x02, 0x00, 0x07};
	assert_encodes(&u, MQTT_V311, u4, sizeof(u4));
	mqtt_packet d;
	assert_int_equal(mqtt_decode(u4, sizeof(u4), MQTT_V311, &d), 0);
	assert_int_equal(d.u.suback.count, 0);
	assert_int_equal(d.u.suback.packet_id, 7);

	/* Filter syntax is not the decoder's business (it is a per-entry SUBACK code). */
	static const uint8_t badf[] = {0x82, 0x08, 0x00, 0x01, 0x00, 0x03, 'a', '+', 'b', 0x00};
	assert_int_equal(mqtt_decode(badf, sizeof(badf), MQTT_V311, &d), 0);
	assert_int_equal(d.u.subscribe.count, 1);
}

static void test_bytes_disconnect_auth_ping(void **state)
{
	(void)state;
	mqtt_packet p = {.type = MQTT_DISCONNECT};
	static const uint8_t e0[] = {0xE0, 0x00};
	assert_encodes(&p, MQTT_V5, e0, sizeof(e0));
	assert_encodes(&p, MQTT_V311, e0, sizeof(e0));
	p.u.disconnect.rc = MQTT_RC_SESSION_TAKEN_OVER;
	static const uint8_t e1[] = {0xE0, 0x01, 0x8E};
	assert_encodes(&p, MQTT_V5, e1, sizeof(e1));
	assert_encodes(&p, MQTT_V31, e0, sizeof(e0));

	mqtt_packet d;
	assert_int_equal(mqtt_decode(e0, sizeof(e0), MQTT_V5, &d), 0);
	assert_int_equal(d.u.disconnect.rc, 0);
	assert_int_equal(mqtt_decode(e1, sizeof(e1), MQTT_V5, &d), 0);
	assert_int_equal(d.u.disconnect.rc, 0x8E);
	static const uint8_t e2[] = {0xE0, 0x02, 0x04, 0x00};
	assert_int_equal(mqtt_decode(e2, sizeof(e2), MQTT_V5, &d), 0);
	assert_int_equal(d.u.disconnect.rc, 0x04);

	static const uint8_t a0[] = {0xF0, 0x00};
	assert_int_equal(mqtt_decode(a0, sizeof(a0), MQTT_V5, &d), 0);
	assert_int_equal(d.type, MQTT_AUTH);
	mqtt_packet a = {.type = MQTT_AUTH};
	a.u.disconnect.rc = MQTT_RC_CONTINUE_AUTHENTICATION;
	a.u.disconnect.props.present = MQTT_PF_AUTH_METHOD;
	a.u.disconnect.props.auth_method = S("m");
	static const uint8_t a1[] = {0xF0, 0x06, 0x18, 0x04, 0x15, 0x00, 0x01, 'm'};
	assert_encodes(&a, MQTT_V5, a1, sizeof(a1));

	mqtt_packet ping = {.type = MQTT_PINGREQ};
	static const uint8_t c0[] = {0xC0, 0x00};
	assert_encodes(&ping, MQTT_V5, c0, sizeof(c0));
	ping.type = MQTT_PINGRESP;
	static const uint8_t d0[] = {0xD0, 0x00};
	assert_encodes(&ping, MQTT_V311, d0, sizeof(d0));
	assert_int_equal(mqtt_decode(d0, sizeof(d0), MQTT_V311, &d), 0);
	assert_int_equal(d.type, MQTT_PINGRESP);
}

/* ------------------------------------------------------------ user properties */

static void test_user_props(void **state)
{
	(void)state;
	/* PUBLISH v5 with user(a,b), content type, user(c,""): a mixed run. */
	static const uint8_t mixed[] = {0x30, 0x1B, 0x00, 0x01, 't',  0x17, 0x26, 0x00, 0x01, 'a',
	                                0x00, 0x01, 'b',  0x03, 0x00, 0x02, 'c',  't',  0x26, 0x00,
	                                0x01, 'c',  0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x09};
	mqtt_packet d;
	assert_int_equal(mqtt_decode(mixed, sizeof(mixed), MQTT_V5, &d), 0);
	const mqtt_props *pr = &d.u.publish.props;
	assert_true(pr->user_props_mixed);
	assert_int_equal(pr->n_user_props, 2);
	assert_ptr_equal(pr->user_props.p, mixed + 6);
	assert_int_equal(pr->user_props.len, 18);
	assert_true(mqtt_str_eq_c(pr->content_type, "ct"));
	assert_int_equal(pr->message_expiry, 9);
	assert_int_equal(d.u.publish.payload.len, 0);

	mqtt_user_prop_iter it;
	mqtt_str k, v;
	mqtt_user_prop_iter_init(&it, pr->user_props);
	assert_true(mqtt_user_prop_next(&it, &k, &v));
	assert_true(mqtt_str_eq_c(k, "a") && mqtt_str_eq_c(v, "b"));
	assert_true(mqtt_user_prop_next(&it, &k, &v));
	assert_true(mqtt_str_eq_c(k, "c") && mqtt_str_eq_c(v, ""));
	assert_false(mqtt_user_prop_next(&it, &k, &v));
	assert_false(mqtt_user_prop_next(&it, &k, &v));

	/* Re-encoding a mixed run writes only its user properties. */
	mqtt_packet a = {.type = MQTT_PUBACK};
	a.u.ack.packet_id = 1;
	a.u.ack.props.user_props = pr->user_props;
	a.u.ack.props.n_user_props = 2;
	a.u.ack.props.user_props_mixed = true;
	static const uint8_t want[] = {0x40, 0x11, 0x00, 0x01, 0x00, 0x0D, 0x26, 0x00, 0x01, 'a',
	                               0x00, 0x01, 'b',  0x26, 0x00, 0x01, 'c',  0x00, 0x00};
	assert_encodes(&a, MQTT_V5, want, sizeof(want));
	assert_int_equal(mqtt_props_size(&a.u.ack.props), 14);

	/* Contiguous user properties: not mixed, and the run is exactly them. */
	static const uint8_t contig[] = {0x30, 0x16, 0x00, 0x01, 't',  0x11, 0x26, 0x00,
	                                 0x01, 'a',  0x00, 0x01, 'b',  0x26, 0x00, 0x01,
	                                 'c',  0x00, 0x00, 0x03, 0x00, 0x01, 'x',  'P'};
	assert_int_equal(mqtt_decode(contig, sizeof(contig), MQTT_V5, &d), 0);
	assert_false(d.u.publish.props.user_props_mixed);
	assert_int_equal(d.u.publish.props.n_user_props, 2);
	assert_int_equal(d.u.publish.props.user_props.len, 13);
	assert_true(mqtt_str_eq_c(d.u.publish.payload, "P"));

	/* The iterator skips every kind of non-user property. */
	static const uint8_t run[] = {0x01, 0x01,                   /* byte */
	                              0x23, 0x00, 0x05,             /* two bytes */
	                              0x02, 0x00, 0x00, 0x00, 0x01, /* four bytes */
	                              0x0B, 0x80, 0x01,             /* varint */
	                              0x09, 0x00, 0x01, 0xFF,       /* binary */
	                              0x26, 0x00, 0x01, 'k',  0x00, 0x01, 'v', 0x03, 0x00, 0x00};
	mqtt_user_prop_iter_init(&it, (mqtt_str){run, sizeof(run)});
	assert_true(mqtt_user_prop_next(&it, &k, &v));
	assert_true(mqtt_str_eq_c(k, "k") && mqtt_str_eq_c(v, "v"));
	assert_false(mqtt_user_prop_next(&it, &k, &v));

	/* Garbage (not from the decoder) ends the iteration instead of overrunning. */
	static const uint8_t bad1[] = {0x26, 0x00, 0x05, 'k'};
	mqtt_user_prop_iter_init(&it, (mqtt_str){bad1, sizeof(bad1)});
	assert_false(mqtt_user_prop_next(&it, &k, &v));
	static const uint8_t bad2[] = {0x7F, 0x26, 0x00, 0x00, 0x00, 0x00};
	mqtt_user_prop_iter_init(&it, (mqtt_str){bad2, sizeof(bad2)});
	assert_false(mqtt_user_prop_next(&it, &k, &v));
	mqtt_user_prop_iter_init(&it, MQTT_STR_NULL);
	assert_false(mqtt_user_prop_next(&it, &k, &v));

	/* Writer and size agree. */
	uint8_t out[32];
	assert_int_equal(mqtt_user_prop_size(S("ab"), S("c")), 8);
	assert_int_equal(mqtt_user_prop_write(out, S("ab"), S("c")), 8);
	static const uint8_t want_up[] = {0x26, 0x00, 0x02, 'a', 'b', 0x00, 0x01, 'c'};
	assert_memory_equal(out, want_up, sizeof(want_up));
}

static void test_props_size(void **state)
{
	(void)state;
	mqtt_props p;
	memset(&p, 0, sizeof(p));
	assert_int_equal(mqtt_props_size(&p), 1);
	p.present = MQTT_PF_PAYLOAD_FORMAT;
	assert_int_equal(mqtt_props_size(&p), 3);
	p.present |= MQTT_PF_SUBSCRIPTION_ID;
	p.subscription_id = 128;
	assert_int_equal(mqtt_props_size(&p), 6);
	static const uint32_t ids[] = {1, 16384};
	p.sub_ids = ids;
	p.n_sub_ids = 2;
	assert_int_equal(mqtt_props_size(&p), 1 + 2 + 2 + 4);
	/* A block needing a two-byte length prefix. */
	static const char longs[200] = {'x'};
	memset(&p, 0, sizeof(p));
	p.present = MQTT_PF_REASON_STRING;
	p.reason_string = (mqtt_str){(const uint8_t *)longs, 200};
	assert_int_equal(mqtt_props_size(&p), 2 + 203);
}

/* ------------------------------------------------------------ property rules per packet type */

/* clang-format off */
/* A valid value of property id in wire form, written independently of the codec. */
static size_t raw_prop(uint8_t *o, uint8_t id)
{
	size_t n = 0;
	o[n++] = id;
	switch (id) {
	case 0x01: case 0x17: case 0x19: case 0x24: case 0x25: case 0x28: case 0x29: case 0x2A:
		o[n++] = 1;
		break;
	case 0x13: case 0x21: case 0x22: case 0x23:
		o[n++] = 0;
		o[n++] = 3;
		break;
	case 0x02: case 0x11: case 0x18: case 0x27:
		memcpy(o + n, "\x00\x00\x01\x00", 4);
		n += 4;
		break;
	case 0x0B:
		o[n++] = 0x81;
		o[n++] = 0x01;
		break;
	case 0x26:
		memcpy(o + n, "\x00\x01" "k" "\x00\x01" "v", 6);
		n += 6;
		break;
	default: /* strings and binary data */
		memcpy(o + n, "\x00\x02" "ab", 4);
		n += 4;
		break;
	}
	return n;
}

static size_t put(uint8_t *o, const void *s, size_t n)
{
	memcpy(o, s, n);
	return n;
}

/* A v5 packet of context ctx whose (only) property block is props. Returns its length. */
static size_t build_with_props(uint8_t *out, unsigned ctx, const uint8_t *props, size_t plen)
{
	uint8_t body[512];
	size_t n = 0;
	uint8_t first = (uint8_t)(ctx << 4);
	uint8_t blk[300];
	size_t bl = (size_t)mqtt_varint_write(blk, (uint32_t)plen);
	memcpy(blk + bl, props, plen);
	bl += plen;

	switch (ctx) {
	case MQTT_CONNECT:
		n += put(body + n, "\x00\x04" "MQTT" "\x05\x02\x00\x3c", 10);
		n += put(body + n, blk, bl);
		n += put(body + n, "\x00\x01" "c", 3);
		break;
	case CTX_WILL:
		first = MQTT_CONNECT << 4;
		n += put(body + n, "\x00\x04" "MQTT" "\x05\x06\x00\x3c\x00", 11);
		n += put(body + n, "\x00\x01" "c", 3);
		n += put(body + n, blk, bl);
		n += put(body + n, "\x00\x01" "t" "\x00\x00", 5);
		break;
	case MQTT_CONNACK:
		n += put(body + n, "\x00\x00", 2);
		n += put(body + n, blk, bl);
		break;
	case MQTT_PUBLISH:
		n += put(body + n, "\x00\x01" "a", 3);
		n += put(body + n, blk, bl);
		n += put(body + n, "pay", 3);
		break;
	case MQTT_PUBACK:
	case MQTT_PUBREC:
	case MQTT_PUBREL:
	case MQTT_PUBCOMP:
		if (ctx == MQTT_PUBREL)
			first |= 2;
		n += put(body + n, "\x00\x01\x00", 3);
		n += put(body + n, blk, bl);
		break;
	case MQTT_SUBSCRIBE:
	case MQTT_UNSUBSCRIBE:
		first |= 2;
		n += put(body + n, "\x00\x01", 2);
		n += put(body + n, blk, bl);
		n += put(body + n, "\x00\x01" "a" "\x00", ctx == MQTT_SUBSCRIBE ? 4 : 3);
		break;
	case MQTT_SUBACK:
	case MQTT_UNSUBACK:
		n += put(body + n, "\x00\x01", 2);
		n += put(body + n, blk, bl);
		n += put(body + n, "\x00", 1);
		break;
	case MQTT_DISCONNECT:
	case MQTT_AUTH:
		n += put(body + n, "\x00", 1);
		n += put(body + n, blk, bl);
		break;
	}
	size_t o = 0;
	out[o++] = first;
	o += mqtt_varint_write(out + o, (uint32_t)n);
	memcpy(out + o, body, n);
	return o + n;
}
/* clang-format on */

static void test_props_per_type(void **state)
{
	(void)state;
	uint8_t props[64], pkt[600];
	mqtt_packet d;
	for (size_t c = 0; c < NELEM(prop_ctxs); c++) {
		unsigned ctx = prop_ctxs[c];
		for (size_t i = 0; i < NELEM(all_ids); i++) {
			uint8_t id = all_ids[i];
			size_t pl = 0;
			/* Authentication Data needs its Method. */
			if (id == MQTT_PROP_AUTHENTICATION_DATA && allowed(ctx, 0x15))
				pl += raw_prop(props + pl, 0x15);
			pl += raw_prop(props + pl, id);
			size_t n = build_with_props(pkt, ctx, props, pl);
			int want = allowed(ctx, id) ? 0 : MQTT_RC_MALFORMED_PACKET;
			int rc = mqtt_decode(pkt, n, MQTT_V5, &d);
			if (rc != want)
				fail_msg("ctx %u prop %#x once: got %#x want %#x", ctx, id, rc,
				         want);
			if (!allowed(ctx, id))
				continue;

			/* Twice: only User Property, and Subscription Identifier in PUBLISH, may
			 * repeat. */
			pl += raw_prop(props + pl, id);
			n = build_with_props(pkt, ctx, props, pl);
			bool repeatable =
			    id == MQTT_PROP_USER_PROPERTY ||
			    (id == MQTT_PROP_SUBSCRIPTION_IDENTIFIER && ctx == MQTT_PUBLISH);
			want = repeatable ? 0 : MQTT_RC_PROTOCOL_ERROR;
			rc = mqtt_decode(pkt, n, MQTT_V5, &d);
			if (rc != want)
				fail_msg("ctx %u prop %#x twice: got %#x want %#x", ctx, id, rc,
				         want);
		}
		/* The empty block is fine everywhere. */
		size_t n = build_with_props(pkt, ctx, props, 0);
		assert_int_equal(mqtt_decode(pkt, n, MQTT_V5, &d), 0);
	}
	/* Unknown identifiers, in any packet. */
	static const uint8_t unknown[] = {0x00, 0x04, 0x0A, 0x14, 0x1B, 0x20, 0x2B, 0x7F, 0x80};
	for (size_t c = 0; c < NELEM(prop_ctxs); c++) {
		for (size_t i = 0; i < NELEM(unknown); i++) {
			uint8_t raw[] = {unknown[i], 0x01, 0x01};
			size_t n = build_with_props(pkt, prop_ctxs[c], raw, sizeof(raw));
			assert_int_equal(mqtt_decode(pkt, n, MQTT_V5, &d),
			                 MQTT_RC_MALFORMED_PACKET);
		}
	}
}

/* ------------------------------------------------------------ bad packets */

struct bad {
	const char *name;
	uint8_t version;
	uint8_t first;
	const uint8_t *body;
	size_t len;
	int want;
};

#define MAL   MQTT_RC_MALFORMED_PACKET
#define PROTO MQTT_RC_PROTOCOL_ERROR
#define TNI   MQTT_RC_TOPIC_NAME_INVALID
#define UPV   MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION

/* clang-format off */
/* Prefixes of CONNECT bodies, up to and including the keep alive. */
#define C4(flags) "\x00\x04" "MQTT" "\x04" flags "\x00\x3c"
#define C5(flags) "\x00\x04" "MQTT" "\x05" flags "\x00\x3c"

static const struct bad bad_packets[] = {
	/* fixed header */
	{"reserved type 0", 4, 0x00, B(""), MAL},
	{"AUTH in 3.1.1", 4, 0xF0, B(""), MAL},
	{"AUTH in 3.1", 3, 0xF0, B(""), MAL},
	{"PINGREQ with body", 4, 0xC0, B("\x00"), MAL},
	{"PINGREQ with body v5", 5, 0xC0, B("\x00"), MAL},
	{"PINGRESP flags", 4, 0xD1, B(""), MAL},
	{"PINGREQ flags", 5, 0xC8, B(""), MAL},
	{"DISCONNECT v3 with body", 4, 0xE0, B("\x00"), MAL},
	{"DISCONNECT flags", 5, 0xE2, B(""), MAL},
	{"CONNACK flags", 4, 0x21, B("\x00\x00"), MAL},
	{"PUBACK flags", 4, 0x42, B("\x00\x01"), MAL},
	{"PUBREC flags", 5, 0x58, B("\x00\x01"), MAL},
	{"PUBREL flags 0", 4, 0x60, B("\x00\x01"), MAL},
	{"PUBREL flags 3", 5, 0x63, B("\x00\x01"), MAL},
	{"PUBCOMP flags", 4, 0x72, B("\x00\x01"), MAL},
	{"SUBSCRIBE flags 0", 4, 0x80, B("\x00\x01\x00\x01" "a" "\x00"), MAL},
	{"SUBSCRIBE flags 3", 5, 0x83, B("\x00\x01\x00\x00\x01" "a" "\x00"), MAL},
	{"SUBACK flags", 4, 0x92, B("\x00\x01\x00"), MAL},
	{"UNSUBSCRIBE flags 0", 4, 0xA0, B("\x00\x01\x00\x01" "a"), MAL},
	{"UNSUBACK flags", 4, 0xB2, B("\x00\x01"), MAL},
	{"AUTH flags", 5, 0xF1, B(""), MAL},

	/* CONNECT */
	{"CONNECT header flags", 4, 0x12, B(C4("\x02") "\x00\x01" "c"), MAL},
	{"CONNECT empty", 4, 0x10, B(""), MAL},
	{"protocol name truncated", 4, 0x10, B("\x00\x04" "MQ"), MAL},
	{"no protocol level", 4, 0x10, B("\x00\x04" "MQTT"), MAL},
	{"no keep alive", 4, 0x10, B("\x00\x04" "MQTT" "\x04\x02\x00"), MAL},
	{"unknown protocol name", 4, 0x10, B("\x00\x04" "MQTX" "\x04\x02\x00\x3c\x00\x01" "c"), UPV},
	{"MQTT with level 3", 4, 0x10, B("\x00\x04" "MQTT" "\x03\x02\x00\x3c\x00\x01" "c"), UPV},
	{"MQTT with level 6", 4, 0x10, B("\x00\x04" "MQTT" "\x06\x02\x00\x3c\x00\x01" "c"), UPV},
	{"MQIsdp with level 4", 4, 0x10, B("\x00\x06" "MQIsdp" "\x04\x02\x00\x3c\x00\x01" "c"),
	 UPV},
	{"reserved connect flag", 4, 0x10, B(C4("\x03") "\x00\x01" "c"), MAL},
	{"reserved connect flag v5", 5, 0x10, B(C5("\x03") "\x00\x00\x01" "c"), MAL},
	{"will QoS 3", 4, 0x10, B(C4("\x1e") "\x00\x01" "c" "\x00\x01" "t" "\x00\x00"), MAL},
	{"will QoS without will", 4, 0x10, B(C4("\x0a") "\x00\x01" "c"), MAL},
	{"will retain without will", 5, 0x10, B(C5("\x22") "\x00\x00\x01" "c"), MAL},
	{"password without user 3.1.1", 4, 0x10, B(C4("\x42") "\x00\x01" "c" "\x00\x01" "p"), MAL},
	{"password without user 3.1", 4, 0x10,
	 B("\x00\x06" "MQIsdp" "\x03\x42\x00\x3c\x00\x01" "c" "\x00\x01" "p"), MAL},
	{"client id truncated", 4, 0x10, B(C4("\x02") "\x00\x05" "c"), MAL},
	{"client id missing", 4, 0x10, B(C4("\x02")), MAL},
	{"client id overlong NUL", 4, 0x10, B(C4("\x02") "\x00\x02\xc0\x80"), MAL},
	{"client id overlong slash", 4, 0x10, B(C4("\x02") "\x00\x02\xc0\xaf"), MAL},
	{"client id overlong 3-byte", 4, 0x10, B(C4("\x02") "\x00\x03\xe0\x80\xaf"), MAL},
	{"client id overlong 4-byte", 4, 0x10, B(C4("\x02") "\x00\x04\xf0\x80\x80\xaf"), MAL},
	{"client id surrogate", 4, 0x10, B(C4("\x02") "\x00\x03\xed\xa0\x80"), MAL},
	{"client id U+0000", 4, 0x10, B(C4("\x02") "\x00\x03" "a" "\x00" "b"), MAL},
	{"client id above U+10FFFF", 4, 0x10, B(C4("\x02") "\x00\x04\xf4\x90\x80\x80"), MAL},
	{"client id 0xFF", 4, 0x10, B(C4("\x02") "\x00\x01\xff"), MAL},
	{"client id cut sequence", 4, 0x10, B(C4("\x02") "\x00\x02\xe2\x82"), MAL},
	{"client id lone continuation", 4, 0x10, B(C4("\x02") "\x00\x01\x80"), MAL},
	{"user name bad UTF-8", 4, 0x10, B(C4("\x82") "\x00\x01" "c" "\x00\x01\xfe"), MAL},
	{"user name missing", 4, 0x10, B(C4("\x82") "\x00\x01" "c"), MAL},
	{"password truncated", 4, 0x10,
	 B(C4("\xc2") "\x00\x01" "c" "\x00\x01" "u" "\x00\x09" "p"), MAL},
	{"trailing byte", 4, 0x10, B(C4("\x02") "\x00\x01" "c" "!"), MAL},
	{"trailing byte v5", 5, 0x10, B(C5("\x02") "\x00\x00\x01" "c" "!"), MAL},
	{"trailing byte 3.1", 3, 0x10, B("\x00\x06" "MQIsdp" "\x03\x02\x00\x3c\x00\x01" "c" "!"),
	 MAL},
	{"will topic wildcard", 4, 0x10, B(C4("\x06") "\x00\x01" "c" "\x00\x03" "a/#" "\x00\x00"),
	 TNI},
	{"will topic plus", 4, 0x10, B(C4("\x06") "\x00\x01" "c" "\x00\x01" "+" "\x00\x00"), TNI},
	{"will topic empty", 4, 0x10, B(C4("\x06") "\x00\x01" "c" "\x00\x00\x00\x00"), TNI},
	{"will topic bad UTF-8", 4, 0x10, B(C4("\x06") "\x00\x01" "c" "\x00\x01\xc1\x00\x00"), MAL},
	{"will payload missing", 4, 0x10, B(C4("\x06") "\x00\x01" "c" "\x00\x01" "t"), MAL},
	{"v5 no property length", 5, 0x10, B(C5("\x02")), MAL},
	{"v5 property length too big", 5, 0x10, B(C5("\x02") "\x09\x11\x00\x00\x00\x01"), MAL},
	{"v5 property value cut", 5, 0x10, B(C5("\x02") "\x03\x11\x00\x00\x00\x01" "c"), MAL},
	{"v5 property length 5 bytes", 5, 0x10, B(C5("\x02") "\x80\x80\x80\x80\x00"), MAL},
	{"v5 property length non-minimal", 5, 0x10, B(C5("\x02") "\x80\x00\x00\x01" "c"), MAL},
	{"v5 receive maximum 0", 5, 0x10, B(C5("\x02") "\x03\x21\x00\x00\x00\x01" "c"), PROTO},
	{"v5 maximum packet size 0", 5, 0x10,
	 B(C5("\x02") "\x05\x27\x00\x00\x00\x00\x00\x01" "c"), PROTO},
	{"v5 request problem info 2", 5, 0x10, B(C5("\x02") "\x02\x17\x02\x00\x01" "c"), PROTO},
	{"v5 request response info 2", 5, 0x10, B(C5("\x02") "\x02\x19\x02\x00\x01" "c"), PROTO},
	{"v5 auth data without method", 5, 0x10, B(C5("\x02") "\x04\x16\x00\x01" "x" "\x00\x01" "c"),
	 PROTO},
	{"v5 duplicate session expiry", 5, 0x10,
	 B(C5("\x02") "\x0a\x11\x00\x00\x00\x01\x11\x00\x00\x00\x02\x00\x01" "c"), PROTO},
	{"v5 will delay outside will", 5, 0x10,
	 B(C5("\x02") "\x05\x18\x00\x00\x00\x01\x00\x01" "c"), MAL},
	{"v5 topic alias in CONNECT", 5, 0x10, B(C5("\x02") "\x03\x23\x00\x01\x00\x01" "c"), MAL},
	{"v5 user property bad UTF-8", 5, 0x10,
	 B(C5("\x02") "\x07\x26\x00\x01" "k" "\x00\x01\xed" "\x00\x01" "c"), MAL},
	{"v5 user property value cut", 5, 0x10, B(C5("\x02") "\x05\x26\x00\x01" "k" "\x00\x00\x01" "c"),
	 MAL},
	{"v5 will payload format 2", 5, 0x10,
	 B(C5("\x06") "\x00\x00\x01" "c" "\x02\x01\x02\x00\x01" "t" "\x00\x00"), PROTO},
	{"v5 will response topic wildcard", 5, 0x10,
	 B(C5("\x06") "\x00\x00\x01" "c" "\x04\x08\x00\x01" "#" "\x00\x01" "t" "\x00\x00"), PROTO},
	{"v5 session expiry in will", 5, 0x10,
	 B(C5("\x06") "\x00\x00\x01" "c" "\x05\x11\x00\x00\x00\x01\x00\x01" "t" "\x00\x00"), MAL},

	/* CONNACK */
	{"CONNACK short", 4, 0x20, B("\x00"), MAL},
	{"CONNACK long v3", 4, 0x20, B("\x00\x00\x00"), MAL},
	{"CONNACK reserved ack flags", 4, 0x20, B("\x02\x00"), MAL},
	{"CONNACK reserved ack flags v5", 5, 0x20, B("\x80\x00\x00"), MAL},
	{"CONNACK v3 return code 6", 4, 0x20, B("\x00\x06"), PROTO},
	{"CONNACK session present with error", 4, 0x20, B("\x01\x05"), PROTO},
	{"CONNACK v5 session present with error", 5, 0x20, B("\x01\x87\x00"), PROTO},
	{"CONNACK v5 reason 0x10", 5, 0x20, B("\x00\x10\x00"), PROTO},
	{"CONNACK v5 reason 0x8E", 5, 0x20, B("\x00\x8e\x00"), PROTO},
	{"CONNACK v5 maximum QoS 2", 5, 0x20, B("\x00\x00\x02\x24\x02"), PROTO},
	{"CONNACK v5 retain available 2", 5, 0x20, B("\x00\x00\x02\x25\x02"), PROTO},
	{"CONNACK v5 wildcard available 5", 5, 0x20, B("\x00\x00\x02\x28\x05"), PROTO},
	{"CONNACK v5 topic alias", 5, 0x20, B("\x00\x00\x03\x23\x00\x01"), MAL},
	{"CONNACK v5 trailing", 5, 0x20, B("\x00\x00\x00\x00"), MAL},

	/* PUBLISH */
	{"QoS 3", 4, 0x36, B("\x00\x01" "a" "\x00\x01"), MAL},
	{"QoS 3 v5", 5, 0x37, B("\x00\x01" "a" "\x00\x01\x00"), MAL},
	{"DUP with QoS 0", 4, 0x38, B("\x00\x01" "a"), MAL},
	{"DUP with QoS 0 v5", 5, 0x38, B("\x00\x01" "a" "\x00"), PROTO},
	{"packet id 0", 4, 0x32, B("\x00\x01" "a" "\x00\x00"), PROTO},
	{"packet id 0 QoS 2 v5", 5, 0x34, B("\x00\x01" "a" "\x00\x00\x00"), PROTO},
	{"packet id missing", 4, 0x32, B("\x00\x01" "a" "\x00"), MAL},
	{"topic with +", 4, 0x30, B("\x00\x03" "a/+"), TNI},
	{"topic with #", 5, 0x30, B("\x00\x01" "#" "\x00"), TNI},
	{"topic with + in a level", 3, 0x30, B("\x00\x03" "a+b"), TNI},
	{"empty topic v3", 4, 0x30, B("\x00\x00" "x"), TNI},
	{"empty topic 3.1", 3, 0x30, B("\x00\x00"), TNI},
	{"empty topic v5 without alias", 5, 0x30, B("\x00\x00\x00" "x"), TNI},
	{"topic truncated", 4, 0x30, B("\x00\x05" "ab"), MAL},
	{"topic length missing", 4, 0x30, B("\x00"), MAL},
	{"topic bad UTF-8", 4, 0x30, B("\x00\x02" "a" "\x80"), MAL},
	{"topic U+0000", 4, 0x30, B("\x00\x03" "a" "\x00" "b"), MAL},
	{"topic surrogate", 5, 0x30, B("\x00\x03\xed\xbf\xbf\x00"), MAL},
	{"v5 no property length", 5, 0x30, B("\x00\x01" "a"), MAL},
	{"v5 topic alias 0", 5, 0x30, B("\x00\x01" "a" "\x03\x23\x00\x00"), MQTT_RC_TOPIC_ALIAS_INVALID},
	{"v5 payload format 2", 5, 0x30, B("\x00\x01" "a" "\x02\x01\x02"), PROTO},
	{"v5 subscription id 0", 5, 0x30, B("\x00\x01" "a" "\x02\x0b\x00"), PROTO},
	{"v5 second subscription id 0", 5, 0x30, B("\x00\x01" "a" "\x04\x0b\x01\x0b\x00"), PROTO},
	{"v5 subscription id 5 bytes", 5, 0x30, B("\x00\x01" "a" "\x06\x0b\x80\x80\x80\x80\x01"), MAL},
	{"v5 response topic wildcard", 5, 0x30, B("\x00\x01" "a" "\x06\x08\x00\x03" "a/+"), PROTO},
	{"v5 response topic empty", 5, 0x30, B("\x00\x01" "a" "\x03\x08\x00\x00"), PROTO},
	{"v5 content type bad UTF-8", 5, 0x30, B("\x00\x01" "a" "\x04\x03\x00\x01\xff"), MAL},
	{"v5 duplicate topic alias", 5, 0x30, B("\x00\x01" "a" "\x06\x23\x00\x01\x23\x00\x02"), PROTO},
	{"v5 duplicate payload format", 5, 0x30, B("\x00\x01" "a" "\x04\x01\x00\x01\x01"), PROTO},
	{"v5 duplicate message expiry", 5, 0x30,
	 B("\x00\x01" "a" "\x0a\x02\x00\x00\x00\x01\x02\x00\x00\x00\x01"), PROTO},
	{"v5 session expiry in PUBLISH", 5, 0x30, B("\x00\x01" "a" "\x05\x11\x00\x00\x00\x01"), MAL},
	{"v5 unknown property 0x00", 5, 0x30, B("\x00\x01" "a" "\x02\x00\x00"), MAL},
	{"v5 property id 2 bytes", 5, 0x30, B("\x00\x01" "a" "\x03\x81\x00\x00"), MAL},
	{"v5 property length past end", 5, 0x30, B("\x00\x01" "a" "\x05\x01\x01"), MAL},

	/* PUBACK, PUBREC, PUBREL, PUBCOMP */
	{"PUBACK empty", 4, 0x40, B(""), MAL},
	{"PUBACK one byte", 5, 0x40, B("\x00"), MAL},
	{"PUBACK v3 trailing", 4, 0x40, B("\x00\x01\x00"), MAL},
	{"PUBCOMP 3.1 trailing", 3, 0x70, B("\x00\x01\x00"), MAL},
	{"PUBACK packet id 0", 4, 0x40, B("\x00\x00"), PROTO},
	{"PUBREL packet id 0 v5", 5, 0x62, B("\x00\x00"), PROTO},
	{"PUBACK v5 reason 0x92", 5, 0x40, B("\x00\x01\x92"), PROTO},
	{"PUBREC v5 reason 0x04", 5, 0x50, B("\x00\x01\x04"), PROTO},
	{"PUBREL v5 reason 0x10", 5, 0x62, B("\x00\x01\x10"), PROTO},
	{"PUBCOMP v5 reason 0x80", 5, 0x70, B("\x00\x01\x80"), PROTO},
	{"PUBACK v5 property length past end", 5, 0x40, B("\x00\x01\x00\x04\x1f\x00"), MAL},
	{"PUBACK v5 trailing after properties", 5, 0x40, B("\x00\x01\x00\x00\x00"), MAL},
	{"PUBACK v5 session expiry", 5, 0x40, B("\x00\x01\x00\x05\x11\x00\x00\x00\x01"), MAL},
	{"PUBACK v5 duplicate reason string", 5, 0x40,
	 B("\x00\x01\x00\x08\x1f\x00\x01" "a" "\x1f\x00\x01" "b"), PROTO},

	/* SUBSCRIBE */
	{"SUBSCRIBE empty", 4, 0x82, B("\x00\x01"), PROTO},
	{"SUBSCRIBE empty v5", 5, 0x82, B("\x00\x01\x00"), PROTO},
	{"SUBSCRIBE no packet id", 4, 0x82, B("\x00"), MAL},
	{"SUBSCRIBE packet id 0", 4, 0x82, B("\x00\x00\x00\x01" "a" "\x00"), PROTO},
	{"SUBSCRIBE missing options", 4, 0x82, B("\x00\x01\x00\x01" "a"), MAL},
	{"SUBSCRIBE second missing options", 4, 0x82, B("\x00\x01\x00\x01" "a" "\x01\x00\x01" "b"),
	 MAL},
	{"SUBSCRIBE filter truncated", 4, 0x82, B("\x00\x01\x00\x09" "a" "\x00"), MAL},
	{"SUBSCRIBE half a length", 4, 0x82, B("\x00\x01\x00\x01" "a" "\x00\x00"), MAL},
	{"SUBSCRIBE empty filter", 4, 0x82, B("\x00\x01\x00\x00\x00"), PROTO},
	{"SUBSCRIBE empty filter v5", 5, 0x82, B("\x00\x01\x00\x00\x00\x00"), PROTO},
	{"SUBSCRIBE filter bad UTF-8", 4, 0x82, B("\x00\x01\x00\x02\xc3\x28\x00"), MAL},
	{"SUBSCRIBE filter U+0000", 5, 0x82, B("\x00\x01\x00\x00\x01\x00\x00"), MAL},
	{"SUBSCRIBE QoS 3", 4, 0x82, B("\x00\x01\x00\x01" "a" "\x03"), PROTO},
	{"SUBSCRIBE QoS 3 v5", 5, 0x82, B("\x00\x01\x00\x00\x01" "a" "\x03"), PROTO},
	{"SUBSCRIBE v3 reserved bit 2", 4, 0x82, B("\x00\x01\x00\x01" "a" "\x04"), PROTO},
	{"SUBSCRIBE v3 reserved bit 7", 3, 0x82, B("\x00\x01\x00\x01" "a" "\x80"), PROTO},
	{"SUBSCRIBE v5 reserved bit 6", 5, 0x82, B("\x00\x01\x00\x00\x01" "a" "\x40"), PROTO},
	{"SUBSCRIBE v5 reserved bit 7", 5, 0x82, B("\x00\x01\x00\x00\x01" "a" "\x81"), PROTO},
	{"SUBSCRIBE v5 retain handling 3", 5, 0x82, B("\x00\x01\x00\x00\x01" "a" "\x31"), PROTO},
	{"SUBSCRIBE v5 subscription id 0", 5, 0x82, B("\x00\x01\x02\x0b\x00\x00\x01" "a" "\x00"),
	 PROTO},
	{"SUBSCRIBE v5 two subscription ids", 5, 0x82,
	 B("\x00\x01\x04\x0b\x01\x0b\x02\x00\x01" "a" "\x00"), PROTO},
	{"SUBSCRIBE v5 reason string", 5, 0x82, B("\x00\x01\x04\x1f\x00\x01" "r" "\x00\x01" "a" "\x00"),
	 MAL},

	/* UNSUBSCRIBE */
	{"UNSUBSCRIBE empty", 4, 0xA2, B("\x00\x01"), PROTO},
	{"UNSUBSCRIBE empty v5", 5, 0xA2, B("\x00\x01\x00"), PROTO},
	{"UNSUBSCRIBE packet id 0", 4, 0xA2, B("\x00\x00\x00\x01" "a"), PROTO},
	{"UNSUBSCRIBE empty filter", 4, 0xA2, B("\x00\x01\x00\x00"), PROTO},
	{"UNSUBSCRIBE filter truncated", 5, 0xA2, B("\x00\x01\x00\x00\x02" "a"), MAL},
	{"UNSUBSCRIBE filter bad UTF-8", 4, 0xA2, B("\x00\x01\x00\x01\xf8"), MAL},
	{"UNSUBSCRIBE v5 subscription id", 5, 0xA2, B("\x00\x01\x02\x0b\x01\x00\x01" "a"), MAL},

	/* SUBACK, UNSUBACK */
	{"SUBACK no codes", 4, 0x90, B("\x00\x01"), PROTO},
	{"SUBACK no codes v5", 5, 0x90, B("\x00\x01\x00"), PROTO},
	{"SUBACK v3 code 3", 4, 0x90, B("\x00\x01\x00\x03"), PROTO},
	{"SUBACK v3 code 0x87", 4, 0x90, B("\x00\x01\x87"), PROTO},
	{"SUBACK v5 code 0x11", 5, 0x90, B("\x00\x01\x00\x00\x11"), PROTO},
	{"SUBACK packet id 0", 5, 0x90, B("\x00\x00\x00\x00"), PROTO},
	{"UNSUBACK v3 with payload", 4, 0xB0, B("\x00\x01\x00"), MAL},
	{"UNSUBACK 3.1 short", 3, 0xB0, B("\x00"), MAL},
	{"UNSUBACK v5 no codes", 5, 0xB0, B("\x00\x01\x00"), PROTO},
	{"UNSUBACK v5 code 0x01", 5, 0xB0, B("\x00\x01\x00\x01"), PROTO},
	{"UNSUBACK v5 no property length", 5, 0xB0, B("\x00\x01"), MAL},

	/* DISCONNECT, AUTH */
	{"DISCONNECT v5 reason 0x18", 5, 0xE0, B("\x18"), PROTO},
	{"DISCONNECT v5 reason 0x01", 5, 0xE0, B("\x01\x00"), PROTO},
	{"DISCONNECT v5 receive maximum", 5, 0xE0, B("\x00\x03\x21\x00\x01"), MAL},
	{"DISCONNECT v5 trailing", 5, 0xE0, B("\x00\x00\x00"), MAL},
	{"DISCONNECT v5 duplicate session expiry", 5, 0xE0,
	 B("\x00\x0a\x11\x00\x00\x00\x01\x11\x00\x00\x00\x01"), PROTO},
	{"AUTH v5 reason 0x04", 5, 0xF0, B("\x04"), PROTO},
	{"AUTH v5 auth data without method", 5, 0xF0, B("\x18\x04\x16\x00\x01" "x"), PROTO},
	{"AUTH v5 trailing", 5, 0xF0, B("\x18\x00\x00"), MAL},
};
/* clang-format on */

static void test_bad_packets(void **state)
{
	(void)state;
	for (size_t i = 0; i < NELEM(bad_packets); i++) {
		const struct bad *b = &bad_packets[i];
		uint8_t buf[600];
		size_t n = 0;
		buf[n++] = b->first;
		n += mqtt_varint_write(buf + n, (uint32_t)b->len);
		memcpy(buf + n, b->body, b->len);
		n += b->len;
		/* The frame is always fine: the fault is inside. */
		uint32_t plen;
		assert_int_equal(mqtt_frame(buf, n, 0, &plen), MQTT_FRAME_OK);
		assert_int_equal(plen, n);
		mqtt_packet p;
		int rc = mqtt_decode(buf, n, b->version, &p);
		if (rc != b->want)
			fail_msg("\"%s\": got %#x (%s), want %#x (%s)", b->name, rc,
			         mqtt_rc_name((uint8_t)rc), b->want,
			         mqtt_rc_name((uint8_t)b->want));
	}
}

/* Things that look odd but are valid must still decode. */
static void test_good_edge_cases(void **state)
{
	(void)state;
	/* clang-format off */
	static const struct bad good[] = {
		{"3.1 CONNECT, flags ignored", 3, 0x12,
		 B("\x00\x06" "MQIsdp" "\x03\x03\x00\x3c\x00\x00"), 0},
		{"3.1.1 empty client id", 4, 0x10, B(C4("\x02") "\x00\x00"), 0},
		{"v5 password without user", 5, 0x10, B(C5("\x42") "\x00\x00\x01" "c" "\x00\x01" "p"), 0},
		{"3.1.1 user without password", 4, 0x10, B(C4("\x82") "\x00\x01" "c" "\x00\x01" "u"), 0},
		{"$ topic", 4, 0x30, B("\x00\x06" "$SYS/x"), 0},
		{"topic / only", 4, 0x30, B("\x00\x01" "/"), 0},
		{"topic with BOM", 4, 0x30, B("\x00\x03\xef\xbb\xbf"), 0},
		{"topic U+10FFFF", 4, 0x30, B("\x00\x04\xf4\x8f\xbf\xbf"), 0},
		{"topic U+FFFF", 4, 0x30, B("\x00\x03\xef\xbf\xbf"), 0},
		{"QoS 2 with DUP", 4, 0x3D, B("\x00\x01" "a" "\x00\x09" "data"), 0},
		{"binary payload", 4, 0x30, B("\x00\x01" "a" "\x00\xff\xfe"), 0},
		{"v5 topic alias with empty topic", 5, 0x30, B("\x00\x00\x03\x23\x00\x01"), 0},
		{"SUBSCRIBE all v5 options", 5, 0x82, B("\x00\x01\x00\x00\x01" "a" "\x2e"), 0},
		{"3.1 SUBSCRIBE with DUP", 3, 0x8A, B("\x00\x01\x00\x01" "a" "\x00"), 0},
		{"v5 DISCONNECT with will", 5, 0xE0, B("\x04"), 0},
		{"v5 DISCONNECT bad auth method", 5, 0xE0, B("\x8c"), 0},
		{"v5 DISCONNECT reason + empty props", 5, 0xE0, B("\x98\x00"), 0},
		{"v5 AUTH reason only", 5, 0xF0, B("\x19"), 0},
		{"v5 CONNACK session present", 5, 0x20, B("\x01\x00\x00"), 0},
		{"v3 SUBACK failure", 4, 0x90, B("\x00\x01\x80\x00\x01\x02"), 0},
		{"v5 user property empty strings", 5, 0xA2, B("\x00\x01\x05\x26\x00\x00\x00\x00\x00\x01" "a"),
		 0},
	};
	/* clang-format on */
	for (size_t i = 0; i < NELEM(good); i++) {
		uint8_t buf[300];
		size_t n = 0;
		buf[n++] = good[i].first;
		n += mqtt_varint_write(buf + n, (uint32_t)good[i].len);
		memcpy(buf + n, good[i].body, good[i].len);
		n += good[i].len;
		mqtt_packet p;
		int rc = mqtt_decode(buf, n, good[i].version, &p);
		if (rc != 0)
			fail_msg("\"%s\": got %#x (%s)", good[i].name, rc,
			         mqtt_rc_name((uint8_t)rc));
		assert_int_equal(p.type, good[i].first >> 4);
	}
}

static void test_decode_header_mismatch(void **state)
{
	(void)state;
	mqtt_packet p;
	static const uint8_t pkt[] = {0x40, 0x02, 0x00, 0x01, 0x00};
	/* Remaining length says 2 but 1 or 3 bytes follow. */
	assert_int_equal(mqtt_decode(pkt, 3, MQTT_V311, &p), MQTT_RC_MALFORMED_PACKET);
	assert_int_equal(mqtt_decode(pkt, 5, MQTT_V311, &p), MQTT_RC_MALFORMED_PACKET);
	assert_int_equal(mqtt_decode(pkt, 4, MQTT_V311, &p), 0);
	assert_int_equal(mqtt_decode(pkt, 1, MQTT_V311, &p), MQTT_RC_MALFORMED_PACKET);
	assert_int_equal(mqtt_decode(pkt, 0, MQTT_V311, &p), MQTT_RC_MALFORMED_PACKET);
	static const uint8_t nonmin[] = {0x40, 0x82, 0x00, 0x00, 0x01};
	assert_int_equal(mqtt_decode(nonmin, sizeof(nonmin), MQTT_V311, &p),
	                 MQTT_RC_MALFORMED_PACKET);
	static const uint8_t five[] = {0xC0, 0x80, 0x80, 0x80, 0x80, 0x00};
	assert_int_equal(mqtt_decode(five, sizeof(five), MQTT_V311, &p), MQTT_RC_MALFORMED_PACKET);
	/* A PUBLISH would swallow any length as payload: only the header decides. */
	static const uint8_t pub[] = {0x30, 0x03, 0x00, 0x01, 'a', 'b', 'c'};
	assert_int_equal(mqtt_decode(pub, 5, MQTT_V311, &p), 0);
	assert_int_equal(p.u.publish.payload.len, 0);
	assert_int_equal(mqtt_decode(pub, 7, MQTT_V311, &p), MQTT_RC_MALFORMED_PACKET);
	assert_int_equal(mqtt_decode(pub, 4, MQTT_V311, &p), MQTT_RC_MALFORMED_PACKET);
	static const uint8_t pub2[] = {0x30, 0x05, 0x00, 0x01, 'a'};
	assert_int_equal(mqtt_decode(pub2, 5, MQTT_V311, &p), MQTT_RC_MALFORMED_PACKET);
	/* A non-CONNECT packet needs a known version. */
	assert_int_equal(mqtt_decode(pkt, 4, 0, &p), MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION);
	assert_int_equal(mqtt_decode(pkt, 4, 6, &p), MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION);
}

/* ------------------------------------------------------------ framing and varints */

static void test_frame(void **state)
{
	(void)state;
	uint8_t buf[300] = {0};
	uint32_t len = 99;

	assert_int_equal(mqtt_frame(buf, 0, 0, &len), MQTT_FRAME_INCOMPLETE);
	assert_int_equal(len, 0);
	buf[0] = 0x30;
	assert_int_equal(mqtt_frame(buf, 1, 0, &len), MQTT_FRAME_INCOMPLETE);
	assert_int_equal(len, 0);

	/* One-byte length: pkt_len known as soon as the header is. */
	buf[1] = 0x7F;
	len = 99;
	assert_int_equal(mqtt_frame(buf, 2, 0, &len), MQTT_FRAME_INCOMPLETE);
	assert_int_equal(len, 129);
	assert_int_equal(mqtt_frame(buf, 128, 0, &len), MQTT_FRAME_INCOMPLETE);
	assert_int_equal(mqtt_frame(buf, 129, 0, &len), MQTT_FRAME_OK);
	assert_int_equal(len, 129);
	assert_int_equal(mqtt_frame(buf, 200, 0, &len), MQTT_FRAME_OK);
	assert_int_equal(len, 129);
	/* Remaining length 0. */
	static const uint8_t ping[] = {0xC0, 0x00, 0xC0};
	assert_int_equal(mqtt_frame(ping, 3, 0, &len), MQTT_FRAME_OK);
	assert_int_equal(len, 2);

	/* Two, three, four bytes; an unfinished length gives pkt_len 0. */
	static const uint8_t two[] = {0x30, 0x80, 0x01};
	len = 99;
	assert_int_equal(mqtt_frame(two, 2, 0, &len), MQTT_FRAME_INCOMPLETE);
	assert_int_equal(len, 0);
	assert_int_equal(mqtt_frame(two, 3, 0, &len), MQTT_FRAME_INCOMPLETE);
	assert_int_equal(len, 3 + 128);
	static const uint8_t three[] = {0x30, 0xFF, 0xFF, 0x7F};
	assert_int_equal(mqtt_frame(three, 4, 0, &len), MQTT_FRAME_INCOMPLETE);
	assert_int_equal(len, 4 + 2097151);
	static const uint8_t four[] = {0x30, 0xFF, 0xFF, 0xFF, 0x7F};
	assert_int_equal(mqtt_frame(four, 4, 0, &len), MQTT_FRAME_INCOMPLETE);
	assert_int_equal(len, 0);
	assert_int_equal(mqtt_frame(four, 5, 0, &len), MQTT_FRAME_INCOMPLETE);
	assert_int_equal(len, 5 + MQTT_MAX_REMAINING_LENGTH);
	static const uint8_t four_min[] = {0x30, 0x80, 0x80, 0x80, 0x01};
	assert_int_equal(mqtt_frame(four_min, 5, 0, &len), MQTT_FRAME_INCOMPLETE);
	assert_int_equal(len, 5 + 2097152);

	/* A fifth length byte, and non-minimal encodings, are malformed. */
	static const uint8_t five[] = {0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01};
	assert_int_equal(mqtt_frame(five, 6, 0, &len), MQTT_RC_MALFORMED_PACKET);
	assert_int_equal(mqtt_frame(five, 5, 0, &len), MQTT_RC_MALFORMED_PACKET);
	static const uint8_t five0[] = {0x30, 0x80, 0x80, 0x80, 0x80};
	assert_int_equal(mqtt_frame(five0, 5, 0, &len), MQTT_RC_MALFORMED_PACKET);
	static const uint8_t nonmin[] = {0x30, 0x80, 0x00};
	assert_int_equal(mqtt_frame(nonmin, 3, 0, &len), MQTT_RC_MALFORMED_PACKET);
	static const uint8_t nonmin3[] = {0x30, 0x81, 0x80, 0x00};
	assert_int_equal(mqtt_frame(nonmin3, 4, 0, &len), MQTT_RC_MALFORMED_PACKET);

	/* max_size counts the whole packet; too large is reported from the header alone. */
	buf[0] = 0x30;
	buf[1] = 98;
	assert_int_equal(mqtt_frame(buf, 2, 100, &len), MQTT_FRAME_INCOMPLETE);
	assert_int_equal(len, 100);
	assert_int_equal(mqtt_frame(buf, 100, 100, &len), MQTT_FRAME_OK);
	buf[1] = 99;
	assert_int_equal(mqtt_frame(buf, 2, 100, &len), MQTT_RC_PACKET_TOO_LARGE);
	assert_int_equal(len, 101);
	assert_int_equal(mqtt_frame(buf, 101, 100, &len), MQTT_RC_PACKET_TOO_LARGE);
	/* Even an unfinished length can already be too large. */
	assert_int_equal(mqtt_frame(two, 2, 100, &len), MQTT_RC_PACKET_TOO_LARGE);
	assert_int_equal(mqtt_frame(two, 2, 131, &len), MQTT_FRAME_INCOMPLETE);
	assert_int_equal(mqtt_frame(two, 3, 130, &len), MQTT_RC_PACKET_TOO_LARGE);
	assert_int_equal(mqtt_frame(two, 3, 131, &len), MQTT_FRAME_INCOMPLETE);
	assert_int_equal(mqtt_frame(four, 5, 1u << 20, &len), MQTT_RC_PACKET_TOO_LARGE);
	assert_int_equal(mqtt_frame(four, 3, 1u << 20, &len), MQTT_FRAME_INCOMPLETE);
	assert_int_equal(mqtt_frame(four, 4, 1u << 20, &len), MQTT_RC_PACKET_TOO_LARGE);
	/* 0 means the protocol maximum, which the largest packet fits. */
	assert_int_equal(mqtt_frame(four, 5, 0, &len), MQTT_FRAME_INCOMPLETE);
	assert_int_equal(mqtt_frame(four, 5, 5 + MQTT_MAX_REMAINING_LENGTH, &len),
	                 MQTT_FRAME_INCOMPLETE);
	assert_int_equal(mqtt_frame(four, 5, 4 + MQTT_MAX_REMAINING_LENGTH, &len),
	                 MQTT_RC_PACKET_TOO_LARGE);
}

static void test_varint(void **state)
{
	(void)state;
	static const struct {
		uint32_t v;
		size_t n;
		uint8_t b[4];
	} t[] = {
	    {0, 1, {0x00}},
	    {1, 1, {0x01}},
	    {127, 1, {0x7F}},
	    {128, 2, {0x80, 0x01}},
	    {321, 2, {0xC1, 0x02}},
	    {16383, 2, {0xFF, 0x7F}},
	    {16384, 3, {0x80, 0x80, 0x01}},
	    {2097151, 3, {0xFF, 0xFF, 0x7F}},
	    {2097152, 4, {0x80, 0x80, 0x80, 0x01}},
	    {268435455, 4, {0xFF, 0xFF, 0xFF, 0x7F}},
	};
	for (size_t i = 0; i < NELEM(t); i++) {
		uint8_t out[8] = {0};
		assert_int_equal(mqtt_varint_size(t[i].v), t[i].n);
		assert_int_equal(mqtt_varint_write(out, t[i].v), t[i].n);
		assert_memory_equal(out, t[i].b, t[i].n);
		assert_int_equal(out[t[i].n], 0);
	}
}

/* ------------------------------------------------------------ names */

static void test_names(void **state)
{
	(void)state;
	assert_string_equal(mqtt_rc_name(0x00), "Success");
	assert_string_equal(mqtt_rc_name(0x81), "Malformed Packet");
	assert_string_equal(mqtt_rc_name(0x82), "Protocol Error");
	assert_string_equal(mqtt_rc_name(0x95), "Packet too large");
	assert_string_equal(mqtt_rc_name(0xA2), "Wildcard Subscriptions not supported");
	for (int rc = 0; rc < 256; rc++)
		assert_non_null(mqtt_rc_name((uint8_t)rc));
	assert_string_equal(mqtt_rc_name(0x03), "Unknown reason code");
	assert_string_equal(mqtt_rc_name(0xFF), "Unknown reason code");

	static const char *const names[] = {"?",         "CONNECT",  "CONNACK",     "PUBLISH",
	                                    "PUBACK",    "PUBREC",   "PUBREL",      "PUBCOMP",
	                                    "SUBSCRIBE", "SUBACK",   "UNSUBSCRIBE", "UNSUBACK",
	                                    "PINGREQ",   "PINGRESP", "DISCONNECT",  "AUTH"};
	for (int t = 0; t < 16; t++)
		assert_string_equal(mqtt_ptype_name((uint8_t)t), names[t]);
	assert_string_equal(mqtt_ptype_name(16), "?");
	assert_string_equal(mqtt_ptype_name(255), "?");

	assert_int_equal(mqtt_rc_to_v3_connack(MQTT_RC_SUCCESS), MQTT_V3_ACCEPTED);
	assert_int_equal(mqtt_rc_to_v3_connack(MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION),
	                 MQTT_V3_REFUSED_PROTOCOL_VERSION);
	assert_int_equal(mqtt_rc_to_v3_connack(MQTT_RC_CLIENT_IDENTIFIER_NOT_VALID),
	                 MQTT_V3_REFUSED_IDENTIFIER_REJECTED);
	assert_int_equal(mqtt_rc_to_v3_connack(MQTT_RC_SERVER_UNAVAILABLE),
	                 MQTT_V3_REFUSED_SERVER_UNAVAILABLE);
	assert_int_equal(mqtt_rc_to_v3_connack(MQTT_RC_SERVER_BUSY),
	                 MQTT_V3_REFUSED_SERVER_UNAVAILABLE);
	assert_int_equal(mqtt_rc_to_v3_connack(MQTT_RC_BAD_USER_NAME_OR_PASSWORD),
	                 MQTT_V3_REFUSED_BAD_USERNAME_PASSWORD);
	assert_int_equal(mqtt_rc_to_v3_connack(MQTT_RC_NOT_AUTHORIZED),
	                 MQTT_V3_REFUSED_NOT_AUTHORIZED);
	assert_int_equal(mqtt_rc_to_v3_connack(MQTT_RC_BANNED), MQTT_V3_REFUSED_NOT_AUTHORIZED);
	assert_int_equal(mqtt_rc_to_v3_connack(MQTT_RC_MALFORMED_PACKET),
	                 MQTT_V3_REFUSED_SERVER_UNAVAILABLE);
	/* Every input maps to a v3 refusal code. */
	for (int rc = 1; rc < 256; rc++) {
		uint8_t v3 = mqtt_rc_to_v3_connack((uint8_t)rc);
		assert_in_range(v3, 1, 5);
	}
}

int main(void)
{
	/* clang-format off */
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rt_connect),
		cmocka_unit_test(test_rt_connack),
		cmocka_unit_test(test_rt_publish),
		cmocka_unit_test(test_rt_acks),
		cmocka_unit_test(test_rt_subscribe),
		cmocka_unit_test(test_rt_unsubscribe),
		cmocka_unit_test(test_rt_suback),
		cmocka_unit_test(test_rt_ping_disconnect_auth),
		cmocka_unit_test(test_bytes_connect),
		cmocka_unit_test(test_bytes_connack),
		cmocka_unit_test(test_bytes_publish),
		cmocka_unit_test(test_bytes_acks),
		cmocka_unit_test(test_bytes_sub_unsub),
		cmocka_unit_test(test_bytes_disconnect_auth_ping),
		cmocka_unit_test(test_user_props),
		cmocka_unit_test(test_props_size),
		cmocka_unit_test(test_props_per_type),
		cmocka_unit_test(test_bad_packets),
		cmocka_unit_test(test_good_edge_cases),
		cmocka_unit_test(test_decode_header_mismatch),
		cmocka_unit_test(test_frame),
		cmocka_unit_test(test_varint),
		cmocka_unit_test(test_names),
	};
	/* clang-format on */
	return cmocka_run_group_tests(tests, NULL, NULL);
}
