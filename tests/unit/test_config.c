/*
 * test_config.c - unit tests of the configuration registry (src/config).
 *
 * Design
 * ------
 * Every test starts from a fresh registry holding one table of offset-stored
 * rows (one or more per type, with bounds, infinity, secret, required and
 * hidden flags) and several single-row tables whose rows use a set callback
 * that records each call (row tag, captures, text, parsed value) in a global
 * log. Giving each callback row its own table gives it its own target, the
 * tag, so tests can tell which row won a key.
 *
 * Error messages are compared exactly where the format is part of the
 * contract ("file:line: key: message", the header's examples) and by
 * substring elsewhere. Include tests build file trees under a mkdtemp()
 * directory that teardown removes. The suite runs under ASan/LSan, so a
 * string that is not freed on replacement or by cfg_release fails the run.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"

/* ------------------------------------------------------------------------ */
/* Fixture                                                                  */
/* ------------------------------------------------------------------------ */

struct conf {
	bool retain;
	int64_t inflight;   /* [16, 1000] */
	int64_t offset;     /* unbounded */
	int64_t queued;     /* [0, 100000], infinity */
	uint64_t packet;    /* [16B, 256MB] */
	uint64_t store;     /* unbounded, infinity */
	uint64_t keepalive; /* [1s, 1d] */
	uint64_t expiry;    /* unbounded, infinity */
	char *name;
	char *data_dir;
	int level;
	cfg_addr bind;
	double ratio;     /* [0, 1] */
	int64_t pin;      /* secret, [1000, 9999] */
	char *password;   /* secret, required */
	int mode;         /* secret enum */
	int64_t internal; /* hidden */
};

static const char *const levels[] = {"debug", "info", "warning", NULL};
static const char *const modes[] = {"plain", "hashed", NULL};

#define MB     (1024ll * 1024)
#define DAY_MS (86400000ll)

static const cfg_key conf_keys[] = {
    {"mqtt.retain_available", CFG_BOOL, "on", 0, 0, NULL, offsetof(struct conf, retain), NULL, 0,
     "Whether retained messages are supported."},
    {"mqtt.max_inflight", CFG_INT, "32", 16, 1000, NULL, offsetof(struct conf, inflight), NULL, 0,
     "Messages in flight per session."},
    {"mqtt.offset", CFG_INT, NULL, 0, 0, NULL, offsetof(struct conf, offset), NULL, 0,
     "An unbounded integer."},
    {"mqtt.max_queued", CFG_INT, "1000", 0, 100000, NULL, offsetof(struct conf, queued), NULL,
     CFG_F_INFINITY, "Queue length per session."},
    {"mqtt.max_packet_size", CFG_SIZE, "1MB", 16, 256 * MB, NULL, offsetof(struct conf, packet),
     NULL, 0, "The largest packet accepted from a client."},
    {"mqtt.max_store", CFG_SIZE, NULL, 0, 0, NULL, offsetof(struct conf, store), NULL,
     CFG_F_INFINITY, "Store budget."},
    {"mqtt.keepalive", CFG_DURATION, "15s", 1000, DAY_MS, NULL, offsetof(struct conf, keepalive),
     NULL, 0, "Keepalive."},
    {"mqtt.session_expiry", CFG_DURATION, NULL, 0, 0, NULL, offsetof(struct conf, expiry), NULL,
     CFG_F_INFINITY, "Session expiry."},
    {"node.name", CFG_STRING, "keepmq@127.0.0.1", 0, 0, NULL, offsetof(struct conf, name), NULL, 0,
     "The node name."},
    {"node.data_dir", CFG_PATH, NULL, 0, 0, NULL, offsetof(struct conf, data_dir), NULL, 0,
     "Where data lives."},
    {"log.level", CFG_ENUM, "info", 0, 0, levels, offsetof(struct conf, level), NULL, 0,
     "Log level."},
    {"listener.bind", CFG_ADDR, ":1883", 0, 0, NULL, offsetof(struct conf, bind), NULL, 0,
     "Listen address."},
    {"overload.ratio", CFG_DOUBLE, "0.8", 0, 1, NULL, offsetof(struct conf, ratio), NULL, 0,
     "Overload ratio."},
    {"auth.pin", CFG_INT, NULL, 1000, 9999, NULL, offsetof(struct conf, pin), NULL, CFG_F_SECRET,
     "A secret number."},
    {"auth.password", CFG_STRING, NULL, 0, 0, NULL, offsetof(struct conf, password), NULL,
     CFG_F_SECRET | CFG_F_REQUIRED, "The password."},
    {"auth.mode", CFG_ENUM, NULL, 0, 0, modes, offsetof(struct conf, mode), NULL, CFG_F_SECRET,
     "A secret choice."},
    {"debug.internal", CFG_INT, "7", 0, 0, NULL, offsetof(struct conf, internal), NULL,
     CFG_F_HIDDEN, "Internal knob."},
};

/* Set-callback log. */
struct call {
	char tag[48];
	int ncap;
	char cap[CFG_MAX_CAPTURES][128];
	char text[128];
	cfg_value v;
};

struct tag {
	const char *name;
};

#define MAX_CALLS 64
static struct call calls[MAX_CALLS];
static int ncalls;

static int record(void *target, const char *const *captures, int ncaptures, const cfg_value *value,
                  char *err, size_t errlen)
{
	const struct tag *t = target;
	if (strcmp(value->text, "reject") == 0) {
		snprintf(err, errlen, "rejected %s", ncaptures ? captures[0] : "-");
		return -1;
	}
	if (strcmp(value->text, "silent-reject") == 0)
		return -1;
	if (ncalls == MAX_CALLS)
		return 0;
	struct call *c = &calls[ncalls++];
	snprintf(c->tag, sizeof(c->tag), "%s", t->name);
	c->ncap = ncaptures;
	for (int i = 0; i < ncaptures && i < CFG_MAX_CAPTURES; i++)
		snprintf(c->cap[i], sizeof(c->cap[i]), "%s", captures[i]);
	snprintf(c->text, sizeof(c->text), "%s", value->text);
	c->v = *value;
	c->v.text = NULL;
	return 0;
}

/* One callback row per table, so each gets its own tag as target. */
struct cb_row {
	struct tag tag;
	cfg_key key;
};

static struct cb_row cb_rows[] = {
    {{"listener.bind"},
     {"listener.tcp.<name>.bind", CFG_ADDR, NULL, 0, 0, NULL, 0, record, 0,
      "Address of a TCP listener."}},
    {{"listener.maxconn"},
     {"listener.tcp.<name>.max_connections", CFG_INT, "1024", 1, 1000000, NULL, 0, record,
      CFG_F_INFINITY, "Connection limit of a listener."}},
    {{"hook"},
     {"backend.redis.hook.<hookpoint...>.<n>", CFG_STRING, NULL, 0, 0, NULL, 0, record, 0,
      "A redis command run at a hook point."}},
    {{"zone.generic"}, {"zone.<name>.<setting>", CFG_STRING, NULL, 0, 0, NULL, 0, record, 0, NULL}},
    {{"zone.name.max"}, {"zone.<name>.max", CFG_STRING, NULL, 0, 0, NULL, 0, record, 0, NULL}},
    {{"zone.eu.setting"}, {"zone.eu.<setting>", CFG_STRING, NULL, 0, 0, NULL, 0, record, 0, NULL}},
    {{"zone.eu.max"}, {"zone.eu.max", CFG_STRING, NULL, 0, 0, NULL, 0, record, 0, NULL}},
    {{"tie.one"}, {"tie.<a>.end", CFG_STRING, NULL, 0, 0, NULL, 0, record, 0, NULL}},
    {{"tie.multi"}, {"tie.<b...>.end", CFG_STRING, NULL, 0, 0, NULL, 0, record, 0, NULL}},
    {{"two"}, {"two.<a...>.<b...>.y", CFG_STRING, NULL, 0, 0, NULL, 0, record, 0, NULL}},
};

static cfg_registry *reg;
static struct conf conf;
static cfg_errors errs;
static char tmpdir[64];
#define TPATH 256 /* paths under tmpdir */

static int setup(void **state)
{
	(void)state;
	memset(&conf, 0, sizeof(conf));
	memset(&errs, 0, sizeof(errs));
	memset(calls, 0, sizeof(calls));
	ncalls = 0;
	tmpdir[0] = '\0';
	reg = cfg_registry_new();
	assert_non_null(reg);
	assert_int_equal(cfg_register(reg, "MQTT", "Settings of the *MQTT* protocol layer.",
	                              conf_keys, sizeof(conf_keys) / sizeof(conf_keys[0]), &conf),
	                 0);
	for (size_t i = 0; i < sizeof(cb_rows) / sizeof(cb_rows[0]); i++)
		assert_int_equal(
		    cfg_register(reg, "Listeners", NULL, &cb_rows[i].key, 1, &cb_rows[i].tag), 0);
	return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int teardown(void **state)
{
	(void)state;
	cfg_release(reg);
	cfg_registry_free(&reg);
	assert_null(reg);
	if (tmpdir[0])
		nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}

static void dump_errors(void)
{
	for (int i = 0; i < errs.n; i++)
		fprintf(stderr, "  error %d: %s\n", i, errs.e[i].msg);
}

static int load(const char *text)
{
	return cfg_load_string(reg, "t.conf", text, strlen(text), &errs);
}

static void expect_nerr(int n)
{
	if (errs.n != n)
		dump_errors();
	assert_int_equal(errs.n, n);
}

/* Asserts that error i is exactly msg. */
static void expect_err(int i, const char *msg)
{
	if (i >= errs.n || strcmp(errs.e[i].msg, msg) != 0) {
		fprintf(stderr, "  expected error %d: %s\n", i, msg);
		dump_errors();
	}
	assert_true(i < errs.n);
	assert_string_equal(errs.e[i].msg, msg);
}

/* Whether some error contains sub. */
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

static void reset_errs(void)
{
	memset(&errs, 0, sizeof(errs));
}

/* Loads "key = value" as the only line and expects it to be accepted. */
static void load_ok(const char *key, const char *value)
{
	char line[512];
	snprintf(line, sizeof(line), "%s = %s\n", key, value);
	reset_errs();
	int rc = load(line);
	if (rc || errs.n)
		fprintf(stderr, "  line: %s", line);
	expect_nerr(0);
	assert_int_equal(rc, 0);
}

/* Loads "key = value" and expects exactly one error, returned. */
static const char *load_bad(const char *key, const char *value)
{
	char line[512];
	snprintf(line, sizeof(line), "%s = %s\n", key, value);
	reset_errs();
	int rc = load(line);
	if (errs.n != 1)
		fprintf(stderr, "  line: %s", line);
	expect_nerr(1);
	assert_int_equal(rc, -1);
	return errs.e[0].msg;
}

static void mktmp(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/keepmq-test-config-XXXXXX");
	assert_non_null(mkdtemp(tmpdir));
}

/* Writes content to tmpdir/rel, creating directories on the way. */
static void write_file(const char *rel, const char *content)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/%s", tmpdir, rel);
	for (char *p = path + strlen(tmpdir) + 1; (p = strchr(p, '/')); p++) {
		*p = '\0';
		mkdir(path, 0700);
		*p = '/';
	}
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(content, f);
	fclose(f);
}

