/*
 * test_persist_spill.c - a pool connection's spill file (src/persist/spill.c)
 * and the pool thread that fills and drains it (src/persist/pool.c).
 *
 * Design
 * ------
 * The fixture starts like main(): a fresh registry, the bus with the SQLite
 * backend (persist_new(reg, keepmq_backends)), defaults, then a
 * configuration text with one pool whose database and spill_dir are in a
 * new temporary directory, and persist_config_finish(). Rules: on_message_
 * publish (message.publish), on_message_acked (message.acked: jobs with
 * subscription filters) and on_message_fetch (session.subscribed: a lookup).
 *
 * The file tests drive spill.c directly on a pslot of their own (the pool
 * is not started): jobs are built with pjob_build() from events like the
 * broker's, written with spill_write_list() in chunks of several sizes, and
 * read back with spill_read(); every field must come back, in order. They
 * cover what the bulk writer and the read-ahead reader must keep from the
 * one-record-per-pread design: records larger than the read-ahead and the
 * write buffer, the prefix written when max_spill_bytes is reached, the .pos
 * position (a reopened file continues after the committed jobs; a drained
 * file is emptied), a partial record at the end (a crash while writing) being
 * ignored, and spill_prepend putting jobs in front of the unread rest.
 *
 * The pool tests start the pool thread (persist_start) with spill_after 10,
 * hold the database's write lock from a second SQLite connection so that
 * every batch fails with SQLITE_BUSY and the jobs pile up and are spilled,
 * keep firing while the lock is released so that spilling and draining the
 * file overlap, and then wait (no deadline: ctest's timeout bounds it) until
 * nothing is queued, in flight or spilled. Every message must be in
 * mqtt_msg exactly once, in the order it was fired (one connection, so one
 * order), and every metrics snapshot taken meanwhile must satisfy
 * matched = success + failed + inflight + queuing + dropped. No assertion
 * depends on how fast anything runs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backends/registry.h"
#include "config/config.h"
#include "persist/internal.h"
#include "persist/persist.h"

/* ------------------------------------------------------------------------ */
/* Fixture                                                                  */
/* ------------------------------------------------------------------------ */

static cfg_registry *reg;
static persist *bus;
static cfg_errors errs;
static char dir[256];
static char db_path[300];
static char spill_dir[300];

static void dump_errors(void)
{
	for (int i = 0; i < errs.n; i++)
		fprintf(stderr, "  error %d: %s\n", i, errs.e[i].msg);
}

/* Builds the bus for a configuration with `pool_extra` pool keys. */
static void configure(const char *pool_extra)
{
	memset(&errs, 0, sizeof(errs));
	reg = cfg_registry_new();
	assert_non_null(reg);
	bus = persist_new(reg, keepmq_backends);
	assert_non_null(bus);
	assert_int_equal(cfg_apply_defaults(reg, &errs), 0);
	char text[4096];
	snprintf(text, sizeof(text),
	         "backend.sqlite.pool1.database = %s\n"
	         "backend.sqlite.pool1.spill_dir = %s\n"
	         "backend.sqlite.pool1.busy_timeout = 20ms\n"
	         "backend.sqlite.pool1.retry_max_backoff = 100ms\n"
	         "%s"
	         "backend.sqlite.hook.message.publish.1 = {\"topic\": \"#\", \"action\": "
	         "{\"function\": \"on_message_publish\"}, \"pool\": \"pool1\"}\n"
	         "backend.sqlite.hook.message.acked.1 = {\"topic\": \"#\", \"action\": "
	         "{\"function\": \"on_message_acked\"}, \"pool\": \"pool1\"}\n"
	         "backend.sqlite.hook.session.subscribed.1 = {\"topic\": \"#\", \"action\": "
	         "{\"function\": \"on_message_fetch\"}, \"pool\": \"pool1\"}\n",
	         db_path, spill_dir, pool_extra);
	int rc = cfg_load_string(reg, "t.conf", text, strlen(text), &errs);
	rc |= persist_config_finish(bus, &errs);
	if (rc || errs.n)
		dump_errors();
	assert_int_equal(rc, 0);
	assert_int_equal(errs.n, 0);
}

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/keepmq-spill-XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(db_path, sizeof(db_path), "%s/t.db", dir);
	snprintf(spill_dir, sizeof(spill_dir), "%s/spill", dir);
	configure("");
	return 0;
}

