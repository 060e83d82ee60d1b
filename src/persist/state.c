/*
 * state.c - the state store's runner: its configuration keys, the queue of
 * operations, the writer thread with grouped commits and retry, and the
 * sync-mode tokens. What a store does with the operations is the store's own
 * (src/backends/<db>/state.c); see state.h for the design.
 */
#include "persist/state.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/clock.h"
#include "util/log.h"

struct state_tok {
	_Atomic uint32_t refs;
	_Atomic bool failed;
	state *st;
	unsigned worker;
	uint64_t serial, seq;
	uint32_t cid_len;
	char cid[];
};

struct state {
	const state_store_type *const *types;
	const state_store_type *type; /* NULL: none */
	/* configuration */
	char *file;
	int mode; /* 0 async, 1 sync */
	int64_t batch_size;
	int64_t queue_limit;
	/* runtime */
	void *db;
	const persist_host *host;
	pthread_t thread;
	bool running;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	state_op *head, *tail;
	uint64_t nqueued;
	bool waiting; /* the thread sleeps on cv */
	bool stop;
	_Atomic bool accepting;
	_Atomic uint64_t ops, commits, retries, dropped, elided;
};

/* ---------------------------------------------------------------- configuration */

static const char *const modes[] = {"async", "sync", NULL};

static int set_store(void *target, const char *const *caps, int ncaps, const cfg_value *v,
                     char *err, size_t errlen)
{
	(void)caps;
	(void)ncaps;
	state *st = target;
	if (strcmp(v->text, "none") == 0) {
		st->type = NULL;
		return 0;
	}
	for (size_t i = 0; st->types && st->types[i]; i++) {
		if (strcmp(st->types[i]->name, v->text) == 0) {
			st->type = st->types[i];
			return 0;
		}
	}
	size_t off = (size_t)snprintf(err, errlen, "\"%s\" is not a state store (choose none", v->text);
	for (size_t i = 0; st->types && st->types[i] && off < errlen; i++)
		off += (size_t)snprintf(err + off, errlen - off, ", %s", st->types[i]->name);
	if (off < errlen)
		snprintf(err + off, errlen - off, ")");
	return -1;
}

#define OFF(f) offsetof(state, f)
static const cfg_key state_keys[] = {
	{"state.store", CFG_STRING, "none", 0, 0, NULL, 0, set_store, 0,
	 "Where the broker keeps its own state so that it survives a restart or a crash: "
	 "persistent sessions, their subscriptions, their queued and in-flight QoS 1/2 messages, "
	 "and retained messages. `none` keeps them in memory only; `sqlite` writes them to "
	 "`state.file` (the shipped `etc/backends/sqlite.conf` uses the backend's database file)."},
	{"state.file", CFG_PATH, "data/keepmq.db", 0, 0, NULL, OFF(file), NULL, 0,
	 "The database file of the state store (created if missing). It may be the file of "
	 "`backend.sqlite.pool1.database`: the broker's tables are named `keepmq_*`."},
	{"state.delivery_mode", CFG_ENUM, "async", 0, 0, modes, OFF(mode), NULL, 0,
	 "`async`: the state is written in the background, a crash loses what was not yet "
	 "committed (at most a fraction of a second under load). `sync`: PUBACK and PUBREC are "
	 "sent only after every copy of the message queued for a persistent session, and the "
	 "retained message it sets, is committed, so a message acknowledged to its publisher "
	 "survives `kill -9`."},
	{"state.batch_size", CFG_INT, "1000", 1, 100000, NULL, OFF(batch_size), NULL, 0,
	 "Most operations written in one transaction."},
	{"state.queue_limit", CFG_INT, "1000000", 1000, 1000000000, NULL, OFF(queue_limit), NULL, 0,
	 "Most operations waiting to be written (while the database is slow or failing). Beyond "
	 "it messages newly queued for sessions and new retained messages are not written "
	 "(counted and logged; their sync acknowledgements fail); deletions and session and "
	 "subscription changes are always written."},
};
#undef OFF

state *state_new(cfg_registry *r, const state_store_type *const *types)
{
	state *st = calloc(1, sizeof(*st));
	if (!st)
		return NULL;
	st->types = types;
	pthread_mutex_init(&st->mu, NULL);
	pthread_cond_init(&st->cv, NULL);
	if (cfg_register(r, "Broker state store",
	                 "Keeps the broker's own state in a database so that sessions, queued messages "
	                 "and retained messages survive restarts. See docs/persistence.md.",
	                 state_keys, sizeof(state_keys) / sizeof(state_keys[0]), st)) {
		state_free(&st);
		return NULL;
	}
	return st;
}

