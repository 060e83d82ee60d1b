/*
 * router.c - see router.h.
 *
 * The trie stores one node per filter level. Children are kept in a small
 * array and, past ROUTER_FANOUT_INDEX children, also in a hash map, so a
 * node with thousands of literal children ("devices/<id>/#") is still one
 * lookup per level. '+' and '#' children have dedicated pointers. Empty
 * nodes are pruned on removal so a churn of unique filters does not leak.
 */
#include "broker/router.h"

#include <stdlib.h>
#include <string.h>

#define ROUTER_FANOUT_INDEX 8

typedef struct exact_filter {
	sub_list subs;
	uint32_t len;
	char key[]; /* the filter */
} exact_filter;

typedef struct trie_node {
	struct trie_node *parent;
	struct trie_node *plus;
	struct trie_node *hash;
	struct trie_node **kids; /* literal children */
	uint32_t nkids, capkids;
	hashmap *index;          /* by level, when nkids > ROUTER_FANOUT_INDEX */
	sub_list subs;
	uint32_t len;
	char level[];
} trie_node;

static hm_key exact_key(const void *v)
{
	const exact_filter *e = v;
	return (hm_key){e->key, e->len};
}

static hm_key node_key(const void *v)
{
	const trie_node *n = v;
	return (hm_key){n->level, n->len};
}

/* ---------------------------------------------------------------- sub lists */

static int list_add(sub_list *l, void *owner, uint8_t options, uint32_t sub_id, bool *is_new)
{
	for (uint32_t i = 0; i < l->n; i++) {
		if (l->v[i].owner == owner) {
			l->v[i].options = options;
			l->v[i].sub_id = sub_id;
			*is_new = false;
			return 0;
		}
	}
	if (l->n == l->cap) {
		uint32_t nc = l->cap ? l->cap * 2 : 2;
		sub_entry *nv = realloc(l->v, nc * sizeof(*nv));
		if (!nv)
			return -1;
		l->v = nv;
		l->cap = nc;
	}
	l->v[l->n++] = (sub_entry){owner, sub_id, options};
	*is_new = true;
	return 0;
}

static int list_remove(sub_list *l, void *owner)
{
	for (uint32_t i = 0; i < l->n; i++) {
		if (l->v[i].owner == owner) {
			l->v[i] = l->v[--l->n];
			if (l->n == 0) {
				free(l->v);
				l->v = NULL;
				l->cap = 0;
			}
			return 0;
		}
	}
	return -1;
}

/* ---------------------------------------------------------------- trie */

static trie_node *node_new(trie_node *parent, const uint8_t *level, uint32_t len)
{
	trie_node *n = calloc(1, sizeof(*n) + len + 1);
	if (!n)
		return NULL;
	n->parent = parent;
	n->len = len;
	if (len)
		memcpy(n->level, level, len);
	return n;
}

static trie_node *node_child(const trie_node *n, const uint8_t *level, uint32_t len)
{
	if (len == 1 && level[0] == '+')
		return n->plus;
	if (len == 1 && level[0] == '#')
		return n->hash;
	if (n->index)
		return hm_get(n->index, level, len);
	for (uint32_t i = 0; i < n->nkids; i++) {
		trie_node *k = n->kids[i];
		if (k->len == len && memcmp(k->level, level, len) == 0)
			return k;
	}
	return NULL;
}

static trie_node *node_child_add(trie_node *n, const uint8_t *level, uint32_t len)
{
	trie_node *k = node_new(n, level, len);
	if (!k)
		return NULL;
	if (len == 1 && level[0] == '+') {
		n->plus = k;
		return k;
	}
	if (len == 1 && level[0] == '#') {
		n->hash = k;
		return k;
	}
	if (n->nkids == n->capkids) {
		uint32_t nc = n->capkids ? n->capkids * 2 : 4;
		trie_node **nk = realloc(n->kids, nc * sizeof(*nk));
		if (!nk)
			goto fail;
		n->kids = nk;
		n->capkids = nc;
	}
	if (!n->index && n->nkids + 1 > ROUTER_FANOUT_INDEX) {
		hashmap *ix = malloc(sizeof(*ix));
		if (!ix)
			goto fail;
		hm_init(ix, node_key);
		for (uint32_t i = 0; i < n->nkids; i++) {
			void *old;
			if (hm_put(ix, n->kids[i], &old)) {
				hm_free(ix);
				free(ix);
				goto fail;
			}
		}
		n->index = ix;
	}
	if (n->index) {
		void *old;
		if (hm_put(n->index, k, &old))
			goto fail;
	}
	n->kids[n->nkids++] = k;
	return k;
fail:
	free(k);
	return NULL;
}

static bool node_empty(const trie_node *n)
{
	return n->subs.n == 0 && !n->plus && !n->hash && n->nkids == 0;
}

static void node_free(trie_node *n)
{
	if (!n)
		return;
	node_free(n->plus);
	node_free(n->hash);
	for (uint32_t i = 0; i < n->nkids; i++)
		node_free(n->kids[i]);
	free(n->kids);
	if (n->index) {
		hm_free(n->index);
		free(n->index);
	}
	free(n->subs.v);
	free(n);
}

/* Unlinks and frees empty nodes from n upwards (never the root). */
static void prune(trie_node *n)
{
	while (n->parent && node_empty(n)) {
		trie_node *p = n->parent;
		if (p->plus == n) {
			p->plus = NULL;
		} else if (p->hash == n) {
			p->hash = NULL;
		} else {
			for (uint32_t i = 0; i < p->nkids; i++) {
				if (p->kids[i] == n) {
					p->kids[i] = p->kids[--p->nkids];
					break;
				}
			}
			if (p->index)
				hm_remove(p->index, n->level, n->len);
		}
		node_free(n);
		n = p;
	}
}

