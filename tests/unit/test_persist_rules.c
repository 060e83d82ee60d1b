/*
 * test_persist_rules.c - the `backend.<db>.*` keys: rule lines, pool keys
 * and global options, as the SQLite backend registers them.
 *
 * Design
 * ------
 * Every test starts like main(): a fresh registry, the bus created with
 * persist_new(reg, keepmq_backends) (which registers backend.sqlite.*), and
 * the defaults applied. A test then loads configuration text as file
 * "t.conf" with cfg_load_string() and runs persist_config_finish(), the
 * second step in which rules are checked against the pools. Both steps add
 * to one cfg_errors; tests check the number of errors and, by substring,
 * that each one names the file and line, the key and the reason.
 *
 * What a rule turned into is read through persist/internal.h (the rule
 * vector and the per-hook-point lists that persist_config_finish builds)
 * and through persist_metrics_json(), whose "rules" array lists the rules
 * in the sorted order (no pool is started: the metrics need none).
 *
 * Teardown releases the registry first (its rows belong to the bus), then
 * frees the bus, as main() does, so an ASan/LSan build finds every rule,
 * pool and compiled raw action freed, including replaced ones.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/registry.h"
#include "backends/sql/sql.h"
#include "config/config.h"
#include "persist/internal.h"
#include "persist/persist.h"

/* ------------------------------------------------------------------------ */
/* Fixture                                                                  */
/* ------------------------------------------------------------------------ */

static cfg_registry *reg;
static persist *bus;
static cfg_errors errs;
static int load_rc, finish_rc;

static void dump_errors(void)
{
	for (int i = 0; i < errs.n; i++)
		fprintf(stderr, "  error %d: %s\n", i, errs.e[i].msg);
}

static int setup(void **state)
{
	(void)state;
	memset(&errs, 0, sizeof(errs));
	load_rc = finish_rc = 0;
	reg = cfg_registry_new();
	assert_non_null(reg);
	bus = persist_new(reg, keepmq_backends);
	assert_non_null(bus);
	int rc = cfg_apply_defaults(reg, &errs);
	if (rc)
		dump_errors();
	assert_int_equal(rc, 0);
	assert_int_equal(errs.n, 0);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	/* the registry's rows belong to the bus: release the registry first */
	cfg_release(reg);
	cfg_registry_free(&reg);
	assert_null(reg);
	persist_free(&bus);
	assert_null(bus);
	return 0;
}

/* Starts again from nothing (several independent loads in one test). */
static void refresh(void)
{
	teardown(NULL);
	setup(NULL);
}

/* Loads text as t.conf, then finishes. Returns the number of errors. */
static int run(const char *text)
{
	load_rc = cfg_load_string(reg, "t.conf", text, strlen(text), &errs);
	finish_rc = persist_config_finish(bus, &errs);
	return errs.n;
}

static void expect_nerr(int n)
{
	if (errs.n != n)
		dump_errors();
	assert_int_equal(errs.n, n);
	assert_int_equal(errs.dropped, 0);
}

static bool has_err(const char *sub)
{
	for (int i = 0; i < errs.n; i++)
		if (strstr(errs.e[i].msg, sub))
			return true;
	return false;
}

static void expect_has_err(const char *sub)
{
	if (!has_err(sub)) {
		fprintf(stderr, "  no error contains: %s\n", sub);
		dump_errors();
	}
	assert_true(has_err(sub));
}

/* Asserts that error i contains every one of the NULL-terminated substrings. */
static void expect_err_parts(int i, ...)
{
	va_list ap;
	assert_true(i < errs.n);
	va_start(ap, i);
	for (const char *s = va_arg(ap, const char *); s; s = va_arg(ap, const char *)) {
		if (!strstr(errs.e[i].msg, s)) {
			fprintf(stderr, "  error %d lacks: %s\n", i, s);
			dump_errors();
		}
		assert_non_null(strstr(errs.e[i].msg, s));
	}
	va_end(ap);
}

static void expect_ok(const char *text)
{
	int n = run(text);
	if (n)
		fprintf(stderr, "  config:\n%s\n", text);
	expect_nerr(0);
	assert_int_equal(load_rc, 0);
	assert_int_equal(finish_rc, 0);
}

/* The SQLite backend (registered first, as in keepmq_backends[]). */
static pbackend *sqlite_be(void)
{
	pbackend *be = bus->backends;
	assert_non_null(be);
	assert_string_equal(be->type->name, "sqlite");
	return be;
}

/* The rule at (point, n), or NULL. */
static prule *rule_at(int point, int64_t n)
{
	pbackend *be = sqlite_be();
	for (size_t i = 0; i < be->nrules; i++)
		if (be->rule_vec[i]->point == point && be->rule_vec[i]->n == n)
			return be->rule_vec[i];
	return NULL;
}

static ppool *pool_named(const char *name)
{
	for (ppool *pl = sqlite_be()->pools; pl; pl = pl->next)
		if (strcmp(pl->name, name) == 0)
			return pl;
	return NULL;
}

static size_t count_at(int point)
{
	size_t n = 0;
	for (prule *r = bus->at[point]; r; r = r->next_at_point)
		n++;
	return n;
}

#define POOL "backend.sqlite.pool1.database = data/t.db\n"

/* One rule line with the default pool. */
static void rule_text(char *buf, size_t len, const char *point_n, const char *json)
{
	snprintf(buf, len, POOL "backend.sqlite.hook.%s = %s\n", point_n, json);
}

/* Loads POOL + one rule and expects exactly one error, on line 2, naming
 * the rule's key and containing `reason`. */
static void expect_rule_error(const char *point_n, const char *json, const char *reason)
{
	char text[4096], key[128];
	refresh();
	rule_text(text, sizeof(text), point_n, json);
	snprintf(key, sizeof(key), "t.conf:2: backend.sqlite.hook.%s: ", point_n);
	int n = run(text);
	if (n != 1)
		fprintf(stderr, "  config:\n%s", text);
	expect_nerr(1);
	expect_err_parts(0, key, reason, (const char *)NULL);
	assert_int_equal(load_rc, -1);
}

/* ------------------------------------------------------------------------ */
/* Valid rules                                                              */
/* ------------------------------------------------------------------------ */

struct good_rule {
	const char *point_n;
	const char *json;
	int point;
	const char *func; /* NULL: a raw action */
};

/* Every built-in function on every hook point it may be bound to, in the
 * spec's own style (etc/backends/sqlite.conf). */
