/*
 * sys.c - broker statistics and client events under $SYS/brokers/<node>/.
 *
 * The names follow EMQ X 4 ($SYS/brokers/<node>/version, .../stats/...,
 * .../metrics/..., .../clients/<id>/connected), so dashboards written for it
 * keep working. Statistics are retained messages refreshed every
 * broker.sys_interval; they are built on worker 0 (publishing needs a
 * worker) from every worker's counters, read without locks.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker/broker.h"
#include "broker/version.h"
#include "util/clock.h"
#include "util/log.h"

static void publish_text(worker *w, const char *topic, const char *payload, bool retain)
{
	msg_init mi = {
		.topic = mqtt_str_c(topic),
		.payload = mqtt_str_c(payload),
		.qos = 0,
		.retain = retain,
		.now_ms = clock_wall_ms(),
		.flags = MSG_F_SYS,
	};
	kmq_msg *m = msg_new(&mi);
	if (!m)
		return;
	msgid_next(&w->ids, mi.now_ms, m->id);
	broker_publish(w, m);
	msg_unref(&m);
}

void broker_stats_total(broker *b, worker_stats *out)
{
	memset(out, 0, sizeof(*out));
	/* every field is a 64-bit counter: sum them field by field */
	size_t n = sizeof(*out) / sizeof(uint64_t);
	for (unsigned i = 0; i < b->nworkers; i++) {
		_Atomic uint64_t *src = (_Atomic uint64_t *)&b->workers[i].st;
		_Atomic uint64_t *dst = (_Atomic uint64_t *)out;
		for (size_t k = 0; k < n; k++)
			atomic_store_explicit(&dst[k],
			                      atomic_load_explicit(&dst[k], memory_order_relaxed) +
			                              atomic_load_explicit(&src[k], memory_order_relaxed),
			                      memory_order_relaxed);
	}
}

static void publish_stats(worker *w, void *arg)
{
	if (!w)
		return;
	broker *b = w->b;
	worker_stats t;
	broker_stats_total(b, &t);
#define T(f) atomic_load_explicit(&t.f, memory_order_relaxed)
	char base[256], topic[512], val[64];
	snprintf(base, sizeof(base), "$SYS/brokers/%s", b->cfg->node_name);
#define PUB_U(sub, v)                                                                              \
	do {                                                                                       \
		snprintf(topic, sizeof(topic), "%s/%s", base, sub);                               \
		snprintf(val, sizeof(val), "%llu", (unsigned long long)(v));                       \
		publish_text(w, topic, val, true);                                                 \
	} while (0)
	uint64_t now = clock_wall_ms();
	PUB_U("uptime", (now - b->started_ms) / 1000);
	time_t secs = (time_t)(now / 1000);
	struct tm tm;
	gmtime_r(&secs, &tm);
	strftime(val, sizeof(val), "%Y-%m-%dT%H:%M:%SZ", &tm);
	snprintf(topic, sizeof(topic), "%s/datetime", base);
	publish_text(w, topic, val, true);
	PUB_U("stats/connections/count", (uint64_t)T(connections));
	PUB_U("stats/sessions/count", (uint64_t)T(sessions));
	PUB_U("stats/sessions/persistent/count", (uint64_t)T(sessions_persistent));
	PUB_U("stats/subscriptions/count", (uint64_t)T(subscriptions));
	PUB_U("stats/subscriptions/shared/count", shared_member_count(&b->shared));
	PUB_U("stats/retained/count", retain_count(&b->retained));
	PUB_U("metrics/bytes/received", T(bytes_in));
	PUB_U("metrics/bytes/sent", T(bytes_out));
	PUB_U("metrics/packets/received", T(pkts_in));
	PUB_U("metrics/packets/sent", T(pkts_out));
	PUB_U("metrics/packets/malformed", T(malformed));
	PUB_U("metrics/packets/protocol_errors", T(protocol_errors));
	PUB_U("metrics/messages/received", T(msgs_in));
	PUB_U("metrics/messages/sent", T(msgs_out));
	PUB_U("metrics/messages/qos0/received", T(msgs_in_qos[0]));
	PUB_U("metrics/messages/qos1/received", T(msgs_in_qos[1]));
	PUB_U("metrics/messages/qos2/received", T(msgs_in_qos[2]));
	PUB_U("metrics/messages/qos0/sent", T(msgs_out_qos[0]));
	PUB_U("metrics/messages/qos1/sent", T(msgs_out_qos[1]));
	PUB_U("metrics/messages/qos2/sent", T(msgs_out_qos[2]));
	PUB_U("metrics/messages/dropped", T(msgs_dropped));
	PUB_U("metrics/messages/dropped/queue_full", T(dropped_queue_full));
	PUB_U("metrics/messages/dropped/expired", T(dropped_expired));
	PUB_U("metrics/messages/dropped/slow_reader", T(dropped_slow_reader));
	PUB_U("metrics/messages/dropped/too_large", T(dropped_too_large));
	PUB_U("metrics/messages/dropped/not_authorized", T(dropped_denied));
	PUB_U("metrics/client/connected", T(connects));
	PUB_U("metrics/client/connack_refused", T(connack_refused));
	PUB_U("metrics/client/auth/failure", T(auth_failures));
	PUB_U("metrics/client/acl/deny", T(acl_denied));
	PUB_U("metrics/client/keepalive_timeout", T(keepalive_timeouts));
	PUB_U("metrics/client/takeover", T(takeovers));
	PUB_U("metrics/connections/accepted", T(conn_accepted));
	PUB_U("metrics/connections/refused", T(conn_refused));
#undef PUB_U
#undef T
	if (state_enabled(b->state)) {
		/* the broker state store: changes submitted, transactions committed,
		 * failed transactions retried, changes dropped, changes waiting */
		state_stats ss;
		state_get_stats(b->state, &ss);
		snprintf(topic, sizeof(topic), "$SYS/brokers/%s/state/metrics", b->cfg->node_name);
		char json[256];
		snprintf(json, sizeof(json),
		         "{\"ops\": %llu, \"commits\": %llu, \"retries\": %llu, \"dropped\": %llu, "
		         "\"queued\": %llu, \"elided\": %llu}",
		         (unsigned long long)ss.ops, (unsigned long long)ss.commits,
		         (unsigned long long)ss.retries, (unsigned long long)ss.dropped,
		         (unsigned long long)ss.queued, (unsigned long long)ss.elided);
		publish_text(w, topic, json, true);
	}
	if (persist_backend_count(b->persist)) {
		char *json = persist_metrics_json(b->persist);
		if (json) {
			snprintf(topic, sizeof(topic), "$SYS/brokers/%s/backends/metrics", b->cfg->node_name);
			publish_text(w, topic, json, true);
			free(json);
		}
	}
}

