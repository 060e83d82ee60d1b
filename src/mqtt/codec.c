/*
 * codec.c - the MQTT wire format: framing, decoding and encoding of every
 * packet type for MQTT 3.1, 3.1.1 and 5.0.
 *
 * Design
 * ------
 * The decoder is one forward pass over the packet with a bounds-checked
 * cursor (struct rd). Every field is validated as it is read and strings
 * become slices of the input, so nothing is copied or allocated and the first
 * problem ends the pass with its reason code. The codes follow the spec where
 * it names one; where it leaves a choice the rule here is:
 *   - cannot be parsed, runs past its length, bad UTF-8, reserved/flag bits,
 *     trailing bytes, a property the packet type may not carry, an unknown
 *     property: MQTT_RC_MALFORMED_PACKET;
 *   - parsed fine but forbidden (duplicate property, out-of-range property
 *     value, packet identifier 0, empty SUBSCRIBE/UNSUBSCRIBE or filter, bad
 *     subscription options, a reason code the packet type does not define):
 *     MQTT_RC_PROTOCOL_ERROR;
 *   - topic name problems (wildcards, empty without a Topic Alias, also in a
 *     Will): MQTT_RC_TOPIC_NAME_INVALID; Topic Alias 0: MQTT_RC_TOPIC_ALIAS_INVALID.
 * v3 has no reason codes on the wire, so for v3 the code only tells the
 * broker why it closes the connection.
 *
 * Properties are described by one table indexed by identifier (wire type,
 * the packets that may carry it, its presence flag, the offset of its field
 * in struct mqtt_props). Decoding, duplicate detection, size computation and
 * encoding are all driven by it, so they cannot disagree about a property.
 *
 * The encoder computes every length first (struct plan) and then writes
 * front to back. mqtt_encoded_size and mqtt_encode share that computation, so
 * the size promised is exactly the size written.
 */
#include <stddef.h>
#include <string.h>

#include "mqtt/mqtt.h"

#define MALFORMED MQTT_RC_MALFORMED_PACKET
#define PROTOCOL  MQTT_RC_PROTOCOL_ERROR

/* ---------------------------------------------------------------- varints */

size_t mqtt_varint_size(uint32_t v)
{
	if (v < 128u)
		return 1;
	if (v < 16384u)
		return 2;
	if (v < 2097152u)
		return 3;
	return 4;
}

size_t mqtt_varint_write(uint8_t *out, uint32_t v)
{
	size_t n = 0;
	do {
		uint8_t b = (uint8_t)(v & 0x7fu);
		v >>= 7;
		if (v)
			b |= 0x80u;
		out[n++] = b;
	} while (v);
	return n;
}

/*
 * Parses a variable byte integer from p[0..avail). Returns its length (1..4),
 * 0 if it is cut off, -1 if malformed: a fifth byte, or a longer encoding than
 * needed (1.5.5 requires the minimum number of bytes, and rejecting the
 * padded forms keeps decode(encode(x)) byte-identical).
 */
static int varint_parse(const uint8_t *p, size_t avail, uint32_t *v)
{
	uint32_t val = 0;
	for (unsigned i = 0; i < 4; i++) {
		if (i >= avail)
			return 0;
		uint8_t b = p[i];
		val |= (uint32_t)(b & 0x7fu) << (7 * i);
		if (!(b & 0x80u)) {
			if (i > 0 && b == 0)
				return -1;
			*v = val;
			return (int)i + 1;
		}
	}
	return -1;
}

/* ---------------------------------------------------------------- framing */

int mqtt_frame(const uint8_t *buf, size_t len, uint32_t max_size, uint32_t *pkt_len)
{
	const uint32_t limit = max_size ? max_size : 1u + 4u + MQTT_MAX_REMAINING_LENGTH;
	uint32_t v = 0;
	unsigned i;

	*pkt_len = 0;
	for (i = 0;; i++) {
		if (1 + (size_t)i >= len)
			return MQTT_FRAME_INCOMPLETE;
		uint8_t b = buf[1 + i];
		v |= (uint32_t)(b & 0x7fu) << (7 * i);
		if (!(b & 0x80u)) {
			if (i > 0 && b == 0)
				return MALFORMED;
			break;
		}
		if (i == 3)
			return MALFORMED;
		/*
		 * More length bytes follow, each adding at least 128^(i+1): if even
		 * the smallest such packet is too big, say so now rather than wait
		 * for a header a slow sender may never finish.
		 */
		uint32_t min_total = 1u + (i + 2u) + v + (1u << (7 * (i + 1)));
		if (min_total > limit)
			return MQTT_RC_PACKET_TOO_LARGE;
	}
	uint32_t total = 1u + (i + 1u) + v;
	*pkt_len = total;
	if (total > limit)
		return MQTT_RC_PACKET_TOO_LARGE;
	return len >= total ? MQTT_FRAME_OK : MQTT_FRAME_INCOMPLETE;
}

/* ---------------------------------------------------------------- reader */

typedef struct rd {
	const uint8_t *p;
	const uint8_t *end;
} rd;

static inline size_t rd_left(const rd *r)
{
	return (size_t)(r->end - r->p);
}

static inline int rd_u8(rd *r, uint8_t *v)
{
	if (r->p >= r->end)
		return MALFORMED;
	*v = *r->p++;
	return 0;
}

static inline int rd_u16(rd *r, uint16_t *v)
{
	if (rd_left(r) < 2)
		return MALFORMED;
	*v = (uint16_t)((r->p[0] << 8) | r->p[1]);
	r->p += 2;
	return 0;
}

static inline int rd_u32(rd *r, uint32_t *v)
{
	if (rd_left(r) < 4)
		return MALFORMED;
	*v = ((uint32_t)r->p[0] << 24) | ((uint32_t)r->p[1] << 16) | ((uint32_t)r->p[2] << 8) |
	     r->p[3];
	r->p += 4;
	return 0;
}

static inline int rd_varint(rd *r, uint32_t *v)
{
	int n = varint_parse(r->p, rd_left(r), v);
	if (n <= 0)
		return MALFORMED;
	r->p += n;
	return 0;
}

/* Two-byte length prefix and that many bytes (Binary Data). */
static inline int rd_bin(rd *r, mqtt_str *s)
{
	uint16_t n;
	if (rd_u16(r, &n) || rd_left(r) < n)
		return MALFORMED;
	s->p = r->p;
	s->len = n;
	r->p += n;
	return 0;
}

/* UTF-8 Encoded String: as rd_bin, and it must pass 1.5.4. */
static inline int rd_utf8(rd *r, mqtt_str *s)
{
	if (rd_bin(r, s))
		return MALFORMED;
	return mqtt_utf8_valid(s->p, s->len) ? 0 : MALFORMED;
}

/* ---------------------------------------------------------------- property table */

