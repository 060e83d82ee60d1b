/*
 * pool.c - the connections of a pool: one thread, one queue, one database
 * connection each.
 *
 * A job is queued on the connection its client id hashes to, so one client's
 * jobs run in order. The thread takes everything queued (up to batch_size,
 * optionally waiting batch_time for more) and runs it as one batch. Jobs the
 * backend marks PJOB_RETRY stay first in line: the thread waits (100 ms,
 * doubling up to retry_max_backoff), reopens the connection if it broke, and
 * runs them again before anything newer, so the order survives an outage.
 * The queue is bounded in jobs and bytes; when full, the oldest queued job is
 * dropped and counted (a sync-mode publisher waiting on it gets its answer).
 *
 * The queue lock is held only to link and unlink jobs; the database is never
 * touched under it, so an I/O worker queueing a job never waits on a query.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "persist/internal.h"
#include "util/clock.h"
#include "util/log.h"

#define CNT_ADD(f, n) atomic_fetch_add(&(f), (n))

void pjob_free(pjob **jp)
{
	pjob *j = *jp;
	if (!j)
		return;
	*jp = NULL;
	if (j->wfin)
		atomic_fetch_add(j->wfin, 1);
	free(j->need);
	msg_unref(&j->msg);
	persist_result_free(&j->result);
	free(j);
}

static void deadline_in(struct timespec *ts, uint64_t ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += (time_t)(ms / 1000);
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/* Drops the oldest queued job of a full slot. Called with mu held. */
static pjob *pop_oldest(pslot *s)
{
	pjob *j = s->head;
	if (!j)
		return NULL;
	s->head = j->next;
	if (!s->head)
		s->tail = NULL;
	j->next = NULL;
	s->n--;
	s->bytes -= j->size;
	return j;
}

static bool is_lookup(const pjob *j)
{
	return j->rule->func && j->rule->func->kind == PFUNC_LOOKUP;
}

/* A fetch (a lookup answering with stored messages) and the fetch barrier.
 *
 * Jobs are queued per client id, so the messages a publisher had
 * acknowledged (async mode: before they were written) are written by one
 * connection of the pool while a new subscriber's fetch runs on another. A
 * fetch that ran first would miss them, and the subscriber would never get
 * them: they reached no live subscription, and its read position moves past
 * them with its next acknowledgement. So a fetch notes, when it is queued,
 * how many write jobs each connection of its pool had been given, and runs
 * only once every other connection has finished that many (its own are
 * ahead of it in its queue) - or after FETCH_BARRIER_MS, when the database
 * is away (a job moved to the spill file counts as finished: during an
 * outage the barrier does not hold). Writes never wait, so nothing can wait
 * in a circle. */
#define FETCH_BARRIER_MS 5000

static bool is_fetch(const pjob *j)
{
	return j->rule->func && j->rule->func->kind == PFUNC_LOOKUP &&
	       j->rule->func->result == PRESULT_MSGS;
}

static void fetch_barrier(pslot *s, pjob **batch, size_t n)
{
	ppool *pl = s->pool;
	uint64_t end = 0;
	for (size_t i = 0; i < n; i++) {
		pjob *j = batch[i];
		for (uint32_t k = 0; j->need && k < j->need_n; k++) {
			if (k == s->idx)
				continue;
			while (atomic_load(&pl->slots[k].w_fin) < j->need[k]) {
				uint64_t now = clock_mono_ms();
				if (!end)
					end = now + FETCH_BARRIER_MS;
				if (now >= end)
					return; /* the database is away: do not wait longer */
				struct timespec ts = {0, 1000000L};
				nanosleep(&ts, NULL);
			}
		}
		free(j->need); /* satisfied: a retry does not wait again */
		j->need = NULL;
	}
}