static const struct good_rule good_rules[] = {
    {"client.connected.1", "{\"action\": {\"function\": \"on_client_connected\"}, \"pool\": \"pool1\"}",
     HOOK_CLIENT_CONNECTED, "on_client_connected"},
    {"client.connected.2", "{\"action\": {\"function\": \"on_subscribe_lookup\"}, \"pool\": \"pool1\"}",
     HOOK_CLIENT_CONNECTED, "on_subscribe_lookup"},
    {"session.created.1", "{\"action\": {\"function\": \"on_subscribe_lookup\"}, \"pool\": \"pool1\"}",
     HOOK_SESSION_CREATED, "on_subscribe_lookup"},
    {"client.disconnected.1",
     "{\"action\": {\"function\": \"on_client_disconnected\"}, \"pool\": \"pool1\"}",
     HOOK_CLIENT_DISCONNECTED, "on_client_disconnected"},
    {"session.subscribed.1",
     "{\"topic\": \"#\", \"action\": {\"function\": \"on_message_fetch\"}, \"pool\": \"pool1\"}",
     HOOK_SESSION_SUBSCRIBED, "on_message_fetch"},
    {"session.subscribed.3",
     "{\"topic\": \"#\", \"action\": {\"function\": \"on_message_fetch\"}, \"offline_opts\": "
     "{\"max_returned_count\": 500, \"time_range\": \"2h\"}, \"pool\": \"pool1\"}",
     HOOK_SESSION_SUBSCRIBED, "on_message_fetch"},
    {"session.subscribed.4",
     "{\"topic\": \"#\", \"action\": {\"function\": \"on_message_fetch\"}, \"offline_opts\": "
     "{\"max_returned_count\": \"infinity\", \"time_range\": \"infinity\"}, \"pool\": \"pool1\"}",
     HOOK_SESSION_SUBSCRIBED, "on_message_fetch"},
    {"session.subscribed.2",
     "{\"topic\": \"#\", \"action\": {\"function\": \"on_retain_lookup\"}, \"pool\": \"pool1\"}",
     HOOK_SESSION_SUBSCRIBED, "on_retain_lookup"},
    {"session.subscribed.5", "{\"action\": {\"function\": \"on_retain_lookup\"}, \"pool\": \"pool1\"}",
     HOOK_SESSION_SUBSCRIBED, "on_retain_lookup"},
    {"session.unsubscribed.1",
     "{\"topic\": \"#\", \"action\": {\"function\": \"on_acked_delete\"}, \"pool\": \"pool1\"}",
     HOOK_SESSION_UNSUBSCRIBED, "on_acked_delete"},
    {"message.publish.1",
     "{\"topic\": \"#\", \"action\": {\"function\": \"on_message_publish\"}, \"pool\": \"pool1\"}",
     HOOK_MESSAGE_PUBLISH, "on_message_publish"},
    {"message.publish.2",
     "{\"topic\": \"#\", \"action\": {\"function\": \"on_message_retain\"}, \"pool\": \"pool1\"}",
     HOOK_MESSAGE_PUBLISH, "on_message_retain"},
    {"message.publish.3",
     "{\"topic\": \"#\", \"action\": {\"function\": \"on_retain_delete\"}, \"pool\": \"pool1\"}",
     HOOK_MESSAGE_PUBLISH, "on_retain_delete"},
    {"message.publish.4",
     "{\"topic\": \"#\", \"action\": {\"function\": \"on_message_store\"}, \"pool\": \"pool1\"}",
     HOOK_MESSAGE_PUBLISH, "on_message_store"},
    {"message.acked.1",
     "{\"topic\": \"#\", \"action\": {\"function\": \"on_message_acked\"}, \"pool\": \"pool1\"}",
     HOOK_MESSAGE_ACKED, "on_message_acked"},
    {"client.connected.3",
     "{\"action\": {\"sql\": [\"insert into conn(clientid) values(${clientid})\"]}, \"pool\": "
     "\"pool1\"}",
     HOOK_CLIENT_CONNECTED, NULL},
    {"message.publish.5",
     "{\"topic\": \"sensors/+/temp\", \"action\": {\"sql\": \"insert into t(id, topic, v) "
     "values(${msgid}, ${topic}, ${payload})\"}}",
     HOOK_MESSAGE_PUBLISH, NULL},
    {"message.delivered.1",
     "{\"topic\": \"a/#\", \"action\": {\"sql\": \"insert into d(c, t) values(${clientid}, "
     "${topic})\"}}",
     HOOK_MESSAGE_DELIVERED, NULL},
};
#define NGOOD (sizeof(good_rules) / sizeof(good_rules[0]))

/* Each valid line on its own loads, is stored with its function and point,
 * and is bound to the only pool after finish. */
static void test_each_valid_rule(void **state)
{
	(void)state;
	for (size_t i = 0; i < NGOOD; i++) {
		const struct good_rule *g = &good_rules[i];
		char text[2048];
		refresh();
		rule_text(text, sizeof(text), g->point_n, g->json);
		expect_ok(text);
		pbackend *be = sqlite_be();
		assert_int_equal(be->nrules, 1);
		prule *r = be->rule_vec[0];
		assert_int_equal(r->point, g->point);
		if (g->func) {
			assert_non_null(r->func);
			assert_string_equal(r->func->name, g->func);
			assert_null(r->raw);
		} else {
			assert_null(r->func);
			assert_non_null(r->raw);
		}
		assert_non_null(r->pool);
		assert_string_equal(r->pool->name, "pool1");
		assert_true(r->pool->used);
		assert_ptr_equal(bus->at[g->point], r);
		assert_null(r->next_at_point);
		assert_true(persist_wants(bus, g->point));
		char key[128];
		snprintf(key, sizeof(key), "backend.sqlite.hook.%s", g->point_n);
		assert_string_equal(r->key, key);
		assert_string_equal(r->file, "t.conf");
		assert_int_equal(r->line, 2);
		for (int p = 0; p < HOOK__COUNT; p++)
			if (p != g->point)
				assert_false(persist_wants(bus, p));
	}
}

/* All of them together in one file. */
static void test_all_valid_rules_together(void **state)
{
	(void)state;
	char text[16384];
	size_t o = (size_t)snprintf(text, sizeof(text), "%s", POOL);
	for (size_t i = 0; i < NGOOD; i++)
		o += (size_t)snprintf(text + o, sizeof(text) - o, "backend.sqlite.hook.%s = %s\n",
		                      good_rules[i].point_n, good_rules[i].json);
	assert_true(o < sizeof(text));
	expect_ok(text);
	assert_int_equal(sqlite_be()->nrules, NGOOD);
	size_t total = 0;
	for (int p = 0; p < HOOK__COUNT; p++)
		total += count_at(p);
	assert_int_equal(total, NGOOD);
	assert_int_equal(count_at(HOOK_SESSION_SUBSCRIBED), 5);
	assert_int_equal(count_at(HOOK_MESSAGE_PUBLISH), 5);
	assert_int_equal(count_at(HOOK_CLIENT_CONNECTED), 3);
	assert_int_equal(count_at(HOOK_SESSION_CREATED), 1);
	assert_int_equal(persist_backend_count(bus), 1);
}

/* The path of a file in the source tree. */
static void source_path(char *buf, size_t len, const char *rel)
{
	const char *dir = getenv("KEEPMQ_SOURCE_DIR");
	if (dir && dir[0]) {
		snprintf(buf, len, "%s/%s", dir, rel);
		return;
	}
	/* run by hand: this file is tests/unit/test_persist_rules.c */
	snprintf(buf, len, "%s", __FILE__);
	char *cut = strstr(buf, "tests/unit/");
	assert_non_null(cut);
	snprintf(cut, len - (size_t)(cut - buf), "%s", rel);
}

/* The shipped etc/backends/sqlite.conf loads as is; then each commented-out
 * example (`## backend.sqlite...`) loads too when uncommented. */
static void test_shipped_sqlite_conf(void **state)
{
	(void)state;
	char path[1024];
	source_path(path, sizeof(path), "etc/backends/sqlite.conf");
	int rc = cfg_load_file(reg, path, &errs);
	finish_rc = persist_config_finish(bus, &errs);
	expect_nerr(0);
	assert_int_equal(rc, 0);
	assert_int_equal(finish_rc, 0);
	assert_int_equal(sqlite_be()->nrules, 10);
	assert_true(persist_wants(bus, HOOK_CLIENT_CONNECTED));
	assert_true(persist_wants(bus, HOOK_CLIENT_DISCONNECTED));
	assert_true(persist_wants(bus, HOOK_SESSION_SUBSCRIBED));
	assert_true(persist_wants(bus, HOOK_SESSION_UNSUBSCRIBED));
	assert_true(persist_wants(bus, HOOK_MESSAGE_PUBLISH));
	assert_true(persist_wants(bus, HOOK_MESSAGE_ACKED));
	assert_false(persist_wants(bus, HOOK_SESSION_CREATED));
	assert_false(persist_wants(bus, HOOK_MESSAGE_DELIVERED));
	assert_false(persist_sync_publish(bus)); /* delivery_mode = async */
	assert_true(persist_wants_filters(bus, HOOK_MESSAGE_ACKED));
	assert_false(persist_wants_filters(bus, HOOK_MESSAGE_DELIVERED));

	FILE *f = fopen(path, "r");
	assert_non_null(f);
	char line[2048];
	int examples = 0;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "## backend.sqlite.", 18) != 0)
			continue;
		/* later wins: the example replaces or adds to what the file set */
		int n = run(line + 3);
		if (n)
			fprintf(stderr, "  example: %s", line + 3);
		expect_nerr(0);
		examples++;
	}
	fclose(f);
	assert_true(examples >= 7);
}

