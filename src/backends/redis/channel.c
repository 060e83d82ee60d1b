/*
 * channel.c - the subscription channel (`backend.redis.<pool>.channel`).
 *
 * A thread of the pool SUBSCRIBEs to the channel on a connection of its
 * own. An application PUBLISHes
 *   {"type": "subscribe", "topic": "t", "clientid": "c", "qos": 1}
 *   {"type": "unsubscribe", "topic": "t", "clientid": "c"}
 * there, and the broker (un)subscribes that client if it is online here (the
 * host posts the command to the client's owner worker; a subscription made
 * this way runs the session.subscribed rules and gets retained messages,
 * as a SUBSCRIBE would). With channel_store on, the event is also written to
 * mqtt:sub:{clientid}, so on_subscribe_lookup applies it at the client's
 * next connection, online now or not.
 *
 * The thread waits for messages with poll() (200 ms at a time, so stopping
 * is prompt) and reads them through hiredis's reader. When the connection
 * drops - Redis restarted, a failover - it connects again (through the
 * sentinels, if configured) with a growing pause and subscribes again;
 * events published while it was away are lost, as Redis's pub/sub does not
 * keep them (channel_store is the durable path). A malformed event is logged
 * (at most every 10 s) and counted; it never stops the thread.
 */
#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backends/redis/redis_be.h"
#include "util/log.h"

typedef struct chan {
	const redis_pool_cfg *cfg;
	const persist_host *host;
	char pool[64];
	pthread_t thread;
	atomic_bool stop;
	redisContext *store; /* channel_store writes; NULL until needed */
	log_ratelimit bad_log, store_log;
	_Atomic uint64_t events, applied, malformed, stored, store_failed, reconnects;
	atomic_int connected;
} chan;

void redis_channel_event_free(void **root)
{
	if (*root)
		json_decref(*root);
	*root = NULL;
}

int redis_channel_parse(const char *msg, size_t len, chan_event *ev, void **rootp, char *why,
                        size_t whylen)
{
	json_error_t je;
	*rootp = NULL;
	json_t *root = json_loadb(msg, len, JSON_REJECT_DUPLICATES, &je);
	if (!root) {
		snprintf(why, whylen, "not JSON: %s", je.text);
		return -1;
	}
	*rootp = root;
	if (!json_is_object(root)) {
		snprintf(why, whylen, "not a JSON object");
		return -1;
	}
	json_t *type = json_object_get(root, "type"), *topic = json_object_get(root, "topic"),
	       *cid = json_object_get(root, "clientid"), *qos = json_object_get(root, "qos");
	if (!json_is_string(type) || (strcmp(json_string_value(type), "subscribe") != 0 &&
	                              strcmp(json_string_value(type), "unsubscribe") != 0)) {
		snprintf(why, whylen, "\"type\" must be \"subscribe\" or \"unsubscribe\"");
		return -1;
	}
	ev->unsubscribe = strcmp(json_string_value(type), "unsubscribe") == 0;
	if (!json_is_string(topic) || json_string_length(topic) == 0 ||
	    json_string_length(topic) > 65535) {
		snprintf(why, whylen, "\"topic\" must be a non-empty string");
		return -1;
	}
	if (!json_is_string(cid) || json_string_length(cid) == 0 || json_string_length(cid) > 65535) {
		snprintf(why, whylen, "\"clientid\" must be a non-empty string");
		return -1;
	}
	ev->topic = json_string_value(topic);
	ev->topic_len = json_string_length(topic);
	ev->clientid = json_string_value(cid);
	ev->cid_len = json_string_length(cid);
	ev->qos = 0;
	if (qos && !json_is_null(qos)) {
		/* the spec's example sends it as a string: "qos": "0" */
		const char *qs = json_is_string(qos) ? json_string_value(qos) : NULL;
		if (json_is_integer(qos) && json_integer_value(qos) >= 0 && json_integer_value(qos) <= 2)
			ev->qos = (int)json_integer_value(qos);
		else if (qs && strlen(qs) == 1 && qs[0] >= '0' && qs[0] <= '2')
			ev->qos = qs[0] - '0';
		else {
			snprintf(why, whylen, "\"qos\" must be 0, 1 or 2");
			return -1;
		}
	}
	if (memchr(ev->topic, 0, ev->topic_len) || memchr(ev->clientid, 0, ev->cid_len)) {
		snprintf(why, whylen, "a zero byte in \"topic\" or \"clientid\"");
		return -1;
	}
	return 0;
}