int pool_enqueue(ppool *pl, pjob *j, uint64_t hash)
{
	pslot *s = &pl->slots[hash % (uint64_t)pl->pool_size];
	pjob *dropped = NULL, **dtail = &dropped;
	j->enq_ms = clock_mono_ms();
	if (pl->pool_size > 1 && is_fetch(j)) {
		j->need = malloc((size_t)pl->pool_size * sizeof(*j->need));
		if (j->need) { /* without it the fetch just does not wait */
			j->need_n = (uint32_t)pl->pool_size;
			for (int64_t k = 0; k < pl->pool_size; k++)
				j->need[k] = atomic_load(&pl->slots[k].w_enq);
		}
	}
	pthread_mutex_lock(&s->mu);
	if (s->stop) {
		pthread_mutex_unlock(&s->mu);
		CNT_ADD(((prule *)j->rule)->m.dropped_shutdown, 1);
		persist_job_done(pl->be->bus->host, j, false);
		pjob_free(&j);
		return -1;
	}
	while (s->head && ((int64_t)s->n >= pl->max_queue || s->bytes + j->size > pl->max_queue_bytes)) {
		pjob *old = pop_oldest(s);
		*dtail = old;
		dtail = &old->next;
	}
	j->next = NULL;
	if (s->tail)
		s->tail->next = j;
	else
		s->head = j;
	s->tail = j;
	s->n++;
	s->bytes += j->size;
	if (!is_lookup(j)) {
		j->wfin = &s->w_fin;
		atomic_fetch_add(&s->w_enq, 1);
	}
	bool wake = s->n == 1 || (int64_t)s->n >= pl->batch_size;
	pthread_mutex_unlock(&s->mu);
	if (wake)
		pthread_cond_signal(&s->cv);
	while (dropped) {
		pjob *next = dropped->next;
		CNT_ADD(((prule *)dropped->rule)->m.dropped_queue_full, 1);
		persist_job_done(pl->be->bus->host, dropped, false);
		pjob_free(&dropped);
		dropped = next;
	}
	return 0;
}

/* Waits ms (or until stop). Returns true if stopping. Called with mu held. */
static bool wait_ms(pslot *s, uint64_t ms)
{
	struct timespec ts;
	deadline_in(&ts, ms);
	while (!s->stop) {
		if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) == ETIMEDOUT)
			break;
	}
	return s->stop;
}

static void finish(pslot *s, pjob *j, bool ok)
{
	prule *r = (prule *)j->rule;
	if (ok)
		CNT_ADD(r->m.success, 1);
	else
		CNT_ADD(r->m.failed, 1);
	atomic_fetch_sub(&s->inflight, 1);
	persist_job_done(s->pool->be->bus->host, j, ok);
	pjob_free(&j);
}

static void close_conn(pslot *s)
{
	if (s->conn)
		s->pool->be->type->close(&s->conn);
	atomic_store(&s->state, POOL_DISCONNECTED);
}

static int open_conn(pslot *s, const persist_host *host)
{
	ppool *pl = s->pool;
	char err[300] = "";
	if (pl->be->type->open(pl->cfg, host, &s->conn, err, sizeof(err))) {
		s->conn = NULL;
		if (atomic_load(&s->state) != POOL_DISCONNECTED)
			log_warning("backend %s %s: cannot connect: %s", pl->be->type->name, pl->name,
			            err);
		atomic_store(&s->state, POOL_DISCONNECTED);
		return -1;
	}
	if (atomic_load(&s->state) == POOL_DISCONNECTED)
		log_notice("backend %s %s: connected again", pl->be->type->name, pl->name);
	atomic_store(&s->state, POOL_CONNECTED);
	return 0;
}