/* offline_opts and the global options end up in the rule. */
static void test_offline_opts(void **state)
{
	(void)state;
	expect_ok(POOL
	          "backend.sqlite.hook.session.subscribed.1 = {\"topic\": \"#\", \"action\": "
	          "{\"function\": \"on_message_fetch\"}, \"pool\": \"pool1\"}\n"
	          "backend.sqlite.hook.session.subscribed.2 = {\"topic\": \"#\", \"action\": "
	          "{\"function\": \"on_message_fetch\"}, \"offline_opts\": {\"max_returned_count\": "
	          "500, \"time_range\": \"2h\"}, \"pool\": \"pool1\"}\n"
	          "backend.sqlite.hook.session.subscribed.3 = {\"topic\": \"#\", \"action\": "
	          "{\"function\": \"on_message_fetch\"}, \"offline_opts\": {\"max_returned_count\": "
	          "\"infinity\", \"time_range\": \"infinity\"}, \"pool\": \"pool1\"}\n"
	          "backend.sqlite.hook.session.subscribed.4 = {\"action\": {\"function\": "
	          "\"on_message_fetch\"}, \"offline_opts\": {\"max_returned_count\": \"20\", "
	          "\"time_range\": 90}}\n"
	          "backend.sqlite.hook.session.subscribed.5 = {\"action\": {\"function\": "
	          "\"on_message_fetch\"}, \"offline_opts\": {\"time_range\": \"30m\"}}\n");
	prule *r1 = rule_at(HOOK_SESSION_SUBSCRIBED, 1), *r2 = rule_at(HOOK_SESSION_SUBSCRIBED, 2),
	      *r3 = rule_at(HOOK_SESSION_SUBSCRIBED, 3), *r4 = rule_at(HOOK_SESSION_SUBSCRIBED, 4),
	      *r5 = rule_at(HOOK_SESSION_SUBSCRIBED, 5);
	assert_non_null(r1);
	assert_non_null(r2);
	assert_non_null(r3);
	assert_non_null(r4);
	assert_non_null(r5);
	/* no offline_opts: the global defaults, both "infinity" (no limit) */
	assert_true(r1->max_returned_count == INT64_MAX);
	assert_true(r1->time_range_ms >= (uint64_t)INT64_MAX);
	assert_true(r2->max_returned_count == 500);
	assert_true(r2->time_range_ms == 2 * 3600 * 1000ull);
	assert_true(r3->max_returned_count == INT64_MAX);
	assert_true(r3->time_range_ms >= (uint64_t)INT64_MAX);
	assert_true(r4->max_returned_count == 20);
	assert_true(r4->time_range_ms == 90 * 1000ull); /* a bare number: seconds */
	assert_true(r5->max_returned_count == INT64_MAX);
	assert_true(r5->time_range_ms == 30 * 60 * 1000ull);
	assert_string_equal(r1->topic, "#");
	assert_int_equal(r1->topic_len, 1);
	assert_null(r4->topic);
}

/* backend.sqlite.max_returned_count / time_range apply to rules without
 * offline_opts (or with only one of them). */
static void test_global_offline_options(void **state)
{
	(void)state;
	expect_ok(POOL "backend.sqlite.max_returned_count = 100\n"
	               "backend.sqlite.time_range = 2h\n"
	               "backend.sqlite.hook.session.subscribed.1 = {\"topic\": \"#\", \"action\": "
	               "{\"function\": \"on_message_fetch\"}, \"pool\": \"pool1\"}\n"
	               "backend.sqlite.hook.session.subscribed.2 = {\"topic\": \"#\", \"action\": "
	               "{\"function\": \"on_message_fetch\"}, \"offline_opts\": "
	               "{\"max_returned_count\": 7}, \"pool\": \"pool1\"}\n"
	               "backend.sqlite.hook.session.subscribed.3 = {\"topic\": \"#\", \"action\": "
	               "{\"function\": \"on_message_fetch\"}, \"offline_opts\": "
	               "{\"time_range\": \"infinity\"}, \"pool\": \"pool1\"}\n");
	prule *r1 = rule_at(HOOK_SESSION_SUBSCRIBED, 1), *r2 = rule_at(HOOK_SESSION_SUBSCRIBED, 2),
	      *r3 = rule_at(HOOK_SESSION_SUBSCRIBED, 3);
	assert_true(r1->max_returned_count == 100);
	assert_true(r1->time_range_ms == 7200000ull);
	assert_true(r2->max_returned_count == 7);
	assert_true(r2->time_range_ms == 7200000ull);
	assert_true(r3->max_returned_count == 100);
	assert_true(r3->time_range_ms >= (uint64_t)INT64_MAX);

	refresh();
	run("backend.sqlite.max_returned_count = -1\nbackend.sqlite.time_range = 2x\n");
	expect_nerr(2);
	expect_err_parts(0, "t.conf:1: backend.sqlite.max_returned_count: ", (const char *)NULL);
	expect_err_parts(1, "t.conf:2: backend.sqlite.time_range: ", (const char *)NULL);
	refresh();
	expect_ok("backend.sqlite.max_returned_count = infinity\nbackend.sqlite.time_range = "
	          "infinity\n");
}

/* ------------------------------------------------------------------------ */
/* Rule errors                                                              */
/* ------------------------------------------------------------------------ */

static void test_invalid_json(void **state)
{
	(void)state;
	expect_rule_error("client.connected.1", "{\"action\": {\"function\": \"on_client_connected\"}",
	                  "invalid JSON");
	expect_rule_error("client.connected.1", "{\"action\": {\"function\": on_client_connected}}",
	                  "invalid JSON at column");
	expect_rule_error("client.connected.1", "", "invalid JSON");
	expect_rule_error("client.connected.1", "not json", "invalid JSON");
	/* a key twice in one object is not guessed at */
	expect_rule_error("client.connected.1",
	                  "{\"action\": {\"function\": \"on_client_connected\"}, \"pool\": \"a\", "
	                  "\"pool\": \"pool1\"}",
	                  "invalid JSON");
}

/* The seeds' Cassandra example has `action":` without its opening quote. The
 * same line written for SQLite must be refused with file, line and key. */
static void test_seed_missing_quote_line(void **state)
{
	(void)state;
	const char *text =
	    POOL "## Delete Acked Record\n"
	         "backend.sqlite.hook.session.unsubscribed.1= {\"topic\": \"#\", action\": {\"sql\": "
	         "[\"delete from mqtt_acked where clientid = ${clientid} and topic = ${topic}\"]}, "
	         "\"pool\": \"pool1\"}\n";
	run(text);
	expect_nerr(1);
	expect_err_parts(0, "t.conf:3: ", "backend.sqlite.hook.session.unsubscribed.1: ",
	                 "invalid JSON", (const char *)NULL);
	assert_int_equal(load_rc, -1);
	assert_int_equal(sqlite_be()->nrules, 0);
	assert_false(persist_wants(bus, HOOK_SESSION_UNSUBSCRIBED));
}

static void test_non_object_rule(void **state)
{
	(void)state;
	expect_rule_error("client.connected.1", "[{\"action\": {\"function\": \"on_client_connected\"}}]",
	                  "a rule must be a JSON object");
	expect_rule_error("client.connected.1", "{\"action\": \"on_client_connected\"}",
	                  "\"action\" must be an object");
	expect_rule_error("client.connected.1", "{\"action\": {\"function\": 5}}",
	                  "\"function\" must be a string");
	expect_rule_error("client.connected.1", "{\"pool\": \"pool1\"}", "the rule has no \"action\"");
	expect_rule_error("client.connected.1",
	                  "{\"action\": {\"function\": \"on_client_connected\"}, \"pool\": 1}",
	                  "\"pool\" must be a pool name");
	expect_rule_error("client.connected.1",
	                  "{\"action\": {\"function\": \"on_client_connected\"}, \"pool\": \"\"}",
	                  "\"pool\" must be a pool name");
	expect_rule_error("client.connected.1",
	                  "{\"action\": {\"function\": \"on_client_connected\"}, \"topic\": 1}",
	                  "\"topic\" must be a string");
}

static void test_unknown_function(void **state)
{
	(void)state;
	/* the Cassandra text's spelling is not a SQLite function */
	expect_rule_error("client.connected.2", "{\"action\": {\"function\": \"on_subscription_lookup\"}}",
	                  "unknown function \"on_subscription_lookup\" for backend sqlite");
	/* the message lists every function the backend has */
	for (size_t i = 0; i < SQLF__COUNT; i++)
		expect_has_err(sql_funcs[i].name);
	expect_has_err("(it has: on_client_connected, on_client_disconnected, on_subscribe_lookup, "
	               "on_message_fetch, on_retain_lookup, on_message_publish, on_message_store, "
	               "on_message_retain, on_retain_delete, on_message_acked, on_acked_delete)");
	/* Redis/DynamoDB variants are not SQL functions */
	expect_rule_error("session.subscribed.1",
	                  "{\"action\": {\"function\": \"on_message_fetch_for_queue\"}}",
	                  "unknown function \"on_message_fetch_for_queue\"");
}