static void publish_static(worker *w, void *arg)
{
	if (!w)
		return;
	broker *b = w->b;
	char topic[512];
	publish_text(w, "$SYS/brokers", b->cfg->node_name, true);
	snprintf(topic, sizeof(topic), "$SYS/brokers/%s/version", b->cfg->node_name);
	publish_text(w, topic, keepmq_version(), true);
	snprintf(topic, sizeof(topic), "$SYS/brokers/%s/sysdescr", b->cfg->node_name);
	publish_text(w, topic, "keepmq MQTT broker", true);
	publish_stats(w, arg);
}

static void post_call(broker *b, void (*fn)(worker *, void *))
{
	inbox_item *it = calloc(1, sizeof(*it));
	if (!it)
		return;
	it->kind = INBOX_CALL;
	it->fn = fn;
	worker_post_external(&b->workers[0], it);
}

static void on_sys_timer(uv_timer_t *t)
{
	broker *b = t->data;
	if (atomic_load(&b->stopping))
		return;
	post_call(b, publish_stats);
	/* expired retained messages are dropped here rather than on the hot path */
	retain_sweep(&b->retained, clock_wall_ms());
}

void sys_start(broker *b)
{
	uv_timer_init(&b->main_loop, &b->sys_timer);
	b->sys_timer.data = b;
	if (!b->cfg->sys_interval_ms) {
		uv_timer_start(&b->sys_timer, on_sys_timer, 60000, 60000);
		return;
	}
	post_call(b, publish_static);
	uv_timer_start(&b->sys_timer, on_sys_timer, b->cfg->sys_interval_ms, b->cfg->sys_interval_ms);
}

void sys_publish_now(broker *b) { post_call(b, publish_stats); }

void sys_client_event(worker *w, session *s, conn *c, bool connected, uint8_t rc)
{
	broker *b = w->b;
	if (!b->cfg->sys_interval_ms || w->stopping)
		return;
	/* nobody anywhere subscribes to anything: skip the JSON */
	bool any = shared_member_count(&b->shared) > 0;
	for (unsigned i = 0; i < b->nworkers && !any; i++)
		any = atomic_load_explicit(&b->workers[i].nsubs, memory_order_relaxed) > 0;
	if (!any)
		return;
	/* a client id with wildcards or NUL cannot be part of a topic name */
	if (memchr(s->client_id, '+', s->cid_len) || memchr(s->client_id, '#', s->cid_len) ||
	    strlen(s->client_id) != s->cid_len)
		return;
	char peer[64], topic[512];
	conn_peer_str(c, peer, sizeof(peer));
	json_t *o = json_object();
	if (!o)
		return;
	json_object_set_new(o, "clientid", json_stringn(s->client_id, s->cid_len));
	json_object_set_new(o, "username", s->username ? json_stringn(s->username, s->ulen) : json_null());
	json_object_set_new(o, "ipaddress", json_string(peer));
	json_object_set_new(o, "proto_ver", json_integer(c->version));
	json_object_set_new(o, "ts", json_integer((json_int_t)clock_wall_ms()));
	if (connected) {
		json_object_set_new(o, "keepalive", json_integer(c->keepalive_ms / 1000));
		json_object_set_new(o, "clean_start", json_boolean(s->clean_start));
		json_object_set_new(o, "connack", json_integer(0));
	} else {
		json_object_set_new(o, "reason", json_string(mqtt_rc_name(rc)));
	}
	char *text = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (!text)
		return;
	snprintf(topic, sizeof(topic), "$SYS/brokers/%s/clients/%.*s/%s", b->cfg->node_name,
	         (int)(s->cid_len > 300 ? 300 : s->cid_len), s->client_id,
	         connected ? "connected" : "disconnected");
	if (s->cid_len <= 300)
		publish_text(w, topic, text, false);
	free(text);
}
