/*
 * retain.c - retained messages: on_message_retain writes the hash
 * mqtt:retain:{topic} (id, from, qos, topic, retain, payload, ts) and adds
 * the topic to mqtt:index:retain; on_retain_delete removes both;
 * on_retain_lookup reads the hash of an exact filter, or, for a wildcard
 * filter, the hashes of the indexed topics the filter matches (the
 * original looked up the filter text as a topic, so `a/#` found nothing).
 * These jobs are queued by topic, so two clients setting one topic are
 * written in the order they published.
 */
#include <stdlib.h>
#include <string.h>

#include "backends/redis/redis_be.h"


int redis_message_retain(pconn *c, uint32_t i, pjob *j)
{
	const kmq_msg *m = j->msg;
	char id[33];
	msgid_to_hex(m->id, id);
	rargs a;
	ra_init(&a);
	ra_str(&a, "HSET");
	ra_key(&a, K_RETAIN, m->topic.p, m->topic.len, NULL, 0);
	ra_msg_fields(&a, m, id, true);
	rds_append(c, i, &a);
	ra_init(&a);
	ra_str(&a, "SADD");
	ra_str(&a, K_IDX_RETAIN);
	ra_add(&a, m->topic.p, m->topic.len);
	return rds_append(c, i, &a);
}

int redis_retain_delete(pconn *c, uint32_t i, pjob *j)
{
	rargs a;
	ra_init(&a);
	ra_str(&a, "DEL");
	ra_key(&a, K_RETAIN, j->topic.p, j->topic.len, NULL, 0);
	rds_append(c, i, &a);
	ra_init(&a);
	ra_str(&a, "SREM");
	ra_str(&a, K_IDX_RETAIN);
	ra_add(&a, j->topic.p, j->topic.len);
	return rds_append(c, i, &a);
}

/* rds_hgetall_many's callbacks for the topics of a lookup */
typedef struct looked {
	pconn *c;
	uint32_t i;
	pjob *j;
	const rtopic *topics;
	bool wildcard;
} looked;

static void topic_key(void *ud, size_t k, const void **p, size_t *len)
{
	const looked *l = ud;
	*p = l->topics[k].p;
	*len = l->topics[k].len;
}

static void on_retain_hash(void *ud, size_t k, redisReply *rep)
{
	looked *l = ud;
	const rtopic *t = &l->topics[k];
	if (rep->type == REDIS_REPLY_ERROR) {
		rds_outcome(l->c, l->i, rds_error_class(rep), rep->str, rep->len);
	} else if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 0 && l->wildcard) {
		/* deleted by someone else: the topic leaves the index */
		rargs s;
		ra_init(&s);
		ra_str(&s, "SREM");
		ra_str(&s, K_IDX_RETAIN);
		ra_add(&s, t->p, t->len);
		rds_append(l->c, l->i, &s);
	} else {
		kmq_msg *m = rds_hash_msg(rep, true);
		/* the hash's own topic must be the one its key names */
		if (m && (m->topic.len != t->len || memcmp(m->topic.p, t->p, m->topic.len) != 0))
			msg_unref(&m);
		if (m && presult_add_msg(l->j->result, m))
			rds_outcome(l->c, l->i, RJ_RETRY, "out of memory", 13);
	}
}

int redis_retain_lookup(pconn *c, uint32_t i, pjob *j)
{
	mqtt_str group, filter = j->topic;
	mqtt_shared_parse(j->topic, &group, &filter);
	rtopic one = {(char *)filter.p, filter.len}, *topics = &one;
	size_t n = 1;
	bool wildcard = mqtt_topic_is_wildcard(filter);
	if (wildcard && rds_matching_topics(c, i, K_IDX_RETAIN, filter, &topics, &n))
		return -1;
	looked l = {c, i, j, topics, wildcard};
	int rc = rds_hgetall_many(c, K_RETAIN, n, topic_key, on_retain_hash, &l);
	if (topics != &one)
		rds_topics_free(&topics, n);
	return rc;
}