static const char *tmp_path(char *buf, size_t n, const char *rel)
{
	snprintf(buf, n, "%s/%s", tmpdir, rel);
	return buf;
}

/* ------------------------------------------------------------------------ */
/* Value types                                                              */
/* ------------------------------------------------------------------------ */

static void test_bool(void **state)
{
	static const struct {
		const char *text;
		bool want;
	} good[] = {{"on", true},  {"OFF", false}, {"True", true}, {"false", false},
	            {"YES", true}, {"no", false},  {"1", true},    {"0", false}};
	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		conf.retain = !good[i].want;
		load_ok("mqtt.retain_available", good[i].text);
		assert_int_equal(conf.retain, good[i].want);
	}
	conf.retain = true;
	assert_string_equal(
	    load_bad("mqtt.retain_available", "maybe"),
	    "t.conf:1: mqtt.retain_available: \"maybe\" is not a boolean (use on/off, "
	    "true/false, yes/no or 1/0)");
	load_bad("mqtt.retain_available", "2");
	load_bad("mqtt.retain_available", "onn");
	assert_string_equal(
	    load_bad("mqtt.retain_available", ""),
	    "t.conf:1: mqtt.retain_available: missing value: expected a boolean (use "
	    "on/off, true/false, yes/no or 1/0)");
	assert_true(conf.retain); /* a rejected value leaves the old one */
}

static void test_int(void **state)
{
	(void)state;
	load_ok("mqtt.max_inflight", "16");
	assert_int_equal(conf.inflight, 16);
	load_ok("mqtt.max_inflight", "1000");
	assert_int_equal(conf.inflight, 1000);
	assert_string_equal(load_bad("mqtt.max_inflight", "1"),
	                    "t.conf:1: mqtt.max_inflight: 1 is below the minimum 16");
	assert_string_equal(load_bad("mqtt.max_inflight", "1001"),
	                    "t.conf:1: mqtt.max_inflight: 1001 is above the maximum 1000");
	assert_string_equal(load_bad("mqtt.max_inflight", "-5"),
	                    "t.conf:1: mqtt.max_inflight: -5 is below the minimum 16");
	assert_string_equal(load_bad("mqtt.max_inflight", "12x"),
	                    "t.conf:1: mqtt.max_inflight: \"12x\" is not an integer");
	load_bad("mqtt.max_inflight", "+20");
	load_bad("mqtt.max_inflight", "20.0");
	load_bad("mqtt.max_inflight", "0x20");
	load_bad("mqtt.max_inflight", "2 0");
	load_bad("mqtt.max_inflight", "-");
	load_bad("mqtt.max_inflight", "");
	assert_int_equal(conf.inflight, 1000);

	load_ok("mqtt.offset", "-9223372036854775808");
	assert_true(conf.offset == INT64_MIN);
	load_ok("mqtt.offset", "9223372036854775807");
	assert_true(conf.offset == INT64_MAX);
	load_ok("mqtt.offset", "-0");
	assert_int_equal(conf.offset, 0);
	load_ok("mqtt.offset", "007");
	assert_int_equal(conf.offset, 7);
	assert_string_equal(load_bad("mqtt.offset", "9223372036854775808"),
	                    "t.conf:1: mqtt.offset: \"9223372036854775808\" is out of range");
	load_bad("mqtt.offset", "-9223372036854775809");
	load_bad("mqtt.offset", "99999999999999999999999999");
}

static void test_size(void **state)
{
	static const struct {
		const char *text;
		uint64_t want;
	} good[] = {{"1MB", 1048576},    {"512kb", 524288},    {"64", 64},
	            {"1 KB", 1024},      {"16b", 16},          {"3k", 3072},
	            {"128M", 134217728}, {"256MB", 268435456}, {"7m", 7 * 1048576ull}};
	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		load_ok("mqtt.max_packet_size", good[i].text);
		assert_true(conf.packet == good[i].want);
	}
	/* The header's own example. */
	assert_string_equal(
	    load_bad("mqtt.max_packet_size", "1XB"),
	    "t.conf:1: mqtt.max_packet_size: \"1XB\" is not a size (use e.g. 512KB, 1MB)");
	assert_non_null(strstr(load_bad("mqtt.max_packet_size", "-1"), "cannot be negative"));
	assert_non_null(strstr(load_bad("mqtt.max_packet_size", "-1KB"), "cannot be negative"));
	load_bad("mqtt.max_packet_size", "1.5MB");
	load_bad("mqtt.max_packet_size", "MB");
	load_bad("mqtt.max_packet_size", "1MBx");
	load_bad("mqtt.max_packet_size", "1 2");
	load_bad("mqtt.max_packet_size", "1TB");
	load_bad("mqtt.max_packet_size", "+1");
	assert_non_null(strstr(load_bad("mqtt.max_packet_size", ""), "missing value"));
	/* Bounds are written in the human form. */
	assert_string_equal(load_bad("mqtt.max_packet_size", "8"),
	                    "t.conf:1: mqtt.max_packet_size: 8B is below the minimum 16B");
	assert_string_equal(load_bad("mqtt.max_packet_size", "512MB"),
	                    "t.conf:1: mqtt.max_packet_size: 512MB is above the maximum 256MB");
	assert_string_equal(
	    load_bad("mqtt.max_packet_size", "268435457"),
	    "t.conf:1: mqtt.max_packet_size: 268435457B is above the maximum 256MB");
	assert_true(conf.packet == 7 * 1048576ull);

	/* Overflow: of the number, and of the number times the unit. */
	load_ok("mqtt.max_store", "18446744073709551615");
	assert_true(conf.store == UINT64_MAX);
	assert_non_null(strstr(load_bad("mqtt.max_store", "18446744073709551616"), "out of range"));
	assert_non_null(strstr(load_bad("mqtt.max_store", "17179869184GB"), "out of range"));
	load_ok("mqtt.max_store", "17179869183GB");
	assert_true(conf.store == 17179869183ull << 30);
	load_ok("mqtt.max_store", "2G");
	assert_true(conf.store == 2147483648ull);
	load_ok("mqtt.max_store", "3gB");
	assert_true(conf.store == 3221225472ull);
	load_ok("mqtt.max_store", "0");
	assert_true(conf.store == 0);
}

static void test_duration(void **state)
{
	static const struct {
		const char *text;
		uint64_t want;
	} good[] = {{"15s", 15000},   {"2h", 7200000}, {"3m", 180000},
	            {"1d", 86400000}, {"7", 7000},     {"1500ms", 1500},
	            {"1 h", 3600000}, {"10S", 10000},  {"1000MS", 1000}};
	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		load_ok("mqtt.keepalive", good[i].text);
		assert_true(conf.keepalive == good[i].want);
	}
	assert_string_equal(load_bad("mqtt.keepalive", "500ms"),
	                    "t.conf:1: mqtt.keepalive: 500ms is below the minimum 1s");
	assert_string_equal(load_bad("mqtt.keepalive", "2d"),
	                    "t.conf:1: mqtt.keepalive: 2d is above the maximum 1d");
	assert_string_equal(load_bad("mqtt.keepalive", "90000000ms"),
	                    "t.conf:1: mqtt.keepalive: 25h is above the maximum 1d");
	assert_string_equal(
	    load_bad("mqtt.keepalive", "5x"),
	    "t.conf:1: mqtt.keepalive: \"5x\" is not a duration (use e.g. 500ms, 15s, 2h)");
	assert_non_null(strstr(load_bad("mqtt.keepalive", "-1s"), "cannot be negative"));
	load_bad("mqtt.keepalive", "1.5s");
	load_bad("mqtt.keepalive", "s");
	load_bad("mqtt.keepalive", "1w");
	load_bad("mqtt.keepalive", "1h30m");
	load_bad("mqtt.keepalive", "");
	assert_true(conf.keepalive == 1000);

	load_ok("mqtt.session_expiry", "18446744073709551615ms");
	assert_true(conf.expiry == UINT64_MAX);
	load_ok("mqtt.session_expiry", "213503982334d");
	assert_true(conf.expiry == 213503982334ull * 86400000ull);
	assert_non_null(
	    strstr(load_bad("mqtt.session_expiry", "18446744073709551615"), "out of range"));
	assert_non_null(strstr(load_bad("mqtt.session_expiry", "213503982335d"), "out of range"));
	assert_non_null(
	    strstr(load_bad("mqtt.session_expiry", "99999999999999999999ms"), "out of range"));
}

static void test_infinity(void **state)
{
	(void)state;
	load_ok("mqtt.max_queued", "infinity");
	assert_int_equal(conf.queued, 100000); /* the row's max */
	conf.queued = 0;
	load_ok("mqtt.max_queued", "INFINITY");
	assert_int_equal(conf.queued, 100000);
	load_ok("mqtt.max_store", "infinity"); /* unbounded: the type's maximum */
	assert_true(conf.store == UINT64_MAX);
	load_ok("mqtt.session_expiry", "\"infinity\"");
	assert_true(conf.expiry == UINT64_MAX);
	assert_string_equal(
	    load_bad("mqtt.max_inflight", "infinity"),
	    "t.conf:1: mqtt.max_inflight: infinity is not allowed here: expected an "
	    "integer");
	load_bad("mqtt.max_packet_size", "infinity");
	load_bad("mqtt.keepalive", "infinity");
	load_bad("overload.ratio", "infinity");
	load_bad("mqtt.max_queued", "infinityy");

	/* Through a set callback, too. */
	load_ok("listener.tcp.x.max_connections", "infinity");
	assert_int_equal(ncalls, 1);
	assert_int_equal(calls[0].v.type, CFG_INT);
	assert_int_equal(calls[0].v.v.i, 1000000);
}

