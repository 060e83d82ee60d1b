/*
 * persist.h - the persistence framework: hook bus, rules, pools and the
 * backend boundary.
 *
 * Design
 * ------
 * The broker raises hook events (client.connected, message.publish, ...) on
 * the I/O worker that owns the client. persist_fire() walks the rules bound
 * to that hook point (`backend.<db>.hook.<point>.<n> = {json}` lines, in <n>
 * order per backend), matches each rule's topic filter with the codec's own
 * matcher, and turns every match into a job: one allocation holding a copy of
 * the event's strings and one reference to the message. The job goes to the
 * queue of one connection of the rule's pool, chosen by hashing the client id
 * so that one client's writes stay in order. Nothing on the I/O worker waits.
 *
 * Each pool connection is a thread of its own (SQLite and the other blocking
 * drivers); it takes what its queue holds, up to batch_size jobs, and hands
 * them to the backend's run_batch, which runs them in one transaction.
 * Recoverable failures (database gone, locked, disk full, read-only) keep the
 * batch at the head of the queue and retry it with exponential backoff while
 * new jobs queue behind it (bounded: the oldest are dropped, and counted,
 * once the queue is full). Permanent failures (a constraint, bad SQL in a raw
 * action) fail that job alone and are counted.
 *
 * Answers go back through the host (the broker), never by touching broker
 * state from a backend thread: lookups (stored subscriptions, offline
 * messages, retained messages) and sync-mode acknowledgements are passed to
 * persist_host callbacks, which post them to the owner worker's inbox.
 *
 * Delivery modes, per backend: `async` acknowledges a publisher at once;
 * `sync` gives the PUBLISH event an ack token, and the broker sends PUBACK /
 * PUBREC only when every sync job of that message has committed.
 *
 * Metrics per rule are monotonic counters (matched, taken, success, failed,
 * dropped by reason, retried); inflight and queuing are derived from them in
 * a snapshot read in pipeline order, so matched = success + failed +
 * inflight + queuing + dropped holds in every snapshot by construction.
 *
 * Ownership: the bus owns backends, pools, rules and queued jobs. Events
 * passed to persist_fire are borrowed for the call. Lookup results passed to
 * host callbacks are owned by the callee (free with persist_result_free).
 */
#ifndef KEEPMQ_PERSIST_H
#define KEEPMQ_PERSIST_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker/message.h"
#include "config/config.h"
#include "mqtt/mqtt.h"

/* ---------------------------------------------------------------- hook points */

enum hook_point {
	HOOK_CLIENT_CONNECTED = 0,
	HOOK_CLIENT_DISCONNECTED,
	HOOK_SESSION_CREATED,
	HOOK_SESSION_SUBSCRIBED,
	HOOK_SESSION_UNSUBSCRIBED,
	HOOK_MESSAGE_PUBLISH,
	HOOK_MESSAGE_DELIVERED,
	HOOK_MESSAGE_ACKED,
	HOOK__COUNT
};

/* "client.connected" ... ; NULL for an out-of-range value. */
const char *hook_point_name(int hp);
/* Returns the hook point of a name, or -1. */
int hook_point_parse(const char *name);

/*
 * One event. Every field is borrowed for the duration of persist_fire.
 * For session.* events `topic` is the subscription's filter (as the client
 * sent it, $share prefix included); for message.* events it is the message
 * topic (msg->topic).
 */
typedef struct hook_event {
	uint8_t point;
	uint8_t qos;     /* subscribed: the granted QoS; message.*: the message's */
	bool retain;     /* message.*: published with retain */
	bool implicit;   /* message.acked for a QoS 0 delivery: moves read positions only */
	bool no_retained; /* session.subscribed: the subscription gets no retained messages
	                   * (shared, or MQTT 5 Retain Handling says so) */
	unsigned worker; /* the client's owner worker: answers are posted there */
	uint64_t serial; /* the session's serial: answers for an ended session are dropped */
	uint64_t ts_ms;  /* wall clock */
	mqtt_str clientid;
	mqtt_str username;
	mqtt_str peerhost;
	mqtt_str topic;
	kmq_msg *msg; /* message.* only */
	/* message.acked / message.delivered: the client's subscription filters
	 * that match msg->topic (read positions are kept per filter) */
	const mqtt_str *filters;
	uint32_t nfilters;
	/* message.publish in sync mode: the token passed back to ack_done */
	uint64_t ack_seq;
	/* out, optional: incremented for each lookup job created that will
	 * answer with stored messages (PRESULT_MSGS) for this session */
	uint32_t *fetches;
} hook_event;

