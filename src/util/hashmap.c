/*
 * hashmap.c - see hashmap.h. Load factor is kept at or below 3/4.
 */
#include "util/hashmap.h"

#include <stdlib.h>
#include <string.h>

#include "util/hash.h"

void hm_init(hashmap *m, hm_key_fn key_of)
{
	memset(m, 0, sizeof(*m));
	m->key_of = key_of;
}

void hm_free(hashmap *m)
{
	free(m->slots);
	m->slots = NULL;
	m->cap = m->count = 0;
}

static uint32_t hm_hash(const void *p, size_t len)
{
	uint32_t h = (uint32_t)hash_bytes(p, len);
	return h ? h : 1;
}

static bool key_eq(const hashmap *m, const void *value, const void *key, size_t len)
{
	hm_key k = m->key_of(value);
	return k.len == len && (len == 0 || memcmp(k.p, key, len) == 0);
}

void *hm_get(const hashmap *m, const void *key, size_t len)
{
	if (!m->count)
		return NULL;
	uint32_t h = hm_hash(key, len), mask = m->cap - 1;
	for (uint32_t i = h & mask;; i = (i + 1) & mask) {
		hm_slot *s = &m->slots[i];
		if (!s->value)
			return NULL;
		if (s->hash == h && key_eq(m, s->value, key, len))
			return s->value;
	}
}

static int hm_grow(hashmap *m)
{
	uint32_t ncap = m->cap ? m->cap * 2 : 8;
	hm_slot *ns = calloc(ncap, sizeof(*ns));
	if (!ns)
		return -1;
	for (uint32_t i = 0; i < m->cap; i++) {
		hm_slot *s = &m->slots[i];
		if (!s->value)
			continue;
		uint32_t j = s->hash & (ncap - 1);
		while (ns[j].value)
			j = (j + 1) & (ncap - 1);
		ns[j] = *s;
	}
	free(m->slots);
	m->slots = ns;
	m->cap = ncap;
	return 0;
}

int hm_put(hashmap *m, void *value, void **old)
{
	hm_key k = m->key_of(value);
	*old = NULL;
	if ((m->count + 1) * 4 > m->cap * 3 && hm_grow(m))
		return -1;
	uint32_t h = hm_hash(k.p, k.len), mask = m->cap - 1;
	for (uint32_t i = h & mask;; i = (i + 1) & mask) {
		hm_slot *s = &m->slots[i];
		if (!s->value) {
			s->value = value;
			s->hash = h;
			m->count++;
			return 0;
		}
		if (s->hash == h && key_eq(m, s->value, k.p, k.len)) {
			*old = s->value;
			s->value = value;
			return 0;
		}
	}
}

void *hm_remove(hashmap *m, const void *key, size_t len)
{
	if (!m->count)
		return NULL;
	uint32_t h = hm_hash(key, len), mask = m->cap - 1;
	uint32_t i = h & mask;
	for (;; i = (i + 1) & mask) {
		hm_slot *s = &m->slots[i];
		if (!s->value)
			return NULL;
		if (s->hash == h && key_eq(m, s->value, key, len))
			break;
	}
	void *v = m->slots[i].value;
	/* Backward-shift: pull later entries of the probe run into the hole so
	 * lookups never stop early at it. */
	uint32_t hole = i;
	for (uint32_t j = (i + 1) & mask; m->slots[j].value; j = (j + 1) & mask) {
		uint32_t home = m->slots[j].hash & mask;
		/* move j into hole if home is not cyclically in (hole, j] */
		bool in_range = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
		if (!in_range) {
			m->slots[hole] = m->slots[j];
			hole = j;
		}
	}
	m->slots[hole].value = NULL;
	m->slots[hole].hash = 0;
	m->count--;
	return v;
}

bool hm_next(const hashmap *m, uint32_t *iter, void **value)
{
	while (*iter < m->cap) {
		hm_slot *s = &m->slots[(*iter)++];
		if (s->value) {
			*value = s->value;
			return true;
		}
	}
	return false;
}