bool state_enabled(const state *st) { return st && st->type; }
bool state_sync(const state *st) { return st && st->type && st->mode == 1; }

/* ---------------------------------------------------------------- operations */

state_op *state_op_new(uint8_t kind, const char *cid, uint32_t cid_len, const void *key,
                       uint32_t key_len)
{
	state_op *op = calloc(1, sizeof(*op) + cid_len + key_len + 2);
	if (!op)
		return NULL;
	op->kind = kind;
	char *p = op->data;
	if (cid_len)
		memcpy(p, cid, cid_len);
	op->cid = p;
	op->cid_len = cid_len;
	p += cid_len + 1;
	if (key_len)
		memcpy(p, key, key_len);
	op->key = p;
	op->key_len = key_len;
	return op;
}

static void op_done(state_op *op, bool ok)
{
	msg_unref(&op->msg);
	if (op->tok)
		state_tok_release(NULL, &op->tok, ok);
	free(op);
}

void state_op_free(state_op **opp)
{
	if (*opp)
		op_done(*opp, false);
	*opp = NULL;
}

/* ---------------------------------------------------------------- tokens */

state_tok *state_tok_new(state *st, unsigned worker, uint64_t serial, uint64_t seq, const char *cid,
                         uint32_t cid_len)
{
	state_tok *t = malloc(sizeof(*t) + cid_len);
	if (!t)
		return NULL;
	atomic_init(&t->refs, 1);
	atomic_init(&t->failed, false);
	t->st = st;
	t->worker = worker;
	t->serial = serial;
	t->seq = seq;
	t->cid_len = cid_len;
	memcpy(t->cid, cid, cid_len);
	return t;
}

state_tok *state_tok_hold(state_tok *t)
{
	atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
	return t;
}

bool state_tok_alone(const state_tok *t)
{
	return atomic_load_explicit(&t->refs, memory_order_acquire) == 1;
}

void state_tok_discard(state_tok **t)
{
	free(*t);
	*t = NULL;
}

uint64_t state_tok_seq(const state_tok *t) { return t->seq; }