/* channel_store: mirrors the event into mqtt:sub:{clientid}. */
static void store_event(chan *ch, const chan_event *ev)
{
	for (int attempt = 0; attempt < 2; attempt++) {
		if (!ch->store) {
			char err[256];
			ch->store = rds_connect(ch->cfg, err, sizeof(err));
			if (!ch->store) {
				log_ratelimited(&ch->store_log, 10000, LOG_WARNING,
				                "backend redis %s: channel_store: %s", ch->pool, err);
				break;
			}
		}
		char q[2] = {(char)('0' + ev->qos), 0};
		char *key = malloc(strlen(K_SUB) + ev->cid_len + 1);
		if (!key)
			break;
		memcpy(key, K_SUB, strlen(K_SUB));
		memcpy(key + strlen(K_SUB), ev->clientid, ev->cid_len);
		const char *argv[4] = {ev->unsubscribe ? "HDEL" : "HSET", key, ev->topic, q};
		size_t lens[4] = {4, strlen(K_SUB) + ev->cid_len, ev->topic_len, 1};
		redisReply *r = redisCommandArgv(ch->store, ev->unsubscribe ? 3 : 4, argv, lens);
		free(key);
		if (r && r->type != REDIS_REPLY_ERROR) {
			freeReplyObject(r);
			atomic_fetch_add(&ch->stored, 1);
			return;
		}
		if (r) {
			log_ratelimited(&ch->store_log, 10000, LOG_WARNING,
			                "backend redis %s: channel_store: %s", ch->pool, r->str);
			freeReplyObject(r);
		}
		redisFree(ch->store); /* a new connection for the second attempt */
		ch->store = NULL;
	}
	atomic_fetch_add(&ch->store_failed, 1);
}

static void on_message(chan *ch, const char *msg, size_t len)
{
	atomic_fetch_add(&ch->events, 1);
	chan_event ev;
	void *root = NULL;
	char why[200];
	if (redis_channel_parse(msg, len, &ev, &root, why, sizeof(why))) {
		atomic_fetch_add(&ch->malformed, 1);
		log_ratelimited(&ch->bad_log, 10000, LOG_WARNING,
		                "backend redis %s: channel %s: malformed event ignored (%s): %.*s",
		                ch->pool, ch->cfg->channel, why, (int)(len > 200 ? 200 : len), msg);
		redis_channel_event_free(&root);
		return;
	}
	if (ch->cfg->channel_store)
		store_event(ch, &ev);
	presult *r = calloc(1, sizeof(*r));
	if (r) {
		r->kind = ev.unsubscribe ? PRESULT_UNSUBS : PRESULT_SUBS;
		r->clientid = malloc(ev.cid_len + 1);
		if (r->clientid) {
			memcpy(r->clientid, ev.clientid, ev.cid_len);
			r->clientid[ev.cid_len] = 0;
			r->cid_len = (uint32_t)ev.cid_len;
		}
		if (!r->clientid || presult_add_sub(r, ev.topic, ev.topic_len, (uint8_t)ev.qos)) {
			persist_result_free(&r);
		} else {
			atomic_fetch_add(&ch->applied, 1);
			ch->host->command(ch->host->ctx, r);
		}
	}
	redis_channel_event_free(&root);
}

static void handle_reply(chan *ch, redisReply *r)
{
	if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
	    r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, "message") == 0 &&
	    r->element[2]->type == REDIS_REPLY_STRING)
		on_message(ch, r->element[2]->str, r->element[2]->len);
}

static void pause_ms(chan *ch, uint64_t ms)
{
	while (ms && !atomic_load(&ch->stop)) {
		uint64_t step = ms < 50 ? ms : 50;
		struct timespec ts = {0, (long)step * 1000000L};
		nanosleep(&ts, NULL);
		ms -= step;
	}
}