enum { PK_NONE, PK_BYTE, PK_U16, PK_U32, PK_VARINT, PK_UTF8, PK_BIN, PK_PAIR };

/* Property contexts are packet types (1..15) plus the Will Properties of a CONNECT. */
#define CTX_WILL 16u
#define C(t)     (1u << MQTT_##t)
#define CW       (1u << CTX_WILL)
#define ACKS     (C(PUBACK) | C(PUBREC) | C(PUBREL) | C(PUBCOMP))
#define OFF(f)   ((uint16_t)offsetof(mqtt_props, f))

struct prop_def {
	uint8_t kind;  /* PK_*; PK_NONE for identifiers the spec does not define */
	uint16_t off;  /* field in mqtt_props */
	uint32_t flag; /* MQTT_PF_* (0 for User Property, which has no flag) */
	uint32_t ctx;  /* contexts allowed to carry it (section 2.2.2.2) */
};

#define PROP_MAX 0x2A

/* clang-format off */
static const struct prop_def prop_defs[PROP_MAX + 1] = {
	[MQTT_PROP_PAYLOAD_FORMAT_INDICATOR] = {PK_BYTE, OFF(payload_format),
	                                        MQTT_PF_PAYLOAD_FORMAT, C(PUBLISH) | CW},
	[MQTT_PROP_MESSAGE_EXPIRY_INTERVAL] = {PK_U32, OFF(message_expiry), MQTT_PF_MESSAGE_EXPIRY,
	                                       C(PUBLISH) | CW},
	[MQTT_PROP_CONTENT_TYPE] = {PK_UTF8, OFF(content_type), MQTT_PF_CONTENT_TYPE,
	                            C(PUBLISH) | CW},
	[MQTT_PROP_RESPONSE_TOPIC] = {PK_UTF8, OFF(response_topic), MQTT_PF_RESPONSE_TOPIC,
	                              C(PUBLISH) | CW},
	[MQTT_PROP_CORRELATION_DATA] = {PK_BIN, OFF(correlation_data), MQTT_PF_CORRELATION_DATA,
	                                C(PUBLISH) | CW},
	[MQTT_PROP_SUBSCRIPTION_IDENTIFIER] = {PK_VARINT, OFF(subscription_id),
	                                       MQTT_PF_SUBSCRIPTION_ID, C(PUBLISH) | C(SUBSCRIBE)},
	[MQTT_PROP_SESSION_EXPIRY_INTERVAL] = {PK_U32, OFF(session_expiry), MQTT_PF_SESSION_EXPIRY,
	                                       C(CONNECT) | C(CONNACK) | C(DISCONNECT)},
	[MQTT_PROP_ASSIGNED_CLIENT_IDENTIFIER] = {PK_UTF8, OFF(assigned_client_id),
	                                          MQTT_PF_ASSIGNED_CLIENT_ID, C(CONNACK)},
	[MQTT_PROP_SERVER_KEEP_ALIVE] = {PK_U16, OFF(server_keepalive), MQTT_PF_SERVER_KEEPALIVE,
	                                 C(CONNACK)},
	[MQTT_PROP_AUTHENTICATION_METHOD] = {PK_UTF8, OFF(auth_method), MQTT_PF_AUTH_METHOD,
	                                     C(CONNECT) | C(CONNACK) | C(AUTH)},
	[MQTT_PROP_AUTHENTICATION_DATA] = {PK_BIN, OFF(auth_data), MQTT_PF_AUTH_DATA,
	                                   C(CONNECT) | C(CONNACK) | C(AUTH)},
	[MQTT_PROP_REQUEST_PROBLEM_INFORMATION] = {PK_BYTE, OFF(request_problem_info),
	                                           MQTT_PF_REQUEST_PROBLEM_INFO, C(CONNECT)},
	[MQTT_PROP_WILL_DELAY_INTERVAL] = {PK_U32, OFF(will_delay), MQTT_PF_WILL_DELAY, CW},
	[MQTT_PROP_REQUEST_RESPONSE_INFORMATION] = {PK_BYTE, OFF(request_response_info),
	                                            MQTT_PF_REQUEST_RESPONSE_INFO, C(CONNECT)},
	[MQTT_PROP_RESPONSE_INFORMATION] = {PK_UTF8, OFF(response_info), MQTT_PF_RESPONSE_INFO,
	                                    C(CONNACK)},
	[MQTT_PROP_SERVER_REFERENCE] = {PK_UTF8, OFF(server_reference), MQTT_PF_SERVER_REFERENCE,
	                                C(CONNACK) | C(DISCONNECT)},
	[MQTT_PROP_REASON_STRING] = {PK_UTF8, OFF(reason_string), MQTT_PF_REASON_STRING,
	                             C(CONNACK) | ACKS | C(SUBACK) | C(UNSUBACK) | C(DISCONNECT) |
	                                 C(AUTH)},
	[MQTT_PROP_RECEIVE_MAXIMUM] = {PK_U16, OFF(receive_maximum), MQTT_PF_RECEIVE_MAXIMUM,
	                               C(CONNECT) | C(CONNACK)},
	[MQTT_PROP_TOPIC_ALIAS_MAXIMUM] = {PK_U16, OFF(topic_alias_maximum),
	                                   MQTT_PF_TOPIC_ALIAS_MAXIMUM, C(CONNECT) | C(CONNACK)},
	[MQTT_PROP_TOPIC_ALIAS] = {PK_U16, OFF(topic_alias), MQTT_PF_TOPIC_ALIAS, C(PUBLISH)},
	[MQTT_PROP_MAXIMUM_QOS] = {PK_BYTE, OFF(maximum_qos), MQTT_PF_MAXIMUM_QOS, C(CONNACK)},
	[MQTT_PROP_RETAIN_AVAILABLE] = {PK_BYTE, OFF(retain_available), MQTT_PF_RETAIN_AVAILABLE,
	                                C(CONNACK)},
	[MQTT_PROP_USER_PROPERTY] = {PK_PAIR, OFF(user_props), 0,
	                             C(CONNECT) | C(CONNACK) | C(PUBLISH) | ACKS | C(SUBSCRIBE) |
	                                 C(SUBACK) | C(UNSUBSCRIBE) | C(UNSUBACK) |
	                                 C(DISCONNECT) | C(AUTH) | CW},
	[MQTT_PROP_MAXIMUM_PACKET_SIZE] = {PK_U32, OFF(maximum_packet_size),
	                                   MQTT_PF_MAXIMUM_PACKET_SIZE, C(CONNECT) | C(CONNACK)},
	[MQTT_PROP_WILDCARD_SUBSCRIPTION_AVAILABLE] = {PK_BYTE, OFF(wildcard_sub_available),
	                                               MQTT_PF_WILDCARD_SUB_AVAILABLE, C(CONNACK)},
	[MQTT_PROP_SUBSCRIPTION_IDENTIFIER_AVAILABLE] = {PK_BYTE, OFF(sub_id_available),
	                                                 MQTT_PF_SUB_ID_AVAILABLE, C(CONNACK)},
	[MQTT_PROP_SHARED_SUBSCRIPTION_AVAILABLE] = {PK_BYTE, OFF(shared_sub_available),
	                                             MQTT_PF_SHARED_SUB_AVAILABLE, C(CONNACK)},
};
/* clang-format on */

