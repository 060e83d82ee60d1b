/*
 * fuzz_codec.c - libFuzzer target for the MQTT codec.
 *
 * Design
 * ------
 * The first input byte picks the protocol version the "connection" speaks
 * (3, 4 or 5); the rest is a byte stream that is framed and decoded packet
 * by packet, as the broker does. Crashes and sanitizer reports are the
 * obvious findings; the less obvious ones come from invariants checked with
 * abort():
 *   - every packet the decoder accepts re-encodes to exactly
 *     mqtt_encoded_size() bytes (into a heap buffer of that size, so ASan
 *     sees any overrun), frames as one packet, decodes again, and the second
 *     decode equals the first field by field;
 *   - mqtt_frame agrees with itself about size limits and prefixes;
 *   - mqtt_topic_matches agrees with a naive split-into-levels matcher, and
 *     mqtt_utf8_valid with a naive code-point decoder, on fuzzer data;
 *   - the iterators survive arbitrary bytes.
 * Allocation and globals are fine here; the codec itself stays pure.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mqtt/mqtt.h"

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "fuzz_codec: invariant failed at line %d: %s\n", __LINE__, \
			        #cond);                                                            \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

/* ---------------------------------------------------------------- reference models */

/* Code point by code point, the slow and obvious way. */
static bool ref_utf8(const uint8_t *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		uint8_t b = s[i];
		uint32_t cp;
		size_t len;
		if (b < 0x80) {
			cp = b;
			len = 1;
		} else if ((b & 0xE0) == 0xC0) {
			cp = b & 0x1F;
			len = 2;
		} else if ((b & 0xF0) == 0xE0) {
			cp = b & 0x0F;
			len = 3;
		} else if ((b & 0xF8) == 0xF0) {
			cp = b & 0x07;
			len = 4;
		} else {
			return false;
		}
		if (n - i < len)
			return false;
		for (size_t k = 1; k < len; k++) {
			if ((s[i + k] & 0xC0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + k] & 0x3F);
		}
		static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
		if (cp < min_cp[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF) || cp == 0)
			return false;
		i += len;
	}
	return true;
}

#define MAX_LEVELS 64

static int split_levels(mqtt_str s, mqtt_str *out)
{
	int n = 0;
	uint32_t start = 0;
	for (uint32_t i = 0; i <= s.len; i++) {
		if (i == s.len || s.p[i] == '/') {
			if (n == MAX_LEVELS)
				return -1;
			out[n].p = s.p + start;
			out[n].len = i - start;
			n++;
			start = i + 1;
		}
	}
	return n;
}

/* Returns -1 when the inputs are too deep to model. */
static int ref_match(mqtt_str filter, mqtt_str topic)
{
	mqtt_str f[MAX_LEVELS], t[MAX_LEVELS];
	int nf = split_levels(filter, f), nt = split_levels(topic, t);
	if (nf < 0 || nt < 0)
		return -1;
	if (topic.len && topic.p[0] == '$' &&
	    (mqtt_str_eq_c(f[0], "+") || mqtt_str_eq_c(f[0], "#")))
		return 0;
	for (int i = 0; i < nf; i++) {
		if (mqtt_str_eq_c(f[i], "#"))
			return 1;
		if (i >= nt)
			return 0;
		if (!mqtt_str_eq_c(f[i], "+") && !mqtt_str_eq(f[i], t[i]))
			return 0;
	}
	return nf == nt;
}

/* ---------------------------------------------------------------- topic checks */

/* The last valid topic name seen, to match later filters against. */
static uint8_t last_topic[65536];
static uint32_t last_topic_len;

static void check_match(mqtt_str filter, mqtt_str topic)
{
	int want = ref_match(filter, topic);
	bool got = mqtt_topic_matches(filter, topic);
	if (want >= 0)
		CHECK(got == (want == 1));
}

static void check_topic_name(mqtt_str topic)
{
	if (topic.len == 0)
		return; /* v5 alias-only PUBLISH */
	CHECK(mqtt_topic_name_valid(topic));
	CHECK(!mqtt_topic_is_wildcard(topic));
	/* A name is also a filter, matching itself. */
	CHECK(mqtt_topic_filter_valid(topic));
	CHECK(mqtt_topic_matches(topic, topic));
	CHECK(mqtt_topic_levels(topic) >= 1);
	static const char *const filters[] = {"#", "+", "+/#", "+/+", "a/#", "$SYS/#", "/+"};
	for (size_t i = 0; i < sizeof(filters) / sizeof(filters[0]); i++)
		check_match(mqtt_str_c(filters[i]), topic);
	memcpy(last_topic, topic.p, topic.len);
	last_topic_len = topic.len;
}

