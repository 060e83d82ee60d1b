/*
 * message.c - message construction, release and ids. See message.h.
 */
#include "broker/message.h"

#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

static uint8_t *put(uint8_t *p, mqtt_str *dst, mqtt_str src)
{
	dst->p = p;
	dst->len = src.len;
	if (src.len)
		memcpy(p, src.p, src.len);
	return p + src.len;
}

/* The user properties of a decoded packet, in their wire form without any
 * other property that may have been interleaved with them. */
static size_t user_props_len(const mqtt_props *pr)
{
	if (!pr->user_props_mixed)
		return pr->user_props.len;
	size_t n = 0;
	mqtt_user_prop_iter it;
	mqtt_str k, v;
	mqtt_user_prop_iter_init(&it, pr->user_props);
	while (mqtt_user_prop_next(&it, &k, &v))
		n += mqtt_user_prop_size(k, v);
	return n;
}

kmq_msg *msg_new(const msg_init *in)
{
	const mqtt_props *pr = in->props;
	size_t up = 0;
	mqtt_str ct = {0}, rt = {0}, cd = {0};
	if (pr) {
		if (pr->present & MQTT_PF_CONTENT_TYPE)
			ct = pr->content_type;
		if (pr->present & MQTT_PF_RESPONSE_TOPIC)
			rt = pr->response_topic;
		if (pr->present & MQTT_PF_CORRELATION_DATA)
			cd = pr->correlation_data;
		if (pr->n_user_props)
			up = user_props_len(pr);
	}
	size_t total = sizeof(kmq_msg) + in->topic.len + 1 + in->payload.len + in->origin.len +
	               in->origin_user.len + ct.len + rt.len + cd.len + up;
	kmq_msg *m = malloc(total);
	if (!m)
		return NULL;
	memset(m, 0, sizeof(*m));
	atomic_init(&m->refs, 1);
	m->qos = in->qos;
	m->flags = (uint8_t)(in->flags | (in->retain ? MSG_F_RETAIN : 0));
	m->ts_ms = in->now_ms;
	uint8_t *p = m->data;
	p = put(p, &m->topic, in->topic);
	*p++ = 0;
	p = put(p, &m->payload, in->payload);
	p = put(p, &m->origin, in->origin);
	p = put(p, &m->origin_user, in->origin_user);
	p = put(p, &m->content_type, ct);
	p = put(p, &m->response_topic, rt);
	p = put(p, &m->correlation_data, cd);
	if (pr && pr->n_user_props) {
		m->user_props.p = p;
		m->user_props.len = (uint32_t)up;
		m->n_user_props = pr->n_user_props;
		if (!pr->user_props_mixed) {
			memcpy(p, pr->user_props.p, up);
		} else {
			mqtt_user_prop_iter it;
			mqtt_str k, v;
			mqtt_user_prop_iter_init(&it, pr->user_props);
			while (mqtt_user_prop_next(&it, &k, &v))
				p += mqtt_user_prop_write(p, k, v);
		}
	}
	if (pr) {
		if (pr->present & MQTT_PF_PAYLOAD_FORMAT) {
			m->flags |= MSG_F_PAYLOAD_FORMAT;
			m->payload_format = pr->payload_format;
		}
		if (pr->present & MQTT_PF_MESSAGE_EXPIRY) {
			m->flags |= MSG_F_EXPIRY;
			m->expiry_at_ms = in->now_ms + (uint64_t)pr->message_expiry * 1000u;
		}
	}
	return m;
}

void msg_unref(kmq_msg **mp)
{
	kmq_msg *m = *mp;
	if (!m)
		return;
	*mp = NULL;
	if (atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1)
		free(m);
}

uint32_t msg_remaining_expiry(const kmq_msg *m, uint64_t now_ms)
{
	if (now_ms >= m->expiry_at_ms)
		return 1;
	uint64_t left = (m->expiry_at_ms - now_ms + 999) / 1000;
	return left > UINT32_MAX ? UINT32_MAX : (uint32_t)left;
}

/* ---------------------------------------------------------------- stored form */

#define ENC_MAGIC 0x4b /* 'K' */
#define ENC_VERSION 1
#define ENC_FIXED (2 + 3 + 8 + 8 + 16 + 4)
#define ENC_NSTR 8

static const mqtt_str *enc_strs(const kmq_msg *m, const mqtt_str *out[ENC_NSTR])
{
	out[0] = &m->topic;
	out[1] = &m->payload;
	out[2] = &m->origin;
	out[3] = &m->origin_user;
	out[4] = &m->content_type;
	out[5] = &m->response_topic;
	out[6] = &m->correlation_data;
	out[7] = &m->user_props;
	return out[0];
}

