/*
 * test_topic.c - unit tests of topic handling and UTF-8 validation
 * (src/mqtt/topic.c).
 *
 * Design
 * ------
 * Table-driven: each row is one spec rule or edge case (section 4.7 for
 * topics, 4.8.2 for shared subscriptions, 1.5.4 for UTF-8), so a failure
 * message names the exact case. Strings run through a helper that copies
 * them into a buffer of exactly their length, so ASan catches any read past
 * a slice's end (slices are not NUL-terminated on the wire).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mqtt/mqtt.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* A heap copy of exactly n bytes, so over-reads hit ASan's redzone. */
static mqtt_str dupn(const char *s, size_t n)
{
	uint8_t *p = malloc(n ? n : 1);
	assert_non_null(p);
	memcpy(p, s, n);
	return (mqtt_str){p, (uint32_t)n};
}

static mqtt_str dup_c(const char *s)
{
	return dupn(s, strlen(s));
}

static void drop(mqtt_str s)
{
	free((void *)s.p);
}

/* ------------------------------------------------------------ matching */

static void test_matches(void **state)
{
	(void)state;
	static const struct {
		const char *filter, *topic;
		bool match;
	} t[] = {
	    /* literal */
	    {"a", "a", true},
	    {"a", "b", false},
	    {"a/b", "a/b", true},
	    {"a/b", "a/bc", false},
	    {"a/bc", "a/b", false},
	    {"a/b", "a", false},
	    {"a", "a/b", false},
	    {"a/b", "a/b/", false},
	    {"a/b/", "a/b/", true},
	    {"/", "/", true},
	    {"/a", "a", false},
	    {"a", "A", false},
	    {"\xc3\xa9t\xc3\xa9", "\xc3\xa9t\xc3\xa9", true},
	    /* '+' */
	    {"+", "a", true},
	    {"+", "", true},
	    {"+", "a/b", false},
	    {"+", "/", false},
	    {"/+", "/", true},
	    {"/+", "/a", true},
	    {"+/+", "/", true},
	    {"+/", "a/", true},
	    {"+/", "a", false},
	    {"a/+", "a/b", true},
	    {"a/+", "a/", true},
	    {"a/+", "a", false},
	    {"a/+", "a/b/c", false},
	    {"a/+/c", "a/b/c", true},
	    {"a/+/c", "a//c", true},
	    {"a/+/c", "a/b/d", false},
	    {"+/b/+", "x/b/y", true},
	    {"+/+/+", "a/b", false},
	    /* '#' */
	    {"#", "a", true},
	    {"#", "a/b/c", true},
	    {"#", "/", true},
	    {"#", "", true},
	    {"a/#", "a", true},
	    {"a/#", "a/", true},
	    {"a/#", "a/b", true},
	    {"a/#", "a/b/c", true},
	    {"a/#", "ab", false},
	    {"a/#", "b/a", false},
	    {"a/b/#", "a", false},
	    {"a/b/#", "a/b", true},
	    {"/#", "/", true},
	    {"/#", "a", false},
	    {"+/#", "a", true},
	    {"+/#", "a/b/c", true},
	    {"a/+/#", "a/b", true},
	    {"a/+/#", "a", false},
	    /* '$' topics (4.7.2) */
	    {"#", "$SYS/x", false},
	    {"+/x", "$SYS/x", false},
	    {"+", "$SYS", false},
	    {"+/#", "$SYS/x", false},
	    {"$SYS/#", "$SYS/x", true},
	    {"$SYS/#", "$SYS", true},
	    {"$SYS/+", "$SYS/x", true},
	    {"$SYS/x", "$SYS/x", true},
	    {"$+/x", "$a/x", false},
	    {"a/#", "a/$SYS", true},
	    {"a/+", "a/$x", true},
	    {"#", "a$", true},
	};
	for (size_t i = 0; i < NELEM(t); i++) {
		mqtt_str f = dup_c(t[i].filter), tp = dup_c(t[i].topic);
		if (mqtt_topic_matches(f, tp) != t[i].match)
			fail_msg("\"%s\" vs \"%s\": want %s", t[i].filter, t[i].topic,
			         t[i].match ? "match" : "no match");
		drop(f);
		drop(tp);
	}
}