/* Spilling (see spill.c for the file). A pass moves the oldest memory jobs
 * beyond spill_after to the file in chunks: a chunk (at most SPILL_CHUNK_JOBS
 * jobs or SPILL_CHUNK_BYTES) is unlinked from the head of the queue under one
 * lock acquisition and written with one write, so the I/O workers meet the
 * lock once per chunk, not once per job. A pass is bounded: it moves at most
 * the excess it found when it started (jobs queued meanwhile wait for the next
 * pass) and at most `limit` jobs; between two passes the thread runs a batch,
 * so the database advances however fast jobs arrive. (Moving the excess
 * one job per lock cycle, re-checked after each, let producers that queue
 * faster than that keep the thread spilling forever, with nothing written.)
 *
 * Order: the chunk is the oldest jobs in memory; only this thread takes jobs
 * off the queue for a batch, and it does not while the chunk is out, so no
 * memory job can overtake it. Jobs the file did not take (full, failing) go
 * back to the head of the queue in their order. Metrics: a job being spilled
 * is neither taken nor dropped, so it stays "queuing" throughout; a lookup is
 * not spilled (an answer that late is of no use): it is answered empty and
 * counted dropped (queue_full), as when pushed out of a full queue. */
#define SPILL_CHUNK_JOBS 1024
#define SPILL_CHUNK_BYTES (2u * 1024 * 1024)
/* most jobs moved by one pass before a batch; memory holds spill_after plus
 * what arrives during one batch and one pass, and a pass of this many jobs
 * costs a few milliseconds */
#define SPILL_PASS_JOBS 65536

/* Called with mu held; drops it around the file I/O. Returns the jobs moved. */
static uint64_t spill_excess(pslot *s, uint64_t limit)
{
	ppool *pl = s->pool;
	const persist_host *host = pl->be->bus->host;
	if (s->spill_fd < 0 || (int64_t)s->n <= pl->spill_after)
		return 0;
	uint64_t excess = s->n - (uint64_t)pl->spill_after, moved = 0;
	if (excess > limit)
		excess = limit;
	while (excess && s->spill_fd >= 0) {
		/* a chunk off the head, under this one acquisition */
		pjob *chunk = NULL, **ctail = &chunk;
		size_t k = 0;
		uint64_t bytes = 0;
		while (k < excess && k < SPILL_CHUNK_JOBS && bytes < SPILL_CHUNK_BYTES &&
		       (int64_t)s->n > pl->spill_after) {
			pjob *j = pop_oldest(s);
			*ctail = j;
			ctail = &j->next;
			k++;
			bytes += j->size;
		}
		if (!k)
			break;
		excess -= k;
		pthread_mutex_unlock(&s->mu);
		/* lookups leave the chunk: answered empty, counted */
		pjob *lookups = NULL, **ltail = &lookups;
		size_t nwrite = 0;
		for (pjob **pp = &chunk; *pp;) {
			pjob *j = *pp;
			if (is_lookup(j)) {
				*pp = j->next;
				j->next = NULL;
				*ltail = j;
				ltail = &j->next;
			} else {
				nwrite++;
				pp = &j->next;
			}
		}
		size_t w = nwrite ? spill_write_list(s, chunk, nwrite) : 0;
		while (lookups) {
			pjob *next = lookups->next;
			CNT_ADD(((prule *)lookups->rule)->m.dropped_queue_full, 1);
			persist_job_done(host, lookups, false);
			pjob_free(&lookups);
			lookups = next;
			moved++;
		}
		for (size_t i = 0; i < w; i++) { /* in the file now */
			pjob *next = chunk->next;
			pjob_free(&chunk);
			chunk = next;
			moved++;
		}
		pthread_mutex_lock(&s->mu);
		if (chunk) {
			/* the file is full or failing: the rest goes back in front,
			 * in order, and stays in memory */
			size_t nback = 0;
			uint64_t bback = 0;
			pjob *last = chunk;
			for (pjob *j = chunk; j; j = j->next) {
				nback++;
				bback += j->size;
				last = j;
			}
			last->next = s->head;
			s->head = chunk;
			if (!s->tail)
				s->tail = last;
			s->n += nback;
			s->bytes += bback;
			break;
		}
	}
	return moved;
}

