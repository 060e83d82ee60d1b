/*
 * bus.c - the hook bus: events to jobs, the bus's life cycle, answers and
 * metrics.
 *
 * persist_fire runs on the I/O worker that owns the client, so it does the
 * least it can: a relaxed read of the hook-point mask (no rules: return at
 * once), the rule's filter match, one allocation per job, and a queue push.
 * A job holds copies of the event's strings and a reference to the message,
 * never a pointer into broker state, so the backend thread needs nothing
 * else.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "persist/internal.h"
#include "util/hash.h"
#include "util/log.h"

persist *persist_new(cfg_registry *r, const backend_type *const *types)
{
	persist *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	for (size_t i = 0; types && types[i]; i++) {
		if (persist_config_register(p, r, types[i])) {
			persist_free(&p);
			return NULL;
		}
	}
	return p;
}

int persist_start(persist *p, const persist_host *host, char *err, size_t errlen)
{
	p->host = host;
	for (pbackend *be = p->backends; be; be = be->next) {
		for (ppool *pl = be->pools; pl; pl = pl->next) {
			if (!pl->used)
				log_notice("backend %s %s: no rule uses this pool; opening it anyway",
				           be->type->name, pl->name);
			char e[300] = "";
			if (pool_start(pl, host, e, sizeof(e))) {
				snprintf(err, errlen, "backend %s %s: %s", be->type->name, pl->name, e);
				return -1;
			}
		}
	}
	p->started = true;
	return 0;
}

void persist_stop(persist *p, uint64_t timeout_ms)
{
	if (!p || !p->started)
		return;
	/* every pool gets the same deadline, so stopping takes timeout_ms at most */
	for (pbackend *be = p->backends; be; be = be->next)
		for (ppool *pl = be->pools; pl; pl = pl->next)
			pool_stop(pl, timeout_ms);
	p->started = false;
}

void persist_free(persist **pp)
{
	persist *p = *pp;
	if (!p)
		return;
	*pp = NULL;
	persist_stop(p, 0);
	persist_config_free(p);
	free(p);
}

bool persist_wants(const persist *p, int point)
{
	return p && (atomic_load_explicit(&p->wants, memory_order_relaxed) & (1u << point));
}

bool persist_sync_publish(const persist *p) { return p && p->sync_publish; }

bool persist_wants_filters(const persist *p, int point)
{
	return p && (p->wants_filters & (1u << point));
}

unsigned persist_backend_count(const persist *p)
{
	unsigned n = 0;
	for (pbackend *be = p ? p->backends : NULL; be; be = be->next)
		n += be->pools != NULL;
	return n;
}

uint64_t persist_pending(persist *p)
{
	uint64_t n = 0;
	for (pbackend *be = p ? p->backends : NULL; be; be = be->next)
		for (ppool *pl = be->pools; pl; pl = pl->next)
			n += pool_pending(pl);
	return n;
}

/* ---------------------------------------------------------------- firing */

static bool rule_matches(const prule *r, const hook_event *ev)
{
	if (!r->topic)
		return true;
	mqtt_str t = ev->topic;
	if (ev->point == HOOK_SESSION_SUBSCRIBED || ev->point == HOOK_SESSION_UNSUBSCRIBED) {
		/* a shared subscription is matched by its filter, not its $share prefix */
		mqtt_str g, f;
		if (mqtt_shared_parse(t, &g, &f) == 1)
			t = f;
	}
	if (t.len == 0)
		return false;
	return mqtt_topic_matches((mqtt_str){(const uint8_t *)r->topic, r->topic_len}, t);
}

pjob *pjob_build(const prule *r, const hook_event *ev)
{
	size_t fl = 0;
	for (uint32_t i = 0; i < ev->nfilters; i++)
		fl += ev->filters[i].len;
	bool own_topic = ev->msg == NULL; /* message topics live in the message */
	size_t n = sizeof(pjob) + ev->clientid.len + ev->username.len + ev->peerhost.len +
	           (own_topic ? ev->topic.len : 0) + ev->nfilters * sizeof(mqtt_str) + fl + 8;
	pjob *j = malloc(n);
	if (!j)
		return NULL;
	memset(j, 0, sizeof(*j));
	j->rule = r;
	j->point = ev->point;
	j->qos = ev->qos;
	j->retain = ev->retain;
	j->implicit = ev->implicit;
	j->worker = ev->worker;
	j->serial = ev->serial;
	j->ts_ms = ev->ts_ms;
	j->size = (uint32_t)n + (ev->msg ? (uint32_t)ev->msg->payload.len : 0);
	uint8_t *at = j->data;
	/* mqtt_str arrays first: they need alignment */
	uintptr_t a = ((uintptr_t)at + 7) & ~(uintptr_t)7;
	at = (uint8_t *)a;
	if (ev->nfilters) {
		j->filters = (mqtt_str *)at;
		j->nfilters = ev->nfilters;
		at += ev->nfilters * sizeof(mqtt_str);
	}
#define COPY(dst, src)                                                                            \
	do {                                                                                       \
		if ((src).len)                                                                     \
			memcpy(at, (src).p, (src).len);                                            \
		(dst) = (mqtt_str){at, (src).len};                                                 \
		at += (src).len;                                                                   \
	} while (0)
	COPY(j->clientid, ev->clientid);
	COPY(j->username, ev->username);
	COPY(j->peerhost, ev->peerhost);
	if (own_topic) {
		COPY(j->topic, ev->topic);
	} else {
		j->msg = msg_ref(ev->msg);
		j->topic = ev->msg->topic;
	}
	for (uint32_t i = 0; i < ev->nfilters; i++)
		COPY(j->filters[i], ev->filters[i]);
#undef COPY
	return j;
}