/* A literal filter matches exactly the equal topic; checked on generated pairs. */
static void test_matches_literal_equals(void **state)
{
	(void)state;
	static const char *const words[] = {"a", "ab", "", "x/y", "a/", "/a", "$s"};
	char f[16], t[16];
	for (size_t i = 0; i < NELEM(words); i++) {
		for (size_t j = 0; j < NELEM(words); j++) {
			snprintf(f, sizeof(f), "q/%s", words[i]);
			snprintf(t, sizeof(t), "q/%s", words[j]);
			mqtt_str fs = dup_c(f), ts = dup_c(t);
			assert_int_equal(mqtt_topic_matches(fs, ts), strcmp(f, t) == 0);
			drop(fs);
			drop(ts);
		}
	}
}

/* ------------------------------------------------------------ validation */

static void test_filter_valid(void **state)
{
	(void)state;
	static const struct {
		const char *f;
		bool ok;
	} t[] = {
	    {"a", true},      {"a/b/c", true},  {"/", true},       {"//", true},
	    {"#", true},      {"+", true},      {"a/#", true},     {"a/+", true},
	    {"+/a", true},    {"+/+/#", true},  {"/#", true},      {"+/", true},
	    {"$SYS/#", true}, {"a b", true},    {"", false},       {"a#", false},
	    {"#a", false},    {"a/#/b", false}, {"#/", false},     {"##", false},
	    {"a/b#", false},  {"a+", false},    {"+a", false},     {"a/+b/c", false},
	    {"a/b+", false},  {"++", false},    {"a/++/b", false}, {"sport/tennis#", false},
	};
	for (size_t i = 0; i < NELEM(t); i++) {
		mqtt_str s = dup_c(t[i].f);
		if (mqtt_topic_filter_valid(s) != t[i].ok)
			fail_msg("filter \"%s\": want %s", t[i].f, t[i].ok ? "valid" : "invalid");
		drop(s);
	}
}

static void test_name_valid_and_wildcard(void **state)
{
	(void)state;
	static const struct {
		const char *n;
		bool name_ok, wild;
	} t[] = {
	    {"a", true, false},
	    {"a/b", true, false},
	    {"/", true, false},
	    {"$SYS/x", true, false},
	    {"a b/\xc3\xa9", true, false},
	    {"", false, false},
	    {"+", false, true},
	    {"#", false, true},
	    {"a/+", false, true},
	    {"a/#", false, true},
	    {"a+b", false, true},
	    /* Long enough for the 8-byte scan, wildcard in every position class. */
	    {"abcdefgh", true, false},
	    {"abcdefghijklmnopqrstuvwx", true, false},
	    {"abcdefg+", false, true},
	    {"+bcdefgh", false, true},
	    {"abcdefghi#", false, true},
	    {"abcdefghijklmnop#", false, true},
	    {"abc#efghij", false, true},
	    {"abcdefg#", false, true},
	    {"abc+efghij", false, true},
	    {"a/b/c/d/e/f/g/h/#", false, true},
	    {"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7", true, false},
	    {"\xab\xab\xab\xab\xab\xab\xab\xab", true, false},
	    {"\xa3\xa3\xa3\xa3\xa3\xa3\xa3\xa3", true, false},
	};
	for (size_t i = 0; i < NELEM(t); i++) {
		mqtt_str s = dup_c(t[i].n);
		if (mqtt_topic_name_valid(s) != t[i].name_ok)
			fail_msg("name \"%s\": want %s", t[i].n,
			         t[i].name_ok ? "valid" : "invalid");
		if (mqtt_topic_is_wildcard(s) != t[i].wild)
			fail_msg("wildcard \"%s\": want %d", t[i].n, t[i].wild);
		drop(s);
	}
	assert_false(mqtt_topic_is_wildcard(MQTT_STR_NULL));
	assert_false(mqtt_topic_name_valid(MQTT_STR_NULL));
	assert_false(mqtt_topic_filter_valid(MQTT_STR_NULL));
}

static void test_levels(void **state)
{
	(void)state;
	static const struct {
		const char *t;
		uint32_t n;
	} t[] = {
	    {"", 0},
	    {"a", 1},
	    {"/", 2},
	    {"a/b", 2},
	    {"a/", 2},
	    {"/a", 2},
	    {"//", 3},
	    {"a/b/c/d", 4},
	    {"#", 1},
	    {"+/+/#", 3},
	    {"$SYS/broker/load", 3},
	};
	for (size_t i = 0; i < NELEM(t); i++) {
		mqtt_str s = dup_c(t[i].t);
		if (mqtt_topic_levels(s) != t[i].n)
			fail_msg("levels(\"%s\") = %u, want %u", t[i].t, mqtt_topic_levels(s),
			         t[i].n);
		drop(s);
	}
}