/* Property identifier of each MQTT_PF_* bit, in bit order (which is also identifier order). */
/* clang-format off */
static const uint8_t flag_ids[26] = {
	MQTT_PROP_PAYLOAD_FORMAT_INDICATOR,
	MQTT_PROP_MESSAGE_EXPIRY_INTERVAL,
	MQTT_PROP_CONTENT_TYPE,
	MQTT_PROP_RESPONSE_TOPIC,
	MQTT_PROP_CORRELATION_DATA,
	MQTT_PROP_SUBSCRIPTION_IDENTIFIER,
	MQTT_PROP_SESSION_EXPIRY_INTERVAL,
	MQTT_PROP_ASSIGNED_CLIENT_IDENTIFIER,
	MQTT_PROP_SERVER_KEEP_ALIVE,
	MQTT_PROP_AUTHENTICATION_METHOD,
	MQTT_PROP_AUTHENTICATION_DATA,
	MQTT_PROP_REQUEST_PROBLEM_INFORMATION,
	MQTT_PROP_WILL_DELAY_INTERVAL,
	MQTT_PROP_REQUEST_RESPONSE_INFORMATION,
	MQTT_PROP_RESPONSE_INFORMATION,
	MQTT_PROP_SERVER_REFERENCE,
	MQTT_PROP_REASON_STRING,
	MQTT_PROP_RECEIVE_MAXIMUM,
	MQTT_PROP_TOPIC_ALIAS_MAXIMUM,
	MQTT_PROP_TOPIC_ALIAS,
	MQTT_PROP_MAXIMUM_QOS,
	MQTT_PROP_RETAIN_AVAILABLE,
	MQTT_PROP_MAXIMUM_PACKET_SIZE,
	MQTT_PROP_WILDCARD_SUBSCRIPTION_AVAILABLE,
	MQTT_PROP_SUBSCRIPTION_IDENTIFIER_AVAILABLE,
	MQTT_PROP_SHARED_SUBSCRIPTION_AVAILABLE,
};
/* clang-format on */

#define PF_ALL ((1u << 26) - 1u)
/* Flags whose properties sort before User Property (0x26) on the wire. */
#define PF_BEFORE_USER (MQTT_PF_MAXIMUM_PACKET_SIZE - 1u)

_Static_assert(MQTT_PF_SHARED_SUB_AVAILABLE == 1u << 25, "flag_ids must cover every flag");
_Static_assert(MQTT_PF_MAXIMUM_PACKET_SIZE == 1u << 22, "PF_BEFORE_USER split");

static inline uint8_t *field(mqtt_props *p, uint16_t off)
{
	return (uint8_t *)p + off;
}

static inline const uint8_t *cfield(const mqtt_props *p, uint16_t off)
{
	return (const uint8_t *)p + off;
}

/* Reason codes defined per packet type (table 2-6 / the per-packet lists of MQTT 5). */
#define R_CA  C(CONNACK)
#define R_PA  C(PUBACK)
#define R_PR  C(PUBREC)
#define R_PL  C(PUBREL)
#define R_PC  C(PUBCOMP)
#define R_SA  C(SUBACK)
#define R_UA  C(UNSUBACK)
#define R_DI  C(DISCONNECT)
#define R_AU  C(AUTH)
#define R_ERR (R_CA | R_PA | R_PR | R_SA | R_UA | R_DI)

/* clang-format off */
static const uint16_t rc_types[256] = {
	[0x00] = R_CA | R_PA | R_PR | R_PL | R_PC | R_SA | R_UA | R_DI | R_AU,
	[0x01] = R_SA,
	[0x02] = R_SA,
	[0x04] = R_DI,
	[0x10] = R_PA | R_PR,
	[0x11] = R_UA,
	[0x18] = R_AU,
	[0x19] = R_AU,
	[0x80] = R_ERR,
	[0x81] = R_CA | R_DI,
	[0x82] = R_CA | R_DI,
	[0x83] = R_ERR,
	[0x84] = R_CA,
	[0x85] = R_CA,
	[0x86] = R_CA,
	[0x87] = R_ERR,
	[0x88] = R_CA,
	[0x89] = R_CA | R_DI,
	[0x8A] = R_CA,
	[0x8B] = R_DI,
	[0x8C] = R_CA | R_DI,
	[0x8D] = R_DI,
	[0x8E] = R_DI,
	[0x8F] = R_SA | R_UA | R_DI,
	[0x90] = R_CA | R_PA | R_PR | R_DI,
	[0x91] = R_PA | R_PR | R_SA | R_UA,
	[0x92] = R_PL | R_PC,
	[0x93] = R_DI,
	[0x94] = R_DI,
	[0x95] = R_CA | R_DI,
	[0x96] = R_DI,
	[0x97] = R_CA | R_PA | R_PR | R_SA | R_DI,
	[0x98] = R_DI,
	[0x99] = R_CA | R_PA | R_PR | R_DI,
	[0x9A] = R_CA | R_DI,
	[0x9B] = R_CA | R_DI,
	[0x9C] = R_CA | R_DI,
	[0x9D] = R_CA | R_DI,
	[0x9E] = R_SA | R_DI,
	[0x9F] = R_CA | R_DI,
	[0xA0] = R_DI,
	[0xA1] = R_SA | R_DI,
	[0xA2] = R_SA | R_DI,
};
/* clang-format on */

static inline bool rc_ok(uint8_t type, uint8_t rc)
{
	return (rc_types[rc] >> type) & 1u;
}

/* ---------------------------------------------------------------- property decoding */

static int prop_value_check(uint8_t id, uint32_t num, mqtt_str s)
{
	switch (id) {
	case MQTT_PROP_PAYLOAD_FORMAT_INDICATOR:
	case MQTT_PROP_REQUEST_PROBLEM_INFORMATION:
	case MQTT_PROP_REQUEST_RESPONSE_INFORMATION:
	case MQTT_PROP_MAXIMUM_QOS:
	case MQTT_PROP_RETAIN_AVAILABLE:
	case MQTT_PROP_WILDCARD_SUBSCRIPTION_AVAILABLE:
	case MQTT_PROP_SUBSCRIPTION_IDENTIFIER_AVAILABLE:
	case MQTT_PROP_SHARED_SUBSCRIPTION_AVAILABLE:
		return num > 1 ? PROTOCOL : 0;
	case MQTT_PROP_SUBSCRIPTION_IDENTIFIER:
	case MQTT_PROP_RECEIVE_MAXIMUM:
	case MQTT_PROP_MAXIMUM_PACKET_SIZE:
		return num == 0 ? PROTOCOL : 0;
	case MQTT_PROP_TOPIC_ALIAS:
		return num == 0 ? MQTT_RC_TOPIC_ALIAS_INVALID : 0;
	case MQTT_PROP_RESPONSE_TOPIC:
		/* MQTT-3.3.2-14: a Response Topic is a topic name, so no wildcards. */
		return mqtt_topic_name_valid(s) ? 0 : PROTOCOL;
	}
	return 0;
}