/* The backoff wait, in slices, spilling what piles up meanwhile. */
static void backoff_wait(pslot *s, uint64_t ms)
{
	uint64_t end = clock_mono_ms() + ms;
	while (!s->stop) {
		/* nothing is being written: everything beyond spill_after goes */
		while (spill_excess(s, SPILL_PASS_JOBS) == SPILL_PASS_JOBS && !s->stop)
			;
		uint64_t now = clock_mono_ms();
		if (now >= end)
			break;
		wait_ms(s, end - now < 50 ? end - now : 50);
	}
}

static void *slot_main(void *arg)
{
	pslot *s = arg;
	ppool *pl = s->pool;
	const backend_type *t = pl->be->type;
	const persist_host *host = pl->be->bus->host;
	size_t cap = (size_t)pl->batch_size;
	pjob **batch = malloc(cap * sizeof(*batch));
	pjob *carry = NULL; /* jobs to retry, in order, before anything newer */
	size_t ncarry = 0;
	uint64_t backoff = 0;
	uint64_t last_use = clock_mono_ms();
	if (!batch)
		return NULL;
	pthread_mutex_lock(&s->mu);
	for (;;) {
		/* wait for work */
		while (!carry && !s->head && !atomic_load(&s->spilled) && !s->stop) {
			struct timespec ts;
			deadline_in(&ts, pl->health_ms);
			if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) == ETIMEDOUT) {
				pthread_mutex_unlock(&s->mu);
				if (s->conn && clock_mono_ms() - last_use >= pl->health_ms &&
				    t->ping(s->conn)) {
					log_warning("backend %s %s: health check failed; reconnecting",
					            t->name, pl->name);
					close_conn(s);
				}
				if (!s->conn)
					open_conn(s, host);
				last_use = clock_mono_ms();
				pthread_mutex_lock(&s->mu);
			}
		}
		if (s->stop && clock_mono_ms() >= s->stop_deadline_ms)
			break;
		if (!carry && !s->head && !atomic_load(&s->spilled))
			break; /* stopping and drained */
		spill_excess(s, SPILL_PASS_JOBS); /* bounded: a batch follows */
		/* let a batch fill for batch_time */
		if (!carry && !atomic_load(&s->spilled) && pl->batch_time_ms &&
		    (int64_t)s->n < pl->batch_size && !s->stop) {
			uint64_t age = clock_mono_ms() - s->head->enq_ms;
			if (age < pl->batch_time_ms)
				wait_ms(s, pl->batch_time_ms - age);
		}
		/* the batch: retried jobs first, then new ones */
		size_t n = 0;
		while (carry && n < cap) {
			batch[n++] = carry;
			carry = carry->next;
			ncarry--;
		}
		size_t taken = 0;
		if (atomic_load(&s->spilled)) {
			/* the file holds older jobs than memory: it goes first */
			pthread_mutex_unlock(&s->mu);
			uint64_t skipped = 0;
			while (n < cap && atomic_load(&s->spilled)) {
				pjob *j = spill_read(s, &skipped);
				if (!j)
					break;
				if (s->spill_prev) { /* an earlier run's: not matched in this one */
					s->spill_prev--;
					CNT_ADD(((prule *)j->rule)->m.matched, 1);
					j->ack_seq = 0; /* its publisher's session is gone */
				}
				batch[n++] = j;
				taken++;
			}
			if (skipped)
				log_warning("backend %s %s: %llu spilled jobs belong to rules no longer "
				            "configured; dropped", t->name, pl->name,
				            (unsigned long long)skipped);
			pthread_mutex_lock(&s->mu);
		}
		while (!atomic_load(&s->spilled) && s->head && n < cap) {
			pjob *j = pop_oldest(s);
			batch[n++] = j;
			taken++;
		}
		pthread_mutex_unlock(&s->mu);
		for (size_t i = n - taken; i < n; i++) { /* the new ones */
			CNT_ADD(((prule *)batch[i]->rule)->m.taken, 1);
			atomic_fetch_add(&s->inflight, 1);
		}
		for (size_t i = 0; i < n; i++) {
			batch[i]->status = PJOB_PENDING;
			batch[i]->next = NULL;
			if (batch[i]->rule->func && batch[i]->rule->func->kind == PFUNC_LOOKUP &&
			    !batch[i]->result) {
				batch[i]->result = presult_for_job(batch[i]);
				if (!batch[i]->result)
					batch[i]->status = PJOB_FAILED;
			} else {
				presult_clear(batch[i]->result); /* a retried lookup starts over */
			}
		}
		int rc = -1;
		fetch_barrier(s, batch, n);
		if (s->conn || open_conn(s, host) == 0) {
			rc = t->run_batch(s->conn, batch, n);
			CNT_ADD(pl->batches, 1);
			CNT_ADD(pl->batch_jobs, n);
			last_use = clock_mono_ms();
		}
		/* settle: finished jobs leave, the rest are carried in order, ahead
		 * of carried jobs that did not fit in this batch */
		pjob *rest = carry, *ctail = NULL;
		carry = NULL;
		size_t nretry = 0;
		for (size_t i = 0; i < n; i++) {
			pjob *j = batch[i];
			if (j->status == PJOB_OK) { /* committed, even if a later step failed */
				finish(s, j, true);
			} else if (j->status == PJOB_FAILED) {
				finish(s, j, false);
			} else {
				CNT_ADD(((prule *)j->rule)->m.retried, 1);
				j->next = NULL;
				if (ctail)
					ctail->next = j;
				else
					carry = j;
				ctail = j;
				nretry++;
			}
		}
		if (ctail)
			ctail->next = rest;
		else
			carry = rest;
		ncarry += nretry;
		if (!carry)
			spill_commit(s); /* everything read from the file is written */
		if (nretry) {
			/* counted in every rule's `retried`; logged at most every 10 s
			 * per pool so that an outage is visible without flooding */
			const char *why = s->conn && t->last_error ? t->last_error(s->conn) : NULL;
			log_ratelimited(&s->retry_log, 10000, LOG_WARNING,
			                "backend %s %s: %zu jobs not written (%s); retrying in order",
			                t->name, pl->name, nretry,
			                why && why[0] ? why : "database unavailable");
		}
		if (rc != 0 && s->conn) {
			log_warning("backend %s %s: connection failed; reconnecting", t->name, pl->name);
			close_conn(s);
		}
		pthread_mutex_lock(&s->mu);
		if (nretry) {
			backoff = backoff ? backoff * 2 : 100;
			if (backoff > pl->retry_max_ms)
				backoff = pl->retry_max_ms;
			/* stopping while the database fails: the spill file keeps the
			 * jobs for the next start, no need to wait for the deadline */
			if (s->stop && (s->spill_fd >= 0 || clock_mono_ms() + backoff > s->stop_deadline_ms))
				break;
			backoff_wait(s, backoff);
		} else {
			backoff = 0;
		}
	}
	/* stopping: what is left goes to the spill file, in order (the jobs
	 * being retried are the oldest: in front of the file), to be replayed
	 * at the next start; only what cannot be written is dropped */
	pjob *left = s->head;
	s->head = s->tail = NULL;
	s->n = 0;
	s->bytes = 0;
	pthread_mutex_unlock(&s->mu);
	if (s->spill_fd >= 0 && (carry || left)) {
		int kept = 0;
		if (carry && spill_prepend(s, carry) > 0) {
			for (pjob *j = carry; j; j = j->next)
				kept++;
			while (carry) {
				pjob *next = carry->next;
				atomic_fetch_sub(&s->inflight, 1);
				pjob_free(&carry);
				carry = next;
			}
		}
		/* in writes of many jobs; a lookup is not kept (its session is
		 * going away): answered empty and counted, the writes after it
		 * are still kept */
		while (left && !carry) {
			if (is_lookup(left)) {
				pjob *next = left->next;
				CNT_ADD(((prule *)left->rule)->m.dropped_shutdown, 1);
				persist_job_done(host, left, false);
				pjob_free(&left);
				left = next;
				continue;
			}
			size_t run = 0;
			for (pjob *j = left; j && !is_lookup(j) && run < SPILL_CHUNK_JOBS; j = j->next)
				run++;
			size_t w = spill_write_list(s, left, run);
			for (size_t i = 0; i < w; i++) {
				pjob *next = left->next;
				pjob_free(&left);
				left = next;
			}
			kept += (int)w;
			if (w < run)
				break;
		}
		if (kept)
			log_notice("backend %s %s: %d jobs not yet written are kept in %s for the next "
			           "start", t->name, pl->name, kept, s->spill_path);
	}
	while (carry) {
		pjob *next = carry->next;
		CNT_ADD(((prule *)carry->rule)->m.dropped_other, 1);
		atomic_fetch_sub(&s->inflight, 1);
		persist_job_done(host, carry, false);
		pjob_free(&carry);
		carry = next;
	}
	while (left) {
		pjob *next = left->next;
		CNT_ADD(((prule *)left->rule)->m.dropped_shutdown, 1);
		persist_job_done(host, left, false);
		pjob_free(&left);
		left = next;
	}
	close_conn(s);
	spill_close(s);
	free(batch);
	return NULL;
}