static void *chan_main(void *arg)
{
	chan *ch = arg;
	uint64_t backoff = 0;
	bool ever = false, warned = false;
	while (!atomic_load(&ch->stop)) {
		char err[256];
		redisContext *rc = rds_connect(ch->cfg, err, sizeof(err));
		redisReply *r = NULL;
		if (rc) {
			const char *argv[2] = {"SUBSCRIBE", ch->cfg->channel};
			size_t lens[2] = {9, strlen(ch->cfg->channel)};
			r = redisCommandArgv(rc, 2, argv, lens);
			if (!r || r->type != REDIS_REPLY_ARRAY) {
				snprintf(err, sizeof(err), "SUBSCRIBE: %s",
				         !r ? rc->errstr : r->type == REDIS_REPLY_ERROR ? r->str : "unexpected");
				redisFree(rc);
				rc = NULL;
			}
			if (r)
				freeReplyObject(r);
		}
		if (!rc) {
			if (!warned)
				log_warning("backend redis %s: channel %s: %s; retrying", ch->pool,
				            ch->cfg->channel, err);
			warned = true;
			backoff = backoff ? (backoff * 2 > 2000 ? 2000 : backoff * 2) : 100;
			pause_ms(ch, backoff);
			continue;
		}
		if (ever)
			atomic_fetch_add(&ch->reconnects, 1);
		log_notice("backend redis %s: subscribed to channel %s", ch->pool, ch->cfg->channel);
		ever = true;
		warned = false;
		backoff = 0;
		atomic_store(&ch->connected, 1);
		while (!atomic_load(&ch->stop)) {
			void *rep = NULL;
			/* replies already read into hiredis's buffer first */
			if (redisGetReplyFromReader(rc, &rep) != REDIS_OK)
				break;
			if (rep) {
				handle_reply(ch, rep);
				freeReplyObject(rep);
				continue;
			}
			struct pollfd pfd = {rc->fd, POLLIN, 0};
			int pr = poll(&pfd, 1, 200);
			if (pr < 0 && errno != EINTR)
				break;
			if (pr > 0 && redisBufferRead(rc) != REDIS_OK)
				break;
		}
		atomic_store(&ch->connected, 0);
		if (!atomic_load(&ch->stop))
			log_warning("backend redis %s: channel %s: connection lost (%s); subscribing again",
			            ch->pool, ch->cfg->channel, rc->errstr[0] ? rc->errstr : "closed");
		redisFree(rc);
	}
	if (ch->store)
		redisFree(ch->store);
	ch->store = NULL;
	return NULL;
}

int redis_channel_start(const void *pool_cfg, const char *pool_name, const persist_host *host,
                        void **svc, char *err, size_t errlen)
{
	const redis_pool_cfg *cfg = pool_cfg;
	*svc = NULL;
	if (!cfg->channel || !cfg->channel[0])
		return 0;
	if (!host->command) {
		snprintf(err, errlen, "channel: the broker takes no commands");
		return -1;
	}
	chan *ch = calloc(1, sizeof(*ch));
	if (!ch) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	ch->cfg = cfg;
	ch->host = host;
	snprintf(ch->pool, sizeof(ch->pool), "%s", pool_name);
	if (pthread_create(&ch->thread, NULL, chan_main, ch)) {
		free(ch);
		snprintf(err, errlen, "cannot start the channel thread");
		return -1;
	}
	*svc = ch;
	return 0;
}

void redis_channel_stop(void **svc)
{
	chan *ch = *svc;
	if (!ch)
		return;
	*svc = NULL;
	atomic_store(&ch->stop, true);
	pthread_join(ch->thread, NULL);
	free(ch);
}

void redis_channel_metrics(void *svc, pmetric_put put, void *ud)
{
	chan *ch = svc;
	put(ud, "channel_connected", (uint64_t)atomic_load(&ch->connected));
	put(ud, "channel_events", atomic_load(&ch->events));
	put(ud, "channel_applied", atomic_load(&ch->applied));
	put(ud, "channel_malformed", atomic_load(&ch->malformed));
	put(ud, "channel_stored", atomic_load(&ch->stored));
	put(ud, "channel_store_failed", atomic_load(&ch->store_failed));
	put(ud, "channel_reconnects", atomic_load(&ch->reconnects));
}