static void test_string_and_path(void **state)
{
	(void)state;
	load_ok("node.name", "hello world");
	assert_string_equal(conf.name, "hello world");
	/* Replaced: the old string is freed (LeakSanitizer checks). */
	load_ok("node.name", "a=b # not a comment");
	assert_string_equal(conf.name, "a=b # not a comment");
	load_ok("node.name", "");
	assert_string_equal(conf.name, "");
	load_ok("node.name", "caf\xc3\xa9");
	assert_string_equal(conf.name, "caf\xc3\xa9");
	load_ok("node.data_dir", "./data/../x");
	assert_string_equal(conf.data_dir, "./data/../x");
	load_ok("node.data_dir", "/var/lib/keepmq");
	assert_string_equal(conf.data_dir, "/var/lib/keepmq");
}

static void test_enum(void **state)
{
	(void)state;
	load_ok("log.level", "warning");
	assert_int_equal(conf.level, 2);
	load_ok("log.level", "debug");
	assert_int_equal(conf.level, 0);
	assert_string_equal(load_bad("log.level", "WARNING"),
	                    "t.conf:1: log.level: \"WARNING\" is not one of: debug, info, warning");
	assert_string_equal(load_bad("log.level", "verbose"),
	                    "t.conf:1: log.level: \"verbose\" is not one of: debug, info, warning");
	assert_non_null(strstr(load_bad("log.level", ""), "missing value"));
	assert_int_equal(conf.level, 0);
}

static void test_addr(void **state)
{
	static const struct {
		const char *text;
		const char *host;
		int port;
	} good[] = {
	    {"0.0.0.0:1883", "0.0.0.0", 1883},
	    {"[::1]:1883", "::1", 1883},
	    {"[::]:8883", "::", 8883},
	    {":1883", "0.0.0.0", 1883},
	    {"1883", "0.0.0.0", 1883},
	    {"localhost:1883", "localhost", 1883},
	    {"127.0.0.1:0", "127.0.0.1", 0},
	    {"broker-1.example.com:65535", "broker-1.example.com", 65535},
	    {"[fe80::1%eth0]:1883", "fe80::1%eth0", 1883},
	    {"0", "0.0.0.0", 0},
	};
	static const char *const bad[] = {
	    "1883:",        "localhost:",   "localhost", ":65536",
	    "99999",        "65536",        "host:12x",  "::1:1883",
	    "::1",          "[::1]",        "[::1",      "[::1]x",
	    "[::1]:",       "[]:1883",      "a b:1883",  "999.1.1.1:1883",
	    "1.2.3:1883",   "[zz::1]:1883", "",          ":",
	    "-1",           ":-1",          "host:+1",   "[::1]:1883x",
	    "[fe80::1%]:1", "h\xc3\xa9:1",  "1883 ",     "[1.2.3.4]:1",
	};
	char host63[80], host64[80];
	cfg_addr a;
	(void)state;

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		memset(&a, 0, sizeof(a));
		if (cfg_parse_addr(good[i].text, &a) != 0)
			fprintf(stderr, "  rejected: %s\n", good[i].text);
		assert_int_equal(cfg_parse_addr(good[i].text, &a), 0);
		assert_string_equal(a.host, good[i].host);
		assert_int_equal(a.port, good[i].port);
		assert_true(a.set);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&a, 0, sizeof(a));
		if (cfg_parse_addr(bad[i], &a) == 0)
			fprintf(stderr, "  accepted: \"%s\"\n", bad[i]);
		assert_int_equal(cfg_parse_addr(bad[i], &a), -1);
		assert_false(a.set); /* untouched on failure */
	}
	/* Host length: 63 bytes fit cfg_addr.host, 64 do not. */
	memset(host63, 'h', 63);
	strcpy(host63 + 63, ":1");
	memset(host64, 'h', 64);
	strcpy(host64 + 64, ":1");
	assert_int_equal(cfg_parse_addr(host63, &a), 0);
	assert_int_equal(strlen(a.host), 63);
	assert_int_equal(cfg_parse_addr(host64, &a), -1);
	char v6long[96];
	snprintf(v6long, sizeof(v6long), "[1::%s]:1",
	         host64); /* too long before any syntax check */
	assert_int_equal(cfg_parse_addr(v6long, &a), -1);
	assert_int_equal(cfg_parse_addr("[fe80::1%e$0]:1", &a), -1);

	/* Through a row, with the reason in the message. */
	load_ok("listener.bind", "[::1]:8883");
	assert_string_equal(conf.bind.host, "::1");
	assert_int_equal(conf.bind.port, 8883);
	assert_true(conf.bind.set);
	assert_string_equal(
	    load_bad("listener.bind", "localhost:"),
	    "t.conf:1: listener.bind: \"localhost:\" is not an address (missing port "
	    "after \":\")");
	assert_non_null(strstr(load_bad("listener.bind", ":70000"), "above 65535"));
	assert_non_null(strstr(load_bad("listener.bind", host64), "longer than 63 bytes"));
	assert_non_null(strstr(load_bad("listener.bind", "::1:1883"), "brackets"));
	assert_non_null(strstr(load_bad("listener.bind", "localhost"), "missing port"));
	assert_non_null(strstr(load_bad("listener.bind", v6long), "longer than 63 bytes"));
	assert_string_equal(load_bad("listener.bind", ""),
	                    "t.conf:1: listener.bind: missing value: expected an address (use "
	                    "host:port, [v6]:port, :port or port)");
	assert_int_equal(conf.bind.port, 8883);
}

static void test_double(void **state)
{
	static const struct {
		const char *text;
		double want;
	} good[] = {{"0.5", 0.5},  {"1", 1},      {"0", 0},  {".25", 0.25},
	            {"1e-1", 0.1}, {"5E-1", 0.5}, {"1.", 1}, {"-0", 0}};
	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		load_ok("overload.ratio", good[i].text);
		assert_true(conf.ratio == good[i].want);
	}
	assert_string_equal(load_bad("overload.ratio", "abc"),
	                    "t.conf:1: overload.ratio: \"abc\" is not a number");
	assert_string_equal(load_bad("overload.ratio", "1.5"),
	                    "t.conf:1: overload.ratio: 1.5 is above the maximum 1");
	assert_string_equal(load_bad("overload.ratio", "-0.1"),
	                    "t.conf:1: overload.ratio: -0.1 is below the minimum 0");
	load_bad("overload.ratio", "1.2.3");
	load_bad("overload.ratio", "nan");
	load_bad("overload.ratio", "inf");
	load_bad("overload.ratio", "0x1p-1");
	load_bad("overload.ratio", "1e");
	load_bad("overload.ratio", "+0.5");
	load_bad("overload.ratio", ".");
	load_bad("overload.ratio", "");
	assert_non_null(strstr(load_bad("overload.ratio", "1e999"), "out of range"));
}

static void test_public_parsers(void **state)
{
	bool b = false;
	int64_t i = 0;
	uint64_t u = 0;
	(void)state;
	assert_int_equal(cfg_parse_bool("Yes", &b), 0);
	assert_true(b);
	assert_int_equal(cfg_parse_bool("nope", &b), -1);
	assert_int_equal(cfg_parse_int("-42", &i), 0);
	assert_int_equal(i, -42);
	assert_int_equal(cfg_parse_int("4 2", &i), -1);
	assert_int_equal(cfg_parse_int("", &i), -1);
	assert_int_equal(cfg_parse_size("512KB", &u), 0);
	assert_true(u == 524288);
	assert_int_equal(cfg_parse_size("-1", &u), -1);
	assert_int_equal(cfg_parse_size("", &u), -1);
	assert_int_equal(cfg_parse_size("1QB", &u), -1);
	assert_int_equal(cfg_parse_size("99999999999GB", &u), -1);
	assert_int_equal(cfg_parse_duration_ms("2h", &u), 0);
	assert_true(u == 7200000);
	assert_int_equal(cfg_parse_duration_ms("30", &u), 0);
	assert_true(u == 30000);
	assert_int_equal(cfg_parse_duration_ms("250ms", &u), 0);
	assert_true(u == 250);
	assert_int_equal(cfg_parse_duration_ms("-3s", &u), -1);
	assert_int_equal(cfg_parse_duration_ms("3 parsecs", &u), -1);
	assert_int_equal(cfg_parse_duration_ms("", &u), -1);
}

/* ------------------------------------------------------------------------ */
/* Defaults, required, release                                              */
/* ------------------------------------------------------------------------ */

static void test_defaults(void **state)
{
	(void)state;
	assert_int_equal(cfg_apply_defaults(reg, &errs), 0);
	expect_nerr(0);
	assert_true(conf.retain);
	assert_int_equal(conf.inflight, 32);
	assert_int_equal(conf.queued, 1000);
	assert_true(conf.packet == 1048576);
	assert_true(conf.keepalive == 15000);
	assert_string_equal(conf.name, "keepmq@127.0.0.1");
	assert_null(conf.data_dir); /* no default */
	assert_int_equal(conf.level, 1);
	assert_string_equal(conf.bind.host, "0.0.0.0");
	assert_int_equal(conf.bind.port, 1883);
	assert_true(conf.bind.set);
	assert_true(conf.ratio == 0.8);
	assert_int_equal(conf.internal, 7);
	/* Defaults of placeholder rows are not applied (there is no instance). */
	assert_int_equal(ncalls, 0);
	/* A file value replaces a default string (LeakSanitizer checks the free). */
	assert_int_equal(load("node.name = other\n"), 0);
	assert_string_equal(conf.name, "other");
}

static const cfg_key bad_default_keys[] = {
    {"bad.size", CFG_SIZE, "1XB", 0, 0, NULL, 0, NULL, 0, NULL},
    {"bad.secret", CFG_INT, "hunter2", 0, 0, NULL, 8, NULL, CFG_F_SECRET, NULL},
    {"good.int", CFG_INT, "5", 0, 10, NULL, 16, NULL, 0, NULL},
};

static void test_bad_defaults(void **state)
{
	struct {
		uint64_t size;
		int64_t secret;
		int64_t good;
	} t = {0};
	(void)state;
	cfg_registry *r = cfg_registry_new();
	assert_non_null(r);
	assert_int_equal(cfg_register(r, "Bad", NULL, bad_default_keys, 3, &t), 0);
	assert_int_equal(cfg_apply_defaults(r, &errs), -1);
	expect_nerr(2);
	expect_err(0, "<default>: bad.size: \"1XB\" is not a size (use e.g. 512KB, 1MB)");
	expect_err(1, "<default>: bad.secret: the value is not an integer");
	assert_null(strstr(errs.e[1].msg, "hunter2"));
	assert_int_equal(t.good, 5); /* the other defaults still apply */
	cfg_registry_free(&r);
}

