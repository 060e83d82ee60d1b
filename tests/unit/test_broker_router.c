/*
 * test_broker_router.c - the broker's two topic indexes against the codec's
 * matcher.
 *
 * router.c (subscriptions: exact filters hashed, wildcard filters in a trie)
 * and retain.c (retained topics in a trie walked by a filter) each implement
 * MQTT topic matching again, for speed. mqtt_topic_matches, tested on its own
 * in test_topic.c, is the oracle: for many random filters and topics drawn
 * from a small alphabet (so that matches, empty levels, '$' topics and
 * near-misses are common) both indexes must return exactly the set it
 * returns. Removal and pruning are checked the same way. The generator is a
 * fixed-seed PRNG, so a failure reproduces.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "broker/retain.h"
#include "broker/router.h"
#include "mqtt/mqtt.h"

static uint64_t rng = 0x2545F4914F6CDD1Dull;

static uint32_t rnd(uint32_t n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng % n);
}

static const char *const words[] = {"a", "b", "c", "", "$SYS", "dev", "x1"};
#define NWORDS (sizeof(words) / sizeof(words[0]))

/* A random topic name (no wildcards), 1..4 levels. */
static void gen_topic(char *out, size_t len)
{
	size_t n = 0;
	uint32_t levels = 1 + rnd(4);
	for (uint32_t i = 0; i < levels; i++) {
		/* '$' only at the start, where it changes wildcard semantics */
		const char *w = words[rnd(NWORDS)];
		if (i > 0 && w[0] == '$')
			w = "a";
		n += (size_t)snprintf(out + n, len - n, "%s%s", i ? "/" : "", w);
	}
	if (n == 0) /* one empty level is an empty, invalid, topic */
		snprintf(out, len, "a");
}

/* A random valid filter: levels are words, '+', or a final '#'. */
static void gen_filter(char *out, size_t len)
{
	size_t n = 0;
	uint32_t levels = 1 + rnd(4);
	for (uint32_t i = 0; i < levels; i++) {
		const char *w;
		uint32_t r = rnd(10);
		if (r < 3)
			w = "+";
		else if (r == 3 && i == levels - 1)
			w = "#";
		else
			w = words[rnd(NWORDS)];
		if (i > 0 && w[0] == '$')
			w = "b";
		n += (size_t)snprintf(out + n, len - n, "%s%s", i ? "/" : "", w);
	}
	if (n == 0)
		snprintf(out, len, "+");
}

#define NFILTERS 300
#define NTOPICS 300

static char filters[NFILTERS][64];
static char topics[NTOPICS][64];

typedef struct hits {
	uint8_t seen[NFILTERS];
	int dup;
} hits;

static void on_match(void *ctx, const sub_entry *e)
{
	hits *h = ctx;
	size_t i = (size_t)(uintptr_t)e->owner - 1;
	if (h->seen[i])
		h->dup++;
	h->seen[i] = 1;
	/* the options and id stored with the entry come back unchanged */
	assert_int_equal(e->options, (uint8_t)(i & 0x3f));
	assert_int_equal(e->sub_id, (uint32_t)i + 1000);
}

static void check_router(const router *r, const uint8_t *active)
{
	for (int t = 0; t < NTOPICS; t++) {
		hits h;
		memset(&h, 0, sizeof(h));
		mqtt_str topic = mqtt_str_c(topics[t]);
		router_match(r, topic, on_match, &h);
		assert_int_equal(h.dup, 0);
		for (int f = 0; f < NFILTERS; f++) {
			bool want = active[f] && mqtt_topic_matches(mqtt_str_c(filters[f]), topic);
			if (want != (bool)h.seen[f])
				fail_msg("router: filter '%s' topic '%s': want %d got %d", filters[f],
				         topics[t], want, h.seen[f]);
		}
	}
}

static void test_router_matches_like_the_codec(void **state)
{
	(void)state;
	for (int i = 0; i < NFILTERS; i++)
		gen_filter(filters[i], sizeof(filters[i]));
	for (int i = 0; i < NTOPICS; i++)
		gen_topic(topics[i], sizeof(topics[i]));
	router r;
	router_init(&r);
	uint8_t active[NFILTERS] = {0};
	/* each filter string is its own owner, so equal strings = several owners */
	for (int f = 0; f < NFILTERS; f++) {
		assert_true(mqtt_topic_filter_valid(mqtt_str_c(filters[f])));
		bool is_new;
		assert_int_equal(router_add(&r, mqtt_str_c(filters[f]), (void *)(uintptr_t)(f + 1),
		                            (uint8_t)(f & 0x3f), (uint32_t)f + 1000, &is_new),
		                 0);
		assert_true(is_new);
		active[f] = 1;
	}
	assert_int_equal(r.count, NFILTERS);
	check_router(&r, active);

	/* adding again updates, does not duplicate */
	bool is_new = true;
	assert_int_equal(router_add(&r, mqtt_str_c(filters[0]), (void *)(uintptr_t)1, 0, 1000,
	                            &is_new),
	                 0);
	assert_false(is_new);
	assert_int_equal(r.count, NFILTERS);
	router_add(&r, mqtt_str_c(filters[0]), (void *)(uintptr_t)1, 0, 1000, &is_new);

	/* remove half at random, check, then remove the rest: empty again */
	for (int f = 0; f < NFILTERS; f++) {
		if (rnd(2)) {
			assert_int_equal(router_remove(&r, mqtt_str_c(filters[f]), (void *)(uintptr_t)(f + 1)), 0);
			active[f] = 0;
		}
	}
	/* removing what is not there fails and changes nothing */
	assert_int_equal(router_remove(&r, mqtt_str_c("never/subscribed/+"), (void *)(uintptr_t)1), -1);
	check_router(&r, active);
	for (int f = 0; f < NFILTERS; f++)
		if (active[f])
			assert_int_equal(router_remove(&r, mqtt_str_c(filters[f]), (void *)(uintptr_t)(f + 1)), 0);
	assert_int_equal(r.count, 0);
	assert_int_equal(r.filters, 0);
	memset(active, 0, sizeof(active));
	check_router(&r, active);
	router_free(&r);
}