/*
 * Reads a property block (length prefix included) for context ctx into pr,
 * which the caller zeroed.
 */
static int props_decode(rd *r, unsigned ctx, mqtt_props *pr)
{
	uint32_t len;
	if (rd_varint(r, &len) || len > rd_left(r))
		return MALFORMED;
	rd q = {r->p, r->p + len};
	r->p += len;

	const uint32_t ctxbit = 1u << ctx;
	const uint8_t *ufirst = NULL, *uend = NULL;
	bool other_after_user = false;

	while (q.p < q.end) {
		const uint8_t *start = q.p;
		/*
		 * Identifiers are variable byte integers, but every defined one
		 * fits in one byte; a continuation bit (>= 0x80) therefore means
		 * an unknown identifier, as does a hole in the table.
		 */
		uint8_t id = *q.p++;
		if (id > PROP_MAX || prop_defs[id].kind == PK_NONE)
			return MALFORMED;
		const struct prop_def *d = &prop_defs[id];
		if (!(d->ctx & ctxbit))
			return MALFORMED;

		uint32_t num = 0;
		mqtt_str s = MQTT_STR_NULL, s2;
		int rc;
		switch (d->kind) {
		case PK_BYTE: {
			uint8_t b = 0;
			rc = rd_u8(&q, &b);
			num = b;
			break;
		}
		case PK_U16: {
			uint16_t w = 0;
			rc = rd_u16(&q, &w);
			num = w;
			break;
		}
		case PK_U32:
			rc = rd_u32(&q, &num);
			break;
		case PK_VARINT:
			rc = rd_varint(&q, &num);
			break;
		case PK_UTF8:
			rc = rd_utf8(&q, &s);
			break;
		case PK_BIN:
			rc = rd_bin(&q, &s);
			break;
		default: /* PK_PAIR */
			rc = rd_utf8(&q, &s);
			if (!rc)
				rc = rd_utf8(&q, &s2);
			break;
		}
		if (rc)
			return rc;

		if (d->kind == PK_PAIR) {
			if (!ufirst)
				ufirst = start;
			else if (other_after_user)
				pr->user_props_mixed = true;
			other_after_user = false;
			uend = q.p;
			pr->n_user_props++;
			continue;
		}
		if (ufirst)
			other_after_user = true;

		rc = prop_value_check(id, num, s);
		if (rc)
			return rc;
		if (pr->present & d->flag) {
			/* Only a (server's) PUBLISH may carry several subscription identifiers. */
			if (id == MQTT_PROP_SUBSCRIPTION_IDENTIFIER && ctx == MQTT_PUBLISH) {
				pr->n_sub_ids++;
				continue;
			}
			return PROTOCOL;
		}
		pr->present |= d->flag;
		uint8_t *f = field(pr, d->off);
		switch (d->kind) {
		case PK_BYTE:
			*f = (uint8_t)num;
			break;
		case PK_U16:
			*(uint16_t *)(void *)f = (uint16_t)num;
			break;
		case PK_U32:
		case PK_VARINT:
			*(uint32_t *)(void *)f = num;
			break;
		default:
			*(mqtt_str *)(void *)f = s;
			break;
		}
		if (id == MQTT_PROP_SUBSCRIPTION_IDENTIFIER)
			pr->n_sub_ids = 1;
	}
	if (ufirst) {
		pr->user_props.p = ufirst;
		pr->user_props.len = (uint32_t)(uend - ufirst);
	}
	if ((pr->present & MQTT_PF_AUTH_DATA) && !(pr->present & MQTT_PF_AUTH_METHOD))
		return PROTOCOL;
	return 0;
}

/* ---------------------------------------------------------------- user properties */

void mqtt_user_prop_iter_init(mqtt_user_prop_iter *it, mqtt_str user_props)
{
	it->rest = user_props;
}

/* Skips one non-user property at the start of s; false if s does not hold a whole one. */
static bool skip_prop(mqtt_str *s)
{
	rd r = {s->p, s->p + s->len};
	uint8_t id = *r.p++;
	if (id > PROP_MAX)
		return false;
	uint8_t b;
	uint16_t w;
	uint32_t u;
	mqtt_str x;
	int rc;
	switch (prop_defs[id].kind) {
	case PK_BYTE:
		rc = rd_u8(&r, &b);
		break;
	case PK_U16:
		rc = rd_u16(&r, &w);
		break;
	case PK_U32:
		rc = rd_u32(&r, &u);
		break;
	case PK_VARINT:
		rc = rd_varint(&r, &u);
		break;
	case PK_UTF8:
	case PK_BIN:
		rc = rd_bin(&r, &x);
		break;
	default:
		return false;
	}
	if (rc)
		return false;
	s->len -= (uint32_t)(r.p - s->p);
	s->p = r.p;
	return true;
}

bool mqtt_user_prop_next(mqtt_user_prop_iter *it, mqtt_str *name, mqtt_str *value)
{
	while (it->rest.len > 0) {
		if (it->rest.p[0] != MQTT_PROP_USER_PROPERTY) {
			if (!skip_prop(&it->rest))
				break;
			continue;
		}
		rd r = {it->rest.p + 1, it->rest.p + it->rest.len};
		if (rd_bin(&r, name) || rd_bin(&r, value))
			break;
		it->rest.len -= (uint32_t)(r.p - it->rest.p);
		it->rest.p = r.p;
		return true;
	}
	/* End, or a run the decoder did not produce: stop rather than misparse. */
	it->rest = MQTT_STR_NULL;
	return false;
}

size_t mqtt_user_prop_size(mqtt_str name, mqtt_str value)
{
	return 5u + name.len + value.len;
}

static inline uint8_t *w_u16(uint8_t *o, uint32_t v)
{
	o[0] = (uint8_t)(v >> 8);
	o[1] = (uint8_t)v;
	return o + 2;
}

static inline uint8_t *w_u32(uint8_t *o, uint32_t v)
{
	o[0] = (uint8_t)(v >> 24);
	o[1] = (uint8_t)(v >> 16);
	o[2] = (uint8_t)(v >> 8);
	o[3] = (uint8_t)v;
	return o + 4;
}