/* ---------------------------------------------------------------- lookups */

enum presult_kind {
	PRESULT_SUBS = 1,     /* subscribe the session to subs[] (as a SUBSCRIBE would) */
	PRESULT_MSGS = 2,
	PRESULT_RETAINED = 3,
	PRESULT_UNSUBS = 4,   /* unsubscribe the session from subs[] (commands only) */
};

typedef struct psub {
	char *topic; /* malloc'd, NUL-terminated */
	uint32_t len;
	uint8_t qos;
} psub;

/* The answer of a lookup, posted to the client's owner worker. */
typedef struct presult {
	uint8_t kind;
	unsigned worker;
	uint64_t serial;
	char *clientid; /* malloc'd */
	uint32_t cid_len;
	char *filter;   /* MSGS/RETAINED: the subscription filter it answers (malloc'd) */
	uint32_t filter_len;
	psub *subs;      /* SUBS */
	kmq_msg **msgs;  /* MSGS/RETAINED: one reference each, oldest first */
	uint32_t n, cap;
} presult;

/* Frees a result, its strings and its message references. Sets *r = NULL. */
void persist_result_free(presult **r);
/* Drops what a result holds (a lookup whose transaction did not commit
 * starts again empty). */
void presult_clear(presult *r);
/* Appends to a result (backend threads). Return 0, -1 on allocation failure. */
int presult_add_sub(presult *r, const char *topic, size_t len, uint8_t qos);
int presult_add_msg(presult *r, kmq_msg *m); /* takes the reference */

/* ---------------------------------------------------------------- the host */

/*
 * What the broker gives the bus. Every callback may be called from any
 * backend thread; the broker posts the work to `worker`'s inbox. Callbacks
 * take ownership of what they are given.
 */
typedef struct persist_host {
	void *ctx;
	/* A sync-mode publish's job finished; ok is false if it failed for good
	 * or was dropped. */
	void (*ack_done)(void *ctx, unsigned worker, const char *cid, uint32_t cid_len,
	                 uint64_t serial, uint64_t ack_seq, bool ok);
	/* A lookup answered. */
	void (*result)(void *ctx, presult *r);
	/* A command from outside the broker (the Redis subscription channel):
	 * r->kind is PRESULT_SUBS or PRESULT_UNSUBS, r->clientid names the
	 * client; worker and serial are ignored - the host finds the client's
	 * owner and applies it if the client is online, else drops it. */
	void (*command)(void *ctx, presult *r);
	/* The node name (`${node}`). */
	const char *node;
} persist_host;

/* ---------------------------------------------------------------- jobs and rules */

struct prule;
struct ppool;
struct pbackend;

enum pjob_status { PJOB_PENDING = 0, PJOB_OK, PJOB_FAILED, PJOB_RETRY };

/* One rule matched by one event: what a backend's run_batch executes. */
typedef struct pjob {
	struct pjob *next;
	const struct prule *rule;
	uint8_t point;
	uint8_t qos;
	bool retain;
	bool implicit;
	uint8_t status;  /* enum pjob_status, set by run_batch */
	unsigned worker;
	uint64_t serial;
	uint64_t ack_seq;
	uint64_t ts_ms;
	uint64_t enq_ms; /* monotonic, when queued */
	kmq_msg *msg;    /* one reference, or NULL */
	presult *result; /* lookups: allocated by persist before run_batch */
	mqtt_str clientid, username, peerhost, topic;
	mqtt_str *filters;
	uint32_t nfilters;
	uint32_t size; /* bytes of this allocation, for accounting */
	/* pool.c's fetch barrier (see there): a write job counts itself in
	 * *wfin when freed; a fetch waits until each slot k of its pool has
	 * freed need[k] write jobs */
	_Atomic uint64_t *wfin;
	uint64_t *need; /* malloc'd, need_n entries, or NULL */
	uint32_t need_n;
	uint8_t data[];
} pjob;

