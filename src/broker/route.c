/*
 * route.c - from one PUBLISH to every session that should get it.
 *
 * broker_publish runs on the publisher's worker: it updates the retained
 * store, delivers to this worker's matching sessions, forwards the message
 * (one reference, one inbox item) to each other worker that has any
 * subscription, and picks one member of each matching shared group.
 *
 * A session subscribed through several matching filters gets one copy (at
 * the highest granted QoS, with every subscription identifier): required in
 * MQTT 3.1.1 and allowed by MQTT 5. The merge uses a per-worker epoch stamped
 * on sessions, so it costs O(1) per match and nothing when nothing overlaps.
 * Past MAX_IDS identifiers a further copy starts (MQTT 5 allows several).
 */
#include <stdlib.h>
#include <string.h>

#include "broker/broker.h"
#include "util/clock.h"
#include "util/log.h"

#define MAX_IDS 8 /* subscription ids carried per merged delivery */

typedef struct target {
	session *s;
	uint8_t qos;
	uint8_t flags;
	uint8_t nids;
	uint32_t ids[MAX_IDS];
} target;

typedef struct match_scratch {
	target *v;
	uint32_t n, cap;
	bool busy; /* a delivery can publish a will, which routes again */
} match_scratch;

typedef struct collect_ctx {
	worker *w;
	kmq_msg *msg;
	match_scratch *ms;
	uint32_t epoch;
} collect_ctx;

/* Adds a subscription id to a target. Returns false if it has no room left. */
static bool add_id(target *t, uint32_t id)
{
	if (!id)
		return true;
	for (uint8_t i = 0; i < t->nids; i++)
		if (t->ids[i] == id)
			return true;
	if (t->nids == MAX_IDS)
		return false;
	t->ids[t->nids++] = id;
	return true;
}

static void collect(void *ctxp, const sub_entry *e)
{
	collect_ctx *c = ctxp;
	session *s = e->owner;
	kmq_msg *m = c->msg;
	if ((e->options & MQTT_SUBOPT_NO_LOCAL) && m->origin.len == s->cid_len &&
	    memcmp(m->origin.p, s->client_id, s->cid_len) == 0)
		return;
	if ((e->options & SUBOPT_ACL_CHECK) && !authz_may_receive(s, m->topic)) {
		STAT_INC(c->w, dropped_denied);
		return;
	}
	uint8_t sq = e->options & MQTT_SUBOPT_QOS_MASK;
	uint8_t qos = m->qos < sq ? m->qos : sq;
	uint8_t flags = ((e->options & MQTT_SUBOPT_RETAIN_AS_PUBLISHED) && (m->flags & MSG_F_RETAIN))
	                        ? DLV_RETAIN
	                        : 0;
	match_scratch *ms = c->ms;
	if (s->match_epoch == c->epoch && s->match_idx < ms->n && ms->v[s->match_idx].s == s) {
		target *t = &ms->v[s->match_idx];
		if (add_id(t, e->sub_id)) {
			if (qos > t->qos)
				t->qos = qos;
			t->flags |= flags;
			return;
		}
		/* its identifiers are full: this subscription gets a copy of its
		 * own, so no identifier is lost (MQTT 5 3.3.4, allowed for v5 only,
		 * and only v5 subscriptions have identifiers) */
	}
	if (ms->n == ms->cap) {
		uint32_t nc = ms->cap ? ms->cap * 2 : 64;
		target *nv = realloc(ms->v, nc * sizeof(*nv));
		if (!nv) {
			STAT_INC(c->w, msgs_dropped);
			return;
		}
		ms->v = nv;
		ms->cap = nc;
	}
	target *t = &ms->v[ms->n];
	t->s = s;
	t->qos = qos;
	t->flags = flags;
	t->nids = 0;
	add_id(t, e->sub_id);
	s->match_epoch = c->epoch;
	s->match_idx = ms->n++;
}

void route_scratch_free(worker *w)
{
	if (!w->scratch)
		return;
	free(w->scratch->v);
	free(w->scratch);
	w->scratch = NULL;
}

uint32_t route_local(worker *w, kmq_msg *msg)
{
	if (w->router.count == 0)
		return 0;
	if (!w->scratch && !(w->scratch = calloc(1, sizeof(match_scratch))))
		return 0;
	match_scratch nested = {0};
	match_scratch *ms = w->scratch->busy ? &nested : w->scratch;
	ms->busy = true;
	ms->n = 0;
	collect_ctx c = {w, msg, ms, ++w->match_epoch};
	router_match(&w->router, msg->topic, collect, &c);
	uint32_t n = ms->n;
	for (uint32_t i = 0; i < n; i++) {
		target *t = &ms->v[i];
		session_deliver(t->s, msg, t->qos, t->flags, t->ids, t->nids);
	}
	ms->busy = false;
	/* a huge fan-out should not pin its scratch memory forever */
	if (ms == &nested || (ms->cap > 65536 && n < ms->cap / 8)) {
		free(ms->v);
		ms->v = NULL;
		ms->cap = 0;
	}
	ms->n = 0;
	return n;
}