static inline uint8_t *w_str(uint8_t *o, mqtt_str s)
{
	o = w_u16(o, s.len);
	if (s.len)
		memcpy(o, s.p, s.len);
	return o + s.len;
}

size_t mqtt_user_prop_write(uint8_t *out, mqtt_str name, mqtt_str value)
{
	uint8_t *o = out;
	*o++ = MQTT_PROP_USER_PROPERTY;
	o = w_str(o, name);
	o = w_str(o, value);
	return (size_t)(o - out);
}

/* ---------------------------------------------------------------- subscription entries */

void mqtt_sub_iter_init(mqtt_sub_iter *it, const mqtt_subscribe *s, bool is_subscribe)
{
	it->rest = s->entries;
	it->has_options = is_subscribe;
}

bool mqtt_sub_next(mqtt_sub_iter *it, mqtt_str *filter, uint8_t *options)
{
	/* Checked first: an exhausted iterator holds a NULL slice, and NULL + 0 is UB. */
	if (it->rest.len == 0)
		return false;
	rd r = {it->rest.p, it->rest.p + it->rest.len};
	uint8_t opt = 0;
	if (rd_bin(&r, filter) || (it->has_options && rd_u8(&r, &opt))) {
		it->rest = MQTT_STR_NULL;
		return false;
	}
	*options = opt;
	it->rest.len -= (uint32_t)(r.p - it->rest.p);
	it->rest.p = r.p;
	return true;
}

size_t mqtt_sub_entry_size(mqtt_str filter, bool is_subscribe)
{
	return 2u + filter.len + (is_subscribe ? 1u : 0u);
}

size_t mqtt_sub_entry_write(uint8_t *out, mqtt_str filter, uint8_t options, bool is_subscribe)
{
	uint8_t *o = w_str(out, filter);
	if (is_subscribe)
		*o++ = options;
	return (size_t)(o - out);
}

/* ---------------------------------------------------------------- packet decoding */

/*
 * MQTT 3.1 calls the fixed-header flags of these packets "not used" rather
 * than reserved, and 3.1 clients set DUP on resent PUBREL/SUBSCRIBE; only
 * 3.1.1 and 5 make the values a MUST, so only they are checked.
 */
static inline int check_flags(uint8_t v, uint8_t flags, uint8_t want)
{
	return (flags == want || v == MQTT_V31) ? 0 : MALFORMED;
}

static inline int check_end(const rd *r)
{
	return r->p == r->end ? 0 : MALFORMED;
}

static int dec_connect(rd *r, uint8_t flags, mqtt_connect *c)
{
	uint8_t level, cf;
	int rc;

	if (rd_bin(r, &c->protocol_name) || rd_u8(r, &level))
		return MALFORMED;
	bool mqtt = c->protocol_name.len == 4 && memcmp(c->protocol_name.p, "MQTT", 4) == 0;
	bool mqisdp = c->protocol_name.len == 6 && memcmp(c->protocol_name.p, "MQIsdp", 6) == 0;
	if (!((mqtt && (level == MQTT_V311 || level == MQTT_V5)) || (mqisdp && level == MQTT_V31)))
		return MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION;
	c->version = level;
	if ((rc = check_flags(level, flags, 0)))
		return rc;

	if (rd_u8(r, &cf) || rd_u16(r, &c->keepalive))
		return MALFORMED;
	/* 3.1 did not reserve bit 0 yet. */
	if ((cf & 0x01) && level != MQTT_V31)
		return MALFORMED;
	c->clean_start = (cf & 0x02) != 0;
	c->will = (cf & 0x04) != 0;
	c->will_qos = (cf >> 3) & 3;
	c->will_retain = (cf & 0x20) != 0;
	c->has_password = (cf & 0x40) != 0;
	c->has_username = (cf & 0x80) != 0;
	if (c->will_qos == 3)
		return MALFORMED;
	if (!c->will && (c->will_qos || c->will_retain))
		return MALFORMED;
	/* MQTT-3.1.2-22; v5 dropped the rule. */
	if (c->has_password && !c->has_username && level != MQTT_V5)
		return MALFORMED;

	if (level == MQTT_V5 && (rc = props_decode(r, MQTT_CONNECT, &c->props)))
		return rc;
	if ((rc = rd_utf8(r, &c->client_id)))
		return rc;
	if (c->will) {
		if (level == MQTT_V5 && (rc = props_decode(r, CTX_WILL, &c->will_props)))
			return rc;
		if ((rc = rd_utf8(r, &c->will_topic)))
			return rc;
		/* The Will is published to this topic, so it must be a valid topic name. */
		if (!mqtt_topic_name_valid(c->will_topic))
			return MQTT_RC_TOPIC_NAME_INVALID;
		if (rd_bin(r, &c->will_payload))
			return MALFORMED;
	}
	if (c->has_username && (rc = rd_utf8(r, &c->username)))
		return rc;
	if (c->has_password && rd_bin(r, &c->password))
		return MALFORMED;
	return check_end(r);
}

static int dec_connack(rd *r, uint8_t v, uint8_t flags, mqtt_connack *c)
{
	uint8_t af, rc8;
	int rc;

	if ((rc = check_flags(v, flags, 0)))
		return rc;
	if (rd_u8(r, &af) || rd_u8(r, &rc8))
		return MALFORMED;
	/* 3.1 had no session present flag: its first byte is unused. */
	if (v != MQTT_V31) {
		if (af & 0xFE)
			return MALFORMED;
		c->session_present = af & 1;
	}
	c->rc = rc8;
	if (v == MQTT_V5) {
		if (!rc_ok(MQTT_CONNACK, rc8))
			return PROTOCOL;
		if (rd_left(r) > 0 && (rc = props_decode(r, MQTT_CONNACK, &c->props)))
			return rc;
	} else if (rc8 > MQTT_V3_REFUSED_NOT_AUTHORIZED) {
		return PROTOCOL;
	}
	/* MQTT-3.2.2-4 (v3.1.1) / MQTT-3.2.2-6 (v5). */
	if (c->session_present && rc8 != 0)
		return PROTOCOL;
	return check_end(r);
}

static int dec_publish(rd *r, uint8_t v, uint8_t flags, mqtt_publish *p)
{
	int rc;

	p->qos = (flags >> 1) & 3;
	p->dup = (flags & 0x08) != 0;
	p->retain = (flags & 0x01) != 0;
	if (p->qos == 3)
		return MALFORMED;
	if (p->dup && p->qos == 0)
		return v == MQTT_V5 ? PROTOCOL : MALFORMED;
	if ((rc = rd_utf8(r, &p->topic)))
		return rc;
	if (mqtt_topic_is_wildcard(p->topic))
		return MQTT_RC_TOPIC_NAME_INVALID;
	if (p->qos) {
		if (rd_u16(r, &p->packet_id))
			return MALFORMED;
		if (p->packet_id == 0)
			return PROTOCOL;
	}
	if (v == MQTT_V5 && (rc = props_decode(r, MQTT_PUBLISH, &p->props)))
		return rc;
	/* Only v5 can name the topic by alias alone (3.3.2.3.4). */
	if (p->topic.len == 0 && !(p->props.present & MQTT_PF_TOPIC_ALIAS))
		return MQTT_RC_TOPIC_NAME_INVALID;
	p->payload.p = r->p;
	p->payload.len = (uint32_t)rd_left(r);
	return 0;
}

