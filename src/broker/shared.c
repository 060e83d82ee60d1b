/*
 * shared.c - see shared.h.
 */
#include "broker/shared.h"

#include <stdlib.h>
#include <string.h>

#include "util/hash.h"

typedef struct shared_group {
	mqtt_str group;
	mqtt_str filter;
	shared_member **m;
	uint32_t n, cap;
	_Atomic uint32_t rr;
	uint32_t key_len;
	uint8_t key[]; /* group, NUL, filter */
} shared_group;

static hm_key group_key(const void *v)
{
	const shared_group *g = v;
	return (hm_key){g->key, g->key_len};
}

int shared_init(shared_registry *reg, int strategy)
{
	memset(reg, 0, sizeof(*reg));
	router_init(&reg->r);
	hm_init(&reg->groups, group_key);
	reg->strategy = strategy;
	return pthread_rwlock_init(&reg->lock, NULL) ? -1 : 0;
}

void shared_destroy(shared_registry *reg)
{
	uint32_t it = 0;
	void *v;
	while (hm_next(&reg->groups, &it, &v)) {
		shared_group *g = v;
		for (uint32_t i = 0; i < g->n; i++)
			free(g->m[i]);
		free(g->m);
		free(g);
	}
	hm_free(&reg->groups);
	router_free(&reg->r);
	pthread_rwlock_destroy(&reg->lock);
}

static size_t make_key(uint8_t *out, mqtt_str group, mqtt_str filter)
{
	memcpy(out, group.p, group.len);
	out[group.len] = 0;
	memcpy(out + group.len + 1, filter.p, filter.len);
	return (size_t)group.len + 1 + filter.len;
}

int shared_subscribe(shared_registry *reg, mqtt_str group, mqtt_str filter, mqtt_str client_id,
                     uint8_t options, uint32_t sub_id, bool online, shared_member **member)
{
	int rc = -1;
	pthread_rwlock_wrlock(&reg->lock);
	if (*member) {
		(*member)->options = options;
		(*member)->sub_id = sub_id;
		rc = 0;
		goto out;
	}
	size_t klen = (size_t)group.len + 1 + filter.len;
	uint8_t stackkey[512];
	uint8_t *key = klen <= sizeof(stackkey) ? stackkey : malloc(klen);
	if (!key)
		goto out;
	make_key(key, group, filter);
	shared_group *g = hm_get(&reg->groups, key, klen);
	if (key != stackkey)
		free(key);
	bool new_group = false;
	if (!g) {
		g = calloc(1, sizeof(*g) + klen);
		if (!g)
			goto out;
		g->key_len = (uint32_t)make_key(g->key, group, filter);
		g->group = (mqtt_str){g->key, group.len};
		g->filter = (mqtt_str){g->key + group.len + 1, filter.len};
		void *old;
		bool is_new;
		if (hm_put(&reg->groups, g, &old)) {
			free(g);
			goto out;
		}
		if (router_add(&reg->r, g->filter, g, 0, 0, &is_new)) {
			hm_remove(&reg->groups, g->key, g->key_len);
			free(g);
			goto out;
		}
		new_group = true;
	}
	if (g->n == g->cap) {
		uint32_t nc = g->cap ? g->cap * 2 : 4;
		shared_member **nm = realloc(g->m, nc * sizeof(*nm));
		if (!nm)
			goto undo_group;
		g->m = nm;
		g->cap = nc;
	}
	shared_member *m = calloc(1, sizeof(*m) + client_id.len + 1);
	if (!m)
		goto undo_group;
	m->g = g;
	atomic_init(&m->online, online);
	m->options = options;
	m->sub_id = sub_id;
	m->cid_len = client_id.len;
	memcpy(m->client_id, client_id.p, client_id.len);
	g->m[g->n++] = m;
	atomic_fetch_add(&reg->members, 1);
	*member = m;
	rc = 0;
	goto out;
undo_group:
	if (new_group) {
		router_remove(&reg->r, g->filter, g);
		hm_remove(&reg->groups, g->key, g->key_len);
		free(g->m);
		free(g);
	}
out:
	pthread_rwlock_unlock(&reg->lock);
	return rc;
}

void shared_unsubscribe(shared_registry *reg, shared_member **mp)
{
	shared_member *m = *mp;
	if (!m)
		return;
	*mp = NULL;
	pthread_rwlock_wrlock(&reg->lock);
	shared_group *g = m->g;
	for (uint32_t i = 0; i < g->n; i++) {
		if (g->m[i] == m) {
			/* keep order: round-robin fairness does not care, but a
			 * stable order makes behaviour easier to reason about */
			memmove(&g->m[i], &g->m[i + 1], (g->n - i - 1) * sizeof(*g->m));
			g->n--;
			break;
		}
	}
	free(m);
	atomic_fetch_sub(&reg->members, 1);
	if (g->n == 0) {
		router_remove(&reg->r, g->filter, g);
		hm_remove(&reg->groups, g->key, g->key_len);
		free(g->m);
		free(g);
	}
	pthread_rwlock_unlock(&reg->lock);
}

typedef struct route_ctx {
	shared_registry *reg;
	const kmq_msg *msg;
	shared_deliver_fn fn;
	void *ctx;
	uint32_t groups;
} route_ctx;

static uint32_t xorshift32(void)
{
	static _Thread_local uint32_t s;
	if (!s)
		s = (uint32_t)(uintptr_t)&s ^ 0x9e3779b9u;
	s ^= s << 13;
	s ^= s >> 17;
	s ^= s << 5;
	return s;
}

static void pick(void *ctxp, const sub_entry *e)
{
	route_ctx *c = ctxp;
	shared_group *g = e->owner;
	if (g->n == 0)
		return;
	uint32_t start;
	switch (c->reg->strategy) {
	case SHARED_RANDOM:
		start = xorshift32() % g->n;
		break;
	case SHARED_HASH_CLIENTID:
		start = (uint32_t)(hash_stable(c->msg->origin.p, c->msg->origin.len) % g->n);
		break;
	case SHARED_HASH_TOPIC:
		start = (uint32_t)(hash_stable(c->msg->topic.p, c->msg->topic.len) % g->n);
		break;
	default:
		start = atomic_fetch_add_explicit(&g->rr, 1, memory_order_relaxed) % g->n;
		break;
	}
	/* Prefer an online member; an offline persistent session only gets the
	 * message (queued) when nobody in the group is online. */
	for (uint32_t i = 0; i < g->n; i++) {
		shared_member *m = g->m[(start + i) % g->n];
		if (atomic_load_explicit(&m->online, memory_order_relaxed)) {
			c->fn(c->ctx, m);
			c->groups++;
			return;
		}
	}
	c->fn(c->ctx, g->m[start]);
	c->groups++;
}

uint32_t shared_route(shared_registry *reg, const kmq_msg *msg, shared_deliver_fn fn, void *ctx)
{
	if (shared_member_count(reg) == 0)
		return 0;
	route_ctx c = {reg, msg, fn, ctx, 0};
	pthread_rwlock_rdlock(&reg->lock);
	router_match(&reg->r, msg->topic, pick, &c);
	pthread_rwlock_unlock(&reg->lock);
	return c.groups;
}
