/*
 * hashmap.h - an open-addressing hash table of pointers keyed by byte strings.
 *
 * Design
 * ------
 * The table stores only the value pointer and a 32-bit hash fragment per slot
 * (16 bytes); the key lives inside the value and is read back through the
 * table's key_of callback. That keeps a broker's per-session overhead in its
 * session table at a few dozen bytes. Linear probing with backward-shift
 * deletion (no tombstones) keeps lookups short after many insert/delete
 * cycles. The table never owns values: removing or freeing the table does not
 * free them.
 */
#ifndef KEEPMQ_HASHMAP_H
#define KEEPMQ_HASHMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct hm_key {
	const void *p;
	size_t len;
} hm_key;

typedef hm_key (*hm_key_fn)(const void *value);

typedef struct hm_slot {
	void *value; /* NULL: empty */
	uint32_t hash;
} hm_slot;

typedef struct hashmap {
	hm_slot *slots;
	uint32_t cap; /* power of two, or 0 */
	uint32_t count;
	hm_key_fn key_of;
} hashmap;

void hm_init(hashmap *m, hm_key_fn key_of);
/* Frees the slot array only (values are not owned). */
void hm_free(hashmap *m);
void *hm_get(const hashmap *m, const void *key, size_t len);
/* Inserts value under its key. If a value with the same key exists it is
 * replaced and returned through *old (else *old = NULL). Returns 0, -1 on OOM. */
int hm_put(hashmap *m, void *value, void **old);
/* Removes and returns the value stored under key, or NULL. */
void *hm_remove(hashmap *m, const void *key, size_t len);

/* Iteration: for (uint32_t i = 0; hm_next(m, &i, &v);) ... Removing the
 * current entry during iteration may skip or repeat entries: collect first. */
bool hm_next(const hashmap *m, uint32_t *iter, void **value);

#endif
