/*
 * hash.h - keyed hashing for tables whose keys come from clients.
 *
 * Client ids and topics are attacker-chosen; an unkeyed hash lets a client
 * craft colliding keys and turn every lookup into a linear scan. SipHash-1-3
 * with a per-process random key (hash_init) closes that hole at a cost of a
 * few tens of nanoseconds for typical key sizes.
 */
#ifndef KEEPMQ_HASH_H
#define KEEPMQ_HASH_H

#include <stddef.h>
#include <stdint.h>

/* Seeds the process-wide key from the OS random source. Call once at start;
 * without it a fixed key is used (deterministic: tests, fuzzing). */
void hash_init(void);
uint64_t hash_bytes(const void *p, size_t len);
/* Unkeyed, stable across runs: for placing client ids on workers. */
uint64_t hash_stable(const void *p, size_t len);

#endif