static void test_wrong_hook_point(void **state)
{
	(void)state;
	expect_rule_error("client.connected.1", "{\"action\": {\"function\": \"on_message_fetch\"}}",
	                  "function on_message_fetch cannot run on client.connected (it runs on "
	                  "session.subscribed)");
	expect_rule_error("session.subscribed.1", "{\"action\": {\"function\": \"on_subscribe_lookup\"}}",
	                  "function on_subscribe_lookup cannot run on session.subscribed (it runs on "
	                  "client.connected or session.created)");
	expect_rule_error("message.acked.1", "{\"action\": {\"function\": \"on_message_publish\"}}",
	                  "cannot run on message.acked");
	expect_rule_error("session.created.1", "{\"action\": {\"function\": \"on_client_connected\"}}",
	                  "cannot run on session.created");
	expect_rule_error("message.delivered.1", "{\"action\": {\"function\": \"on_message_acked\"}}",
	                  "cannot run on message.delivered (it runs on message.acked)");
	expect_rule_error("message.publish.1", "{\"action\": {\"function\": \"on_acked_delete\"}}",
	                  "(it runs on session.unsubscribed)");
}

static void test_function_and_sql(void **state)
{
	(void)state;
	expect_rule_error("client.connected.1",
	                  "{\"action\": {\"function\": \"on_client_connected\", \"sql\": \"insert into "
	                  "t values(${clientid})\"}}",
	                  "\"action\" has both \"function\" and \"sql\"");
	expect_rule_error("client.connected.1", "{\"action\": {}}",
	                  "\"action\" needs \"function\" or \"sql\"");
}

static void test_unknown_keys(void **state)
{
	(void)state;
	expect_rule_error("client.connected.1",
	                  "{\"action\": {\"function\": \"on_client_connected\"}, \"topics\": \"#\"}",
	                  "unknown key \"topics\" in the rule");
	expect_rule_error("client.connected.1",
	                  "{\"action\": {\"function\": \"on_client_connected\", \"cql\": \"x\"}}",
	                  "unknown key \"cql\" in \"action\"");
	expect_has_err("\"function\" or \"sql\"");
	expect_rule_error("client.connected.1", "{\"action\": {\"commands\": [\"x\"]}}",
	                  "unknown key \"commands\" in \"action\"");
	expect_rule_error("session.subscribed.1",
	                  "{\"action\": {\"function\": \"on_message_fetch\"}, \"offline_opts\": "
	                  "{\"max_returned_count\": 5, \"limit\": 3}}",
	                  "unknown key \"limit\" in \"offline_opts\"");
	expect_rule_error("session.subscribed.1",
	                  "{\"action\": {\"function\": \"on_message_fetch\"}, \"offline_opts\": 5}",
	                  "\"offline_opts\" must be an object");
}

static void test_bad_offline_opts(void **state)
{
	(void)state;
	static const char *const counts[] = {"-1", "\"many\"", "true", "1.5", "\"-3\"", "null"};
	for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
		char json[256];
		snprintf(json, sizeof(json),
		         "{\"action\": {\"function\": \"on_message_fetch\"}, \"offline_opts\": "
		         "{\"max_returned_count\": %s}}",
		         counts[i]);
		expect_rule_error("session.subscribed.1", json,
		                  "\"offline_opts\".\"max_returned_count\" must be");
	}
	static const char *const ranges[] = {"\"2x\"", "-5", "true", "\"\"", "\"-2h\"", "[1]"};
	for (size_t i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++) {
		char json[256];
		snprintf(json, sizeof(json),
		         "{\"action\": {\"function\": \"on_message_fetch\"}, \"offline_opts\": "
		         "{\"time_range\": %s}}",
		         ranges[i]);
		expect_rule_error("session.subscribed.1", json, "\"offline_opts\".\"time_range\" must be");
	}
}

/*
 * A time_range given as a bare number of seconds too large for milliseconds
 * in 64 bits must not wrap around to a short range: either it is refused or
 * it means "no limit". (18446744073709552 s * 1000 wraps to 384 ms.)
 */
static void test_time_range_seconds_overflow(void **state)
{
	(void)state;
	char text[1024];
	rule_text(text, sizeof(text), "session.subscribed.1",
	          "{\"action\": {\"function\": \"on_message_fetch\"}, \"offline_opts\": "
	          "{\"time_range\": 18446744073709552}}");
	run(text);
	if (errs.n == 0) {
		prule *r = rule_at(HOOK_SESSION_SUBSCRIBED, 1);
		assert_non_null(r);
		if (r->time_range_ms < (uint64_t)INT64_MAX)
			fprintf(stderr, "  time_range 18446744073709552 s became %llu ms\n",
			        (unsigned long long)r->time_range_ms);
		assert_true(r->time_range_ms >= (uint64_t)INT64_MAX);
	} else {
		expect_nerr(1);
		expect_has_err("time_range");
	}
}

static void test_bad_topic_filter(void **state)
{
	(void)state;
	static const char *const bad[] = {"a/#/b", "a#", "a/b+", "+a", "", "#/"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char json[256], reason[128];
		snprintf(json, sizeof(json),
		         "{\"topic\": \"%s\", \"action\": {\"function\": \"on_message_publish\"}}", bad[i]);
		snprintf(reason, sizeof(reason), "\"topic\": \"%s\" is not a valid topic filter", bad[i]);
		expect_rule_error("message.publish.1", json, reason);
	}
	/* a NUL in the filter (JSON \u0000 is refused by the JSON reader already) */
	expect_rule_error("message.publish.1",
	                  "{\"topic\": \"a\\u0000b\", \"action\": {\"function\": \"on_message_publish\"}}",
	                  "backend.sqlite.hook.message.publish.1");
	/* valid ones */
	static const char *const good[] = {"a/+/b", "#", "+", "a/b/#", "$SYS/#", "a//b", "/"};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		char text[512], json[256];
		refresh();
		snprintf(json, sizeof(json),
		         "{\"topic\": \"%s\", \"action\": {\"function\": \"on_message_publish\"}}",
		         good[i]);
		rule_text(text, sizeof(text), "message.publish.1", json);
		expect_ok(text);
		assert_string_equal(rule_at(HOOK_MESSAGE_PUBLISH, 1)->topic, good[i]);
	}
}

static void test_unknown_hook_point(void **state)
{
	(void)state;
	expect_rule_error("client.connect.1", "{\"action\": {\"function\": \"on_client_connected\"}}",
	                  "unknown hook point \"client.connect\"");
	expect_has_err("client.connected, client.disconnected, session.created");
	expect_rule_error("message.published.1", "{\"action\": {\"function\": \"on_message_publish\"}}",
	                  "unknown hook point \"message.published\"");
	expect_rule_error("session.subscribed.extra.1",
	                  "{\"action\": {\"function\": \"on_message_fetch\"}}",
	                  "unknown hook point \"session.subscribed.extra\"");
}

static void test_rule_number(void **state)
{
	(void)state;
	expect_rule_error("client.connected.first", "{\"action\": {\"function\": \"on_client_connected\"}}",
	                  "the rule number \"first\" is not a whole number");
	expect_rule_error("client.connected.-1", "{\"action\": {\"function\": \"on_client_connected\"}}",
	                  "the rule number \"-1\" is not a whole number");
	expect_rule_error("client.connected.1x", "{\"action\": {\"function\": \"on_client_connected\"}}",
	                  "the rule number \"1x\" is not a whole number");
	expect_rule_error("client.connected.99999999999999999999",
	                  "{\"action\": {\"function\": \"on_client_connected\"}}",
	                  "is not a whole number");
	/* 0 and large numbers are fine */
	char text[512];
	refresh();
	rule_text(text, sizeof(text), "client.connected.0",
	          "{\"action\": {\"function\": \"on_client_connected\"}}");
	expect_ok(text);
	refresh();
	rule_text(text, sizeof(text), "client.connected.9223372036854775807",
	          "{\"action\": {\"function\": \"on_client_connected\"}}");
	expect_ok(text);
	assert_string_equal(sqlite_be()->rule_vec[0]->key,
	                    "backend.sqlite.hook.client.connected.9223372036854775807");
}

