/*
 * msgs.c - stored messages: on_message_publish / on_message_store write
 * them, on_message_fetch_for_queue / _for_pubsub read them back at
 * subscribe time, on_message_acked_for_queue / _for_pubsub consume them or
 * move read positions, on_acked_delete forgets a position.
 *
 * A message is the hash mqtt:msg:{msgid} (id, from, qos, topic, retain,
 * payload, ts) and a member of the sorted set mqtt:msg:{topic}. Every member
 * has score 1, as in the spec, so Redis orders them by member: the 32-hex id,
 * which begins with the publish time and sorts in publish order (the
 * original's ids did not, so its zset returned messages out of order). A
 * read position is therefore an id, and "the messages after it" is one
 * ZRANGEBYLEX - which still works when the message it names has expired.
 *
 * Expiry: the hash and the topic's set get EXPIRE (the rule's expired_time,
 * else backend.redis.msg.expired_after); each publish also trims the set of
 * ids older than that (ZREMRANGEBYLEX below the id of "now - expiry"), and a
 * fetch that meets an id whose hash has gone removes it. The topic joins
 * mqtt:index:msg so that wildcard subscriptions find it.
 *
 * queue (one-to-one): a fetch delivers every stored message of the matching
 * topics; the acknowledgement deletes the message, so it is delivered once
 * over all subscribers. pubsub (many-to-many): each (client, filter) has a
 * read position mqtt:acked:{clientid}:{filter}, moved forward only (a
 * script compares ids) by the acknowledgement, and the fetch delivers what
 * is after it.
 */
#include <stdlib.h>
#include <string.h>

#include "backends/redis/redis_be.h"
#include "util/clock.h"

#define FETCH_PAGE 500

int redis_message_store(pconn *c, uint32_t i, pjob *j)
{
	const kmq_msg *m = j->msg;
	int64_t exp = j->rule->expired_time_s > 0 ? j->rule->expired_time_s : 3600;
	char id[33], floor[33];
	msgid_to_hex(m->id, id);
	sql_msgid_floor(clock_wall_ms(), (uint64_t)exp * 1000, floor);
	char below[34];
	below[0] = '(';
	memcpy(below + 1, floor, 33);
	rargs a;
	ra_init(&a);
	ra_str(&a, "HSET");
	ra_key(&a, K_MSG, id, 32, NULL, 0);
	ra_msg_fields(&a, m, id, (m->flags & MSG_F_RETAIN) != 0);
	rds_append(c, i, &a);

	ra_init(&a);
	ra_str(&a, "EXPIRE");
	ra_key(&a, K_MSG, id, 32, NULL, 0);
	ra_int(&a, exp);
	rds_append(c, i, &a);

	ra_init(&a);
	ra_str(&a, "ZADD");
	ra_key(&a, K_MSG, m->topic.p, m->topic.len, NULL, 0);
	ra_str(&a, "1");
	ra_add(&a, id, 32);
	rds_append(c, i, &a);

	ra_init(&a);
	ra_str(&a, "ZREMRANGEBYLEX");
	ra_key(&a, K_MSG, m->topic.p, m->topic.len, NULL, 0);
	ra_str(&a, "-");
	ra_add(&a, below, 33);
	rds_append(c, i, &a);

	ra_init(&a);
	ra_str(&a, "EXPIRE");
	ra_key(&a, K_MSG, m->topic.p, m->topic.len, NULL, 0);
	ra_int(&a, exp);
	rds_append(c, i, &a);

	ra_init(&a);
	ra_str(&a, "SADD");
	ra_str(&a, K_IDX_MSG);
	ra_add(&a, m->topic.p, m->topic.len);
	return rds_append(c, i, &a);
}

/* one candidate of a fetch: a message id and the topic whose set holds it */
typedef struct cand {
	char id[101];
	uint8_t len;
	uint32_t topic;
} cand;

static int cmp_cand(const void *x, const void *y)
{
	const cand *a = x, *b = y;
	size_t n = a->len < b->len ? a->len : b->len;
	int r = memcmp(a->id, b->id, n);
	return r ? r : (a->len > b->len) - (a->len < b->len);
}

