/*
 * retain.c - see retain.h.
 */
#include "broker/retain.h"

#include <stdlib.h>
#include <string.h>

#include "util/hashmap.h"

typedef struct retain_node {
	struct retain_node *parent;
	hashmap kids; /* by level */
	kmq_msg *msg;
	uint32_t len;
	char level[];
} retain_node;

static hm_key node_key(const void *v)
{
	const retain_node *n = v;
	return (hm_key){n->level, n->len};
}

static retain_node *node_new(retain_node *parent, const uint8_t *lvl, uint32_t len)
{
	retain_node *n = calloc(1, sizeof(*n) + len + 1);
	if (!n)
		return NULL;
	n->parent = parent;
	n->len = len;
	if (len)
		memcpy(n->level, lvl, len);
	hm_init(&n->kids, node_key);
	return n;
}

static void node_free(retain_node *n)
{
	uint32_t it = 0;
	void *v;
	while (hm_next(&n->kids, &it, &v))
		node_free(v);
	hm_free(&n->kids);
	msg_unref(&n->msg);
	free(n);
}

static void prune(retain_node *n)
{
	while (n->parent && !n->msg && n->kids.count == 0) {
		retain_node *p = n->parent;
		hm_remove(&p->kids, n->level, n->len);
		node_free(n);
		n = p;
	}
}

int retain_init(retain_store *s, uint64_t max)
{
	memset(s, 0, sizeof(*s));
	s->max = max;
	s->root = node_new(NULL, NULL, 0);
	if (!s->root)
		return -1;
	if (pthread_rwlock_init(&s->lock, NULL)) {
		node_free(s->root);
		return -1;
	}
	return 0;
}

void retain_destroy(retain_store *s)
{
	if (!s->root)
		return;
	node_free(s->root);
	s->root = NULL;
	pthread_rwlock_destroy(&s->lock);
}

/* Keeps sys_count in step when a stored message m comes (+1) or goes (-1). */
static void count_sys(retain_store *s, const kmq_msg *m, int delta)
{
	if (m->flags & MSG_F_SYS)
		s->sys_count += (uint64_t)(int64_t)delta;
}

static void level_at(mqtt_str t, uint32_t pos, const uint8_t **lvl, uint32_t *len)
{
	const uint8_t *start = t.p + pos;
	const uint8_t *slash = memchr(start, '/', t.len - pos);
	*lvl = start;
	*len = slash ? (uint32_t)(slash - start) : t.len - pos;
}

int retain_set(retain_store *s, kmq_msg *msg)
{
	mqtt_str t = msg->topic;
	int rc;
	pthread_rwlock_wrlock(&s->lock);
	retain_node *n = s->root;
	for (uint32_t pos = 0; pos <= t.len;) {
		const uint8_t *lvl;
		uint32_t len;
		level_at(t, pos, &lvl, &len);
		retain_node *k = hm_get(&n->kids, lvl, len);
		if (!k) {
			if (msg->payload.len == 0) {
				rc = RETAIN_NOOP;
				goto out;
			}
			void *old;
			if (!(k = node_new(n, lvl, len)) || hm_put(&n->kids, k, &old)) {
				free(k);
				prune(n);
				rc = RETAIN_NOMEM;
				goto out;
			}
		}
		n = k;
		pos += len + 1;
	}
	if (msg->payload.len == 0) {
		if (n->msg) {
			s->bytes -= msg_size(n->msg);
			count_sys(s, n->msg, -1);
			msg_unref(&n->msg);
			s->count--;
			rc = RETAIN_DELETED;
		} else {
			rc = RETAIN_NOOP;
		}
		prune(n);
		goto out;
	}
	if (!n->msg && s->max && !(msg->flags & MSG_F_SYS) && s->count - s->sys_count >= s->max) {
		prune(n);
		rc = RETAIN_FULL;
		goto out;
	}
	if (n->msg) {
		s->bytes -= msg_size(n->msg);
		count_sys(s, n->msg, -1);
		msg_unref(&n->msg);
	} else {
		s->count++;
	}
	count_sys(s, msg, 1);
	n->msg = msg_ref(msg);
	s->bytes += msg_size(msg);
	rc = RETAIN_STORED;
out:
	pthread_rwlock_unlock(&s->lock);
	return rc;
}