static void check_filter(mqtt_str full)
{
	mqtt_str group, filter = full;
	int shared = mqtt_shared_parse(full, &group, &filter);
	CHECK(shared >= -1 && shared <= 1);
	if (shared == 1) {
		CHECK(group.len > 0 && filter.len > 0);
		CHECK(filter.p + filter.len == full.p + full.len);
	}
	bool valid = mqtt_topic_filter_valid(filter);
	bool wild = mqtt_topic_is_wildcard(filter);
	(void)mqtt_topic_levels(filter);
	if (!valid)
		return;
	if (!wild) {
		CHECK(mqtt_topic_name_valid(filter));
		CHECK(mqtt_topic_matches(filter, filter));
	}
	if (last_topic_len)
		check_match(filter, (mqtt_str){last_topic, last_topic_len});
}

/* ---------------------------------------------------------------- packet comparison */

static bool str_same(mqtt_str a, mqtt_str b)
{
	return mqtt_str_eq(a, b);
}

static void same_props(const mqtt_props *a, const mqtt_props *b)
{
	CHECK(a->present == b->present);
	CHECK(a->payload_format == b->payload_format);
	CHECK(a->request_problem_info == b->request_problem_info);
	CHECK(a->request_response_info == b->request_response_info);
	CHECK(a->maximum_qos == b->maximum_qos);
	CHECK(a->retain_available == b->retain_available);
	CHECK(a->wildcard_sub_available == b->wildcard_sub_available);
	CHECK(a->sub_id_available == b->sub_id_available);
	CHECK(a->shared_sub_available == b->shared_sub_available);
	CHECK(a->server_keepalive == b->server_keepalive);
	CHECK(a->receive_maximum == b->receive_maximum);
	CHECK(a->topic_alias_maximum == b->topic_alias_maximum);
	CHECK(a->topic_alias == b->topic_alias);
	CHECK(a->message_expiry == b->message_expiry);
	/* Only the first of several subscription identifiers survives re-encoding. */
	CHECK(a->subscription_id == b->subscription_id);
	CHECK((a->n_sub_ids > 0) == (b->n_sub_ids > 0));
	CHECK(a->session_expiry == b->session_expiry);
	CHECK(a->will_delay == b->will_delay);
	CHECK(a->maximum_packet_size == b->maximum_packet_size);
	CHECK(str_same(a->content_type, b->content_type));
	CHECK(str_same(a->response_topic, b->response_topic));
	CHECK(str_same(a->correlation_data, b->correlation_data));
	CHECK(str_same(a->assigned_client_id, b->assigned_client_id));
	CHECK(str_same(a->auth_method, b->auth_method));
	CHECK(str_same(a->auth_data, b->auth_data));
	CHECK(str_same(a->response_info, b->response_info));
	CHECK(str_same(a->server_reference, b->server_reference));
	CHECK(str_same(a->reason_string, b->reason_string));

	/* User properties: same list; the re-encoded run is never mixed. */
	CHECK(a->n_user_props == b->n_user_props);
	CHECK(!b->user_props_mixed);
	if (!a->user_props_mixed)
		CHECK(str_same(a->user_props, b->user_props));
	mqtt_user_prop_iter ia, ib;
	mqtt_str ka, va, kb, vb;
	uint32_t n = 0;
	mqtt_user_prop_iter_init(&ia, a->user_props);
	mqtt_user_prop_iter_init(&ib, b->user_props);
	while (mqtt_user_prop_next(&ia, &ka, &va)) {
		CHECK(mqtt_user_prop_next(&ib, &kb, &vb));
		CHECK(str_same(ka, kb) && str_same(va, vb));
		CHECK(mqtt_utf8_valid(ka.p, ka.len) && mqtt_utf8_valid(va.p, va.len));
		n++;
	}
	CHECK(!mqtt_user_prop_next(&ib, &kb, &vb));
	CHECK(n == a->n_user_props);
}