/* PUBACK, PUBREC, PUBREL, PUBCOMP. */
static int dec_ack(rd *r, uint8_t v, uint8_t type, uint8_t flags, mqtt_ack *a)
{
	int rc;

	if ((rc = check_flags(v, flags, type == MQTT_PUBREL ? 2 : 0)))
		return rc;
	if (rd_u16(r, &a->packet_id))
		return MALFORMED;
	if (a->packet_id == 0)
		return PROTOCOL;
	/* v5 short forms: remaining length 2 means Success, 3 means no properties. */
	if (v == MQTT_V5 && rd_left(r) > 0) {
		rd_u8(r, &a->rc);
		if (!rc_ok(type, a->rc))
			return PROTOCOL;
		if (rd_left(r) > 0 && (rc = props_decode(r, type, &a->props)))
			return rc;
	}
	return check_end(r);
}

/* SUBSCRIBE and UNSUBSCRIBE. */
static int dec_subscribe(rd *r, uint8_t v, uint8_t type, uint8_t flags, mqtt_subscribe *s)
{
	const bool sub = type == MQTT_SUBSCRIBE;
	int rc;

	if ((rc = check_flags(v, flags, 2)))
		return rc;
	if (rd_u16(r, &s->packet_id))
		return MALFORMED;
	if (s->packet_id == 0)
		return PROTOCOL;
	if (v == MQTT_V5 && (rc = props_decode(r, type, &s->props)))
		return rc;
	s->entries.p = r->p;
	s->entries.len = (uint32_t)rd_left(r);
	while (rd_left(r) > 0) {
		mqtt_str f;
		if ((rc = rd_utf8(r, &f)))
			return rc;
		if (f.len == 0)
			return PROTOCOL;
		if (sub) {
			uint8_t o;
			if (rd_u8(r, &o))
				return MALFORMED;
			uint8_t reserved = v == MQTT_V5 ? 0xC0 : 0xFC;
			if ((o & reserved) || (o & MQTT_SUBOPT_QOS_MASK) == 3 ||
			    (o & MQTT_SUBOPT_RETAIN_HANDLING_MASK) ==
			        MQTT_SUBOPT_RETAIN_HANDLING_MASK)
				return PROTOCOL;
		}
		s->count++;
	}
	return s->count ? 0 : PROTOCOL;
}

/* SUBACK and UNSUBACK. */
static int dec_suback(rd *r, uint8_t v, uint8_t type, uint8_t flags, mqtt_suback *s)
{
	int rc;

	if ((rc = check_flags(v, flags, 0)))
		return rc;
	if (rd_u16(r, &s->packet_id))
		return MALFORMED;
	if (s->packet_id == 0)
		return PROTOCOL;
	if (v == MQTT_V5 && (rc = props_decode(r, type, &s->props)))
		return rc;
	/* A v3 UNSUBACK is just the packet identifier. */
	if (v != MQTT_V5 && type == MQTT_UNSUBACK)
		return check_end(r);
	s->rcs = r->p;
	s->count = (uint32_t)rd_left(r);
	if (s->count == 0)
		return PROTOCOL;
	for (uint32_t i = 0; i < s->count; i++) {
		uint8_t c = s->rcs[i];
		bool ok = v == MQTT_V5 ? rc_ok(type, c) : (c <= 2 || c == 0x80);
		if (!ok)
			return PROTOCOL;
	}
	return 0;
}

/* DISCONNECT and AUTH; PINGREQ and PINGRESP also come here (always empty). */
static int dec_disconnect(rd *r, uint8_t v, uint8_t type, uint8_t flags, mqtt_disconnect *d)
{
	int rc;

	if ((rc = check_flags(v, flags, 0)))
		return rc;
	if (type == MQTT_AUTH && v != MQTT_V5)
		return MALFORMED;
	/* Remaining length 0 means Success; 1 means no properties (3.14.2.2.1). */
	if (v == MQTT_V5 && rd_left(r) > 0 && type != MQTT_PINGREQ && type != MQTT_PINGRESP) {
		rd_u8(r, &d->rc);
		if (!rc_ok(type, d->rc))
			return PROTOCOL;
		if (rd_left(r) > 0 && (rc = props_decode(r, type, &d->props)))
			return rc;
	}
	return check_end(r);
}

int mqtt_decode(const uint8_t *buf, size_t len, uint8_t version, mqtt_packet *pkt)
{
	uint32_t rl;
	if (len < 2)
		return MALFORMED;
	int n = varint_parse(buf + 1, len - 1, &rl);
	if (n <= 0 || (size_t)1 + (size_t)n + rl != len)
		return MALFORMED;

	const uint8_t type = buf[0] >> 4, flags = buf[0] & 0x0F;
	rd r = {buf + 1 + n, buf + len};
	pkt->type = type;
	pkt->flags = flags;

	if (type != MQTT_CONNECT && version != MQTT_V31 && version != MQTT_V311 &&
	    version != MQTT_V5)
		return MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION;

	/* Only the union member in use is cleared: a PUBLISH need not pay for a CONNECT. */
	switch (type) {
	case MQTT_CONNECT:
		memset(&pkt->u.connect, 0, sizeof(pkt->u.connect));
		return dec_connect(&r, flags, &pkt->u.connect);
	case MQTT_CONNACK:
		memset(&pkt->u.connack, 0, sizeof(pkt->u.connack));
		return dec_connack(&r, version, flags, &pkt->u.connack);
	case MQTT_PUBLISH:
		memset(&pkt->u.publish, 0, sizeof(pkt->u.publish));
		return dec_publish(&r, version, flags, &pkt->u.publish);
	case MQTT_PUBACK:
	case MQTT_PUBREC:
	case MQTT_PUBREL:
	case MQTT_PUBCOMP:
		memset(&pkt->u.ack, 0, sizeof(pkt->u.ack));
		return dec_ack(&r, version, type, flags, &pkt->u.ack);
	case MQTT_SUBSCRIBE:
	case MQTT_UNSUBSCRIBE:
		memset(&pkt->u.subscribe, 0, sizeof(pkt->u.subscribe));
		return dec_subscribe(&r, version, type, flags, &pkt->u.subscribe);
	case MQTT_SUBACK:
	case MQTT_UNSUBACK:
		memset(&pkt->u.suback, 0, sizeof(pkt->u.suback));
		return dec_suback(&r, version, type, flags, &pkt->u.suback);
	case MQTT_PINGREQ:
	case MQTT_PINGRESP:
	case MQTT_DISCONNECT:
	case MQTT_AUTH:
		memset(&pkt->u.disconnect, 0, sizeof(pkt->u.disconnect));
		return dec_disconnect(&r, version, type, flags, &pkt->u.disconnect);
	}
	/* Type 0 is reserved (and 15 in v3, handled above). */
	return MALFORMED;
}