typedef struct match_ctx {
	mqtt_str filter;
	uint64_t now;
	retain_match_fn fn;
	void *ctx;
} match_ctx;

static void emit(const match_ctx *m, retain_node *n)
{
	if (n->msg && !msg_expired(n->msg, m->now))
		m->fn(m->ctx, n->msg);
}

static void emit_subtree(const match_ctx *m, retain_node *n, bool skip_dollar)
{
	emit(m, n);
	uint32_t it = 0;
	void *v;
	while (hm_next(&n->kids, &it, &v)) {
		retain_node *k = v;
		if (skip_dollar && k->len > 0 && k->level[0] == '$')
			continue;
		emit_subtree(m, k, false);
	}
}

/* n is the node reached by the filter levels before pos. */
static void match(const match_ctx *m, retain_node *n, uint32_t pos, bool root)
{
	mqtt_str f = m->filter;
	if (pos > f.len) {
		emit(m, n);
		return;
	}
	const uint8_t *lvl;
	uint32_t len;
	level_at(f, pos, &lvl, &len);
	if (len == 1 && lvl[0] == '#') {
		/* '#' matches the parent too ("a/#" matches "a") */
		if (!root)
			emit(m, n);
		uint32_t it = 0;
		void *v;
		while (hm_next(&n->kids, &it, &v)) {
			retain_node *k = v;
			if (root && k->len > 0 && k->level[0] == '$')
				continue;
			emit_subtree(m, k, false);
		}
		return;
	}
	if (len == 1 && lvl[0] == '+') {
		uint32_t it = 0;
		void *v;
		while (hm_next(&n->kids, &it, &v)) {
			retain_node *k = v;
			if (root && k->len > 0 && k->level[0] == '$')
				continue;
			match(m, k, pos + len + 1, false);
		}
		return;
	}
	retain_node *k = hm_get(&n->kids, lvl, len);
	if (k)
		match(m, k, pos + len + 1, false);
}

void retain_match(retain_store *s, mqtt_str filter, uint64_t now_ms, retain_match_fn fn, void *ctx)
{
	match_ctx m = {filter, now_ms, fn, ctx};
	pthread_rwlock_rdlock(&s->lock);
	if (s->count)
		match(&m, s->root, 0, true);
	pthread_rwlock_unlock(&s->lock);
}

static uint64_t sweep(retain_store *s, retain_node *n, uint64_t now)
{
	uint64_t removed = 0;
	if (n->msg && msg_expired(n->msg, now)) {
		s->bytes -= msg_size(n->msg);
		count_sys(s, n->msg, -1);
		msg_unref(&n->msg);
		s->count--;
		removed++;
	}
	/* collect children first: pruning during iteration would disturb it */
	uint32_t nk = n->kids.count, i = 0, it = 0;
	retain_node **kids = nk ? malloc(nk * sizeof(*kids)) : NULL;
	if (nk && !kids)
		return removed;
	void *v;
	while (hm_next(&n->kids, &it, &v))
		kids[i++] = v;
	for (i = 0; i < nk; i++) {
		removed += sweep(s, kids[i], now);
	}
	free(kids);
	/* only n itself: the caller is still iterating n's parent */
	if (n->parent && !n->msg && n->kids.count == 0) {
		hm_remove(&n->parent->kids, n->level, n->len);
		node_free(n);
	}
	return removed;
}

uint64_t retain_sweep(retain_store *s, uint64_t now_ms)
{
	pthread_rwlock_wrlock(&s->lock);
	uint64_t n = s->count ? sweep(s, s->root, now_ms) : 0;
	pthread_rwlock_unlock(&s->lock);
	return n;
}

uint64_t retain_count(retain_store *s)
{
	pthread_rwlock_rdlock(&s->lock);
	uint64_t n = s->count;
	pthread_rwlock_unlock(&s->lock);
	return n;
}