/* ${...} in raw SQL is checked when the line is read. */
static void test_raw_sql_errors(void **state)
{
	(void)state;
	expect_rule_error("client.connected.1",
	                  "{\"action\": {\"sql\": \"insert into t values(${clientId})\"}}",
	                  "\"sql\": unknown variable ${clientId}");
	expect_rule_error("client.connected.1",
	                  "{\"action\": {\"sql\": \"insert into t values('${clientid}')\"}}",
	                  "inside a quoted string");
	expect_rule_error("client.connected.1",
	                  "{\"action\": {\"sql\": \"insert into t values(\\\"${clientid}\\\")\"}}",
	                  "inside a quoted name");
	expect_rule_error("client.connected.1", "{\"action\": {\"sql\": \"insert into t values(?)\"}}",
	                  "a bare '?'");
	expect_rule_error("client.connected.1",
	                  "{\"action\": {\"sql\": \"insert into t values('x, ${clientid})\"}}",
	                  "inside a quoted string");
	expect_rule_error("client.connected.1", "{\"action\": {\"sql\": \"insert into t values('x)\"}}",
	                  "unterminated quote");
	expect_rule_error("client.connected.1",
	                  "{\"action\": {\"sql\": \"insert into t values(${clientid)\"}}",
	                  "\"${\" without \"}\"");
	expect_rule_error("client.connected.1",
	                  "{\"action\": {\"sql\": [\"insert into a values(${clientid})\", \"insert "
	                  "into b values(${nope})\"]}}",
	                  "\"sql\": statement 2: unknown variable ${nope}");
	expect_rule_error("client.connected.1", "{\"action\": {\"sql\": []}}", "\"sql\" is empty");
	expect_rule_error("client.connected.1", "{\"action\": {\"sql\": [\"x\", 5]}}",
	                  "\"sql\" must be a list of strings");
	expect_rule_error("client.connected.1", "{\"action\": {\"sql\": 5}}",
	                  "\"sql\" must be a string or a list of strings");
}

/*
 * A raw statement with no SQL in it can never do anything: SQLite prepares
 * it to no statement at all, and every job of the rule would then fail at
 * run time with no message. It is refused when the line is read, like an
 * empty list.
 */
static void test_raw_sql_empty_statement(void **state)
{
	(void)state;
	expect_rule_error("client.connected.1", "{\"action\": {\"sql\": \"\"}}", "\"sql\"");
	expect_rule_error("client.connected.1", "{\"action\": {\"sql\": \"   \"}}", "\"sql\"");
	expect_rule_error("client.connected.1",
	                  "{\"action\": {\"sql\": [\"insert into a values(${clientid})\", \"\"]}}",
	                  "\"sql\"");
}

/*
 * SQL's own parameters in a raw statement would take the values meant for
 * the ${name}s (bound in order) and shift the rest: refused when the line is
 * read, naming file, line and key. So is a second statement in one string
 * (SQLite would run only the first) and a ${name} in a comment.
 */
static void test_raw_sql_own_parameters(void **state)
{
	(void)state;
	static const char *const params[] = {"?1", ":name", "@name", "$name", "#name", "?"};
	for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++) {
		char json[256];
		snprintf(json, sizeof(json),
		         "{\"action\": {\"sql\": \"insert into t(a, b) values(%s, ${clientid})\"}}",
		         params[i]);
		expect_rule_error("client.connected.1", json, "\"sql\": ");
		expect_has_err(params[i]);
		expect_has_err("offset 27");
		expect_has_err("use ${name} for values");
	}
	/* in the second statement of a list */
	expect_rule_error("message.publish.1",
	                  "{\"action\": {\"sql\": [\"insert into a values(${clientid})\", \"insert "
	                  "into b values(${topic}, :qos)\"]}}",
	                  "\"sql\": statement 2: SQL's own parameter \":qos\"");
	/* as data they are fine */
	char text[1024];
	refresh();
	rule_text(text, sizeof(text), "client.connected.1",
	          "{\"action\": {\"sql\": \"insert into t(a, b) values(':x ?', ${clientid}) -- ?1\"}}");
	expect_ok(text);
	const sql_raw *raw = rule_at(HOOK_CLIENT_CONNECTED, 1)->raw;
	assert_string_equal(raw->t[0].text, "insert into t(a, b) values(':x ?', ?) -- ?1");
	assert_int_equal(raw->t[0].nvars, 1);
}

static void test_raw_sql_one_statement(void **state)
{
	(void)state;
	expect_rule_error("client.connected.1",
	                  "{\"action\": {\"sql\": \"insert into a values(${clientid}); delete from "
	                  "b\"}}",
	                  "\"sql\": a second statement at offset 35");
	expect_has_err("give each statement its own string");
	expect_rule_error("client.connected.1",
	                  "{\"action\": {\"sql\": [\"insert into a values(${clientid})\", \"delete "
	                  "from b; delete from c\"]}}",
	                  "\"sql\": statement 2: a second statement");
	expect_rule_error("client.connected.1",
	                  "{\"action\": {\"sql\": \"insert into a values(1) -- ${clientid}\"}}",
	                  "\"sql\": ${...} inside a comment");
	expect_rule_error("client.connected.1",
	                  "{\"action\": {\"sql\": \"insert into a values(1) /* ${clientid}\"}}",
	                  "\"sql\": ");
	expect_rule_error("client.connected.1", "{\"action\": {\"sql\": \"-- nothing\"}}",
	                  "\"sql\": an empty statement");
	/* a trailing ';' and comments are fine, in the list too */
	char text[1024];
	refresh();
	rule_text(text, sizeof(text), "client.connected.1",
	          "{\"action\": {\"sql\": [\"insert into a values(${clientid});\", \"/* then */ "
	          "delete from b where c = ${clientid}; -- done\\n\"]}}");
	expect_ok(text);
	const sql_raw *raw = rule_at(HOOK_CLIENT_CONNECTED, 1)->raw;
	assert_int_equal(raw->n, 2);
	assert_string_equal(raw->t[0].text, "insert into a values(?);");
	assert_string_equal(raw->t[1].text, "/* then */ delete from b where c = ?; -- done\n");
}

/*
 * Keys the SQLite backend has no use for are errors, not silently ignored:
 * `expired_time` (Redis's) and `payload_format` (MongoDB's). The spec's SQL
 * examples never use them.
 */
static void test_keys_of_other_backends(void **state)
{
	(void)state;
	expect_rule_error("message.publish.1",
	                  "{\"topic\": \"#\", \"action\": {\"function\": \"on_message_publish\"}, "
	                  "\"expired_time\": 3600}",
	                  "\"expired_time\" is a Redis rule key: no SQLite function or raw action "
	                  "uses it");
	expect_rule_error("message.publish.1",
	                  "{\"topic\": \"#\", \"action\": {\"function\": \"on_message_publish\"}, "
	                  "\"payload_format\": \"mongo_json\"}",
	                  "\"payload_format\" is a MongoDB rule key");
	expect_rule_error("client.connected.1",
	                  "{\"action\": {\"sql\": \"insert into t values(${clientid})\"}, "
	                  "\"payload_format\": \"plain_text\", \"pool\": \"pool1\"}",
	                  "\"payload_format\"");
	/* whatever its value */
	expect_rule_error("message.publish.1",
	                  "{\"action\": {\"function\": \"on_message_publish\"}, \"expired_time\": "
	                  "\"x\"}",
	                  "\"expired_time\" is a Redis rule key");
}

/*
 * A topic filter on a hook point whose events carry no topic
 * (client.connected, client.disconnected, session.created) would never
 * match: refused, naming the hook point.
 */
static void test_topic_on_hook_without_topic(void **state)
{
	(void)state;
	expect_rule_error("client.connected.1",
	                  "{\"topic\": \"#\", \"action\": {\"function\": \"on_client_connected\"}}",
	                  "\"topic\" cannot be used on client.connected: its events have no topic");
	expect_rule_error("client.disconnected.2",
	                  "{\"topic\": \"a/+\", \"action\": {\"function\": \"on_client_disconnected\"}}",
	                  "\"topic\" cannot be used on client.disconnected");
	expect_rule_error("session.created.1",
	                  "{\"topic\": \"#\", \"action\": {\"function\": \"on_subscribe_lookup\"}}",
	                  "\"topic\" cannot be used on session.created");
	expect_rule_error("client.connected.3",
	                  "{\"topic\": \"#\", \"action\": {\"sql\": [\"insert into conn(clientid) "
	                  "values(${clientid})\"]}, \"pool\": \"pool1\"}",
	                  "\"topic\" cannot be used on client.connected");
	/* every other hook point takes one */
	static const char *const ok[][2] = {
	    {"session.subscribed.1", "on_message_fetch"},
	    {"session.unsubscribed.1", "on_acked_delete"},
	    {"message.publish.1", "on_message_publish"},
	    {"message.acked.1", "on_message_acked"},
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		char text[512], json[256];
		refresh();
		snprintf(json, sizeof(json), "{\"topic\": \"a/#\", \"action\": {\"function\": \"%s\"}}",
		         ok[i][1]);
		rule_text(text, sizeof(text), ok[i][0], json);
		expect_ok(text);
	}
	refresh();
	char text[512];
	rule_text(text, sizeof(text), "message.delivered.1",
	          "{\"topic\": \"a/#\", \"action\": {\"sql\": \"insert into d values(${topic})\"}}");
	expect_ok(text);
}