/* ---------------------------------------------------------------- backends */

#define PERSIST_BACKEND_API 2

enum pfunc_kind { PFUNC_WRITE = 0, PFUNC_LOOKUP = 1 };

/* A built-in function: the name rules use, where it may be bound, and what
 * events it acts on (a function that ignores an event is not "matched"). */
typedef struct pfunc {
	const char *name;
	uint32_t hooks; /* bitmask of 1u << hook_point */
	uint8_t kind;   /* enum pfunc_kind */
	uint8_t id;     /* the backend's own number for it */
	uint8_t result; /* lookups: enum presult_kind */
	uint8_t by_topic; /* 1: jobs are ordered per topic (retained rows), not per client */
	bool (*applies)(const hook_event *ev); /* NULL: every event */
} pfunc;

typedef struct pconn pconn; /* one database connection, the backend's own type */

/* A backend's per-pool configuration keys: name relative to the pool
 * ("database"), stored at `offset` in the backend's pool struct. */
typedef struct ppool_key {
	cfg_key key; /* key.name is the relative name; offset into the pool struct */
} ppool_key;

/* backend_type.flags */
#define BACKEND_F_MSG_EXPIRY 1u /* has backend.<db>.msg.expired_after and the rules' expired_time */

/* Receives one metric of a pool service: name, value. */
typedef void (*pmetric_put)(void *ud, const char *name, uint64_t value);

typedef struct backend_type {
	int api; /* PERSIST_BACKEND_API */
	uint32_t flags; /* BACKEND_F_* */
	const char *name; /* "sqlite": the <db> of backend.<db>.* */
	const char *title; /* "SQLite", for documentation */
	const cfg_key *pool_keys; /* names relative to the pool; storage offsets into pool_cfg */
	size_t n_pool_keys;
	size_t pool_cfg_size;
	const pfunc *funcs;
	size_t nfuncs;
	const char *raw_key; /* the action key of raw actions: "sql", "commands", "cql"; NULL: none */
	int default_pool_size;
	/* Compiles a raw action (its texts in order). *out is freed with raw_free. */
	int (*raw_compile)(const char *const *texts, size_t n, void **out, char *err, size_t errlen);
	void (*raw_free)(void *compiled);
	/* Validates a pool's settings after loading. */
	int (*pool_check)(const void *pool_cfg, char *err, size_t errlen);
	/* Frees what pool_check/config stored in pool_cfg (strings). */
	void (*pool_cfg_free)(void *pool_cfg);
	/* Opens a connection. Returns 0 and sets *out, or -1 with a message. */
	int (*open)(const void *pool_cfg, const persist_host *host, pconn **out, char *err,
	            size_t errlen);
	/* Closes and frees. Sets *c = NULL. */
	void (*close)(pconn **c);
	/* Health check: 0 if usable. */
	int (*ping)(pconn *c);
	/*
	 * Runs jobs[0..n) as one unit (one transaction where the database has
	 * them) and sets each job's status: PJOB_OK, PJOB_FAILED (permanent:
	 * this job alone) or PJOB_RETRY (the connection or database is unusable:
	 * the framework reconnects and retries). Lookups fill job->result. A
	 * batch in which any job is PJOB_RETRY must not have committed anything
	 * of the jobs marked PJOB_RETRY. Returns 0, or -1 if the connection is
	 * broken (every job not OK/FAILED is retried on a new connection).
	 */
	int (*run_batch)(pconn *c, pjob **jobs, size_t n);
	/* Optional: the text of the last error run_batch met (for logs). */
	const char *(*last_error)(pconn *c);
	/*
	 * Optional: a pool's own background service, started after the pool's
	 * connections and stopped before them (Redis: the subscription channel).
	 * service_start returns 0 and sets *svc (NULL: this pool needs none), or
	 * -1 with a message. service_stop stops and frees it, setting *svc = NULL.
	 * service_metrics reports its counters (on the metrics thread).
	 */
	int (*service_start)(const void *pool_cfg, const char *pool_name, const persist_host *host,
	                     void **svc, char *err, size_t errlen);
	void (*service_stop)(void **svc);
	void (*service_metrics)(void *svc, pmetric_put put, void *ud);
} backend_type;