static void test_check_required(void **state)
{
	(void)state;
	assert_int_equal(cfg_apply_defaults(reg, &errs), 0);
	assert_int_equal(cfg_check_required(reg, &errs), -1);
	expect_nerr(1);
	expect_err(0, "auth.password: required key is not set");
	reset_errs();
	assert_int_equal(load("auth.password = s3cret\n"), 0);
	assert_int_equal(cfg_check_required(reg, &errs), 0);
	expect_nerr(0);
	assert_string_equal(conf.password, "s3cret");
}

static void test_check_required_rejected_value(void **state)
{
	(void)state;
	/* A rejected value does not count as set. */
	static const cfg_key keys[] = {
	    {"need.n", CFG_INT, NULL, 1, 5, NULL, 0, NULL, CFG_F_REQUIRED, NULL},
	};
	int64_t n = 0;
	cfg_registry *r = cfg_registry_new();
	assert_int_equal(cfg_register(r, "Need", NULL, keys, 1, &n), 0);
	assert_int_equal(cfg_load_string(r, "n.conf", "need.n = 9\n", 11, &errs), -1);
	assert_int_equal(cfg_check_required(r, &errs), -1);
	expect_err(1, "need.n: required key is not set");
	cfg_set(r, "need.n", "3", "<command line>", 0, &errs);
	assert_int_equal(cfg_check_required(r, &errs), 0);
	assert_int_equal(n, 3);
	cfg_registry_free(&r);
}

static void test_check_required_default_does_not_count(void **state)
{
	/* A required key must come from the configuration; a default does not satisfy it. */
	static const cfg_key keys[] = {
	    {"need.s", CFG_STRING, "fallback", 0, 0, NULL, 0, NULL, CFG_F_REQUIRED, NULL},
	};
	char *str = NULL;
	(void)state;
	cfg_registry *r = cfg_registry_new();
	assert_int_equal(cfg_register(r, "Need", NULL, keys, 1, &str), 0);
	assert_int_equal(cfg_apply_defaults(r, &errs), 0);
	assert_string_equal(str, "fallback");
	assert_int_equal(cfg_check_required(r, &errs), -1);
	expect_err(0, "need.s: required key is not set");
	assert_int_equal(cfg_load_string(r, "n.conf", "need.s = x\n", 11, &errs), 0);
	assert_int_equal(cfg_check_required(r, &errs), 0);
	cfg_release(r);
	assert_null(str);
	cfg_registry_free(&r);
}

static void test_release(void **state)
{
	(void)state;
	assert_int_equal(cfg_apply_defaults(reg, &errs), 0);
	assert_int_equal(load("node.data_dir = /tmp\nauth.password = pw\nmqtt.max_inflight = 99\n"),
	                 0);
	assert_non_null(conf.name);
	assert_non_null(conf.data_dir);
	assert_non_null(conf.password);
	cfg_release(reg);
	assert_null(conf.name);
	assert_null(conf.data_dir);
	assert_null(conf.password);
	assert_int_equal(conf.inflight, 99); /* only strings are touched */
	cfg_release(reg);                    /* twice is harmless */
	assert_int_equal(load("node.name = again\n"), 0);
	assert_string_equal(conf.name, "again");
	/* teardown releases again; LeakSanitizer checks nothing is left */
}

/* ------------------------------------------------------------------------ */
/* Syntax                                                                   */
/* ------------------------------------------------------------------------ */

static void test_quotes(void **state)
{
	(void)state;
	load_ok("node.name", "\"  spaced  \"");
	assert_string_equal(conf.name, "  spaced  ");
	load_ok("node.name", "\"\"");
	assert_string_equal(conf.name, "");
	load_ok("node.name", "\"\"\"");
	assert_string_equal(conf.name, "\"");
	load_ok("node.name", "say \"hi\"");
	assert_string_equal(conf.name, "say \"hi\"");
	load_ok("node.name", "{\"a\": \"b=c\"}");
	assert_string_equal(conf.name, "{\"a\": \"b=c\"}");
	load_ok("node.name", "\"a\" and \"b\""); /* only the outer pair goes */
	assert_string_equal(conf.name, "a\" and \"b");
	load_ok("mqtt.max_packet_size", "\"2MB\"");
	assert_true(conf.packet == 2 * 1048576ull);
	assert_string_equal(
	    load_bad("node.name", "\"unterminated"),
	    "t.conf:1: node.name: the value starts with a double quote but does not "
	    "end with one");
	load_bad("node.name", "\"");
	load_bad("node.name", "\"a\" # trailing comments are not a thing");
	assert_string_equal(conf.name, "a\" and \"b");
}

static void test_comments_and_blanks(void **state)
{
	(void)state;
	assert_int_equal(load("# a comment\n"
	                      "   # an indented comment = with an equals sign\n"
	                      "\n"
	                      "  \t \n"
	                      "#node.name = commented out\n"
	                      "  node.name   =   a/#  \n"
	                      "\tmqtt.max_inflight\t=\t20\t\n"),
	                 0);
	expect_nerr(0);
	assert_string_equal(conf.name, "a/#");
	assert_int_equal(conf.inflight, 20);
}

static void test_crlf_and_bom(void **state)
{
	(void)state;
	assert_int_equal(load("\xef\xbb\xbfnode.name = x\r\nmqtt.max_inflight = 20\r\n# c\r\n\r\n"),
	                 0);
	expect_nerr(0);
	assert_string_equal(conf.name, "x");
	assert_int_equal(conf.inflight, 20);
	reset_errs();
	/* A BOM is skipped at the start of a file only. */
	assert_int_equal(load("\xef\xbb\xbf# comment\n\xef\xbb\xbfnode.name = y\n"), -1);
	expect_nerr(1);
	expect_has_err("t.conf:2: unknown key \"\xef\xbb\xbfnode.name\"");
	/* No newline at the end of the last line. */
	reset_errs();
	assert_int_equal(load("node.name = z"), 0);
	assert_string_equal(conf.name, "z");
}

static void test_keys_case_sensitive(void **state)
{
	(void)state;
	assert_int_equal(load("Node.Name = x\n"), -1);
	expect_nerr(1);
	expect_err(0, "t.conf:1: unknown key \"Node.Name\" (did you mean \"node.name\"? keys are "
	              "case-sensitive)");
	assert_null(conf.name);
}

static void test_line_errors(void **state)
{
	(void)state;
	assert_int_equal(load("node.name = ok\n"
	                      "just some words\n"
	                      "= value\n"
	                      "  =\n"
	                      "mqtt.max_inflight = 20\n"
	                      "include\n"),
	                 -1);
	expect_nerr(4);
	expect_err(0, "t.conf:2: expected \"key = value\" but the line has no \"=\"");
	expect_err(1, "t.conf:3: empty key before \"=\"");
	expect_err(2, "t.conf:4: empty key before \"=\"");
	expect_err(3, "t.conf:6: include needs a file name or glob");
	/* Good lines around bad ones still apply. */
	assert_string_equal(conf.name, "ok");
	assert_int_equal(conf.inflight, 20);
}

static void test_long_lines(void **state)
{
	const size_t max = 64 * 1024;
	char *text = malloc(2 * max + 64);
	size_t n;
	(void)state;
	assert_non_null(text);

	/* Exactly 64 KiB (plus CRLF, which does not count) is fine. */
	n = (size_t)sprintf(text, "node.name = ");
	memset(text + n, 'a', max - n);
	n = max;
	n += (size_t)sprintf(text + n, "\r\nmqtt.max_inflight = 20\n");
	assert_int_equal(cfg_load_string(reg, "t.conf", text, n, &errs), 0);
	expect_nerr(0);
	assert_int_equal(strlen(conf.name), max - 12);

	/* One byte more is an error, and the next line is still read with its number. */
	n = (size_t)sprintf(text, "node.name = ");
	memset(text + n, 'b', max + 1 - n);
	n = max + 1;
	n += (size_t)sprintf(text + n, "\nmqtt.max_inflight = 30\n");
	assert_int_equal(cfg_load_string(reg, "t.conf", text, n, &errs), -1);
	expect_nerr(1);
	expect_err(0, "t.conf:1: the line is longer than 64 KiB");
	assert_int_equal(conf.inflight, 30);
	assert_int_equal(conf.name[0], 'a'); /* unchanged */

	/* A huge line without any newline. */
	reset_errs();
	memset(text, '=', 2 * max);
	assert_int_equal(cfg_load_string(reg, "t.conf", text, 2 * max, &errs), -1);
	expect_nerr(1);
	free(text);
}

static void test_nul_byte(void **state)
{
	static const char text[] = "node.name = a\0b\nmqtt.max_inflight = 20\n";
	(void)state;
	assert_int_equal(cfg_load_string(reg, "t.conf", text, sizeof(text) - 1, &errs), -1);
	expect_nerr(1);
	expect_err(0, "t.conf:1: the line contains a NUL byte");
	assert_null(conf.name);
	assert_int_equal(conf.inflight, 20);
	/* Empty input. */
	reset_errs();
	assert_int_equal(cfg_load_string(reg, "t.conf", "", 0, &errs), 0);
	assert_int_equal(cfg_load_string(reg, "t.conf", NULL, 0, &errs), 0);
	expect_nerr(0);
}

static void test_later_wins(void **state)
{
	(void)state;
	assert_int_equal(load("mqtt.max_inflight = 20\n"
	                      "node.name = first\n"
	                      "mqtt.max_inflight = 30\n"
	                      "node.name = second\n"),
	                 0);
	assert_int_equal(conf.inflight, 30);
	assert_string_equal(conf.name, "second");
	/* A bad later value does not clobber the good earlier one. */
	assert_int_equal(load("mqtt.max_inflight = 40\nmqtt.max_inflight = 4000\n"), -1);
	assert_int_equal(conf.inflight, 40);
}

static void test_errors_collected(void **state)
{
	(void)state;
	assert_int_equal(load("mqtt.max_inflight = 1\n"
	                      "node.name = fine\n"
	                      "mqtt.max_packet_size = 1XB\n"
	                      "nope = 1\n"
	                      "log.level = loud\n"
	                      "no equals here\n"),
	                 -1);
	expect_nerr(5);
	expect_err(0, "t.conf:1: mqtt.max_inflight: 1 is below the minimum 16");
	expect_err(1,
	           "t.conf:3: mqtt.max_packet_size: \"1XB\" is not a size (use e.g. 512KB, 1MB)");
	expect_err(2, "t.conf:4: unknown key \"nope\"");
	expect_err(3, "t.conf:5: log.level: \"loud\" is not one of: debug, info, warning");
	expect_err(4, "t.conf:6: expected \"key = value\" but the line has no \"=\"");
	assert_int_equal(errs.dropped, 0);
	/* The return value is about this call, even with errors already in the list. */
	assert_int_equal(load("node.name = ok\n"), 0);
	expect_nerr(5);
}

