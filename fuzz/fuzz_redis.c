/*
 * fuzz_redis.c - libFuzzer target for the Redis backend's two parsers: the
 * raw-command compiler ({"commands": [...]}, src/backends/redis/raw.c) and
 * the subscription channel's event parser (channel.c).
 *
 * Design
 * ------
 * The first byte picks the parser. Even: the rest, cut at '\n' into up to 8
 * texts (each cut at a NUL, as the JSON reader hands over C strings), is
 * compiled as one action. A refusal must give a message and leave nothing
 * allocated. An accepted action must expand, for a job whose values contain
 * spaces, into arguments that
 *   - number exactly one more than the spaces of the command's text (a value
 *     never adds an argument), and
 *   - joined with single spaces, equal the text with each ${var} replaced by
 *     its value (nothing else changed, nothing re-parsed).
 * Odd: the rest is one channel message; an accepted event must have a
 * non-empty topic and client id without NUL bytes and a QoS of 0..2.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/redis/redis_be.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CID "c l"
#define TOPIC "t/ x"
#define NODE "n@h"

static const char *value_of(const char *name, size_t n)
{
	static const char *const map[][2] = {
		{"clientid", CID}, {"username", "u"},  {"peerhost", "1.2.3.4"}, {"node", NODE},
		{"topic", TOPIC},  {"qos", "1"},       {"msgid", ""},           {"payload", ""},
		{"retain", "0"},   {"timestamp", "1234"},
	};
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (strlen(map[i][0]) == n && memcmp(map[i][0], name, n) == 0)
			return map[i][1];
	abort(); /* the compiler accepted an unknown name */
}

/* text with every ${name} replaced by its value, into a malloc'd string */
static char *expand(const char *text, size_t *len)
{
	size_t cap = strlen(text) * 8 + 16, o = 0;
	char *out = malloc(cap);
	for (size_t i = 0; text[i];) {
		if (text[i] == '$' && text[i + 1] == '{') {
			const char *close = strchr(text + i + 2, '}');
			if (!close)
				abort();
			const char *v = value_of(text + i + 2, (size_t)(close - text - i - 2));
			size_t vl = strlen(v);
			if (o + vl >= cap)
				abort();
			memcpy(out + o, v, vl);
			o += vl;
			i = (size_t)(close - text) + 1;
			continue;
		}
		out[o++] = text[i++];
	}
	*len = o;
	return out;
}

static void check_action(const void *raw, char **texts, size_t n)
{
	pjob *j = calloc(1, sizeof(pjob));
	j->clientid = (mqtt_str){(const uint8_t *)CID, 3};
	j->username = (mqtt_str){(const uint8_t *)"u", 1};
	j->peerhost = (mqtt_str){(const uint8_t *)"1.2.3.4", 7};
	j->topic = (mqtt_str){(const uint8_t *)TOPIC, 4};
	j->qos = 1;
	j->ts_ms = 1234;
	size_t first = n > 0 && strcasecmp(texts[0], "pipeline") == 0 ? 1 : 0;
	if (redis_raw_ncmds(raw) != n - first)
		abort();
	char scratch[RARGS_MAX][48];
	for (uint32_t k = 0; k < redis_raw_ncmds(raw); k++) {
		const char *text = texts[first + k];
		rargs a;
		if (redis_raw_args(raw, k, j, NODE, &a, scratch)) {
			ra_free(&a);
			continue; /* more arguments than a command may have */
		}
		size_t spaces = 0;
		for (const char *p = text; *p; p++)
			spaces += *p == ' ';
		if ((size_t)a.n != spaces + 1)
			abort();
		size_t elen;
		char *exp = expand(text, &elen);
		size_t o = 0;
		for (int x = 0; x < a.n; x++) {
			if (x) {
				if (o >= elen || exp[o] != ' ')
					abort();
				o++;
			}
			if (o + a.l[x] > elen || memcmp(exp + o, a.v[x], a.l[x]) != 0)
				abort();
			o += a.l[x];
		}
		if (o != elen)
			abort();
		free(exp);
		ra_free(&a);
	}
	free(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 4096)
		return 0;
	char err[512];
	if (data[0] & 1) {
		chan_event ev;
		void *root = NULL;
		if (redis_channel_parse((const char *)data + 1, size - 1, &ev, &root, err,
		                        sizeof(err)) == 0) {
			if (!ev.topic_len || !ev.cid_len || ev.qos < 0 || ev.qos > 2 ||
			    memchr(ev.topic, 0, ev.topic_len) || memchr(ev.clientid, 0, ev.cid_len))
				abort();
		} else if (!err[0]) {
			abort();
		}
		redis_channel_event_free(&root);
		return 0;
	}
	char *texts[8];
	size_t n = 0;
	const uint8_t *p = data + 1, *end = data + size;
	while (p <= end && n < 8) {
		const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
		texts[n] = strndup((const char *)p, len); /* cut at a NUL, like a C string */
		n++;
		if (!nl)
			break;
		p = nl + 1;
	}
	void *raw = NULL;
	err[0] = 0;
	if (redis_raw_compile((const char *const *)texts, n, &raw, err, sizeof(err)) == 0) {
		check_action(raw, texts, n);
		redis_raw_free(raw);
	} else if (!err[0] || raw) {
		abort();
	}
	for (size_t i = 0; i < n; i++)
		free(texts[i]);
	return 0;
}