int pool_start(ppool *pl, const persist_host *host, char *err, size_t errlen)
{
	pl->slots = calloc((size_t)pl->pool_size, sizeof(pslot));
	if (!pl->slots) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (int64_t i = 0; i < pl->pool_size; i++) {
		pslot *s = &pl->slots[i];
		s->pool = pl;
		s->idx = (unsigned)i;
		pthread_mutex_init(&s->mu, NULL);
		pthread_condattr_t ca;
		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&s->cv, &ca);
		pthread_condattr_destroy(&ca);
		atomic_store(&s->state, POOL_CONNECTING);
		if (spill_open(s, err, errlen))
			return -1;
		/* connect now so configuration mistakes show at start-up; an
		 * unreachable database is retried by the thread */
		open_conn(s, host);
		if (pthread_create(&s->thread, NULL, slot_main, s)) {
			snprintf(err, errlen, "cannot start a thread");
			return -1;
		}
		s->started = true;
	}
	const backend_type *t = pl->be->type;
	if (t->service_start && t->service_start(pl->cfg, pl->name, host, &pl->svc, err, errlen))
		return -1;
	return 0;
}

void pool_stop(ppool *pl, uint64_t timeout_ms)
{
	if (pl->svc && pl->be->type->service_stop)
		pl->be->type->service_stop(&pl->svc); /* no new commands while the queues drain */
	if (!pl->slots)
		return;
	uint64_t deadline = clock_mono_ms() + timeout_ms;
	for (int64_t i = 0; i < pl->pool_size; i++) {
		pslot *s = &pl->slots[i];
		if (!s->started)
			continue;
		pthread_mutex_lock(&s->mu);
		s->stop = true;
		s->stop_deadline_ms = deadline;
		pthread_mutex_unlock(&s->mu);
		pthread_cond_signal(&s->cv);
	}
	for (int64_t i = 0; i < pl->pool_size; i++) {
		pslot *s = &pl->slots[i];
		if (!s->started)
			continue;
		pthread_join(s->thread, NULL);
		s->started = false;
		pthread_mutex_destroy(&s->mu);
		pthread_cond_destroy(&s->cv);
	}
}

uint64_t pool_pending(ppool *pl)
{
	uint64_t n = 0;
	if (!pl->slots)
		return 0;
	for (int64_t i = 0; i < pl->pool_size; i++) {
		pslot *s = &pl->slots[i];
		pthread_mutex_lock(&s->mu);
		n += s->n;
		pthread_mutex_unlock(&s->mu);
		n += atomic_load(&s->inflight);
	}
	return n;
}