static void same_packet(const mqtt_packet *a, const mqtt_packet *b)
{
	CHECK(a->type == b->type);
	switch (a->type) {
	case MQTT_CONNECT: {
		const mqtt_connect *x = &a->u.connect, *y = &b->u.connect;
		CHECK(x->version == y->version);
		CHECK(str_same(x->protocol_name, y->protocol_name));
		CHECK(x->clean_start == y->clean_start);
		CHECK(x->will == y->will && x->will_qos == y->will_qos);
		CHECK(x->will_retain == y->will_retain);
		CHECK(x->has_username == y->has_username && x->has_password == y->has_password);
		CHECK(x->keepalive == y->keepalive);
		CHECK(str_same(x->client_id, y->client_id));
		CHECK(str_same(x->will_topic, y->will_topic));
		CHECK(str_same(x->will_payload, y->will_payload));
		CHECK(str_same(x->username, y->username));
		CHECK(str_same(x->password, y->password));
		same_props(&x->props, &y->props);
		same_props(&x->will_props, &y->will_props);
		break;
	}
	case MQTT_CONNACK:
		CHECK(a->u.connack.session_present == b->u.connack.session_present);
		CHECK(a->u.connack.rc == b->u.connack.rc);
		same_props(&a->u.connack.props, &b->u.connack.props);
		break;
	case MQTT_PUBLISH: {
		const mqtt_publish *x = &a->u.publish, *y = &b->u.publish;
		CHECK(a->flags == b->flags);
		CHECK(x->qos == y->qos && x->dup == y->dup && x->retain == y->retain);
		CHECK(x->packet_id == y->packet_id);
		CHECK(str_same(x->topic, y->topic));
		CHECK(str_same(x->payload, y->payload));
		same_props(&x->props, &y->props);
		break;
	}
	case MQTT_PUBACK:
	case MQTT_PUBREC:
	case MQTT_PUBREL:
	case MQTT_PUBCOMP:
		CHECK(a->u.ack.packet_id == b->u.ack.packet_id);
		CHECK(a->u.ack.rc == b->u.ack.rc);
		same_props(&a->u.ack.props, &b->u.ack.props);
		break;
	case MQTT_SUBSCRIBE:
	case MQTT_UNSUBSCRIBE:
		CHECK(a->u.subscribe.packet_id == b->u.subscribe.packet_id);
		CHECK(a->u.subscribe.count == b->u.subscribe.count);
		CHECK(str_same(a->u.subscribe.entries, b->u.subscribe.entries));
		same_props(&a->u.subscribe.props, &b->u.subscribe.props);
		break;
	case MQTT_SUBACK:
	case MQTT_UNSUBACK:
		CHECK(a->u.suback.packet_id == b->u.suback.packet_id);
		CHECK(a->u.suback.count == b->u.suback.count);
		CHECK(a->u.suback.count == 0 ||
		      memcmp(a->u.suback.rcs, b->u.suback.rcs, a->u.suback.count) == 0);
		same_props(&a->u.suback.props, &b->u.suback.props);
		break;
	case MQTT_DISCONNECT:
	case MQTT_AUTH:
		CHECK(a->u.disconnect.rc == b->u.disconnect.rc);
		same_props(&a->u.disconnect.props, &b->u.disconnect.props);
		break;
	default:
		break;
	}
}

/* ---------------------------------------------------------------- per packet */

static void inspect(const mqtt_packet *p)
{
	switch (p->type) {
	case MQTT_PUBLISH:
		check_topic_name(p->u.publish.topic);
		break;
	case MQTT_CONNECT:
		if (p->u.connect.will)
			check_topic_name(p->u.connect.will_topic);
		break;
	case MQTT_SUBSCRIBE:
	case MQTT_UNSUBSCRIBE: {
		bool sub = p->type == MQTT_SUBSCRIBE;
		mqtt_sub_iter it;
		mqtt_str f;
		uint8_t o;
		uint32_t n = 0;
		mqtt_sub_iter_init(&it, &p->u.subscribe, sub);
		while (mqtt_sub_next(&it, &f, &o)) {
			CHECK(f.len > 0 && mqtt_utf8_valid(f.p, f.len));
			CHECK(sub || o == 0);
			check_filter(f);
			n++;
		}
		CHECK(n == p->u.subscribe.count);
		break;
	}
	default:
		break;
	}
	CHECK(mqtt_ptype_name(p->type)[0] != '?');
}

static void reencode(const mqtt_packet *p, uint8_t version)
{
	size_t size = mqtt_encoded_size(p, version);
	uint8_t *buf = malloc(size);
	CHECK(buf != NULL);
	size_t n = mqtt_encode(p, version, buf);
	CHECK(n == size);

	uint32_t len = 0;
	CHECK(mqtt_frame(buf, n, 0, &len) == MQTT_FRAME_OK);
	CHECK(len == n);
	mqtt_packet q;
	memset(&q, 0xA5, sizeof(q));
	int rc = mqtt_decode(buf, n, version, &q);
	if (rc != MQTT_RC_SUCCESS) {
		fprintf(stderr, "fuzz_codec: re-encoded %s (v%u) does not decode: %s\n",
		        mqtt_ptype_name(p->type), version, mqtt_rc_name((uint8_t)rc));
		abort();
	}
	same_packet(p, &q);

	/* Encoding what was decoded from our own encoding is a fixed point. */
	CHECK(mqtt_encoded_size(&q, version) == n);
	uint8_t *again = malloc(n);
	CHECK(again != NULL);
	CHECK(mqtt_encode(&q, version, again) == n);
	CHECK(memcmp(buf, again, n) == 0);
	free(again);
	free(buf);
}