/* A raw action is compiled into '?' placeholders bound in order. */
static void test_raw_sql_compiled(void **state)
{
	(void)state;
	expect_ok(POOL "backend.sqlite.hook.message.publish.1 = {\"topic\": \"#\", \"action\": "
	               "{\"sql\": [\"insert into m(id, topic, payload) values(${msgid}, ${topic}, "
	               "${payload})\", \"update c set n = n + 1 where id = ${clientid} and note = "
	               "'it''s'\"]}, \"pool\": \"pool1\"}\n");
	prule *r = rule_at(HOOK_MESSAGE_PUBLISH, 1);
	assert_non_null(r);
	assert_null(r->func);
	const sql_raw *raw = r->raw;
	assert_non_null(raw);
	assert_int_equal(raw->n, 2);
	assert_string_equal(raw->t[0].text, "insert into m(id, topic, payload) values(?, ?, ?)");
	assert_int_equal(raw->t[0].nvars, 3);
	assert_int_equal(raw->t[0].vars[0], SV_MSGID);
	assert_int_equal(raw->t[0].vars[1], SV_TOPIC);
	assert_int_equal(raw->t[0].vars[2], SV_PAYLOAD);
	assert_string_equal(raw->t[1].text, "update c set n = n + 1 where id = ? and note = 'it''s'");
	assert_int_equal(raw->t[1].nvars, 1);
	assert_int_equal(raw->t[1].vars[0], SV_CLIENTID);
}

/* ------------------------------------------------------------------------ */
/* Rules against pools (persist_config_finish)                              */
/* ------------------------------------------------------------------------ */

static void test_unknown_pool(void **state)
{
	(void)state;
	run(POOL "# a comment\n"
	         "backend.sqlite.hook.client.connected.1 = {\"action\": {\"function\": "
	         "\"on_client_connected\"}, \"pool\": \"pool2\"}\n");
	expect_nerr(1);
	assert_int_equal(load_rc, 0); /* pools are checked once every file is read */
	assert_int_equal(finish_rc, -1);
	expect_err_parts(0, "t.conf:3: backend.sqlite.hook.client.connected.1: ",
	                 "pool \"pool2\" is not configured", "backend.sqlite.pool2.",
	                 (const char *)NULL);
	assert_false(persist_wants(bus, HOOK_CLIENT_CONNECTED));
	assert_null(bus->at[HOOK_CLIENT_CONNECTED]);
}

static void test_no_pool_two_pools(void **state)
{
	(void)state;
	run(POOL "backend.sqlite.pool2.database = data/u.db\n"
	         "backend.sqlite.hook.client.connected.1 = {\"action\": {\"function\": "
	         "\"on_client_connected\"}}\n"
	         "backend.sqlite.hook.client.connected.2 = {\"action\": {\"function\": "
	         "\"on_subscribe_lookup\"}, \"pool\": \"pool2\"}\n");
	expect_nerr(1);
	assert_int_equal(finish_rc, -1);
	expect_err_parts(0, "t.conf:3: backend.sqlite.hook.client.connected.1: ",
	                 "the rule has no \"pool\" and the backend has several", (const char *)NULL);
	/* the good rule is still bound */
	assert_ptr_equal(bus->at[HOOK_CLIENT_CONNECTED], rule_at(HOOK_CLIENT_CONNECTED, 2));
	assert_ptr_equal(rule_at(HOOK_CLIENT_CONNECTED, 2)->pool, pool_named("pool2"));
	assert_false(pool_named("pool1")->used);
	assert_true(pool_named("pool2")->used);
}

static void test_no_pool_no_pools(void **state)
{
	(void)state;
	run("backend.sqlite.hook.client.connected.1 = {\"action\": {\"function\": "
	    "\"on_client_connected\"}}\n");
	expect_nerr(1);
	assert_int_equal(finish_rc, -1);
	expect_err_parts(0, "t.conf:1: backend.sqlite.hook.client.connected.1: ",
	                 "the rule has no \"pool\" and backend sqlite has no pool configured",
	                 (const char *)NULL);
	assert_int_equal(persist_backend_count(bus), 0);
	assert_false(persist_wants(bus, HOOK_CLIENT_CONNECTED));
}

static void test_pool_named_hook(void **state)
{
	(void)state;
	run("backend.sqlite.hook.database = data/t.db\nbackend.sqlite.hook.pool_size = 2\n");
	expect_nerr(2);
	expect_err_parts(0, "t.conf:1: backend.sqlite.hook.database: ",
	                 "\"hook\" cannot be a pool name", (const char *)NULL);
	expect_err_parts(1, "t.conf:2: backend.sqlite.hook.pool_size: ",
	                 "\"hook\" cannot be a pool name", (const char *)NULL);
	assert_null(sqlite_be()->pools);
}

static void test_pool_name_length(void **state)
{
	(void)state;
	char name[80], text[256];
	memset(name, 'p', 63);
	name[63] = 0;
	snprintf(text, sizeof(text), "backend.sqlite.%s.database = data/t.db\n", name);
	expect_ok(text);
	assert_non_null(pool_named(name));
	refresh();
	memset(name, 'p', 64);
	name[64] = 0;
	snprintf(text, sizeof(text), "backend.sqlite.%s.database = data/t.db\n", name);
	run(text);
	expect_nerr(1);
	expect_has_err("longer than 63 characters");
}

/* ------------------------------------------------------------------------ */
/* Order, replacement, wants                                                */
/* ------------------------------------------------------------------------ */

/* A rule line set twice (same point and n): the later wins, no error. */
static void test_rule_set_twice(void **state)
{
	(void)state;
	expect_ok(POOL "backend.sqlite.hook.client.connected.1 = {\"action\": {\"sql\": \"insert "
	               "into a values(${clientid})\"}}\n"
	               "backend.sqlite.hook.client.connected.1 = {\"action\": {\"function\": "
	               "\"on_client_connected\"}}\n"
	               "backend.sqlite.hook.message.publish.1 = {\"topic\": \"a/#\", \"action\": "
	               "{\"function\": \"on_message_publish\"}}\n"
	               "backend.sqlite.hook.message.publish.1 = {\"topic\": \"b/#\", \"action\": "
	               "{\"function\": \"on_message_store\"}}\n");
	pbackend *be = sqlite_be();
	assert_int_equal(be->nrules, 2);
	prule *c = rule_at(HOOK_CLIENT_CONNECTED, 1);
	assert_non_null(c->func);
	assert_string_equal(c->func->name, "on_client_connected");
	assert_null(c->raw);
	assert_int_equal(c->line, 3);
	prule *m = rule_at(HOOK_MESSAGE_PUBLISH, 1);
	assert_string_equal(m->func->name, "on_message_store");
	assert_string_equal(m->topic, "b/#");
	assert_int_equal(m->line, 5);
	assert_int_equal(count_at(HOOK_CLIENT_CONNECTED), 1);
	assert_int_equal(count_at(HOOK_MESSAGE_PUBLISH), 1);
	/* and once more from a second "file" */
	int rc = cfg_load_string(reg, "u.conf",
	                         "backend.sqlite.hook.client.connected.1 = {\"action\": {\"sql\": "
	                         "\"insert into b values(${clientid})\"}}\n",
	                         strlen("backend.sqlite.hook.client.connected.1 = {\"action\": "
	                                "{\"sql\": \"insert into b values(${clientid})\"}}\n"),
	                         &errs);
	assert_int_equal(rc, 0);
	assert_int_equal(persist_config_finish(bus, &errs), 0);
	expect_nerr(0);
	c = rule_at(HOOK_CLIENT_CONNECTED, 1);
	assert_null(c->func);
	assert_non_null(c->raw);
	assert_string_equal(c->file, "u.conf");
	assert_int_equal(c->line, 1);
	assert_int_equal(sqlite_be()->nrules, 2);
}

/* The rules of a point run in <n> order (numeric, not textual), whatever
 * the order of the lines; the metrics list them in that order too. */