static void test_errors_capped(void **state)
{
	char text[2048] = "";
	(void)state;
	for (int i = 0; i < 40; i++)
		strcat(text, "mqtt.max_inflight = 1\n");
	assert_int_equal(load(text), -1);
	assert_int_equal(errs.n, CFG_MAX_ERRORS);
	assert_int_equal(errs.dropped, 40 - CFG_MAX_ERRORS);
	expect_err(CFG_MAX_ERRORS - 1, "t.conf:32: mqtt.max_inflight: 1 is below the minimum 16");
	/* Past the cap, errors still make the call fail. */
	assert_int_equal(load("nope = 1\n"), -1);
	assert_int_equal(errs.dropped, 41 - CFG_MAX_ERRORS);
}

static void test_errorf_format(void **state)
{
	(void)state;
	cfg_errorf(&errs, "f.conf", 3, "a.b", "bad %d", 7);
	cfg_errorf(&errs, "f.conf", 0, "a.b", "no line");
	cfg_errorf(&errs, NULL, 0, "a.b", "no file");
	cfg_errorf(&errs, "f.conf", 9, NULL, "no key");
	cfg_errorf(&errs, NULL, 0, NULL, "bare");
	cfg_errorf(NULL, "f.conf", 1, NULL, "ignored");
	expect_nerr(5);
	expect_err(0, "f.conf:3: a.b: bad 7");
	expect_err(1, "f.conf: a.b: no line");
	expect_err(2, "a.b: no file");
	expect_err(3, "f.conf:9: no key");
	expect_err(4, "bare");
	/* Long messages are cut, not overflowed. */
	char big[2000];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	cfg_errorf(&errs, big, 1, big, "%s", big);
	assert_int_equal(strlen(errs.e[5].msg), CFG_ERR_LEN - 1);
}

/* ------------------------------------------------------------------------ */
/* Unknown keys and suggestions                                             */
/* ------------------------------------------------------------------------ */

static void test_unknown_key_suggestions(void **state)
{
	(void)state;
	assert_int_equal(load("mqtt.max_pakcet_size = 1MB\n"
	                      "listener.tcp.default.max_conections = 5\n"
	                      "completely.unrelated = 1\n"
	                      "backend.redis.hok.client.connected.1 = x\n"
	                      "listener.tcp.my listener.bind = :1883\n"
	                      "mqtt.max_inflite = 20\n"
	                      "x = 1\n"
	                      "MQTT.MAX_PACKET_SIZE = 1MB\n"
	                      "listner.tcp.default.bind = :1883\n"),
	                 -1);
	expect_nerr(9);
	/* The header's own example. */
	expect_err(0, "t.conf:1: unknown key \"mqtt.max_pakcet_size\" (did you mean "
	              "\"mqtt.max_packet_size\"?)");
	expect_err(1, "t.conf:2: unknown key \"listener.tcp.default.max_conections\" (did you mean "
	              "\"listener.tcp.<name>.max_connections\"?)");
	expect_err(2, "t.conf:3: unknown key \"completely.unrelated\"");
	expect_err(3,
	           "t.conf:4: unknown key \"backend.redis.hok.client.connected.1\" (did you mean "
	           "\"backend.redis.hook.<hookpoint...>.<n>\"?)");
	expect_err(4, "t.conf:5: unknown key \"listener.tcp.my listener.bind\" (did you mean "
	              "\"listener.tcp.<name>.bind\"? placeholders match letters, digits, \"_\" and "
	              "\"-\")");
	expect_err(
	    5, "t.conf:6: unknown key \"mqtt.max_inflite\" (did you mean \"mqtt.max_inflight\"?)");
	expect_err(6, "t.conf:7: unknown key \"x\"");
	expect_err(7, "t.conf:8: unknown key \"MQTT.MAX_PACKET_SIZE\" (did you mean "
	              "\"mqtt.max_packet_size\"? keys are case-sensitive)");
	expect_err(8, "t.conf:9: unknown key \"listner.tcp.default.bind\" (did you mean "
	              "\"listener.tcp.<name>.bind\"?)");
	assert_int_equal(ncalls, 0);
	assert_true(conf.packet == 0);
}

static void test_unknown_key_escaped(void **state)
{
	char key[300];
	(void)state;
	/* Control bytes and quotes in an echoed key cannot forge a log line. */
	assert_int_equal(load("bad\x1b[31m\"key = 1\n"), -1);
	expect_err(0, "t.conf:1: unknown key \"bad\\x1b[31m\\\"key\"");
	/* Long keys are cut. */
	memset(key, 'k', sizeof(key) - 1);
	key[sizeof(key) - 1] = '\0';
	reset_errs();
	assert_int_equal(cfg_set(reg, key, "1", "t.conf", 1, &errs), -1);
	expect_nerr(1);
	assert_non_null(strstr(errs.e[0].msg, "kkk...\""));
	assert_true(strlen(errs.e[0].msg) < 120);
}

/* ------------------------------------------------------------------------ */
/* Placeholders                                                             */
/* ------------------------------------------------------------------------ */

static void test_placeholder_captures(void **state)
{
	(void)state;
	assert_int_equal(load("listener.tcp.external.bind = 0.0.0.0:8883\n"
	                      "backend.redis.hook.client.connected.1 = HSET mqtt:%c online 1\n"
	                      "backend.redis.hook.session.subscribed.extra.12 = x\n"
	                      "backend.redis.hook.client.1 = y\n"
	                      "listener.tcp.in-2_b.max_connections = 500\n"),
	                 0);
	expect_nerr(0);
	assert_int_equal(ncalls, 5);
	assert_string_equal(calls[0].tag, "listener.bind");
	assert_int_equal(calls[0].ncap, 1);
	assert_string_equal(calls[0].cap[0], "external");
	assert_int_equal(calls[0].v.type, CFG_ADDR);
	assert_string_equal(calls[0].v.v.addr.host, "0.0.0.0");
	assert_int_equal(calls[0].v.v.addr.port, 8883);

	assert_string_equal(calls[1].tag, "hook");
	assert_int_equal(calls[1].ncap, 2);
	assert_string_equal(calls[1].cap[0], "client.connected");
	assert_string_equal(calls[1].cap[1], "1");
	assert_string_equal(calls[1].text, "HSET mqtt:%c online 1");

	assert_string_equal(calls[2].cap[0], "session.subscribed.extra");
	assert_string_equal(calls[2].cap[1], "12");
	assert_string_equal(calls[3].cap[0], "client");
	assert_string_equal(calls[3].cap[1], "1");

	assert_string_equal(calls[4].tag, "listener.maxconn");
	assert_string_equal(calls[4].cap[0], "in-2_b");
	assert_int_equal(calls[4].v.v.i, 500);

	/* Keys that must not match. */
	static const char *const nomatch[] = {
	    "backend.redis.hook.1",       /* <hookpoint...> needs a segment of its own */
	    "backend.redis.hook..1",      /* empty segment */
	    "backend.redis.hook.client.", /* empty <n> */
	    "listener.tcp.a.b.bind",      /* <name> is one segment */
	    "listener.tcp.bad$name.bind", /* outside [A-Za-z0-9_-] */
	    "listener.tcp..bind",         "listener.tcp.bind",
	    "listener.tcp.x.bind.extra",  "backend.redis.hook",
	};
	for (size_t i = 0; i < sizeof(nomatch) / sizeof(nomatch[0]); i++) {
		reset_errs();
		assert_int_equal(cfg_set(reg, nomatch[i], "1", "t.conf", 1, &errs), -1);
		if (!has_err("unknown key"))
			fprintf(stderr, "  matched: %s\n", nomatch[i]);
		expect_has_err("unknown key");
	}
	assert_int_equal(ncalls, 5);
}

/* Writes prefix, then n times ".a", then suffix into key (large enough). */
static void make_key(char *key, const char *prefix, int n, const char *suffix)
{
	char *p = key + sprintf(key, "%s", prefix);
	for (int i = 0; i < n; i++)
		p += sprintf(p, ".a");
	strcpy(p, suffix);
}

static void test_multi_placeholder_backtracking(void **state)
{
	(void)state;
	/* Two `<x...>`: the first takes as much as it can. */
	assert_int_equal(load("two.p.q.r.y = 1\ntwo.p.q.y = 2\n"), 0);
	assert_int_equal(ncalls, 2);
	assert_string_equal(calls[0].cap[0], "p.q");
	assert_string_equal(calls[0].cap[1], "r");
	assert_string_equal(calls[1].cap[0], "p");
	assert_string_equal(calls[1].cap[1], "q");
	/* "y" inside the span: backtracking finds the split that ends on the last "y". */
	assert_int_equal(load("two.y.y.y.y = 3\n"), 0);
	assert_string_equal(calls[2].cap[0], "y.y");
	assert_string_equal(calls[2].cap[1], "y");
	assert_int_equal(load("two.p.y = 4\n"), -1);

	/* A key with thousands of segments is rejected without a search. */
	char *key = malloc(64 * 1024);
	assert_non_null(key);
	uint64_t s0 = cfg_match_steps();
	make_key(key, "two", 20000, ".z");
	reset_errs();
	assert_int_equal(cfg_set(reg, key, "1", "t.conf", 1, &errs), -1);
	expect_has_err("unknown key");
	make_key(key, "two", 20000, ".y");
	assert_int_equal(cfg_set(reg, key, "1", "t.conf", 1, &errs), -1);
	assert_int_equal(cfg_match_steps() - s0, 0);

	/*
	 * Within the segment limit, four `<x...>` against a key that does not
	 * match, counted in matcher steps rather than timed. The memo bounds them:
	 * the pattern has P = 6 segments and the key K = n + 2, so there are P * K
	 * states (pattern segment, key segment) that can be expanded. A state is
	 * expanded at most once - a failure is memoised, a success ends the
	 * search - and an expansion makes at most K calls (a `<x...>` trying each
	 * span; a literal or `<x>` makes one), so a lookup takes at most
	 * 1 + P * K * K steps: 381025 for n = 250, where the memoised search
	 * actually takes 92133. Plain backtracking visits every way of splitting
	 * the a's among the four placeholders, on the order of C(n, 4): with the
	 * memo check removed the n = 250 lookup took 161455751 steps, over 400
	 * times the bound, so the bound catches a lost memo on the first key.
	 */
	static struct tag t4 = {"four"};
	static const cfg_key four = {
	    "four.<a...>.<b...>.<c...>.<d...>.y", CFG_STRING, NULL, 0, 0, NULL, 0, record, 0, NULL};
	assert_int_equal(cfg_register(reg, "Four", NULL, &four, 1, &t4), 0);
	for (int i = 0; i < 5; i++) {
		uint64_t n = 250 - (uint64_t)i, k = n + 2, bound = 1 + 6 * k * k;
		make_key(key, "four", (int)n, ".z");
		reset_errs();
		s0 = cfg_match_steps();
		assert_int_equal(cfg_set(reg, key, "1", "t.conf", 1, &errs), -1);
		expect_has_err("unknown key");
		uint64_t steps = cfg_match_steps() - s0;
		if (steps > bound)
			fprintf(stderr, "  n=%" PRIu64 ": %" PRIu64 " steps, bound %" PRIu64 "\n",
			        n, steps, bound);
		assert_true(steps <= bound);
		/* The row was really tried (a zero would make the bound vacuous):
		 * `<a...>` alone tries each of its n - 3 spans. */
		assert_true(steps > n - 3);
	}
	make_key(key, "four", 250, ".y");
	assert_int_equal(cfg_set(reg, key, "ok", "t.conf", 1, &errs), 0);
	assert_string_equal(calls[ncalls - 1].tag, "four");
	assert_string_equal(calls[ncalls - 1].cap[1],
	                    "a"); /* a takes 247 segments, b c d one each */
	assert_string_equal(calls[ncalls - 1].cap[3], "a");
	free(key);
}

