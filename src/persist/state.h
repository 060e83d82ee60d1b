/*
 * state.h - the broker's own state in a database: persistent sessions, their
 * subscriptions, their queued and in-flight messages, retained messages.
 *
 * Design
 * ------
 * This is not a hook rule: the rules write what an operator asked for, in the
 * spec's tables; the state store writes what the broker needs to come back
 * after a restart or a crash with nothing lost. The broker describes every
 * change as a small operation (state_op: "session X now offline since T",
 * "message M queued for X as number 17", "17 acknowledged", ...) and hands it
 * to state_submit from its I/O worker; nothing there waits. One thread takes
 * everything queued (up to state.batch_size) and applies it as one
 * transaction through the store's table of functions, so many clients'
 * changes share one commit.
 *
 * Sync mode. An operation may carry a token (state_tok). A token is the
 * publisher's PUBACK/PUBREC waiting for every copy of its message to be on
 * disk: the publisher's worker holds one reference while it routes, every
 * fan-out to another worker holds one until that worker has routed, and
 * every operation holds one until its transaction committed. The last
 * release calls the host's ack_done, exactly as a sync backend job does.
 *
 * Failure. A transaction that fails (disk full, read-only file, locked too
 * long) is retried with backoff, whole, while new operations queue behind it
 * (bounded by state.queue_limit; beyond it new queued and retained
 * messages are dropped, counted, and their tokens fail; deletions, packet
 * ids, session and subscription changes are always kept). At stop the queue is written out, for at most
 * STATE_STOP_MS if the database keeps failing.
 *
 * Ownership: state_submit takes the operation (and its message reference and
 * token hold). Loader callbacks take the message references they are given.
 */
#ifndef KEEPMQ_PERSIST_STATE_H
#define KEEPMQ_PERSIST_STATE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker/message.h"
#include "config/config.h"
#include "persist/persist.h"

#define STATE_STORE_API 1
#define STATE_STOP_MS 10000

enum state_op_kind {
	SOP_SESSION_PUT = 1, /* cid: version, expiry_s, offline_ms, key = user name */
	SOP_SESSION_DEL,     /* cid: the session and everything it holds */
	SOP_SUB_PUT,         /* cid, key = filter as sent: options (qos...), sub_id */
	SOP_SUB_DEL,         /* cid, key = filter */
	SOP_MSG_ADD,         /* cid, seq: msg, qos, flags, sub_id */
	SOP_MSG_PID,         /* cid, seq: pid, mstate (1 sent, 2 PUBREL sent) */
	SOP_MSG_DEL,         /* cid, seq, key = message id (16 bytes): acknowledged or dropped */
	SOP_RETAIN_PUT,      /* msg (its topic is the key) */
	SOP_RETAIN_DEL,      /* key = topic */
};

typedef struct state_tok state_tok;

typedef struct state_op {
	struct state_op *next;
	uint8_t kind;
	uint8_t qos;
	uint8_t flags;   /* MSG_ADD: delivery flags (retain as published); SUB_PUT: options */
	uint8_t version; /* SESSION_PUT */
	uint8_t mstate;  /* MSG_PID */
	uint16_t pid;
	uint32_t sub_id;
	uint32_t expiry_s;
	uint64_t seq;
	uint64_t offline_ms; /* SESSION_PUT: wall clock ms it went offline; 0 while online */
	kmq_msg *msg;        /* MSG_ADD, RETAIN_PUT: one reference */
	state_tok *tok;      /* one hold, or NULL */
	const char *cid, *key; /* into data[] */
	uint32_t cid_len, key_len;
	char data[];
} state_op;

/* A new operation with copies of cid and key; NULL on allocation failure. */
state_op *state_op_new(uint8_t kind, const char *cid, uint32_t cid_len, const void *key,
                       uint32_t key_len);
/* Frees an operation that was not submitted (drops msg, releases tok as failed). */
void state_op_free(state_op **op);