/* ------------------------------------------------------------ shared subscriptions */

static void test_shared_parse(void **state)
{
	(void)state;
	static const struct {
		const char *full;
		int rc;
		const char *group, *filter;
	} t[] = {
	    {"$share/g/a/b", 1, "g", "a/b"},
	    {"$share/group1/#", 1, "group1", "#"},
	    {"$share/g/+", 1, "g", "+"},
	    {"$share/g//", 1, "g", "/"},
	    {"$share/g/$SYS/x", 1, "g", "$SYS/x"},
	    {"$queue/a/b", 1, "$queue", "a/b"},
	    {"$queue/#", 1, "$queue", "#"},
	    {"$share/", -1, NULL, NULL},
	    {"$share/g", -1, NULL, NULL},
	    {"$share/g/", -1, NULL, NULL},
	    {"$share//x", -1, NULL, NULL},
	    {"$share/a+b/x", -1, NULL, NULL},
	    {"$share/+/x", -1, NULL, NULL},
	    {"$share/a#/x", -1, NULL, NULL},
	    {"$queue/", -1, NULL, NULL},
	    {"a/b", 0, NULL, NULL},
	    {"$share", 0, NULL, NULL},
	    {"$queue", 0, NULL, NULL},
	    {"$sharex/g/a", 0, NULL, NULL},
	    {"$SHARE/g/a", 0, NULL, NULL},
	    {"share/g/a", 0, NULL, NULL},
	    {"$SYS/x", 0, NULL, NULL},
	    {"", 0, NULL, NULL},
	};
	for (size_t i = 0; i < NELEM(t); i++) {
		mqtt_str full = dup_c(t[i].full);
		mqtt_str g = {(const uint8_t *)"untouched", 9}, f = g;
		int rc = mqtt_shared_parse(full, &g, &f);
		if (rc != t[i].rc)
			fail_msg("\"%s\": got %d want %d", t[i].full, rc, t[i].rc);
		if (rc == 1) {
			assert_true(mqtt_str_eq_c(g, t[i].group));
			assert_true(mqtt_str_eq_c(f, t[i].filter));
			/* Slices of the input, not copies. */
			assert_true(f.p >= full.p && f.p + f.len <= full.p + full.len);
			assert_true(g.p >= full.p && g.p + g.len <= full.p + full.len);
		} else if (rc == 0) {
			assert_true(mqtt_str_eq_c(g, "untouched"));
			assert_true(mqtt_str_eq_c(f, "untouched"));
		}
		drop(full);
	}
}

/* ------------------------------------------------------------ UTF-8 */

