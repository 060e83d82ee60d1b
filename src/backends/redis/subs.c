/*
 * subs.c - on_subscribe_lookup: HGETALL mqtt:sub:{clientid}, each field a
 * topic filter and its value the QoS. The broker subscribes the client to
 * them as if it had sent SUBSCRIBE (and checks each filter). The hash is the
 * operator's (or the channel's, with channel_store): never written here.
 */
#include <stdlib.h>
#include <string.h>

#include "backends/redis/redis_be.h"

int redis_subscribe_lookup(pconn *c, uint32_t i, pjob *j)
{
	rargs a;
	ra_init(&a);
	ra_str(&a, "HGETALL");
	ra_key(&a, K_SUB, j->clientid.p, j->clientid.len, NULL, 0);
	redisReply *r = rds_call(c, &a);
	if (!r)
		return -1;
	if (r->type == REDIS_REPLY_ERROR) {
		rds_outcome(c, i, rds_error_class(r), r->str, r->len);
	} else if (r->type == REDIS_REPLY_ARRAY) {
		for (size_t k = 0; k + 1 < r->elements; k += 2) {
			const redisReply *t = r->element[k], *q = r->element[k + 1];
			if (t->type != REDIS_REPLY_STRING || q->type != REDIS_REPLY_STRING || t->len == 0)
				continue;
			int qos = q->len == 1 && q->str[0] >= '0' && q->str[0] <= '2' ? q->str[0] - '0' : 0;
			if (presult_add_sub(j->result, t->str, t->len, (uint8_t)qos)) {
				rds_outcome(c, i, RJ_RETRY, "out of memory", 13);
				break;
			}
		}
	}
	freeReplyObject(r);
	return 0;
}