static void unconfigure(void)
{
	cfg_release(reg);
	cfg_registry_free(&reg);
	persist_free(&bus);
}

static int teardown(void **state)
{
	(void)state;
	unconfigure();
	char cmd[400];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
	return 0;
}

static pbackend *sqlite_be(void)
{
	assert_non_null(bus->backends);
	return bus->backends;
}

static ppool *pool1(void)
{
	ppool *pl = sqlite_be()->pools;
	assert_non_null(pl);
	assert_string_equal(pl->name, "pool1");
	return pl;
}

static prule *rule_at(int point)
{
	pbackend *be = sqlite_be();
	for (size_t i = 0; i < be->nrules; i++)
		if (be->rule_vec[i]->point == point)
			return be->rule_vec[i];
	fail_msg("no rule at point %d", point);
	return NULL;
}

/* ------------------------------------------------------------------------ */
/* Jobs                                                                     */
/* ------------------------------------------------------------------------ */

/* The payload of job i: its number, then a length that varies with i, and
 * for `big` (if non-zero) a payload of that many bytes. */
static size_t payload_of(unsigned i, size_t big, uint8_t *out, size_t cap)
{
	size_t len = big ? big : (size_t)(i * 37u % 301u);
	if (len < 12)
		len = 12;
	assert_true(len <= cap);
	for (size_t k = 0; k < len; k++)
		out[k] = (uint8_t)(i * 7u + k);
	snprintf((char *)out, 12, "m-%08u", i);
	return len;
}

static uint8_t *payload_buf;
#define PAYLOAD_CAP (6u * 1024 * 1024)

/* Job i: a publish (with a message), or every 5th an acked event with
 * filters; `big` is a payload size or 0. */
static pjob *make_job(unsigned i, size_t big)
{
	char cid[32], user[32], topic[64];
	snprintf(cid, sizeof(cid), "client-%u", i % 3);
	snprintf(user, sizeof(user), i % 2 ? "user-%u" : "", i);
	snprintf(topic, sizeof(topic), "t/%u/x", i % 11);
	size_t plen = payload_of(i, big, payload_buf, PAYLOAD_CAP);
	bool acked = i % 5 == 4;
	msg_init mi = {.topic = {(const uint8_t *)topic, (uint32_t)strlen(topic)},
	               .payload = {payload_buf, (uint32_t)plen},
	               .qos = 1,
	               .retain = i % 7 == 0,
	               .origin = {(const uint8_t *)cid, (uint32_t)strlen(cid)},
	               .origin_user = {(const uint8_t *)user, (uint32_t)strlen(user)},
	               .now_ms = 1700000000000ull + i};
	kmq_msg *m = msg_new(&mi);
	assert_non_null(m);
	mqtt_str filters[3] = {{(const uint8_t *)"t/#", 3},
	                       {(const uint8_t *)topic, (uint32_t)strlen(topic)},
	                       {(const uint8_t *)"", 0}};
	hook_event ev = {.point = acked ? HOOK_MESSAGE_ACKED : HOOK_MESSAGE_PUBLISH,
	                 .qos = 1,
	                 .retain = i % 7 == 0,
	                 .worker = i % 4,
	                 .serial = 1000 + i,
	                 .ts_ms = 1700000000000ull + i,
	                 .clientid = {(const uint8_t *)cid, (uint32_t)strlen(cid)},
	                 .username = {(const uint8_t *)user, (uint32_t)strlen(user)},
	                 .peerhost = {(const uint8_t *)"127.0.0.1", 9},
	                 .topic = {(const uint8_t *)topic, (uint32_t)strlen(topic)},
	                 .msg = m,
	                 .filters = acked ? filters : NULL,
	                 .nfilters = acked ? 3 : 0};
	pjob *j = pjob_build(rule_at(ev.point), &ev);
	assert_non_null(j);
	j->ack_seq = i % 3 ? 0 : 77 + i;
	msg_unref(&m);
	return j;
}