typedef struct shared_ctx {
	worker *w;
	kmq_msg *msg;
	uint32_t local;
} shared_ctx;

static void shared_pick(void *ctxp, const shared_member *m)
{
	shared_ctx *c = ctxp;
	worker *w = c->w;
	unsigned owner = broker_owner(w->b, m->client_id, m->cid_len);
	if (owner == w->id) {
		session *s = hm_get(&w->sessions, m->client_id, m->cid_len);
		if (!s) {
			STAT_INC(w, dropped_no_session);
			return;
		}
		if ((m->options & SUBOPT_ACL_CHECK) && !authz_may_receive(s, c->msg->topic))
			return;
		uint8_t sq = m->options & MQTT_SUBOPT_QOS_MASK;
		uint8_t flags = ((m->options & MQTT_SUBOPT_RETAIN_AS_PUBLISHED) &&
		                 (c->msg->flags & MSG_F_RETAIN))
		                        ? DLV_RETAIN
		                        : 0;
		session_deliver(s, c->msg, c->msg->qos < sq ? c->msg->qos : sq, flags,
		                m->sub_id ? &m->sub_id : NULL, m->sub_id ? 1 : 0);
		c->local++;
		return;
	}
	inbox_item *it = calloc(1, sizeof(*it) + m->cid_len + 1);
	if (!it) {
		STAT_INC(w, msgs_dropped);
		return;
	}
	it->kind = INBOX_TARGETED;
	it->msg = msg_ref(c->msg);
	if (w->route_tok)
		it->tok = state_tok_hold(w->route_tok);
	it->options = m->options;
	it->sub_id = m->sub_id;
	it->cid_len = m->cid_len;
	memcpy(it->cid, m->client_id, m->cid_len);
	worker_post(w, owner, it);
	c->local++;
}

uint32_t broker_publish(worker *w, kmq_msg *msg)
{
	broker *b = w->b;
	if ((msg->flags & MSG_F_RETAIN) && b->cfg->retain_available) {
		int r = retain_set(&b->retained, msg);
		if (r == RETAIN_STORED || r == RETAIN_DELETED)
			store_retain(w, msg);
		if (r == RETAIN_FULL) {
			static log_ratelimit rl;
			log_ratelimited(&rl, 60000, LOG_WARNING,
			                "retained store full (mqtt.max_retained_messages): '%s' not retained",
			                msg->topic.p);
		}
	}
	uint32_t n = route_local(w, msg);
	for (unsigned i = 0; i < b->nworkers; i++) {
		if (i == w->id ||
		    atomic_load_explicit(&b->workers[i].nsubs, memory_order_acquire) == 0)
			continue;
		inbox_item *it = calloc(1, sizeof(*it));
		if (!it) {
			STAT_INC(w, msgs_dropped);
			continue;
		}
		it->kind = INBOX_FANOUT;
		it->msg = msg_ref(msg);
		if (w->route_tok)
			it->tok = state_tok_hold(w->route_tok);
		worker_post(w, i, it);
	}
	shared_ctx sc = {w, msg, 0};
	shared_route(&b->shared, msg, shared_pick, &sc);
	return n + sc.local;
}

typedef struct retained_ctx {
	kmq_msg **v;
	uint32_t n, cap;
} retained_ctx;

static void collect_retained(void *ctxp, kmq_msg *m)
{
	retained_ctx *c = ctxp;
	if (c->n == c->cap) {
		uint32_t nc = c->cap ? c->cap * 2 : 16;
		kmq_msg **nv = realloc(c->v, nc * sizeof(*nv));
		if (!nv)
			return;
		c->v = nv;
		c->cap = nc;
	}
	c->v[c->n++] = msg_ref(m);
}

void route_retained(session *s, mqtt_str filter, uint8_t options, uint32_t sub_id)
{
	broker *b = s->w->b;
	retained_ctx rc = {0};
	/* collect under the store's read lock, deliver after releasing it */
	retain_match(&b->retained, filter, clock_wall_ms(), collect_retained, &rc);
	uint8_t sq = options & MQTT_SUBOPT_QOS_MASK;
	for (uint32_t i = 0; i < rc.n; i++) {
		kmq_msg *m = rc.v[i];
		if (!(options & SUBOPT_ACL_CHECK) || authz_may_receive(s, m->topic))
			session_deliver(s, m, m->qos < sq ? m->qos : sq, DLV_RETAIN,
			                sub_id ? &sub_id : NULL, sub_id ? 1 : 0);
		msg_unref(&rc.v[i]);
	}
	free(rc.v);
}