size_t msg_encoded_size(const kmq_msg *m)
{
	const mqtt_str *s[ENC_NSTR];
	enc_strs(m, s);
	size_t n = ENC_FIXED;
	for (int i = 0; i < ENC_NSTR; i++)
		n += 4 + s[i]->len;
	return n;
}

static uint8_t *put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		*p++ = (uint8_t)(v >> (8 * i));
	return p;
}

static uint8_t *put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		*p++ = (uint8_t)(v >> (8 * i));
	return p;
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void msg_encode(const kmq_msg *m, uint8_t *out)
{
	const mqtt_str *s[ENC_NSTR];
	enc_strs(m, s);
	uint8_t *p = out;
	*p++ = ENC_MAGIC;
	*p++ = ENC_VERSION;
	*p++ = m->qos;
	*p++ = m->flags;
	*p++ = m->payload_format;
	p = put64(p, m->ts_ms);
	p = put64(p, m->expiry_at_ms);
	memcpy(p, m->id, 16);
	p += 16;
	p = put32(p, m->n_user_props);
	for (int i = 0; i < ENC_NSTR; i++) {
		p = put32(p, s[i]->len);
		if (s[i]->len)
			memcpy(p, s[i]->p, s[i]->len);
		p += s[i]->len;
	}
}

kmq_msg *msg_decode(const uint8_t *in, size_t n)
{
	if (n < ENC_FIXED || in[0] != ENC_MAGIC || in[1] != ENC_VERSION || in[2] > 2)
		return NULL;
	/* first pass: the lengths must add up to exactly n */
	size_t off = ENC_FIXED, body = 0;
	uint32_t len[ENC_NSTR];
	for (int i = 0; i < ENC_NSTR; i++) {
		if (n - off < 4)
			return NULL;
		len[i] = get32(in + off);
		off += 4;
		if (n - off < len[i])
			return NULL;
		off += len[i];
		body += len[i];
	}
	if (off != n || len[0] == 0 || memchr(in + ENC_FIXED + 4, 0, len[0]))
		return NULL;
	kmq_msg *m = malloc(sizeof(kmq_msg) + body + 1);
	if (!m)
		return NULL;
	memset(m, 0, sizeof(*m));
	atomic_init(&m->refs, 1);
	m->qos = in[2];
	m->flags = in[3];
	m->payload_format = in[4];
	m->ts_ms = get64(in + 5);
	m->expiry_at_ms = get64(in + 13);
	memcpy(m->id, in + 21, 16);
	m->n_user_props = get32(in + 37);
	mqtt_str *dst[ENC_NSTR] = {&m->topic, &m->payload, &m->origin, &m->origin_user,
	                           &m->content_type, &m->response_topic, &m->correlation_data,
	                           &m->user_props};
	uint8_t *p = m->data;
	off = ENC_FIXED;
	for (int i = 0; i < ENC_NSTR; i++) {
		off += 4;
		p = put(p, dst[i], (mqtt_str){in + off, len[i]});
		off += len[i];
		if (i == 0)
			*p++ = 0; /* the topic is NUL-terminated */
	}
	return m;
}

void msgid_gen_init(msgid_gen *g, unsigned worker)
{
	uint64_t r = 0;
	if (RAND_bytes((unsigned char *)&r, sizeof(r)) != 1)
		r = (uint64_t)(uintptr_t)g ^ 0x9e3779b97f4a7c15ull;
	g->last = 0;
	g->instance = (r & ~0xffull) | (worker & 0xffu);
}

void msgid_next(msgid_gen *g, uint64_t now_ms, uint8_t out[16])
{
	/* Never go backwards even if the wall clock does, and never repeat:
	 * more than 65536 ids in one millisecond borrow from the next one. */
	uint64_t v = now_ms << 16;
	if (v <= g->last)
		v = g->last + 1;
	g->last = v;
	for (int i = 0; i < 8; i++)
		out[i] = (uint8_t)(v >> (56 - 8 * i));
	for (int i = 0; i < 8; i++)
		out[8 + i] = (uint8_t)(g->instance >> (56 - 8 * i));
}

void msgid_to_hex(const uint8_t id[16], char out[33])
{
	static const char hx[] = "0123456789abcdef";
	for (int i = 0; i < 16; i++) {
		out[2 * i] = hx[id[i] >> 4];
		out[2 * i + 1] = hx[id[i] & 15];
	}
	out[32] = 0;
}