static bool str_eq(mqtt_str a, mqtt_str b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

/* A job read back must equal the one written. */
static void expect_same(const pjob *a, const pjob *b)
{
	assert_ptr_equal(a->rule, b->rule);
	assert_int_equal(a->point, b->point);
	assert_int_equal(a->qos, b->qos);
	assert_int_equal(a->retain, b->retain);
	assert_int_equal(a->implicit, b->implicit);
	assert_int_equal(a->worker, b->worker);
	assert_int_equal(a->serial, b->serial);
	assert_int_equal(a->ack_seq, b->ack_seq);
	assert_int_equal(a->ts_ms, b->ts_ms);
	assert_true(str_eq(a->clientid, b->clientid));
	assert_true(str_eq(a->username, b->username));
	assert_true(str_eq(a->peerhost, b->peerhost));
	assert_true(str_eq(a->topic, b->topic));
	assert_int_equal(a->nfilters, b->nfilters);
	for (uint32_t i = 0; i < a->nfilters; i++)
		assert_true(str_eq(a->filters[i], b->filters[i]));
	assert_int_equal(a->msg != NULL, b->msg != NULL);
	if (a->msg) {
		assert_memory_equal(a->msg->id, b->msg->id, 16);
		assert_int_equal(a->msg->ts_ms, b->msg->ts_ms);
		assert_int_equal(a->msg->flags, b->msg->flags);
		assert_int_equal(a->msg->qos, b->msg->qos);
		assert_true(str_eq(a->msg->payload, b->msg->payload));
		assert_true(str_eq(a->msg->origin, b->msg->origin));
		assert_true(str_eq(a->msg->origin_user, b->msg->origin_user));
		assert_true(str_eq(a->msg->topic, b->msg->topic));
	}
}

static void free_list(pjob *j)
{
	while (j) {
		pjob *next = j->next;
		pjob_free(&j);
		j = next;
	}
}

/* jobs[0..n) linked in order. */
static pjob *link_jobs(pjob **jobs, size_t n)
{
	for (size_t i = 0; i + 1 < n; i++)
		jobs[i]->next = jobs[i + 1];
	if (n)
		jobs[n - 1]->next = NULL;
	return n ? jobs[0] : NULL;
}

/* A slot of the (not started) pool with its spill file open. */
static void open_slot(pslot *s)
{
	memset(s, 0, sizeof(*s));
	s->pool = pool1();
	s->idx = 0;
	char err[300] = "";
	if (spill_open(s, err, sizeof(err)))
		fail_msg("spill_open: %s", err);
	assert_true(s->spill_fd >= 0);
}

static off_t file_size(const char *path)
{
	struct stat st;
	if (stat(path, &st))
		return -1;
	return st.st_size;
}

/* Reads everything the file holds and checks it against jobs[from..to). */
static void expect_read(pslot *s, pjob **jobs, size_t from, size_t to)
{
	uint64_t skipped = 0;
	for (size_t i = from; i < to; i++) {
		pjob *j = spill_read(s, &skipped);
		if (!j)
			fail_msg("job %zu of [%zu, %zu) not read back", i, from, to);
		expect_same(j, jobs[i]);
		pjob_free(&j);
	}
	assert_null(spill_read(s, &skipped));
	assert_int_equal(skipped, 0);
	assert_int_equal(atomic_load(&s->spilled), 0);
}

/* ------------------------------------------------------------------------ */
/* The file                                                                 */
/* ------------------------------------------------------------------------ */

static void test_roundtrip_in_chunks(void **state)
{
	(void)state;
	enum { N = 6000 };
	pjob **jobs = calloc(N, sizeof(*jobs));
	assert_non_null(jobs);
	for (unsigned i = 0; i < N; i++) /* two records larger than the read-ahead and a write */
		jobs[i] = make_job(i, i == 2500 ? 5u * 1024 * 1024 : i == 2501 ? 1500000 : 0);
	pslot s;
	open_slot(&s);
	/* chunks of 1, 7, 1000, then the rest (several writes of 4 MiB) */
	size_t sizes[] = {1, 7, 1000, N - 1008}, at = 0;
	for (size_t c = 0; c < sizeof(sizes) / sizeof(sizes[0]); c++) {
		pjob *list = link_jobs(jobs + at, sizes[c]);
		assert_int_equal(spill_write_list(&s, list, sizes[c]), sizes[c]);
		at += sizes[c];
		assert_int_equal(atomic_load(&s.spilled), at);
	}
	assert_int_equal(file_size(s.spill_path), (off_t)s.spill_wr);
	/* `max` limits how much of a list is written */
	pjob *extra[3] = {make_job(N, 0), make_job(N + 1, 0), make_job(N + 2, 0)};
	assert_int_equal(spill_write_list(&s, link_jobs(extra, 3), 2), 2);
	assert_int_equal(atomic_load(&s.spilled), N + 2);
	/* half read, then more written behind it: still one order */
	uint64_t skipped = 0;
	for (unsigned i = 0; i < N / 2; i++) {
		pjob *j = spill_read(&s, &skipped);
		assert_non_null(j);
		expect_same(j, jobs[i]);
		pjob_free(&j);
	}
	pjob *more[2] = {make_job(N + 3, 0), make_job(N + 4, 0)};
	assert_int_equal(spill_write_list(&s, link_jobs(more, 2), 2), 2);
	for (unsigned i = N / 2; i < N; i++) {
		pjob *j = spill_read(&s, &skipped);
		assert_non_null(j);
		expect_same(j, jobs[i]);
		pjob_free(&j);
	}
	pjob *want[4] = {extra[0], extra[1], more[0], more[1]};
	expect_read(&s, want, 0, 4);
	/* drained and committed: the file is emptied */
	spill_commit(&s);
	assert_int_equal(file_size(s.spill_path), 0);
	assert_int_equal(s.spill_rd, 0);
	assert_int_equal(s.spill_wr, 0);
	/* and written again from its start, twice: what the read-ahead held
	 * of the emptied file must not be read again */
	assert_int_equal(spill_write_list(&s, link_jobs(jobs, 3), 3), 3);
	expect_read(&s, jobs, 0, 3);
	spill_commit(&s);
	assert_int_equal(spill_write_list(&s, link_jobs(jobs + 3, 3), 3), 3);
	expect_read(&s, jobs, 3, 6);
	spill_close(&s);
	for (unsigned i = 0; i < N; i++)
		pjob_free(&jobs[i]);
	free(jobs);
	free_list(extra[0]);
	free_list(more[0]);
}

static void test_full_file_takes_a_prefix(void **state)
{
	(void)state;
	enum { N = 400 };
	pjob *jobs[N];
	for (unsigned i = 0; i < N; i++)
		jobs[i] = make_job(i, 0);
	pslot s;
	open_slot(&s);
	s.pool->max_spill_bytes = 20000; /* below the configurable minimum, for the test */
	size_t w = spill_write_list(&s, link_jobs(jobs, N), N);
	assert_true(w > 0 && w < N);
	/* a record starts only below the bound, as with one record per write */
	assert_true(s.spill_wr >= 20000);
	assert_int_equal(file_size(s.spill_path), (off_t)s.spill_wr);
	assert_int_equal(atomic_load(&s.spilled), w);
	/* full: nothing more */
	assert_int_equal(spill_write_list(&s, jobs[w], N - w), 0);
	assert_int_equal(file_size(s.spill_path), (off_t)s.spill_wr);
	expect_read(&s, jobs, 0, w);
	spill_commit(&s);
	/* emptied: room again */
	assert_int_equal(spill_write_list(&s, jobs[w], N - w) > 0, 1);
	spill_close(&s);
	free_list(jobs[0]);
}

static void test_position_survives_reopen(void **state)
{
	(void)state;
	enum { N = 3000 };
	pjob **jobs = calloc(N, sizeof(*jobs));
	assert_non_null(jobs);
	for (unsigned i = 0; i < N; i++)
		jobs[i] = make_job(i, 0);
	pslot s;
	open_slot(&s);
	assert_int_equal(spill_write_list(&s, link_jobs(jobs, N), N), N);
	uint64_t skipped = 0;
	for (unsigned i = 0; i < 1234; i++) {
		pjob *j = spill_read(&s, &skipped);
		assert_non_null(j);
		pjob_free(&j);
	}
	spill_commit(&s); /* these are written */
	for (unsigned i = 1234; i < 1300; i++) { /* read, never committed */
		pjob *j = spill_read(&s, &skipped);
		assert_non_null(j);
		pjob_free(&j);
	}
	spill_close(&s);
	/* a new run: continues after the committed jobs, counts the rest */
	open_slot(&s);
	assert_int_equal(atomic_load(&s.spilled), N - 1234);
	assert_int_equal(s.spill_prev, N - 1234);
	expect_read(&s, jobs, 1234, N);
	spill_commit(&s);
	assert_int_equal(file_size(s.spill_path), 0);
	spill_close(&s);
	open_slot(&s);
	assert_int_equal(atomic_load(&s.spilled), 0);
	spill_close(&s);
	free_list(jobs[0]);
	free(jobs);
}

static void test_partial_record_at_end_is_ignored(void **state)
{
	(void)state;
	enum { N = 50 };
	pjob *jobs[N + 1];
	for (unsigned i = 0; i <= N; i++)
		jobs[i] = make_job(i, 0);
	pslot s;
	open_slot(&s);
	assert_int_equal(spill_write_list(&s, link_jobs(jobs, N), N), N);
	uint64_t whole = s.spill_wr;
	/* a crash in the middle of a write: the start of one more record */
	char other[400];
	snprintf(other, sizeof(other), "%s/other.spill", dir);
	int fd = open(other, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	pslot t; /* writes one record elsewhere, to copy its first bytes */
	memset(&t, 0, sizeof(t));
	t.pool = s.pool;
	t.spill_fd = fd;
	t.spill_pos_fd = -1;
	t.spill_path = other;
	jobs[N]->next = NULL;
	assert_int_equal(spill_write_list(&t, jobs[N], 1), 1);
	uint8_t rec[64];
	assert_int_equal(pread(fd, rec, sizeof(rec), 0), (ssize_t)sizeof(rec));
	close(fd);
	buf_free(&t.spill_wbuf);
	assert_int_equal(pwrite(s.spill_fd, rec, 40, (off_t)whole), 40);
	spill_close(&s);
	open_slot(&s);
	assert_int_equal(atomic_load(&s.spilled), N);
	assert_int_equal(s.spill_wr, whole);
	expect_read(&s, jobs, 0, N);
	spill_close(&s);
	free_list(jobs[0]);
	pjob_free(&jobs[N]);
}

static void test_prepend_puts_older_jobs_first(void **state)
{
	(void)state;
	enum { N = 2000 };
	pjob **jobs = calloc(N, sizeof(*jobs));
	assert_non_null(jobs);
	for (unsigned i = 0; i < N; i++)
		jobs[i] = make_job(i, 0);
	pslot s;
	open_slot(&s);
	/* jobs 100.. are in the file; 0..99 were being retried */
	assert_int_equal(spill_write_list(&s, link_jobs(jobs + 100, N - 100), N - 100), N - 100);
	uint64_t skipped = 0;
	pjob *j = spill_read(&s, &skipped); /* read ahead, not committed */
	assert_non_null(j);
	pjob_free(&j);
	/* as at shutdown: the unread rest of the file starts at job 101; the
	 * retried jobs 0..99 and job 100 (read, not written) go in front */
	assert_int_equal(spill_prepend(&s, link_jobs(jobs, 101)), 101);
	assert_int_equal(atomic_load(&s.spilled), N);
	expect_read(&s, jobs, 0, N);
	spill_close(&s);
	open_slot(&s); /* and the position was reset with the new file */
	assert_int_equal(atomic_load(&s.spilled), N);
	spill_close(&s);
	for (unsigned i = 0; i < N; i++)
		pjob_free(&jobs[i]);
	free(jobs);
}

/* ------------------------------------------------------------------------ */
/* The pool thread                                                          */
/* ------------------------------------------------------------------------ */

static _Atomic uint64_t answers;

static void on_ack(void *ctx, unsigned worker, const char *cid, uint32_t cid_len,
                   uint64_t serial, uint64_t ack_seq, bool ok)
{
	(void)ctx, (void)worker, (void)cid, (void)cid_len, (void)serial, (void)ack_seq, (void)ok;
}

static void on_result(void *ctx, presult *r)
{
	(void)ctx;
	atomic_fetch_add(&answers, 1);
	persist_result_free(&r);
}

static const persist_host host = {.ack_done = on_ack, .result = on_result, .node = "node@test"};

static unsigned nsamples;

/* matched = success + failed + inflight + queuing + dropped, every rule. */
static void check_invariant(void)
{
	char *text = persist_metrics_json(bus);
	assert_non_null(text);
	json_error_t e;
	json_t *root = json_loads(text, 0, &e);
	free(text);
	assert_non_null(root);
	json_t *rules = json_object_get(json_object_get(root, "sqlite"), "rules");
	assert_true(json_array_size(rules) == 3);
	for (size_t i = 0; i < json_array_size(rules); i++) {
		json_t *r = json_array_get(rules, i);
#define F(k) json_integer_value(json_object_get(r, k))
		json_int_t sum = F("success") + F("failed") + F("inflight") + F("queuing") + F("dropped");
		if (F("matched") != sum || F("inflight") < 0 || F("queuing") < 0)
			fail_msg("invariant broken: %s", json_dumps(r, JSON_COMPACT));
#undef F
	}
	json_decref(root);
	nsamples++;
}

static uint64_t rule_counter(int point, size_t off)
{
	prule *r = rule_at(point);
	return atomic_load((_Atomic uint64_t *)((char *)&r->m + off));
}

static void fire(unsigned i)
{
	char topic[32], cid[16];
	snprintf(topic, sizeof(topic), "t/%u", i % 13);
	snprintf(cid, sizeof(cid), "c%u", i % 5);
	uint8_t payload[24];
	int plen = snprintf((char *)payload, sizeof(payload), "m-%08u", i);
	if (i % 1000 == 999) { /* a lookup now and then: never spilled */
		hook_event ev = {.point = HOOK_SESSION_SUBSCRIBED, .qos = 1, .worker = 0,
		                 .serial = 1, .ts_ms = 1700000000000ull,
		                 .clientid = {(const uint8_t *)cid, (uint32_t)strlen(cid)},
		                 .topic = {(const uint8_t *)"t/#", 3}};
		assert_true(persist_fire(bus, &ev) >= 0);
	}
	msg_init mi = {.topic = {(const uint8_t *)topic, (uint32_t)strlen(topic)},
	               .payload = {payload, (uint32_t)plen},
	               .qos = 1,
	               .origin = {(const uint8_t *)cid, (uint32_t)strlen(cid)},
	               .now_ms = 1700000000000ull + i};
	kmq_msg *m = msg_new(&mi);
	assert_non_null(m);
	hook_event ev = {.point = HOOK_MESSAGE_PUBLISH, .qos = 1, .worker = 0, .serial = 1,
	                 .ts_ms = mi.now_ms,
	                 .clientid = {(const uint8_t *)cid, (uint32_t)strlen(cid)},
	                 .peerhost = {(const uint8_t *)"127.0.0.1", 9},
	                 .topic = mi.topic, .msg = m};
	assert_true(persist_fire(bus, &ev) >= 0);
	msg_unref(&m);
	if (i % 500 == 0)
		check_invariant();
}

static bool drained(void)
{
	pslot *s = &pool1()->slots[0];
	return persist_pending(bus) == 0 && atomic_load(&s->spilled) == 0;
}

/* Every message fired is in mqtt_msg once, in firing order. */
static void expect_stored_in_order(unsigned n)
{
	sqlite3 *db;
	assert_int_equal(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT payload FROM mqtt_msg ORDER BY id", -1, &st,
	                                    NULL),
	                 SQLITE_OK);
	unsigned i = 0;
	while (sqlite3_step(st) == SQLITE_ROW) {
		char want[24];
		snprintf(want, sizeof(want), "m-%08u", i);
		const void *p = sqlite3_column_blob(st, 0);
		int len = sqlite3_column_bytes(st, 0);
		if (i >= n || len != (int)strlen(want) || memcmp(p, want, (size_t)len))
			fail_msg("row %u is %.*s, expected %s", i, len, (const char *)p, want);
		i++;
	}
	sqlite3_finalize(st);
	sqlite3_close(db);
	assert_int_equal(i, n);
}

static void test_pool_spills_and_replays_in_order(void **state)
{
	(void)state;
	unconfigure();
	configure("backend.sqlite.pool1.spill_after = 10\n"
	          "backend.sqlite.pool1.batch_size = 50\n");
	/* the schema exists before the lock is taken */
	char err[300] = "";
	if (persist_start(bus, &host, err, sizeof(err)))
		fail_msg("persist_start: %s", err);
	sqlite3 *locker;
	assert_int_equal(sqlite3_open(db_path, &locker), SQLITE_OK);
	sqlite3_busy_timeout(locker, 10000);
	assert_int_equal(sqlite3_exec(locker, "BEGIN EXCLUSIVE", NULL, NULL, NULL), SQLITE_OK);
	pslot *s = &pool1()->slots[0];
	const unsigned n1 = 20000, n2 = 60000;
	unsigned i = 0;
	/* the database is locked: every batch is retried, the rest spilled */
	for (; i < n1; i++)
		fire(i);
	while (rule_counter(HOOK_MESSAGE_PUBLISH, offsetof(pmetrics, retried)) == 0 ||
	       atomic_load(&s->spilled) < n1 / 2)
		usleep(1000);
	check_invariant();
	assert_int_equal(rule_counter(HOOK_MESSAGE_PUBLISH, offsetof(pmetrics, success)), 0);
	/* unlocked while more arrive: spilling and replaying overlap */
	assert_int_equal(sqlite3_exec(locker, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(locker);
	for (; i < n1 + n2; i++)
		fire(i);
	while (!drained()) {
		check_invariant();
		usleep(2000);
	}
	/* bursts, each drained (the file emptied) before the next */
	for (unsigned round = 0; round < 20; round++) {
		for (unsigned k = 0; k < 1000; k++, i++)
			fire(i);
		while (!drained())
			usleep(1000);
	}
	const unsigned total = i;
	check_invariant();
	uint64_t lookups = rule_counter(HOOK_SESSION_SUBSCRIBED, offsetof(pmetrics, matched));
	assert_int_equal(lookups, total / 1000);
	assert_int_equal(rule_counter(HOOK_MESSAGE_PUBLISH, offsetof(pmetrics, success)), total);
	assert_int_equal(rule_counter(HOOK_MESSAGE_PUBLISH, offsetof(pmetrics, dropped_queue_full)),
	                 0);
	persist_stop(bus, 10000);
	assert_int_equal(atomic_load(&answers), lookups); /* each lookup answered */
	check_invariant();
	expect_stored_in_order(total);
	assert_true(nsamples > 10);
}

static void test_pool_stop_during_outage_keeps_order_for_next_start(void **state)
{
	(void)state;
	unconfigure();
	configure("backend.sqlite.pool1.spill_after = 10\n"
	          "backend.sqlite.pool1.batch_size = 20\n");
	char err[300] = "";
	if (persist_start(bus, &host, err, sizeof(err)))
		fail_msg("persist_start: %s", err);
	sqlite3 *locker;
	assert_int_equal(sqlite3_open(db_path, &locker), SQLITE_OK);
	sqlite3_busy_timeout(locker, 10000);
	assert_int_equal(sqlite3_exec(locker, "BEGIN EXCLUSIVE", NULL, NULL, NULL), SQLITE_OK);
	const unsigned n = 5000;
	for (unsigned i = 0; i < n; i++)
		fire(i);
	while (rule_counter(HOOK_MESSAGE_PUBLISH, offsetof(pmetrics, retried)) == 0)
		usleep(1000);
	/* stopping while the database fails: retried, spilled and queued jobs
	 * all go to the file, oldest first */
	persist_stop(bus, 10000);
	check_invariant();
	assert_int_equal(rule_counter(HOOK_MESSAGE_PUBLISH, offsetof(pmetrics, success)), 0);
	assert_int_equal(sqlite3_exec(locker, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(locker);
	/* the next start replays the file */
	unconfigure();
	configure("backend.sqlite.pool1.spill_after = 10\n"
	          "backend.sqlite.pool1.batch_size = 20\n");
	if (persist_start(bus, &host, err, sizeof(err)))
		fail_msg("persist_start: %s", err);
	while (!drained())
		usleep(2000);
	check_invariant();
	assert_int_equal(rule_counter(HOOK_MESSAGE_PUBLISH, offsetof(pmetrics, success)), n);
	persist_stop(bus, 10000);
	expect_stored_in_order(n);
}

int main(void)
{
	payload_buf = malloc(PAYLOAD_CAP);
	if (!payload_buf)
		return 1;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_roundtrip_in_chunks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_full_file_takes_a_prefix, setup, teardown),
		cmocka_unit_test_setup_teardown(test_position_survives_reopen, setup, teardown),
		cmocka_unit_test_setup_teardown(test_partial_record_at_end_is_ignored, setup, teardown),
		cmocka_unit_test_setup_teardown(test_prepend_puts_older_jobs_first, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pool_spills_and_replays_in_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pool_stop_during_outage_keeps_order_for_next_start,
		                                setup, teardown),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	free(payload_buf);
	return rc;
}