static void test_utf8(void **state)
{
	(void)state;
	/* clang-format off */
	static const struct {
		const char *name;
		const char *s;
		size_t len;
		bool ok;
	} t[] = {
#define U(name, lit, ok) {name, lit, sizeof(lit) - 1, ok}
		U("empty", "", true),
		U("ascii", "hello/world", true),
		U("U+0001", "\x01", true),
		U("U+007F", "\x7f", true),
		U("U+0080", "\xc2\x80", true),
		U("U+07FF", "\xdf\xbf", true),
		U("U+0800", "\xe0\xa0\x80", true),
		U("U+D7FF", "\xed\x9f\xbf", true),
		U("U+E000", "\xee\x80\x80", true),
		U("U+FEFF BOM", "\xef\xbb\xbf", true),
		U("U+FFFF", "\xef\xbf\xbf", true),
		U("U+10000", "\xf0\x90\x80\x80", true),
		U("U+10FFFF", "\xf4\x8f\xbf\xbf", true),
		U("mixed", "a\xc3\xa9" "b\xe2\x82\xac" "c\xf0\x9f\x98\x80" "d", true),
		U("long ascii", "abcdefghijklmnopqrstuvwxyz0123456789", true),
		U("long ascii then multibyte", "abcdefghijklmnop\xc3\xa9qrstuvwx", true),
		U("U+0000", "\x00", false),
		U("U+0000 inside", "ab\x00" "cd", false),
		U("U+0000 in 8-byte block", "abcdefg\x00" "hijklmnop", false),
		U("U+0000 at 9th byte", "abcdefgh\x00", false),
		U("overlong U+0000", "\xc0\x80", false),
		U("overlong '/'", "\xc0\xaf", false),
		U("overlong C1", "\xc1\xbf", false),
		U("overlong 3-byte", "\xe0\x80\xaf", false),
		U("overlong 3-byte max", "\xe0\x9f\xbf", false),
		U("overlong 4-byte", "\xf0\x80\x80\xaf", false),
		U("overlong 4-byte max", "\xf0\x8f\xbf\xbf", false),
		U("surrogate D800", "\xed\xa0\x80", false),
		U("surrogate DBFF", "\xed\xaf\xbf", false),
		U("surrogate DC00", "\xed\xb0\x80", false),
		U("surrogate DFFF", "\xed\xbf\xbf", false),
		U("surrogate pair", "\xed\xa0\xbd\xed\xb8\x80", false),
		U("U+110000", "\xf4\x90\x80\x80", false),
		U("F5 lead", "\xf5\x80\x80\x80", false),
		U("F8 lead", "\xf8\x88\x80\x80\x80", false),
		U("FE", "\xfe", false),
		U("FF", "\xff", false),
		U("lone continuation", "\x80", false),
		U("lone continuation after ascii", "abcdefghij\xbf", false),
		U("2-byte cut", "\xc3", false),
		U("3-byte cut", "\xe2\x82", false),
		U("4-byte cut", "\xf0\x9f\x98", false),
		U("2-byte bad continuation", "\xc3\x28", false),
		U("3-byte bad continuation", "\xe2\x28\xa1", false),
		U("3-byte bad third", "\xe2\x82\x28", false),
		U("4-byte bad fourth", "\xf0\x9f\x98\x28", false),
		U("continuation as lead in block", "abcdefg\x80", false),
#undef U
	};
	/* clang-format on */
	for (size_t i = 0; i < NELEM(t); i++) {
		mqtt_str s = dupn(t[i].s, t[i].len);
		if (mqtt_utf8_valid(s.p, s.len) != t[i].ok)
			fail_msg("%s: want %s", t[i].name, t[i].ok ? "valid" : "invalid");
		drop(s);
	}
	assert_true(mqtt_utf8_valid(NULL, 0));
}

/* Every code point, encoded by hand, is accepted exactly when the spec allows it. */
static void test_utf8_exhaustive(void **state)
{
	(void)state;
	uint8_t b[4];
	for (uint32_t cp = 0; cp <= 0x10FFFF; cp++) {
		size_t n;
		if (cp < 0x80) {
			b[0] = (uint8_t)cp;
			n = 1;
		} else if (cp < 0x800) {
			b[0] = (uint8_t)(0xC0 | (cp >> 6));
			b[1] = (uint8_t)(0x80 | (cp & 0x3F));
			n = 2;
		} else if (cp < 0x10000) {
			b[0] = (uint8_t)(0xE0 | (cp >> 12));
			b[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
			b[2] = (uint8_t)(0x80 | (cp & 0x3F));
			n = 3;
		} else {
			b[0] = (uint8_t)(0xF0 | (cp >> 18));
			b[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
			b[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
			b[3] = (uint8_t)(0x80 | (cp & 0x3F));
			n = 4;
		}
		bool want = cp != 0 && !(cp >= 0xD800 && cp <= 0xDFFF);
		if (mqtt_utf8_valid(b, n) != want)
			fail_msg("U+%04X: want %s", cp, want ? "valid" : "invalid");
		/* Any proper prefix of a multi-byte sequence is invalid. */
		for (size_t k = 1; k < n; k++)
			if (mqtt_utf8_valid(b, k))
				fail_msg("U+%04X prefix of %zu bytes accepted", cp, k);
	}
	/* Every single byte: exactly 0x01..0x7F stand alone. */
	for (int c = 0; c < 256; c++) {
		uint8_t x = (uint8_t)c;
		assert_int_equal(mqtt_utf8_valid(&x, 1), c >= 1 && c <= 0x7F);
	}
}

int main(void)
{
	/* clang-format off */
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_matches),
		cmocka_unit_test(test_matches_literal_equals),
		cmocka_unit_test(test_filter_valid),
		cmocka_unit_test(test_name_valid_and_wildcard),
		cmocka_unit_test(test_levels),
		cmocka_unit_test(test_shared_parse),
		cmocka_unit_test(test_utf8),
		cmocka_unit_test(test_utf8_exhaustive),
	};
	/* clang-format on */
	return cmocka_run_group_tests(tests, NULL, NULL);
}
