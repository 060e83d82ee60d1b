/*
 * hash.c - SipHash-1-3 (Aumasson & Bernstein), written from the paper's
 * description; one compression round per word and three finalisation rounds
 * is the variant hash tables commonly use for speed.
 */
#include "util/hash.h"

#include <openssl/rand.h>
#include <string.h>

static uint64_t key0 = 0x0706050403020100ull, key1 = 0x0f0e0d0c0b0a0908ull;

void hash_init(void)
{
	uint64_t k[2];
	if (RAND_bytes((unsigned char *)k, sizeof(k)) == 1) {
		key0 = k[0];
		key1 = k[1];
	}
}

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
	do {                                                                                       \
		v0 += v1;                                                                          \
		v1 = ROTL(v1, 13);                                                                 \
		v1 ^= v0;                                                                          \
		v0 = ROTL(v0, 32);                                                                 \
		v2 += v3;                                                                          \
		v3 = ROTL(v3, 16);                                                                 \
		v3 ^= v2;                                                                          \
		v0 += v3;                                                                          \
		v3 = ROTL(v3, 21);                                                                 \
		v3 ^= v0;                                                                          \
		v2 += v1;                                                                          \
		v1 = ROTL(v1, 17);                                                                 \
		v1 ^= v2;                                                                          \
		v2 = ROTL(v2, 32);                                                                 \
	} while (0)

static uint64_t siphash13(uint64_t k0, uint64_t k1, const uint8_t *in, size_t len)
{
	uint64_t v0 = 0x736f6d6570736575ull ^ k0;
	uint64_t v1 = 0x646f72616e646f6dull ^ k1;
	uint64_t v2 = 0x6c7967656e657261ull ^ k0;
	uint64_t v3 = 0x7465646279746573ull ^ k1;
	const uint8_t *end = in + (len - (len % 8));
	uint64_t b = (uint64_t)len << 56;
	for (; in != end; in += 8) {
		uint64_t m;
		memcpy(&m, in, 8); /* little-endian hosts only (x86-64, aarch64) */
		v3 ^= m;
		SIPROUND;
		v0 ^= m;
	}
	switch (len & 7) {
	case 7: b |= (uint64_t)in[6] << 48; /* fall through */
	case 6: b |= (uint64_t)in[5] << 40; /* fall through */
	case 5: b |= (uint64_t)in[4] << 32; /* fall through */
	case 4: b |= (uint64_t)in[3] << 24; /* fall through */
	case 3: b |= (uint64_t)in[2] << 16; /* fall through */
	case 2: b |= (uint64_t)in[1] << 8;  /* fall through */
	case 1: b |= (uint64_t)in[0]; break;
	case 0: break;
	}
	v3 ^= b;
	SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

uint64_t hash_bytes(const void *p, size_t len) { return siphash13(key0, key1, p, len); }

uint64_t hash_stable(const void *p, size_t len)
{
	return siphash13(0x6b6565706d712121ull, 0x776f726b65727321ull, p, len);
}