/* What a store hands back at load time (main thread, before the workers run). */
typedef struct state_session {
	const char *cid;
	uint32_t cid_len;
	uint8_t version;
	uint32_t expiry_s;
	uint64_t offline_ms;
	const char *username; /* NULL: none */
	uint32_t ulen;
} state_session;

typedef struct state_queued {
	const char *cid;
	uint32_t cid_len;
	uint64_t seq;
	kmq_msg *msg; /* one reference, taken by the callback */
	uint8_t qos, flags, mstate;
	uint16_t pid;
	uint32_t sub_id;
} state_queued;

typedef struct state_loader {
	void *arg;
	/* Every callback returns 0, or -1 to have the store forget that row. */
	int (*session)(void *arg, const state_session *s);
	int (*sub)(void *arg, const char *cid, uint32_t cid_len, const char *filter, uint32_t flen,
	           uint8_t options, uint32_t sub_id);
	int (*queued)(void *arg, const state_queued *q); /* in (cid, seq) order */
	int (*retained)(void *arg, kmq_msg *m);          /* takes the reference */
} state_loader;

typedef struct state_store_type {
	int api; /* STATE_STORE_API */
	const char *name;
	/* Opens (creating the file and tables if missing). 0, or -1 with a message. */
	int (*open)(const char *file, void **db, char *err, size_t errlen);
	/* Calls the loader for every stored row: sessions, subscriptions, queued
	 * messages, retained messages, in that order. 0, or -1 with a message. */
	int (*load)(void *db, const state_loader *l, char *err, size_t errlen);
	/* Applies ops in order as one transaction. 0: committed. -1: nothing
	 * committed (err says why); the runner retries the same batch later. */
	int (*apply)(void *db, state_op *const *ops, size_t n, char *err, size_t errlen);
	void (*close)(void **db);
} state_store_type;

typedef struct state state;

/* Registers the state.* keys; types is NULL-terminated and outlives the
 * store. NULL on allocation failure. */
state *state_new(cfg_registry *r, const state_store_type *const *types);
/* True if a store is configured (state.store is not "none"). */
bool state_enabled(const state *st);
/* True if PUBACK/PUBREC wait for the state store (state.delivery_mode = sync). */
bool state_sync(const state *st);
/* Opens the store and calls the loader. 0, or -1 with a message. */
int state_open_load(state *st, const state_loader *l, char *err, size_t errlen);
/* Starts the writer thread; host->ack_done receives finished tokens. */
int state_start(state *st, const persist_host *host, char *err, size_t errlen);
/* Queues an operation (any thread). Takes ownership. A stopped or disabled
 * store frees it at once. */
void state_submit(state *st, state_op *op);
/* Writes what is queued (at most STATE_STOP_MS while the database fails),
 * stops the thread, closes the store. Later submissions are freed unapplied. */
void state_stop(state *st);
/* Frees everything. Sets *st = NULL. NULL-safe. */
void state_free(state **st);

/* Counters, for $SYS and tests. */
typedef struct state_stats {
	uint64_t ops, commits, retries, dropped, queued;
	uint64_t elided; /* queued-then-acknowledged pairs never written (state.c) */
} state_stats;
void state_get_stats(state *st, state_stats *out);

/* Tokens: see the design note above. */
state_tok *state_tok_new(state *st, unsigned worker, uint64_t serial, uint64_t ack_seq, const char *cid,
                         uint32_t cid_len);
state_tok *state_tok_hold(state_tok *t);
/* Drops one hold; ok = false makes the acknowledgement a failure. The last
 * release reports to the host (if the store was started) and frees. Sets *t = NULL. */
void state_tok_release(state *st, state_tok **t, bool ok);
/* True if the caller holds the only reference. */
bool state_tok_alone(const state_tok *t);
/* Frees a token whose only holder is the caller, without reporting. */
void state_tok_discard(state_tok **t);
/* The ack sequence number it reports. */
uint64_t state_tok_seq(const state_tok *t);

#endif