typedef struct cands {
	cand *v;
	size_t n, cap;
} cands;

/* Ids of one topic after `start` (a ZRANGEBYLEX bound), at most `want`. */
static int topic_ids(pconn *c, uint32_t i, const rtopic *t, uint32_t ti, const char *start,
                     size_t slen, int64_t want, bool prune_empty, cands *cs)
{
	char bound[102];
	memcpy(bound, start, slen);
	size_t blen = slen;
	int64_t got = 0;
	for (;;) {
		int64_t page = want - got < FETCH_PAGE ? want - got : FETCH_PAGE;
		rargs a;
		ra_init(&a);
		ra_str(&a, "ZRANGEBYLEX");
		ra_key(&a, K_MSG, t->p, t->len, NULL, 0);
		ra_add(&a, bound, blen);
		ra_str(&a, "+");
		ra_str(&a, "LIMIT");
		ra_str(&a, "0");
		ra_int(&a, page);
		redisReply *r = rds_call(c, &a);
		if (!r)
			return -1;
		if (r->type != REDIS_REPLY_ARRAY) {
			if (r->type == REDIS_REPLY_ERROR)
				rds_outcome(c, i, rds_error_class(r), r->str, r->len);
			freeReplyObject(r);
			return 0;
		}
		size_t ne = r->elements;
		if (ne == 0 && got == 0 && prune_empty) {
			/* the topic's set has expired: it leaves the index */
			rargs s;
			ra_init(&s);
			ra_str(&s, "SREM");
			ra_str(&s, K_IDX_MSG);
			ra_add(&s, t->p, t->len);
			rds_append(c, i, &s);
		}
		for (size_t k = 0; k < ne; k++) {
			const redisReply *e = r->element[k];
			if (e->type != REDIS_REPLY_STRING || e->len == 0 || e->len > 100)
				continue;
			if (cs->n == cs->cap) {
				size_t nc = cs->cap ? cs->cap * 2 : 64;
				cand *nv = realloc(cs->v, nc * sizeof(*nv));
				if (!nv) {
					freeReplyObject(r);
					rds_outcome(c, i, RJ_RETRY, "out of memory", 13);
					return 0;
				}
				cs->v = nv;
				cs->cap = nc;
			}
			cand *d = &cs->v[cs->n++];
			memcpy(d->id, e->str, e->len);
			d->len = (uint8_t)e->len;
			d->topic = ti;
			bound[0] = '(';
			memcpy(bound + 1, e->str, e->len);
			blen = e->len + 1;
			got++;
		}
		freeReplyObject(r);
		if ((int64_t)ne < page || got >= want)
			return 0;
	}
}

/* rds_hgetall_many's callbacks for the candidates of a fetch */
typedef struct fetched {
	pconn *c;
	uint32_t i;
	pjob *j;
	const cands *cs;
	const rtopic *topics;
} fetched;

static void cand_key(void *ud, size_t k, const void **p, size_t *len)
{
	const fetched *f = ud;
	*p = f->cs->v[k].id;
	*len = f->cs->v[k].len;
}

static void on_msg_hash(void *ud, size_t k, redisReply *rep)
{
	fetched *f = ud;
	const cand *cd = &f->cs->v[k];
	kmq_msg *m = rep->type == REDIS_REPLY_ARRAY ? rds_hash_msg(rep, false) : NULL;
	if (rep->type == REDIS_REPLY_ERROR)
		rds_outcome(f->c, f->i, rds_error_class(rep), rep->str, rep->len);
	if (!m) {
		if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 0) {
			/* expired: its id leaves the topic's set */
			rargs z;
			ra_init(&z);
			ra_str(&z, "ZREM");
			ra_key(&z, K_MSG, f->topics[cd->topic].p, f->topics[cd->topic].len, NULL, 0);
			ra_add(&z, cd->id, cd->len);
			rds_append(f->c, f->i, &z);
		}
		return;
	}
	if (presult_add_msg(f->j->result, m))
		rds_outcome(f->c, f->i, RJ_RETRY, "out of memory", 13);
}