static void test_rule_order(void **state)
{
	(void)state;
	expect_ok(POOL
	          "backend.sqlite.hook.client.connected.10 = {\"action\": {\"sql\": \"insert into "
	          "t10 values(${clientid})\"}}\n"
	          "backend.sqlite.hook.message.publish.1 = {\"action\": {\"function\": "
	          "\"on_message_publish\"}}\n"
	          "backend.sqlite.hook.client.connected.2 = {\"action\": {\"function\": "
	          "\"on_subscribe_lookup\"}}\n"
	          "backend.sqlite.hook.client.connected.9 = {\"action\": {\"sql\": \"insert into t9 "
	          "values(${clientid})\"}}\n"
	          "backend.sqlite.hook.client.connected.1 = {\"action\": {\"function\": "
	          "\"on_client_connected\"}}\n"
	          "backend.sqlite.hook.client.connected.010 = {\"action\": {\"sql\": \"insert into "
	          "t010 values(${clientid})\"}}\n");
	/* "010" is rule 10 again: it replaced the first line */
	static const int64_t want[] = {1, 2, 9, 10};
	size_t i = 0;
	for (prule *r = bus->at[HOOK_CLIENT_CONNECTED]; r; r = r->next_at_point, i++) {
		assert_true(i < 4);
		assert_int_equal(r->n, want[i]);
	}
	assert_int_equal(i, 4);
	const sql_raw *raw10 = rule_at(HOOK_CLIENT_CONNECTED, 10)->raw;
	assert_string_equal(raw10->t[0].text, "insert into t010 values(?)");

	char *js = persist_metrics_json(bus);
	assert_non_null(js);
	json_error_t je;
	json_t *root = json_loads(js, 0, &je);
	free(js);
	assert_non_null(root);
	json_t *rules = json_object_get(json_object_get(root, "sqlite"), "rules");
	assert_true(json_is_array(rules));
	assert_int_equal(json_array_size(rules), 5);
	static const char *const keys[] = {
	    "backend.sqlite.hook.client.connected.1",  "backend.sqlite.hook.client.connected.2",
	    "backend.sqlite.hook.client.connected.9",  "backend.sqlite.hook.client.connected.10",
	    "backend.sqlite.hook.message.publish.1",
	};
	static const char *const actions[] = {"on_client_connected", "on_subscribe_lookup", "sql",
	                                      "sql", "on_message_publish"};
	for (size_t k = 0; k < 5; k++) {
		json_t *o = json_array_get(rules, k);
		assert_string_equal(json_string_value(json_object_get(o, "rule")), keys[k]);
		assert_string_equal(json_string_value(json_object_get(o, "action")), actions[k]);
		assert_string_equal(json_string_value(json_object_get(o, "pool")), "pool1");
		assert_int_equal(json_integer_value(json_object_get(o, "matched")), 0);
		assert_int_equal(json_integer_value(json_object_get(o, "queuing")), 0);
	}
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(root, "sqlite"), "delivery_mode")),
	    "async");
	json_decref(root);
}

static void test_wants_and_sync(void **state)
{
	(void)state;
	for (int p = 0; p < HOOK__COUNT; p++)
		assert_false(persist_wants(bus, p));
	assert_false(persist_sync_publish(bus));
	assert_false(persist_wants(NULL, HOOK_CLIENT_CONNECTED));
	assert_false(persist_sync_publish(NULL));

	/* sync mode without message.publish rules: nothing waits for a commit */
	expect_ok(POOL "backend.sqlite.delivery_mode = sync\n"
	               "backend.sqlite.hook.message.acked.1 = {\"topic\": \"#\", \"action\": "
	               "{\"function\": \"on_message_acked\"}}\n"
	               "backend.sqlite.hook.message.delivered.1 = {\"action\": {\"sql\": \"insert "
	               "into d values(${msgid})\"}}\n");
	assert_false(persist_sync_publish(bus));
	assert_true(persist_wants(bus, HOOK_MESSAGE_ACKED));
	assert_true(persist_wants(bus, HOOK_MESSAGE_DELIVERED));
	assert_false(persist_wants(bus, HOOK_MESSAGE_PUBLISH));
	assert_true(persist_wants_filters(bus, HOOK_MESSAGE_ACKED));
	assert_true(persist_wants_filters(bus, HOOK_MESSAGE_DELIVERED));
	assert_false(persist_wants_filters(bus, HOOK_MESSAGE_PUBLISH));

	refresh();
	expect_ok(POOL "backend.sqlite.delivery_mode = sync\n"
	               "backend.sqlite.hook.message.publish.1 = {\"topic\": \"#\", \"action\": "
	               "{\"function\": \"on_message_publish\"}}\n");
	assert_true(persist_sync_publish(bus));
	assert_true(persist_wants(bus, HOOK_MESSAGE_PUBLISH));
	assert_false(persist_wants_filters(bus, HOOK_MESSAGE_ACKED));
	char *js = persist_metrics_json(bus);
	assert_non_null(js);
	assert_non_null(strstr(js, "\"delivery_mode\":\"sync\""));
	free(js);

	refresh();
	expect_ok(POOL "backend.sqlite.delivery_mode = async\n"
	               "backend.sqlite.hook.message.publish.1 = {\"topic\": \"#\", \"action\": "
	               "{\"function\": \"on_message_publish\"}}\n");
	assert_false(persist_sync_publish(bus));

	/* a rule refused at finish (unknown pool) does not make its point wanted */
	refresh();
	run(POOL "backend.sqlite.delivery_mode = sync\n"
	         "backend.sqlite.hook.message.publish.1 = {\"action\": {\"function\": "
	         "\"on_message_publish\"}, \"pool\": \"nope\"}\n");
	expect_nerr(1);
	assert_false(persist_wants(bus, HOOK_MESSAGE_PUBLISH));
	assert_false(persist_sync_publish(bus));
}

static void test_delivery_mode(void **state)
{
	(void)state;
	expect_ok("backend.sqlite.delivery_mode = async\n");
	assert_int_equal(sqlite_be()->delivery_mode, DELIVERY_ASYNC);
	expect_ok("backend.sqlite.delivery_mode = sync\n");
	assert_int_equal(sqlite_be()->delivery_mode, DELIVERY_SYNC);
	static const char *const bad[] = {"maybe", "SYNC", "Async", "1", "sync ish"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char text[128], sub[64];
		refresh();
		snprintf(text, sizeof(text), "\nbackend.sqlite.delivery_mode = %s\n", bad[i]);
		run(text);
		expect_nerr(1);
		snprintf(sub, sizeof(sub), "\"%s\" is not one of: async, sync", bad[i]);
		expect_err_parts(0, "t.conf:2: backend.sqlite.delivery_mode: ", sub, (const char *)NULL);
	}
}

/* ------------------------------------------------------------------------ */
/* Pool keys                                                                */
/* ------------------------------------------------------------------------ */

static void test_pool_keys(void **state)
{
	(void)state;
	expect_ok("backend.sqlite.pool1.database = /var/lib/keepmq/k.db\n"
	          "backend.sqlite.pool1.pool_size = 4\n"
	          "backend.sqlite.pool1.batch_size = 500\n"
	          "backend.sqlite.pool1.batch_time = 20ms\n"
	          "backend.sqlite.pool1.max_queue = 5000\n"
	          "backend.sqlite.pool1.retry_max_backoff = 30s\n"
	          "backend.sqlite.pool1.busy_timeout = 2s\n"
	          "backend.sqlite.pool1.synchronous = full\n"
	          "backend.sqlite.archive.database = data/archive.db\n");
	ppool *pl = pool_named("pool1");
	assert_non_null(pl);
	assert_int_equal(pl->pool_size, 4);
	assert_int_equal(pl->batch_size, 500);
	assert_int_equal(pl->batch_time_ms, 20);
	assert_int_equal(pl->max_queue, 5000);
	assert_int_equal(pl->retry_max_ms, 30000);
	assert_string_equal(*(char **)pl->cfg, "/var/lib/keepmq/k.db"); /* database is first */
	assert_string_equal(pl->file, "t.conf");
	assert_int_equal(pl->line, 1);
	ppool *ar = pool_named("archive");
	assert_non_null(ar);
	/* the defaults: SQLite's pool size is 1 */
	assert_int_equal(ar->pool_size, 1);
	assert_int_equal(ar->batch_size, 100);
	assert_int_equal(ar->batch_time_ms, 0);
	assert_int_equal(ar->max_queue, 1000000);
	assert_int_equal(ar->retry_max_ms, 10000);
	assert_string_equal(*(char **)ar->cfg, "data/archive.db");
	assert_int_equal(persist_backend_count(bus), 1);
	/* a database set twice: the later wins (and the first string is freed) */
	expect_ok("backend.sqlite.pool1.database = data/second.db\n");
	assert_string_equal(*(char **)pool_named("pool1")->cfg, "data/second.db");
}