void state_tok_release(state *st, state_tok **tp, bool ok)
{
	state_tok *t = *tp;
	if (!t)
		return;
	*tp = NULL;
	if (st && !t->st)
		t->st = st;
	if (!ok)
		atomic_store_explicit(&t->failed, true, memory_order_relaxed);
	if (atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
		return;
	state *owner = t->st;
	if (owner && owner->host && owner->host->ack_done)
		owner->host->ack_done(owner->host->ctx, t->worker, t->cid, t->cid_len, t->serial,
		                      t->seq, !atomic_load(&t->failed));
	free(t);
}

/* ---------------------------------------------------------------- the writer */

static void sleep_ms(uint64_t ms)
{
	struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* Takes up to batch_size operations off the queue, oldest first. */
static size_t take(state *st, state_op **vec, size_t max)
{
	size_t n = 0;
	while (st->head && n < max) {
		state_op *op = st->head;
		st->head = op->next;
		op->next = NULL;
		vec[n++] = op;
	}
	if (!st->head)
		st->tail = NULL;
	st->nqueued -= n;
	return n;
}

static void finish(state *st, state_op **vec, size_t n, bool ok)
{
	for (size_t i = 0; i < n; i++) {
		if (vec[i]->tok)
			vec[i]->tok->st = st;
		op_done(vec[i], ok);
	}
}

/*
 * A message queued for an online session is usually acknowledged within
 * milliseconds: its MSG_ADD and MSG_DEL (and a QoS 2 MSG_PID) often arrive in
 * the same batch. Writing the row and deleting it again would cost two
 * statements and a message body for nothing, so such ops are moved to the
 * end of vec, unapplied; they finish with the batch's commit like the rest.
 * Matching is by (client id, seq); a later MSG_ADD of the same key (a new
 * session under the same id restarts its numbers) replaces an earlier one.
 * Returns how many ops, from vec[0], are to be applied.
 */
typedef struct elide_ctx {
	int32_t *slot; /* index into vec, -1: empty */
	uint8_t *gone;
	state_op **tmp; /* partition scratch, batch_size entries */
	size_t nslots;
} elide_ctx;

static uint64_t op_key_hash(const state_op *op)
{
	uint64_t h = 1469598103934665603ull ^ op->seq;
	for (uint32_t i = 0; i < op->cid_len; i++)
		h = (h ^ (uint8_t)op->cid[i]) * 1099511628211ull;
	return h ^ (h >> 29);
}

static bool same_key(const state_op *a, const state_op *b)
{
	return a->seq == b->seq && a->cid_len == b->cid_len && memcmp(a->cid, b->cid, a->cid_len) == 0;
}

/* The slot of op's key: where it is, or the empty one where it would go. */
static size_t find_slot(elide_ctx *e, state_op **vec, const state_op *op)
{
	size_t i = op_key_hash(op) & (e->nslots - 1);
	while (e->slot[i] >= 0 && !same_key(vec[e->slot[i]], op))
		i = (i + 1) & (e->nslots - 1);
	return i;
}

static size_t elide(elide_ctx *e, state_op **vec, size_t n)
{
	bool any = false;
	for (size_t i = 0; i < e->nslots; i++)
		e->slot[i] = -1;
	memset(e->gone, 0, n);
	for (size_t i = 0; i < n; i++) {
		state_op *op = vec[i];
		if (op->kind == SOP_MSG_ADD) {
			e->slot[find_slot(e, vec, op)] = (int32_t)i;
		} else if (op->kind == SOP_MSG_DEL || op->kind == SOP_MSG_PID) {
			int32_t a = e->slot[find_slot(e, vec, op)];
			if (a >= 0 && !e->gone[a] && op->kind == SOP_MSG_DEL) {
				e->gone[a] = e->gone[i] = 1;
				any = true;
			}
		}
	}
	if (!any)
		return n;
	/* a MSG_PID of an elided row goes too (it lies between its ADD and DEL) */
	for (size_t i = 0; i < n; i++) {
		if (vec[i]->kind != SOP_MSG_PID)
			continue;
		int32_t a = e->slot[find_slot(e, vec, vec[i])];
		if (a >= 0 && e->gone[a] && (size_t)a < i)
			e->gone[i] = 1;
	}
	/* stable partition: kept ops first, in order, then the elided ones */
	state_op **tmp = e->tmp;
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (!e->gone[i])
			tmp[k++] = vec[i];
	size_t keep = k;
	for (size_t i = 0; i < n; i++)
		if (e->gone[i])
			tmp[k++] = vec[i];
	memcpy(vec, tmp, n * sizeof(*tmp));
	return keep;
}

static void *writer(void *arg)
{
	state *st = arg;
	size_t max = (size_t)st->batch_size;
	state_op **vec = malloc(max * sizeof(*vec));
	elide_ctx e = {0};
	for (e.nslots = 16; e.nslots < 2 * max; e.nslots *= 2)
		;
	e.slot = malloc(e.nslots * sizeof(*e.slot));
	e.gone = malloc(max);
	e.tmp = malloc(max * sizeof(*e.tmp));
	if (!vec || !e.slot || !e.gone || !e.tmp) {
		free(vec);
		free(e.slot);
		free(e.gone);
		free(e.tmp);
		log_error("state store: out of memory; the broker's state is not written");
		return NULL;
	}
	char err[400];
	log_ratelimit rl = {0};
	for (;;) {
		pthread_mutex_lock(&st->mu);
		while (!st->head && !st->stop) {
			st->waiting = true;
			pthread_cond_wait(&st->cv, &st->mu);
			st->waiting = false;
		}
		if (!st->head && st->stop) {
			pthread_mutex_unlock(&st->mu);
			break;
		}
		size_t n = take(st, vec, max);
		pthread_mutex_unlock(&st->mu);
		size_t napply = elide(&e, vec, n);
		atomic_fetch_add_explicit(&st->elided, n - napply, memory_order_relaxed);

		uint64_t backoff = 50, stop_at = 0;
		for (;;) {
			err[0] = 0;
			if (napply == 0 || st->type->apply(st->db, vec, napply, err, sizeof(err)) == 0) {
				atomic_fetch_add_explicit(&st->commits, 1, memory_order_relaxed);
				finish(st, vec, n, true);
				break;
			}
			atomic_fetch_add_explicit(&st->retries, 1, memory_order_relaxed);
			log_ratelimited(&rl, 10000, LOG_WARNING,
			                "state store: writing %zu changes failed (%s); retrying", n, err);
			pthread_mutex_lock(&st->mu);
			bool stopping = st->stop;
			pthread_mutex_unlock(&st->mu);
			if (stopping) {
				uint64_t now = clock_mono_ms();
				if (!stop_at)
					stop_at = now + STATE_STOP_MS;
				if (now >= stop_at) {
					/* give up on this batch and, below, on the rest */
					atomic_fetch_add_explicit(&st->dropped, n, memory_order_relaxed);
					log_error("state store: %zu changes not written at shutdown: %s", n, err);
					finish(st, vec, n, false);
					pthread_mutex_lock(&st->mu);
					uint64_t left = st->nqueued;
					state_op *rest = st->head;
					st->head = st->tail = NULL;
					st->nqueued = 0;
					pthread_mutex_unlock(&st->mu);
					if (left)
						log_error("state store: %llu more changes not written",
						          (unsigned long long)left);
					atomic_fetch_add_explicit(&st->dropped, left, memory_order_relaxed);
					while (rest) {
						state_op *next = rest->next;
						if (rest->tok)
							rest->tok->st = st;
						op_done(rest, false);
						rest = next;
					}
					free(vec);
					free(e.slot);
					free(e.gone);
					free(e.tmp);
					return NULL;
				}
			}
			sleep_ms(backoff);
			backoff = backoff * 2 > 2000 ? 2000 : backoff * 2;
		}
	}
	free(vec);
	free(e.slot);
	free(e.gone);
	free(e.tmp);
	return NULL;
}

/* ---------------------------------------------------------------- life cycle */

int state_open_load(state *st, const state_loader *l, char *err, size_t errlen)
{
	if (!st->type)
		return 0;
	if (st->type->api != STATE_STORE_API) {
		snprintf(err, errlen, "state store %s: API %d, this broker needs %d", st->type->name,
		         st->type->api, STATE_STORE_API);
		return -1;
	}
	if (st->type->open(st->file, &st->db, err, errlen))
		return -1;
	/* operations submitted while loading (expired sessions) queue for the thread */
	atomic_store(&st->accepting, true);
	if (st->type->load(st->db, l, err, errlen)) {
		atomic_store(&st->accepting, false);
		return -1;
	}
	return 0;
}

int state_start(state *st, const persist_host *host, char *err, size_t errlen)
{
	if (!st->type || !st->db)
		return 0;
	st->host = host;
	if (pthread_create(&st->thread, NULL, writer, st)) {
		snprintf(err, errlen, "state store: cannot start its thread");
		return -1;
	}
	st->running = true;
	return 0;
}

void state_submit(state *st, state_op *op)
{
	if (!st || !atomic_load_explicit(&st->accepting, memory_order_acquire)) {
		if (op->tok)
			op->tok->st = st;
		op_done(op, false);
		return;
	}
	pthread_mutex_lock(&st->mu);
	/* Over the limit only what adds state is refused: a message queued for
	 * a session, a retained message set. A deletion, a packet id, a session
	 * or subscription change is always taken (it is small, and dropping it
	 * would leave a row that brings an acknowledged message back after a
	 * restart). */
	if (st->nqueued >= (uint64_t)st->queue_limit &&
	    (op->kind == SOP_MSG_ADD || op->kind == SOP_RETAIN_PUT)) {
		pthread_mutex_unlock(&st->mu);
		static log_ratelimit rl;
		atomic_fetch_add_explicit(&st->dropped, 1, memory_order_relaxed);
		log_ratelimited(&rl, 10000, LOG_ERROR,
		                "state store: %lld changes waiting (state.queue_limit): new ones are "
		                "not written",
		                (long long)st->queue_limit);
		if (op->tok)
			op->tok->st = st;
		op_done(op, false);
		return;
	}
	atomic_fetch_add_explicit(&st->ops, 1, memory_order_relaxed);
	if (op->tok)
		op->tok->st = st;
	op->next = NULL;
	if (st->tail)
		st->tail->next = op;
	else
		st->head = op;
	st->tail = op;
	st->nqueued++;
	bool wake = st->waiting;
	pthread_mutex_unlock(&st->mu);
	if (wake)
		pthread_cond_signal(&st->cv);
}

void state_stop(state *st)
{
	if (!st)
		return;
	pthread_mutex_lock(&st->mu);
	st->stop = true;
	pthread_mutex_unlock(&st->mu);
	pthread_cond_signal(&st->cv);
	if (st->running) {
		pthread_join(st->thread, NULL);
		st->running = false;
	}
	atomic_store(&st->accepting, false);
	/* what the thread never took (it was not started) is dropped */
	state_op *rest = st->head;
	st->head = st->tail = NULL;
	st->nqueued = 0;
	while (rest) {
		state_op *next = rest->next;
		op_done(rest, false);
		rest = next;
	}
	if (st->db)
		st->type->close(&st->db);
}

void state_free(state **stp)
{
	state *st = *stp;
	if (!st)
		return;
	*stp = NULL;
	state_stop(st);
	pthread_mutex_destroy(&st->mu);
	pthread_cond_destroy(&st->cv);
	free(st);
}

void state_get_stats(state *st, state_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (!st)
		return;
	out->ops = atomic_load(&st->ops);
	out->commits = atomic_load(&st->commits);
	out->retries = atomic_load(&st->retries);
	out->dropped = atomic_load(&st->dropped);
	out->elided = atomic_load(&st->elided);
	pthread_mutex_lock(&st->mu);
	out->queued = st->nqueued;
	pthread_mutex_unlock(&st->mu);
}