int redis_message_fetch(pconn *c, uint32_t i, pjob *j, bool queue)
{
	const prule *r = j->rule;
	mqtt_str full = j->topic, group, filter = j->topic;
	if (mqtt_shared_parse(full, &group, &filter) == 1)
		return 0; /* a shared group consumes live messages only */
	int64_t want = r->max_returned_count;
	if (want <= 0)
		return 0;
	char start[102] = "-", pos[101] = "";
	size_t slen = 1, plen = 0;
	if (!queue) {
		rargs a;
		ra_init(&a);
		ra_str(&a, "GET");
		ra_key(&a, K_ACKED, j->clientid.p, j->clientid.len, full.p, full.len);
		redisReply *g = rds_call(c, &a);
		if (!g)
			return -1;
		if (g->type == REDIS_REPLY_ERROR) {
			rds_outcome(c, i, rds_error_class(g), g->str, g->len);
			freeReplyObject(g);
			return 0;
		}
		if (g->type == REDIS_REPLY_STRING && g->len > 0 && g->len <= 100) {
			memcpy(pos, g->str, g->len);
			plen = g->len;
			start[0] = '(';
			memcpy(start + 1, pos, plen);
			slen = plen + 1;
		}
		freeReplyObject(g);
	}
	if (r->time_range_ms < (uint64_t)INT64_MAX) {
		char floor[33];
		sql_msgid_floor(clock_wall_ms(), r->time_range_ms, floor);
		if (plen == 0 || strcmp(floor, pos) > 0) {
			start[0] = '[';
			memcpy(start + 1, floor, 32);
			slen = 33;
		}
	}
	rtopic one = {(char *)filter.p, filter.len}, *topics = &one;
	size_t ntopics = 1;
	bool wildcard = mqtt_topic_is_wildcard(filter);
	if (wildcard && rds_matching_topics(c, i, K_IDX_MSG, filter, &topics, &ntopics))
		return -1;
	cands cs = {NULL, 0, 0};
	int rc = 0;
	for (size_t t = 0; t < ntopics && rc == 0; t++)
		rc = topic_ids(c, i, &topics[t], (uint32_t)t, start, slen, want,
		               wildcard && slen == 1, &cs);
	if (rc == 0 && cs.n) {
		qsort(cs.v, cs.n, sizeof(cand), cmp_cand);
		fetched f = {c, i, j, &cs, topics};
		rc = rds_hgetall_many(c, K_MSG, (int64_t)cs.n > want ? (size_t)want : cs.n, cand_key,
		                      on_msg_hash, &f);
	}
	free(cs.v);
	if (topics != &one)
		rds_topics_free(&topics, ntopics);
	return rc;
}

int redis_message_acked(pconn *c, uint32_t i, pjob *j, bool queue)
{
	char id[33];
	msgid_to_hex(j->msg->id, id);
	rargs a;
	if (queue) {
		ra_init(&a);
		ra_str(&a, "DEL");
		ra_key(&a, K_MSG, id, 32, NULL, 0);
		rds_append(c, i, &a);
		ra_init(&a);
		ra_str(&a, "ZREM");
		ra_key(&a, K_MSG, j->msg->topic.p, j->msg->topic.len, NULL, 0);
		ra_add(&a, id, 32);
		return rds_append(c, i, &a);
	}
	for (uint32_t k = 0; k < j->nfilters; k++) {
		ra_init(&a);
		ra_str(&a, "EVALSHA");
		ra_add(&a, c->sha_ack, 40);
		ra_str(&a, "1");
		ra_key(&a, K_ACKED, j->clientid.p, j->clientid.len, j->filters[k].p, j->filters[k].len);
		ra_add(&a, id, 32);
		rds_append(c, i, &a);
	}
	return 0;
}

int redis_acked_delete(pconn *c, uint32_t i, pjob *j)
{
	rargs a;
	ra_init(&a);
	ra_str(&a, "DEL");
	ra_key(&a, K_ACKED, j->clientid.p, j->clientid.len, j->topic.p, j->topic.len);
	return rds_append(c, i, &a);
}