/* A pool that only sets e.g. pool_size gets the backend's default database. */
static void test_pool_default_database(void **state)
{
	(void)state;
	expect_ok("backend.sqlite.pool1.pool_size = 2\n");
	assert_string_equal(*(char **)pool_named("pool1")->cfg, "data/keepmq.db");
}

/* An empty database is refused when the pools are checked. */
static void test_pool_empty_database(void **state)
{
	(void)state;
	run("\nbackend.sqlite.pool1.database =\n");
	expect_nerr(1);
	assert_int_equal(finish_rc, -1);
	expect_err_parts(0, "t.conf:2: backend.sqlite.pool1: ", "database", (const char *)NULL);
}

struct range_case {
	const char *key;
	const char *value;
	const char *reason;
};

static void test_pool_key_ranges(void **state)
{
	(void)state;
	static const struct range_case bad[] = {
	    {"pool_size", "0", "below the minimum"},
	    {"pool_size", "-1", ""},
	    {"pool_size", "257", "above the maximum"},
	    {"pool_size", "many", "is not"},
	    {"pool_size", "", "missing value"},
	    {"batch_size", "0", "below the minimum"},
	    {"batch_size", "100001", "above the maximum"},
	    {"batch_time", "11s", "above the maximum"},
	    {"batch_time", "5x", "is not"},
	    {"max_queue", "0", "below the minimum"},
	    {"retry_max_backoff", "5ms", "below the minimum"},
	    {"retry_max_backoff", "2h", "above the maximum"},
	    {"busy_timeout", "11m", "above the maximum"},
	    {"synchronous", "off", "is not one of: normal, full"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char text[256], where[128];
		refresh();
		snprintf(text, sizeof(text), POOL "backend.sqlite.pool1.%s = %s\n", bad[i].key,
		         bad[i].value);
		run(text);
		if (errs.n != 1)
			fprintf(stderr, "  config:\n%s", text);
		expect_nerr(1);
		snprintf(where, sizeof(where), "t.conf:2: backend.sqlite.pool1.%s: ", bad[i].key);
		expect_err_parts(0, where, bad[i].reason, (const char *)NULL);
	}
	/* the bounds themselves are accepted */
	refresh();
	expect_ok(POOL "backend.sqlite.pool1.pool_size = 1\nbackend.sqlite.pool2.pool_size = 256\n"
	               "backend.sqlite.pool1.batch_time = 0\nbackend.sqlite.pool2.batch_time = 10s\n"
	               "backend.sqlite.pool1.retry_max_backoff = 10ms\n"
	               "backend.sqlite.pool2.retry_max_backoff = 1h\n"
	               "backend.sqlite.pool1.batch_size = 1\nbackend.sqlite.pool1.max_queue = 1\n");
	assert_int_equal(pool_named("pool2")->pool_size, 256);
	assert_int_equal(pool_named("pool2")->retry_max_ms, 3600000);
}

static void test_unknown_pool_key(void **state)
{
	(void)state;
	run(POOL "backend.sqlite.pool1.databse = x\n");
	expect_nerr(1);
	expect_err_parts(0, "t.conf:2: ", "unknown key", "backend.sqlite.pool1.databse",
	                 (const char *)NULL);
}

/* Several bad lines: every one reported, each with its own line. */
static void test_errors_collected(void **state)
{
	(void)state;
	run(POOL
	    "backend.sqlite.hook.client.connected.1 = {\"action\": {\"function\": \"nope\"}}\n"
	    "backend.sqlite.hook.client.connected.2 = {\"action\": {\"function\": "
	    "\"on_client_connected\"}}\n"
	    "backend.sqlite.pool1.pool_size = 0\n"
	    "backend.sqlite.hook.message.publish.1 = {\"topic\": \"a/#/b\", \"action\": "
	    "{\"function\": \"on_message_publish\"}}\n"
	    "backend.sqlite.hook.message.acked.1 = {\"action\": {\"function\": "
	    "\"on_message_acked\"}, \"pool\": \"pool9\"}\n");
	expect_nerr(4);
	expect_err_parts(0, "t.conf:2: ", "unknown function \"nope\"", (const char *)NULL);
	expect_err_parts(1, "t.conf:4: backend.sqlite.pool1.pool_size: ", (const char *)NULL);
	expect_err_parts(2, "t.conf:5: ", "not a valid topic filter", (const char *)NULL);
	expect_err_parts(3, "t.conf:6: ", "pool \"pool9\" is not configured", (const char *)NULL);
	/* the good rule survives */
	assert_true(persist_wants(bus, HOOK_CLIENT_CONNECTED));
	assert_false(persist_wants(bus, HOOK_MESSAGE_PUBLISH));
	assert_false(persist_wants(bus, HOOK_MESSAGE_ACKED));
}

/* Rules are kept in a growing vector: many of them, then finish twice. */
static void test_many_rules(void **state)
{
	(void)state;
	size_t cap = 200 * 160 + 64;
	char *text = malloc(cap);
	assert_non_null(text);
	size_t o = (size_t)snprintf(text, cap, "%s", POOL);
	for (int i = 199; i >= 0; i--)
		o += (size_t)snprintf(text + o, cap - o,
		                      "backend.sqlite.hook.message.publish.%d = {\"topic\": \"t/%d\", "
		                      "\"action\": {\"function\": \"on_message_store\"}}\n",
		                      i, i);
	assert_true(o < cap);
	expect_ok(text);
	free(text);
	assert_int_equal(sqlite_be()->nrules, 200);
	int64_t n = 0;
	for (prule *r = bus->at[HOOK_MESSAGE_PUBLISH]; r; r = r->next_at_point, n++)
		assert_int_equal(r->n, n);
	assert_int_equal(n, 200);
	/* finishing again rebuilds the same lists */
	assert_int_equal(persist_config_finish(bus, &errs), 0);
	assert_int_equal(count_at(HOOK_MESSAGE_PUBLISH), 200);
}

/*
 * Finishing with no rule at all (the broker without persistence, or with
 * pools only) is fine and wants nothing. Under UBSan this also checks that
 * no NULL vector reaches qsort (a nonnull argument even when the count is 0).
 */
static void test_finish_without_rules(void **state)
{
	(void)state;
	assert_int_equal(persist_config_finish(bus, &errs), 0);
	expect_nerr(0);
	for (int p = 0; p < HOOK__COUNT; p++)
		assert_false(persist_wants(bus, p));
	assert_int_equal(persist_backend_count(bus), 0);
	refresh();
	expect_ok(POOL);
	assert_int_equal(persist_backend_count(bus), 1);
	assert_false(pool_named("pool1")->used);
	for (int p = 0; p < HOOK__COUNT; p++)
		assert_false(persist_wants(bus, p));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	    T(test_finish_without_rules),
	    T(test_each_valid_rule),
	    T(test_all_valid_rules_together),
	    T(test_shipped_sqlite_conf),
	    T(test_offline_opts),
	    T(test_global_offline_options),
	    T(test_invalid_json),
	    T(test_seed_missing_quote_line),
	    T(test_non_object_rule),
	    T(test_unknown_function),
	    T(test_wrong_hook_point),
	    T(test_function_and_sql),
	    T(test_unknown_keys),
	    T(test_bad_offline_opts),
	    T(test_time_range_seconds_overflow),
	    T(test_bad_topic_filter),
	    T(test_unknown_hook_point),
	    T(test_rule_number),
	    T(test_raw_sql_errors),
	    T(test_raw_sql_empty_statement),
	    T(test_raw_sql_compiled),
	    T(test_raw_sql_own_parameters),
	    T(test_raw_sql_one_statement),
	    T(test_keys_of_other_backends),
	    T(test_topic_on_hook_without_topic),
	    T(test_unknown_pool),
	    T(test_no_pool_two_pools),
	    T(test_no_pool_no_pools),
	    T(test_pool_named_hook),
	    T(test_pool_name_length),
	    T(test_rule_set_twice),
	    T(test_rule_order),
	    T(test_wants_and_sync),
	    T(test_delivery_mode),
	    T(test_pool_keys),
	    T(test_pool_default_database),
	    T(test_pool_empty_database),
	    T(test_pool_key_ranges),
	    T(test_unknown_pool_key),
	    T(test_errors_collected),
	    T(test_many_rules),
#undef T
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
