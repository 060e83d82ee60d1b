/*
 * test_persist_state.c - the state store's runner (src/persist/state.c) with
 * a fake store, and the stored form of messages (msg_encode/msg_decode).
 *
 * The fake store records every operation it is asked to apply and can be
 * told to fail the next N transactions, so the tests see: operations applied
 * in submission order, grouped into transactions; a failed transaction
 * retried whole and nothing reported before it commits; a sync token
 * reported to the host exactly once, after the last hold is released and
 * the last of its operations committed, and as a failure if any failed; and
 * at stop everything queued written, or (with the store failing) reported
 * as failed. No assertion depends on timing: waits poll without deadline
 * (ctest's timeout bounds them).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config/config.h"
#include "persist/state.h"

/* ---------------------------------------------------------------- fake store */

typedef struct fake {
	pthread_mutex_t mu;
	int fail_next;     /* transactions to fail */
	int fail_forever;  /* fail every transaction */
	int txns, failed_txns;
	uint64_t seqs[4096]; /* the seq of every applied op, in order */
	int nseqs;
} fake;

static fake F;

static int f_open(const char *file, void **db, char *err, size_t n)
{
	(void)file;
	(void)err;
	(void)n;
	*db = &F;
	return 0;
}

static int f_load(void *db, const state_loader *l, char *err, size_t n)
{
	(void)db;
	(void)l;
	(void)err;
	(void)n;
	return 0;
}

static int f_apply(void *db, state_op *const *ops, size_t n, char *err, size_t errlen)
{
	fake *f = db;
	pthread_mutex_lock(&f->mu);
	if (f->fail_forever || f->fail_next > 0) {
		if (f->fail_next > 0)
			f->fail_next--;
		f->failed_txns++;
		pthread_mutex_unlock(&f->mu);
		snprintf(err, errlen, "told to fail");
		return -1;
	}
	f->txns++;
	for (size_t i = 0; i < n && f->nseqs < 4096; i++)
		f->seqs[f->nseqs++] = ops[i]->seq;
	pthread_mutex_unlock(&f->mu);
	return 0;
}

static void f_close(void **db) { *db = NULL; }

static const state_store_type fake_type = {STATE_STORE_API, "fake", f_open, f_load, f_apply,
                                           f_close};
static const state_store_type *const types[] = {&fake_type, NULL};

/* ---------------------------------------------------------------- host */

typedef struct acked {
	uint64_t seq;
	bool ok;
} acked;

static pthread_mutex_t host_mu = PTHREAD_MUTEX_INITIALIZER;
static acked acks[256];
static int nacks;

static void host_ack(void *ctx, unsigned worker, const char *cid, uint32_t len, uint64_t serial,
                     uint64_t seq, bool ok)
{
	(void)ctx;
	assert_int_equal(worker, 3);
	assert_int_equal(serial, 77);
	assert_int_equal(len, 3);
	assert_memory_equal(cid, "pub", 3);
	pthread_mutex_lock(&host_mu);
	acks[nacks++] = (acked){seq, ok};
	pthread_mutex_unlock(&host_mu);
}

static const persist_host host = {.ack_done = host_ack};

static int count_acks(void)
{
	pthread_mutex_lock(&host_mu);
	int n = nacks;
	pthread_mutex_unlock(&host_mu);
	return n;
}

static void nap(void)
{
	struct timespec ts = {0, 2000000};
	nanosleep(&ts, NULL);
}

static int applied(void)
{
	pthread_mutex_lock(&F.mu);
	int n = F.nseqs;
	pthread_mutex_unlock(&F.mu);
	return n;
}

/* A store on the fake, opened but not started (what is submitted now forms
 * the first batch); *reg must be released by the caller. */
static state *open_fake(cfg_registry **reg, const char *conf)
{
	memset(&F, 0, sizeof(F));
	pthread_mutex_init(&F.mu, NULL);
	nacks = 0;
	*reg = cfg_registry_new();
	state *st = state_new(*reg, types);
	assert_non_null(st);
	cfg_errors errs = {0};
	cfg_apply_defaults(*reg, &errs);
	assert_int_equal(cfg_load_string(*reg, "test.conf", conf, strlen(conf), &errs), 0);
	assert_int_equal(errs.n, 0);
	assert_true(state_enabled(st));
	char err[200];
	state_loader l = {0};
	assert_int_equal(state_open_load(st, &l, err, sizeof(err)), 0);
	return st;
}