static void test_precedence(void **state)
{
	(void)state;
	assert_int_equal(load("zone.eu.max = 1\n"   /* literal row beats every placeholder row */
	                      "zone.us.max = 2\n"   /* zone.<name>.max: 9 literal chars */
	                      "zone.eu.min = 3\n"   /* zone.eu.<setting>: 8 */
	                      "zone.us.min = 4\n"   /* zone.<name>.<setting>: 6 */
	                      "tie.x.end = 5\n"     /* <a> beats <b...> at equal literal length */
	                      "tie.x.y.end = 6\n"), /* only <b...> matches */
	                 0);
	expect_nerr(0);
	assert_int_equal(ncalls, 6);
	assert_string_equal(calls[0].tag, "zone.eu.max");
	assert_int_equal(calls[0].ncap, 0);
	assert_string_equal(calls[1].tag, "zone.name.max");
	assert_string_equal(calls[1].cap[0], "us");
	assert_string_equal(calls[2].tag, "zone.eu.setting");
	assert_string_equal(calls[2].cap[0], "min");
	assert_string_equal(calls[3].tag, "zone.generic");
	assert_string_equal(calls[3].cap[0], "us");
	assert_string_equal(calls[3].cap[1], "min");
	assert_string_equal(calls[4].tag, "tie.one");
	assert_string_equal(calls[5].tag, "tie.multi");
	assert_string_equal(calls[5].cap[0], "x.y");
}

static void test_literal_beats_placeholder_registered_first(void **state)
{
	/* Order of registration does not matter: the literal row still wins. */
	static struct tag tp = {"placeholder"}, tl = {"literal"};
	static const cfg_key p[] = {{"a.<x>", CFG_STRING, NULL, 0, 0, NULL, 0, record, 0, NULL}};
	static const cfg_key l[] = {{"a.b", CFG_STRING, NULL, 0, 0, NULL, 0, record, 0, NULL}};
	(void)state;
	cfg_registry *r = cfg_registry_new();
	assert_int_equal(cfg_register(r, "P", NULL, p, 1, &tp), 0);
	assert_int_equal(cfg_register(r, "L", NULL, l, 1, &tl), 0);
	assert_int_equal(cfg_load_string(r, "t.conf", "a.b = 1\na.c = 2\n", 16, &errs), 0);
	assert_int_equal(ncalls, 2);
	assert_string_equal(calls[0].tag, "literal");
	assert_string_equal(calls[1].tag, "placeholder");
	cfg_registry_free(&r);
}

static void test_callback_error(void **state)
{
	(void)state;
	assert_int_equal(load("node.name = a\n"
	                      "backend.redis.hook.client.connected.1 = reject\n"
	                      "zone.eu.max = silent-reject\n"
	                      "listener.tcp.x.max_connections = 0\n"),
	                 -1);
	expect_nerr(3);
	expect_err(0, "t.conf:2: backend.redis.hook.client.connected.1: rejected client.connected");
	expect_err(1, "t.conf:3: zone.eu.max: invalid value");
	/* The value is checked against the row before the callback sees it. */
	expect_err(2, "t.conf:4: listener.tcp.x.max_connections: 0 is below the minimum 1");
	assert_int_equal(ncalls, 0);
}

static void test_secret_not_echoed(void **state)
{
	(void)state;
	assert_int_equal(load("auth.pin = 12ab34\n"
	                      "auth.pin = 42\n"
	                      "auth.pin = 123456789\n"
	                      "auth.mode = topsecret\n"
	                      "auth.password = \"hunter2\n"
	                      "auth.pin = 99999999999999999999999\n"
	                      "auth.pin = infinity\n"),
	                 -1);
	expect_nerr(7);
	expect_err(0, "t.conf:1: auth.pin: the value is not an integer");
	expect_err(1, "t.conf:2: auth.pin: the value is below the minimum 1000");
	expect_err(2, "t.conf:3: auth.pin: the value is above the maximum 9999");
	expect_err(3, "t.conf:4: auth.mode: the value is not one of: plain, hashed");
	expect_has_err("t.conf:6: auth.pin: the value is out of range");
	static const char *const secrets[] = {"12ab34",    "42",      "123456789",
	                                      "topsecret", "hunter2", "99999"};
	for (int i = 0; i < errs.n; i++)
		for (size_t j = 0; j < sizeof(secrets) / sizeof(secrets[0]); j++)
			assert_null(strstr(errs.e[i].msg, secrets[j]));
	/* Valid secrets are stored like anything else. */
	load_ok("auth.pin", "4321");
	assert_int_equal(conf.pin, 4321);
}

/* ------------------------------------------------------------------------ */
/* cfg_set                                                                  */
/* ------------------------------------------------------------------------ */

static void test_cfg_set(void **state)
{
	(void)state;
	assert_int_equal(cfg_set(reg, "mqtt.max_inflight", "40", "<command line>", 0, &errs), 0);
	assert_int_equal(conf.inflight, 40);
	assert_int_equal(
	    cfg_set(reg, "  node.name ", " \"quoted value\" ", "<command line>", 0, &errs), 0);
	assert_string_equal(conf.name, "quoted value");
	assert_int_equal(
	    cfg_set(reg, "backend.redis.hook.a.b.7", "cmd", "<command line>", 0, &errs), 0);
	assert_string_equal(calls[0].cap[0], "a.b");
	assert_string_equal(calls[0].cap[1], "7");
	expect_nerr(0);
	assert_int_equal(cfg_set(reg, "mqtt.max_inflight", "1", "<command line>", 0, &errs), -1);
	assert_int_equal(cfg_set(reg, "nope", "1", "<command line>", 0, &errs), -1);
	assert_int_equal(cfg_set(reg, "", "1", "<command line>", 0, &errs), -1);
	assert_int_equal(cfg_set(reg, "mqtt.max_inflight", NULL, "<command line>", 0, &errs), -1);
	expect_nerr(4);
	expect_err(0, "<command line>: mqtt.max_inflight: 1 is below the minimum 16");
	expect_err(1, "<command line>: unknown key \"nope\"");
	expect_err(2, "<command line>: empty key before \"=\"");
	expect_has_err("<command line>: mqtt.max_inflight: missing value");
	assert_int_equal(conf.inflight, 40);
}

/* ------------------------------------------------------------------------ */
/* Registration                                                             */
/* ------------------------------------------------------------------------ */

static void test_register_rejects(void **state)
{
	static const char *const bad_names[] = {
	    "",
	    "a..b",
	    ".a",
	    "a.",
	    "a.<x",
	    "a.<>",
	    "a.b<x>",
	    "a.<x>y",
	    "a.<x>y.c",
	    "a.<x.y>",
	    "a.<...>",
	    "a.<x y>",
	    "a.<x>>",
	    "<a>.<b>.<c>.<d>.<e>",
	    "a b",
	    "a.b$",
	    "a.<x..>",
	    "a.<<x>>",
	    "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z.0.1.2.3.4.5.6", /* 33 segments */
	};
	static const char *const ok_names[] = {
	    "a",
	    "a.b-c_D9",
	    "<x>",
	    "a.<x...>",
	    "<a>.<b>.<c>.<d>",
	    "a.<x...>.<y...>.z",
	    "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z.0.1.2.3.4.5", /* 32 segments */
	};
	int64_t t = 0;
	(void)state;
	for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
		cfg_key k = {bad_names[i], CFG_INT, NULL, 0, 0, NULL, 0, NULL, 0, NULL};
		cfg_registry *r = cfg_registry_new();
		if (cfg_register(r, "X", NULL, &k, 1, &t) != -1)
			fprintf(stderr, "  accepted: \"%s\"\n", bad_names[i]);
		assert_int_equal(cfg_register(r, "X", NULL, &k, 1, &t), -1);
		cfg_registry_free(&r);
	}
	for (size_t i = 0; i < sizeof(ok_names) / sizeof(ok_names[0]); i++) {
		cfg_key k = {ok_names[i], CFG_INT, NULL, 0, 0, NULL, 0, NULL, 0, NULL};
		cfg_registry *r = cfg_registry_new();
		if (cfg_register(r, "X", NULL, &k, 1, &t) != 0)
			fprintf(stderr, "  rejected: \"%s\"\n", ok_names[i]);
		cfg_registry_free(&r);
		r = cfg_registry_new();
		assert_int_equal(cfg_register(r, "X", NULL, &k, 1, &t), 0);
		cfg_registry_free(&r);
	}
	cfg_key nullname = {NULL, CFG_INT, NULL, 0, 0, NULL, 0, NULL, 0, NULL};
	assert_int_equal(cfg_register(reg, "X", NULL, &nullname, 1, &t), -1);
}