/* Per-rule metrics: monotonic counters, written with relaxed atomics. */
typedef struct pmetrics {
	_Atomic uint64_t matched;  /* jobs created */
	_Atomic uint64_t taken;    /* jobs a pool thread took from the queue */
	_Atomic uint64_t success, failed, retried;
	_Atomic uint64_t dropped_queue_full; /* pushed out of a full queue (never taken) */
	_Atomic uint64_t dropped_shutdown;   /* still queued when the broker stopped */
	_Atomic uint64_t dropped_other;      /* taken, then abandoned (stop during retry) */
} pmetrics;

/* One `backend.<db>.hook.<point>.<n> = {json}` line. */
typedef struct prule {
	struct prule *next_at_point; /* the bus's list for this hook point, in order */
	struct pbackend *be;
	struct ppool *pool;
	const pfunc *func; /* a built-in function, or NULL for a raw action */
	void *raw;         /* the backend's compiled raw action, or NULL */
	char *raw_texts_json; /* the raw action as written (for late compilation), or NULL */
	char *topic;       /* the rule's filter, NULL: every event */
	uint32_t topic_len;
	char *pool_name;
	uint8_t point;
	int64_t n;
	/* offline_opts, falling back to backend.<db>.max_returned_count/time_range */
	int64_t max_returned_count; /* INT64_MAX: no limit */
	uint64_t time_range_ms;     /* UINT64_MAX: no limit */
	int64_t expired_time_s;     /* Redis: seconds; 0 unset (then the backend's msg.expired_after) */
	char *payload_format;       /* MongoDB: NULL unset */
	char *file;                 /* where the line is, for later errors (malloc'd) */
	int line;
	char key[96];               /* "backend.sqlite.hook.client.connected.1" */
	pmetrics m;
} prule;

/* ---------------------------------------------------------------- the bus */

typedef struct persist persist;

/* Allocates the bus and registers the keys (backend.<db>.*) of every backend
 * in `types` (NULL-terminated; they must outlive the bus) with the registry.
 * Returns NULL on allocation failure. */
persist *persist_new(cfg_registry *r, const backend_type *const *types);
/* After every file is loaded: checks rules against pools, compiles raw
 * actions. Errors name file, line and key. Returns 0 if none. */
int persist_config_finish(persist *p, cfg_errors *errs);
/* Starts the pool threads. host must outlive the bus. Returns 0, or -1 with
 * a message (a pool could not be started at all). A database that is merely
 * unreachable is not an error: jobs queue until it is back. */
int persist_start(persist *p, const persist_host *host, char *err, size_t errlen);
/* Waits (at most timeout_ms) for queued jobs to be written, then stops the
 * threads. */
void persist_stop(persist *p, uint64_t timeout_ms);
/* Frees everything. Sets *p = NULL. */
void persist_free(persist **p);

/* True if some rule is bound to the hook point (a relaxed read: cheap). */
bool persist_wants(const persist *p, int point);
/* True if some rule of a sync-mode backend is bound to message.publish. */
bool persist_sync_publish(const persist *p);
/* True if a rule needs subscription filters on message.acked/delivered. */
bool persist_wants_filters(const persist *p, int point);

/*
 * Raises an event. Returns the number of jobs created that carry the ack
 * token (sync mode; 0 if ev->ack_seq is 0), or -1 if some sync job could not
 * be queued (the broker then refuses the message).
 */
int persist_fire(persist *p, const hook_event *ev);

/* The JSON text of every backend's metrics (malloc'd; caller frees), or NULL. */
char *persist_metrics_json(persist *p);
/* Number of configured backends with at least one pool. */
unsigned persist_backend_count(const persist *p);

/* Test hook: the number of queued + in-flight jobs over all pools. */
uint64_t persist_pending(persist *p);

#endif /* KEEPMQ_PERSIST_H */