/* ---------------------------------------------------------------- property encoding */

static inline uint32_t prop_num(const mqtt_props *p, const struct prop_def *d)
{
	const uint8_t *f = cfield(p, d->off);
	switch (d->kind) {
	case PK_BYTE:
		return *f;
	case PK_U16:
		return *(const uint16_t *)(const void *)f;
	default:
		return *(const uint32_t *)(const void *)f;
	}
}

static inline const mqtt_str *prop_str(const mqtt_props *p, const struct prop_def *d)
{
	return (const mqtt_str *)(const void *)cfield(p, d->off);
}

/* Size of the entries of the flagged properties in mask (identifier bytes included). */
static size_t flagged_size(const mqtt_props *p, uint32_t mask)
{
	size_t n = 0;
	while (mask) {
		const struct prop_def *d = &prop_defs[flag_ids[__builtin_ctz(mask)]];
		mask &= mask - 1;
		switch (d->kind) {
		case PK_BYTE:
			n += 2;
			break;
		case PK_U16:
			n += 3;
			break;
		case PK_U32:
			n += 5;
			break;
		case PK_VARINT:
			n += 1 + mqtt_varint_size(prop_num(p, d));
			break;
		default:
			n += 3 + prop_str(p, d)->len;
			break;
		}
	}
	return n;
}

static uint8_t *flagged_write(uint8_t *o, const mqtt_props *p, uint32_t mask)
{
	while (mask) {
		uint8_t id = flag_ids[__builtin_ctz(mask)];
		const struct prop_def *d = &prop_defs[id];
		mask &= mask - 1;
		*o++ = id;
		switch (d->kind) {
		case PK_BYTE:
			*o++ = (uint8_t)prop_num(p, d);
			break;
		case PK_U16:
			o = w_u16(o, prop_num(p, d));
			break;
		case PK_U32:
			o = w_u32(o, prop_num(p, d));
			break;
		case PK_VARINT:
			o += mqtt_varint_write(o, prop_num(p, d));
			break;
		default:
			o = w_str(o, *prop_str(p, d));
			break;
		}
	}
	return o;
}

static inline bool has_sub_id_list(const mqtt_props *p)
{
	return p->sub_ids && p->n_sub_ids;
}

static size_t user_props_size(const mqtt_props *p)
{
	if (!p->user_props_mixed)
		return p->user_props.len;
	size_t n = 0;
	mqtt_user_prop_iter it;
	mqtt_str k, v;
	mqtt_user_prop_iter_init(&it, p->user_props);
	while (mqtt_user_prop_next(&it, &k, &v))
		n += mqtt_user_prop_size(k, v);
	return n;
}

/* Size of the property block without its length prefix. */
static size_t props_body_size(const mqtt_props *p)
{
	uint32_t mask = p->present & PF_ALL;
	if (!mask && !p->user_props.len && !has_sub_id_list(p))
		return 0;
	size_t n;
	if (has_sub_id_list(p)) {
		mask &= ~(uint32_t)MQTT_PF_SUBSCRIPTION_ID;
		n = 0;
		for (uint32_t i = 0; i < p->n_sub_ids; i++)
			n += 1 + mqtt_varint_size(p->sub_ids[i]);
	} else {
		n = 0;
	}
	return n + flagged_size(p, mask) + user_props_size(p);
}

size_t mqtt_props_size(const mqtt_props *props)
{
	size_t body = props_body_size(props);
	return mqtt_varint_size((uint32_t)body) + body;
}

/* Writes a property block of the given body size, in identifier order. */
static uint8_t *props_write(uint8_t *o, const mqtt_props *p, size_t body)
{
	o += mqtt_varint_write(o, (uint32_t)body);
	if (!body)
		return o;
	uint32_t mask = p->present & PF_ALL;
	if (has_sub_id_list(p)) {
		mask &= ~(uint32_t)MQTT_PF_SUBSCRIPTION_ID;
		o = flagged_write(o, p, mask & (MQTT_PF_SUBSCRIPTION_ID - 1u));
		for (uint32_t i = 0; i < p->n_sub_ids; i++) {
			*o++ = MQTT_PROP_SUBSCRIPTION_IDENTIFIER;
			o += mqtt_varint_write(o, p->sub_ids[i]);
		}
		mask &= ~(uint32_t)(MQTT_PF_SUBSCRIPTION_ID - 1u);
	}
	o = flagged_write(o, p, mask & PF_BEFORE_USER);
	if (p->user_props.len) {
		if (!p->user_props_mixed) {
			memcpy(o, p->user_props.p, p->user_props.len);
			o += p->user_props.len;
		} else {
			mqtt_user_prop_iter it;
			mqtt_str k, v;
			mqtt_user_prop_iter_init(&it, p->user_props);
			while (mqtt_user_prop_next(&it, &k, &v))
				o += mqtt_user_prop_write(o, k, v);
		}
	}
	return flagged_write(o, p, mask & ~PF_BEFORE_USER);
}

/* ---------------------------------------------------------------- packet encoding */

struct plan {
	size_t rl;    /* remaining length */
	size_t props; /* property block body sizes (0 if absent or v3) */
	size_t will_props;
};

static inline size_t str_size(mqtt_str s)
{
	return 2u + s.len;
}

static inline size_t block_size(size_t body)
{
	return mqtt_varint_size((uint32_t)body) + body;
}