int persist_fire(persist *p, const hook_event *ev)
{
	if (!p || !p->started || !persist_wants(p, ev->point))
		return 0;
	int nsync = 0;
	bool lost_sync = false;
	for (const prule *r = p->at[ev->point]; r; r = r->next_at_point) {
		if (ev->implicit && !r->func)
			continue; /* raw actions see real acknowledgements only */
		if (r->func && r->func->applies && !r->func->applies(ev))
			continue;
		if (!rule_matches(r, ev))
			continue;
		bool sync = ev->ack_seq && ev->point == HOOK_MESSAGE_PUBLISH &&
		            r->be->delivery_mode == DELIVERY_SYNC;
		pjob *j = pjob_build(r, ev);
		if (!j) {
			atomic_fetch_add(&p->dropped_no_memory, 1);
			lost_sync |= sync;
			continue;
		}
		atomic_fetch_add(&((prule *)r)->m.matched, 1);
		if (sync) {
			j->ack_seq = ev->ack_seq;
			nsync++;
		}
		if (ev->fetches && r->func && r->func->kind == PFUNC_LOOKUP &&
		    r->func->result == PRESULT_MSGS)
			(*ev->fetches)++;
		uint64_t h = r->func && r->func->by_topic
		                     ? hash_stable(j->topic.p, j->topic.len)
		                     : hash_stable(j->clientid.p, j->clientid.len);
		pool_enqueue(r->pool, j, h);
	}
	return lost_sync ? -1 : nsync;
}

/* ---------------------------------------------------------------- answers */

presult *presult_for_job(const pjob *j)
{
	presult *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->kind = j->rule->func ? j->rule->func->result : 0;
	r->worker = j->worker;
	r->serial = j->serial;
	r->clientid = malloc(j->clientid.len + 1);
	r->filter = malloc(j->topic.len + 1);
	if (!r->clientid || !r->filter) {
		persist_result_free(&r);
		return NULL;
	}
	memcpy(r->clientid, j->clientid.p, j->clientid.len);
	r->clientid[j->clientid.len] = 0;
	r->cid_len = j->clientid.len;
	memcpy(r->filter, j->topic.p, j->topic.len);
	r->filter[j->topic.len] = 0;
	r->filter_len = j->topic.len;
	return r;
}

void presult_clear(presult *r)
{
	if (!r)
		return;
	for (uint32_t i = 0; i < r->n; i++) {
		if (r->kind == PRESULT_SUBS || r->kind == PRESULT_UNSUBS)
			free(r->subs[i].topic);
		else
			msg_unref(&r->msgs[i]);
	}
	r->n = 0;
}

void persist_result_free(presult **rp)
{
	presult *r = *rp;
	if (!r)
		return;
	*rp = NULL;
	presult_clear(r);
	free(r->subs);
	free(r->msgs);
	free(r->clientid);
	free(r->filter);
	free(r);
}

static int grow(presult *r, size_t elem, void **v)
{
	if (r->n < r->cap)
		return 0;
	uint32_t nc = r->cap ? r->cap * 2 : 16;
	void *nv = realloc(*v, nc * elem);
	if (!nv)
		return -1;
	*v = nv;
	r->cap = nc;
	return 0;
}

int presult_add_sub(presult *r, const char *topic, size_t len, uint8_t qos)
{
	if (grow(r, sizeof(psub), (void **)&r->subs))
		return -1;
	char *t = malloc(len + 1);
	if (!t)
		return -1;
	memcpy(t, topic, len);
	t[len] = 0;
	r->subs[r->n++] = (psub){t, (uint32_t)len, qos};
	return 0;
}

int presult_add_msg(presult *r, kmq_msg *m)
{
	if (grow(r, sizeof(kmq_msg *), (void **)&r->msgs)) {
		msg_unref(&m);
		return -1;
	}
	r->msgs[r->n++] = m;
	return 0;
}