/* ---------------------------------------------------------------- router */

void router_init(router *r)
{
	memset(r, 0, sizeof(*r));
	hm_init(&r->exact, exact_key);
}

void router_free(router *r)
{
	uint32_t it = 0;
	void *v;
	while (hm_next(&r->exact, &it, &v)) {
		exact_filter *e = v;
		free(e->subs.v);
		free(e);
	}
	hm_free(&r->exact);
	node_free(r->root);
	r->root = NULL;
	r->count = r->filters = 0;
}

/* Splits off the next level of s starting at *pos. Returns false when done. */
static bool next_level(mqtt_str s, uint32_t *pos, const uint8_t **lvl, uint32_t *len, bool *first)
{
	if (*pos > s.len)
		return false;
	const uint8_t *start = s.p + *pos;
	const uint8_t *slash = memchr(start, '/', s.len - *pos);
	uint32_t l = slash ? (uint32_t)(slash - start) : s.len - *pos;
	*lvl = start;
	*len = l;
	*pos += l + 1; /* past the '/', or past the end when last */
	(void)first;
	return true;
}

int router_add(router *r, mqtt_str filter, void *owner, uint8_t options, uint32_t sub_id,
               bool *is_new)
{
	if (!mqtt_topic_is_wildcard(filter)) {
		exact_filter *e = hm_get(&r->exact, filter.p, filter.len);
		if (!e) {
			e = calloc(1, sizeof(*e) + filter.len);
			if (!e)
				return -1;
			e->len = filter.len;
			memcpy(e->key, filter.p, filter.len);
			void *old;
			if (hm_put(&r->exact, e, &old)) {
				free(e);
				return -1;
			}
			r->filters++;
		}
		if (list_add(&e->subs, owner, options, sub_id, is_new)) {
			if (e->subs.n == 0) {
				hm_remove(&r->exact, filter.p, filter.len);
				free(e);
				r->filters--;
			}
			return -1;
		}
		if (*is_new)
			r->count++;
		return 0;
	}
	if (!r->root) {
		r->root = node_new(NULL, NULL, 0);
		if (!r->root)
			return -1;
	}
	trie_node *n = r->root;
	uint32_t pos = 0, len;
	const uint8_t *lvl;
	bool first = true;
	while (next_level(filter, &pos, &lvl, &len, &first)) {
		trie_node *k = node_child(n, lvl, len);
		if (!k && !(k = node_child_add(n, lvl, len))) {
			prune(n);
			return -1;
		}
		n = k;
	}
	bool had = n->subs.n > 0;
	if (list_add(&n->subs, owner, options, sub_id, is_new)) {
		prune(n);
		return -1;
	}
	if (*is_new)
		r->count++;
	if (!had)
		r->filters++;
	return 0;
}

int router_remove(router *r, mqtt_str filter, void *owner)
{
	if (!mqtt_topic_is_wildcard(filter)) {
		exact_filter *e = hm_get(&r->exact, filter.p, filter.len);
		if (!e || list_remove(&e->subs, owner))
			return -1;
		r->count--;
		if (e->subs.n == 0) {
			hm_remove(&r->exact, filter.p, filter.len);
			free(e);
			r->filters--;
		}
		return 0;
	}
	trie_node *n = r->root;
	uint32_t pos = 0, len;
	const uint8_t *lvl;
	bool first = true;
	while (n && next_level(filter, &pos, &lvl, &len, &first))
		n = node_child(n, lvl, len);
	if (!n || list_remove(&n->subs, owner))
		return -1;
	r->count--;
	if (n->subs.n == 0)
		r->filters--;
	prune(n);
	return 0;
}

static void emit(const sub_list *l, router_match_fn fn, void *ctx)
{
	for (uint32_t i = 0; i < l->n; i++)
		fn(ctx, &l->v[i]);
}

/*
 * Walks the trie for the levels of topic from pos. `root_level` is true at
 * the first level, where '+' and '#' must not match a topic starting with '$'.
 */
static void match_node(const trie_node *n, mqtt_str topic, uint32_t pos, bool root_level,
                       bool dollar, router_match_fn fn, void *ctx)
{
	/* "a/#" also matches "a": a '#' child matches the remaining levels,
	 * including none. */
	if (n->hash && !(root_level && dollar))
		emit(&n->hash->subs, fn, ctx);
	if (pos > topic.len) { /* all levels consumed */
		emit(&n->subs, fn, ctx);
		return;
	}
	const uint8_t *start = topic.p + pos;
	const uint8_t *slash = memchr(start, '/', topic.len - pos);
	uint32_t len = slash ? (uint32_t)(slash - start) : topic.len - pos;
	uint32_t next = pos + len + 1;
	if (n->plus && !(root_level && dollar))
		match_node(n->plus, topic, next, false, dollar, fn, ctx);
	const trie_node *k;
	if (n->index) {
		k = hm_get(n->index, start, len);
		if (k)
			match_node(k, topic, next, false, dollar, fn, ctx);
	} else {
		for (uint32_t i = 0; i < n->nkids; i++) {
			k = n->kids[i];
			if (k->len == len && memcmp(k->level, start, len) == 0) {
				match_node(k, topic, next, false, dollar, fn, ctx);
				break;
			}
		}
	}
}

void router_match(const router *r, mqtt_str topic, router_match_fn fn, void *ctx)
{
	exact_filter *e = hm_get(&r->exact, topic.p, topic.len);
	if (e)
		emit(&e->subs, fn, ctx);
	if (r->root)
		match_node(r->root, topic, 0, true, topic.len > 0 && topic.p[0] == '$', fn, ctx);
}
