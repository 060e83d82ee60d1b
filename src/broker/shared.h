/*
 * shared.h - shared subscriptions ($share/<group>/<filter>, $queue/<filter>).
 *
 * Design
 * ------
 * A shared group's members may live on any I/O worker, and each message must
 * go to exactly one member, so the groups are global: one registry guarded by
 * a rwlock, holding a router (filter -> groups) and the member lists. The
 * worker that receives a PUBLISH matches it here (read lock), picks one
 * member per matching group and forwards the delivery to the member's worker.
 * The pick prefers members whose session is online; the round-robin cursor is
 * an atomic so pickers on different workers never take the write lock.
 *
 * Members are owned by the registry; a session keeps a pointer to each of its
 * memberships and releases it with shared_unsubscribe.
 */
#ifndef KEEPMQ_SHARED_H
#define KEEPMQ_SHARED_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "broker/message.h"
#include "broker/router.h"

enum shared_strategy {
	SHARED_ROUND_ROBIN = 0,
	SHARED_RANDOM = 1,
	SHARED_HASH_CLIENTID = 2, /* by publisher: one publisher's messages stick to one member */
	SHARED_HASH_TOPIC = 3,
};

struct shared_group;

typedef struct shared_member {
	struct shared_group *g;
	_Atomic bool online;
	uint8_t options;
	uint32_t sub_id;
	uint32_t cid_len;
	char client_id[];
} shared_member;

typedef struct shared_registry {
	pthread_rwlock_t lock;
	router r;       /* filter -> struct shared_group (as owner) */
	hashmap groups; /* "group\0filter" -> struct shared_group */
	_Atomic uint64_t members;
	int strategy;
} shared_registry;

int shared_init(shared_registry *reg, int strategy);
void shared_destroy(shared_registry *reg);

/*
 * Subscribes client_id to (group, filter). If *member is non-NULL it is that
 * client's existing membership of this same group/filter and only its options
 * change. On success *member is the membership (owned by the registry).
 */
int shared_subscribe(shared_registry *reg, mqtt_str group, mqtt_str filter, mqtt_str client_id,
                     uint8_t options, uint32_t sub_id, bool online, shared_member **member);
/* Removes a membership; sets *member = NULL. */
void shared_unsubscribe(shared_registry *reg, shared_member **member);
static inline void shared_set_online(shared_member *m, bool online)
{
	atomic_store_explicit(&m->online, online, memory_order_relaxed);
}

/* Called once per matching group with the chosen member, under the read lock:
 * copy what you need, do not call back into the registry. */
typedef void (*shared_deliver_fn)(void *ctx, const shared_member *m);
/* Returns the number of groups the message went to. */
uint32_t shared_route(shared_registry *reg, const kmq_msg *msg, shared_deliver_fn fn, void *ctx);

static inline uint64_t shared_member_count(shared_registry *reg)
{
	return atomic_load_explicit(&reg->members, memory_order_relaxed);
}

#endif