/* A started store on the fake. */
static state *start(cfg_registry **reg, const char *conf)
{
	state *st = open_fake(reg, conf);
	char err[200];
	assert_int_equal(state_start(st, &host, err, sizeof(err)), 0);
	return st;
}

static void finish(state **st, cfg_registry **reg)
{
	/* as main() does: the registry frees the strings it stored in *st first */
	state_stop(*st);
	cfg_release(*reg);
	cfg_registry_free(reg);
	state_free(st);
}

static state_op *op_seq(uint64_t seq, state_tok *tok)
{
	state_op *op = state_op_new(SOP_MSG_DEL, "c", 1, NULL, 0);
	assert_non_null(op);
	op->seq = seq;
	if (tok)
		op->tok = state_tok_hold(tok);
	return op;
}

/* ---------------------------------------------------------------- tests */

static void test_order_and_grouping(void **unused)
{
	(void)unused;
	cfg_registry *reg;
	state *st = start(&reg, "state.store = fake\nstate.batch_size = 7\n");
	for (uint64_t i = 1; i <= 100; i++)
		state_submit(st, op_seq(i, NULL));
	while (applied() < 100)
		nap();
	for (int i = 0; i < 100; i++)
		assert_int_equal(F.seqs[i], (uint64_t)i + 1);
	/* batches of at most 7: at least 15 transactions */
	assert_true(F.txns >= 15);
	state_stats s;
	state_get_stats(st, &s);
	assert_int_equal(s.ops, 100);
	assert_int_equal(s.dropped, 0);
	finish(&st, &reg);
}

static void test_token_reported_once_after_commit(void **unused)
{
	(void)unused;
	cfg_registry *reg;
	state *st = start(&reg, "state.store = fake\nstate.delivery_mode = sync\n");
	assert_true(state_sync(st));
	pthread_mutex_lock(&F.mu);
	F.fail_next = 3; /* the first transactions fail: no report before a commit */
	pthread_mutex_unlock(&F.mu);
	state_tok *t = state_tok_new(st, 3, 77, 42, "pub", 3);
	state_submit(st, op_seq(1, t));
	state_submit(st, op_seq(2, t));
	while (F.failed_txns < 3 || applied() < 2)
		nap();
	/* the operations released their holds once committed; the publisher
	 * still holds it: nothing reported */
	while (!state_tok_alone(t))
		nap();
	assert_int_equal(count_acks(), 0);
	state_tok_release(st, &t, true);
	assert_null(t);
	while (count_acks() < 1)
		nap();
	assert_int_equal(acks[0].seq, 42);
	assert_true(acks[0].ok);
	finish(&st, &reg);
	assert_int_equal(count_acks(), 1);
}

static void test_token_alone_is_discarded(void **unused)
{
	(void)unused;
	cfg_registry *reg;
	state *st = start(&reg, "state.store = fake\nstate.delivery_mode = sync\n");
	state_tok *t = state_tok_new(st, 3, 77, 5, "pub", 3);
	assert_true(state_tok_alone(t));
	assert_int_equal(state_tok_seq(t), 5);
	state_tok_discard(&t);
	assert_null(t);
	finish(&st, &reg);
	assert_int_equal(count_acks(), 0);
}

static void test_stop_with_failing_store_reports_failure(void **unused)
{
	(void)unused;
	cfg_registry *reg;
	state *st = start(&reg, "state.store = fake\nstate.delivery_mode = sync\n");
	pthread_mutex_lock(&F.mu);
	F.fail_forever = 1;
	pthread_mutex_unlock(&F.mu);
	state_tok *t = state_tok_new(st, 3, 77, 9, "pub", 3);
	for (uint64_t i = 1; i <= 5; i++)
		state_submit(st, op_seq(i, t));
	state_tok_release(st, &t, true);
	while (F.failed_txns < 1)
		nap();
	/* state_stop gives up after STATE_STOP_MS of failures */
	state_stop(st);
	assert_int_equal(count_acks(), 1);
	assert_int_equal(acks[0].seq, 9);
	assert_false(acks[0].ok);
	state_stats s;
	state_get_stats(st, &s);
	assert_int_equal(s.dropped, 5);
	assert_int_equal(applied(), 0);
	/* after stop, submissions are refused (and freed) */
	state_submit(st, op_seq(6, NULL));
	finish(&st, &reg);
}

