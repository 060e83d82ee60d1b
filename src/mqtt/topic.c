/*
 * topic.c - UTF-8 validation, topic names and filters, matching, shared
 * subscriptions.
 *
 * Design
 * ------
 * These run on every PUBLISH (UTF-8 and wildcard checks in the decoder,
 * matching in the router), so each is a single forward pass that allocates
 * nothing. Almost all MQTT text is ASCII, so the scanners look at eight bytes
 * at a time with the SWAR "word has a zero byte" test and only fall back to
 * byte-wise work around a non-ASCII or interesting byte. Words are loaded with
 * memcpy, which compiles to one unaligned load and keeps UBSan quiet.
 *
 * Matching walks the filter and the topic together level by level; a '+'
 * swallows one topic level, a '#' ends the walk. It never splits strings or
 * looks back, so it is O(len(filter) + len(topic)).
 */
#include <string.h>

#include "mqtt/mqtt.h"

#define ONES  0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

static inline uint64_t load64(const uint8_t *p)
{
	uint64_t w;
	memcpy(&w, p, sizeof(w));
	return w;
}

/* Exact for "some byte is zero": false positives only occur above a real zero. */
static inline bool has_zero(uint64_t w)
{
	return ((w - ONES) & ~w & HIGHS) != 0;
}

static inline bool has_byte(uint64_t w, uint8_t b)
{
	return has_zero(w ^ (ONES * b));
}

/*
 * Length of the well-formed UTF-8 sequence at s (1..4), or 0 if it is
 * ill-formed, truncated or encodes U+0000. The second-byte ranges below are
 * what rules out overlongs (C0, C1, E0 80-9F, F0 80-8F), surrogates
 * (ED A0-BF) and code points above U+10FFFF (F4 90-BF, F5-FF).
 */
static inline size_t utf8_seq(const uint8_t *s, size_t n)
{
	uint8_t b0 = s[0];
	if (b0 < 0x80)
		return b0 != 0;
	if (b0 < 0xC2)
		return 0;
	if (b0 < 0xE0)
		return (n >= 2 && (s[1] & 0xC0) == 0x80) ? 2 : 0;
	if (b0 < 0xF0) {
		if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80)
			return 0;
		if (b0 == 0xE0 && s[1] < 0xA0)
			return 0;
		if (b0 == 0xED && s[1] >= 0xA0)
			return 0;
		return 3;
	}
	if (b0 < 0xF5) {
		if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 ||
		    (s[3] & 0xC0) != 0x80)
			return 0;
		if (b0 == 0xF0 && s[1] < 0x90)
			return 0;
		if (b0 == 0xF4 && s[1] >= 0x90)
			return 0;
		return 4;
	}
	return 0;
}

bool mqtt_utf8_valid(const uint8_t *s, size_t len)
{
	size_t i = 0;
	while (i < len) {
		if (len - i >= 8) {
			uint64_t w = load64(s + i);
			if (!(w & HIGHS) && !has_zero(w)) {
				i += 8;
				continue;
			}
		}
		size_t k = utf8_seq(s + i, len - i);
		if (!k)
			return false;
		i += k;
	}
	return true;
}

bool mqtt_topic_is_wildcard(mqtt_str f)
{
	size_t i = 0;
	for (; i + 8 <= f.len; i += 8) {
		uint64_t w = load64(f.p + i);
		if (has_byte(w, '+') || has_byte(w, '#'))
			return true;
	}
	for (; i < f.len; i++)
		if (f.p[i] == '+' || f.p[i] == '#')
			return true;
	return false;
}

bool mqtt_topic_name_valid(mqtt_str topic)
{
	return topic.len > 0 && !mqtt_topic_is_wildcard(topic);
}

bool mqtt_topic_filter_valid(mqtt_str f)
{
	if (f.len == 0)
		return false;
	for (uint32_t i = 0; i < f.len; i++) {
		uint8_t c = f.p[i];
		if (c != '+' && c != '#')
			continue;
		/* Both wildcards must occupy a whole level... */
		if (i > 0 && f.p[i - 1] != '/')
			return false;
		if (c == '+') {
			if (i + 1 < f.len && f.p[i + 1] != '/')
				return false;
		} else if (i + 1 != f.len) {
			/* ...and '#' must be the last one. */
			return false;
		}
	}
	return true;
}

/* An empty string is not a topic, so it has no levels; otherwise one more than its separators. */
uint32_t mqtt_topic_levels(mqtt_str t)
{
	if (t.len == 0)
		return 0;
	uint32_t n = 1;
	const uint8_t *p = t.p, *end = t.p + t.len;
	while ((p = memchr(p, '/', (size_t)(end - p))) != NULL) {
		n++;
		p++;
	}
	return n;
}

bool mqtt_topic_matches(mqtt_str filter, mqtt_str topic)
{
	const uint8_t *f = filter.p, *t = topic.p;
	const uint32_t fl = filter.len, tl = topic.len;
	uint32_t fi = 0, ti = 0;

	/* 4.7.2: wildcards at the first level never match "$..." topics. */
	if (tl > 0 && t[0] == '$' && fl > 0 && (f[0] == '+' || f[0] == '#'))
		return false;

	for (;;) {
		/* Both cursors are at the start of a level here. */
		if (fi < fl && f[fi] == '#')
			return true;
		if (fi < fl && f[fi] == '+') {
			fi++;
			while (ti < tl && t[ti] != '/')
				ti++;
		} else {
			while (fi < fl && f[fi] != '/') {
				if (ti == tl || t[ti] != f[fi])
					return false;
				fi++;
				ti++;
			}
		}
		/* The filter's level ended; the topic's must end at the same place. */
		if (fi == fl)
			return ti == tl;
		if (ti == tl) {
			/* Topic exhausted with "/#" left in the filter: '#' also matches the
			 * parent. */
			return fl - fi == 2 && f[fi + 1] == '#';
		}
		if (t[ti] != '/')
			return false;
		fi++;
		ti++;
	}
}

static bool has_prefix(mqtt_str s, const char *pfx, uint32_t n)
{
	return s.len >= n && memcmp(s.p, pfx, n) == 0;
}

int mqtt_shared_parse(mqtt_str full, mqtt_str *group, mqtt_str *filter)
{
	if (has_prefix(full, "$share/", 7)) {
		const uint8_t *g = full.p + 7;
		uint32_t rest = full.len - 7;
		const uint8_t *slash = rest ? memchr(g, '/', rest) : NULL;
		if (!slash)
			return -1;
		uint32_t glen = (uint32_t)(slash - g);
		uint32_t flen = rest - glen - 1;
		if (glen == 0 || flen == 0)
			return -1;
		for (uint32_t i = 0; i < glen; i++)
			if (g[i] == '+' || g[i] == '#')
				return -1;
		group->p = g;
		group->len = glen;
		filter->p = slash + 1;
		filter->len = flen;
		return 1;
	}
	if (has_prefix(full, "$queue/", 7)) {
		if (full.len == 7)
			return -1;
		/* The group name is the "$queue" prefix itself, sliced from the input. */
		group->p = full.p;
		group->len = 6;
		filter->p = full.p + 7;
		filter->len = full.len - 7;
		return 1;
	}
	return 0;
}
