/*
 * retain.h - the retained message store, shared by all I/O workers.
 *
 * Design
 * ------
 * A trie of topic levels holding at most one message per topic. Lookups on
 * SUBSCRIBE walk it with the subscription's filter, so wildcard filters find
 * every retained message they match without scanning the whole store. A
 * pthread rwlock guards it: subscribes (readers) run in parallel, retained
 * publishes take the write lock briefly. Callbacks run under the lock and
 * must only take references (msg_ref), never block or call back into the store.
 */
#ifndef KEEPMQ_RETAIN_H
#define KEEPMQ_RETAIN_H

#include <pthread.h>
#include <stdint.h>

#include "broker/message.h"

struct retain_node;

typedef struct retain_store {
	pthread_rwlock_t lock;
	struct retain_node *root;
	uint64_t count;
	uint64_t sys_count; /* broker-made ($SYS) messages: not held to max */
	uint64_t max; /* 0: unlimited; applies to count - sys_count */
	uint64_t bytes;
} retain_store;

int retain_init(retain_store *s, uint64_t max);
void retain_destroy(retain_store *s);

enum retain_set_result {
	RETAIN_STORED = 0,
	RETAIN_DELETED = 1,  /* empty payload removed an existing message */
	RETAIN_NOOP = 2,     /* empty payload, nothing to delete */
	RETAIN_FULL = -1,    /* store at its limit: not stored */
	RETAIN_NOMEM = -2,
};
/* Stores msg (taking a new reference) under its topic, or deletes the topic's
 * message when msg's payload is empty. */
int retain_set(retain_store *s, kmq_msg *msg);

typedef void (*retain_match_fn)(void *ctx, kmq_msg *msg);
/* Calls fn for every unexpired retained message whose topic matches filter. */
void retain_match(retain_store *s, mqtt_str filter, uint64_t now_ms, retain_match_fn fn, void *ctx);
/* Removes expired messages. Returns how many. */
uint64_t retain_sweep(retain_store *s, uint64_t now_ms);
uint64_t retain_count(retain_store *s);

#endif