static void test_register_rows(void **state)
{
	int64_t t = 0;
	(void)state;
	/* Programming errors in rows. */
	static const cfg_key enum_no_choices = {"e.x", CFG_ENUM, NULL, 0, 0,
	                                        NULL,  0,        NULL, 0, NULL};
	static const cfg_key bad_bounds = {"b.x", CFG_INT, NULL, 10, 5, NULL, 0, NULL, 0, NULL};
	static const cfg_key neg_size = {"s.x", CFG_SIZE, NULL, -1, 5, NULL, 0, NULL, 0, NULL};
	static const cfg_key bad_type = {"t.x", (cfg_type)99, NULL, 0, 0, NULL, 0, NULL, 0, NULL};
	static const cfg_key no_target = {"n.x", CFG_INT, NULL, 0, 0, NULL, 0, NULL, 0, NULL};
	assert_int_equal(cfg_register(reg, "X", NULL, &enum_no_choices, 1, &t), -1);
	assert_int_equal(cfg_register(reg, "X", NULL, &bad_bounds, 1, &t), -1);
	assert_int_equal(cfg_register(reg, "X", NULL, &neg_size, 1, &t), -1);
	assert_int_equal(cfg_register(reg, "X", NULL, &bad_type, 1, &t), -1);
	assert_int_equal(cfg_register(reg, "X", NULL, &no_target, 1, NULL), -1);

	/* Duplicates: the same name, or the same shape under other placeholder names. */
	static const cfg_key dup_literal = {"node.name", CFG_STRING, NULL, 0, 0,
	                                    NULL,        0,          NULL, 0, NULL};
	static const cfg_key dup_shape = {
	    "listener.tcp.<other>.bind", CFG_STRING, NULL, 0, 0, NULL, 0, record, 0, NULL};
	static const cfg_key other_shape = {
	    "listener.tcp.<name...>.bind", CFG_STRING, NULL, 0, 0, NULL, 0, record, 0, NULL};
	assert_int_equal(cfg_register(reg, "X", NULL, &dup_literal, 1, &t), -1);
	assert_int_equal(cfg_register(reg, "X", NULL, &dup_shape, 1, &t), -1);
	assert_int_equal(cfg_register(reg, "X", NULL, &other_shape, 1, &t), 0);

	/* A failed table registers none of its rows. */
	static const cfg_key partial[] = {
	    {"p.good", CFG_INT, NULL, 0, 0, NULL, 0, NULL, 0, NULL},
	    {"p..bad", CFG_INT, NULL, 0, 0, NULL, 0, NULL, 0, NULL},
	};
	static const cfg_key dup_in_table[] = {
	    {"q.same", CFG_INT, NULL, 0, 0, NULL, 0, NULL, 0, NULL},
	    {"q.same", CFG_INT, NULL, 0, 0, NULL, 0, NULL, 0, NULL},
	};
	assert_int_equal(cfg_register(reg, "X", NULL, partial, 2, &t), -1);
	assert_int_equal(cfg_register(reg, "X", NULL, dup_in_table, 2, &t), -1);
	assert_int_equal(load("p.good = 1\n"), -1);
	expect_has_err("unknown key \"p.good\"");
	assert_int_equal(load("q.same = 1\n"), -1);
	expect_has_err("unknown key \"q.same\"");
}

/* ------------------------------------------------------------------------ */
/* Includes                                                                 */
/* ------------------------------------------------------------------------ */

static int load_tmp(const char *rel)
{
	char path[TPATH];
	return cfg_load_file(reg, tmp_path(path, sizeof(path), rel), &errs);
}

static void test_include_relative(void **state)
{
	(void)state;
	mktmp();
	write_file("main.conf",
	           "node.name = main\ninclude sub/extra.conf\nmqtt.max_inflight = 20\n");
	write_file("sub/extra.conf", "include more.conf\n"); /* relative to sub/ */
	write_file("sub/more.conf", "node.name = from-more\n");
	assert_int_equal(load_tmp("main.conf"), 0);
	expect_nerr(0);
	assert_string_equal(conf.name, "from-more");
	assert_int_equal(conf.inflight, 20);

	/* An absolute include, and a quoted path with a blank. */
	char line[TPATH + 64], path[TPATH];
	snprintf(line, sizeof(line), "include %s\ninclude \"my dir/x.conf\"\n",
	         tmp_path(path, sizeof(path), "sub/more.conf"));
	write_file("abs.conf", line);
	write_file("my dir/x.conf", "mqtt.max_inflight = 21\n");
	assert_int_equal(load_tmp("abs.conf"), 0);
	assert_int_equal(conf.inflight, 21);
}

static void test_include_glob_sorted(void **state)
{
	(void)state;
	mktmp();
	write_file("main.conf",
	           "mqtt.max_inflight = 99\ninclude conf.d/*.conf\nnode.name = last\n");
	write_file("conf.d/20-b.conf", "mqtt.max_inflight = 20\nbackend.redis.hook.order.1 = b\n");
	write_file("conf.d/10-a.conf", "mqtt.max_inflight = 100\nbackend.redis.hook.order.1 = a\n");
	write_file("conf.d/30-c.conf", "mqtt.max_inflight = 30\nbackend.redis.hook.order.1 = c\n");
	write_file("conf.d/ignored.txt", "this is not a config file\n");
	write_file("conf.d/B-upper.conf",
	           "backend.redis.hook.order.1 = B\n"); /* after the digits */
	int rc = load_tmp("main.conf");
	expect_nerr(0);
	assert_int_equal(rc, 0);
	assert_int_equal(conf.inflight, 30); /* the last file in sorted order wins */
	assert_int_equal(ncalls, 4);
	assert_string_equal(calls[0].text, "a");
	assert_string_equal(calls[1].text, "b");
	assert_string_equal(calls[2].text, "c");
	assert_string_equal(calls[3].text, "B");
	assert_string_equal(conf.name, "last");
}

static void test_include_glob_sorted_order(void **state)
{
	(void)state;
	mktmp();
	/* Sorting is by bytes ("B" < "a"), whatever the locale collation says. */
	write_file("main.conf", "include d/*\n");
	write_file("d/a", "backend.redis.hook.o.1 = a\n");
	write_file("d/B", "backend.redis.hook.o.1 = B\n");
	write_file("d/_", "backend.redis.hook.o.1 = _\n");
	assert_int_equal(load_tmp("main.conf"), 0);
	assert_int_equal(ncalls, 3);
	assert_string_equal(calls[0].text, "B");
	assert_string_equal(calls[1].text, "_");
	assert_string_equal(calls[2].text, "a");
}

static void test_include_glob_in_odd_directory(void **state)
{
	(void)state;
	mktmp();
	/* Glob characters in the including file's directory are taken literally. */
	write_file("d[1]/main.conf", "include conf.d/*.conf\n");
	write_file("d[1]/conf.d/x.conf", "mqtt.max_inflight = 77\n");
	write_file("d1/conf.d/x.conf", "mqtt.max_inflight = 66\n");
	assert_int_equal(load_tmp("d[1]/main.conf"), 0);
	expect_nerr(0);
	assert_int_equal(conf.inflight, 77);
}

static void test_include_glob_nomatch(void **state)
{
	(void)state;
	mktmp();
	write_file("main.conf",
	           "include nothing/*.conf\ninclude conf.d/*.conf\nmqtt.max_inflight = 20\n");
	write_file("conf.d/readme.txt", "x\n");
	assert_int_equal(load_tmp("main.conf"), 0);
	expect_nerr(0);
	assert_int_equal(conf.inflight, 20);
}

static void test_include_missing(void **state)
{
	char path[TPATH], want[3 * TPATH];
	(void)state;
	mktmp();
	write_file("main.conf",
	           "mqtt.max_inflight = 20\ninclude missing.conf\nnode.name = after\n");
	assert_int_equal(load_tmp("main.conf"), -1);
	expect_nerr(1);
	/* The path is shown as resolved against the including file's directory. */
	char resolved[TPATH];
	snprintf(want, sizeof(want), "%s:2: cannot include \"%s\": No such file or directory",
	         tmp_path(path, sizeof(path), "main.conf"),
	         tmp_path(resolved, sizeof(resolved), "missing.conf"));
	expect_err(0, want);
	assert_int_equal(conf.inflight, 20);
	assert_string_equal(conf.name, "after");

	/* The top file itself. */
	reset_errs();
	assert_int_equal(cfg_load_file(reg, "/nonexistent-keepmq/x.conf", &errs), -1);
	expect_err(0, "/nonexistent-keepmq/x.conf: cannot read: No such file or directory");

	/* Files over 16 MiB are refused (a sparse file: nothing is written). */
	reset_errs();
	write_file("huge.conf", "");
	assert_int_equal(truncate(tmp_path(path, sizeof(path), "huge.conf"), 17 << 20), 0);
	write_file("inc-huge.conf", "include huge.conf\n");
	assert_int_equal(load_tmp("huge.conf"), -1);
	expect_nerr(1);
	expect_has_err("huge.conf\" is larger than 16 MiB");
	assert_int_equal(load_tmp("inc-huge.conf"), -1);
	expect_has_err("inc-huge.conf:1: \"");

	/* A directory is not a file. */
	reset_errs();
	write_file("sub/f.conf", "\n");
	write_file("dir.conf", "include sub\n");
	assert_int_equal(load_tmp("dir.conf"), -1);
	expect_has_err("Is a directory");
}

static void test_include_cycle(void **state)
{
	char a[TPATH], b[TPATH], want[4 * TPATH];
	(void)state;
	mktmp();
	write_file("a.conf", "node.name = a\ninclude b.conf\n");
	write_file("b.conf",
	           "mqtt.max_inflight = 20\ninclude ./a.conf\n"); /* spelled differently */
	assert_int_equal(load_tmp("a.conf"), -1);
	expect_nerr(1);
	snprintf(want, sizeof(want), "%s:2: include cycle: %s -> %s -> %s/./a.conf",
	         tmp_path(b, sizeof(b), "b.conf"), tmp_path(a, sizeof(a), "a.conf"), b, tmpdir);
	expect_err(0, want);
	assert_string_equal(conf.name, "a");
	assert_int_equal(conf.inflight, 20);

	/* A file including itself. */
	reset_errs();
	write_file("self.conf", "include self.conf\n");
	assert_int_equal(load_tmp("self.conf"), -1);
	expect_nerr(1);
	expect_has_err("include cycle");

	/* Including the same file twice, not nested, is fine. */
	reset_errs();
	write_file("diamond.conf", "include left.conf\ninclude right.conf\n");
	write_file("left.conf", "include common.conf\n");
	write_file("right.conf", "include common.conf\n");
	write_file("common.conf", "mqtt.max_inflight = 55\n");
	assert_int_equal(load_tmp("diamond.conf"), 0);
	expect_nerr(0);
	assert_int_equal(conf.inflight, 55);
}