/*
 * The broker forwards a PUBLISH with the subscription identifiers of the
 * matching subscriptions as a list (sub_ids), which a decoded packet never
 * has; exercise that encoder path too.
 */
static void fanout(const mqtt_packet *p)
{
	mqtt_packet f = *p;
	const uint32_t base = p->u.publish.props.subscription_id;
	const uint32_t ids[3] = {base ? base : 1, (base % MQTT_MAX_REMAINING_LENGTH) + 1,
	                         MQTT_MAX_REMAINING_LENGTH};
	f.u.publish.props.sub_ids = ids;
	f.u.publish.props.n_sub_ids = 3;
	size_t size = mqtt_encoded_size(&f, MQTT_V5);
	uint8_t *buf = malloc(size);
	CHECK(buf != NULL);
	CHECK(mqtt_encode(&f, MQTT_V5, buf) == size);
	mqtt_packet q;
	CHECK(mqtt_decode(buf, size, MQTT_V5, &q) == MQTT_RC_SUCCESS);
	CHECK(q.u.publish.props.subscription_id == ids[0]);
	CHECK(q.u.publish.props.n_sub_ids == 3);
	CHECK(q.u.publish.props.present == (p->u.publish.props.present | MQTT_PF_SUBSCRIPTION_ID));
	/* Everything else is as before. */
	q.u.publish.props.present = p->u.publish.props.present;
	q.u.publish.props.subscription_id = p->u.publish.props.subscription_id;
	q.u.publish.props.n_sub_ids = p->u.publish.props.n_sub_ids;
	same_packet(p, &q);
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t version = (uint8_t)(MQTT_V31 + data[0] % 3);
	data++;
	size--;

	CHECK(mqtt_utf8_valid(data, size) == ref_utf8(data, size));
	last_topic_len = 0;

	/* Iterators must stop cleanly on bytes the decoder never saw. */
	mqtt_user_prop_iter ui;
	mqtt_str k, v;
	mqtt_user_prop_iter_init(&ui, (mqtt_str){data, (uint32_t)size});
	while (mqtt_user_prop_next(&ui, &k, &v))
		CHECK(k.p >= data && v.p + v.len <= data + size);
	mqtt_subscribe fake = {.entries = {data, (uint32_t)size}};
	mqtt_sub_iter si;
	mqtt_str f;
	uint8_t o;
	mqtt_sub_iter_init(&si, &fake, size & 1);
	while (mqtt_sub_next(&si, &f, &o))
		CHECK(f.p >= data && f.p + f.len <= data + size);

	while (size > 0) {
		uint32_t len = 0;
		int fr = mqtt_frame(data, size, 0, &len);
		if (fr != MQTT_FRAME_OK) {
			CHECK(fr == MQTT_FRAME_INCOMPLETE || fr == MQTT_RC_MALFORMED_PACKET);
			CHECK(fr != MQTT_FRAME_INCOMPLETE || len == 0 || len > size);
			break;
		}
		CHECK(len >= 2 && len <= size);
		uint32_t l2;
		CHECK(mqtt_frame(data, size, len, &l2) == MQTT_FRAME_OK && l2 == len);
		CHECK(mqtt_frame(data, size, len - 1, &l2) == MQTT_RC_PACKET_TOO_LARGE);
		CHECK(mqtt_frame(data, len - 1, 0, &l2) == MQTT_FRAME_INCOMPLETE);

		mqtt_packet p;
		int rc = mqtt_decode(data, len, version, &p);
		if (rc == MQTT_RC_SUCCESS) {
			uint8_t v2 = p.type == MQTT_CONNECT ? p.u.connect.version : version;
			inspect(&p);
			reencode(&p, v2);
			if (p.type == MQTT_PUBLISH && v2 == MQTT_V5)
				fanout(&p);
			/* A CONNECT sets the version for what follows, as in the broker. */
			version = v2;
		} else {
			CHECK(rc >= 0x80);
			CHECK(strcmp(mqtt_rc_name((uint8_t)rc), "Unknown reason code") != 0);
		}
		data += len;
		size -= len;
	}
	return 0;
}