static void plan_packet(const mqtt_packet *pkt, uint8_t v, struct plan *z)
{
	const bool v5 = v == MQTT_V5;
	size_t rl = 0;

	z->props = z->will_props = 0;
	switch (pkt->type) {
	case MQTT_CONNECT: {
		const mqtt_connect *c = &pkt->u.connect;
		/* protocol name string, level, flags, keep alive */
		rl = (v == MQTT_V31 ? 8u : 6u) + 4u;
		if (v5) {
			z->props = props_body_size(&c->props);
			rl += block_size(z->props);
		}
		rl += str_size(c->client_id);
		if (c->will) {
			if (v5) {
				z->will_props = props_body_size(&c->will_props);
				rl += block_size(z->will_props);
			}
			rl += str_size(c->will_topic) + str_size(c->will_payload);
		}
		if (c->has_username)
			rl += str_size(c->username);
		if (c->has_password)
			rl += str_size(c->password);
		break;
	}
	case MQTT_CONNACK:
		rl = 2;
		if (v5) {
			z->props = props_body_size(&pkt->u.connack.props);
			rl += block_size(z->props);
		}
		break;
	case MQTT_PUBLISH: {
		const mqtt_publish *p = &pkt->u.publish;
		rl = str_size(p->topic) + (p->qos ? 2u : 0u);
		if (v5) {
			z->props = props_body_size(&p->props);
			rl += block_size(z->props);
		}
		rl += p->payload.len;
		break;
	}
	case MQTT_PUBACK:
	case MQTT_PUBREC:
	case MQTT_PUBREL:
	case MQTT_PUBCOMP:
		rl = 2;
		if (v5) {
			z->props = props_body_size(&pkt->u.ack.props);
			if (z->props)
				rl += 1 + block_size(z->props);
			else if (pkt->u.ack.rc)
				rl += 1;
		}
		break;
	case MQTT_SUBSCRIBE:
	case MQTT_UNSUBSCRIBE:
		rl = 2;
		if (v5) {
			z->props = props_body_size(&pkt->u.subscribe.props);
			rl += block_size(z->props);
		}
		rl += pkt->u.subscribe.entries.len;
		break;
	case MQTT_SUBACK:
	case MQTT_UNSUBACK:
		rl = 2;
		if (v5) {
			z->props = props_body_size(&pkt->u.suback.props);
			rl += block_size(z->props) + pkt->u.suback.count;
		} else if (pkt->type == MQTT_SUBACK) {
			rl += pkt->u.suback.count;
		}
		break;
	case MQTT_DISCONNECT:
	case MQTT_AUTH:
		if (v5) {
			z->props = props_body_size(&pkt->u.disconnect.props);
			if (z->props)
				rl = 1 + block_size(z->props);
			else if (pkt->u.disconnect.rc)
				rl = 1;
		}
		break;
	default: /* PINGREQ, PINGRESP */
		break;
	}
	z->rl = rl;
}

size_t mqtt_encoded_size(const mqtt_packet *pkt, uint8_t version)
{
	struct plan z;
	plan_packet(pkt, version, &z);
	return 1 + mqtt_varint_size((uint32_t)z.rl) + z.rl;
}

size_t mqtt_encode(const mqtt_packet *pkt, uint8_t version, uint8_t *out)
{
	const bool v5 = version == MQTT_V5;
	struct plan z;
	uint8_t *o = out;
	uint8_t flags = 0;

	plan_packet(pkt, version, &z);
	switch (pkt->type) {
	case MQTT_PUBLISH:
		flags =
		    (uint8_t)((pkt->u.publish.dup ? 0x08 : 0) | ((pkt->u.publish.qos & 3) << 1) |
		              (pkt->u.publish.retain ? 0x01 : 0));
		break;
	case MQTT_PUBREL:
	case MQTT_SUBSCRIBE:
	case MQTT_UNSUBSCRIBE:
		flags = 0x02;
		break;
	}
	*o++ = (uint8_t)((pkt->type << 4) | flags);
	o += mqtt_varint_write(o, (uint32_t)z.rl);

	switch (pkt->type) {
	case MQTT_CONNECT: {
		const mqtt_connect *c = &pkt->u.connect;
		if (version == MQTT_V31)
			o = w_str(o, (mqtt_str){(const uint8_t *)"MQIsdp", 6});
		else
			o = w_str(o, (mqtt_str){(const uint8_t *)"MQTT", 4});
		*o++ = version;
		uint8_t cf = (uint8_t)((c->has_username ? 0x80 : 0) | (c->has_password ? 0x40 : 0) |
		                       (c->clean_start ? 0x02 : 0));
		if (c->will)
			cf |= (uint8_t)(0x04 | ((c->will_qos & 3) << 3) |
			                (c->will_retain ? 0x20 : 0));
		*o++ = cf;
		o = w_u16(o, c->keepalive);
		if (v5)
			o = props_write(o, &c->props, z.props);
		o = w_str(o, c->client_id);
		if (c->will) {
			if (v5)
				o = props_write(o, &c->will_props, z.will_props);
			o = w_str(o, c->will_topic);
			o = w_str(o, c->will_payload);
		}
		if (c->has_username)
			o = w_str(o, c->username);
		if (c->has_password)
			o = w_str(o, c->password);
		break;
	}
	case MQTT_CONNACK:
		*o++ = (version != MQTT_V31 && pkt->u.connack.session_present) ? 1 : 0;
		*o++ = pkt->u.connack.rc;
		if (v5)
			o = props_write(o, &pkt->u.connack.props, z.props);
		break;
	case MQTT_PUBLISH: {
		const mqtt_publish *p = &pkt->u.publish;
		o = w_str(o, p->topic);
		if (p->qos)
			o = w_u16(o, p->packet_id);
		if (v5)
			o = props_write(o, &p->props, z.props);
		if (p->payload.len) {
			memcpy(o, p->payload.p, p->payload.len);
			o += p->payload.len;
		}
		break;
	}
	case MQTT_PUBACK:
	case MQTT_PUBREC:
	case MQTT_PUBREL:
	case MQTT_PUBCOMP:
		o = w_u16(o, pkt->u.ack.packet_id);
		if (z.rl > 2)
			*o++ = pkt->u.ack.rc;
		if (z.rl > 3)
			o = props_write(o, &pkt->u.ack.props, z.props);
		break;
	case MQTT_SUBSCRIBE:
	case MQTT_UNSUBSCRIBE:
		o = w_u16(o, pkt->u.subscribe.packet_id);
		if (v5)
			o = props_write(o, &pkt->u.subscribe.props, z.props);
		if (pkt->u.subscribe.entries.len) {
			memcpy(o, pkt->u.subscribe.entries.p, pkt->u.subscribe.entries.len);
			o += pkt->u.subscribe.entries.len;
		}
		break;
	case MQTT_SUBACK:
	case MQTT_UNSUBACK: {
		const mqtt_suback *s = &pkt->u.suback;
		o = w_u16(o, s->packet_id);
		if (v5) {
			o = props_write(o, &s->props, z.props);
			if (s->count) {
				memcpy(o, s->rcs, s->count);
				o += s->count;
			}
		} else if (pkt->type == MQTT_SUBACK) {
			/* v3 knows a single failure code, so any v5 error becomes 0x80. */
			for (uint32_t i = 0; i < s->count; i++)
				*o++ = s->rcs[i] >= 0x80 ? 0x80 : s->rcs[i];
		}
		break;
	}
	case MQTT_DISCONNECT:
	case MQTT_AUTH:
		if (z.rl > 0)
			*o++ = pkt->u.disconnect.rc;
		if (z.rl > 1)
			o = props_write(o, &pkt->u.disconnect.props, z.props);
		break;
	default:
		break;
	}
	return (size_t)(o - out);
}