static void test_include_depth(void **state)
{
	char name[32], body[64];
	(void)state;
	mktmp();
	/* f0 is the top file; f1..f16 are 16 nested includes: allowed. f17 is one too many. */
	for (int i = 0; i < 16; i++) {
		snprintf(name, sizeof(name), "f%d.conf", i);
		snprintf(body, sizeof(body), "include f%d.conf\n", i + 1);
		write_file(name, body);
	}
	write_file("f16.conf", "mqtt.max_inflight = 16\n");
	assert_int_equal(load_tmp("f0.conf"), 0);
	expect_nerr(0);
	assert_int_equal(conf.inflight, 16);

	write_file("f16.conf", "mqtt.max_inflight = 116\ninclude f17.conf\n");
	write_file("f17.conf", "mqtt.max_inflight = 117\n");
	assert_int_equal(load_tmp("f0.conf"), -1);
	expect_nerr(1);
	expect_has_err("f16.conf:2: cannot include \"f17.conf\": includes nest more than 16 deep");
	assert_int_equal(conf.inflight, 116);
}

static void test_include_from_string(void **state)
{
	char cwd[PATH_MAX];
	(void)state;
	mktmp();
	write_file("rel.conf", "node.name = relative\n");
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_int_equal(chdir(tmpdir), 0);
	int rc = load("include rel.conf\n");
	assert_int_equal(chdir(cwd), 0);
	assert_int_equal(rc, 0);
	expect_nerr(0);
	assert_string_equal(conf.name, "relative");

	/* "include = x" is a key named include, not a directive. */
	assert_int_equal(load("include = x\n"), -1);
	expect_err(0, "t.conf:1: unknown key \"include\"");
	reset_errs();
	assert_int_equal(load("include \"unterminated\n"), -1);
	expect_has_err("t.conf:1: the include path starts with a double quote");
	reset_errs();
	assert_int_equal(load("include \"\"\n"), -1);
	expect_err(0, "t.conf:1: include needs a file name or glob");
}

/* ------------------------------------------------------------------------ */
/* Documentation                                                            */
/* ------------------------------------------------------------------------ */

static void expect_in(const char *doc, const char *sub)
{
	if (!strstr(doc, sub))
		fprintf(stderr, "  missing from the docs:\n%s\n", sub);
	assert_non_null(strstr(doc, sub));
}

static int count_of(const char *doc, const char *sub)
{
	int n = 0;
	for (const char *p = doc; (p = strstr(p, sub)); p++)
		n++;
	return n;
}

static void test_write_docs(void **state)
{
	char *doc = NULL;
	size_t len = 0;
	(void)state;
	FILE *f = open_memstream(&doc, &len);
	assert_non_null(f);
	assert_int_equal(cfg_write_docs(reg, f), 0);
	fclose(f);

	expect_in(doc, "# Configuration reference\n");
	expect_in(doc, "## File format\n");
	expect_in(doc, "## Value types\n");
	expect_in(doc, "## Contents\n\n- [MQTT](#mqtt)\n- [Listeners](#listeners)\n\n");
	expect_in(doc, "## MQTT\n\nSettings of the *MQTT* protocol layer.\n\n");
	expect_in(doc, "### `mqtt.max_packet_size`\n\n"
	               "- **Type:** [size](#value-types)\n"
	               "- **Default:** `1MB`\n"
	               "- **Range:** `16B` to `256MB`\n\n"
	               "The largest packet accepted from a client.\n\n");
	expect_in(doc, "### `mqtt.retain_available`\n\n- **Type:** [boolean](#value-types)\n"
	               "- **Default:** `on`\n\nWhether retained messages are supported.\n");
	expect_in(doc, "### `mqtt.keepalive`\n\n- **Type:** [duration](#value-types)\n"
	               "- **Default:** `15s`\n- **Range:** `1s` to `1d`\n");
	expect_in(doc, "- **Range:** `0` to `100000`, or `infinity` (the same as `100000`)\n");
	expect_in(doc, "### `mqtt.max_store`\n\n- **Type:** [size](#value-types)\n"
	               "- **Default:** none\n- **Range:** any, or `infinity` for no limit\n");
	expect_in(doc, "### `mqtt.offset`\n\n- **Type:** [integer](#value-types)\n"
	               "- **Default:** none\n\nAn unbounded integer.\n");
	expect_in(doc, "### `log.level`\n\n- **Type:** [enum](#value-types)\n"
	               "- **Values:** `debug`, `info`, `warning`\n- **Default:** `info`\n");
	expect_in(doc, "### `listener.bind`\n\n- **Type:** [address](#value-types)\n"
	               "- **Default:** `:1883`\n");
	expect_in(doc, "### `overload.ratio`\n\n- **Type:** [number](#value-types)\n"
	               "- **Default:** `0.8`\n- **Range:** `0` to `1`\n");
	expect_in(doc, "### `node.data_dir`\n\n- **Type:** [path](#value-types)\n");
	expect_in(doc, "### `auth.password`\n\n- **Type:** [string](#value-types)\n"
	               "- **Default:** none; this key must be set\n- **Required.**\n"
	               "- **Secret:** the value is never shown in messages.\n");
	expect_in(doc, "## Listeners\n\n### `listener.tcp.<name>.bind`\n");
	expect_in(
	    doc,
	    "### `listener.tcp.<name>.max_connections`\n\n- **Type:** [integer](#value-types)\n"
	    "- **Default:** `1024`\n- **Range:** `1` to `1000000`, or `infinity` (the same as "
	    "`1000000`)\n\nConnection limit of a listener.\n");
	expect_in(doc, "### `backend.redis.hook.<hookpoint...>.<n>`\n");
	/* Ten tables share the section: one heading. Hidden rows are left out. */
	assert_int_equal(count_of(doc, "## Listeners\n"), 1);
	assert_null(strstr(doc, "debug.internal"));
	assert_null(strstr(doc, "Internal knob"));
	/* Sections in registration order. */
	assert_true(strstr(doc, "## MQTT\n") < strstr(doc, "## Listeners\n"));
	/* Every visible row is there. */
	for (size_t i = 0; i < sizeof(conf_keys) / sizeof(conf_keys[0]); i++) {
		char h[128];
		snprintf(h, sizeof(h), "### `%s`\n", conf_keys[i].name);
		assert_int_equal(count_of(doc, h), conf_keys[i].flags & CFG_F_HIDDEN ? 0 : 1);
	}
	free(doc);

	/* A secret default is not printed. */
	static const cfg_key sk = {"s.token", CFG_STRING, "tok-123",    0,         0, NULL,
	                           0,         NULL,       CFG_F_SECRET, "A token."};
	char *tok = NULL;
	cfg_registry *r = cfg_registry_new();
	assert_int_equal(cfg_register(r, "Secrets", NULL, &sk, 1, &tok), 0);
	f = open_memstream(&doc, &len);
	assert_int_equal(cfg_write_docs(r, f), 0);
	fclose(f);
	assert_null(strstr(doc, "tok-123"));
	expect_in(doc, "- **Default:** set, not shown (secret)\n");
	free(doc);

	/* Edge cases of the format: anchors, backticks, open ranges, empty defaults. */
	static const cfg_key edge[] = {
	    {"e.tick", CFG_STRING, "a`b", 0, 0, NULL, 0, NULL, 0, "Has a backtick."},
	    {"e.empty", CFG_STRING, "", 0, 0, NULL, 8, NULL, 0, NULL},
	    {"e.least", CFG_SIZE, "1KB", 1024, INT64_MAX, NULL, 16, NULL, CFG_F_INFINITY, NULL},
	    {"e.hidden", CFG_INT, NULL, 0, 0, NULL, 24, NULL, CFG_F_HIDDEN, NULL},
	};
	static const cfg_key only_hidden = {"h.x", CFG_INT, NULL,         0,   0, NULL,
	                                    0,     NULL,    CFG_F_HIDDEN, NULL};
	char target[32] = {0};
	int64_t hidden = 0;
	assert_int_equal(cfg_register(r, "Edge Cases, Too", "Intro.", edge, 4, target), 0);
	assert_int_equal(cfg_register(r, "Internal", "Not shown.", &only_hidden, 1, &hidden), 0);
	f = open_memstream(&doc, &len);
	assert_int_equal(cfg_write_docs(r, f), 0);
	fclose(f);
	expect_in(doc, "- [Edge Cases, Too](#edge-cases-too)\n");
	expect_in(doc, "- **Default:** `` a`b ``\n");
	expect_in(doc,
	          "### `e.empty`\n\n- **Type:** [string](#value-types)\n- **Default:** empty\n");
	expect_in(doc, "- **Range:** at least `1KB`, or `infinity` for no limit\n");
	assert_null(strstr(doc, "e.hidden"));
	assert_null(strstr(doc, "Internal")); /* a section of hidden rows only is left out */
	free(doc);

	/* A write error is reported. */
	f = fopen("/dev/null", "r");
	assert_non_null(f);
	assert_int_equal(cfg_write_docs(r, f), -1);
	fclose(f);
	cfg_registry_free(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	    T(test_bool),
	    T(test_int),
	    T(test_size),
	    T(test_duration),
	    T(test_infinity),
	    T(test_string_and_path),
	    T(test_enum),
	    T(test_addr),
	    T(test_double),
	    T(test_public_parsers),
	    T(test_defaults),
	    T(test_bad_defaults),
	    T(test_check_required),
	    T(test_check_required_rejected_value),
	    T(test_check_required_default_does_not_count),
	    T(test_release),
	    T(test_quotes),
	    T(test_comments_and_blanks),
	    T(test_crlf_and_bom),
	    T(test_keys_case_sensitive),
	    T(test_line_errors),
	    T(test_long_lines),
	    T(test_nul_byte),
	    T(test_later_wins),
	    T(test_errors_collected),
	    T(test_errors_capped),
	    T(test_errorf_format),
	    T(test_unknown_key_suggestions),
	    T(test_unknown_key_escaped),
	    T(test_placeholder_captures),
	    T(test_multi_placeholder_backtracking),
	    T(test_precedence),
	    T(test_literal_beats_placeholder_registered_first),
	    T(test_callback_error),
	    T(test_secret_not_echoed),
	    T(test_cfg_set),
	    T(test_register_rejects),
	    T(test_register_rows),
	    T(test_include_relative),
	    T(test_include_glob_sorted),
	    T(test_include_glob_sorted_order),
	    T(test_include_glob_in_odd_directory),
	    T(test_include_glob_nomatch),
	    T(test_include_missing),
	    T(test_include_cycle),
	    T(test_include_depth),
	    T(test_include_from_string),
	    T(test_write_docs),
#undef T
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
