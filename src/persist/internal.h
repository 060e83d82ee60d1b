/*
 * internal.h - the framework's own structures (config.c, bus.c, pool.c).
 * Backends see only persist.h.
 */
#ifndef KEEPMQ_PERSIST_INTERNAL_H
#define KEEPMQ_PERSIST_INTERNAL_H

#include <pthread.h>

#include "persist/persist.h"
#include "util/buf.h"
#include "util/log.h"

enum delivery_mode { DELIVERY_ASYNC = 0, DELIVERY_SYNC = 1 };

/* One connection of a pool: a thread with its own queue. */
typedef struct pslot {
	struct ppool *pool;
	unsigned idx;
	pthread_t thread;
	bool started;
	log_ratelimit retry_log; /* "jobs not written; retrying" */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pjob *head, *tail; /* queued, oldest first */
	uint64_t n;        /* queued jobs */
	uint64_t bytes;    /* queued bytes */
	_Atomic uint64_t inflight; /* jobs taken and not finished */
	bool stop;         /* set under mu */
	uint64_t stop_deadline_ms;
	_Atomic int state; /* enum pool_state */
	pconn *conn;
	/* write jobs queued here, ever, and of those freed (written, failed,
	 * dropped or moved to the spill file): the fetch barrier's counters */
	_Atomic uint64_t w_enq, w_fin;
	/* the spill file (pool thread only): jobs older than those in memory */
	int spill_fd;          /* -1: none open */
	int spill_pos_fd;      /* <file>.pos: offset of the first job not yet written */
	char *spill_path;
	uint64_t spill_rd, spill_wr; /* read and write offsets */
	_Atomic uint64_t spilled;    /* jobs in the file */
	uint64_t spill_prev;         /* of which left by an earlier run (counted when read) */
	buf spill_wbuf;              /* records encoded for one write */
	uint8_t *spill_rbuf;         /* read-ahead: the file's bytes [spill_rbuf_at, +spill_rbuf_len) */
	size_t spill_rbuf_len, spill_rbuf_cap;
	uint64_t spill_rbuf_at;
} pslot;

enum pool_state { POOL_CONNECTING = 0, POOL_CONNECTED = 1, POOL_DISCONNECTED = 2 };

typedef struct ppool {
	struct ppool *next;
	struct pbackend *be;
	char name[64];
	char *file; /* where its first key is (malloc'd) */
	int line;
	void *cfg;       /* the backend's pool struct (pool_cfg_size bytes) */
	int64_t pool_size;
	int64_t batch_size;
	uint64_t batch_time_ms;
	int64_t max_queue;          /* per connection, jobs */
	uint64_t max_queue_bytes;   /* per connection */
	uint64_t retry_max_ms;      /* longest backoff */
	uint64_t health_ms;         /* health check interval */
	char *spill_dir;            /* NULL or empty: no spilling */
	int64_t spill_after;        /* jobs in memory before the oldest go to disk */
	uint64_t max_spill_bytes;
	bool used;                  /* referenced by a rule */
	pslot *slots;
	_Atomic uint64_t reconnects, batches, batch_jobs;
	void *svc; /* the backend's service for this pool (service_start), or NULL */
} ppool;

/* Rows registered per pool key need to know which key they set. */
typedef struct pkey_target {
	struct pbackend *be;
	const cfg_key *inner; /* the backend's row: type, offset into pool cfg */
	int common;           /* >= 0: a framework key (index), -1: the backend's */
} pkey_target;

typedef struct pbackend {
	struct pbackend *next;
	struct persist *bus;
	const backend_type *type;
	ppool *pools;
	prule *rules; /* every rule of this backend (owned), any order */
	size_t nrules, caprules;
	prule **rule_vec;
	/* global options */
	int64_t max_returned_count;
	uint64_t time_range_ms;
	int delivery_mode;
	int64_t msg_expired_after_s; /* BACKEND_F_MSG_EXPIRY: backend.<db>.msg.expired_after */
	/* config rows built for this backend (names are malloc'd) */
	cfg_key *rows;
	size_t nrows;
	pkey_target *targets;
	char *name_buf;
} pbackend;

struct persist {
	pbackend *backends;
	prule *at[HOOK__COUNT]; /* rules per hook point, backend order then <n> */
	_Atomic uint32_t wants; /* bitmask of hook points with rules */
	bool sync_publish;
	uint32_t wants_filters; /* bitmask */
	const persist_host *host;
	bool started;
	_Atomic uint64_t dropped_no_memory;
};

/* config.c */
int persist_config_register(struct persist *p, cfg_registry *r, const backend_type *t);
void persist_config_free(struct persist *p);

/* bus.c: a job for rule r from an event (copies its strings, references
 * its message). NULL on allocation failure. */
pjob *pjob_build(const prule *r, const hook_event *ev);

/* spill.c: the pool thread's overflow file (see spill.c) */
int spill_open(pslot *s, char *err, size_t errlen);
void spill_close(pslot *s);
/* Appends the first `max` jobs of the list `first` (linked by next, oldest
 * first) in order, many records per write. Returns how many were written: all
 * of them, or a prefix if the file is full (max_spill_bytes) or failing (0 if
 * none could be written). The caller still owns every job. */
size_t spill_write_list(pslot *s, const pjob *first, size_t max);
/* Reads the next job (a new allocation), or NULL if the file is drained or
 * unreadable. The file is read ahead in large chunks. Records whose rule no
 * longer exists are skipped (counted by the caller via *skipped). */
pjob *spill_read(pslot *s, uint64_t *skipped);
/* At shutdown: writes `first` (jobs older than the file's, in order) in
 * front of what the file holds. Returns the number written, or -1. */
int spill_prepend(pslot *s, pjob *first);
/* Every job read from the file so far has been written to the database:
 * records the read offset (so a crash does not replay them) and empties a
 * drained file. */
void spill_commit(pslot *s);

/* pool.c */
int pool_start(ppool *pl, const persist_host *host, char *err, size_t errlen);
/* Queues a job on the slot for `hash`. Returns 0, or -1 if it could not be
 * queued (the job is then freed and counted). */
int pool_enqueue(ppool *pl, pjob *j, uint64_t hash);
void pool_stop(ppool *pl, uint64_t timeout_ms);
uint64_t pool_pending(ppool *pl);
void pjob_free(pjob **j);
/* The (empty) answer object of a lookup job. NULL on allocation failure. */
presult *presult_for_job(const pjob *j);
/* Called by the pool thread when a job is finished (ok or failed or dropped). */
void persist_job_done(const persist_host *host, pjob *j, bool ok);

#endif
