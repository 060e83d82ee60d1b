/*
 * router.h - subscription index: topic filter -> subscribers.
 *
 * Design
 * ------
 * Most subscriptions name an exact topic, so filters without wildcards live
 * in one hash table keyed by the whole filter: routing a PUBLISH to them is a
 * single lookup of its topic. Wildcard filters live in a trie of topic
 * levels, walked once per PUBLISH. A router is not thread-safe: each I/O
 * worker owns one for its own sessions (so SUBSCRIBE never takes a lock),
 * and the global shared-subscription registry wraps one in a rwlock.
 *
 * An entry is (owner, options, subscription id). Owners are opaque: a session
 * in a worker's router, a shared group in the registry. There is at most one
 * entry per (filter, owner); adding again replaces its options.
 */
#ifndef KEEPMQ_ROUTER_H
#define KEEPMQ_ROUTER_H

#include <stdbool.h>
#include <stdint.h>

#include "mqtt/mqtt.h"
#include "util/hashmap.h"

typedef struct sub_entry {
	void *owner;
	uint32_t sub_id; /* 0: none */
	uint8_t options; /* MQTT_SUBOPT_* byte */
} sub_entry;

typedef struct sub_list {
	uint32_t n, cap;
	sub_entry *v;
} sub_list;

struct trie_node;

typedef struct router {
	hashmap exact; /* filter -> struct exact_filter */
	struct trie_node *root;
	uint64_t count; /* entries */
	uint64_t filters; /* distinct filters */
} router;

void router_init(router *r);
/* Frees all internal storage (not the owners). */
void router_free(router *r);

/*
 * Adds or updates (filter, owner). *is_new says whether it was absent.
 * filter must be valid. Returns 0, -1 on allocation failure.
 */
int router_add(router *r, mqtt_str filter, void *owner, uint8_t options, uint32_t sub_id,
               bool *is_new);
/* Removes (filter, owner). Returns 0, or -1 if there was no such entry. */
int router_remove(router *r, mqtt_str filter, void *owner);

typedef void (*router_match_fn)(void *ctx, const sub_entry *e);
/*
 * Calls fn for every entry whose filter matches topic (a valid topic name).
 * An owner subscribed through several matching filters is reported once per
 * filter; callers that need one delivery per owner merge. fn must not modify
 * the router.
 */
void router_match(const router *r, mqtt_str topic, router_match_fn fn, void *ctx);

#endif