void persist_job_done(const persist_host *h, pjob *j, bool ok)
{
	if (!h)
		return;
	if (j->ack_seq && h->ack_done) {
		h->ack_done(h->ctx, j->worker, (const char *)j->clientid.p, j->clientid.len, j->serial,
		            j->ack_seq, ok);
		j->ack_seq = 0;
	}
	if (j->rule->func && j->rule->func->kind == PFUNC_LOOKUP && h->result) {
		/* always answer, even empty: the session may be waiting for it */
		presult *r = j->result;
		j->result = NULL;
		if (!r)
			r = presult_for_job(j);
		else if (!ok) {
			presult *empty = presult_for_job(j);
			if (empty) {
				persist_result_free(&r);
				r = empty;
			}
		}
		if (r)
			h->result(h->ctx, r);
	}
}

/* ---------------------------------------------------------------- metrics */

static const char *const state_names[] = {"connecting", "connected", "disconnected"};

static void put_metric(void *ud, const char *name, uint64_t v)
{
	json_object_set_new(ud, name, json_integer((json_int_t)v));
}

char *persist_metrics_json(persist *p)
{
	json_t *root = json_object();
	if (!root)
		return NULL;
	for (pbackend *be = p ? p->backends : NULL; be; be = be->next) {
		if (!be->pools)
			continue;
		json_t *b = json_object();
		json_t *pools = json_object();
		json_t *rules = json_array();
		json_object_set_new(b, "delivery_mode",
		                    json_string(be->delivery_mode == DELIVERY_SYNC ? "sync" : "async"));
		for (ppool *pl = be->pools; pl; pl = pl->next) {
			json_t *o = json_object();
			int worst = POOL_CONNECTED;
			uint64_t queued = 0;
			for (int64_t i = 0; pl->slots && i < pl->pool_size; i++) {
				int st = atomic_load(&pl->slots[i].state);
				if (st != POOL_CONNECTED)
					worst = st;
				pthread_mutex_lock(&pl->slots[i].mu);
				queued += pl->slots[i].n;
				pthread_mutex_unlock(&pl->slots[i].mu);
			}
			json_object_set_new(o, "status", json_string(state_names[worst]));
			json_object_set_new(o, "pool_size", json_integer(pl->pool_size));
			json_object_set_new(o, "queued", json_integer((json_int_t)queued));
			json_object_set_new(o, "batches", json_integer((json_int_t)atomic_load(&pl->batches)));
			json_object_set_new(o, "batch_jobs",
			                    json_integer((json_int_t)atomic_load(&pl->batch_jobs)));
			if (pl->svc && be->type->service_metrics) {
				json_t *sv = json_object();
				be->type->service_metrics(pl->svc, put_metric, sv);
				json_object_set_new(o, "service", sv);
			}
			json_object_set_new(pools, pl->name, o);
		}
		for (size_t i = 0; i < be->nrules; i++) {
			prule *r = be->rule_vec[i];
			/* read in pipeline order (see persist.h): finished, then taken,
			 * then never-taken drops, then matched */
			uint64_t success = atomic_load(&r->m.success);
			uint64_t failed = atomic_load(&r->m.failed);
			uint64_t d_other = atomic_load(&r->m.dropped_other);
			uint64_t retried = atomic_load(&r->m.retried);
			uint64_t taken = atomic_load(&r->m.taken);
			uint64_t d_full = atomic_load(&r->m.dropped_queue_full);
			uint64_t d_stop = atomic_load(&r->m.dropped_shutdown);
			uint64_t matched = atomic_load(&r->m.matched);
			json_t *o = json_object();
			json_object_set_new(o, "rule", json_string(r->key));
			json_object_set_new(o, "action",
			                    json_string(r->func ? r->func->name : be->type->raw_key));
			json_object_set_new(o, "pool", json_string(r->pool ? r->pool->name : ""));
			json_object_set_new(o, "matched", json_integer((json_int_t)matched));
			json_object_set_new(o, "success", json_integer((json_int_t)success));
			json_object_set_new(o, "failed", json_integer((json_int_t)failed));
			json_object_set_new(o, "retried", json_integer((json_int_t)retried));
			json_object_set_new(o, "inflight",
			                    json_integer((json_int_t)(taken - success - failed - d_other)));
			json_object_set_new(o, "queuing",
			                    json_integer((json_int_t)(matched - taken - d_full - d_stop)));
			json_t *d = json_object();
			json_object_set_new(d, "queue_full", json_integer((json_int_t)d_full));
			json_object_set_new(d, "shutdown", json_integer((json_int_t)d_stop));
			json_object_set_new(d, "other", json_integer((json_int_t)d_other));
			json_object_set_new(o, "dropped", json_integer((json_int_t)(d_full + d_stop + d_other)));
			json_object_set_new(o, "dropped_by_reason", d);
			json_array_append_new(rules, o);
		}
		json_object_set_new(b, "pools", pools);
		json_object_set_new(b, "rules", rules);
		json_object_set_new(root, be->type->name, b);
	}
	char *s = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(root);
	return s;
}