static void test_stop_writes_everything_queued(void **unused)
{
	(void)unused;
	cfg_registry *reg;
	state *st = start(&reg, "state.store = fake\n");
	for (uint64_t i = 1; i <= 1000; i++)
		state_submit(st, op_seq(i, NULL));
	state_stop(st);
	assert_int_equal(applied(), 1000);
	finish(&st, &reg);
}

static state_op *op_kind(uint8_t kind, const char *cid, uint64_t seq)
{
	state_op *op = state_op_new(kind, cid, (uint32_t)strlen(cid), NULL, 0);
	assert_non_null(op);
	op->seq = seq;
	return op;
}

/* A row queued and acknowledged within one batch is never written; one
 * queued in it and acknowledged later is; another client's equal seq is
 * a different row. */
static void test_add_then_del_in_one_batch_is_elided(void **unused)
{
	(void)unused;
	cfg_registry *reg;
	state *st = open_fake(&reg, "state.store = fake\nstate.delivery_mode = sync\n");
	char err[200];
	/* queued before the thread starts: one batch */
	state_tok *t = state_tok_new(st, 3, 77, 11, "pub", 3);
	state_op *a1 = op_kind(SOP_MSG_ADD, "c", 1);
	a1->tok = state_tok_hold(t);
	state_submit(st, a1);
	state_submit(st, op_kind(SOP_MSG_ADD, "c", 2));
	state_submit(st, op_kind(SOP_MSG_ADD, "d", 1));
	state_submit(st, op_kind(SOP_MSG_PID, "c", 1));
	state_submit(st, op_kind(SOP_MSG_DEL, "c", 1));
	state_submit(st, op_kind(SOP_MSG_PID, "c", 2));
	state_tok_release(st, &t, true);
	assert_int_equal(state_start(st, &host, err, sizeof(err)), 0);
	while (count_acks() < 1)
		nap();
	/* the token of an elided op is reported, as committed */
	assert_true(acks[0].ok);
	state_stop(st);
	assert_int_equal(F.nseqs, 3);
	assert_int_equal(F.seqs[0], 2); /* ADD c/2 */
	assert_int_equal(F.seqs[1], 1); /* ADD d/1 */
	assert_int_equal(F.seqs[2], 2); /* PID c/2 */
	state_stats s;
	state_get_stats(st, &s);
	assert_int_equal(s.elided, 3);
	cfg_release(reg);
	cfg_registry_free(&reg);
	state_free(&st);
}

/* Over state.queue_limit a new queued message is refused (its token then
 * fails: see test_stop_with_failing_store_reports_failure), but a deletion is still taken: dropping it would bring an acknowledged
 * message back after a restart. */
static void test_queue_limit_keeps_deletions(void **unused)
{
	(void)unused;
	cfg_registry *reg;
	state *st = open_fake(&reg, "state.store = fake\nstate.queue_limit = 1000\n");
	char err[200];
	for (uint64_t i = 1; i <= 1000; i++)
		state_submit(st, op_kind(SOP_MSG_ADD, "c", i));
	state_submit(st, op_kind(SOP_MSG_ADD, "c", 1001));
	state_submit(st, op_kind(SOP_MSG_DEL, "c", 5000));
	state_submit(st, op_kind(SOP_SESSION_DEL, "c", 5001));
	state_stats s;
	state_get_stats(st, &s);
	assert_int_equal(s.dropped, 1);
	assert_int_equal(s.ops, 1002);
	assert_int_equal(s.queued, 1002);
	assert_int_equal(state_start(st, &host, err, sizeof(err)), 0);
	state_stop(st);
	assert_int_equal(F.nseqs, 1002);
	assert_int_equal(F.seqs[1000], 5000);
	assert_int_equal(F.seqs[1001], 5001);
	cfg_release(reg);
	cfg_registry_free(&reg);
	state_free(&st);
}

static void test_unknown_store_names_the_key(void **unused)
{
	(void)unused;
	cfg_registry *reg = cfg_registry_new();
	state *st = state_new(reg, types);
	cfg_errors errs = {0};
	cfg_apply_defaults(reg, &errs);
	const char *text = "\nstate.store = oracle\n";
	cfg_load_string(reg, "x.conf", text, strlen(text), &errs);
	assert_int_equal(errs.n, 1);
	assert_non_null(strstr(errs.e[0].msg, "x.conf:2"));
	assert_non_null(strstr(errs.e[0].msg, "state.store"));
	assert_non_null(strstr(errs.e[0].msg, "none, fake"));
	assert_false(state_enabled(st));
	cfg_release(reg);
	cfg_registry_free(&reg);
	state_free(&st);
}

