/*
 * buf.h - a growable byte buffer.
 *
 * Lengths are 32-bit to keep per-connection state small (a broker holds tens
 * of thousands of these); MQTT packets never exceed 256 MiB. buf_reserve()
 * grows geometrically so appending packets one by one stays amortised O(1).
 * The buffer owns `data`; buf_free() releases it and leaves an empty buffer.
 */
#ifndef KEEPMQ_BUF_H
#define KEEPMQ_BUF_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct buf {
	uint8_t *data;
	uint32_t len;
	uint32_t cap;
} buf;

#define BUF_MAX ((uint32_t)1 << 31)

/* Ensures room for `extra` more bytes. Returns 0, or -1 (nothing changed) on
 * allocation failure or if the buffer would exceed BUF_MAX. */
static inline int buf_reserve(buf *b, size_t extra)
{
	if ((size_t)b->cap - b->len >= extra)
		return 0;
	size_t need = (size_t)b->len + extra;
	if (need > BUF_MAX)
		return -1;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap *= 2;
	if (cap > BUF_MAX)
		cap = BUF_MAX;
	uint8_t *p = realloc(b->data, cap);
	if (!p)
		return -1;
	b->data = p;
	b->cap = (uint32_t)cap;
	return 0;
}

static inline int buf_append(buf *b, const void *p, size_t n)
{
	if (buf_reserve(b, n))
		return -1;
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += (uint32_t)n;
	return 0;
}

/* Drops the first n bytes. */
static inline void buf_consume(buf *b, size_t n)
{
	if (n >= b->len) {
		b->len = 0;
		return;
	}
	memmove(b->data, b->data + n, b->len - n);
	b->len -= (uint32_t)n;
}

static inline void buf_free(buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

#endif