/* ---------------------------------------------------------------- retained */

typedef struct rhits {
	uint8_t seen[NTOPICS];
} rhits;

static void on_retained(void *ctx, kmq_msg *m)
{
	rhits *h = ctx;
	/* the payload carries the topic's index */
	int t = atoi((const char *)m->payload.p);
	assert_true(t >= 0 && t < NTOPICS);
	assert_int_equal(h->seen[t], 0);
	h->seen[t] = 1;
}

static kmq_msg *retained_msg(const char *topic, const char *payload)
{
	msg_init mi = {.topic = mqtt_str_c(topic), .payload = mqtt_str_c(payload), .retain = true};
	kmq_msg *m = msg_new(&mi);
	assert_non_null(m);
	return m;
}

static void check_retained(retain_store *s, const uint8_t *stored, int first_of[NTOPICS])
{
	for (int f = 0; f < NFILTERS; f++) {
		rhits h;
		memset(&h, 0, sizeof(h));
		retain_match(s, mqtt_str_c(filters[f]), 0, on_retained, &h);
		for (int t = 0; t < NTOPICS; t++) {
			/* duplicate topic strings are stored once, under the first index */
			bool want = stored[t] && first_of[t] == t &&
			            mqtt_topic_matches(mqtt_str_c(filters[f]), mqtt_str_c(topics[t]));
			if (want != (bool)h.seen[t])
				fail_msg("retain: filter '%s' topic '%s': want %d got %d", filters[f],
				         topics[t], want, h.seen[t]);
		}
	}
}

static void test_retained_store_matches_like_the_codec(void **state)
{
	(void)state;
	retain_store s;
	assert_int_equal(retain_init(&s, 0), 0);
	uint8_t stored[NTOPICS] = {0};
	int first_of[NTOPICS];
	for (int t = 0; t < NTOPICS; t++) {
		first_of[t] = t;
		for (int u = 0; u < t; u++)
			if (strcmp(topics[u], topics[t]) == 0) {
				first_of[t] = u;
				break;
			}
	}
	for (int t = 0; t < NTOPICS; t++) {
		if (first_of[t] != t)
			continue;
		char payload[16];
		snprintf(payload, sizeof(payload), "%d", t);
		kmq_msg *m = retained_msg(topics[t], payload);
		assert_int_equal(retain_set(&s, m), RETAIN_STORED);
		msg_unref(&m);
		stored[t] = 1;
	}
	check_retained(&s, stored, first_of);
	/* an empty payload deletes; deleting twice is a no-op */
	for (int t = 0; t < NTOPICS; t++) {
		if (first_of[t] != t || rnd(2))
			continue;
		kmq_msg *m = retained_msg(topics[t], "");
		assert_int_equal(retain_set(&s, m), RETAIN_DELETED);
		assert_int_equal(retain_set(&s, m), RETAIN_NOOP);
		msg_unref(&m);
		stored[t] = 0;
	}
	check_retained(&s, stored, first_of);
	uint64_t n = 0;
	for (int t = 0; t < NTOPICS; t++)
		n += stored[t] && first_of[t] == t;
	assert_int_equal(retain_count(&s), n);
	retain_destroy(&s);
}

static void test_retained_limit_and_expiry(void **state)
{
	(void)state;
	retain_store s;
	assert_int_equal(retain_init(&s, 2), 0);
	kmq_msg *a = retained_msg("t/a", "1"), *b = retained_msg("t/b", "1"),
	        *c = retained_msg("t/c", "1"), *a2 = retained_msg("t/a", "2");
	assert_int_equal(retain_set(&s, a), RETAIN_STORED);
	assert_int_equal(retain_set(&s, b), RETAIN_STORED);
	assert_int_equal(retain_set(&s, c), RETAIN_FULL);   /* a new topic beyond the limit */
	assert_int_equal(retain_set(&s, a2), RETAIN_STORED); /* replacing is still allowed */
	assert_int_equal(retain_count(&s), 2);
	/* expired messages are neither matched nor kept by a sweep */
	mqtt_props pr = {.present = MQTT_PF_MESSAGE_EXPIRY, .message_expiry = 10};
	msg_init mi = {.topic = mqtt_str_c("t/b"), .payload = mqtt_str_c("0"), .retain = true,
	               .props = &pr, .now_ms = 1000};
	kmq_msg *e = msg_new(&mi);
	assert_int_equal(retain_set(&s, e), RETAIN_STORED);
	rhits h;
	memset(&h, 0, sizeof(h));
	retain_match(&s, mqtt_str_c("t/b"), 5000, on_retained, &h); /* 4 s later: alive */
	assert_int_equal(h.seen[0], 1);
	assert_int_equal(retain_sweep(&s, 11001), 1); /* 10.001 s later: expired */
	assert_int_equal(retain_count(&s), 1);
	memset(&h, 0, sizeof(h));
	retain_match(&s, mqtt_str_c("#"), 11001, on_retained, &h);
	assert_int_equal(h.seen[2], 1); /* payload "2" of t/a */
	assert_int_equal(h.seen[0], 0);
	msg_unref(&a);
	msg_unref(&b);
	msg_unref(&c);
	msg_unref(&a2);
	msg_unref(&e);
	retain_destroy(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_router_matches_like_the_codec),
		cmocka_unit_test(test_retained_store_matches_like_the_codec),
		cmocka_unit_test(test_retained_limit_and_expiry),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
