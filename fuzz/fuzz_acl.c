/*
 * fuzz_acl.c - libFuzzer target for the ACL parser and checks.
 *
 * Input layout: NUL-separated parts.
 *   part 0   ACL text, given to acl_load_string
 *   part 1   client id
 *   part 2   user name; a missing part means an anonymous client
 *   part 3.. strings used both as topic names and as subscription filters
 *
 * Besides crashes and sanitizer reports it checks what the classification
 * promises: for every filter and every topic name that filter matches, an
 * ALLOW filter must allow acl_check(READ) and a DENY filter must refuse
 * it. It also checks that a NULL user name and an empty one agree.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"

#define MAX_STRINGS 6

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	mqtt_str parts[3 + MAX_STRINGS];
	size_t nparts = 0, start = 0;
	char err[256];
	acl *a = NULL;

	for (size_t i = 0; i <= size && nparts < sizeof(parts) / sizeof(parts[0]); i++) {
		if (i == size || data[i] == 0) {
			parts[nparts++] = (mqtt_str){data + start, (uint32_t)(i - start)};
			start = i + 1;
		}
	}
	if (acl_load_string("fuzz", (const char *)parts[0].p, parts[0].len, &a, err, sizeof(err)) !=
	    0) {
		/* A failed load reports where and leaves nothing behind. */
		if (a || strncmp(err, "fuzz:", 5) != 0)
			abort();
		return 0;
	}
	mqtt_str cid = nparts > 1 ? parts[1] : MQTT_STR_NULL;
	mqtt_str user = nparts > 2 ? parts[2] : MQTT_STR_NULL;
	const mqtt_str *up = nparts > 2 ? &user : NULL;
	mqtt_str empty = {(const uint8_t *)"", 0};

	for (size_t i = 3; i < nparts; i++) {
		mqtt_str s = parts[i];
		bool r = acl_check(a, cid, up, s, ACL_READ);
		bool w = acl_check(a, cid, up, s, ACL_WRITE);
		bool rw = acl_check(a, cid, up, s, ACL_READ | ACL_WRITE);
		int c = acl_check_filter(a, cid, up, s);

		if (c != ACL_FILTER_DENY && c != ACL_FILTER_ALLOW && c != ACL_FILTER_PARTIAL)
			abort();
		/* A rule granting both grants each. */
		if (rw && !(r && w))
			abort();
		if (!up && (acl_check(a, cid, &empty, s, ACL_READ) != r ||
		            acl_check_filter(a, cid, &empty, s) != c))
			abort();
		if (c == ACL_FILTER_PARTIAL || !mqtt_topic_filter_valid(s))
			continue;
		for (size_t j = 3; j < nparts; j++) {
			mqtt_str t = parts[j];
			if (!mqtt_topic_name_valid(t) || !mqtt_utf8_valid(t.p, t.len) ||
			    !mqtt_topic_matches(s, t))
				continue;
			if (acl_check(a, cid, up, t, ACL_READ) != (c == ACL_FILTER_ALLOW))
				abort();
		}
	}
	acl_free(&a);
	return 0;
}
