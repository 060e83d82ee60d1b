/*
 * fuzz_msgdecode.c - libFuzzer target for the stored form of messages
 * (msg_decode, read back from the state store's database, which may be
 * damaged). Besides crashes and sanitizer reports it checks that whatever
 * decodes encodes back to exactly the same bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "broker/message.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	kmq_msg *m = msg_decode(data, size);
	if (!m)
		return 0;
	size_t n = msg_encoded_size(m);
	if (n != size)
		abort();
	uint8_t *out = malloc(n);
	if (out) {
		msg_encode(m, out);
		if (memcmp(out, data, n) != 0)
			abort();
		free(out);
	}
	msg_unref(&m);
	return 0;
}