/* ---------------------------------------------------------------- stored messages */

static kmq_msg *sample(void)
{
	mqtt_props pr = {0};
	pr.present = MQTT_PF_CONTENT_TYPE | MQTT_PF_MESSAGE_EXPIRY | MQTT_PF_PAYLOAD_FORMAT;
	pr.content_type = (mqtt_str){(const uint8_t *)"text/plain", 10};
	pr.message_expiry = 60;
	pr.payload_format = 1;
	msg_init in = {.topic = {(const uint8_t *)"a/b", 3},
	               .payload = {(const uint8_t *)"x\0y'\"", 5},
	               .qos = 2,
	               .retain = true,
	               .origin = {(const uint8_t *)"pub", 3},
	               .props = &pr,
	               .now_ms = 1700000000000ull};
	kmq_msg *m = msg_new(&in);
	assert_non_null(m);
	for (int i = 0; i < 16; i++)
		m->id[i] = (uint8_t)(i * 7);
	return m;
}

static void test_msg_roundtrip(void **unused)
{
	(void)unused;
	kmq_msg *m = sample();
	size_t n = msg_encoded_size(m);
	uint8_t *buf = malloc(n);
	msg_encode(m, buf);
	kmq_msg *d = msg_decode(buf, n);
	assert_non_null(d);
	assert_int_equal(d->qos, 2);
	assert_int_equal(d->flags, m->flags);
	assert_int_equal(d->payload_format, 1);
	assert_int_equal(d->ts_ms, m->ts_ms);
	assert_int_equal(d->expiry_at_ms, m->ts_ms + 60000);
	assert_memory_equal(d->id, m->id, 16);
	assert_int_equal(d->topic.len, 3);
	assert_string_equal((const char *)d->topic.p, "a/b");
	assert_int_equal(d->payload.len, 5);
	assert_memory_equal(d->payload.p, "x\0y'\"", 5);
	assert_int_equal(d->content_type.len, 10);
	assert_memory_equal(d->content_type.p, "text/plain", 10);
	assert_int_equal(d->origin.len, 3);
	/* the decoded message encodes to the same bytes */
	uint8_t *again = malloc(n);
	assert_int_equal(msg_encoded_size(d), n);
	msg_encode(d, again);
	assert_memory_equal(buf, again, n);
	free(again);
	msg_unref(&d);
	msg_unref(&m);
	free(buf);
}

static void test_msg_decode_refuses_damage(void **unused)
{
	(void)unused;
	kmq_msg *m = sample();
	size_t n = msg_encoded_size(m);
	uint8_t *buf = malloc(n + 1);
	msg_encode(m, buf);
	/* every truncation, one extra byte, a wrong magic or version, QoS 3 */
	for (size_t k = 0; k < n; k++)
		assert_null(msg_decode(buf, k));
	buf[n] = 0;
	assert_null(msg_decode(buf, n + 1));
	buf[0] ^= 1;
	assert_null(msg_decode(buf, n));
	buf[0] ^= 1;
	buf[1] = 9;
	assert_null(msg_decode(buf, n));
	buf[1] = 1;
	buf[2] = 3;
	assert_null(msg_decode(buf, n));
	buf[2] = 2;
	kmq_msg *ok = msg_decode(buf, n);
	assert_non_null(ok);
	msg_unref(&ok);
	msg_unref(&m);
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_order_and_grouping),
	    cmocka_unit_test(test_token_reported_once_after_commit),
	    cmocka_unit_test(test_token_alone_is_discarded),
	    cmocka_unit_test(test_stop_with_failing_store_reports_failure),
	    cmocka_unit_test(test_stop_writes_everything_queued),
	    cmocka_unit_test(test_add_then_del_in_one_batch_is_elided),
	    cmocka_unit_test(test_queue_limit_keeps_deletions),
	    cmocka_unit_test(test_unknown_store_names_the_key),
	    cmocka_unit_test(test_msg_roundtrip),
	    cmocka_unit_test(test_msg_decode_refuses_damage),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
